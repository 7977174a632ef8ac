"""`fit` on the demo corpus with tiny models: artifacts, TensorBoard content, interruption and
resume, determinism, refusing a different config."""

import json
import pathlib

import numpy as np
import pandas as pd
import pytest

from ser_keras.config import load_config
from ser_keras.errors import SerKerasError

# Shrinks every experiment to seconds: one epoch, tiny SAE / LSTM / dense layers, short crops.
TINY = [
    "train.epochs=1",
    "train.batch_size=16",
    "sae.epochs=1",
    "sae.patches_per_size=256",
    "sae.hidden_units=4",
    "model.lstm_units=4",
    "model.lstm_layers=1",
    "model.dense_units=8",
    "model.svm_c_grid=[1.0,10.0]",
    "features.max_frames=160",
]


def tiny_config(experiment, *extra, corpus="demo"):
    return load_config(experiment=experiment, corpus=corpus, overrides=[*TINY, *extra])


def read_events(log_dir: pathlib.Path):
    """(tags by plugin) of a TensorBoard directory, read with TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(log_dir), size_guidance={"tensors": 0, "images": 0, "scalars": 0})
    accumulator.Reload()
    by_plugin = {}
    for tag in accumulator.Tags()["tensors"]:
        plugin = accumulator.SummaryMetadata(tag).plugin_data.plugin_name
        by_plugin.setdefault(plugin, set()).add(tag)
    return accumulator, by_plugin


def check_run_dir(run_dir: pathlib.Path, experiment: str, corpus: str = "demo"):
    """The artifacts every finished run must hold."""
    for name in ("config.yaml", "folds.json", "results.json", "predictions.csv", "confusion_matrix.png"):
        assert (run_dir / name).is_file(), name
    results = json.loads((run_dir / "results.json").read_text())
    assert results["experiment"] == experiment and results["corpus"] == corpus
    assert results["protocol"] == "loso" and results["protocol_name"] == "leave-one-speaker-out"
    assert set(results["pooled"]) >= {"wa", "ua", "confusion", "confusion_percent", "n_per_class"}
    assert len(results["config_hash"]) == 16 and results["wall_time_s"] > 0
    predictions = pd.read_csv(run_dir / "predictions.csv")
    labels = results["labels"]
    assert list(predictions.columns) == ["fold", "path", "speaker", "label", "predicted"] + [f"p_{x}" for x in labels]
    np.testing.assert_allclose(predictions[[f"p_{x}" for x in labels]].sum(axis=1), 1.0, atol=1e-4)
    assert len(predictions) == results["pooled"]["n"]
    check_serving_figures(run_dir, results, experiment, predictions)
    for fold in results["folds"]:
        fold_dir = run_dir / "folds" / fold["name"]
        history = pd.read_csv(fold_dir / "history.csv")
        assert {"val_wa", "val_ua"} <= set(history.columns)
        with np.load(fold_dir / "frontend.npz") as frontend:
            assert {"norm_mean", "norm_std", "pca_mean", "pca_components", "sample_rate"} <= set(frontend.files)
            if experiment in ("exp3", "exp4"):
                assert frontend["pca_components"].shape[1] == 60
        if experiment == "exp1":
            assert (fold_dir / "model.joblib").is_file()
        else:
            assert (fold_dir / "model.keras").is_file()
            assert (fold_dir / "checkpoint" / "backup" / "latest.npz").is_file()
            assert (fold_dir / "checkpoint" / "early_stopping.json").is_file()
        if experiment in ("exp3", "exp4"):
            assert (fold_dir / "sae_kernels.npz").is_file()
        tb = run_dir / "tensorboard" / corpus / fold["name"]
        _, tags = read_events(tb)
        assert {"val_WA", "val_UA"} <= tags.get("scalars", set()), tags
        assert "val_confusion_matrix" in tags.get("images", set()), tags
        if experiment != "exp1":
            assert "loss" in tags["scalars"]
    return results


def check_serving_figures(run_dir: pathlib.Path, results: dict, experiment: str, predictions: pd.DataFrame):
    """Speaker-normalised exp2-4 models also report the served model on single recordings."""
    from ser_keras.rundir import load_run_config
    from ser_keras.features.normalize import SPEAKER_MODES

    config, _ = load_run_config(run_dir)
    if experiment == "exp1" or config.features.normalization not in SPEAKER_MODES:
        assert "serving" not in results and not (run_dir / "serving_predictions.csv").exists()
        return
    serving = results["serving"]
    assert serving["normalization"] == "pooled" and 0 <= serving["wa"] <= 1 and 0 <= serving["ua"] <= 1
    assert serving["n"] == results["pooled"]["n"] and serving["folds"] == [f["name"] for f in results["folds"]]
    pooled = pd.read_csv(run_dir / "serving_predictions.csv")
    assert list(pooled.columns) == list(predictions.columns) and list(pooled["path"]) == list(predictions["path"])
    for fold in results["folds"]:
        assert {"serving_wa", "serving_ua", "serving_normalization"} <= set(fold)
        assert (run_dir / "folds" / fold["name"] / "serving_predictions.csv").is_file()


@pytest.mark.parametrize("experiment", ["exp1", "exp2", "exp3"])
def test_every_experiment_trains_one_epoch_and_leaves_its_artifacts(experiment, tmp_path):
    from ser_keras.evaluation.fit import fit

    config = tiny_config(experiment, "runtime.fold=0")
    results = fit(config, tmp_path / "run", progress=False)
    assert len(results["folds"]) == 1 and not results["complete"]
    check_run_dir(tmp_path / "run", experiment)


@pytest.fixture(scope="module")
def exp4_cli_run(tmp_path_factory):
    """The issue's command, `ser-keras fit --corpus demo --experiment exp4 --epochs 2 --run-dir R`,
    shrunk with --set overrides and restricted to the first fold (--fold 0) to stay fast."""
    from ser_keras.cli import main

    run_dir = tmp_path_factory.mktemp("exp4") / "R"
    argv = ["fit", "--corpus", "demo", "--experiment", "exp4", "--epochs", "2", "--fold", "0",
            "--run-dir", str(run_dir), "--quiet"]
    argv += [x for item in TINY if not item.startswith("train.epochs") for x in ("--set", item)]
    assert main(argv) == 0
    return run_dir, argv


def test_cli_fit_exp4_two_epochs(exp4_cli_run, capsys):
    run_dir, _ = exp4_cli_run
    results = check_run_dir(run_dir, "exp4")
    assert (len(results["folds"]) == 1
            and results["missing_folds"] == ["speaker-spk_f2", "speaker-spk_m1", "speaker-spk_m2"])
    fold = results["folds"][0]["name"]
    history = pd.read_csv(run_dir / "folds" / fold / "history.csv")
    assert list(history["epoch"]) == [0, 1]
    accumulator, _ = read_events(run_dir / "tensorboard" / "demo" / fold)
    assert [e.step for e in accumulator.Tensors("val_UA")] == [0, 1]
    image = accumulator.Tensors("val_confusion_matrix")[0]
    # An image summary holds width, height and the PNG bytes.
    assert image.tensor_proto.string_val[2][:8] == b"\x89PNG\r\n\x1a\n"


def test_rerunning_a_finished_run_skips_its_folds(exp4_cli_run, capsys):
    from ser_keras.cli import main

    run_dir, argv = exp4_cli_run
    fold_dir = run_dir / "folds" / "speaker-spk_f1"
    stamps = {p: p.stat().st_mtime_ns for p in fold_dir.rglob("*") if p.is_file()}
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "WA" in out and "served on single recordings without speaker context" in out
    assert {p: p.stat().st_mtime_ns for p in fold_dir.rglob("*") if p.is_file()} == stamps


def test_interrupted_fit_resumes_where_it_stopped(tmp_path, monkeypatch):
    """Interrupt the first fold after its second epoch; the re-run continues it at the third
    epoch with the saved weights, optimizer and early-stopping state, and then trains the next
    fold (on the same reused model) from its first epoch."""
    import keras

    from ser_keras.training import callbacks as callbacks_module
    from ser_keras.evaluation.fit import fit

    config = tiny_config("exp4", "train.protocol=random", "train.folds=2", "train.epochs=3", "train.patience=10")
    run_dir = tmp_path / "run"
    original = callbacks_module.training_callbacks
    seen = []

    class Interrupt(keras.callbacks.Callback):
        def __init__(self, fold_dir):
            super().__init__()
            self.fold_dir = fold_dir

        def on_epoch_begin(self, epoch, logs=None):
            seen.append((self.fold_dir.name, epoch, int(self.model.optimizer.iterations.numpy())))

        def on_epoch_end(self, epoch, logs=None):
            if self.fold_dir.name.startswith("random-1") and epoch == 1 and not resumed:
                raise KeyboardInterrupt

    def with_interrupt(fold_dir, *args, **kwargs):
        callbacks = original(fold_dir, *args, **kwargs)
        return callbacks + [Interrupt(fold_dir)]

    monkeypatch.setattr(callbacks_module, "training_callbacks", with_interrupt)
    resumed = False
    with pytest.raises(KeyboardInterrupt):
        fit(config, run_dir, progress=False)
    fold_dir = run_dir / "folds" / "random-1of2"
    assert not (fold_dir / "result.json").is_file() and not (run_dir / "results.json").exists()
    assert [(f, e) for f, e, _ in seen] == [("random-1of2", 0), ("random-1of2", 1)]
    steps_per_epoch = seen[1][2]

    resumed = True
    seen.clear()
    results = fit(config, run_dir, progress=False)
    # It continued at epoch 2 (0-based) with the optimizer's step counter where the checkpoint
    # left it: it did not start over. The next fold then started at its own first epoch.
    assert [(f, e) for f, e, _ in seen] == [("random-1of2", 2), ("random-2of2", 0), ("random-2of2", 1),
                                            ("random-2of2", 2)]
    assert seen[0][2] == 2 * steps_per_epoch > 0 and seen[1][2] == 0
    assert list(pd.read_csv(fold_dir / "history.csv")["epoch"]) == [0, 1, 2]
    assert [f["name"] for f in results["folds"]] == ["random-1of2", "random-2of2"]
    assert [f["epochs_trained"] for f in results["folds"]] == [3, 3]


def test_rescoring_keeps_the_serving_figure(exp4_cli_run):
    """evaluate (re-score from the saved predictions) rewrites results.json with both figures."""
    from ser_keras.evaluation.evaluate import evaluate_run

    run_dir, _ = exp4_cli_run
    before = json.loads((run_dir / "results.json").read_text())
    after = evaluate_run(run_dir, progress=False)
    assert after["serving"] == before["serving"] and after["pooled"]["wa"] == before["pooled"]["wa"]


def test_same_config_twice_gives_same_folds_and_metrics(exp4_cli_run, tmp_path):
    """The library call with the CLI's config reproduces the CLI run exactly."""
    from ser_keras.rundir import load_run_config
    from ser_keras.evaluation.fit import fit

    cli_dir, _ = exp4_cli_run
    config, _ = load_run_config(cli_dir)
    first = json.loads((cli_dir / "results.json").read_text())
    second = fit(config, tmp_path / "b", progress=False)
    assert (cli_dir / "folds.json").read_text() == (tmp_path / "b" / "folds.json").read_text()
    assert first["config_hash"] == second["config_hash"]
    for key in ("wa", "ua", "confusion"):
        assert first["pooled"][key] == second["pooled"][key]
    pd.testing.assert_frame_equal(pd.read_csv(cli_dir / "predictions.csv"),
                                  pd.read_csv(tmp_path / "b" / "predictions.csv"))
    fold = first["folds"][0]["name"]
    pd.testing.assert_frame_equal(pd.read_csv(cli_dir / "folds" / fold / "history.csv"),
                                  pd.read_csv(tmp_path / "b" / "folds" / fold / "history.csv"))


