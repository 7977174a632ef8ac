"""The SVM half of the fold engine (exp1): grid-searched RBF SVM on normalised functionals.

``train_svm`` fits ``models.build_svm`` on the functionals of the training part (its own grid
search picks C), logs its validation WA/UA like an epoch (TensorBoard and ``history.csv``, so
every experiment leaves the same kind of logs), then refits on training + validation and
predicts the test part; it saves ``model.joblib``.
"""

from __future__ import annotations

import warnings

import joblib
import numpy as np
import pandas as pd
import tensorflow as tf

from ser_keras import metrics as metrics_lib
from ser_keras.data.splits import Fold
from ser_keras.models import build_svm
from ser_keras.models.svm import svm_scores
from ser_keras.rundir import FoldDir, RunDir
from ser_keras.training.confusion_image import confusion_image


def train_svm(context, fold: Fold, fold_dir: FoldDir, x: dict,
              train: np.ndarray, validation: np.ndarray, test: np.ndarray) -> dict:
    """exp1: grid-searched RBF SVM on normalised LLD functionals."""
    config = context.config
    stack = lambda parts: np.concatenate([np.asarray(p).reshape(1, -1) for p in parts], axis=0)  # noqa: E731
    x_train, y_train = stack(x["train"]), context.y[train]
    x_test = stack(x["test"])
    row = {}
    if len(validation):
        model = _fit_svm(build_svm(config), x_train, y_train)
        val_pred = svm_scores(model, stack(x["validation"]), len(context.labels)).argmax(axis=1)
        cm = metrics_lib.confusion_matrix(context.y[validation], val_pred, len(context.labels))
        row = {"epoch": 0, "val_wa": metrics_lib.weighted_accuracy(cm), "val_ua": metrics_lib.unweighted_accuracy(cm),
               "best_C": (float(model.best_params_.get("svc__C", float("nan")))
                          if hasattr(model, "best_params_") else None)}
        _log_single_epoch(context, fold, fold_dir, row, cm)
        # Refit on everything the fold may train on (the grid search picks C again).
        x_train = np.concatenate([x_train, stack(x["validation"])])
        y_train = np.concatenate([y_train, context.y[validation]])
    model = _fit_svm(build_svm(config), x_train, y_train)
    scores = svm_scores(model, x_test, len(context.labels))
    joblib.dump(model, fold_dir.svm_model)
    best_c = float(model.best_params_.get("svc__C")) if hasattr(model, "best_params_") else None
    return {"probabilities": scores, "predicted": scores.argmax(axis=1), "svm_C": best_c,
            "val_wa": row.get("val_wa"), "val_ua": row.get("val_ua")}


def _fit_svm(model, x_train, y_train):
    with warnings.catch_warnings():
        # Small classes in the inner CV of a small fold warn; the split is still valid.
        warnings.simplefilter("ignore", UserWarning)
        model.fit(x_train, y_train)
    return model


def _log_single_epoch(context, fold: Fold, fold_dir: FoldDir, row: dict, cm) -> None:
    """exp1 has no epochs: its validation WA/UA/confusion go to TensorBoard and history.csv as
    one step, so every experiment leaves the same kind of logs."""
    pd.DataFrame([{k: v for k, v in row.items() if v is not None}]).to_csv(fold_dir.history, index=False)
    log_dir = RunDir(context.run_dir).tensorboard(context.config.data.corpus, fold.name)
    writer = tf.summary.create_file_writer(str(log_dir))
    title = metrics_lib.metrics_title(row["val_wa"], row["val_ua"], "validation",
                                      f"{context.config.data.corpus} exp1 {fold.name}")
    image = confusion_image(cm, context.labels, title)
    with writer.as_default(step=0):
        tf.summary.scalar("val_WA", row["val_wa"])
        tf.summary.scalar("val_UA", row["val_ua"])
        tf.summary.image("val_confusion_matrix", image[np.newaxis])
    writer.close()
