"""`evaluate_run`: re-scoring a run, re-predicting lost predictions from the saved models, and
cross-corpus evaluation over the labels two corpora share."""

import json

import numpy as np
import pandas as pd
import pytest

from ser_keras.errors import SerKerasError
from tests.test_training import tiny_config


@pytest.fixture(scope="module")
def exp1_run(tmp_path_factory):
    from ser_keras.evaluation.fit import fit

    run_dir = tmp_path_factory.mktemp("exp1") / "run"
    fit(tiny_config("exp1", "runtime.fold=0"), run_dir, progress=False)
    fit(tiny_config("exp1", "runtime.fold=1"), run_dir, progress=False)
    return run_dir


def test_rescore_matches_and_lost_predictions_are_predicted_again(exp1_run):
    from ser_keras.evaluation.evaluate import evaluate_run

    before = json.loads((exp1_run / "results.json").read_text())
    predictions = pd.read_csv(exp1_run / "predictions.csv")
    again = evaluate_run(exp1_run, progress=False)
    assert again["pooled"]["confusion"] == before["pooled"]["confusion"]
    assert again["protocol_name"] == "leave-one-speaker-out" and len(again["folds"]) == 2

    (exp1_run / "folds" / "speaker-spk_f2" / "predictions.csv").unlink()
    repredicted = evaluate_run(exp1_run, progress=False)
    assert repredicted["pooled"]["confusion"] == before["pooled"]["confusion"]
    after = pd.read_csv(exp1_run / "predictions.csv")
    pd.testing.assert_frame_equal(after[["fold", "path", "label", "predicted"]],
                                  predictions[["fold", "path", "label", "predicted"]])
    np.testing.assert_allclose(after.filter(like="p_").to_numpy(), predictions.filter(like="p_").to_numpy(), atol=1e-5)


def test_cross_corpus_over_shared_labels(exp1_run, tmp_path):
    """The demo run (angry/happy/neutral/sad) on a CSV corpus labelled EMO-DB style
    (anger/happiness/sadness/boredom): three emotions are shared, boredom is left out."""
    from ser_keras.config import DataConfig
    from ser_keras.corpora import load_manifest
    from ser_keras.evaluation.evaluate import evaluate_run

    demo = load_manifest("demo", None, DataConfig(corpus="demo"))
    rename = {"angry": "anger", "happy": "happiness", "sad": "sadness", "neutral": "boredom"}
    rows = demo.groupby("label").head(6).assign(label=lambda f: f["label"].map(rename))
    rows[["path", "label", "speaker"]].to_csv(tmp_path / "manifest.csv", index=False)

    results = evaluate_run(exp1_run, corpus="csv", data_dir=str(tmp_path / "manifest.csv"), progress=False)
    assert results["labels"] == ["angry", "happy", "sad"]
    assert results["label_map"] == {"anger": "angry", "happiness": "happy", "sadness": "sad"}
    assert results["pooled"]["n"] == 18 and results["n_models"] == 2
    out = exp1_run / "cross_corpus" / "csv"
    for name in ("results.json", "predictions.csv", "confusion_matrix.png"):
        assert (out / name).is_file()
    frame = pd.read_csv(out / "predictions.csv")
    assert set(frame["predicted"]) <= {"angry", "happy", "sad"} and "boredom" not in set(frame["label"])


def test_cli_evaluate_and_its_errors(exp1_run, tmp_path, capsys):
    from ser_keras.cli import main

    assert main(["evaluate", str(exp1_run), "--json", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["experiment"] == "exp1"
    assert main(["evaluate", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a run directory" in err and err.count("\n") == 1
    with pytest.raises(SerKerasError, match="share 0 emotion"):
        _no_shared(exp1_run, tmp_path)


def _no_shared(run_dir, tmp_path):
    from ser_keras.config import DataConfig
    from ser_keras.corpora import load_manifest
    from ser_keras.evaluation.evaluate import evaluate_run

    demo = load_manifest("demo", None, DataConfig(corpus="demo")).head(4).assign(label="calm")
    demo[["path", "label", "speaker"]].to_csv(tmp_path / "manifest.csv", index=False)
    evaluate_run(run_dir, corpus="csv", data_dir=str(tmp_path / "manifest.csv"), progress=False)


def test_keras_fold_model_predicts_again_identically(tmp_path):
    from ser_keras.evaluation.evaluate import evaluate_run
    from ser_keras.evaluation.fit import fit

    run_dir = tmp_path / "run"
    fit(tiny_config("exp4", "runtime.fold=0"), run_dir, progress=False)
    before = pd.read_csv(run_dir / "predictions.csv")
    (run_dir / "folds" / "speaker-spk_f1" / "predictions.csv").unlink()
    evaluate_run(run_dir, progress=False)
    after = pd.read_csv(run_dir / "predictions.csv")
    np.testing.assert_allclose(after.filter(like="p_").to_numpy(), before.filter(like="p_").to_numpy(), atol=1e-5)

    # Cross-corpus with the network: the test speaker's files as a CSV corpus of their own. The
    # speaker is normalised by the same utterances as in fit, so the fold model must give fit's
    # test predictions: a cross-corpus path that lost the front end, the PCA or the model would not.
    before[["path", "label", "speaker"]].to_csv(tmp_path / "manifest.csv", index=False)
    cross = evaluate_run(run_dir, corpus="csv", data_dir=str(tmp_path / "manifest.csv"), progress=False)
    assert cross["experiment"] == "exp4" and cross["n_models"] == 1 and cross["pooled"]["n"] == len(before)
    assert cross["labels"] == sorted(before["label"].unique())
    frame = pd.read_csv(run_dir / "cross_corpus" / "csv" / "predictions.csv").set_index("path").loc[before["path"]]
    assert list(frame["predicted"]) == list(before["predicted"])
    np.testing.assert_allclose(frame.filter(like="p_").to_numpy(), before.filter(like="p_").to_numpy(), atol=1e-5)
