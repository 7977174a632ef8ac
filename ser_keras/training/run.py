"""``fit``: train and evaluate one experiment on every fold of a protocol.

Per fold (``folds/<fold>/`` in the run directory):

1. features of every utterance, extracted once per corpus and cached on disk
   (spectrogram for exp3/exp4, frame LLDs for exp2, LLD functionals for exp1);
2. ``NeutralNormalizer`` and (exp3/exp4) ``FramePCA`` fitted on the fold's *training* part only,
   applied to everything; their arrays go to ``normalizer.npz`` and ``frontend.npz`` (the global
   neutral statistics, PCA mean and components and the sample rate the export bakes in);
3. exp3/exp4: sparse-auto-encoder pre-training of the convolution kernels on patches of a
   seeded third of the training part (``sae_kernels.npz``);
4. the model (``ser_keras.models``) built and compiled inside the ``runtime.strategy`` scope and
   trained with Keras' ``fit`` (its progress bar when ``progress``), with the callbacks of
   ``training.callbacks``: per-epoch validation confusion matrix, WA and UA to TensorBoard
   (``tensorboard/<corpus>/<fold>/``) and ``history.csv``, a checkpoint every epoch
   (``checkpoint/``), early stopping on validation UA restoring the best weights; with
   ``train.refit`` a fresh model then trains on the whole training part (validation speakers
   too) for the best epoch count, in ``refit/`` (own checkpoints, ``history.csv`` and
   TensorBoard run ``<fold>/refit``), and is the one tested and saved;
5. ``model.keras``, the test predictions (``predictions.csv``) and, last, ``result.json``.

Two figures for speaker-normalised models (``features.normalization`` ``speaker`` or
``neutral_speaker``): the protocol's figure (``wa``/``ua``; ``results.json["pooled"]``) normalises
each test speaker with statistics of their own speech (all of their test utterances, or, when
the speaker is also in the training part, their training statistics) — speaker-adapted use,
what the export's ``serve_speaker`` and ``predict --same-speaker`` give. The served model on a
single recording has no speaker context; the same trained model scores the same test utterances
normalised the way the export's ``serve`` does (``features.normalize.serving_normalization``:
with the statistics pooled over the fold's training speakers) and reports
``serving_wa``/``serving_ua`` per fold (``serving_predictions.csv``) and ``results.json["serving"]``
pooled over the folds.

exp1 fits ``models.build_svm`` on the functionals of the training part (its own grid search
picks C), logs its validation WA/UA like an epoch, then refits on training + validation and
predicts the test part; it saves ``model.joblib``.

``train.protocol=all`` trains the model to deploy: one fold, ``all``, whose training part is
every utterance; validation is taken from it as under ``loso`` (``train.validation_split``),
early stopping picks the epoch count, and a fresh model is then trained on everything for that
many epochs (as ``train.refit`` does, whatever ``train.refit`` says). There is no test part, so
no WA/UA: ``results.json["deploy"]`` says what the model was trained on and that its accuracy
must be estimated by a ``loso``/``session``/``random`` run of the same config (``fit
--estimate-from RUN2`` records that run's figures in ``estimate.json``; ``evaluation.estimate``).

Every fold's ``result.json`` names what its final model was trained on (``training_speakers``,
``n_training_utterances``) and the ``validation_speakers``; the export reports them.

The folds' test predictions are pooled into the run-level ``predictions.csv``,
``results.json`` and ``confusion_matrix.png`` (``evaluation.results``). With ``runtime.jobs`` > 1
the folds train that many at a time in worker processes (``training.parallel``), each writing
its fold directory as above.

Re-running ``fit`` on the same run directory with the same config resumes: finished folds are
skipped, a half-done fold restarts from its last checkpointed epoch (weights, optimizer state,
early-stopping state). A different config is refused (``training.resume``).

Determinism: ``keras.utils.set_random_seed(train.seed)`` at the start of every fold and
``tf.config.experimental.enable_op_determinism()``, so the same config gives the same folds,
weights and metrics; a fold run alone (``runtime.fold``) gives what it gives inside a full run.
TensorFlow's thread count changes floating-point summation order, so fold workers (fewer
threads each) give slightly different numbers than ``runtime.jobs=1``; the same config with the
same ``runtime.jobs`` on the same machine repeats exactly.
A fold interrupted inside its epochs (Ctrl-C, SIGKILL) and re-run gives the uninterrupted
run's numbers exactly: the checkpoint holds the weights, the noise and dropout layers' seed
states, the optimizer and the early-stopping state (``training.callbacks.EpochCheckpoint``),
and each epoch's data order is a function of (seed, epoch) (``make_dataset(epochs=...)``). Its
``result.json`` records ``resumed_at_epoch``.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import sys
import time
import typing

import numpy as np
import pandas as pd

from ser_keras.config import Config
from ser_keras.data.splits import Fold, describe_protocol, make_folds, select_folds
from ser_keras.errors import SerKerasError
from ser_keras.training import resume

SERVING_PREDICTIONS = "serving_predictions.csv"


def reports_serving(config: Config) -> bool:
    """Whether ``fit`` reports the served model's figure besides the protocol's: speaker-
    normalised exp2-4 models (exp1 is not exported; other modes serve what they test)."""
    from ser_keras.features.normalize import SPEAKER_MODES

    return config.model.classifier == "network" and config.features.normalization in SPEAKER_MODES


def refits(config: Config) -> bool:
    """Whether exp2-4 folds end with a fresh model trained on training + validation: with
    ``train.refit``, and always under protocol "all" (the model to deploy)."""
    return bool(config.train.refit) or config.train.protocol == "all"


def _serving_mode(config: Config) -> str:
    from ser_keras.features.normalize import serving_normalization

    return serving_normalization(config.features.normalization)


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
    # Compiled models kept for the next fold, by (n_classes, input_dim): see `fold_model`.
    models: dict = dataclasses.field(default_factory=dict)


# --------------------------------------------------------------------------- public API


def fit(config: Config, run_dir, progress: bool = True) -> dict:
    """Train and evaluate `config` on every fold of its protocol (or on `config.runtime.fold`).

    Returns the results dict also written to ``run_dir/results.json`` (WA/UA are fractions).
    Raises SerKerasError when `run_dir` holds a run of a different config.
    """
    from ser_keras.corpora import label_order, run_manifest, unmatched_line
    from ser_keras.training.distribute import is_chief, worker_role

    config.validate()
    run_dir = pathlib.Path(run_dir)
    started = time.time()
    configure_determinism(config.train.seed)
    manifest = run_manifest(config)
    unmatched = unmatched_line(manifest)
    if unmatched:  # a warning about the data, so shown with progress off too
        print(f"{config.data.corpus}: {unmatched}", file=sys.stderr, flush=True)
    labels = label_order(manifest, config.data)
    if not is_chief(config.runtime.strategy):
        # A non-chief multi-worker worker: the same computation, written to its own scratch copy.
        run_dir = run_dir / f".worker-{worker_role()[1]}"
    resumed = resume.prepare_run_dir(config, run_dir, labels)
    folds = make_folds(manifest, config.train.protocol, config.train.folds, config.train.seed,
                       config.train.validation_fraction, config.train.validation_split)
    resume.check_folds(run_dir, folds_payload(folds, manifest, config))
    selected = select_folds(folds, config.runtime.fold)
    pending = [f for f in selected if not resume.fold_done(run_dir, f.name)]
    protocol_name = describe_protocol(config.train.protocol, config.train.folds)
    if progress:
        done = len(selected) - len(pending)
        print(f"{config.model.experiment} on {config.data.corpus}: {protocol_name}, "
              f"{len(selected)} fold(s){f', {done} already done' if done else ''}; run directory {run_dir}"
              + (" (resumed)" if resumed else ""))

    failures: dict = {}
    if pending:
        features, failures = extract(config, manifest, progress)
        jobs = min(int(config.runtime.jobs), len(pending))
        if jobs > 1:
            from ser_keras.training.parallel import run_folds_in_processes

            del features  # the fold workers read them from the feature cache
            run_folds_in_processes(config, run_dir, pending, jobs, progress)
        else:
            context = make_context(config, run_dir, manifest, labels, features, progress)
            for position, fold in enumerate(pending):
                if progress:
                    print(fold_header(config, fold, f"{position + 1}/{len(pending)} to run"))
                run_fold(context, fold)
    return collect_results(config, run_dir, labels, folds, failures, time.time() - started)


def make_context(config: Config, run_dir: pathlib.Path, manifest: pd.DataFrame, labels: list,
                 features: list, progress: bool) -> RunContext:
    """The state the folds of one run share (in the `fit` process, or in a fold worker)."""
    label_index = {label: i for i, label in enumerate(labels)}
    context = RunContext(
        config=config, run_dir=run_dir, manifest=manifest, labels=labels, features=features,
        y=manifest["label"].map(label_index).to_numpy(np.int64),
        protocol_name=describe_protocol(config.train.protocol, config.train.folds), progress=progress,
    )
    if config.model.classifier == "network":
        from ser_keras.training.distribute import make_strategy

        context.strategy = make_strategy(config.runtime.strategy)
    return context


def fold_header(config: Config, fold: Fold, position: str) -> str:
    """The progress line that opens a fold."""
    return (f"[{config.data.corpus} {config.model.experiment}] fold {fold.name} ({position}): "
            f"{len(fold.train)} train, {len(fold.validation)} validation, {len(fold.test)} test")


def collect_results(config: Config, run_dir: pathlib.Path, labels: list, folds: typing.Sequence,
                    failures: typing.Optional[dict] = None, invocation_s: float = 0.0) -> dict:
    """(Re)write the run-level results from the finished folds (`folds`: Fold objects or names)."""
    from ser_keras.evaluation.results import write_run_results

    extra = {"feature_failures": failures or {}, "last_invocation_s": round(invocation_s, 2)}
    if reports_serving(config) and config.train.protocol != "all":
        extra["serving"] = serving_results(config, run_dir, labels, folds)
    if config.train.protocol == "all":
        extra["deploy"] = deploy_summary(config, run_dir)
        estimate = run_dir / ESTIMATE_FILE
        if estimate.is_file():
            extra["estimate"] = json.loads(estimate.read_text())
    return write_run_results(
        run_dir,
        fold_names=[getattr(f, "name", f) for f in folds],
        labels=labels,
        corpus=config.data.corpus,
        experiment=config.model.experiment,
        protocol=config.train.protocol,
        protocol_name=describe_protocol(config.train.protocol, config.train.folds),
        config_hash=resume.config_hash(config),
        seed=config.train.seed,
        extra=extra,
    )


ESTIMATE_FILE = "estimate.json"
NO_TEST_NOTE = ("protocol all trains on every utterance: there is no test part, so no WA/UA here; the "
                "figure that estimates this model's accuracy must come from a loso, session or random "
                "run of the same config (fit --estimate-from RUN2 records it)")


def deploy_summary(config: Config, run_dir: pathlib.Path) -> typing.Optional[dict]:
    """results.json["deploy"] of a protocol "all" run: what the model was trained on."""
    path = run_dir / "folds" / "all" / resume.FOLD_RESULT
    if not path.is_file():
        return None
    fold = json.loads(path.read_text())
    return {"corpus": config.data.corpus, "training_speakers": fold.get("training_speakers"),
            "n_training_utterances": fold.get("n_training_utterances"),
            "validation_speakers": fold.get("validation_speakers"),
            "epochs": fold.get("refit_epochs"), "note": NO_TEST_NOTE}


def serving_results(config: Config, run_dir: pathlib.Path, labels: list,
                    folds: typing.Sequence) -> typing.Optional[dict]:
    """results.json["serving"]: the served model on single recordings (no speaker context),
    pooled over the finished folds that scored it (their ``serving_predictions.csv``; the
    pooled file goes to ``run_dir/serving_predictions.csv``). None when no fold did.
    `folds`: Fold objects or names."""
    from ser_keras.evaluation.results import score_predictions

    frames, names = [], []
    for name in (getattr(f, "name", f) for f in folds):
        fold_dir = run_dir / "folds" / name
        if (fold_dir / resume.FOLD_RESULT).is_file() and (fold_dir / SERVING_PREDICTIONS).is_file():
            frames.append(pd.read_csv(fold_dir / SERVING_PREDICTIONS, dtype={"speaker": str}))
            names.append(name)
    if not frames:
        return None
    pooled = pd.concat(frames, ignore_index=True)
    pooled.to_csv(run_dir / SERVING_PREDICTIONS, index=False)
    summary = score_predictions(pooled, labels)
    return {
        "wa": summary["wa"], "ua": summary["ua"], "n": summary["n"],
        "normalization": _serving_mode(config),
        "folds": names,
        "description": "the same models on the same test folds, each test utterance on its own (no speaker "
                       "context), normalised as the export's serve endpoint does; 'pooled' is the "
                       "protocol's figure, each test speaker normalised by the statistics of their own "
                       "speech (the export's serve_speaker)",
    }


def folds_payload(folds: typing.Sequence[Fold], manifest: pd.DataFrame, config: Config) -> dict:
    """folds.json: the protocol and, per fold, its test utterances (relative order kept)."""
    from ser_keras.evaluation.results import common_root, relative_path

    root = common_root(manifest["path"])
    return {
        "protocol": config.train.protocol,
        "protocol_name": describe_protocol(config.train.protocol, config.train.folds),
        "folds": [
            {**fold.to_dict(manifest),
             "test_paths": [relative_path(p, root) for p in manifest["path"].iloc[fold.test]]}
            for fold in folds
        ],
    }


def configure_determinism(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow, and make TF ops deterministic."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(int(seed))
    try:
        tf.config.experimental.enable_op_determinism()
    except (AttributeError, RuntimeError):  # pragma: no cover - very old TF
        pass


# ----------------------------------------------------------------------------- features


def extract(config: Config, manifest: pd.DataFrame, progress: bool) -> tuple:
    """(features per manifest row or None, failures {path: message}) for the experiment;
    spectrograms level-normalised when ``features.level_normalization`` is on."""
    from ser_keras.features.extract import extract_features

    kind = config.model.input_features
    n_jobs = config.runtime.extract_jobs or None
    extraction = extract_features(manifest, kind, config, n_jobs=n_jobs, progress=progress)
    features = list(extraction.features)
    failures = dict(extraction.failures)
    if kind == "spectrogram":  # after the cache read: the cache holds the raw spectrograms
        from ser_keras.features.level import maybe_level_normalize

        features = maybe_level_normalize(features, config.features)
    if kind == "functionals":  # (D,) vectors -> (1, D) so they normalise like frame features
        features = [None if f is None else np.asarray(f, np.float32).reshape(1, -1) for f in features]
    if failures and progress:
        print(f"feature extraction failed for {len(failures)} file(s); they are left out:")
        for path, message in list(failures.items())[:10]:
            print(f"  {path}: {message}")
    elif failures:  # quiet, but a file left out of the data is never silent: one line on stderr
        path, message = next(iter(failures.items()))
        more = f" (and {len(failures) - 1} more, listed in results.json feature_failures)" if len(failures) > 1 else ""
        print(f"feature extraction failed for {len(failures)} file(s), left out: {path}: {message}{more}",
              file=sys.stderr, flush=True)
    if all(f is None for f in features):
        raise SerKerasError(f"corpus '{config.data.corpus}': feature extraction failed for every file")
    return features, failures


def _usable(context: RunContext, indices: np.ndarray) -> np.ndarray:
    return np.array([i for i in indices if context.features[i] is not None], dtype=np.int64)


# --------------------------------------------------------------------------------- folds


def run_fold(context: RunContext, fold: Fold) -> dict:
    """Train and test one fold; writes everything under folds/<fold>/, result.json last."""
    import keras

    from ser_keras.evaluation.results import fold_predictions_frame, score_predictions

    fold_dir = resume.fold_dir(context.run_dir, fold.name)
    fold_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(int(context.config.train.seed))
    train, validation, test = (_usable(context, part) for part in (fold.train, fold.validation, fold.test))
    deploy = context.config.train.protocol == "all"  # no test part by design
    if len(train) == 0 or (len(test) == 0 and not deploy):
        raise SerKerasError(f"fold {fold.name}: no usable training or test utterances after feature extraction")
    started = time.time()
    previous = _elapsed(fold_dir)
    frontend = fit_frontend(context, fold_dir, train)
    x = {name: frontend.apply(context, part) for name, part in
         (("train", train), ("validation", validation), ("test", test))}
    if reports_serving(context.config) and len(test):
        x["serving"] = frontend.apply_serving(context, test)
    if context.config.model.input_features == "spectrogram":
        # The other versions of the training utterances a training epoch draws from (or, with
        # warp_mode copies, trains on as well): frequency-warped ones and, with
        # features.pooled_version, each normalised as a single served recording is.
        x["train_versions"] = frontend.apply_versions(context, train)
        if refits(context.config) and len(validation):  # for the refit on all of them
            x["all_versions"] = frontend.apply_versions(context, np.concatenate([train, validation]))
    if context.config.model.classifier == "svm":
        outcome = _train_svm(context, fold, fold_dir, x, train, validation, test)
    else:
        outcome = _train_network(context, fold, fold_dir, x, train, validation, test)
    probabilities, predicted = outcome.pop("probabilities"), outcome.pop("predicted")
    serving_probabilities = outcome.pop("serving_probabilities", None)
    wall = previous + (time.time() - started)
    speakers = context.manifest["speaker"].astype(str)
    # What the final model was fitted on: after a refit (and exp1's SVM) validation too.
    refitted = bool(outcome.get("refit_epochs")) or context.config.model.classifier == "svm"
    final = np.concatenate([train, validation]) if refitted else train
    trained_on = {"training_speakers": sorted(set(speakers.iloc[final])),
                  "n_training_utterances": int(len(final)),
                  "validation_speakers": sorted(set(speakers.iloc[validation]))}
    if deploy:
        result = {"name": fold.name, "test": "none", "n_train": int(len(train)),
                  "n_validation": int(len(validation)), "wall_time_s": round(wall, 2), **trained_on, **outcome}
        resume.atomic_write_text(fold_dir / resume.FOLD_RESULT, json.dumps(result, indent=1))
        if context.progress:
            print(f"fold {fold.name}: trained on all {len(final)} utterances of {len(trained_on['training_speakers'])} "
                  f"speakers ({wall:.0f} s); no test part")
        return result
    frame = fold_predictions_frame(fold.name, context.manifest.iloc[test], probabilities,
                                   context.labels, predicted)
    frame.to_csv(fold_dir / "predictions.csv", index=False)
    summary = score_predictions(frame, context.labels)
    result = {"name": fold.name, "wa": summary["wa"], "ua": summary["ua"], "n": summary["n"],
              "n_train": int(len(train)), "n_validation": int(len(validation)),
              "wall_time_s": round(wall, 2), **trained_on, **outcome}
    if len(x.get("train_versions", [])):
        result["n_train_versions"] = len(x["train_versions"])
    serving_line = ""
    if serving_probabilities is not None:
        serving_frame = fold_predictions_frame(fold.name, context.manifest.iloc[test], serving_probabilities,
                                               context.labels)
        serving_frame.to_csv(fold_dir / SERVING_PREDICTIONS, index=False)
        serving = score_predictions(serving_frame, context.labels)
        result.update(serving_wa=serving["wa"], serving_ua=serving["ua"],
                      serving_normalization=_serving_mode(context.config))
        serving_line = (f"; served on single recordings ({result['serving_normalization']} statistics): "
                        f"WA {100 * serving['wa']:.2f} %  UA {100 * serving['ua']:.2f} %")
    resume.atomic_write_text(fold_dir / resume.FOLD_RESULT, json.dumps(result, indent=1))
    if context.progress:
        print(f"fold {fold.name}: test WA {100 * summary['wa']:.2f} %  UA {100 * summary['ua']:.2f} % "
              f"({summary['n']} utterances, {wall:.0f} s){serving_line}")
    return result


class Frontend:
    """The fitted normaliser and (exp3/exp4) PCA of one fold."""

    def __init__(self, normalizer, pca):
        self.normalizer = normalizer
        self.pca = pca

    def apply(self, context: RunContext, indices: np.ndarray) -> list:
        """Normalise (and project) the utterances at `indices` in ONE call, so a speaker unseen
        in training is normalised with statistics of all of their utterances in the set."""
        if len(indices) == 0:
            return []
        speakers = context.manifest["speaker"].iloc[indices].tolist()
        out = self.normalizer.transform([context.features[i] for i in indices], speakers)
        if self.pca is not None:
            out = self.pca.transform(out)
        return out

    def apply_warped(self, context: RunContext, indices: np.ndarray) -> list:
        """The frequency-warped copies of the utterances at `indices`: one block of them per
        ``features.warp_factors`` entry, each (speaker, factor) normalised as a speaker of its
        own (``features.augment``); empty without warp factors."""
        from ser_keras.features.augment import check_factors, warp_frequency, warped_speaker
        from ser_keras.features.level import maybe_level_normalize

        out = []
        speakers = context.manifest["speaker"].iloc[indices].tolist()
        for factor in check_factors(context.config.features.warp_factors):
            # A warped copy is a voice of its own: level-normalised by its own reference, as a
            # recording of that voice would be (warping moves energy across bins).
            warped = maybe_level_normalize([warp_frequency(context.features[i], factor) for i in indices],
                                           context.config.features)
            normalised = self.normalizer.transform(warped, [warped_speaker(s, factor) for s in speakers])
            out.extend(self.pca.transform(normalised) if self.pca is not None else normalised)
        return out

    def apply_versions(self, context: RunContext, indices: np.ndarray) -> list:
        """The other training versions of the utterances at `indices`, in blocks in the order
        of `indices`: the frequency-warped ones (`apply_warped`) and, with
        ``features.pooled_version`` on a speaker-normalised model, the utterances normalised as
        a single served recording is (`apply_serving`), so that the model learns both inputs."""
        versions = self.apply_warped(context, indices)
        if context.config.features.pooled_version and reports_serving(context.config):
            versions += self.apply_serving(context, indices)
        return versions

    def apply_serving(self, context: RunContext, indices: np.ndarray) -> list:
        """The utterances at `indices` each on its own, without speaker context, normalised as
        the export's ``serve`` does (``serving_normalization``: the pooled training statistics,
        ``frontend.npz``'s norm_mean/norm_std), then projected."""
        out = self.normalizer.transform([context.features[i] for i in indices], None)
        if self.pca is not None:
            out = self.pca.transform(out)
        return out


