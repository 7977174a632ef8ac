"""Keras callbacks of a training run.

- ``ValidationMetrics``: at the end of every epoch, predicts the validation utterances once and
  adds ``val_loss``, ``val_wa`` (accuracy) and ``val_ua`` (macro recall) to the epoch logs — so
  Keras' progress bar, ``CSVLogger``, ``History`` and ``EarlyStopping`` all see them — and writes
  the scalars and the confusion matrix (an image with class names) to TensorBoard.
  It replaces ``fit(validation_data=...)``: the validation set is run through the model once
  per epoch, not twice.
- ``ResumableEarlyStopping``: ``keras.callbacks.EarlyStopping`` on validation UA, restoring the
  best weights, whose best-so-far state (best UA, its epoch, the patience counter and the best
  weights) is written to disk every epoch so an interrupted fold resumes with it.
- ``training_callbacks``: the ordered list for one fold; weights, optimizer state and epoch are
  checkpointed every epoch by ``EpochCheckpoint`` (Keras' ``BackupAndRestore`` with a faster
  writer; kept after training, so the run directory holds its checkpoints).

Order matters: ``ValidationMetrics`` must come before every callback that reads its keys.
"""

from __future__ import annotations

import json
import os
import pathlib
import typing
import weakref

import keras
import numpy as np

from ser_keras.errors import SerKerasError
from ser_keras.evaluation import metrics as metrics_lib

MONITOR = "val_ua"
_PREDICTORS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def make_predictor(model: keras.Model):
    """`f(dataset) -> probabilities` through one `tf.function` traced ONCE for inputs
    `(batch, frames, D)` of any batch size and length. `model.predict` retraces for the first
    few padded lengths it meets (seconds each on a CPU, in every fold); this does not."""
    import tensorflow as tf

    if model in _PREDICTORS:
        return _PREDICTORS[model]
    dim = model.inputs[0].shape[-1]
    signature = [tf.TensorSpec([None, None, dim], tf.float32)]
    forward = tf.function(lambda x: model(x, training=False), input_signature=signature)

    def predict(dataset) -> np.ndarray:
        outputs = []
        for batch in dataset:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            outputs.append(forward(x).numpy())
        if not outputs:
            return np.zeros((0, model.outputs[0].shape[-1]), np.float32)
        return np.concatenate(outputs, axis=0)

    _PREDICTORS[model] = predict
    return predict


class ValidationMetrics(keras.callbacks.Callback):
    """Per-epoch confusion matrix, WA and UA on the validation data.

    Args:
        dataset: a `tf.data.Dataset` (or array) of validation inputs; labels in it are ignored.
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
        probabilities = self._predict(self.dataset)
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

        from ser_keras.evaluation.confusion_image import confusion_image
        from ser_keras.evaluation.plots import metrics_title

        tags = {"val_wa": "val_WA", "val_ua": "val_UA"}
        title = metrics_title(logs["val_wa"], logs["val_ua"], f"validation, epoch {epoch + 1}", self.title)
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

    Every epoch it writes ``state_dir/early_stopping.json`` (best value, best epoch, patience
    counter, whether training has finished) and, when the monitored value improves,
    ``state_dir/best.weights.npz``; ``on_train_begin`` reads them back.
    """

    def __init__(self, state_dir: os.PathLike, monitor: str = MONITOR, patience: int = 8, **kwargs):
        kwargs.setdefault("mode", "max")
        kwargs.setdefault("restore_best_weights", True)
        super().__init__(monitor=monitor, patience=patience, **kwargs)
        self.state_dir = pathlib.Path(state_dir)

    @property
    def state_path(self) -> pathlib.Path:
        return self.state_dir / "early_stopping.json"

    @property
    def weights_path(self) -> pathlib.Path:
        return self.state_dir / "best.weights.npz"

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        state = read_state(self.state_dir)
        if state is None:
            return
        self.best = state["best"]
        self.best_epoch = state["best_epoch"]
        self.wait = state["wait"]
        if self.weights_path.is_file():
            with np.load(self.weights_path) as data:
                self.best_weights = [data[f"w{i}"] for i in range(len(data.files))]

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
    path = pathlib.Path(state_dir) / "early_stopping.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def load_best_weights(model: keras.Model, state_dir: os.PathLike) -> bool:
    """Set `model` to the best weights saved by ResumableEarlyStopping; False if none."""
    path = pathlib.Path(state_dir) / "best.weights.npz"
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
) -> list:
    """The callbacks of one fold, in the order they must run at every epoch end."""
    checkpoint_dir = fold_dir / "checkpoint"
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    has_validation = len(y_validation) > 0
    callbacks: list = []
    if has_validation:
        callbacks.append(ValidationMetrics(validation_dataset, y_validation, labels, tensorboard_dir, title))
    elif tensorboard_dir is not None:
        callbacks.append(ScalarLogger(tensorboard_dir))
    callbacks.append(ResumableCSVLogger(fold_dir / "history.csv", checkpoint_dir / "backup"))
    if has_validation:
        callbacks.append(ResumableEarlyStopping(checkpoint_dir, patience=patience))
    callbacks.extend(extra)
    # Last, so the saved epoch counter never runs ahead of the state written above.
    callbacks.append(EpochCheckpoint(checkpoint_dir / "backup"))
    return callbacks