def test_a_fold_after_another_trains_as_it_does_alone(tmp_path):
    """`fit` reuses one compiled model across folds (training.network.fold_model) and resets all of
    its state, the optimizer's slots and moving average of the weights (train.ema_momentum, the
    default's) included; the second fold must come out bit for bit as it does in a run of its own."""
    from ser_keras.evaluation.fit import fit

    common = ("train.protocol=random", "train.folds=2", "train.epochs=2", "train.ema_momentum=0.9")
    both = tiny_config("exp4", *common)
    alone = tiny_config("exp4", *common, "runtime.fold=1")
    fit(both, tmp_path / "both", progress=False)
    fit(alone, tmp_path / "alone", progress=False)
    for name in ("predictions.csv", "history.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "both" / "folds" / "random-2of2" / name),
                                      pd.read_csv(tmp_path / "alone" / "folds" / "random-2of2" / name))


def test_a_different_config_in_the_same_run_dir_is_refused(tmp_path):
    from ser_keras.evaluation.fit import fit

    run_dir = tmp_path / "run"
    fit(tiny_config("exp1", "runtime.fold=0"), run_dir, progress=False)
    with pytest.raises(SerKerasError, match=r"different config \(train.seed: 0 -> 5\)") as info:
        fit(tiny_config("exp1", "runtime.fold=0", "train.seed=5"), run_dir, progress=False)
    assert "\n" not in str(info.value)
    # running another fold of the same config into the same directory is fine
    results = fit(tiny_config("exp1", "runtime.fold=1"), run_dir, progress=False)
    assert [f["name"] for f in results["folds"]] == ["speaker-spk_f1", "speaker-spk_f2"]


