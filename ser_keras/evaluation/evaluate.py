"""``evaluate``: re-score a run, or evaluate its models on another corpus.

- ``evaluate_run(run_dir)`` re-computes every metric of a run from its saved per-fold
  predictions (``folds/<fold>/predictions.csv``); a fold whose predictions are missing but
  whose trained model is there is predicted again from the model and its saved front end
  (normaliser, PCA). It rewrites ``results.json``, ``predictions.csv`` and the confusion PNG.
- ``evaluate_run(run_dir, corpus=..., data_dir=...)`` is a cross-corpus evaluation: every
  fold's model scores every utterance of the other corpus whose emotion the two corpora share
  (labels are matched through a small table of synonyms: anger/angry, happiness/happy/joy,
  sadness/sad, fear/fearful/scared, surprise/surprised, disgust/disgusted, ...). The models'
  probabilities are averaged (an ensemble of the K fold models), restricted to the shared
  classes and renormalised. The target corpus is normalised per speaker with the training
  fold's fallback for unseen speakers (``features.speaker_fallback``), exactly as a test
  speaker under LOSO. Results go to ``run_dir/cross_corpus/<corpus>/``.
"""

from __future__ import annotations

import copy
import json
import pathlib
import typing

import joblib
import keras
import numpy as np
import pandas as pd

import ser_keras.layers  # noqa: F401 - registers the custom layers for load_model
from ser_keras.config import PROTOCOL_ALL, SVM
from ser_keras.corpora import run_manifest
from ser_keras.data.pipeline import make_dataset
from ser_keras.errors import SerKerasError
from ser_keras.evaluation.plots import save_confusion_png
from ser_keras.evaluation.results import collect_results
from ser_keras.features.extract import extract_for_model, extract_wide_functionals
from ser_keras.features.frontend import FittedFrontEnd, uses_pca
from ser_keras.metrics import predictions_frame, score_predictions, summarize
from ser_keras.models.functionals import FunctionalsClassifier, speaker_znorm
from ser_keras.models.predictor import make_predictor, predict_views
from ser_keras.models.svm import svm_scores
from ser_keras.rundir import (CONFUSION_FILE, PREDICTIONS_FILE, RESULTS_FILE, FoldDir, RunDir, atomic_write_json,
                              common_root, load_run_config, relative_path)
from ser_keras.training.functionals import fuses_functionals

# Emotion names across corpora -> one canonical name (cross-corpus label matching).
CANONICAL = {
    "anger": "angry", "angry": "angry", "mad": "angry",
    "happiness": "happy", "happy": "happy", "joy": "happy",
    "sadness": "sad", "sad": "sad",
    "fear": "fear", "fearful": "fear", "scared": "fear", "anxiety": "fear",
    "surprise": "surprise", "surprised": "surprise", "pleasant_surprise": "surprise", "ps": "surprise",
    "disgust": "disgust", "disgusted": "disgust",
    "boredom": "boredom", "bored": "boredom",
    "neutral": "neutral", "calm": "calm", "excited": "excited",
}


def canonical(label: str) -> str:
    key = str(label).strip().lower().replace(" ", "_")
    return CANONICAL.get(key, key)


def evaluate_run(run_dir, corpus: typing.Optional[str] = None, data_dir: typing.Optional[str] = None,
                 progress: bool = True) -> dict:
    """Re-score `run_dir`; with `corpus` (and `data_dir`), evaluate it on that corpus."""
    run_dir = pathlib.Path(run_dir)
    if not RunDir(run_dir).config.is_file():
        raise SerKerasError(f"{run_dir}: not a run directory (no config.yaml); run 'ser-keras fit' first")
    config, labels = load_run_config(run_dir)
    fold_names = RunDir(run_dir).fold_names()
    if corpus is None:
        return _rescore(run_dir, config, labels, fold_names, progress)
    return _cross_corpus(run_dir, config, labels, fold_names, corpus, data_dir, progress)


# ------------------------------------------------------------------------------ re-score


