"""Keras callbacks of a training run.

- ``ValidationMetrics``: at the end of every epoch, predicts the validation utterances once and
  adds ``val_loss``, ``val_wa`` (accuracy) and ``val_ua`` (macro recall) to the epoch logs — so
  Keras' progress bar, ``CSVLogger``, ``History`` and ``EarlyStopping`` all see them — and writes
  the scalars and the confusion matrix (an image with class names) to TensorBoard.
  It replaces ``fit(validation_data=...)``: the validation set is run through the model once
  per epoch, not twice.
- ``ResumableEarlyStopping``: ``keras.callbacks.EarlyStopping`` on validation UA, restoring the
  best weights, whose best-so-far state (best UA, its epoch, the patience counter and the best
  weights) travels in the epoch checkpoint, so an interrupted fold resumes with it; it also
  writes ``early_stopping.json`` and ``best.weights.npz`` for the code that reads a finished fold.
- ``EpochCheckpoint``: a callback on Keras' public API that saves, every epoch, one ``.npz``
  with the model's variables (seed states included), the optimizer's and the callbacks' state;
  ``restore`` puts it back before ``fit``, which is then called with ``initial_epoch``.
- ``training_callbacks``: the ordered list for one fold (checkpoints are kept after training,
  so the run directory holds them), with ``training.averaged_weights.AveragedWeights`` first when
  the optimizer keeps a moving average of the weights (``train.ema_momentum``).

Order matters: ``AveragedWeights`` comes first, and ``ValidationMetrics`` before every callback
that reads its keys.
"""

from __future__ import annotations

import json
import os
import pathlib
import typing

import keras
import numpy as np

from ser_keras.errors import SerKerasError
from ser_keras import metrics as metrics_lib
from ser_keras.models.predictor import make_predictor, predict_views
from ser_keras.rundir import (BEST_WEIGHTS_FILE, EARLY_STOPPING_FILE, LATEST_CHECKPOINT_FILE, PREVIOUS_CHECKPOINT_FILE,
                              CheckpointDir, FoldDir)
from ser_keras.training.averaged_weights import AveragedWeights
from ser_keras.training.confusion_image import confusion_image

MONITOR = "val_ua"


