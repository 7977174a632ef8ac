"""Feature extraction over a manifest: cached, in-process, failure-tolerant.

``extract_features(manifest, kind, config)`` returns one array per manifest row:

- ``"spectrogram"``: the log spectrogram (frames, n_bins), raw (no level normalisation);
- ``"lld"``: ``llds.frame_llds`` (frames, len(lld_names));
- ``"functionals"``: ``llds.functionals`` of the LLDs (len(functional_names),) -- the LLDs are
  cached on the way, so a later ``"lld"`` extraction is free;
- ``"pitch"``: the pitch channels (frames, 2), which ``extract_for_model`` appends to the
  spectrogram with ``features.pitch_channels``;
- ``"wide_functionals"``: ``features.functionals`` of the waveform (len(FEATURE_NAMES),), what
  the functionals classifier fused with the network reads (``model.functionals_weights``).

Every array comes from the one front end (``features.frontend_ops``: TF ops, the same the
export graph runs), one ``tf.function`` per setting traced once for any length. Misses are
computed in this process, one file after another: TensorFlow's own thread pool uses the
cores, and a pool of worker processes each importing TensorFlow and tracing the functions
again was slower (``bench/features.py`` on 200 EMO-DB files: the LLDs 6x slower with two
workers). A file that fails (``AudioError``: missing, empty, corrupt, not audio; or any other
exception) is reported by path with a one-line message and never costs the other files their
features.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import sys
import typing

import numpy as np

from ser_keras import audio
from ser_keras.config import INPUT_FEATURES, FeatureConfig
from ser_keras.config import cache_root as config_cache_root
from ser_keras.errors import SerKerasError
from ser_keras.features import frontend_ops, functionals, llds
from ser_keras.features.cache import FeatureCache, file_identity
from ser_keras.features.channels import pitch_channel_count

# The feature kinds: what a model reads (model.input_features), the pitch channels and the wide
# functionals.
WIDE_FUNCTIONALS = "wide_functionals"
KINDS = INPUT_FEATURES + ("pitch", WIDE_FUNCTIONALS)


@dataclasses.dataclass
class Extraction:
    """One array per manifest row (None where the file failed) and the failures by path."""

    features: typing.List[typing.Optional[np.ndarray]]
    failures: typing.Dict[str, str]

    def ok(self) -> np.ndarray:
        """Boolean mask of rows that have features."""
        return np.array([f is not None for f in self.features], dtype=bool)


def compute_features(waveform: np.ndarray, kind: str, config, sample_rate: int) -> np.ndarray:
    """Features of `kind` for one waveform (no cache). `config` is a FeatureConfig."""
    if kind == "spectrogram":  # raw: the level normalisation comes after the cache read
        return frontend_ops.raw_features(waveform, frontend_ops.spectrogram_params(config, sample_rate))
    if kind == "lld":
        return frontend_ops.raw_features(waveform, frontend_ops.params_for(config, sample_rate, "lld"))
    if kind == "functionals":
        return llds.functionals(compute_features(waveform, "lld", config, sample_rate), config)
    if kind == "pitch":
        return frontend_ops.pitch_track(waveform, frontend_ops.params_for(config, sample_rate))
    if kind == WIDE_FUNCTIONALS:
        return functionals.extract_functionals(np.asarray(waveform, np.float32)).numpy()
    raise SerKerasError(f"feature kind '{kind}' is not one of {', '.join(KINDS)}")


def default_cache_dir(config) -> pathlib.Path:
    """``cache_root(config.runtime.cache_dir) / "features"``: runtime.cache_dir, $SER_KERAS_CACHE or
    ~/.cache/ser_keras."""
    return config_cache_root(config.runtime.cache_dir) / "features"


def extract_features(manifest, kind: str, config, cache_dir=None, progress: bool = False) -> Extraction:
    """Features of `kind` for every row of `manifest` (a DataFrame with a ``path`` column, or
    a sequence of paths), cached on disk.

    Args:
        manifest: rows to extract, in order.
        kind: one of ``KINDS``.
        config: the full ``Config`` (features, data.sample_rate, data.corpus, runtime.cache_dir).
        cache_dir: cache root; None -> ``default_cache_dir(config)``; False -> no caching.
        progress: show a tqdm progress bar on stderr.

    Returns:
        Extraction(features, failures): ``features[i]`` is the array of row i or None when the
        file failed; ``failures`` maps each failed path to a one-line reason.
    """
    if kind not in KINDS:
        raise SerKerasError(f"feature kind '{kind}' is not one of {', '.join(KINDS)}")
    paths = _paths(manifest)
    if cache_dir is False:
        cache_root = None
    else:
        cache_root = str(cache_dir if cache_dir is not None else default_cache_dir(config))
    spec = _Spec(kind=kind, features=dataclasses.asdict(config.features), sample_rate=int(config.data.sample_rate),
                 corpus=str(config.data.corpus), cache_root=cache_root)
    features: typing.List[typing.Optional[np.ndarray]] = [None] * len(paths)
    failures: typing.Dict[str, str] = {}
    # Duplicate paths are computed once.
    rows_of: typing.Dict[str, list] = {}
    for row, path in enumerate(paths):
        rows_of.setdefault(path, []).append(row)

    cache = spec.cache(kind)
    unique = list(rows_of)
    hits = cache.get_many(unique) if cache is not None else [None] * len(unique)
    misses = []
    for path, array in zip(unique, hits):
        if array is None:
            misses.append(path)
        else:
            _fill(features, rows_of[path], array)
    if cache is not None and misses:
        cache.sweep_temporary()

    from tqdm import tqdm

    bar = tqdm(total=len(rows_of), initial=len(rows_of) - len(misses), desc=f"{kind} features",
               unit="file", file=sys.stderr, disable=not progress)
    try:
        for path in misses:
            array, error = _work(path, spec)
            if error is not None:
                failures[path] = error
            _fill(features, rows_of[path], array)
            bar.update(1)
    finally:
        bar.close()
    return Extraction(features=features, failures=failures)


# ----------------------------------------------------------------------------- internals


def _fill(features: list, rows: list, array) -> None:
    """Rows of a path listed twice get their own copy (no aliasing between rows)."""
    for i, row in enumerate(rows):
        features[row] = array if (i == 0 or array is None) else array.copy()


@dataclasses.dataclass(frozen=True)
class _Spec:
    """What extraction needs of the config, as plain values (a hashable cache key)."""

    kind: str
    features: dict
    sample_rate: int
    corpus: str
    cache_root: typing.Optional[str]

    def feature_config(self):
        return FeatureConfig(**self.features)

    def cache(self, kind: str) -> typing.Optional[FeatureCache]:
        if self.cache_root is None:
            return None
        # repr: some feature settings are lists (unhashable).
        key = (kind, self.cache_root, self.corpus, self.sample_rate, repr(sorted(self.features.items())))
        if key not in _CACHES:  # one FeatureCache per process and setting (hashing the key costs)
            _CACHES[key] = FeatureCache(self.cache_root, self.corpus, kind, self.feature_config(), self.sample_rate)
        return _CACHES[key]


_CACHES: typing.Dict[tuple, FeatureCache] = {}


def _paths(manifest) -> list:
    if hasattr(manifest, "columns"):
        if "path" not in manifest.columns:
            raise SerKerasError("extract_features: the manifest has no 'path' column")
        return [str(p) for p in manifest["path"]]
    if isinstance(manifest, (str, os.PathLike)):
        return [str(manifest)]
    return [str(p) for p in manifest]


def _one_line(path: str, exc: BaseException) -> str:
    if isinstance(exc, SerKerasError):
        message = str(exc)
    else:
        message = f"{path}: {type(exc).__name__}: {exc}"
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return lines[0] if lines else f"{path}: {type(exc).__name__}"


def _work(path: str, spec: _Spec) -> tuple:
    """Compute (and cache) the features of `path`: (array or None, error or None)."""
    config = spec.feature_config()
    cache = spec.cache(spec.kind)
    lld_cache = spec.cache("lld") if spec.kind == "functionals" else None
    try:
        identity = None
        try:
            identity = file_identity(path)
        except OSError:
            pass  # load_audio raises the user-facing error
        frame_llds = lld_cache.get(path, identity) if (lld_cache is not None and identity) else None
        if frame_llds is not None:
            array = llds.functionals(frame_llds, config)
        else:
            waveform = audio.load_audio(path, spec.sample_rate)
            if spec.kind == "functionals":
                frame_llds = compute_features(waveform, "lld", config, spec.sample_rate)
                array = llds.functionals(frame_llds, config)
                if lld_cache is not None and identity:
                    _store(lld_cache, path, frame_llds, identity)
            else:
                array = compute_features(waveform, spec.kind, config, spec.sample_rate)
        if cache is not None and identity:
            _store(cache, path, array, identity)
        return array, None
    except Exception as exc:  # noqa: BLE001 - one bad file must not cost the others
        return None, _one_line(path, exc)


def _store(cache: FeatureCache, path: str, array: np.ndarray, identity: tuple) -> None:
    """Write a cache entry; a full or read-only disk costs speed next time, not this result."""
    try:
        if file_identity(path) == identity:  # the file did not change while we read it
            cache.put(path, array, identity)
    except OSError:
        pass


def extract_for_model(config, manifest, progress: bool) -> tuple:
    """(features per manifest row or None, failures {path: message}) of what the model reads
    (``model.input_features``); spectrograms level-normalised when
    ``features.level_normalization`` is on, functionals as ``(1, D)`` rows. A file left out is
    never silent: named with `progress`, one line on stderr without."""
    kind = config.model.input_features
    extraction = extract_features(manifest, kind, config, progress=progress)
    features = list(extraction.features)
    failures = dict(extraction.failures)
    if kind == "spectrogram":  # after the cache read: the cache holds the raw spectrograms
        features = frontend_ops.level_normalized(features, config.features)
        if pitch_channel_count(config.features):
            features = _with_pitch(features, failures, manifest, config, progress)
    if kind == "functionals":  # (D,) vectors -> (1, D) so they normalise like frame features
        features = [None if f is None else np.asarray(f, np.float32).reshape(1, -1) for f in features]
    if failures and progress:
        print(f"feature extraction failed for {len(failures)} file(s); they are left out:")
        for path, message in list(failures.items())[:10]:
            print(f"  {path}: {message}")
    elif failures:
        path, message = next(iter(failures.items()))
        more = f" (and {len(failures) - 1} more, listed in results.json feature_failures)" if len(failures) > 1 else ""
        print(f"feature extraction failed for {len(failures)} file(s), left out: {path}: {message}{more}",
              file=sys.stderr, flush=True)
    if all(f is None for f in features):
        raise SerKerasError(f"corpus '{config.data.corpus}': feature extraction failed for every file")
    return features, failures


def _with_pitch(features: list, failures: dict, manifest, config, progress: bool) -> list:
    """Each spectrogram with its pitch channels appended (None where either failed; a pitch
    failure is added to `failures`)."""
    extraction = extract_features(manifest, "pitch", config, progress=progress)
    for path, message in extraction.failures.items():
        failures.setdefault(path, message)
    out = []
    for x, channels in zip(features, extraction.features):
        if x is None or channels is None:
            out.append(None)
            continue
        if channels.shape[0] != x.shape[0]:  # one frame grid by construction
            raise SerKerasError(f"pitch channels have {channels.shape[0]} frames, the spectrogram {x.shape[0]}")
        out.append(np.concatenate([x, channels.astype(x.dtype)], axis=1))
    return out


def extract_wide_functionals(config, manifest, progress: bool) -> tuple:
    """((rows, len(FEATURE_NAMES)) wide functionals of every manifest row, cached on disk, NaN
    rows where a file failed; the failures {path: message})."""
    extraction = extract_features(manifest, WIDE_FUNCTIONALS, config, progress=progress)
    out = np.full((len(extraction.features), len(functionals.FEATURE_NAMES)), np.nan, np.float32)
    for row, array in enumerate(extraction.features):
        if array is not None:
            out[row] = array
    return out, dict(extraction.failures)