def fit_frontend(context: RunContext, fold_dir: pathlib.Path, train: np.ndarray) -> Frontend:
    """Fit (or, on resume, load) normaliser and PCA on the training part; write frontend.npz."""
    from ser_keras.features.normalize import NeutralNormalizer
    from ser_keras.features.pca import FramePCA

    config = context.config
    norm_path, frontend_path = fold_dir / "normalizer.npz", fold_dir / "frontend.npz"
    use_pca = config.model.input_features == "spectrogram"
    if norm_path.is_file() and frontend_path.is_file():
        with np.load(norm_path) as arrays:
            normalizer = NeutralNormalizer.from_arrays(dict(arrays))
        pca = None
        if use_pca:
            with np.load(frontend_path) as arrays:
                pca = FramePCA.from_arrays(dict(arrays))
        return Frontend(normalizer, pca)
    train_features = [context.features[i] for i in train]
    normalizer = NeutralNormalizer.from_config(config)
    normalizer.fit(train_features, context.manifest["label"].iloc[train].tolist(),
                   context.manifest["speaker"].iloc[train].tolist())
    pca = None
    dim = train_features[0].shape[-1]
    if use_pca:
        pca = FramePCA.from_config(config).fit(normalizer.transform(
            train_features, context.manifest["speaker"].iloc[train].tolist()))
        pca_mean, pca_components = pca.mean_, pca.components_
    else:  # no PCA: identity, so the file has the same keys for every experiment
        pca_mean, pca_components = np.zeros(dim, np.float32), np.eye(dim, dtype=np.float32)
    if config.features.normalization == "none":
        norm_mean, norm_std = np.zeros(dim, np.float32), np.ones(dim, np.float32)
    else:
        norm_mean = normalizer.global_mean_.astype(np.float32)
        norm_std = normalizer.global_std_.astype(np.float32)
    np.savez(norm_path, **normalizer.to_arrays())
    np.savez(
        frontend_path,
        norm_mean=norm_mean, norm_std=norm_std,
        pca_mean=np.asarray(pca_mean, np.float32), pca_components=np.asarray(pca_components, np.float32),
        sample_rate=np.array(config.data.sample_rate),
        feature_kind=np.array(config.model.input_features),
        normalization=np.array(config.features.normalization),
    )
    return Frontend(normalizer, pca)