class ValidationMetrics(keras.callbacks.Callback):
    """Per-epoch confusion matrix, WA and UA on the validation data.

    Args:
        dataset: a `tf.data.Dataset` (or array) of validation inputs, or a list of them, one
            per test-time view of the same utterances (their probabilities are averaged, as the
            test is scored); labels in it are ignored.
        y_true: int array of the validation labels, in dataset order.
        labels: class names, index-aligned with the model's outputs.
        log_dir: TensorBoard directory for this fold (None: no TensorBoard output).
        title: prefix of the confusion-matrix image title (corpus, fold, protocol).
    """

    def __init__(self, dataset, y_true, labels: typing.Sequence[str],
                 log_dir: typing.Optional[os.PathLike] = None, title: str = ""):
        super().__init__()
        self.dataset = dataset
        self.y_true = np.asarray(y_true, dtype=np.int64)
        self.labels = list(labels)
        self.log_dir = None if log_dir is None else str(log_dir)
        self.title = title
        self._writer = None
        self._predict = None
        self.last_confusion = None

    def _get_writer(self):
        if self._writer is None and self.log_dir is not None:
            import tensorflow as tf

            self._writer = tf.summary.create_file_writer(self.log_dir)
        return self._writer

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        if len(self.y_true) == 0:
            return
        if self._predict is None:
            self._predict = make_predictor(self.model)
        probabilities = predict_views(self._predict, self.dataset)
        y_pred = probabilities.argmax(axis=-1)
        cm = metrics_lib.confusion_matrix(self.y_true, y_pred, len(self.labels))
        picked = probabilities[np.arange(len(self.y_true)), self.y_true]
        logs["val_loss"] = float(-np.mean(np.log(np.clip(picked, 1e-7, 1.0))))
        logs["val_wa"] = metrics_lib.weighted_accuracy(cm)
        logs["val_ua"] = metrics_lib.unweighted_accuracy(cm)
        self.last_confusion = cm
        self._write_summaries(epoch, logs, cm)

    def _write_summaries(self, epoch: int, logs: dict, cm: np.ndarray) -> None:
        writer = self._get_writer()
        if writer is None:
            return
        import tensorflow as tf

        tags = {"val_wa": "val_WA", "val_ua": "val_UA"}
        title = metrics_lib.metrics_title(logs["val_wa"], logs["val_ua"], f"validation, epoch {epoch + 1}", self.title)
        image = confusion_image(cm, self.labels, title)
        with writer.as_default(step=epoch):
            for key, value in sorted(logs.items()):
                if isinstance(value, (int, float, np.floating, np.integer)) or np.ndim(value) == 0:
                    try:
                        tf.summary.scalar(tags.get(key, key), float(value))
                    except (TypeError, ValueError):
                        continue
            tf.summary.image("val_confusion_matrix", image[np.newaxis],
                             description="Validation confusion matrix, rows = true class, "
                                         "row-normalised %; classes: " + ", ".join(self.labels))
        writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping on validation UA whose best-so-far state survives an interruption.

    Its state goes into every epoch's checkpoint (``checkpoint_state``) and comes back from it
    (``restore_checkpoint_state``, applied in ``on_train_begin``). Every epoch it also writes
    ``state_dir/early_stopping.json`` (best value, best epoch, patience counter, whether
    training has finished) and, when the monitored value improves, ``state_dir/best.weights.npz``:
    what the code that reads a finished fold uses (``read_state``, ``load_best_weights``).
    """

    def __init__(self, state_dir: os.PathLike, monitor: str = MONITOR, patience: int = 8, **kwargs):
        kwargs.setdefault("mode", "max")
        kwargs.setdefault("restore_best_weights", True)
        super().__init__(monitor=monitor, patience=patience, **kwargs)
        self.state_dir = pathlib.Path(state_dir)
        self._pending = None

    @property
    def state_path(self) -> pathlib.Path:
        return self.state_dir / EARLY_STOPPING_FILE

    @property
    def weights_path(self) -> pathlib.Path:
        return self.state_dir / BEST_WEIGHTS_FILE

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        # What EpochCheckpoint.restore put back (None: a fresh start).
        pending, self._pending = self._pending, None
        if pending is None:
            return
        state, best_weights = pending
        self.best = state["best"]
        self.best_epoch = state["best_epoch"]
        self.wait = state["wait"]
        self.stopped_epoch = state.get("stopped_epoch", 0)
        self.best_weights = best_weights

    def checkpoint_state(self) -> tuple:
        """(JSON-able state, arrays) for EpochCheckpoint."""
        state = {"best": None if self.best is None else float(self.best), "best_epoch": int(self.best_epoch),
                 "wait": int(self.wait), "stopped_epoch": int(self.stopped_epoch)}
        arrays = {} if self.best_weights is None else {f"w{i}": w for i, w in enumerate(self.best_weights)}
        return state, arrays

    def restore_checkpoint_state(self, state: typing.Optional[dict], arrays: dict) -> None:
        if state is None:
            return
        weights = [arrays[f"w{i}"] for i in range(len(arrays))] if arrays else None
        self._pending = (state, weights)

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        # best_epoch moves to this epoch exactly when it became the best so far.
        if self.best_weights is not None and self.best_epoch == epoch:
            _atomic_savez(self.weights_path, {f"w{i}": w for i, w in enumerate(self.best_weights)})
        self._write_state(finished=False, epochs_done=epoch + 1)

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        state = read_state(self.state_dir) or {}
        self._write_state(finished=True, epochs_done=state.get("epochs_done", 0))

    def _write_state(self, finished: bool, epochs_done: int) -> None:
        state = {
            "monitor": self.monitor,
            "best": None if self.best is None else float(self.best),
            "best_epoch": int(self.best_epoch),
            "wait": int(self.wait),
            "epochs_done": int(epochs_done),
            "stopped_early": bool(self.stopped_epoch > 0),
            "finished": bool(finished),
        }
        _atomic_write_text(self.state_path, json.dumps(state))


def read_state(state_dir: os.PathLike) -> typing.Optional[dict]:
    """The early-stopping state of a fold's checkpoint directory, or None."""
    path = pathlib.Path(state_dir) / EARLY_STOPPING_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def load_best_weights(model: keras.Model, state_dir: os.PathLike) -> bool:
    """Set `model` to the best weights saved by ResumableEarlyStopping; False if none."""
    path = pathlib.Path(state_dir) / BEST_WEIGHTS_FILE
    if not path.is_file():
        return False
    with np.load(path) as data:
        model.set_weights([data[f"w{i}"] for i in range(len(data.files))])
    return True


