"""The network phases of a fold: SAE kernels, Keras training with early stopping, refit.

``train_network`` is the network half of the fold engine (``training.fold``): for an
``sae_conv`` front end the sparse-auto-encoder kernels pre-trained on patches of a seeded third
of the training part (``sae_kernels.npz``); the model (``ser_keras.models``) built and compiled
inside the ``runtime.strategy`` scope and trained with Keras' ``fit`` and the callbacks of
``training.callbacks`` (per-epoch validation WA/UA and confusion matrix to TensorBoard and
``history.csv``, a checkpoint every epoch, early stopping on validation UA restoring the best
weights); with ``train.refit`` (always under protocol "all") a fresh model then trains on the
whole training part for the best epoch count, in ``refit/``, and is the one tested and saved.

A fold interrupted inside its epochs and re-run gives the uninterrupted run's numbers: the
checkpoint holds the weights, the noise and dropout layers' seed states, the optimizer and the
early-stopping state, and each epoch's data order is a function of (seed, epoch).
"""

from __future__ import annotations

import json
import pathlib
import time
import typing

import keras
import numpy as np
import pandas as pd

from ser_keras.config import (CLASS_WEIGHT_BALANCED, CLASS_WEIGHT_NONE, PROTOCOL_ALL, SAE_CONV, STRATEGY_MULTI_WORKER,
                              Config)
from ser_keras.data.pipeline import epoch_steps, make_dataset
from ser_keras.data.splits import Fold
from ser_keras.errors import SerKerasError
from ser_keras.models import build_model, compile_model
from ser_keras.models.predictor import make_predictor, predict_views
from ser_keras.rundir import FoldDir, RunDir, atomic_write_text
from ser_keras.training import callbacks
from ser_keras.training.distribute import patch_for_multi_worker
from ser_keras.training.sae_pretrain import assign_kernels, pretrain_kernels


def refits(config: Config) -> bool:
    """Whether network folds end with a fresh model trained on training + validation: with
    ``train.refit``, and always under protocol "all" (the model to deploy)."""
    return bool(config.train.refit) or config.train.protocol == PROTOCOL_ALL


def train_network(context, fold: Fold, fold_dir: FoldDir, x: dict,
                  train: np.ndarray, validation: np.ndarray, test: np.ndarray) -> dict:
    config = context.config
    seed = int(config.train.seed)
    y = {"train": context.y[train], "validation": context.y[validation], "test": context.y[test]}
    y["all"] = np.concatenate([y["train"], y["validation"]])
    kernels = None
    if config.model.frontend == SAE_CONV:
        kernels = _sae_kernels(context, fold_dir, x["train"], seed)
    batch = int(config.train.batch_size)

    def datasets(views: list) -> list:  # one per test-time view (features.test_warp_factors)
        return [make_dataset(view, None, batch, training=False, seed=seed) for view in views]

    validation_ds = datasets(x["views"]["validation"]) if len(validation) else None
    title = f"{config.data.corpus} {config.model.experiment} {fold.name}"
    tensorboard_dir = RunDir(context.run_dir).tensorboard(config.data.corpus, fold.name)
    model, resumed_at = _fit_network(context, fold_dir, fold_dir, kernels,
                                     _training_set(x["train"], y["train"], x.get("train_versions", [])),
                                     validation_ds, y["validation"], int(config.train.epochs), tensorboard_dir,
                                     title)
    state = callbacks.read_state(fold_dir.checkpoint) or {}
    refit_epochs = None
    if refits(config) and state.get("best") is not None:
        # The epoch count validation picked, now on every training speaker (validation ones too).
        refit_epochs = int(state["best_epoch"]) + 1
        if context.progress:
            print(f"fold {fold.name}: refit on all {len(train) + len(validation)} training utterances "
                  f"for {refit_epochs} epoch{'s' * (refit_epochs != 1)} (the best validation epoch)")
        model, refit_resumed_at = _fit_network(
            context, fold_dir, FoldDir(fold_dir.refit), kernels,
            _training_set(list(x["train"]) + list(x["validation"]), y["all"], x.get("all_versions", [])),
            None, [], refit_epochs, RunDir(context.run_dir).tensorboard(config.data.corpus, fold.name, refit=True),
            f"{title} refit")
    model.save(fold_dir.keras_model)
    if len(test):
        probabilities = predict_views(make_predictor(model), datasets(x["views"]["test"]))
    else:  # protocol "all": nothing to test
        probabilities = np.zeros((0, len(context.labels)), np.float32)
    serving = {}
    if validation_ds is not None and not refit_epochs:
        # What the kept model gives the validation part (which chose its epoch): the
        # functionals classifier's weight in the fusion is chosen on it (training.functionals).
        serving["validation_probabilities"] = predict_views(make_predictor(model), validation_ds)
        if "validation_serving" in x["views"]:
            serving["validation_serving_probabilities"] = predict_views(
                make_predictor(model), datasets(x["views"]["validation_serving"]))
    if "serving" in x["views"]:  # the same model on single recordings, normalised as serve does
        serving["serving_probabilities"] = predict_views(make_predictor(model), datasets(x["views"]["serving"]))
    return {
        "probabilities": probabilities,
        "predicted": probabilities.argmax(axis=1),
        "epochs_trained": int(state.get("epochs_done", len(_history(fold_dir)))),
        "best_epoch": None if state.get("best") is None else int(state["best_epoch"]) + 1,
        "best_val_ua": state.get("best"),
        "stopped_early": bool(state.get("stopped_early", False)),
        **({"refit_epochs": refit_epochs} if refit_epochs else {}),
        # A fold continued by a re-run after an interruption says where (0: never interrupted);
        # the epochs' random state is checkpointed, so it gives the uninterrupted numbers.
        **({"resumed_at_epoch": resumed_at} if resumed_at else {}),
        **({"refit_resumed_at_epoch": refit_resumed_at} if refit_epochs and refit_resumed_at else {}),
        "replicas": int(context.strategy.num_replicas_in_sync),
        **serving,
    }


