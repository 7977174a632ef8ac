"""A fold interrupted inside its epochs and re-run gives the uninterrupted run's numbers.

The config learns on the demo corpus within a few epochs and stops early (patience 3) after
the interruption point, so the resumed part exercises the restored seed states, optimizer,
data order, early-stopping counter and the best-weight restore."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from tests.test_training import tiny_config

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
OVERRIDES = ("runtime.fold=0", "train.epochs=12", "train.patience=3", "train.learning_rate=1e-2")
FOLD = "speaker-spk_f1"

# Runs `fit` and SIGKILLs itself at the end of epoch KILL_AT (0-based) of the fold, after
# history.csv and the early-stopping state got that epoch and before the checkpoint did: the
# worst moment, where the files on disk disagree about how far the fold got.
KILLER = textwrap.dedent("""
    import json, os, signal, sys

    import keras

    from ser_keras.training import callbacks as callbacks_module
    from ser_keras.evaluation.fit import fit
    from tests.test_training import tiny_config

    run_dir, kill_at, overrides = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
    original = callbacks_module.training_callbacks

    class Kill(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    def with_kill(*args, **kwargs):
        callbacks = original(*args, **kwargs)
        return callbacks[:-1] + [Kill(), callbacks[-1]]  # the checkpoint stays last

    callbacks_module.training_callbacks = with_kill
    fit(tiny_config("exp4", *overrides), run_dir, progress=False)
""")


def config():
    return tiny_config("exp4", *OVERRIDES)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    from ser_keras.evaluation.fit import fit

    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    results = fit(config(), run_dir, progress=False)
    fold = results["folds"][0]
    # The test is only worth something if early stopping and the best-weight restore happen
    # after the interruption point (epoch 3 below).
    assert fold["stopped_early"] and fold["epochs_trained"] > 3 and fold["best_epoch"] < fold["epochs_trained"]
    assert "resumed_at_epoch" not in fold
    return run_dir


def same_outputs(a: pathlib.Path, b: pathlib.Path) -> None:
    pd.testing.assert_frame_equal(pd.read_csv(a / "predictions.csv"), pd.read_csv(b / "predictions.csv"))
    pd.testing.assert_frame_equal(pd.read_csv(a / "folds" / FOLD / "history.csv"),
                                  pd.read_csv(b / "folds" / FOLD / "history.csv"))
    first, second = (json.loads((d / "results.json").read_text())["pooled"] for d in (a, b))
    assert first["confusion"] == second["confusion"]


def test_a_fold_killed_inside_its_epochs_repeats_the_uninterrupted_run(uninterrupted, tmp_path):
    from ser_keras.evaluation.fit import fit

    run_dir = tmp_path / "run"
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, str(script), str(run_dir), "2", json.dumps(OVERRIDES)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    fold_dir = run_dir / "folds" / FOLD
    assert len(pd.read_csv(fold_dir / "history.csv")) == 3  # epochs 0-2 logged, only 0-1 checkpointed
    assert not (fold_dir / "result.json").exists()

    results = fit(config(), run_dir, progress=False)
    assert results["folds"][0]["resumed_at_epoch"] == 2
    same_outputs(uninterrupted, run_dir)


def test_a_damaged_checkpoint_is_named_and_the_fold_resumes_from_the_one_before(uninterrupted, tmp_path,
                                                                                monkeypatch, capfd):
    import keras

    from ser_keras.training import callbacks as callbacks_module
    from ser_keras.evaluation.fit import fit

    original = callbacks_module.training_callbacks

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 3:
                raise KeyboardInterrupt

    monkeypatch.setattr(callbacks_module, "training_callbacks",
                        lambda *a, **k: original(*a, **k) + [Interrupt()])  # after the checkpoint
    run_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        fit(config(), run_dir, progress=False)
    monkeypatch.setattr(callbacks_module, "training_callbacks", original)
    backup = run_dir / "folds" / FOLD / "checkpoint" / "backup"
    latest = backup / "latest.npz"
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])  # a write cut short
    capfd.readouterr()

    results = fit(config(), run_dir, progress=False)
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if "damaged" in line]
    assert len(lines) == 1 and str(latest) in lines[0] and "previous.npz" in lines[0], err
    assert "Traceback" not in err and "BadZipFile" in lines[0]
    assert results["folds"][0]["resumed_at_epoch"] == 3  # from previous.npz, one epoch back
    same_outputs(uninterrupted, run_dir)


def tiny_model():
    import keras

    inputs = keras.Input((3,))
    outputs = keras.layers.Dense(2)(keras.layers.Dropout(0.5, seed=1)(inputs))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="mse")
    return model


def test_with_every_checkpoint_damaged_the_fold_restarts_from_its_first_epoch(tmp_path, capsys):
    from ser_keras.training.callbacks import EpochCheckpoint

    for name in ("latest.npz", "previous.npz"):
        (tmp_path / name).write_bytes(b"PK\x03\x04 not a whole zip file")
    checkpoint = EpochCheckpoint(tmp_path, title="fold x")
    assert checkpoint.restore(tiny_model()) == 0 and checkpoint.resumed_from is None
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and "Traceback" not in "".join(lines)
    assert lines[0].startswith(f"{tmp_path / 'latest.npz'}: damaged checkpoint") and "previous.npz" in lines[0]
    assert lines[1].startswith(f"{tmp_path / 'previous.npz'}: damaged checkpoint") and "first epoch" in lines[1]


def test_the_checkpoint_holds_the_seed_states_and_the_optimizer(tmp_path):
    """model.weights leaves out the dropout layer's SeedGenerator state; the checkpoint must not."""
    import numpy as np

    from ser_keras.training.callbacks import EpochCheckpoint

    model = tiny_model()
    x, y = np.ones((8, 3), np.float32), np.zeros((8, 2), np.float32)
    checkpoint = EpochCheckpoint(tmp_path)
    model.fit(x, y, epochs=2, verbose=0, callbacks=[checkpoint])
    seeds = [v for v in model.variables if "seed" in v.path]
    assert seeds and not any(v is s for v in model.weights for s in seeds)
    other = tiny_model()
    assert EpochCheckpoint(tmp_path).restore(other) == 2
    for a, b in zip(model.variables + model.optimizer.variables, other.variables + other.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_checkpoint_of_another_format_is_passed_over_in_one_line(tmp_path, capsys):
    """One checkpoint format is read: a file of an earlier one (model.weights + optimizer
    variables without an epoch record, or another format number) is reported and the fold
    restarts from its first epoch."""
    import numpy as np

    from ser_keras.training.callbacks import EpochCheckpoint

    model = tiny_model()
    model.fit(np.ones((8, 3), np.float32), np.zeros((8, 2), np.float32), epochs=1, verbose=0)
    old = list(model.weights) + list(model.optimizer.variables)
    np.savez(tmp_path / "latest.npz", **{f"v{i}": np.asarray(v) for i, v in enumerate(old)})
    np.savez(tmp_path / "previous.npz", meta=np.array(json.dumps({"format": 1, "epoch": 3})))
    checkpoint = EpochCheckpoint(tmp_path, title="fold x")
    assert checkpoint.restore(tiny_model()) == 0 and checkpoint.resumed_from is None
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and "not a checkpoint of format 2" in lines[0]
    assert "written in format 1, this version reads 2" in lines[1] and "first epoch" in lines[1]


def test_a_fold_interrupted_after_early_stopping_only_restores_its_best_weights(tmp_path):
    """Killed after the checkpoint of the epoch that stopped training, before fit's end: the
    re-run trains no further epoch, and fit's end puts back the best epoch's weights."""
    import keras
    import numpy as np

    from ser_keras.data.pipeline import epoch_steps, make_dataset
    from ser_keras.training.callbacks import EpochCheckpoint, ResumableEarlyStopping, read_state

    features = [np.full((3, 3), i, np.float32) for i in range(8)]
    labels = np.arange(8) % 2

    class FakeValidation(keras.callbacks.Callback):  # validation UA 0.5, then worse: stop at epoch 1
        def on_epoch_end(self, epoch, logs=None):
            logs["val_ua"] = 0.5 - 0.1 * epoch

    class Crash(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            raise KeyboardInterrupt

    def model_and_callbacks():
        inputs = keras.Input((None, 3))
        outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling1D()(inputs))
        model = keras.Model(inputs, outputs)
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        stopping = ResumableEarlyStopping(tmp_path, patience=1)
        checkpoint = EpochCheckpoint(tmp_path / "backup", stateful=[stopping])
        return model, [FakeValidation(), stopping, checkpoint], checkpoint

    def train(model, callbacks, start, stop, extra=()):
        data = make_dataset(features, labels, 4, training=True, seed=0, epochs=range(start, stop))
        model.fit(data, epochs=stop, initial_epoch=start, steps_per_epoch=epoch_steps(8, 4),
                  callbacks=[*callbacks, *extra], verbose=0)

    model, callbacks, _ = model_and_callbacks()
    best = None

    class KeepBest(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            nonlocal best
            if epoch == 0:
                best = [np.array(w) for w in self.model.get_weights()]

    with pytest.raises(KeyboardInterrupt):  # on_train_end: ES would restore, but we die first
        train(model, [Crash(), KeepBest(), *callbacks], 0, 10)  # Crash's on_train_end runs first
    assert not read_state(tmp_path)["finished"]

    model, callbacks, checkpoint = model_and_callbacks()
    start = checkpoint.restore(model)
    assert (start, checkpoint.stopped) == (2, True)
    train(model, callbacks, start, start)  # no epoch runs
    for a, b in zip(model.get_weights(), best):
        np.testing.assert_array_equal(a, b)
    state = read_state(tmp_path)
    assert state["finished"] and state["stopped_early"] and state["best_epoch"] == 0


def _averaging_model():
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,))
    outputs = keras.layers.Dense(2, kernel_initializer=keras.initializers.GlorotUniform(seed=3))(inputs)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.1, use_ema=True, ema_momentum=0.9), loss="mse")
    model.optimizer.build(model.trainable_variables)
    return model