def training_callbacks(
    fold_dir: pathlib.Path,
    validation_dataset,
    y_validation,
    labels: typing.Sequence[str],
    patience: int,
    tensorboard_dir: typing.Optional[pathlib.Path],
    title: str = "",
    extra: typing.Sequence[keras.callbacks.Callback] = (),
    average_weights: bool = False,
) -> list:
    """The callbacks of one fold, in the order they must run at every epoch end
    (`average_weights`: the model's optimizer keeps a moving average of the weights)."""
    checkpoint_dir = CheckpointDir(FoldDir(fold_dir).checkpoint)
    checkpoint_dir.path.mkdir(parents=True, exist_ok=True)
    has_validation = len(y_validation) > 0
    checkpoint = EpochCheckpoint(checkpoint_dir.backup, title=title)
    callbacks: list = [AveragedWeights(checkpoint)] if average_weights else []
    if has_validation:
        callbacks.append(ValidationMetrics(validation_dataset, y_validation, labels, tensorboard_dir, title))
    elif tensorboard_dir is not None:
        callbacks.append(ScalarLogger(tensorboard_dir))
    callbacks.append(ResumableCSVLogger(FoldDir(fold_dir).history, checkpoint))
    if has_validation:
        stopping = ResumableEarlyStopping(checkpoint_dir.path, patience=patience)
        checkpoint.stateful.append(stopping)
        callbacks.append(stopping)
    callbacks.extend(extra)
    # Last, so the checkpoint holds what the callbacks above wrote for this epoch.
    callbacks.append(checkpoint)
    return callbacks


class EpochCheckpoint(keras.callbacks.Callback):
    """Everything that shapes the next epoch, saved at the end of every epoch as ONE ``.npz``
    written atomically (``latest.npz``; the one before it is kept as ``previous.npz``):

    - ``model.variables``: the weights AND the seed states of the noise and dropout layers
      (Keras' ``SeedGenerator`` variables, which ``model.weights`` leaves out);
    - ``optimizer.variables`` (slots and step counter);
    - the epoch count, whether training was stopping, and the state of the callbacks that
      carry state across epochs (``ResumableEarlyStopping``: best value, epoch, patience
      counter, best weights), so that state can never be ahead of or behind the weights.

    The order in which an epoch sees the data is not in it: it is a pure function of
    (seed, epoch) (``data.pipeline.make_dataset(epochs=...)``). Together, a fold killed at any
    point and re-run repeats the uninterrupted run's numbers exactly.

    Use: ``start = checkpoint.restore(model)`` before ``fit``, then
    ``model.fit(..., initial_epoch=start)``. A damaged ``latest.npz`` (a truncated write, a
    full disk) is reported in one line and the fold resumes from ``previous.npz``, or from its
    first epoch. So is a checkpoint of another format (written by another version, which this
    one does not read).
    """

    FORMAT = 2

    def __init__(self, directory: os.PathLike, stateful: typing.Sequence = (), title: str = ""):
        super().__init__()
        self.directory = pathlib.Path(directory)
        self.stateful = list(stateful)
        self.title = title
        self.initial_epoch = 0
        self.stopped = False
        self.resumed_from: typing.Optional[pathlib.Path] = None

    @property
    def latest_path(self) -> pathlib.Path:
        return self.directory / LATEST_CHECKPOINT_FILE

    @property
    def previous_path(self) -> pathlib.Path:
        return self.directory / PREVIOUS_CHECKPOINT_FILE

    @staticmethod
    def _model_variables(model) -> list:
        return list(model.variables)

    def on_epoch_end(self, epoch, logs=None):
        arrays = {f"m{i}": np.asarray(v) for i, v in enumerate(self._model_variables(self.model))}
        arrays.update({f"o{i}": np.asarray(v) for i, v in enumerate(self.model.optimizer.variables)})
        callbacks = {}
        for position, callback in enumerate(self.stateful):
            state, callback_arrays = callback.checkpoint_state()
            callbacks[type(callback).__name__] = state
            arrays.update({f"c{position}_{key}": value for key, value in callback_arrays.items()})
        meta = {"format": self.FORMAT, "epoch": int(epoch) + 1, "stopped": bool(self.model.stop_training),
                "callbacks": callbacks}
        arrays["meta"] = np.array(json.dumps(meta))
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.latest_path.with_suffix(".tmp.npz")
        np.savez(tmp, **arrays)
        if self.latest_path.is_file():
            os.replace(self.latest_path, self.previous_path)
        os.replace(tmp, self.latest_path)

    # ------------------------------------------------------------------------- restoring

    def restore(self, model: keras.Model) -> int:
        """Put the latest good checkpoint into `model` (and the stateful callbacks); returns the
        epoch to start from (0: none). One line on stderr for every damaged file passed over."""
        import sys

        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        for path in (self.latest_path, self.previous_path):
            if not path.is_file():
                continue
            try:
                epoch = self._restore_npz(model, path)
            except _Damaged as exc:
                fallback = ("resumes from previous.npz" if path == self.latest_path and self.previous_path.is_file()
                            else "restarts from its first epoch")
                print(f"{path}: damaged checkpoint ({exc}); {self.title or 'the fold'} {fallback}",
                      file=sys.stderr, flush=True)
                continue
            self.initial_epoch, self.resumed_from = epoch, path
            return epoch
        return self.initial_epoch

    def _restore_npz(self, model, path: pathlib.Path) -> int:
        try:
            with np.load(path) as data:
                arrays = {key: data[key] for key in data.files}
        except Exception as exc:  # zipfile.BadZipFile, EOFError, OSError, ValueError: a broken file
            raise _Damaged(f"{type(exc).__name__}: {exc}") from None
        if "meta" not in arrays:
            raise _Damaged(f"no epoch record: not a checkpoint of format {self.FORMAT}")
        try:
            meta = json.loads(str(arrays["meta"]))
            epoch = int(meta["epoch"])
            written = int(meta.get("format", 0))
        except (ValueError, KeyError, TypeError) as exc:
            raise _Damaged(f"unreadable epoch record: {exc}") from None
        if written != self.FORMAT:
            raise _Damaged(f"written in format {written}, this version reads {self.FORMAT}")
        variables = self._model_variables(model)
        slots = list(model.optimizer.variables)
        n_model = sum(key.startswith("m") and key[1:].isdigit() for key in arrays)
        n_opt = sum(key.startswith("o") and key[1:].isdigit() for key in arrays)
        if (n_model, n_opt) != (len(variables), len(slots)):
            raise SerKerasError(f"{path}: holds {n_model} model and {n_opt} optimizer arrays, the model has "
                                f"{len(variables)} and {len(slots)}; delete the fold's directory to train it again")
        for i, variable in enumerate(variables):
            variable.assign(arrays[f"m{i}"])
        for i, variable in enumerate(slots):
            variable.assign(arrays[f"o{i}"])
        for position, callback in enumerate(self.stateful):
            prefix = f"c{position}_"
            callback.restore_checkpoint_state(
                meta.get("callbacks", {}).get(type(callback).__name__),
                {key[len(prefix):]: value for key, value in arrays.items() if key.startswith(prefix)})
        self.stopped = bool(meta.get("stopped", False))
        return epoch


