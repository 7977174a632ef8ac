"""Run-level results: the finished folds' predictions pooled into predictions.csv, results.json
and the confusion PNG (the aggregation that ``fit`` and ``evaluate`` end with).

Every fold of a run writes ``folds/<fold>/predictions.csv`` (one row per test utterance) and,
last, ``folds/<fold>/result.json`` (its metrics, wall time, epochs). ``write_run_results``
pools the predictions of the folds that are done, in fold order, into

- ``predictions.csv``: fold, path, speaker, label (true), predicted, one ``p_<class>`` column
  per class;
- ``results.json``: corpus, experiment, protocol (key and name), labels, utterances per class,
  config hash, wall time, per-fold and pooled WA/UA, pooled confusion matrix as counts and as
  row-normalised %, and whether every fold of the protocol is in;
- ``confusion_matrix.png``: the pooled matrix in the style of the paper's Fig. 3.

``collect_results(config, run_dir, ...)`` is that for a run's config: it adds, for speaker-
normalised models, ``results.json["serving"]`` (the served model on single recordings, pooled
from the folds' ``serving_predictions.csv``) and, for a protocol "all" run, ``["deploy"]`` (what
the model was trained on) and ``["estimate"]``.

WA and UA are fractions (0..1) in the JSON; figures and reports show percent.
"""

from __future__ import annotations

import json
import typing

import numpy as np
import pandas as pd

from ser_keras import __version__
from ser_keras.config import PROTOCOL_ALL, Config
from ser_keras.data.splits import ALL_FOLD, describe_protocol
from ser_keras.evaluation.plots import save_confusion_png
from ser_keras.features.frontend import reports_serving, serving_mode
from ser_keras.metrics import score_predictions
from ser_keras.rundir import RunDir, read_json
from ser_keras.training.resume import config_hash

NO_TEST_NOTE = ("protocol all trains on every utterance: there is no test part, so no WA/UA here; the "
                "figure that estimates this model's accuracy must come from a loso, session or random "
                "run of the same config (fit --estimate-from RUN2 records it)")


def write_run_results(
    run_dir,
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
    run = RunDir(run_dir)
    frames, fold_results, missing = [], [], []
    for name in fold_names:
        fold_dir = run.fold(name)
        if not fold_dir.done():
            missing.append(name)
            continue
        fold_result = json.loads(fold_dir.result.read_text())
        if fold_result.get("test") == "none":  # protocol "all": trained on everything, nothing to score
            fold_results.append(fold_result)
            continue
        frame = pd.read_csv(fold_dir.predictions, dtype={"speaker": str})
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
        pooled_frame.to_csv(run.predictions, index=False)
        pooled = score_predictions(pooled_frame, labels)
        results["n_per_class"] = pooled["n_per_class"]
        results["pooled"] = pooled
        components = component_figures(pooled_frame, labels)
        if components:
            results["components"] = components
        results["mean_over_folds"] = {
            "wa": float(np.nanmean([f["wa"] for f in fold_results])),
            "ua": float(np.nanmean([f["ua"] for f in fold_results])),
        }
        # Summed over the folds: with runtime.jobs > 1 folds overlap, so the run took less wall time.
        results["wall_time_s"] = round(sum(float(f.get("wall_time_s", 0.0)) for f in fold_results), 2)
        scope = "" if not missing else f" ({len(fold_results)}/{len(fold_names)} folds)"
        save_confusion_png(pooled["confusion"], labels, run.confusion_png,
                           pooled["wa"], pooled["ua"], protocol_name + scope, prefix=f"{corpus} {experiment}")
    if extra:
        results.update(extra)
    run.results.write_text(json.dumps(results, indent=2))
    return results


def component_figures(frame: pd.DataFrame, labels: typing.Sequence[str]) -> typing.Optional[dict]:
    """WA/UA of the network alone and of the functionals classifier alone, for a run whose
    predictions are their fusion (``network_predicted``, ``functionals_predicted`` columns)."""
    names = {"network": "network_predicted", "functionals": "functionals_predicted"}
    if not all(column in frame.columns for column in names.values()):
        return None
    out = {}
    for name, column in names.items():
        summary = score_predictions(frame.assign(predicted=frame[column]), labels)
        out[name] = {"wa": summary["wa"], "ua": summary["ua"]}
    return out


def collect_results(config: Config, run_dir, labels: list, folds: typing.Sequence,
                    failures: typing.Optional[dict] = None, invocation_s: float = 0.0) -> dict:
    """(Re)write the run-level results from the finished folds (`folds`: Fold objects or names)."""
    run = RunDir(run_dir)
    extra = {"feature_failures": failures or {}, "last_invocation_s": round(invocation_s, 2)}
    if reports_serving(config) and config.train.protocol != PROTOCOL_ALL:
        extra["serving"] = serving_results(config, run, labels, folds)
    if config.train.protocol == PROTOCOL_ALL:
        extra["deploy"] = deploy_summary(config, run)
        if run.estimate.is_file():
            extra["estimate"] = json.loads(run.estimate.read_text())
    return write_run_results(
        run.path,
        fold_names=[getattr(f, "name", f) for f in folds],
        labels=labels,
        corpus=config.data.corpus,
        experiment=config.model.experiment,
        protocol=config.train.protocol,
        protocol_name=describe_protocol(config.train.protocol, config.train.folds),
        config_hash=config_hash(config),
        seed=config.train.seed,
        extra=extra,
    )


def deploy_summary(config: Config, run: RunDir) -> typing.Optional[dict]:
    """results.json["deploy"] of a protocol "all" run: what the model was trained on."""
    fold = read_json(run.fold(ALL_FOLD).result) if run.fold(ALL_FOLD).done() else None
    if fold is None:
        return None
    return {"corpus": config.data.corpus, "training_speakers": fold.get("training_speakers"),
            "n_training_utterances": fold.get("n_training_utterances"),
            "validation_speakers": fold.get("validation_speakers"),
            "epochs": fold.get("refit_epochs"), "note": NO_TEST_NOTE}


def serving_results(config: Config, run: RunDir, labels: list,
                    folds: typing.Sequence) -> typing.Optional[dict]:
    """results.json["serving"]: the served model on single recordings (no speaker context),
    pooled over the finished folds that scored it (their ``serving_predictions.csv``; the
    pooled file goes to the run's ``serving_predictions.csv``). None when no fold did.
    `folds`: Fold objects or names."""
    frames, names = [], []
    for name in (getattr(f, "name", f) for f in folds):
        fold_dir = run.fold(name)
        if fold_dir.done() and fold_dir.serving_predictions.is_file():
            frames.append(pd.read_csv(fold_dir.serving_predictions, dtype={"speaker": str}))
            names.append(name)
    if not frames:
        return None
    pooled = pd.concat(frames, ignore_index=True)
    pooled.to_csv(run.serving_predictions, index=False)
    summary = score_predictions(pooled, labels)
    components = component_figures(pooled, labels)
    return {
        "wa": summary["wa"], "ua": summary["ua"], "n": summary["n"],
        **({"components": components} if components else {}),
        "normalization": serving_mode(config),
        "folds": names,
        "description": "the same models on the same test folds, each test utterance on its own (no speaker "
                       "context), normalised as the export's serve endpoint does; 'pooled' is the "
                       "protocol's figure, each test speaker normalised by the statistics of their own "
                       "speech (the export's serve_speaker)",
    }