def _training_set(features: list, labels: np.ndarray, others: list) -> tuple:
    """(features, labels, variants) for `make_dataset`: with other versions of the utterances
    (`FittedFrontEnd.transform_warped`: blocks of them after the originals, in the same order)
    every epoch draws one version of each utterance."""
    versions = list(features) + list(others)
    return versions, labels, len(versions) // len(features)


def _fit_network(context, fold_dir: FoldDir, phase_dir: FoldDir,
                 kernels: typing.Optional[dict], training_set: tuple, validation_ds,
                 y_validation: np.ndarray, epochs: int, tensorboard_dir: pathlib.Path, title: str):
    """A fresh model (with the SAE kernels) trained on `training_set`, its checkpoints and
    history in `phase_dir` (the fold's directory, or its ``refit/``): with validation data,
    early stopping restores its best epoch; without, the last epoch is kept. Resumes from
    ``phase_dir/checkpoint``; a finished phase is only loaded. Returns (model, the epoch count
    it resumed at: 0 for a fresh start)."""
    config = context.config
    seed = int(config.train.seed)
    features, labels, variants = training_set
    n_classes = len(context.labels)
    keras.utils.set_random_seed(seed)
    with context.strategy.scope():
        model = fold_model(context, n_classes, int(features[0].shape[-1]))
        if kernels is not None:
            assign_kernels(model, kernels)
    checkpoint_dir = phase_dir.checkpoint
    state = callbacks.read_state(checkpoint_dir)
    if state is not None and state.get("finished"):
        # Training ended before an interruption; only what follows it was missing.
        callbacks.load_best_weights(model, checkpoint_dir)
        return model, int(state.get("epochs_done", 0))
    extra = [_ElapsedLogger(fold_dir)]
    if context.progress and context.epoch_lines:
        extra.append(callbacks.EpochLine(title, epochs))
    # Looked up on the module at call time: tests wrap training_callbacks to interrupt a fit.
    fold_callbacks = callbacks.training_callbacks(phase_dir.path, validation_ds, y_validation, context.labels,
                                                  config.train.patience, tensorboard_dir, title=title, extra=extra,
                                                  average_weights=bool(config.train.ema_momentum))
    checkpoint = next(c for c in fold_callbacks if isinstance(c, callbacks.EpochCheckpoint))
    start = checkpoint.restore(model)
    # Stopped early at the last checkpoint (interrupted before the end of fit): run no more
    # epochs; fit's end still restores the best weights and records that training finished.
    last = start if checkpoint.stopped else max(int(epochs), start)
    steps = epoch_steps(len(labels), int(config.train.batch_size))
    train_ds = make_dataset(features, labels, int(config.train.batch_size), training=True, seed=seed,
                            max_frames=config.features.max_frames, variants=variants, epochs=range(start, last))
    fit_kwargs = {}
    weights = _class_weights(config, labels, n_classes)
    if weights is not None:
        fit_kwargs["class_weight"] = weights
    model.fit(train_ds, epochs=last, initial_epoch=start, steps_per_epoch=steps, callbacks=fold_callbacks,
              verbose=1 if context.progress and not context.epoch_lines else 0, shuffle=False, **fit_kwargs)
    return model, start


