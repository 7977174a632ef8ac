"""WA, UA and confusion matrices, the two figures every result in this project carries.

- WA (weighted accuracy) = correctly classified / all utterances (plain accuracy; the paper's
  "weighted average" accuracy).
- UA (unweighted accuracy, UAR) = mean over classes of per-class recall. Classes that do not
  occur in ``y_true`` (possible in one small fold) are left out of the mean rather than counted
  as recall 0, so a fold's UA is not penalised for a class it cannot contain.

Confusion matrices are rows = true class, columns = predicted class (the paper's Fig. 3),
as counts and as row-normalised percentages.

A foundation module: training scores its validation epochs and test folds with it, evaluation
pools and re-scores runs with it. ``predictions_frame`` / ``score_predictions`` are the
predictions files' rows (``predictions.csv``: fold, path, speaker, label, predicted, one
``p_<class>`` column per class) and their figures.
"""

from __future__ import annotations

import typing

import numpy as np
import pandas as pd


def confusion_matrix(y_true, y_pred, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) int64 counts, rows = true, columns = predicted."""
    y_true = np.asarray(y_true, dtype=np.int64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.int64).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred differ in length: {y_true.shape} vs {y_pred.shape}")
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def weighted_accuracy(cm: np.ndarray) -> float:
    """Accuracy from a confusion matrix (0..1); NaN for an empty matrix."""
    total = cm.sum()
    return float(np.trace(cm) / total) if total else float("nan")


def per_class_recall(cm: np.ndarray) -> np.ndarray:
    """Recall per true class; NaN for a class with no true utterances."""
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)


def unweighted_accuracy(cm: np.ndarray) -> float:
    """Macro recall over the classes present in the true labels (0..1)."""
    recall = per_class_recall(cm)
    present = ~np.isnan(recall)
    return float(recall[present].mean()) if present.any() else float("nan")


def row_normalized(cm: np.ndarray) -> np.ndarray:
    """Row-normalised confusion matrix in percent (rows without support are 0)."""
    cm = np.asarray(cm, dtype=np.float64)
    support = cm.sum(axis=1, keepdims=True)
    return np.where(support > 0, 100.0 * cm / np.maximum(support, 1), 0.0)


def summarize(y_true, y_pred, labels: typing.Sequence[str]) -> dict:
    """Everything a results file reports for one set of predictions (JSON-ready)."""
    labels = list(labels)
    cm = confusion_matrix(y_true, y_pred, len(labels))
    recall = per_class_recall(cm)
    return {
        "wa": weighted_accuracy(cm),
        "ua": unweighted_accuracy(cm),
        "n": int(cm.sum()),
        "n_per_class": {label: int(n) for label, n in zip(labels, cm.sum(axis=1))},
        "recall_per_class": {
            label: (None if np.isnan(r) else float(r)) for label, r in zip(labels, recall)
        },
        "confusion": cm.tolist(),
        "confusion_percent": np.round(row_normalized(cm), 2).tolist(),
    }


def metrics_title(wa: float, ua: float, protocol: str, prefix: str = "") -> str:
    """The title of a confusion-matrix figure or image: WA and UA in percent, the protocol."""
    head = f"{prefix} — " if prefix else ""
    return f"{head}WA {100 * wa:.2f} %  UA {100 * ua:.2f} %\n{protocol}"


def probability_columns(labels: typing.Sequence[str]) -> list:
    return [f"p_{label}" for label in labels]


def predictions_frame(fold_name: str, manifest_rows: pd.DataFrame, probabilities: np.ndarray,
                      labels: typing.Sequence[str], predicted: typing.Optional[np.ndarray] = None) -> pd.DataFrame:
    """One row per test utterance; `predicted` defaults to the argmax of `probabilities`."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if predicted is None:
        predicted = probabilities.argmax(axis=1)
    frame = pd.DataFrame({
        "fold": fold_name,
        "path": manifest_rows["path"].to_numpy(),
        "speaker": manifest_rows["speaker"].to_numpy(),
        "label": manifest_rows["label"].to_numpy(),
        "predicted": [labels[i] for i in predicted],
    })
    for column, values in zip(probability_columns(labels), probabilities.T):
        frame[column] = np.round(values, 6)
    return frame


def score_predictions(frame: pd.DataFrame, labels: typing.Sequence[str]) -> dict:
    """``summarize`` of a predictions frame (labels outside `labels` are an error)."""
    index = {label: i for i, label in enumerate(labels)}
    unknown = sorted(set(frame["label"]) - set(index))
    if unknown:
        raise ValueError(f"predictions hold labels {unknown} not in the run's labels {list(labels)}")
    y_true = frame["label"].map(index).to_numpy()
    y_pred = frame["predicted"].map(index).to_numpy()
    return summarize(y_true, y_pred, labels)
