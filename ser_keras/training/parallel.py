"""Several folds at once (``train.jobs`` / ``fit --jobs N``), each in its own process.

A fold's training step keeps about one CPU core busy: TensorFlow's thread pool gains little
on the small matrices of these models, so on a 2-core machine one fold at a time leaves half
the machine idle. Folds are independent, so ``fit`` can hand them to ``jobs`` worker
processes (``spawn``ed: TensorFlow's threads do not survive ``fork``), each with
``cpu_count // jobs`` TensorFlow threads. A worker builds the run's shared state once (the
features come from the feature cache that ``fit`` has just filled), keeps its compiled model
for its next fold (``run.fold_model``), and writes its folds into the run directory exactly as
a one-process run does; ``fit`` then pools them as usual.

Failures: a fold that fails stops the run as it would in one process, but the folds already
running finish first (their work is kept, never half-written); a worker that dies (killed,
out of memory) ends the run with a one-line error. Ctrl-C stops every worker; re-running the
same command resumes from the folds' checkpoints.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import pathlib
import typing

from ser_keras.config import Config
from ser_keras.data.splits import Fold
from ser_keras.errors import SerKerasError

_CONTEXT = None  # the worker's RunContext, built once by `_start_worker`


def cpu_count() -> int:
    """CPU cores this process may use (its affinity mask, where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def run_folds_in_processes(config: Config, run_dir: pathlib.Path, folds: typing.Sequence[Fold],
                           jobs: int, progress: bool) -> None:
    """Run `folds` (not yet done) in `jobs` worker processes; returns once all are written."""
    threads = max(1, cpu_count() // jobs)
    if progress:
        print(f"training {len(folds)} folds, {jobs} at once (one process each, {threads} TensorFlow "
              f"thread{'s' * (threads != 1)} per process)", flush=True)
    pool = concurrent.futures.ProcessPoolExecutor(
        max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker, initargs=(config, str(run_dir), progress, threads))
    futures = {pool.submit(_run_fold, fold, f"{position + 1} of {len(folds)}"): fold
               for position, fold in enumerate(folds)}
    try:
        for future in concurrent.futures.as_completed(futures):
            try:
                future.result()
            except concurrent.futures.process.BrokenProcessPool:
                raise SerKerasError(
                    f"fold {futures[future].name}: its worker process died (killed, or out of memory?); "
                    "re-run the same command to resume, with fewer --jobs if memory is short") from None
    finally:
        # On an error: no new folds, but the running ones finish and keep their work.
        pool.shutdown(wait=True, cancel_futures=True)


def _start_worker(config: Config, run_dir: str, progress: bool, threads: int) -> None:
    import sys

    import tensorflow as tf

    # Whole lines, at once, even into a pipe or a log file shared with the other workers.
    sys.stdout.reconfigure(line_buffering=True)

    # Before TensorFlow runs its first op, which fixes its thread pools.
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)

    from ser_keras.corpora import label_order, load_manifest
    from ser_keras.training import run

    global _CONTEXT
    run.configure_determinism(config.train.seed)
    manifest = load_manifest(config.data.corpus, config.data.data_dir, config.data)
    features, _ = run.extract(config, manifest, progress=False)
    _CONTEXT = run.make_context(config, pathlib.Path(run_dir), manifest, label_order(manifest, config.data),
                                features, progress)
    _CONTEXT.epoch_lines = True


def _run_fold(fold: Fold, position: str) -> str:
    from ser_keras.training import run

    if _CONTEXT.progress:
        print(run.fold_header(_CONTEXT.config, fold, f"{position}, process {os.getpid()}"), flush=True)
    run.run_fold(_CONTEXT, fold)
    return fold.name
