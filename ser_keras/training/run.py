"""Training of every fold of a protocol: the orchestrator of ``fit``.

``train_folds(config, run_dir)`` loads the corpus manifest, writes (or, resuming, checks) the
run directory's ``config.yaml`` and ``folds.json`` (``training.resume``, ``rundir.RunDir``),
extracts the features every fold needs once (cached on disk), and trains the folds that are not
done yet: one after another in this process, or with ``runtime.jobs`` > 1 that many at a time in
worker processes (``training.parallel``). Each fold is the fold engine's
(``training.fold.run_fold``), which writes ``folds/<fold>/``. The run-level results (pooled
predictions, ``results.json``, the confusion PNG) are evaluation's: ``evaluation.fit.fit`` is
this followed by ``evaluation.results.collect_results``.

``train.protocol=all`` trains the model to deploy: one fold, ``all``, whose training part is
every utterance; validation is taken from it as under ``loso`` (``train.validation_split``),
early stopping picks the epoch count, and a fresh model is then trained on everything for that
many epochs. There is no test part, so no WA/UA.

Two figures for speaker-normalised models (``features.normalization`` ``speaker`` or
``neutral_speaker``): the protocol's figure normalises each test speaker with statistics of
their own speech (what the export's ``serve_speaker`` and ``predict --same-speaker`` give); the
same trained model also scores the test utterances each on its own, normalised as the export's
``serve`` does (the pooled training statistics): ``serving_wa``/``serving_ua`` per fold.

Re-running on the same run directory with the same config resumes: finished folds are skipped,
a half-done fold restarts from its last checkpointed epoch. A different config is refused
(``training.resume``).

Determinism: ``keras.utils.set_random_seed(train.seed)`` at the start of every fold and
``tf.config.experimental.enable_op_determinism()``, so the same config gives the same folds,
weights and metrics; a fold run alone (``runtime.fold``) gives what it gives inside a full run.
TensorFlow's thread count changes floating-point summation order, so fold workers (fewer
threads each) give slightly different numbers than ``runtime.jobs=1``; the same config with the
same ``runtime.jobs`` on the same machine repeats exactly.
"""

from __future__ import annotations

import dataclasses
import pathlib
import sys
import time
import typing

import pandas as pd

from ser_keras.config import Config
from ser_keras.corpora import label_order, run_manifest, unmatched_line
from ser_keras.data.splits import Fold, describe_protocol, make_folds, select_folds
from ser_keras.features.extract import extract_for_model, extract_wide_functionals
from ser_keras.rundir import RunDir, common_root, relative_path
from ser_keras.training import resume
from ser_keras.training.distribute import is_chief, worker_role
from ser_keras.training.fold import configure_determinism, fold_header, make_context, run_fold
from ser_keras.training.functionals import fuses_functionals
from ser_keras.training.parallel import run_folds_in_processes


@dataclasses.dataclass
class TrainedRun:
    """What ``train_folds`` leaves for the run-level results (``evaluation.results``)."""

    run_dir: pathlib.Path
    labels: list
    folds: list  # every Fold of the protocol, done or not
    failures: dict  # {path: message} of the files whose features could not be extracted
    started: float  # time.time() when training began

    @property
    def seconds(self) -> float:
        return time.time() - self.started


def train_folds(config: Config, run_dir, progress: bool = True) -> TrainedRun:
    """Train `config` on every fold of its protocol (or on `config.runtime.fold`) that is not done.

    Raises SerKerasError when `run_dir` holds a run of a different config.
    """
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
    run = RunDir(run_dir)
    folds = make_folds(manifest, config.train.protocol, config.train.folds, config.train.seed,
                       config.train.validation_fraction, config.train.validation_split)
    run.check_folds(folds_payload(folds, manifest, config))
    selected = select_folds(folds, config.runtime.fold)
    pending = [f for f in selected if not run.fold(f.name).done()]
    protocol_name = describe_protocol(config.train.protocol, config.train.folds)
    if progress:
        done = len(selected) - len(pending)
        print(f"{config.model.experiment} on {config.data.corpus}: {protocol_name}, "
              f"{len(selected)} fold(s){f', {done} already done' if done else ''}; run directory {run_dir}"
              + (" (resumed)" if resumed else ""))

    failures: dict = {}
    if pending:
        features, failures = extract_for_model(config, manifest, progress)
        functionals = None
        if fuses_functionals(config):  # before any fold worker starts, so they read them cached
            functionals, more = extract_wide_functionals(config, manifest, progress)
            for path, message in more.items():
                if path not in failures:
                    print(f"wide functionals failed, left out: {message}", file=sys.stderr, flush=True)
                    failures[path] = message
        jobs = min(int(config.runtime.jobs), len(pending))
        if jobs > 1:
            del features  # the fold workers read them from the feature cache
            run_folds_in_processes(config, run_dir, pending, jobs, progress)
        else:
            context = make_context(config, run_dir, manifest, labels, features, progress, functionals)
            for position, fold in enumerate(pending):
                if progress:
                    print(fold_header(config, fold, f"{position + 1}/{len(pending)} to run"))
                run_fold(context, fold)
    return TrainedRun(run_dir=run_dir, labels=labels, folds=list(folds), failures=failures, started=started)


def folds_payload(folds: typing.Sequence[Fold], manifest: pd.DataFrame, config: Config) -> dict:
    """folds.json: the protocol and, per fold, its test utterances (relative order kept)."""
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