# ------------------------------------------------------------------------------- exp2-4


def _train_network(context: RunContext, fold: Fold, fold_dir: pathlib.Path, x: dict,
                   train: np.ndarray, validation: np.ndarray, test: np.ndarray) -> dict:
    from ser_keras.data.pipeline import make_dataset
    from ser_keras.training.callbacks import make_predictor, read_state

    config = context.config
    seed = int(config.train.seed)
    y = {"train": context.y[train], "validation": context.y[validation], "test": context.y[test]}
    kernels = None
    if config.model.frontend == "sae_conv":
        kernels = _sae_kernels(context, fold_dir, x["train"], seed)
    batch = int(config.train.batch_size)
    validation_ds = make_dataset(x["validation"], None, batch, training=False, seed=seed) \
        if len(validation) else None
    title = f"{config.data.corpus} {config.model.experiment} {fold.name}"
    tensorboard_dir = context.run_dir / "tensorboard" / config.data.corpus / fold.name
    model, resumed_at = _fit_network(context, fold_dir, fold_dir, kernels,
                                     _training_set(config, x["train"], y["train"], x.get("train_versions", [])),
                                     validation_ds, y["validation"], int(config.train.epochs), tensorboard_dir,
                                     title)
    state = read_state(fold_dir / "checkpoint") or {}
    refit_epochs = None
    if refits(config) and state.get("best") is not None:
        # The epoch count validation picked, now on every training speaker (validation ones too).
        refit_epochs = int(state["best_epoch"]) + 1
        if context.progress:
            print(f"fold {fold.name}: refit on all {len(train) + len(validation)} training utterances "
                  f"for {refit_epochs} epoch{'s' * (refit_epochs != 1)} (the best validation epoch)")
        model, refit_resumed_at = _fit_network(
            context, fold_dir, fold_dir / "refit", kernels,
            _training_set(config, list(x["train"]) + list(x["validation"]),
                          np.concatenate([y["train"], y["validation"]]), x.get("all_versions", [])),
            None, [], refit_epochs, tensorboard_dir / "refit", f"{title} refit")
    model.save(fold_dir / "model.keras")
    if len(test):
        probabilities = make_predictor(model)(make_dataset(x["test"], None, batch, training=False, seed=seed))
    else:  # protocol "all": nothing to test
        probabilities = np.zeros((0, len(context.labels)), np.float32)
    serving = {}
    if "serving" in x:  # the same model on single recordings, normalised as the export's serve does
        serving_ds = make_dataset(x["serving"], None, batch, training=False, seed=seed)
        serving["serving_probabilities"] = make_predictor(model)(serving_ds)
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


