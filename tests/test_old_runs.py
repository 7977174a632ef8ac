"""A run directory written before the run-directory / front-end refactoring still works.

``fixtures/run_main_b5274ea`` was written by ``ser-keras fit`` of commit b5274ea (the code
before ``rundir.RunDir`` and ``features.frontend.FittedFrontEnd``): the default experiment on
the demo corpus, fold 0 only, with tiny-model overrides::

    SER_KERAS_CACHE=... ser-keras fit --corpus demo --fold 0 --quiet \\
        --set train.epochs=1 --set train.batch_size=16 --set sae.epochs=1 \\
        --set sae.patches_per_size=256 --set sae.hidden_units=2 --set model.lstm_units=4 \\
        --set model.lstm_layers=1 --set model.dense_units=8 --set features.max_frames=160 \\
        --set features.pca_components=8 --set model.statistics_units=4

(its ``checkpoint/`` and ``tensorboard/`` folders left out: nothing after training reads them).
``evaluate``, ``predict`` and ``export`` must work on it with the current code, and give what
that code gave.
"""

import json
import pathlib
import shutil

import numpy as np
import pandas as pd
import pytest

from ser_keras import cli
from ser_keras.config import DataConfig
from ser_keras.corpora import load_manifest

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "run_main_b5274ea"
FOLD = "speaker-spk_f1"


@pytest.fixture
def old_run(tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(FIXTURE, run_dir)
    return run_dir


def _demo_files(speaker: str) -> list:
    manifest = load_manifest("demo", None, DataConfig(corpus="demo"))
    return sorted(manifest.loc[manifest["speaker"] == speaker, "path"])


def test_evaluate_rescores_an_old_run(old_run, capsys):
    before = json.loads((FIXTURE / "results.json").read_text())
    assert cli.main(["evaluate", str(old_run), "--json", "--quiet"]) == 0
    after = json.loads(capsys.readouterr().out)
    assert after["pooled"]["wa"] == before["pooled"]["wa"] and after["pooled"]["ua"] == before["pooled"]["ua"]
    assert after["serving"]["wa"] == before["serving"]["wa"]
    assert [f["name"] for f in after["folds"]] == [FOLD]


def test_evaluate_predicts_again_from_the_old_model_and_front_end(old_run, capsys):
    """Without the fold's predictions, evaluate loads its model.keras and its saved front end
    (normaliser + PCA, as the old code wrote them) and predicts the test speaker again: the same
    probabilities as the old code's."""
    old = pd.read_csv(FIXTURE / "folds" / FOLD / "predictions.csv")
    (old_run / "folds" / FOLD / "predictions.csv").unlink()
    assert cli.main(["evaluate", str(old_run), "--json", "--quiet"]) == 0
    capsys.readouterr()
    new = pd.read_csv(old_run / "folds" / FOLD / "predictions.csv")
    columns = [c for c in old.columns if c.startswith("p_")]
    assert list(new["label"]) == list(old["label"])
    np.testing.assert_allclose(new[columns].to_numpy(), old[columns].to_numpy(), atol=2e-6)


def test_predict_and_export_an_old_run(old_run, tmp_path, capsys):
    files = _demo_files("spk_f1")[:3]
    labels = json.loads((FIXTURE / "results.json").read_text())["labels"]
    assert cli.main(["predict", str(old_run), *files, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["results"]) == 3 and all(r["label"] in labels for r in report["results"])

    out = tmp_path / "export"
    assert cli.main(["export", str(old_run), "--out", str(out)]) == 0
    capsys.readouterr()
    meta = json.loads((out / "export.json").read_text())
    assert meta["labels"] == labels and meta["fold"] == FOLD
    assert cli.main(["predict", str(out), *files, "--json"]) == 0
    exported = json.loads(capsys.readouterr().out)
    for a, b in zip(report["results"], exported["results"]):
        assert a["label"] == b["label"]
        np.testing.assert_allclose([a["probabilities"][k] for k in labels],
                                   [b["probabilities"][k] for k in labels], atol=1e-4)
