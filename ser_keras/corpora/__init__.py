"""Corpus loaders: a directory in its distributor's layout -> one manifest DataFrame.

Every loader is a module here with

- ``NAME``: the ``--corpus`` name; ``ENV_VAR``: the environment variable naming its directory;
- ``LAYOUT``: one line describing the expected layout (used in error messages);
- ``scan(root: pathlib.Path, config: DataConfig) -> list[dict]``: one dict per utterance with
  ``path``, ``label``, ``speaker`` and, where the corpus knows them, ``gender`` and ``session``.
  Unrelated files (annotations, desktop.ini, non-audio files) are skipped silently. An audio
  file where the layout expects one that does not follow its naming is never dropped silently:
  if its folders alone give label and speaker unambiguously it is used, its row carrying a
  ``note`` (why it did not match); otherwise the loader returns ``{"path": ..., "skip": why}``.

``load_manifest`` adds the ``duration`` column (from the headers, no decoding), sorts rows by
path so the manifest is identical on every machine, applies ``config.labels``, and fails with
one line naming the directory and the expected layout when nothing matches. The files that did
not match the naming (used or skipped) are in ``manifest.attrs["unmatched"]`` (``[{"path",
"reason", "used"}]``); ``unmatched_line`` words them for ``info`` and ``fit``.
"""

from __future__ import annotations

import importlib
import itertools
import os
import pathlib
import typing

import pandas as pd

from ser_keras.audio import audio_info
from ser_keras.config import DataConfig
from ser_keras.errors import AudioError, SerKerasError

COLUMNS = ["path", "label", "speaker", "gender", "session", "duration"]

# --corpus name -> module under ser_keras.corpora
CORPORA = {
    "demo": "demo",
    "casia": "casia",
    "emodb": "emodb",
    "iemocap": "iemocap",
    "ravdess": "ravdess",
    "tess": "tess",
    "csv": "csv_manifest",
}


def corpus_module(name: str):
    if name not in CORPORA:
        raise SerKerasError(f"unknown corpus '{name}': choose one of {', '.join(CORPORA)}")
    return importlib.import_module(f"ser_keras.corpora.{CORPORA[name]}")


def resolve_data_dir(name: str, data_dir: typing.Optional[str]) -> typing.Optional[pathlib.Path]:
    """--data-dir, else the corpus' environment variable, else None."""
    module = corpus_module(name)
    chosen = data_dir or os.environ.get(getattr(module, "ENV_VAR", ""), "") or None
    return pathlib.Path(chosen).expanduser() if chosen else None


def corpus_root(name: str, data_dir: typing.Optional[str] = None,
                config: typing.Optional[DataConfig] = None, cache_dir: typing.Optional[str] = None) -> pathlib.Path:
    """The corpus directory (generated first, under `cache_dir`, for the demo corpus), checked
    to exist."""
    config = config or DataConfig(corpus=name)
    module = corpus_module(name)
    root = resolve_data_dir(name, data_dir)
    if hasattr(module, "prepare"):  # generated corpora (demo) make their own directory
        root = module.prepare(root, config, cache_dir)
    if root is not None:
        # Absolute paths, so the manifest (and anything keyed by its paths, like the feature
        # cache) does not depend on the working directory.
        root = root.absolute()
    if root is None:
        raise SerKerasError(
            f"corpus '{name}': no data directory; pass --data-dir or set {module.ENV_VAR} "
            f"(expected layout: {module.LAYOUT})"
        )
    if getattr(module, "ACCEPTS_FILE", False):  # csv: a manifest file or a folder holding one
        if not root.exists():
            raise SerKerasError(f"{root}: file or directory not found (expected {module.LAYOUT})")
    elif not root.is_dir():
        found = "a file, not a directory" if root.exists() else "directory not found"
        raise SerKerasError(f"{root}: {found} (expected {name} layout: {module.LAYOUT})")
    return root


