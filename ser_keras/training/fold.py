"""One fold of a run: fit the front end, train the model, test it, write ``folds/<fold>/``.

``run_fold(context, fold)`` is the fold engine that ``training.run`` (one process) and
``training.parallel`` (fold workers) both call. Per fold:

1. the fold's front end (``features.frontend.FittedFrontEnd``: normaliser and, for spectrogram
   input, PCA) fitted on the *training* part only and applied to everything; saved in the fold
   directory for evaluation and export;
2. a network (``training.network``: SAE kernels, Keras ``fit`` with the callbacks of
   ``training.callbacks``, early stopping, optional refit) or an SVM (``training.svm``);
3. with ``model.functionals_weights`` (exp5), the functionals classifier
   (``training.functionals``), whose probabilities are averaged with the network's;
4. the test predictions (``predictions.csv``; for speaker-normalised models also each test
   recording served alone, ``serving_predictions.csv``) and, last, ``result.json``, written
   atomically: a fold is done once it exists. With the functionals classifier both files hold
   the fused probabilities and name what the network and the classifier each predicted
   (``network_predicted``, ``functionals_predicted``).

Every fold's ``result.json`` names what its final model was trained on (``training_speakers``,
``n_training_utterances``) and the ``validation_speakers``; the export reports them.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
import typing

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from ser_keras.config import NETWORK, PROTOCOL_ALL, SVM, Config
from ser_keras.data.splits import Fold, describe_protocol
from ser_keras.errors import SerKerasError
from ser_keras.features.extract import extract_wide_functionals
from ser_keras.features.frontend import FittedFrontEnd, reports_serving, serving_mode, uses_pca
from ser_keras.metrics import predictions_frame, score_predictions
from ser_keras.rundir import FoldDir, RunDir, atomic_write_json
from ser_keras.training.distribute import make_strategy
from ser_keras.training.functionals import fuses_functionals, train_functionals
from ser_keras.training.network import elapsed_seconds, refits, train_network
from ser_keras.training.svm import train_svm


@dataclasses.dataclass
class RunContext:
    """What every fold of one run shares."""

    config: Config
    run_dir: pathlib.Path
    manifest: pd.DataFrame
    labels: list
    features: list  # one array per manifest row, None where extraction failed
    y: np.ndarray  # label index per manifest row
    protocol_name: str
    progress: bool
    strategy: typing.Any = None
    # A fold worker of `training.parallel` shares the terminal with other workers: one line per
    # epoch, naming the fold, instead of Keras' progress bar.
    epoch_lines: bool = False
    # Compiled models kept for the next fold, by (n_classes, input_dim): see `network.fold_model`.
    models: dict = dataclasses.field(default_factory=dict)
    # (rows, D) wide functionals per manifest row (NaN where extraction failed), when the
    # network is fused with a functionals classifier (model.functionals_weights).
    functionals: typing.Optional[np.ndarray] = None

    def part(self, indices: np.ndarray) -> tuple:
        """(features, speakers) of the utterances at `indices`, for the front end."""
        return ([self.features[i] for i in indices],
                self.manifest["speaker"].iloc[indices].tolist())


def configure_determinism(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow, and make TF ops deterministic."""
    keras.utils.set_random_seed(int(seed))
    try:
        tf.config.experimental.enable_op_determinism()
    except (AttributeError, RuntimeError):  # pragma: no cover - very old TF
        pass


def make_context(config: Config, run_dir: pathlib.Path, manifest: pd.DataFrame, labels: list,
                 features: list, progress: bool, functionals: typing.Optional[np.ndarray] = None) -> RunContext:
    """The state the folds of one run share (in the `fit` process, or in a fold worker)."""
    label_index = {label: i for i, label in enumerate(labels)}
    if fuses_functionals(config) and functionals is None:
        functionals, _ = extract_wide_functionals(config, manifest, progress)
    context = RunContext(
        config=config, run_dir=run_dir, manifest=manifest, labels=labels, features=features,
        y=manifest["label"].map(label_index).to_numpy(np.int64),
        protocol_name=describe_protocol(config.train.protocol, config.train.folds), progress=progress,
        functionals=functionals,
    )
    if config.model.classifier == NETWORK:
        context.strategy = make_strategy(config.runtime.strategy)
    return context


def fold_header(config: Config, fold: Fold, position: str) -> str:
    """The progress line that opens a fold."""
    return (f"[{config.data.corpus} {config.model.experiment}] fold {fold.name} ({position}): "
            f"{len(fold.train)} train, {len(fold.validation)} validation, {len(fold.test)} test")


def _usable(context: RunContext, indices: np.ndarray) -> np.ndarray:
    usable = [i for i in indices if context.features[i] is not None]
    if context.functionals is not None:
        usable = [i for i in usable if np.isfinite(context.functionals[i]).all()]
    return np.array(usable, dtype=np.int64)


