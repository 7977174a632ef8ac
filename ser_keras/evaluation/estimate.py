"""The accuracy estimate of a deployed model: another run's protocol figures, checked to apply.

A ``train.protocol=all`` run (``training.run``) trains on every utterance and so has no test
part. What it will score on new speakers is estimated by a run of the SAME config under a
protocol that tests (``loso``, ``session``, ``random``): ``estimate_from(config, RUN2)`` reads
RUN2's ``results.json`` (the pooled WA/UA, the single-recording ``serving`` WA/UA, the protocol)
after checking that RUN2's config equals ``config`` apart from the protocol settings
(``train.protocol``, ``train.folds``) and what ``training.resume`` leaves out of a run's
identity. ``fit --protocol all --estimate-from RUN2`` writes it to the run's ``estimate.json``;
``export --estimate-from RUN2`` puts it into the export's metadata.
"""

from __future__ import annotations

import json
import pathlib

from ser_keras.config import PROTOCOL_ALL
from ser_keras.errors import SerKerasError
from ser_keras.rundir import RunDir, atomic_write_json, load_run_config
from ser_keras.training.resume import _differences, identity

# Settings a protocol run and the deployed model may differ in.
PROTOCOL_KEYS = (("train", "protocol"), ("train", "folds"))


def _comparable(config) -> dict:
    data = identity(config)
    for section, key in PROTOCOL_KEYS:
        data.get(section, {}).pop(key, None)
    return data


def estimate_from(config, source_dir) -> dict:
    """The figures of run `source_dir` as the estimate for a model trained with `config`.

    Raises SerKerasError (one line naming the run) when `source_dir` is not a finished run
    with a test protocol, or its config differs from `config` in more than the protocol.
    """
    source_dir = pathlib.Path(source_dir)
    results_path = RunDir(source_dir).results
    if not RunDir(source_dir).config.is_file() or not results_path.is_file():
        raise SerKerasError(f"{source_dir}: not a finished run (needs config.yaml and results.json)")
    other, _ = load_run_config(source_dir)
    if other.train.protocol == PROTOCOL_ALL:
        raise SerKerasError(f"{source_dir}: a protocol 'all' run has no test figure; give a loso, session "
                            "or random run of the same config")
    changes = _differences(_comparable(other), _comparable(config))
    if changes:
        shown = "; ".join(changes[:3]) + (f"; and {len(changes) - 3} more" if len(changes) > 3 else "")
        raise SerKerasError(f"{source_dir}: its config differs from this model's in more than the protocol "
                            f"({shown}); its figure does not estimate this model")
    try:
        results = json.loads(results_path.read_text())
    except ValueError:
        raise SerKerasError(f"{results_path}: not valid JSON") from None
    pooled = results.get("pooled")
    if not pooled:
        raise SerKerasError(f"{results_path}: holds no pooled WA/UA (no finished fold)")
    serving = results.get("serving") or {}
    return {
        "run": str(source_dir.resolve()),
        "protocol": results.get("protocol", other.train.protocol),
        "protocol_name": results.get("protocol_name"),
        "complete": results.get("complete"),
        "n_folds": results.get("n_folds"),
        "wa": pooled["wa"], "ua": pooled["ua"], "n": pooled.get("n"),
        "serving_wa": serving.get("wa"), "serving_ua": serving.get("ua"),
        "serving_normalization": serving.get("normalization"),
        "refit": bool(other.train.refit),
        "description": "the protocol's figures of a run of the same config (wa/ua: each test speaker "
                       "normalised by their own speech, as serve_speaker; serving_wa/ua: each recording "
                       "alone, as serve)",
    }


def write_estimate(run_dir, source_dir) -> dict:
    """``estimate_from`` for the protocol "all" run `run_dir`, written to its estimate.json."""
    run_dir = pathlib.Path(run_dir)
    config, _ = load_run_config(run_dir)
    if config.train.protocol != PROTOCOL_ALL:
        raise SerKerasError(f"{run_dir}: --estimate-from is for a protocol 'all' run (this one is "
                            f"{config.train.protocol}, which measures its own figure)")
    estimate = estimate_from(config, source_dir)
    atomic_write_json(RunDir(run_dir).estimate, estimate)
    return estimate