def load_manifest(name: str, data_dir: typing.Optional[str] = None,
                  config: typing.Optional[DataConfig] = None, cache_dir: typing.Optional[str] = None) -> pd.DataFrame:
    """Scan corpus `name` into a manifest with the columns in COLUMNS."""
    config = config or DataConfig(corpus=name)
    module = corpus_module(name)
    root = corpus_root(name, data_dir, config, cache_dir)
    scanned = module.scan(root, config)
    unmatched = [{"path": str(r["path"]), "reason": r.get("skip") or r["note"], "used": "skip" not in r}
                 for r in scanned if "skip" in r or r.get("note")]
    rows = [{k: v for k, v in r.items() if k != "note"} for r in scanned if "skip" not in r]
    if not rows:
        raise SerKerasError(
            f"{root}: no {name} utterances found (expected layout: {module.LAYOUT}; found {_found(root)})"
        )
    frame = pd.DataFrame(rows)
    for column in ("gender", "session"):
        if column not in frame:
            frame[column] = None
    frame["path"] = frame["path"].map(str)
    frame["speaker"] = frame["speaker"].map(str)
    frame["duration"] = [_duration(p) for p in frame["path"]]
    frame = frame.sort_values("path", kind="stable").reset_index(drop=True)
    if config.labels:
        unknown = sorted(set(config.labels) - set(frame["label"]))
        if unknown:
            raise SerKerasError(
                f"data.labels: {unknown} not in corpus '{name}' (it has {sorted(set(frame['label']))})"
            )
        frame = frame[frame["label"].isin(config.labels)].reset_index(drop=True)
    frame = frame[COLUMNS]
    frame.attrs["unmatched"] = sorted(unmatched, key=lambda r: r["path"])
    frame.attrs["layout"] = module.LAYOUT
    return frame


def run_manifest(config) -> pd.DataFrame:
    """The manifest of a run config's corpus (`data.corpus`, read from `runtime.data_dir`; the
    demo corpus generated under `runtime.cache_dir`)."""
    return load_manifest(config.data.corpus, config.runtime.data_dir, config.data, config.runtime.cache_dir)


def unmatched_line(manifest: pd.DataFrame, shown: int = 3) -> typing.Optional[str]:
    """One line counting and naming the files that did not match the corpus' naming, or None."""
    unmatched = manifest.attrs.get("unmatched") or []
    if not unmatched:
        return None
    used = sum(r["used"] for r in unmatched)
    listed = "; ".join(f"{r['path']} ({r['reason']}{', used' if r['used'] else ', skipped'})"
                       for r in unmatched[:shown])
    more = f"; and {len(unmatched) - shown} more" if len(unmatched) > shown else ""
    return (f"{len(unmatched)} file{'s' * (len(unmatched) != 1)} not matching "
            f"{manifest.attrs.get('layout', 'the layout')} "
            f"({used} used, {len(unmatched) - used} skipped): {listed}{more}")


def _found(root: pathlib.Path, shown: int = 4) -> str:
    """What a directory holds, in a few words, for the 'nothing matched' error."""
    if not root.is_dir():
        return "a file"
    entries = sorted(root.iterdir())
    if not entries:
        return "an empty directory"
    names = [e.name + ("/" if e.is_dir() else "") for e in entries[:shown]]
    more = f", ... ({len(entries)} entries)" if len(entries) > shown else ""
    cap = 10000  # enough to describe; a mistyped --data-dir may be a whole disk
    wavs = sum(1 for _ in itertools.islice(root.rglob("*.wav"), cap))
    return f"{', '.join(names)}{more}; {wavs if wavs < cap else f'{cap}+'} .wav file(s) below it"


def _duration(path: str) -> float:
    """Header duration; NaN for an unreadable file, which feature extraction then reports."""
    try:
        return audio_info(path)[0]
    except AudioError:
        return float("nan")


def label_order(manifest: pd.DataFrame, config: typing.Optional[DataConfig] = None) -> list:
    """The class order used everywhere: config.labels if given, else sorted labels."""
    if config is not None and config.labels:
        return list(config.labels)
    return sorted(manifest["label"].unique())


def describe(manifest: pd.DataFrame) -> dict:
    """Summary printed by `ser-keras info`."""
    per_speaker = manifest.groupby("speaker").size().sort_index()
    per_label = manifest.groupby("label").size().sort_index()
    unreadable = manifest["duration"].isna()
    summary = {
        "utterances": int(len(manifest)),
        "speakers": int(manifest["speaker"].nunique()),
        "labels": {k: int(v) for k, v in per_label.items()},
        "per_speaker": {k: int(v) for k, v in per_speaker.items()},
        "duration_s": round(float(manifest["duration"].sum(skipna=True)), 3),
        "unreadable_files": int(unreadable.sum()),
        "unmatched_files": list(manifest.attrs.get("unmatched") or []),
    }
    if manifest["gender"].notna().any():
        summary["genders"] = {k: int(v) for k, v in manifest.groupby("gender").size().items()}
    if manifest["session"].notna().any():
        summary["sessions"] = {k: int(v) for k, v in manifest.groupby("session").size().items()}
    return summary
