"""Resuming a run directory: is it the same run, and which folds are done?

A run directory belongs to one resolved config. Re-running ``fit`` with the same config
continues it (finished folds are skipped, a half-done fold resumes from its last checkpointed
epoch); a different config is refused with one line naming the first settings that differ.

What does not change results is the config's ``runtime`` section (``config.RuntimeConfig``:
where the corpus and the cache live, how many processes extract, search and train, which
single fold is run, the ``tf.distribute`` strategy): it is left out of the comparison and of
the config hash. Every other setting is compared.
"""

from __future__ import annotations

import copy
import hashlib
import json
import pathlib
import typing

from ser_keras.config import Config
from ser_keras.errors import SerKerasError
from ser_keras.rundir import RunDir, load_run_config, save_run_config


def identity(config: Config) -> dict:
    """The config as a dict without its runtime section: every setting that shapes results."""
    data = copy.deepcopy(config.to_dict())
    data.pop("runtime", None)
    return data


def config_hash(config: Config) -> str:
    """A short, stable hash of everything in the config that shapes results."""
    payload = json.dumps(identity(config), sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _differences(old: dict, new: dict, prefix: str = "") -> list:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(_differences(a, b, f"{prefix}{key}."))
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def prepare_run_dir(config: Config, run_dir: pathlib.Path, labels: typing.Sequence[str]) -> bool:
    """Write the resolved config into a new run directory, or check it against an existing one.

    Returns True when an earlier run of the same config is being resumed.
    Raises SerKerasError (one line) when `run_dir` holds a run of a different config.
    """
    run_dir = pathlib.Path(run_dir)
    if RunDir(run_dir).config.is_file():
        old_config, old_labels = load_run_config(run_dir)
        changes = _differences(identity(old_config), identity(config))
        if list(old_labels) != list(labels):
            changes.insert(0, f"labels: {old_labels} -> {list(labels)}")
        if changes:
            shown = "; ".join(changes[:3]) + (f"; and {len(changes) - 3} more" if len(changes) > 3 else "")
            raise SerKerasError(
                f"{run_dir}: holds a run of a different config ({shown}); "
                "use another --run-dir, or delete it to start over"
            )
        # Keep the file, but record the runtime settings of the latest invocation.
        save_run_config(config, run_dir, labels)
        return True
    save_run_config(config, run_dir, labels)
    return False
