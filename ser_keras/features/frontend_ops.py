"""THE front end: waveform -> model input, in TensorFlow ops, for extraction, training,
``evaluate``, ``predict`` and the export graph alike.

1. frames of ``frame = round(frame_ms * sr / 1000)`` samples every ``hop`` samples, a
   waveform shorter than one frame zero-padded to one (``features.spectrogram``);
2. the raw features of ``kind``: ``"spectrogram"``, the log-power spectrogram
   (``spectrogram.log_spectrogram``), with ``level_normalization`` minus the recording's level
   reference (``features.level``), with ``pitch_channels`` log F0 and voicing appended
   (``features.pitch``), ``n_bins + 2`` columns; ``"lld"``, exp1/exp2's LLDs
   (``features.llds.frame_llds``);
3. ``(x - mean) / std`` per dimension (``standardize``): by default with the training fold's
   pooled statistics (``norm_mean``/``norm_std``), or with statistics given by the caller
   (``stats=``: a speaker's, from all of their frames by ``frame_moments`` / ``mean_std``
   exactly as ``features.normalize.frame_stats`` does, std floored at ``std_floor``);
3b. with ``test_warp_factors``: the test-time views, the normalised log-power bins times each
   factor's warp matrix (``features.augment.warp_matrix``), the plain frames first;
4. ``(x - pca_mean) @ pca_components`` of every view (``project``), the views side by side on
   the last axis (``[..., views * k]``; ``split_views`` takes them apart). The graph does 3b
   and 4 in one product (``FrontEndParams.view_projection``: the warps are linear).

The fitted statistics (``features.frontend.FittedFrontEnd``: fitted in NumPy) are data handed
to these ops: ``FrontEndParams`` holds them as arrays, the export bakes them in as constants.
``raw_features`` runs step 2 on one NumPy waveform through one ``tf.function`` per setting
(any length, traced once), which is what extraction and ``predict`` call.
"""

from __future__ import annotations

import dataclasses
import functools
import typing

import numpy as np

from ser_keras.errors import SerKerasError
from ser_keras.features import level, llds, spectrogram
from ser_keras.features.augment import check_factors, warp_matrix
from ser_keras.features.channels import PITCH_CHANNELS
from ser_keras.features.pitch import tf_pitch_channels

KINDS = ("spectrogram", "lld")


