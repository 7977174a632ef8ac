"""Any corpus, from a CSV manifest: ``--corpus csv --data-dir corpus.csv`` (or a folder holding
``manifest.csv``).

Columns ``path,label,speaker`` are required, ``gender`` and ``session`` optional, others
ignored. Relative paths are resolved against the CSV's folder, so a corpus folder with its
manifest can be moved as a whole. A missing column, an empty cell or a listed file that does
not exist is an error naming the CSV, the line and the problem: a manifest is the user's
statement of what the corpus is, so nothing in it is skipped silently.

Duplicates are refused, with one line naming both manifest lines: the same file listed twice
(the same path after resolving, or the same bytes under two paths — a copied file). Kept, a
duplicate would sit in two folds, one copy training the model the other tests it on; dropping
one would silently change the corpus the user described.
"""

from __future__ import annotations

import csv
import os
import pathlib

from ser_keras.errors import SerKerasError

NAME = "csv"
ENV_VAR = "SER_KERAS_CSV"
LAYOUT = "a CSV file (or a folder with manifest.csv) with columns path,label,speaker[,gender,session]"
# load_manifest accepts a file as well as a directory for this corpus.
ACCEPTS_FILE = True
MANIFEST_NAME = "manifest.csv"
REQUIRED = ("path", "label", "speaker")
OPTIONAL = ("gender", "session")


def manifest_path(root: pathlib.Path) -> pathlib.Path:
    if root.is_dir():
        path = root / MANIFEST_NAME
        if not path.is_file():
            raise SerKerasError(f"{root}: no {MANIFEST_NAME} in this folder (expected {LAYOUT})")
        return path
    return root


def scan(root: pathlib.Path, config) -> list:
    path = manifest_path(pathlib.Path(root))
    base = path.parent
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = [name.strip() for name in (reader.fieldnames or [])]
            missing = [name for name in REQUIRED if name not in header]
            if missing:
                raise SerKerasError(
                    f"{path}: missing column(s) {', '.join(missing)} "
                    f"(the header has: {', '.join(header) or 'nothing'}; "
                    f"required: {', '.join(REQUIRED)})"
                )
            reader.fieldnames = header
            rows = [(reader.line_num, _row(record, path, base, line=reader.line_num)) for record in reader]
    except UnicodeDecodeError:
        raise SerKerasError(f"{path}: not a UTF-8 text CSV file") from None
    except csv.Error as exc:
        raise SerKerasError(f"{path}: not a valid CSV file ({exc})") from None
    rows = [(line, row) for line, row in rows if row is not None]
    _refuse_duplicates(path, rows)
    return [row for _, row in rows]


def _refuse_duplicates(path: pathlib.Path, rows: list) -> None:
    """SerKerasError naming both lines of the first duplicate: one path twice, or one content
    under two paths (only files of equal size are hashed, so a clean manifest costs no reads)."""
    import hashlib

    first_line: dict = {}
    for line, row in rows:
        key = os.path.realpath(row["path"])
        if key in first_line:
            raise SerKerasError(f"{path} lines {first_line[key]} and {line}: the same audio file listed twice "
                                f"({row['path']}); remove one of them")
        first_line[key] = line
    by_size: dict = {}
    for line, row in rows:
        by_size.setdefault(os.path.getsize(row["path"]), []).append((line, row))
    for group in by_size.values():
        if len(group) < 2:
            continue
        seen: dict = {}
        for line, row in group:
            with open(row["path"], "rb") as handle:
                digest = hashlib.file_digest(handle, "sha256").hexdigest() if hasattr(hashlib, "file_digest") \
                    else hashlib.sha256(handle.read()).hexdigest()
            if digest in seen:
                other_line, other = seen[digest]
                raise SerKerasError(f"{path} lines {other_line} and {line}: the same audio content under two paths "
                                    f"({other['path']}, {row['path']}); remove one of them")
            seen[digest] = (line, row)


def _row(record: dict, path: pathlib.Path, base: pathlib.Path, line: int):
    values = {key: (value or "").strip() if isinstance(value, str) else "" for key, value in record.items() if key}
    if not any(values.values()):
        return None  # a blank line
    for name in REQUIRED:
        if not values.get(name):
            raise SerKerasError(f"{path} line {line}: empty '{name}'")
    audio = pathlib.Path(values["path"]).expanduser()
    if not audio.is_absolute():
        audio = base / audio
    if not audio.is_file():
        raise SerKerasError(f"{path} line {line}: audio file not found: {audio}")
    row = {"path": audio, "label": values["label"], "speaker": values["speaker"]}
    for name in OPTIONAL:
        row[name] = values.get(name) or None
    return row
