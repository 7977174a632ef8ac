"""``fit``: train an experiment on every fold of its protocol and pool the test predictions.

Training (``training.run.train_folds``) writes every fold's directory; the run-level results
(``evaluation.results.collect_results``: ``predictions.csv``, ``results.json``, the confusion
PNG) pool the finished folds. This module joins the two; it is the library call behind
``ser-keras fit``.
"""

from __future__ import annotations

from ser_keras.config import Config
from ser_keras.evaluation.results import collect_results
from ser_keras.training.run import train_folds


def fit(config: Config, run_dir, progress: bool = True) -> dict:
    """Train and evaluate `config` on every fold of its protocol (or on `config.runtime.fold`).

    Returns the results dict also written to ``run_dir/results.json`` (WA/UA are fractions).
    Raises SerKerasError when `run_dir` holds a run of a different config.
    """
    trained = train_folds(config, run_dir, progress)
    return collect_results(config, trained.run_dir, trained.labels, trained.folds, trained.failures,
                           trained.seconds)