def _rescore(run_dir, config, labels, fold_names, progress) -> dict:
    run = RunDir(run_dir)
    # A protocol "all" run has no test part: nothing to predict again.
    missing = [n for n in fold_names if not run.fold(n).predictions.is_file()
               and run.fold(n).model(config.model.classifier).is_file() and config.train.protocol != PROTOCOL_ALL]
    if missing:
        _repredict_folds(run_dir, config, labels, missing, progress)
    if not any(run.fold(n).done() for n in fold_names):
        raise SerKerasError(f"{run_dir}: no finished fold to score; run 'ser-keras fit' on it first")
    previous = {}
    if run.results.is_file():
        previous = json.loads(run.results.read_text())
    return collect_results(config, run_dir, labels, fold_names, previous.get("feature_failures"),
                           previous.get("last_invocation_s", 0.0))


def _repredict_folds(run_dir, config, labels, fold_names, progress) -> None:
    """Predict the test part of folds that have a model but lost their predictions."""
    run = RunDir(run_dir)
    manifest = run_manifest(config)
    manifest = manifest[manifest["label"].isin(labels)].reset_index(drop=True)
    folds = run.read_folds()
    root = common_root(manifest["path"])
    relative = {relative_path(p, root): i for i, p in enumerate(manifest["path"])}
    features, _ = extract_for_model(config, manifest, progress)
    functionals = extract_wide_functionals(config, manifest, progress)[0] if fuses_functionals(config) else None
    for fold in folds:
        if fold["name"] not in fold_names:
            continue
        rows = [relative[p] for p in fold["test_paths"] if p in relative and features[relative[p]] is not None]
        if not rows:
            continue
        fold_dir = run.fold(fold["name"])
        probabilities = predict_with_fold(fold_dir, config, [features[i] for i in rows],
                                          manifest["speaker"].iloc[rows].tolist(), n_classes=len(labels),
                                          functionals=None if functionals is None else functionals[rows])
        frame = predictions_frame(fold["name"], manifest.iloc[rows], probabilities, labels)
        frame.to_csv(fold_dir.predictions, index=False)
        summary = score_predictions(frame, labels)
        if not fold_dir.done():
            atomic_write_json(fold_dir.result, {"name": fold["name"], "wa": summary["wa"], "ua": summary["ua"],
                                                "n": summary["n"], "repredicted": True})


# --------------------------------------------------------------------------- prediction


def predict_with_fold(fold_dir, config, features: list, speakers: list, model=None,
                      n_classes: typing.Optional[int] = None, functionals=None) -> np.ndarray:
    """Class probabilities of one fold's model for raw per-utterance features (as extracted),
    normalised and projected with that fold's saved front end. All utterances of a speaker must
    be passed together (an unseen speaker is normalised with statistics of all of them).
    `n_classes` (an SVM's output width): default, the run's label count. `functionals`: the
    utterances' wide functionals (``extract_wide_functionals``), which a model fused with a
    functionals classifier needs (its speaker head, each speaker z-normalised as fit does)."""
    fold_dir = FoldDir(fold_dir)
    frontend = FittedFrontEnd.load(fold_dir, pca=uses_pca(config))
    if config.model.classifier == SVM:
        x = frontend.transform(features, speakers)
        model = model or joblib.load(fold_dir.svm_model)
        stacked = np.concatenate([np.asarray(v).reshape(1, -1) for v in x], axis=0)
        if n_classes is None:
            n_classes = len(load_run_config(fold_dir.run_dir.path)[1])
        return svm_scores(model, stacked, n_classes)
    model = model or keras.models.load_model(fold_dir.keras_model, compile=False)
    # Scored as fit scores it: averaged over the test-time views (features.test_warp_factors).
    views = frontend.transform_views(features, speakers, config.features)
    probabilities = predict_views(make_predictor(model), [
        make_dataset(view, None, int(config.train.batch_size), training=False, seed=int(config.train.seed))
        for view in views])
    if not config.model.functionals_weights:
        return probabilities
    if functionals is None:
        raise SerKerasError(f"{fold_dir.path}: this model is fused with a functionals classifier; "
                            "predict_with_fold needs the utterances' wide functionals")
    classifier = FunctionalsClassifier.load(fold_dir.functionals)
    x = speaker_znorm(np.nan_to_num(np.asarray(functionals, np.float32)), speakers)
    return classifier.fuse(probabilities, classifier.heads["speaker"].probabilities(x), "speaker")