@dataclasses.dataclass(frozen=True)
class FrontEndParams:
    """Everything the waveform -> model-input transform needs, as plain numbers and arrays.

    Attributes:
        kind: "spectrogram" (exp3-5) or "lld" (exp1/exp2's LLDs).
        input_dim: feature dimension before PCA (n_bins, n_bins + 2 with pitch channels, or
            the LLD count).
        sample_rate: Hz of the waveform the front end takes.
        frame, hop: frame length and hop in samples.
        n_fft: FFT length (the windowed frame is zero-padded to it).
        n_bins: number of low-frequency bins kept.
        log_floor: added to the power before the log.
        norm_mean, norm_std: ``(input_dim,)`` pooled statistics, or None (no normalisation).
        pca_mean: ``(input_dim,)`` or None (no PCA).
        pca_components: ``(input_dim, k)`` or None (no PCA).
        std_floor: lower bound of every standard deviation computed from frames (a speaker's).
        level_normalization: subtract each recording's level reference (``features.level``).
        level_floor_db: with it, raise every cell more than this many dB below the reference to
            that level; None: no such floor.
        speech_threshold_dbfs, speech_min_contrast_db, speech_min_ms: speech detection.
        pitch_channels: append log F0 and voicing to every spectrogram frame.
        f0_min_hz, f0_max_hz, voicing_threshold: YIN's F0 range and dip threshold.
        n_mels, n_mfcc, lpc_order, pre_emphasis: the LLDs' MFCC and formant settings.
        test_warp_factors: the test-time views' warp factors (spectrogram only); ().
    """

    kind: str
    input_dim: int
    sample_rate: int
    frame: int
    hop: int
    n_fft: int
    n_bins: int
    log_floor: float
    norm_mean: typing.Optional[np.ndarray] = None
    norm_std: typing.Optional[np.ndarray] = None
    pca_mean: typing.Optional[np.ndarray] = None
    pca_components: typing.Optional[np.ndarray] = None
    std_floor: float = 1e-3
    level_normalization: bool = False
    level_floor_db: typing.Optional[float] = None
    speech_threshold_dbfs: float = -70.0
    speech_min_contrast_db: float = 3.0
    speech_min_ms: float = 100.0
    pitch_channels: bool = False
    f0_min_hz: float = 60.0
    f0_max_hz: float = 500.0
    voicing_threshold: float = 0.3
    n_mels: int = 26
    n_mfcc: int = 13
    lpc_order: int = 18
    pre_emphasis: float = 0.97
    test_warp_factors: tuple = ()

    @property
    def output_dim(self) -> int:
        """The model's input dimension (one view)."""
        if self.pca_components is not None:
            return int(self.pca_components.shape[1])
        return int(self.input_dim)

    @property
    def n_views(self) -> int:
        return 1 + len(self.test_warp_factors)

    def view_projection(self) -> tuple:
        """``view_projection`` of this front end's PCA and views."""
        if self.pca_components is None:  # views are for spectrogram models, which have a PCA
            raise SerKerasError("test-time views need the front end's PCA")
        return view_projection(self.pca_mean, self.pca_components, self.n_bins, self.test_warp_factors)

    def frame_count(self, n_samples: int) -> int:
        """Frames the front end makes of ``n_samples`` samples (at least one)."""
        return 1 + (max(int(n_samples), self.frame) - self.frame) // self.hop

    def setting(self) -> tuple:
        """The settings of the raw features (no fitted arrays): a hashable key."""
        return tuple((f.name, getattr(self, f.name)) for f in dataclasses.fields(self)
                     if f.name not in ("norm_mean", "norm_std", "pca_mean", "pca_components"))


def view_projection(pca_mean, pca_components, n_bins: int, factors) -> tuple:
    """(W ``(D, n_views * k)``, offset ``(n_views * k,)``), float64, with ``x @ W - offset``
    equal to every view's ``(view - pca_mean) @ pca_components`` side by side, the plain view
    first: a view warps the first `n_bins` columns of the normalised frames by
    ``augment.warp_matrix(n_bins, factor)`` and keeps the rest (the pitch channels). The warp is
    linear, so a view's PCA is one product with ``M @ pca_components``."""
    pca_components = np.asarray(pca_components, np.float64)
    blocks = [pca_components]
    for factor in factors:
        warped = np.array(pca_components)
        warped[:n_bins] = warp_matrix(n_bins, factor) @ pca_components[:n_bins]
        blocks.append(warped)
    offset = np.asarray(pca_mean, np.float64) @ pca_components
    return np.concatenate(blocks, axis=1), np.tile(offset, len(blocks))


def _optional(stats, key) -> typing.Optional[np.ndarray]:
    if key not in stats:
        return None
    value = np.asarray(stats[key])
    if value.size == 0 or value.dtype == object:
        return None
    return value.astype(np.float64)