def fold_model(context, n_classes: int, input_dim: int) -> keras.Model:
    """The compiled model of the next fold, in the state a freshly built one has.

    The first fold builds and compiles it. Later folds of the same run reuse that model object,
    so Keras' traced training step and the validation predictor are reused too (tracing the
    BLSTM's training step is a sizeable share of a short fold on a CPU), and every
    variable is reset to a freshly built model's: weights, the noise and dropout layers' seed
    states, and the optimizer's slots and step counter. A fold therefore trains exactly as it
    would alone (tests/test_training.py checks it bit for bit).
    """
    fresh = build_model(context.config, n_classes, input_dim)
    key = (int(n_classes), int(input_dim))
    if key not in context.models:
        compile_model(fresh, context.config)
        # Build the optimizer now, so its initial state can be recorded and put back later.
        fresh.optimizer.build(fresh.trainable_variables)
        context.models[key] = (fresh, [v.numpy() for v in fresh.optimizer.variables])
        if context.config.runtime.strategy == STRATEGY_MULTI_WORKER:
            patch_for_multi_worker(fresh)
        return fresh
    model, optimizer_start = context.models[key]
    if len(model.variables) != len(fresh.variables):  # pragma: no cover - same builder, same config
        raise SerKerasError("fold_model: the kept model and a fresh one differ in their variables")
    for kept, new in zip(model.variables, fresh.variables):
        kept.assign(new)
    for variable, value in zip(model.optimizer.variables, optimizer_start):
        variable.assign(value)
    return model


def _sae_kernels(context, fold_dir: FoldDir, train_x: list, seed: int) -> dict:
    """Pre-train (or, on resume, load) the SAE kernels of this fold."""
    path = fold_dir.sae_kernels
    if path.is_file():
        with np.load(path) as arrays:
            sizes = sorted({int(k.split("_")[0][1:]) for k in arrays.files})
            return {k: (arrays[f"k{k}_kernel"], arrays[f"k{k}_bias"]) for k in sizes}
    kernels = pretrain_kernels(train_x, context.config, seed, progress=context.progress and not context.epoch_lines)
    payload = {}
    for size, (kernel, bias) in kernels.items():
        payload[f"k{int(size)}_kernel"] = np.asarray(kernel)
        payload[f"k{int(size)}_bias"] = np.asarray(bias)
    np.savez(path, **payload)
    return kernels


def _class_weights(config: Config, y_train: np.ndarray, n_classes: int) -> typing.Optional[dict]:
    if config.train.class_weight == CLASS_WEIGHT_NONE:
        return None
    if config.train.class_weight != CLASS_WEIGHT_BALANCED:
        raise SerKerasError(f"train.class_weight: '{config.train.class_weight}' is not none or balanced")
    counts = np.bincount(y_train, minlength=n_classes).astype(np.float64)
    present = counts > 0
    weights = np.where(present, counts.sum() / (present.sum() * np.maximum(counts, 1)), 0.0)
    return {i: float(w) for i, w in enumerate(weights)}


def _history(fold_dir: FoldDir) -> pd.DataFrame:
    path = fold_dir.history
    if path.is_file() and path.stat().st_size:
        return pd.read_csv(path)
    return pd.DataFrame()


def elapsed_seconds(fold_dir: FoldDir) -> float:
    """Training time a fold has accumulated so far (0 for a fresh one)."""
    path = fold_dir.elapsed
    try:
        return float(json.loads(path.read_text())["seconds"])
    except (OSError, ValueError, KeyError):
        return 0.0


class _ElapsedLogger(keras.callbacks.Callback):
    """Callback: accumulated training time of the fold, so a resumed fold reports its total."""

    def __init__(self, fold_dir: FoldDir):
        super().__init__()
        self.fold_dir = fold_dir

    def on_train_begin(self, logs=None):
        self.base = elapsed_seconds(self.fold_dir)
        self.start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        atomic_write_text(self.fold_dir.elapsed, json.dumps({"seconds": self.base + time.time() - self.start}))