def _training_set(config: Config, features: list, labels: np.ndarray, others: list) -> tuple:
    """(features, labels, variants) for `make_dataset`: with other versions of the utterances
    (`Frontend.apply_versions`: blocks of them after the originals, in the same order) either
    every version is a training utterance (warp_mode copies) or one is drawn per epoch (draw)."""
    if not len(others):
        return list(features), labels, 1
    versions = list(features) + list(others)
    if config.features.warp_mode == "draw":
        return versions, labels, len(versions) // len(features)
    return versions, np.tile(labels, len(versions) // len(features)), 1


def _fit_network(context: RunContext, fold_dir: pathlib.Path, phase_dir: pathlib.Path,
                 kernels: typing.Optional[dict], training_set: tuple, validation_ds,
                 y_validation: np.ndarray, epochs: int, tensorboard_dir: pathlib.Path, title: str):
    """A fresh model (with the SAE kernels) trained on `training_set`, its checkpoints and
    history in `phase_dir` (the fold's directory, or its ``refit/``): with validation data,
    early stopping restores its best epoch; without, the last epoch is kept. Resumes from
    ``phase_dir/checkpoint``; a finished phase is only loaded. Returns (model, the epoch count
    it resumed at: 0 for a fresh start)."""
    import keras

    from ser_keras.data.pipeline import epoch_steps, make_dataset
    from ser_keras.training.callbacks import (EpochCheckpoint, EpochLine, load_best_weights, read_state,
                                              training_callbacks)

    config = context.config
    seed = int(config.train.seed)
    features, labels, variants = training_set
    n_classes = len(context.labels)
    keras.utils.set_random_seed(seed)
    with context.strategy.scope():
        model = fold_model(context, n_classes, int(features[0].shape[-1]))
        if kernels is not None:
            from ser_keras.training.sae_pretrain import assign_kernels

            assign_kernels(model, kernels)
    checkpoint_dir = phase_dir / "checkpoint"
    state = read_state(checkpoint_dir)
    if state is not None and state.get("finished"):
        # Training ended before an interruption; only what follows it was missing.
        load_best_weights(model, checkpoint_dir)
        return model, int(state.get("epochs_done", 0))
    extra = [_ElapsedLogger(fold_dir)]
    if context.progress and context.epoch_lines:
        extra.append(EpochLine(title, epochs))
    callbacks = training_callbacks(phase_dir, validation_ds, y_validation, context.labels,
                                   config.train.patience, tensorboard_dir, title=title, extra=extra)
    checkpoint = next(c for c in callbacks if isinstance(c, EpochCheckpoint))
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
    model.fit(train_ds, epochs=last, initial_epoch=start, steps_per_epoch=steps, callbacks=callbacks,
              verbose=1 if context.progress and not context.epoch_lines else 0, shuffle=False, **fit_kwargs)
    return model, start


def fold_model(context: RunContext, n_classes: int, input_dim: int):
    """A compiled model in the state a freshly built one has, for the next fold.

    The first fold builds and compiles it. Later folds of the same run reuse that model object,
    so Keras' traced training step and the validation predictor are reused too (tracing the
    BLSTM's training step costs ~15 s per fold on a CPU, a fifth of an EMO-DB fold), and every
    variable is reset to a freshly built model's: weights, the noise and dropout layers' seed
    states, and the optimizer's slots and step counter. A fold therefore trains exactly as it
    would alone (tests/test_training.py checks it bit for bit).
    """
    from ser_keras.models import build_model, compile_model

    fresh = build_model(context.config, n_classes, input_dim)
    key = (int(n_classes), int(input_dim))
    if key not in context.models:
        compile_model(fresh, context.config)
        # Build the optimizer now, so its initial state can be recorded and put back later.
        fresh.optimizer.build(fresh.trainable_variables)
        context.models[key] = (fresh, [v.numpy() for v in fresh.optimizer.variables])
        if context.config.runtime.strategy == "multi-worker":
            from ser_keras.training.distribute import patch_for_multi_worker

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


def _sae_kernels(context: RunContext, fold_dir: pathlib.Path, train_x: list, seed: int) -> dict:
    """Pre-train (or, on resume, load) the SAE kernels of this fold."""
    from ser_keras.training.sae_pretrain import pretrain_kernels

    path = fold_dir / "sae_kernels.npz"
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
    if config.train.class_weight == "none":
        return None
    counts = np.bincount(y_train, minlength=n_classes).astype(np.float64)
    present = counts > 0
    weights = np.where(present, counts.sum() / (present.sum() * np.maximum(counts, 1)), 0.0)
    return {i: float(w) for i, w in enumerate(weights)}


def _history(fold_dir: pathlib.Path) -> pd.DataFrame:
    path = fold_dir / "history.csv"
    if path.is_file() and path.stat().st_size:
        return pd.read_csv(path)
    return pd.DataFrame()


def _elapsed(fold_dir: pathlib.Path) -> float:
    path = fold_dir / "elapsed.json"
    try:
        return float(json.loads(path.read_text())["seconds"])
    except (OSError, ValueError, KeyError):
        return 0.0


def _ElapsedLogger(fold_dir: pathlib.Path):
    """Callback: accumulated training time of the fold, so a resumed fold reports its total."""
    import keras

    class ElapsedLogger(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.base = _elapsed(fold_dir)
            self.start = time.time()

        def on_epoch_end(self, epoch, logs=None):
            resume.atomic_write_text(fold_dir / "elapsed.json",
                                     json.dumps({"seconds": self.base + time.time() - self.start}))

    return ElapsedLogger()


# ----------------------------------------------------------------------------------- exp1


def _train_svm(context: RunContext, fold: Fold, fold_dir: pathlib.Path, x: dict,
               train: np.ndarray, validation: np.ndarray, test: np.ndarray) -> dict:
    """exp1: grid-searched RBF SVM on normalised LLD functionals."""
    import joblib

    from ser_keras.evaluation import metrics as metrics_lib
    from ser_keras.models import build_svm

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
    joblib.dump(model, fold_dir / "model.joblib")
    best_c = float(model.best_params_.get("svc__C")) if hasattr(model, "best_params_") else None
    return {"probabilities": scores, "predicted": scores.argmax(axis=1), "svm_C": best_c,
            "val_wa": row.get("val_wa"), "val_ua": row.get("val_ua")}


def _fit_svm(model, x_train, y_train):
    import warnings

    with warnings.catch_warnings():
        # Small classes in the inner CV of a small fold warn; the split is still valid.
        warnings.simplefilter("ignore", UserWarning)
        model.fit(x_train, y_train)
    return model


def svm_scores(model, x: np.ndarray, n_classes: int) -> np.ndarray:
    """Class scores of a fitted exp1 model as a (n, n_classes) distribution.

    ``predict_proba`` where the SVC was fitted with probability=True; otherwise a softmax of the
    one-vs-rest decision function (whose argmax is the SVM's decision), not calibrated.
    """
    classes = np.asarray(getattr(model, "classes_", np.arange(n_classes)))
    if hasattr(model, "predict_proba"):
        try:
            raw = model.predict_proba(x)
        except AttributeError:
            raw = None
    else:
        raw = None
    if raw is None:
        decision = np.asarray(model.decision_function(x), dtype=np.float64)
        if decision.ndim == 1:  # two classes
            decision = np.stack([-decision, decision], axis=1)
        decision = decision - decision.max(axis=1, keepdims=True)
        raw = np.exp(decision * 4.0)
        raw /= raw.sum(axis=1, keepdims=True)
    out = np.zeros((len(x), n_classes))
    out[:, classes.astype(int)] = raw
    return out


def _log_single_epoch(context: RunContext, fold: Fold, fold_dir: pathlib.Path, row: dict, cm) -> None:
    """exp1 has no epochs: its validation WA/UA/confusion go to TensorBoard and history.csv as
    one step, so every experiment leaves the same kind of logs."""
    import tensorflow as tf

    from ser_keras.evaluation.confusion_image import confusion_image
    from ser_keras.evaluation.plots import metrics_title

    pd.DataFrame([{k: v for k, v in row.items() if v is not None}]).to_csv(fold_dir / "history.csv", index=False)
    log_dir = context.run_dir / "tensorboard" / context.config.data.corpus / fold.name
    writer = tf.summary.create_file_writer(str(log_dir))
    title = metrics_title(row["val_wa"], row["val_ua"], "validation",
                          f"{context.config.data.corpus} exp1 {fold.name}")
    image = confusion_image(cm, context.labels, title)
    with writer.as_default(step=0):
        tf.summary.scalar("val_WA", row["val_wa"])
        tf.summary.scalar("val_UA", row["val_ua"])
        tf.summary.image("val_confusion_matrix", image[np.newaxis])
    writer.close()
