"""``fit --protocol all``: the model to deploy, trained on every demo speaker, exported with
what it was trained on and the protocol figure of a run of the same config.

The tests on real runs are slow (two tiny demo fits and two exports: about 80 s of CPU)."""

import json

import pytest
import tensorflow as tf

from ser_keras.cli import main

# Tiny and fast; the same for the deployed model and the run that estimates it.
TINY = ["--set", "train.epochs=1", "--set", "sae.epochs=1", "--set", "sae.patches_per_size=300",
        "--set", "train.batch_size=16", "--set", "features.warp_factors=[]", "--quiet"]
DEMO_SPEAKERS = ["spk_f1", "spk_f2", "spk_m1", "spk_m2"]


@pytest.fixture(scope="module")
def runs(export_root):
    loso = export_root / "deploy_loso"
    assert main(["fit", "--corpus", "demo", "--protocol", "loso", "--fold", "0", "--run-dir", str(loso), *TINY]) == 0
    deployed = export_root / "deploy_all"
    assert main(["fit", "--corpus", "demo", "--protocol", "all", "--run-dir", str(deployed),
                 "--estimate-from", str(loso), *TINY]) == 0
    export_dir = export_root / "deploy_export"
    assert main(["export", str(deployed), "--out", str(export_dir)]) == 0
    return loso, deployed, export_dir


@pytest.mark.slow
def test_protocol_all_trains_on_every_speaker_and_says_there_is_no_test_part(runs):
    loso, deployed, _ = runs
    results = json.loads((deployed / "results.json").read_text())
    assert results["protocol"] == "all" and "pooled" not in results
    assert [f["name"] for f in results["folds"]] == ["all"]
    deploy = results["deploy"]
    assert deploy["training_speakers"] == DEMO_SPEAKERS
    assert deploy["n_training_utterances"] == 192 and deploy["epochs"] >= 1
    assert "no WA/UA" in deploy["note"]
    estimate = results["estimate"]
    source = json.loads((loso / "results.json").read_text())
    assert estimate["protocol"] == "loso"
    assert estimate["wa"] == source["pooled"]["wa"] and estimate["ua"] == source["pooled"]["ua"]
    assert estimate["serving_ua"] == source["serving"]["ua"]


@pytest.mark.slow
def test_export_names_all_training_speakers_and_the_estimate(runs):
    loso, _, export_dir = runs
    meta = json.loads((export_dir / "export.json").read_text())
    assert meta["fold"] == "all" and meta["training_data"]["training_speakers"] == DEMO_SPEAKERS
    assert meta["training_data"]["test_speakers"] is None
    assert meta["accuracy_estimate"]["protocol"] == "loso"
    endpoint = tf.saved_model.load(str(export_dir)).signatures["metadata"]()
    assert [s.decode() for s in endpoint["training_speakers"].numpy()] == DEMO_SPEAKERS
    assert int(endpoint["n_training_utterances"]) == 192
    source = json.loads((loso / "results.json").read_text())
    assert float(endpoint["estimate_ua"]) == pytest.approx(source["pooled"]["ua"], abs=1e-6)


@pytest.mark.slow
def test_ordinary_run_export_lists_the_folds_training_speakers(runs, tmp_path):
    loso, _, _ = runs
    out = tmp_path / "loso_export"
    assert main(["export", str(loso), "--out", str(out)]) == 0
    data = json.loads((out / "export.json").read_text())["training_data"]
    assert data["test_speakers"] == ["spk_f1"]
    assert data["training_speakers"] and "spk_f1" not in data["training_speakers"]
    assert set(data["training_speakers"]) | set(data["validation_speakers"]) == set(DEMO_SPEAKERS) - {"spk_f1"}


@pytest.mark.slow
def test_estimate_from_a_run_of_another_config_is_refused(runs, capsys, export_root):
    loso, _, _ = runs
    code = main(["fit", "--corpus", "demo", "--protocol", "all", "--run-dir", str(tmp_dir := export_root / "other_all"),
                 "--estimate-from", str(loso), *TINY, "--set", "train.epochs=2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "differs" in err[0] and "train.epochs" in err[0]
    assert not tmp_dir.exists()  # refused before training
    code = main(["fit", "--corpus", "demo", "--protocol", "loso", "--estimate-from", str(loso), *TINY])
    assert code == 2 and "--protocol all" in capsys.readouterr().err


def test_protocol_all_is_one_fold_of_every_utterance_without_a_test_part():
    import numpy as np

    from ser_keras.config import load_config
    from ser_keras.corpora import load_manifest
    from ser_keras.data.splits import make_folds

    config = load_config(experiment="exp4", corpus="demo")
    manifest = load_manifest("demo", None, config.data)
    (fold,) = make_folds(manifest, "all", validation_fraction=0.2)
    assert fold.name == "all" and len(fold.test) == 0
    assert sorted(np.concatenate([fold.train, fold.validation])) == list(range(len(manifest)))
    # Validation as under loso: a whole held-out speaker when 3 remain to train on (4 demo speakers).
    held_out = set(manifest["speaker"].iloc[fold.validation])
    assert len(held_out) == 1 and not held_out & set(manifest["speaker"].iloc[fold.train])
