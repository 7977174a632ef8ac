"""Several folds at once (``runtime.jobs`` / ``fit --jobs N``), each in its own process.

A fold's training step keeps about one CPU core busy: TensorFlow's thread pool gains little
on the small matrices of these models, so on a 2-core machine one fold at a time leaves half
the machine idle. Folds are independent, so ``fit`` can hand them to ``jobs`` worker
processes (``spawn``ed: TensorFlow's threads do not survive ``fork``), each with
``cpu_count // jobs`` TensorFlow threads. A worker builds the run's shared state once (the
features come from the feature cache that ``fit`` has just filled), keeps its compiled model
for its next fold (``network.fold_model``), and writes its folds into the run directory exactly as
a one-process run does; ``fit`` then pools them as usual.

Failures: a fold that fails stops the run as it would in one process, but the folds already
running finish first (their work is kept, never half-written); a worker that dies (killed,
out of memory) ends the run with a one-line error. Ctrl-C is the parent's: it stops every
worker at once; re-running the same command resumes from the folds' checkpoints. A parent that
dies without stopping them (``kill``, a scheduler's time limit, SIGKILL) takes its workers with
it within about a second: each watches its parent, so no orphan keeps training (and writing
into the run directory) beside the re-run that resumes it.
"""

from __future__ import annotations

import multiprocessing
import os
import pathlib
import queue
import signal
import sys
import threading
import time
import traceback
import typing

import tensorflow as tf

from ser_keras.config import Config
from ser_keras.corpora import label_order, run_manifest
from ser_keras.data.splits import Fold
from ser_keras.errors import SerKerasError
from ser_keras.features.extract import extract_for_model
from ser_keras.training.fold import configure_determinism, fold_header, make_context, run_fold


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
    spawn = multiprocessing.get_context("spawn")
    todo, done = spawn.Queue(), spawn.Queue()
    for position, fold in enumerate(folds):
        todo.put((fold, f"{position + 1} of {len(folds)}"))
    for _ in range(jobs):
        todo.put(None)  # one stop sign per worker
    # Not daemonic: a worker may start processes of its own (feature extraction of files the
    # cache does not hold); every exit path below terminates or joins the workers.
    workers = [spawn.Process(target=_worker, args=(config, str(run_dir), progress, threads, todo, done))
               for _ in range(jobs)]
    for worker in workers:
        worker.start()
    failure = None
    try:
        while True:
            try:
                error = done.get(timeout=1.0)
            except queue.Empty:
                lost = [w.exitcode for w in workers if w.exitcode not in (None, 0)]
                if lost:
                    raise SerKerasError(
                        f"a fold worker process died (exit code {lost[0]}: killed, or out of memory?); "
                        "re-run the same command to resume, with fewer --jobs if memory is short") from None
                if not any(w.is_alive() for w in workers):
                    break
                continue
            if error is not None and failure is None:
                failure = error
                _stop_handing_out(todo, jobs)  # the running folds finish and keep their work
    except BaseException:  # Ctrl-C, or a dead worker: stop every worker now
        for worker in workers:
            worker.terminate()
        raise
    finally:
        for worker in workers:
            worker.join()
    if failure is not None:
        raise failure


def _stop_handing_out(todo, jobs: int) -> None:
    """Take the folds nobody has started off the queue and leave only stop signs."""
    try:
        while True:
            todo.get_nowait()
    except queue.Empty:
        pass
    for _ in range(jobs):
        todo.put(None)


def _worker(config: Config, run_dir: str, progress: bool, threads: int, todo, done) -> None:
    """A worker process: build the run's shared state once, then train folds until a stop
    sign; report None (fold written) or the error, per fold, on `done`."""
    # Ctrl-C is the parent's to handle: it stops the workers (SIGTERM), so no fold outlives it.
    # Exiting through SystemExit lets multiprocessing release the queues' semaphores.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    threading.Thread(target=_exit_when_orphaned, args=(os.getppid(),), daemon=True).start()
    try:
        context = _worker_context(config, pathlib.Path(run_dir), progress, threads)
    except Exception as exc:  # e.g. the corpus moved: the run cannot go on
        done.put(_portable(exc, "worker start-up"))
        return
    while (item := todo.get()) is not None:
        fold, position = item
        if progress:
            print(fold_header(config, fold, f"{position}, process {os.getpid()}"), flush=True)
        try:
            run_fold(context, fold)
            done.put(None)
        except Exception as exc:
            done.put(_portable(exc, f"fold {fold.name}"))


def _exit_when_orphaned(parent: int, interval_s: float = 1.0) -> None:
    """A worker's watchdog thread: once `fit`'s process is gone (the worker is handed to
    another parent), stop the worker as the parent's SIGTERM would have."""
    while os.getppid() == parent:
        time.sleep(interval_s)
    os.kill(os.getpid(), signal.SIGTERM)


def _worker_context(config: Config, run_dir: pathlib.Path, progress: bool, threads: int):
    # Whole lines, at once, even into a pipe or a log file shared with the other workers.
    sys.stdout.reconfigure(line_buffering=True)
    # Before TensorFlow runs its first op, which fixes its thread pools.
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)

    configure_determinism(config.train.seed)
    manifest = run_manifest(config)
    features, _ = extract_for_model(config, manifest, progress=False)
    context = make_context(config, run_dir, manifest, label_order(manifest, config.data), features, progress)
    context.epoch_lines = True
    return context


def _portable(exc: Exception, where: str) -> Exception:
    """The error to re-raise in `fit`'s process: a SerKerasError as it is (one line for the
    user), anything else as a RuntimeError carrying the worker's traceback."""
    if isinstance(exc, SerKerasError):
        return exc
    return RuntimeError(f"{where} failed in its worker process:\n{traceback.format_exc()}")