@pytest.mark.slow
def test_refit_trains_on_all_training_speakers_for_the_validated_epochs(tmp_path, monkeypatch):
    """train.refit: after early stopping a fresh model trains on training + validation
    speakers for the best epoch count and is the one tested; phase one is untouched by it, and
    an interruption inside the refit resumes the refit only."""
    import keras

    from ser_keras.training import callbacks as callbacks_module
    from ser_keras.evaluation.fit import fit

    common = ("runtime.fold=0", "train.epochs=3", "train.patience=10")
    original = callbacks_module.training_callbacks
    seen = []

    class Watch(keras.callbacks.Callback):
        def __init__(self, phase_dir):
            super().__init__()
            self.phase = phase_dir.name

        def on_epoch_begin(self, epoch, logs=None):
            seen.append((self.phase, epoch, int(self.model.optimizer.iterations.numpy())))

        def on_epoch_end(self, epoch, logs=None):
            if self.phase == "refit" and epoch == 0 and interrupt:
                raise KeyboardInterrupt

    monkeypatch.setattr(callbacks_module, "training_callbacks",
                        lambda phase_dir, *a, **k: original(phase_dir, *a, **k) + [Watch(phase_dir)])
    interrupt = False
    plain = fit(tiny_config("exp4", *common), tmp_path / "plain", progress=False)["folds"][0]
    seen.clear()
    interrupt = True
    with pytest.raises(KeyboardInterrupt):
        fit(tiny_config("exp4", *common, "train.refit=true"), tmp_path / "refit", progress=False)
    assert [(p, e) for p, e, _ in seen] == [("speaker-spk_f1", 0), ("speaker-spk_f1", 1),
                                            ("speaker-spk_f1", 2), ("refit", 0)]
    assert seen[3][2] == 0  # the refit starts from a fresh optimizer
    interrupt = False
    seen.clear()
    fold = fit(tiny_config("exp4", *common, "train.refit=true"), tmp_path / "refit", progress=False)["folds"][0]
    fold_dir = tmp_path / "refit" / "folds" / fold["name"]

    assert fold["best_epoch"] == plain["best_epoch"] and fold["best_val_ua"] == plain["best_val_ua"]
    assert fold["refit_epochs"] == fold["best_epoch"] and "refit_epochs" not in plain
    # only the refit's remaining epochs ran again, from the checkpointed step count
    assert [(p, e) for p, e, _ in seen] == [("refit", e) for e in range(1, fold["refit_epochs"])]
    batch = 16  # TINY's train.batch_size; one version of each utterance per epoch
    per_epoch = -(-(fold["n_train"] + fold["n_validation"]) // batch)
    assert [i for _, _, i in seen] == [e * per_epoch for e in range(1, fold["refit_epochs"])]
    history = pd.read_csv(fold_dir / "refit" / "history.csv")
    assert list(history["epoch"]) == list(range(fold["refit_epochs"])) and "val_ua" not in history
    pd.testing.assert_frame_equal(pd.read_csv(fold_dir / "history.csv"),
                                  pd.read_csv(tmp_path / "plain" / "folds" / fold["name"] / "history.csv"))
    _, by_plugin = read_events(tmp_path / "refit" / "tensorboard" / "demo" / fold["name"] / "refit")
    assert "loss" in by_plugin["scalars"]
    # the tested model is the refit one
    assert (fold_dir / "predictions.csv").read_text() != \
        (tmp_path / "plain" / "folds" / fold["name"] / "predictions.csv").read_text()


def test_refit_needs_validation_data():
    with pytest.raises(SerKerasError, match="train.refit"):
        tiny_config("exp4", "train.refit=true", "train.validation_fraction=0")


def test_speaker_normalisation_is_fitted_on_the_training_fold_and_a_corrupt_file_is_named(tmp_path, capsys):
    """Two CSV corpora, the demo's files plus one corrupt file, that differ in one TEST-fold
    utterance made 60 dB louder (a huge offset of its log spectrogram): the fold's fitted front
    end (normalizer.npz, frontend.npz) must come out identical. And fit --quiet completes and
    still names the corrupt file, in one line on stderr."""
    import soundfile

    from ser_keras.cli import main
    from ser_keras.config import DataConfig
    from ser_keras.corpora import load_manifest

    demo = load_manifest("demo", None, DataConfig(corpus="demo"))[["path", "label", "speaker"]]
    demo = demo.groupby(["speaker", "label"]).head(6).reset_index(drop=True)  # half of it: faster
    corrupt = tmp_path / "spk_m2_corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt truncated")
    rows = [*demo.to_dict("records"), {"path": str(corrupt), "label": "sad", "speaker": "spk_m2"}]
    test_file = demo[demo["speaker"] == "spk_f1"]["path"].iloc[0]  # LOSO fold 0 tests spk_f1
    audio, rate = soundfile.read(test_file, dtype="float32")
    loud = tmp_path / "loud" / "spk_f1_loud.wav"
    loud.parent.mkdir()
    soundfile.write(str(loud), 1000.0 * audio, rate, subtype="FLOAT")
    runs = {}
    for name, swap in (("plain", {}), ("loud", {test_file: str(loud)})):
        manifest = tmp_path / f"{name}.csv"
        pd.DataFrame([{**r, "path": swap.get(r["path"], r["path"])} for r in rows]).to_csv(manifest, index=False)
        argv = ["fit", "--corpus", "csv", "--data-dir", str(manifest), "--experiment", "exp3", "--fold", "0",
                "--run-dir", str(tmp_path / name), "--quiet"]
        assert main(argv + [x for item in TINY for x in ("--set", item)]) == 0
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if "spk_m2_corrupt.wav" in line]
        assert len(lines) == 1 and "feature extraction failed for 1 file" in lines[0], err
        runs[name] = tmp_path / name / "folds" / "speaker-spk_f1"
        results = json.loads((tmp_path / name / "results.json").read_text())
        assert list(results["feature_failures"]) == [str(corrupt)]
    for file in ("normalizer.npz", "frontend.npz"):
        with np.load(runs["plain"] / file) as a, np.load(runs["loud"] / file) as b:
            assert a.files == b.files
            for key in a.files:
                np.testing.assert_array_equal(a[key], b[key], err_msg=f"{file}:{key}")
    with np.load(runs["plain"] / "normalizer.npz") as arrays:
        assert "spk_f1" not in set(arrays["speakers"]) and len(arrays["speakers"]) == 3
    # The loud utterance did reach the test fold: its prediction row is there.
    assert str(loud) in set(pd.read_csv(tmp_path / "loud" / "predictions.csv")["path"])


def test_the_network_learns_a_separable_task(tmp_path):
    """The demo's emotions are synthesised to be told apart; with its speakers in training
    (protocol random) a tiny exp4 must be far above chance (0.25) after 6 epochs (it gives
    0.67). A model that cannot learn (a broken layer, mask or optimizer) stays near 0.25."""
    from ser_keras.evaluation.fit import fit

    config = tiny_config("exp4", "train.protocol=random", "train.folds=4", "runtime.fold=0", "train.epochs=6",
                         "train.learning_rate=1e-2", "train.patience=6")
    results = fit(config, tmp_path / "run", progress=False)
    assert results["pooled"]["n"] == 48 and results["pooled"]["ua"] >= 0.5, results["pooled"]["ua"]
    history = pd.read_csv(tmp_path / "run" / "folds" / "random-1of4" / "history.csv")
    assert history["loss"].iloc[-1] < 0.9 * history["loss"].iloc[0]
