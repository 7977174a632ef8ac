"""Run-directory results: per-fold predictions -> predictions.csv, results.json, confusion PNG.

Every fold of a run writes ``folds/<fold>/predictions.csv`` (one row per test utterance) and,
last, ``folds/<fold>/result.json`` (its metrics, wall time, epochs). ``write_run_results``
pools the predictions of the folds that are done, in fold order, into

- ``predictions.csv``: fold, path, speaker, label (true), predicted, one ``p_<class>`` column
  per class;
- ``results.json``: corpus, experiment, protocol (key and name), labels, utterances per class,
  config hash, wall time, per-fold and pooled WA/UA, pooled confusion matrix as counts and as
  row-normalised %, and whether every fold of the protocol is in;
- ``confusion_matrix.png``: the pooled matrix in the style of the paper's Fig. 3.

WA and UA are fractions (0..1) in the JSON; figures and reports show percent.
"""

from __future__ import annotations

import json
import pathlib
import typing

import numpy as np
import pandas as pd

from ser_keras import __version__
from ser_keras.evaluation import metrics as metrics_lib

PREDICTION_COLUMNS = ["fold", "path", "speaker", "label", "predicted"]


def common_root(paths) -> str:
    """The longest common folder of `paths` ('' if none), so runs store corpus-relative paths."""
    import os

    try:
        return os.path.commonpath(list(paths)) if len(paths) else ""
    except ValueError:
        return ""


def relative_path(path: str, root: str) -> str:
    import os

    return os.path.relpath(path, root) if root else path


def probability_columns(labels: typing.Sequence[str]) -> list:
    return [f"p_{label}" for label in labels]


def fold_predictions_frame(fold_name: str, manifest_rows: pd.DataFrame, probabilities: np.ndarray,
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
    """metrics.summarize of a predictions frame (labels outside `labels` are an error)."""
    index = {label: i for i, label in enumerate(labels)}
    unknown = sorted(set(frame["label"]) - set(index))
    if unknown:
        raise ValueError(f"predictions hold labels {unknown} not in the run's labels {list(labels)}")
    y_true = frame["label"].map(index).to_numpy()
    y_pred = frame["predicted"].map(index).to_numpy()
    return metrics_lib.summarize(y_true, y_pred, labels)


def write_run_results(
    run_dir: pathlib.Path,
    *,
    fold_names: typing.Sequence[str],
    labels: typing.Sequence[str],
    corpus: str,
    experiment: str,
    protocol: str,
    protocol_name: str,
    config_hash: str,
    seed: int,
    extra: typing.Optional[dict] = None,
) -> dict:
    """Pool the finished folds' predictions and write the three run-level files."""
    from ser_keras.evaluation.plots import save_confusion_png

    run_dir = pathlib.Path(run_dir)
    frames, fold_results, missing = [], [], []
    for name in fold_names:
        fold_dir = run_dir / "folds" / name
        result_path = fold_dir / "result.json"
        if not result_path.is_file():
            missing.append(name)
            continue
        fold_result = json.loads(result_path.read_text())
        if fold_result.get("test") == "none":  # protocol "all": trained on everything, nothing to score
            fold_results.append(fold_result)
            continue
        frame = pd.read_csv(fold_dir / "predictions.csv", dtype={"speaker": str})
        frames.append(frame)
        summary = score_predictions(frame, labels)
        fold_results.append({
            "name": name,
            "wa": summary["wa"],
            "ua": summary["ua"],
            "n": summary["n"],
            **{k: v for k, v in fold_result.items() if k not in ("name", "wa", "ua", "n")},
        })
    results: dict = {
        "corpus": corpus,
        "experiment": experiment,
        "protocol": protocol,
        "protocol_name": protocol_name,
        "labels": list(labels),
        "config_hash": config_hash,
        "seed": seed,
        "ser_keras_version": __version__,
        "n_folds": len(fold_names),
        "complete": not missing,
        "missing_folds": missing,
        "folds": fold_results,
    }
    if frames:
        pooled_frame = pd.concat(frames, ignore_index=True)
        pooled_frame.to_csv(run_dir / "predictions.csv", index=False)
        pooled = score_predictions(pooled_frame, labels)
        results["n_per_class"] = pooled["n_per_class"]
        results["pooled"] = pooled
        results["mean_over_folds"] = {
            "wa": float(np.nanmean([f["wa"] for f in fold_results])),
            "ua": float(np.nanmean([f["ua"] for f in fold_results])),
        }
        # Summed over the folds: with runtime.jobs > 1 folds overlap, so the run took less wall time.
        results["wall_time_s"] = round(sum(float(f.get("wall_time_s", 0.0)) for f in fold_results), 2)
        scope = "" if not missing else f" ({len(fold_results)}/{len(fold_names)} folds)"
        save_confusion_png(pooled["confusion"], labels, run_dir / "confusion_matrix.png",
                           pooled["wa"], pooled["ua"], protocol_name + scope, prefix=f"{corpus} {experiment}")
    if extra:
        results.update(extra)
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    return results