# ---------------------------------------------------------------------------- cross-corpus


def _cross_corpus(run_dir, config, labels, fold_names, corpus, data_dir, progress) -> dict:
    run = RunDir(run_dir)
    target_config = copy.deepcopy(config)
    target_config.data.corpus = corpus
    target_config.runtime.data_dir = data_dir
    target_config.data.labels = None
    manifest = run_manifest(target_config)
    source_canonical = {canonical(label): i for i, label in enumerate(labels)}
    target_labels = sorted(set(manifest["label"]))
    label_map = {t: labels[source_canonical[canonical(t)]] for t in target_labels
                 if canonical(t) in source_canonical}
    if len(label_map) < 2:
        raise SerKerasError(
            f"cross-corpus: run labels {labels} and corpus '{corpus}' labels {target_labels} share "
            f"{len(label_map)} emotion(s); at least 2 are needed"
        )
    shared = [label for label in labels if label in set(label_map.values())]
    manifest = manifest[manifest["label"].isin(label_map)].reset_index(drop=True)
    features, failures = extract_for_model(target_config, manifest, progress)
    functionals = None
    if fuses_functionals(config):
        functionals, more = extract_wide_functionals(target_config, manifest, progress)
        features = [f if np.isfinite(row).all() else None for f, row in zip(features, functionals)]
        failures = {**more, **failures}
    keep = [i for i, f in enumerate(features) if f is not None]
    manifest = manifest.iloc[keep].reset_index(drop=True)
    features = [features[i] for i in keep]
    functionals = None if functionals is None else functionals[keep]
    speakers = manifest["speaker"].tolist()
    model_folds = [n for n in fold_names if run.fold(n).model(config.model.classifier).is_file()]
    if not model_folds:
        raise SerKerasError(f"{run_dir}: no trained fold model to evaluate")
    shared_index = [labels.index(s) for s in shared]
    y_true = np.array([shared.index(label_map[t]) for t in manifest["label"]])
    total = np.zeros((len(manifest), len(labels)))
    per_model = []
    for name in model_folds:
        if progress:
            print(f"cross-corpus: fold model {name} on {corpus} ({len(manifest)} utterances)")
        probabilities = predict_with_fold(run.fold(name), config, features, speakers, n_classes=len(labels),
                                          functionals=functionals)
        total += probabilities
        restricted = probabilities[:, shared_index]
        summary = summarize(y_true, restricted.argmax(axis=1), shared)
        per_model.append({"name": name, "wa": summary["wa"], "ua": summary["ua"]})
    restricted = total[:, shared_index]
    restricted /= np.maximum(restricted.sum(axis=1, keepdims=True), 1e-12)
    predicted = restricted.argmax(axis=1)
    pooled = summarize(y_true, predicted, shared)
    out_dir = run.cross_corpus(corpus)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame({
        "path": manifest["path"], "speaker": manifest["speaker"], "label": manifest["label"],
        "label_as": [label_map[t] for t in manifest["label"]],
        "predicted": [shared[i] for i in predicted],
    })
    for j, label in enumerate(shared):
        frame[f"p_{label}"] = np.round(restricted[:, j], 6)
    frame.to_csv(out_dir / PREDICTIONS_FILE, index=False)
    protocol = f"cross-corpus: trained on {config.data.corpus} ({config.train.protocol}), tested on {corpus}"
    save_confusion_png(pooled["confusion"], shared, out_dir / CONFUSION_FILE, pooled["wa"], pooled["ua"],
                       protocol, prefix=f"{config.model.experiment}")
    results = {
        "mode": "cross-corpus",
        "experiment": config.model.experiment,
        "corpus": corpus,
        "source_corpus": config.data.corpus,
        "protocol": "cross-corpus",
        "protocol_name": protocol,
        "labels": shared,
        "label_map": label_map,
        "n_per_class": pooled["n_per_class"],
        "n_models": len(model_folds),
        "per_model": per_model,
        "pooled": pooled,
        "feature_failures": failures,
    }
    (out_dir / RESULTS_FILE).write_text(json.dumps(results, indent=2))
    return results