class _Damaged(Exception):
    """A checkpoint file that cannot be read."""


class ResumableCSVLogger(keras.callbacks.CSVLogger):
    """CSVLogger in append mode that first drops the rows of epochs the checkpoint does not hold
    (an epoch logged just before an interruption is re-run on resume, and logged once)."""

    def __init__(self, filename, checkpoint: "EpochCheckpoint", separator=","):
        super().__init__(str(filename), separator=separator, append=True)
        self.checkpoint = checkpoint

    def on_train_begin(self, logs=None):
        path = pathlib.Path(self.filename)
        resumed_epoch = self.checkpoint.initial_epoch
        if path.is_file():
            lines = path.read_text().splitlines(keepends=True)
            if lines:
                kept = [lines[0]] + [
                    line for line in lines[1:]
                    if line.split(self.sep, 1)[0].strip().isdigit()
                    and int(line.split(self.sep, 1)[0]) < resumed_epoch
                ]
                _atomic_write_text(path, "".join(kept) if len(kept) > 1 else "")
        super().on_train_begin(logs)


class EpochLine(keras.callbacks.Callback):
    """One progress line per epoch that names the fold (`title`): Keras' progress bar cannot
    say which fold it belongs to when several fold workers share a terminal."""

    def __init__(self, title: str, epochs: int):
        super().__init__()
        self.title = title
        self.epochs = int(epochs)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        parts = [f"loss {logs['loss']:.4f}"] if "loss" in logs else []
        parts += [f"{name} {100 * logs[key]:.1f} %" for key, name in (("val_wa", "val WA"), ("val_ua", "val UA"))
                  if key in logs]
        print(f"{self.title}: epoch {epoch + 1}/{self.epochs}  " + "  ".join(parts), flush=True)


class ScalarLogger(keras.callbacks.Callback):
    """TensorBoard scalars of the epoch logs when a fold has no validation data."""

    def __init__(self, log_dir):
        super().__init__()
        self.log_dir = str(log_dir)
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf

        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        with self._writer.as_default(step=epoch):
            for key, value in sorted((logs or {}).items()):
                try:
                    tf.summary.scalar(key, float(value))
                except (TypeError, ValueError):
                    continue
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _atomic_write_text(path: pathlib.Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _atomic_savez(path: pathlib.Path, arrays: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