def run_fold(context: RunContext, fold: Fold) -> dict:
    """Train and test one fold; writes everything under folds/<fold>/, result.json last."""
    fold_dir = RunDir(context.run_dir).fold(fold.name)
    fold_dir.path.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(int(context.config.train.seed))
    train, validation, test = (_usable(context, part) for part in (fold.train, fold.validation, fold.test))
    deploy = context.config.train.protocol == PROTOCOL_ALL  # no test part by design
    if len(train) == 0 or (len(test) == 0 and not deploy):
        raise SerKerasError(f"fold {fold.name}: no usable training or test utterances after feature extraction")
    started = time.time()
    previous = elapsed_seconds(fold_dir)
    frontend = fold_frontend(context, fold_dir, train)
    feature_config = context.config.features
    # What a model is scored on: the test-time views of the utterances (features.
    # test_warp_factors), plain first; x[name] is the plain view.
    views = {name: frontend.transform_views(*context.part(part), feature_config) for name, part in
             (("validation", validation), ("test", test))}
    if reports_serving(context.config) and len(test):
        views["serving"] = frontend.transform_views(context.part(test)[0], None, feature_config)
        if fuses_functionals(context.config) and len(validation):  # to weigh the fusion of one recording
            views["validation_serving"] = frontend.transform_views(context.part(validation)[0], None, feature_config)
    x = {"train": frontend.transform(*context.part(train)), "validation": views["validation"][0],
         "test": views["test"][0], "views": views}
    if uses_pca(context.config):
        # The other versions of the training utterances a training epoch draws from: the
        # frequency-warped ones (features.warp_factors).
        x["train_versions"] = frontend.transform_warped(*context.part(train), feature_config)
        if refits(context.config) and len(validation):  # for the refit on all of them
            x["all_versions"] = frontend.transform_warped(*context.part(np.concatenate([train, validation])),
                                                          feature_config)
    if context.config.model.classifier == SVM:
        outcome = train_svm(context, fold, fold_dir, x, train, validation, test)
    else:
        outcome = train_network(context, fold, fold_dir, x, train, validation, test)
    probabilities, predicted = outcome.pop("probabilities"), outcome.pop("predicted")
    serving_probabilities = outcome.pop("serving_probabilities", None)
    components = {}
    network_validation = {"speaker": outcome.pop("validation_probabilities", None),
                          "pooled": outcome.pop("validation_serving_probabilities", None)}
    if fuses_functionals(context.config):
        fused = train_functionals(context, fold_dir, train, validation, test, network_validation)
        classifier = fused["classifier"]
        components = {"network": probabilities.argmax(axis=1), "functionals": fused["test"]}
        probabilities = classifier.fuse(probabilities, fused["test"], "speaker")
        predicted = probabilities.argmax(axis=1)
        if serving_probabilities is not None:
            components["serving_network"] = serving_probabilities.argmax(axis=1)
            serving_probabilities = classifier.fuse(serving_probabilities, fused["serving"], "pooled")
        if fused["summary"]:
            outcome["functionals"] = fused["summary"]
    wall = previous + (time.time() - started)
    speakers = context.manifest["speaker"].astype(str)
    # What the final model was fitted on: after a refit (and exp1's SVM) validation too.
    refitted = bool(outcome.get("refit_epochs")) or context.config.model.classifier == SVM
    final = np.concatenate([train, validation]) if refitted else train
    trained_on = {"training_speakers": sorted(set(speakers.iloc[final])),
                  "n_training_utterances": int(len(final)),
                  "validation_speakers": sorted(set(speakers.iloc[validation]))}
    if deploy:
        result = {"name": fold.name, "test": "none", "n_train": int(len(train)),
                  "n_validation": int(len(validation)), "wall_time_s": round(wall, 2), **trained_on, **outcome}
        atomic_write_json(fold_dir.result, result)
        if context.progress:
            print(f"fold {fold.name}: trained on all {len(final)} utterances of {len(trained_on['training_speakers'])} "
                  f"speakers ({wall:.0f} s); no test part")
        return result
    frame = predictions_frame(fold.name, context.manifest.iloc[test], probabilities,
                              context.labels, predicted)
    if components:
        _name_components(frame, context.labels, components["network"], components["functionals"])
    frame.to_csv(fold_dir.predictions, index=False)
    summary = score_predictions(frame, context.labels)
    result = {"name": fold.name, "wa": summary["wa"], "ua": summary["ua"], "n": summary["n"],
              "n_train": int(len(train)), "n_validation": int(len(validation)),
              "wall_time_s": round(wall, 2), **trained_on, **outcome}
    if len(x.get("train_versions", [])):
        result["n_train_versions"] = len(x["train_versions"])
    serving_line = ""
    if serving_probabilities is not None:
        serving_frame = predictions_frame(fold.name, context.manifest.iloc[test], serving_probabilities,
                                          context.labels)
        if components:
            _name_components(serving_frame, context.labels, components["serving_network"],
                             fused["serving"])
        serving_frame.to_csv(fold_dir.serving_predictions, index=False)
        serving = score_predictions(serving_frame, context.labels)
        result.update(serving_wa=serving["wa"], serving_ua=serving["ua"],
                      serving_normalization=serving_mode(context.config))
        serving_line = (f"; served on single recordings ({result['serving_normalization']} statistics): "
                        f"WA {100 * serving['wa']:.2f} %  UA {100 * serving['ua']:.2f} %")
    atomic_write_json(fold_dir.result, result)
    if context.progress:
        print(f"fold {fold.name}: test WA {100 * summary['wa']:.2f} %  UA {100 * summary['ua']:.2f} % "
              f"({summary['n']} utterances, {wall:.0f} s){serving_line}")
    return result


def _name_components(frame: pd.DataFrame, labels: list, network: np.ndarray, functionals: np.ndarray) -> None:
    """What the network and the functionals classifier each predicted, beside the fused row."""
    frame["network_predicted"] = [labels[i] for i in network]
    frame["functionals_predicted"] = [labels[i] for i in np.asarray(functionals).argmax(axis=1)]


def fold_frontend(context: RunContext, fold_dir: FoldDir, train: np.ndarray) -> FittedFrontEnd:
    """The fold's front end fitted on its training part and saved, or (on resume) loaded."""
    if FittedFrontEnd.saved(fold_dir):
        return FittedFrontEnd.load(fold_dir, pca=uses_pca(context.config))
    features, speakers = context.part(train)
    frontend = FittedFrontEnd.fit(context.config, features, context.manifest["label"].iloc[train].tolist(),
                                  speakers)
    frontend.save(fold_dir)
    return frontend