def params_from_arrays(feature_config, stats: typing.Mapping, sample_rate: typing.Optional[int] = None,
                       kind: str = "spectrogram", source: str = "front-end arrays",
                       std_floor: typing.Optional[float] = None) -> FrontEndParams:
    """FrontEndParams from a FeatureConfig and a fold's front-end serving arrays
    (``features.frontend.FittedFrontEnd.serving_arrays``, or a dict of them; ``{}`` for the raw
    features alone).

    Missing or empty ``norm_*`` / ``pca_*`` entries mean that step is skipped. ``std_floor``:
    see ``FrontEndParams`` (default ``features.norm_std_floor``).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    std_floor = float(getattr(feature_config, "norm_std_floor", 1e-3) if std_floor is None else std_floor)
    if not std_floor > 0:
        raise SerKerasError(f"features.norm_std_floor: must be positive, got {std_floor}")
    if sample_rate is None:
        if "sample_rate" not in stats:
            raise SerKerasError(f"{source}: no 'sample_rate' entry and none given")
        sample_rate = int(np.asarray(stats["sample_rate"]))
    frame, hop = spectrogram.check_fft(feature_config, sample_rate)
    norm_mean, norm_std = _optional(stats, "norm_mean"), _optional(stats, "norm_std")
    pca_mean, pca_components = _optional(stats, "pca_mean"), _optional(stats, "pca_components")
    n_bins = int(feature_config.n_bins)
    # Only the spectrogram carries pitch channels (the LLDs have F0 columns of their own).
    pitch = bool(getattr(feature_config, "pitch_channels", False)) and kind == "spectrogram"
    if kind == "spectrogram":
        dim = n_bins + (len(PITCH_CHANNELS) if pitch else 0)
    else:
        dim = len(llds.lld_names(feature_config))
    for name, value in (("norm_mean", norm_mean), ("norm_std", norm_std), ("pca_mean", pca_mean)):
        if value is not None and value.shape != (dim,):
            raise SerKerasError(f"{source}: '{name}' has shape {value.shape}, expected ({dim},)")
    if pca_components is not None and (pca_components.ndim != 2 or pca_components.shape[0] != dim):
        raise SerKerasError(f"{source}: 'pca_components' has shape {pca_components.shape}, "
                            f"expected ({dim}, k)")
    if (norm_mean is None) != (norm_std is None):
        raise SerKerasError(f"{source}: needs both 'norm_mean' and 'norm_std' or neither")
    if (pca_mean is None) != (pca_components is None):
        raise SerKerasError(f"{source}: needs both 'pca_mean' and 'pca_components' or neither")
    if (pca_components is not None and pca_components.shape[0] == pca_components.shape[1]
            and np.array_equal(pca_components, np.eye(dim)) and not np.any(pca_mean)):
        pca_mean = pca_components = None  # an identity "PCA" (exp2): skip the matmul
    if norm_std is not None and not np.all(norm_std > 0):
        raise SerKerasError(f"{source}: 'norm_std' holds zero or negative values")
    return FrontEndParams(
        kind=kind, input_dim=dim, sample_rate=int(sample_rate), frame=frame, hop=hop,
        n_fft=int(feature_config.n_fft), n_bins=n_bins, log_floor=float(feature_config.log_floor),
        norm_mean=norm_mean, norm_std=norm_std, pca_mean=pca_mean, pca_components=pca_components,
        std_floor=std_floor,
        # Only the spectrogram has a log-power level to remove (the LLDs ignore the flag).
        level_normalization=bool(getattr(feature_config, "level_normalization", False)) and kind == "spectrogram",
        level_floor_db=(None if getattr(feature_config, "level_floor_db", None) is None
                        else float(feature_config.level_floor_db)),
        speech_threshold_dbfs=float(feature_config.speech_threshold_dbfs),
        speech_min_contrast_db=float(feature_config.speech_min_contrast_db),
        speech_min_ms=float(feature_config.speech_min_ms),
        pitch_channels=pitch, f0_min_hz=float(feature_config.f0_min_hz),
        f0_max_hz=float(feature_config.f0_max_hz), voicing_threshold=float(feature_config.voicing_threshold),
        n_mels=int(feature_config.n_mels), n_mfcc=int(feature_config.n_mfcc),
        lpc_order=int(feature_config.lpc_order), pre_emphasis=float(feature_config.pre_emphasis),
        # Views warp the spectrogram's bins (the config refuses them for LLD input).
        test_warp_factors=tuple(check_factors(getattr(feature_config, "test_warp_factors", []), "test_warp_factors"))
        if kind == "spectrogram" else (),
    )


def split_views(features, n_views: int) -> list:
    """The views of front-end output ``[..., n_views * k]`` as a list of ``[..., k]`` arrays or
    tensors, the plain view first."""
    if n_views == 1:
        return [features]
    k = features.shape[-1] // n_views
    return [features[..., i * k:(i + 1) * k] for i in range(n_views)]


# ------------------------------------------------------------------- normalisation and PCA


def standardize(x, mean, std):
    """``(x - mean) / std``, float32 out; ``mean``/``std`` ``[D]`` or ``[batch, D]`` for ``x``
    ``[batch, T, D]``. In float64 only for float64 ``x`` (NumPy callers, whose values may differ
    below float32's resolution): the serving graph's float32 features stay float32 (LiteRT runs
    no float64)."""
    import tensorflow as tf

    x = tf.convert_to_tensor(x)
    dtype = tf.float64 if x.dtype == tf.float64 else tf.float32
    # NumPy statistics become constants of `dtype` directly (no float64 constant in the graph).
    mean, std = (tf.cast(v, dtype) if tf.is_tensor(v) else tf.constant(np.asarray(v), dtype) for v in (mean, std))
    if mean.shape.rank == 2:
        mean, std = mean[:, None, :], std[:, None, :]
    return tf.cast((tf.cast(x, dtype) - mean) / std, tf.float32)


def project(x, mean, weights, offset=None):
    """``(x - mean) @ weights - offset`` of ``[..., D]`` float32 features, as one 2-D product
    (the fastest form on CPU); `mean` / `offset` None: nothing subtracted."""
    import tensorflow as tf

    x = tf.convert_to_tensor(x, tf.float32)
    shape = tf.shape(x)
    flat = tf.reshape(x, [-1, shape[-1]])
    if mean is not None:
        flat = flat - tf.constant(np.asarray(mean, np.float32))
    flat = tf.linalg.matmul(flat, tf.constant(np.asarray(weights, np.float32)))
    if offset is not None:
        flat = flat - tf.constant(np.asarray(offset, np.float32))
    return tf.reshape(flat, tf.concat([shape[:-1], [int(np.shape(weights)[1])]], 0))


def pca_weights(params: FrontEndParams) -> typing.Optional[tuple]:
    """(mean, weights, offset) of every view's PCA for ``project``, or None without a PCA.
    Several views: every view's warp and PCA folded into one matrix (``view_projection``): one
    product, and a (D, views * k) constant in the graph instead of a (bins, bins) one per view."""
    if params.n_views > 1:
        weights, offset = params.view_projection()
        return None, weights, offset
    if params.pca_components is not None:
        return params.pca_mean, params.pca_components, None
    return None


def apply_stats(features, params: FrontEndParams, stats=None):
    """Normalisation and PCA of ``[batch, T, input_dim]`` raw features. `stats`: None (the
    pooled statistics) or (mean, std) ``[batch, D]`` or ``[D]``."""
    if stats is None and params.norm_mean is not None:
        stats = (params.norm_mean, params.norm_std)
    import tensorflow as tf

    x = tf.convert_to_tensor(features, tf.float32) if stats is None else standardize(features, *stats)
    weights = pca_weights(params)
    return x if weights is None else project(x, *weights)


def frame_moments(raw, n_frames):
    """(count [B], sum [B, D], sum of squares [B, D]), float64, of each row's first
    ``n_frames[b]`` frames of ``raw`` ``[B, T, D]`` (the un-normalised features)."""
    import tensorflow as tf

    valid = tf.sequence_mask(n_frames, tf.shape(raw)[1], dtype=tf.float64)[:, :, None]
    x = tf.cast(raw, tf.float64) * valid
    return tf.reduce_sum(valid, axis=[1, 2]), tf.reduce_sum(x, axis=1), tf.reduce_sum(x * x, axis=1)


def mean_std(count, total, squares, std_floor: float):
    """Mean and floored std from moments (float64; the formula of ``features.normalize``);
    works per row (``count`` ``[B]``) or for one set (``count`` a scalar)."""
    import tensorflow as tf

    count = tf.maximum(tf.cast(count, tf.float64), 1.0)
    if count.shape.rank == 1:
        count = count[:, None]
    mean = total / count
    variance = tf.maximum(squares / count - mean * mean, 0.0)
    return mean, tf.maximum(tf.sqrt(variance), tf.constant(std_floor, tf.float64))


# ---------------------------------------------------------------------------- raw features


def _raw(x, n_frames, params: FrontEndParams):
    import tensorflow as tf

    if params.kind == "lld":
        return llds.frame_llds(x, n_frames, params)
    raw = spectrogram.log_spectrogram(x, params)
    if params.level_normalization:
        raw = level.level_normalize(raw, n_frames, params.level_floor_db)
    if params.pitch_channels:  # after the level normalisation, which they skip
        raw = tf.concat([raw, tf_pitch_channels(x, n_frames, params)], axis=2)
    return raw


def _valid_frames(inputs, params: FrontEndParams, n_frames):
    """`n_frames` as int32 ``[batch]``, or every row's full frame count when None."""
    import tensorflow as tf

    if n_frames is not None:
        return tf.cast(n_frames, tf.int32)
    shape = tf.shape(inputs)
    return level.frame_counts(tf.fill([shape[0]], shape[1]), params)


def _by_row(function, inputs, n_frames, dim: int, per_row: bool):
    """``function(inputs, n_frames)`` of the whole batch, or (``per_row``) of one row at a time
    (``tf.map_fn``): the same numbers, but the frame/FFT intermediates of one row stay in the
    CPU caches, where a whole batch's (32 x 10 s: ~300 MB of complex spectra) would not —
    5-10x faster for large batches without XLA. (XLA fuses the steps and needs no such help.)"""
    import tensorflow as tf

    if not per_row or inputs.shape[0] == 1:  # one row (the LiteRT model's trace) needs no loop
        return function(inputs, n_frames)

    def rows(x, n):
        return tf.map_fn(lambda row: function(row[0][None], row[1][None])[0], (x, n),
                         fn_output_signature=tf.TensorSpec([None, dim], tf.float32),
                         parallel_iterations=2)

    # One row needs no loop around it (a batch of one known only when the graph runs).
    return tf.cond(tf.shape(inputs)[0] <= 1, lambda: function(inputs, n_frames), lambda: rows(inputs, n_frames))


def tf_raw_features(inputs, params: FrontEndParams, per_row: bool = False, n_frames=None):
    """Features ``(batch, frames, input_dim)`` of a zero-padded ``(batch, samples)`` waveform
    before the per-dimension normalisation (step 2), each row's first ``n_frames[b]`` frames
    (default all) valid."""
    return _by_row(lambda x, n: _raw(x, n, params), inputs, _valid_frames(inputs, params, n_frames),
                   params.input_dim, per_row)


def tf_frontend(inputs, params: FrontEndParams, per_row: bool = False, stats=None, n_frames=None):
    """Model input ``(batch, frames, views * k)`` from a ``(batch, samples)`` float32 waveform.

    Normalisation: by `stats` (mean, std: ``[D]`` or ``[batch, D]``) when given, else by the
    pooled statistics. ``per_row=True``: one batch row at a time (see ``_by_row``). `n_frames`
    ``[batch]``: the valid frames of each zero-padded row; None: every frame is valid.
    """
    if stats is None:
        return _by_row(lambda x, n: apply_stats(_raw(x, n, params), params), inputs,
                       _valid_frames(inputs, params, n_frames), params.n_views * params.output_dim, per_row)
    return apply_stats(tf_raw_features(inputs, params, per_row, n_frames), params, stats)


# ------------------------------------------------------------------- NumPy in, NumPy out


def params_for(feature_config, sample_rate: int, kind: str = "spectrogram") -> FrontEndParams:
    """The parameters of the raw features alone (no fitted statistics)."""
    return params_from_arrays(feature_config, {}, sample_rate=sample_rate, kind=kind)


def spectrogram_params(feature_config, sample_rate: int) -> FrontEndParams:
    """The parameters of the plain log spectrogram (no level normalisation, no pitch channels):
    what the feature cache holds and ``predict --plot`` draws."""
    return dataclasses.replace(params_for(feature_config, sample_rate), level_normalization=False,
                               pitch_channels=False, input_dim=int(feature_config.n_bins))


@functools.lru_cache(maxsize=16)
def _compiled(setting: tuple, what: str):
    """One ``tf.function`` per setting and output, for a waveform of any length (traced once)."""
    import tensorflow as tf

    params = FrontEndParams(**dict(setting))

    def run(waveform):
        batch = waveform[None]
        n_frames = level.frame_counts(tf.shape(batch)[1:2], params)
        if what == "pitch":
            return tf_pitch_channels(batch, n_frames, params)[0]
        if what == "speech":
            return level.speech_flags(batch, tf.shape(batch)[1:2], params)[0]
        return _raw(batch, n_frames, params)[0]

    return tf.function(run, input_signature=[tf.TensorSpec([None], tf.float32)], reduce_retracing=True)


def _run(params: FrontEndParams, what: str, waveform: np.ndarray) -> np.ndarray:
    waveform = np.asarray(waveform, np.float32).reshape(-1)
    return _compiled(params.setting(), what)(waveform).numpy()


def raw_features(waveform: np.ndarray, params: FrontEndParams) -> np.ndarray:
    """Step 2 of one mono waveform: ``(frames, input_dim)`` float32."""
    return _run(params, "raw", waveform)


def pitch_track(waveform: np.ndarray, params: FrontEndParams) -> np.ndarray:
    """The pitch channels ``(frames, 2)`` [log F0, voicing] of one mono waveform."""
    return _run(params, "pitch", waveform)


def has_speech(waveform: np.ndarray, params: FrontEndParams) -> bool:
    """Whether one mono waveform holds speech (``features.level``)."""
    return bool(_run(params, "speech", waveform))


def standardize_each(features: list, stats: list) -> list:
    """``standardize`` of each ``(frames, D)`` array with its (mean, std), one TF call per
    distinct statistics (a speaker's utterances together)."""
    out = [None] * len(features)
    groups: typing.Dict[int, list] = {}
    for i, (mean, _std) in enumerate(stats):
        groups.setdefault(id(mean), []).append(i)
    for rows in groups.values():
        mean, std = stats[rows[0]]
        joined = np.concatenate([features[i] for i in rows])
        done = standardize(joined[None], mean, std).numpy()[0]
        for i, part in zip(rows, np.split(done, np.cumsum([features[i].shape[0] for i in rows])[:-1])):
            out[i] = part
    return out


def project_each(features: list, mean, weights, offset=None) -> list:
    """``project`` of each ``(frames, D)`` array (one TF call for all of them)."""
    if not features:
        return []
    done = project(np.concatenate(features), mean, weights, offset).numpy()
    return np.split(done, np.cumsum([x.shape[0] for x in features])[:-1])


def level_normalized(features: list, feature_config) -> list:
    """`features` (``(frames, bins)`` raw log spectrograms, None where extraction failed),
    level-normalised when ``feature_config.level_normalization`` is on, else as they are."""
    if not getattr(feature_config, "level_normalization", False):
        return features
    normalize = _level_function(getattr(feature_config, "level_floor_db", None))
    return [None if x is None else normalize(np.asarray(x, np.float32)).numpy() for x in features]


@functools.lru_cache(maxsize=4)
def _level_function(floor_db):
    """``level.level_normalize`` of one ``(frames, bins)`` spectrogram, traced once."""
    import tensorflow as tf

    def run(x):
        return level.level_normalize(x[None], tf.shape(x)[:1], floor_db)[0]

    return tf.function(run, input_signature=[tf.TensorSpec([None, None], tf.float32)])
