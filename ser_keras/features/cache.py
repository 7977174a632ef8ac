"""On-disk cache of per-utterance feature arrays.

Layout: ``<root>/<corpus>-<kind>-<key>/<entry>.feat`` where

- ``<key>`` hashes everything that shapes the arrays: the corpus name, the feature kind, every
  ``FeatureConfig`` field that can change them (all fields except those listed in
  ``NOT_SHAPING``, so a field added later is part of the key by default), the sample rate, the
  package version and ``FORMAT_VERSION`` (bumped when an algorithm changes);
- ``<entry>`` hashes the audio file's identity: absolute path, size and mtime (ns). A changed
  or replaced file therefore never reads a stale array.

Each entry is one small binary file: a magic line, a JSON header (dtype, shape, CRC-32 of the
data, the source identity) and the raw array bytes. Writes go to a temporary file in the same
directory followed by ``os.replace``, so a killed run leaves either the old entry, the new one,
or a stray ``*.tmp`` file that is never read (and is swept later) -- never a half-written entry.
Anything that fails to parse, has the wrong length or checksum, or names another source is a
miss: the caller recomputes it and the rewrite replaces it.

One file per utterance is fast enough that entries are not chunked: ``get_many`` reads a
whole corpus of spectrograms at ~10000x real time on one core from the page cache (a 2 s
spectrogram is 200 kB: one ``readinto`` straight into the result and a CRC; the results
share one freshly allocated block, because faulting in thousands of separate small arrays
cost as much as the reading). A ``meta.json`` in each directory records the key fields.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import struct
import tempfile
import time
import typing
import zlib

import numpy as np

from ser_keras import __version__

# 2: the one TF front end (features.frontend_ops); 3: YIN decimated; 4: full band; 5: level-normalised
# wide functionals; 6: functionals by LiteRT builtins (the network's YIN, formants from the LPC envelope);
# 7: YIN's correlation from one FFT of the hops (the same values up to float rounding).
FORMAT_VERSION = 7
MAGIC = b"SERKFEAT1\n"
SUFFIX = ".feat"
_LENGTH = struct.Struct("<I")
_HEAD_READ = 4096  # magic + header in one read; the data follow straight into the array

# FeatureConfig fields that never change a per-utterance array (they act later or elsewhere).
NOT_SHAPING = frozenset({
    "pca_components", "pca_max_frames", "normalization", "speaker_fallback", "norm_std_floor",
    "max_frames", "warp_factors", "test_warp_factors",
    # Applied after the cache read (features/level.py), so the cached arrays stay raw.
    "level_normalization", "level_floor_db", "speech_threshold_dbfs", "speech_min_contrast_db", "speech_min_ms",
    # Whether a run appends the pitch channels (their own kind) to the spectrogram.
    "pitch_channels",
})
# Fields only the LLD kinds read (ignored in the spectrogram key, so tuning LLDs keeps it).
LLD_ONLY = frozenset({
    "n_mfcc", "n_mels", "lpc_order", "f0_min_hz", "f0_max_hz", "voicing_threshold",
    "pre_emphasis",
})
SPECTROGRAM_ONLY = frozenset({"n_bins"})
# Fields the pitch channels read besides the frame grid (features/pitch.py, channels.py).
PITCH_FIELDS = frozenset({"f0_min_hz", "f0_max_hz", "voicing_threshold"})


def shaping_fields(config, kind: str) -> dict:
    """The FeatureConfig fields that shape features of `kind` (part of the cache key)."""
    values = dataclasses.asdict(config)
    if kind == "wide_functionals":  # features.functionals fixes its own frame grid and settings
        return {}
    if kind == "spectrogram":
        skip = set(NOT_SHAPING) | LLD_ONLY
    elif kind == "pitch":
        skip = set(NOT_SHAPING) | SPECTROGRAM_ONLY | (LLD_ONLY - PITCH_FIELDS)
    else:
        skip = set(NOT_SHAPING) | SPECTROGRAM_ONLY
    return {name: value for name, value in sorted(values.items()) if name not in skip}


def file_identity(path) -> tuple:
    """(absolute path, size, mtime_ns) of an audio file; raises OSError if it is missing."""
    path = os.path.abspath(os.fspath(path))
    info = os.stat(path)
    return path, int(info.st_size), int(info.st_mtime_ns)


class FeatureCache:
    """Feature arrays of one (corpus, kind, feature config, sample rate), keyed by audio file.

    Args:
        root: the cache root (e.g. ``cache_root(config.runtime.cache_dir) / "features"``).
        corpus: corpus name (``config.data.corpus``).
        kind: "spectrogram", "lld" or "functionals".
        config: the ``FeatureConfig``.
        sample_rate: the rate the audio is resampled to before feature extraction.
    """

    def __init__(self, root, corpus: str, kind: str, config, sample_rate: int):
        self.root = pathlib.Path(root).expanduser()
        self.corpus = str(corpus)
        self.kind = str(kind)
        self.sample_rate = int(sample_rate)
        self.key_fields = {
            "corpus": self.corpus,
            "kind": self.kind,
            "sample_rate": self.sample_rate,
            "ser_keras_version": __version__,
            "format_version": FORMAT_VERSION,
            "features": shaping_fields(config, kind),
        }
        digest = hashlib.sha256(json.dumps(self.key_fields, sort_keys=True).encode()).hexdigest()
        self.key = digest[:16]
        safe_corpus = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.corpus)
        self.directory = self.root / f"{safe_corpus}-{self.kind}-{self.key}"
        self._made = False

    # ----------------------------------------------------------------------------- paths

    def entry_path(self, identity: tuple) -> pathlib.Path:
        name = hashlib.sha1(repr(identity).encode("utf-8", "surrogateescape")).hexdigest()
        return self.directory / (name + SUFFIX)

    # ------------------------------------------------------------------------------ read

    def get(self, path, identity: typing.Optional[tuple] = None) -> typing.Optional[np.ndarray]:
        """The cached array for audio file `path`, or None (missing file, miss or bad entry)."""
        try:
            identity = identity or file_identity(path)
        except OSError:
            return None
        return self.read_entry(self.entry_path(identity), identity)

    def get_many(self, paths: typing.Sequence, identities: typing.Optional[typing.Sequence] = None) -> list:
        """`get` for many files at once: a list with an array or None per path.

        The arrays are read into one shared, freshly allocated block (each is a view of it,
        64-byte aligned), which the kernel can back with huge pages: in a VM, faulting in
        thousands of separate 4 kB pages cost as much as the read itself.
        """
        if identities is None:
            identities = []
            for path in paths:
                try:
                    identities.append(file_identity(path))
                except OSError:
                    identities.append(None)
        entries, sizes = [], []
        for identity in identities:
            entry = self.entry_path(identity) if identity is not None else None
            try:
                size = os.stat(entry).st_size if entry is not None else 0
            except OSError:
                size = 0
            entries.append(entry)
            sizes.append(size)
        arena = np.empty(sum(sizes) + 64 * len(sizes), dtype=np.uint8)
        offset = -arena.ctypes.data % 64
        out = []
        for entry, identity, size in zip(entries, identities, sizes):
            array = self.read_entry(entry, identity, arena[offset:offset + size]) if size else None
            if array is not None:
                offset += array.nbytes + (-array.nbytes % 64)
            out.append(array)
        return out

    @staticmethod
    def read_entry(entry: pathlib.Path, identity: typing.Optional[tuple] = None,
                   into: typing.Optional[np.ndarray] = None) -> typing.Optional[np.ndarray]:
        """The array stored in `entry`, or None when it is missing, damaged or for another source.

        The data are read straight into the returned array (no intermediate buffer) and
        checked against the CRC-32 in the header. With `into` (a uint8 buffer at least as
        large as the data, suitably aligned) the array is a view of that buffer.
        """
        try:
            with open(entry, "rb", buffering=0) as handle:
                size = os.fstat(handle.fileno()).st_size
                head = handle.read(_HEAD_READ)
                if not head.startswith(MAGIC) or len(head) < len(MAGIC) + _LENGTH.size:
                    return None
                start = len(MAGIC) + _LENGTH.size
                (header_length,) = _LENGTH.unpack_from(head, len(MAGIC))
                offset = start + header_length
                if offset > size:
                    return None
                if offset > len(head):
                    head += handle.read(offset - len(head))
                header = json.loads(head[start:offset])
                dtype = np.dtype(header["dtype"])
                shape = tuple(int(n) for n in header["shape"])
                if dtype.hasobject or size - offset != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
                    return None
                if identity is not None and list(identity) != header["source"]:
                    return None
                if into is not None and into.nbytes >= size - offset:
                    array = into[: size - offset].view(dtype).reshape(shape)
                else:
                    array = np.empty(shape, dtype=dtype)
                view = memoryview(array).cast("B") if array.size else memoryview(b"")
                already = head[offset:]
                view[: len(already)] = already
                rest = view[len(already):]
                if len(rest) and handle.readinto(rest) != len(rest):
                    return None
            if zlib.crc32(view) != header["crc32"]:
                return None
            return array
        except (OSError, ValueError, KeyError, TypeError, struct.error, UnicodeDecodeError):
            return None  # json.JSONDecodeError is a ValueError

    # ----------------------------------------------------------------------------- write

    def put(self, path, array: np.ndarray, identity: typing.Optional[tuple] = None) -> pathlib.Path:
        """Store `array` for audio file `path` atomically (temp file + os.replace)."""
        identity = identity or file_identity(path)
        array = np.ascontiguousarray(array)
        if array.dtype.hasobject:
            raise TypeError("cannot cache object arrays")
        header = json.dumps({
            "dtype": array.dtype.str,
            "shape": list(array.shape),
            "crc32": zlib.crc32(memoryview(array).cast("B")),
            "source": list(identity),
        }).encode()
        self._ensure_directory()
        entry = self.entry_path(identity)
        try:
            handle, temp = tempfile.mkstemp(dir=self.directory, prefix=entry.stem[:12] + ".", suffix=".tmp")
        except FileNotFoundError:  # the directory was removed since (a cleared cache)
            self._made = False
            self._ensure_directory()
            handle, temp = tempfile.mkstemp(dir=self.directory, prefix=entry.stem[:12] + ".", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(MAGIC)
                out.write(_LENGTH.pack(len(header)))
                out.write(header)
                out.write(memoryview(array).cast("B"))
            os.replace(temp, entry)
        except BaseException:
            try:
                os.unlink(temp)
            except OSError:
                pass
            raise
        return entry

    def _ensure_directory(self) -> None:
        if self._made:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        meta = self.directory / "meta.json"
        if not meta.exists():
            handle, temp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
            with os.fdopen(handle, "w") as out:
                json.dump(self.key_fields, out, indent=2, sort_keys=True)
            os.replace(temp, meta)
        self._made = True

    # ------------------------------------------------------------------------- upkeep

    def sweep_temporary(self, older_than_s: float = 3600.0) -> int:
        """Delete temp files left by killed writers (older than `older_than_s`); returns count."""
        removed = 0
        if not self.directory.is_dir():
            return 0
        limit = time.time() - older_than_s
        with os.scandir(self.directory) as entries:
            for item in entries:
                if item.name.endswith(".tmp"):
                    try:
                        if item.stat().st_mtime < limit:
                            os.unlink(item.path)
                            removed += 1
                    except OSError:
                        pass
        return removed

    def clear(self) -> int:
        """Delete every entry of this cache directory; returns how many were removed."""
        removed = 0
        if self.directory.is_dir():
            for item in self.directory.iterdir():
                if item.suffix in (SUFFIX, ".tmp") or item.name == "meta.json":
                    item.unlink(missing_ok=True)
                    removed += item.suffix == SUFFIX
        return removed