def test_averaged_weights_are_what_validation_and_the_kept_model_see(tmp_path):
    """train.ema_momentum: every epoch end (and the end of fit) holds the optimizer's moving
    average of the weights, training itself follows the same path as without the swap, and a
    fit resumed from a checkpoint ends where the uninterrupted one does."""
    import keras
    import numpy as np

    from ser_keras.training.callbacks import AveragedWeights, EpochCheckpoint

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 3)).astype(np.float32), rng.normal(size=(16, 2)).astype(np.float32)

    class Seen(keras.callbacks.Callback):  # what validation would see at each epoch end
        def __init__(self):
            super().__init__()
            self.weights = []

        def on_epoch_end(self, epoch, logs=None):
            self.weights.append([np.asarray(v) for v in self.model.trainable_variables])

    class Averages(keras.callbacks.Callback):  # the reference: the optimizer's average, no swap
        def __init__(self):
            super().__init__()
            self.weights, self.trained = [], []

        def on_epoch_end(self, epoch, logs=None):
            self.weights.append([np.asarray(a) for a in self.model.optimizer._model_variables_moving_average])
            self.trained.append([np.asarray(v) for v in self.model.trainable_variables])

    def fit(model, callbacks, start, stop):
        model.fit(x, y, batch_size=4, epochs=stop, initial_epoch=start, shuffle=False, verbose=0,
                  callbacks=callbacks)

    plain, averages = _averaging_model(), Averages()
    fit(plain, [averages], 0, 4)
    swapped, seen = _averaging_model(), Seen()
    checkpoint = EpochCheckpoint(tmp_path / "full")
    fit(swapped, [AveragedWeights(checkpoint), seen, checkpoint], 0, 4)
    for expected, got in zip(averages.weights, seen.weights):
        for a, b in zip(expected, got):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    # fit's end keeps the last average, not the trained weights.
    for a, b in zip(averages.weights[-1], swapped.trainable_variables):
        np.testing.assert_allclose(a, np.asarray(b), rtol=1e-6, atol=1e-7)
    assert not np.allclose(averages.trained[-1][0], averages.weights[-1][0], atol=1e-3)

    first = _averaging_model()
    checkpoint = EpochCheckpoint(tmp_path / "resumed")
    fit(first, [AveragedWeights(checkpoint), checkpoint], 0, 2)
    again = _averaging_model()
    checkpoint = EpochCheckpoint(tmp_path / "resumed")
    assert checkpoint.restore(again) == 2
    fit(again, [AveragedWeights(checkpoint), checkpoint], 2, 4)
    for a, b in zip(swapped.variables + swapped.optimizer.variables, again.variables + again.optimizer.variables):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