class EpochCheckpoint(keras.callbacks.BackupAndRestore):
    """``keras.callbacks.BackupAndRestore`` (weights, optimizer state and epoch counter every
    epoch, restored by ``fit`` on resume) that writes the arrays as one ``latest.npz`` instead of
    Keras' ``latest.weights.h5``: the h5 writer walks the model's whole object tree (exp4:
    0.17 s a save, a tenth of an EMO-DB epoch; this: 0.06 s). It holds what the h5 file holds
    (``model.weights``, then ``optimizer.variables``) and is written before the epoch counter
    (Keras' ``training_metadata.json``), both atomically, so the counter never runs ahead of the
    arrays. A checkpoint in the older h5 form is still resumed.
    """

    def __init__(self, backup_dir: os.PathLike):
        super().__init__(str(backup_dir), delete_checkpoint=False)
        self.arrays_path = pathlib.Path(backup_dir) / "latest.npz"

    def _variables(self) -> list:
        return list(self.model.weights) + list(self.model.optimizer.variables)

    def _save_model(self):
        _atomic_savez(self.arrays_path, {f"v{i}": v.numpy() for i, v in enumerate(self._variables())})
        _atomic_write_text(pathlib.Path(self._training_metadata_path),
                           json.dumps({"epoch": self._current_epoch, "batch": self._last_batch_seen}))

    def _load_model(self):
        # Keras keeps the resumed epoch on the model and never clears it; `fit` reuses one model
        # across folds and phases, so a fresh one must not start where a resumed one did.
        self.model._initial_epoch = None
        if not self.arrays_path.is_file():  # nothing saved yet, or an h5 checkpoint
            return super()._load_model()
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        variables = self._variables()
        with np.load(self.arrays_path) as data:
            if len(data.files) != len(variables):
                raise SerKerasError(f"{self.arrays_path}: holds {len(data.files)} arrays, the model has "
                                    f"{len(variables)}; delete the fold's directory to train it again")
            for i, variable in enumerate(variables):
                variable.assign(data[f"v{i}"])
        metadata = pathlib.Path(self._training_metadata_path)
        if metadata.is_file():
            self.model._initial_epoch = json.loads(metadata.read_text())["epoch"]


class ResumableCSVLogger(keras.callbacks.CSVLogger):
    """CSVLogger in append mode that first drops the rows of epochs the backup does not hold
    (an epoch logged just before an interruption is re-run on resume, and logged once)."""

    def __init__(self, filename, backup_dir, separator=","):
        super().__init__(str(filename), separator=separator, append=True)
        self.backup_dir = pathlib.Path(backup_dir)

    def on_train_begin(self, logs=None):
        path = pathlib.Path(self.filename)
        meta = self.backup_dir / "training_metadata.json"
        if path.is_file():
            try:
                resumed_epoch = int(json.loads(meta.read_text())["epoch"]) if meta.is_file() else 0
            except (OSError, ValueError, KeyError):
                resumed_epoch = 0
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
