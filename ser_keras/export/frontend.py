"""The front end as TensorFlow ops: the exact twin of the NumPy feature pipeline.

``ser_keras.features.spectrogram.log_spectrogram`` followed by the global neutral
normalisation and the frame PCA, written with TensorFlow ops so that a SavedModel can take a
raw waveform. The definitions are the same, step by step:

1. a waveform shorter than one frame is zero-padded to one frame;
2. frames of ``frame = round(frame_ms * sr / 1000)`` samples every
   ``hop = round(hop_ms * sr / 1000)`` samples, no centring, no end padding, so
   ``frames = 1 + (n - frame) // hop``;
3. each frame times a periodic Hann window of length ``frame``, zero-padded to ``n_fft``;
4. power ``|rfft|^2``, the first ``n_bins`` bins, ``log(power + log_floor)``;
4b. with ``level_normalization``: minus the recording's level reference (the mean log power of
   its loudest fifth of valid frames; ``features.level``), so its gain does not matter;
4c. with ``pitch_channels``: log F0 and voicing (``features.pitch``; their twin is
   ``export.pitch.tf_pitch_channels``) appended to every frame, ``n_bins + 2`` columns;
5. ``(x - mean) / std`` per dimension: by default with the training fold's pooled statistics
   (``norm_mean``/``norm_std``), or with statistics given by the caller (``stats=``: a
   speaker's, computed from all of their frames by ``tf_frame_moments`` / ``tf_mean_std``
   exactly as ``features.normalize.frame_stats`` does, std floored at ``std_floor``);
5b. with ``test_warp_factors``: the test-time views, the normalised log-power bins times each
   factor's warp matrix (``features.augment.warped_views``), the plain frames first;
6. ``(x - pca_mean) @ pca_components`` of every view, the views side by side on the last axis
   (``[..., views * k]``; ``split_views`` takes them apart, ``n_views`` of them). The graph
   does 5b and 6 in one product (``FrontEndParams.view_projection``: the warps are linear).

``tf_speech_flags`` is the twin of ``features.level.has_speech`` (the export's ``speech`` output).

The statistics are baked into the graph as constants (``FrontEndParams`` holds them as NumPy
arrays); nothing here needs ser_keras at serving time.
"""

from __future__ import annotations

import dataclasses
import typing

import numpy as np

from ser_keras.errors import SerKerasError
from ser_keras.export.pitch import tf_pitch_channels
from ser_keras.features.augment import check_factors, warp_matrix, warped_views
from ser_keras.features.level import TOP_FRACTION_DENOMINATOR, relative_floor
from ser_keras.features.pitch import PITCH_CHANNELS


@dataclasses.dataclass(frozen=True)
class FrontEndParams:
    """Everything the waveform -> model-input transform needs, as plain numbers and arrays.

    Attributes:
        kind: "spectrogram" (exp3/exp4: the whole front end runs in the graph) or "lld"
            (exp2: the LLDs are computed outside the graph; only the normalisation is in it).
        input_dim: feature dimension before PCA (n_bins, n_bins + 2 with pitch channels, or
            the LLD count).
        sample_rate: Hz of the waveform the front end takes.
        frame: frame length in samples.
        hop: hop in samples.
        n_fft: FFT length (the windowed frame is zero-padded to it).
        n_bins: number of low-frequency bins kept.
        log_floor: added to the power before the log.
        norm_mean, norm_std: ``(input_dim,)`` global neutral statistics, or None (no
            normalisation).
        pca_mean: ``(input_dim,)`` or None (no PCA).
        pca_components: ``(input_dim, k)`` or None (no PCA).
        std_floor: lower bound of every standard deviation computed from frames (a speaker's).
        level_normalization: subtract each recording's level reference (``features.level``)
            from its log spectrogram before the normalisation.
        level_floor_db: with it, raise every cell more than this many dB below the reference to
            that level (``features.level.level_normalize``); None: no such floor.
        speech_threshold_dbfs, speech_min_contrast_db, speech_min_ms: speech detection
            (``features.level.has_speech``).
        pitch_channels: append log F0 and voicing to every spectrogram frame
            (``features.pitch``), after the level normalisation of the bins.
        f0_min_hz, f0_max_hz, voicing_threshold: YIN's F0 range and dip threshold
            (``features.llds.yin``), for the pitch channels.
        test_warp_factors: the test-time views' warp factors (``features.test_warp_factors``;
            spectrogram only); () scores the recording as it is.
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

    def warp_matrices(self) -> list:
        return [warp_matrix(self.n_bins, factor) for factor in self.test_warp_factors]

    def view_projection(self) -> tuple:
        """(W ``(input_dim, n_views * k)``, offset ``(n_views * k,)``), float64, with
        ``x @ W - offset`` equal to every view's ``(view - pca_mean) @ pca_components`` side by
        side: the warp is linear, so a view's PCA is one product with ``M @ pca_components``
        (the warp acting on the bins, the pitch columns unchanged)."""
        if self.pca_components is None:  # views are for spectrogram models, which have a PCA
            raise SerKerasError("test-time views need the front end's PCA")
        blocks = [self.pca_components]
        for matrix in self.warp_matrices():
            warped = np.array(self.pca_components, dtype=np.float64)
            warped[:self.n_bins] = matrix @ self.pca_components[:self.n_bins]
            blocks.append(warped)
        offset = self.pca_mean @ self.pca_components
        return np.concatenate(blocks, axis=1), np.tile(offset, len(blocks))

    def frame_count(self, n_samples: int) -> int:
        """Frames the front end makes of ``n_samples`` samples (at least one)."""
        return 1 + (max(int(n_samples), self.frame) - self.frame) // self.hop


def frame_geometry(feature_config, sample_rate: int) -> tuple:
    """(frame, hop) in samples, rounded exactly as the NumPy front end rounds them."""
    frame = int(round(feature_config.frame_ms * sample_rate / 1000.0))
    hop = int(round(feature_config.hop_ms * sample_rate / 1000.0))
    return frame, hop


def _optional(stats, key) -> typing.Optional[np.ndarray]:
    if key not in stats:
        return None
    value = np.asarray(stats[key])
    if value.size == 0 or value.dtype == object:
        return None
    return value.astype(np.float64)


def params_from_arrays(feature_config, stats: typing.Mapping, sample_rate: typing.Optional[int] = None,
                       kind: str = "spectrogram", input_dim: typing.Optional[int] = None,
                       source: str = "front-end arrays", std_floor: float = 1e-3) -> FrontEndParams:
    """FrontEndParams from a FeatureConfig and a fold's front-end serving arrays
    (``features.frontend.FittedFrontEnd.serving_arrays``, or a dict of them).

    Missing or empty ``norm_*`` / ``pca_*`` entries mean that step is skipped. ``input_dim``
    is the feature dimension before PCA: ``n_bins`` for the spectrogram (the default; plus
    ``len(PITCH_CHANNELS)`` with ``features.pitch_channels``), the LLD count for ``kind="lld"``
    (then taken from ``norm_mean`` when not given).
    ``std_floor``: see ``FrontEndParams`` (``features.norm_std_floor``).
    """
    if kind not in ("spectrogram", "lld"):
        raise ValueError(f"kind must be 'spectrogram' or 'lld', got {kind!r}")
    if not std_floor > 0:
        raise SerKerasError(f"features.norm_std_floor: must be positive, got {std_floor}")
    if sample_rate is None:
        if "sample_rate" not in stats:
            raise SerKerasError(f"{source}: no 'sample_rate' entry and none given")
        sample_rate = int(np.asarray(stats["sample_rate"]))
    frame, hop = frame_geometry(feature_config, sample_rate)
    if feature_config.n_bins > feature_config.n_fft // 2 + 1:
        raise SerKerasError(f"features.n_bins={feature_config.n_bins} exceeds n_fft//2+1 "
                            f"({feature_config.n_fft // 2 + 1})")
    if frame > feature_config.n_fft:
        raise SerKerasError(f"features: a frame of {frame} samples does not fit n_fft={feature_config.n_fft}")
    norm_mean, norm_std = _optional(stats, "norm_mean"), _optional(stats, "norm_std")
    pca_mean, pca_components = _optional(stats, "pca_mean"), _optional(stats, "pca_components")
    n_bins = int(feature_config.n_bins)
    # Only the spectrogram carries pitch channels (exp2's LLDs have F0 columns of their own).
    pitch = bool(getattr(feature_config, "pitch_channels", False)) and kind == "spectrogram"
    if kind == "spectrogram":
        dim = n_bins + (len(PITCH_CHANNELS) if pitch else 0)
    elif input_dim is not None:
        dim = int(input_dim)
    elif norm_mean is not None:
        dim = int(norm_mean.shape[0])
    else:
        raise SerKerasError(f"{source}: LLD front end needs 'norm_mean' or an explicit input_dim")
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
        n_fft=int(feature_config.n_fft),
        n_bins=n_bins, log_floor=float(feature_config.log_floor),
        norm_mean=norm_mean, norm_std=norm_std, pca_mean=pca_mean, pca_components=pca_components,
        std_floor=float(std_floor),
        # Only the spectrogram has a log-power level to remove (exp2's LLDs ignore the flag).
        level_normalization=bool(getattr(feature_config, "level_normalization", False)) and kind == "spectrogram",
        level_floor_db=(None if getattr(feature_config, "level_floor_db", None) is None
                        else float(feature_config.level_floor_db)),
        speech_threshold_dbfs=float(feature_config.speech_threshold_dbfs),
        speech_min_contrast_db=float(feature_config.speech_min_contrast_db),
        speech_min_ms=float(feature_config.speech_min_ms),
        pitch_channels=pitch, f0_min_hz=float(feature_config.f0_min_hz),
        f0_max_hz=float(feature_config.f0_max_hz), voicing_threshold=float(feature_config.voicing_threshold),
        # Views warp the spectrogram's bins (the config refuses them for LLD input).
        test_warp_factors=tuple(check_factors(getattr(feature_config, "test_warp_factors", []), "test_warp_factors"))
        if kind == "spectrogram" else (),
    )


# --------------------------------------------------------------------------------------------
# NumPy side (used by predict for run directories; the reference the TF graph is tested against)
# --------------------------------------------------------------------------------------------


def apply_stats_numpy(features: np.ndarray, params: FrontEndParams, stats=None) -> np.ndarray:
    """Normalisation, the test-time views and PCA of a ``(frames, input_dim)`` array, in NumPy:
    float32 ``(frames, n_views * output_dim)``, the views side by side (``split_views``).

    `stats`: (mean, std) to normalise with (a speaker's); None: the pooled statistics.
    """
    x = np.asarray(features, dtype=np.float64)
    if stats is not None:
        x = (x - np.asarray(stats[0], np.float64)) / np.asarray(stats[1], np.float64)
    elif params.norm_mean is not None:
        x = (x - params.norm_mean) / params.norm_std
    views = warped_views(x, params.n_bins, params.warp_matrices())
    if params.pca_components is not None:
        views = [(view - params.pca_mean) @ params.pca_components for view in views]
    return np.concatenate(views, axis=-1).astype(np.float32)


def split_views(features, n_views: int) -> list:
    """The views of front-end output ``[..., n_views * k]`` (``apply_stats_numpy``,
    ``tf_frontend``) as a list of ``[..., k]`` arrays or tensors, the plain view first."""
    if n_views == 1:
        return [features]
    k = features.shape[-1] // n_views
    return [features[..., i * k:(i + 1) * k] for i in range(n_views)]


# --------------------------------------------------------------------------------------------
# TensorFlow side
# --------------------------------------------------------------------------------------------


def tf_log_spectrogram(waveform, params: FrontEndParams):
    """``(batch, samples)`` float32 -> ``(batch, frames, n_bins)`` log power spectrogram.

    The TensorFlow twin of ``ser_keras.features.spectrogram.log_spectrogram``.
    """
    import tensorflow as tf

    waveform = tf.convert_to_tensor(waveform, tf.float32)
    n = tf.shape(waveform)[1]
    # Shorter than one frame: zero-pad to exactly one frame, as the NumPy front end does.
    waveform = tf.pad(waveform, [[0, 0], [0, tf.maximum(params.frame - n, 0)]])
    frames = tf.signal.frame(waveform, params.frame, params.hop, pad_end=False)  # (B, T, frame)
    window = np.zeros(params.frame, np.float32)
    # Periodic Hann, computed in float64 then rounded once, like scipy/numpy would.
    window[:] = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(params.frame) / params.frame)
    windowed = frames * tf.constant(window)
    spectrum = tf.signal.rfft(windowed, fft_length=[params.n_fft])
    # Sliced after the real/imaginary split: LiteRT has no strided slice of complex tensors.
    power = (tf.math.square(tf.math.real(spectrum)) + tf.math.square(tf.math.imag(spectrum)))[..., : params.n_bins]
    return tf.math.log(power + params.log_floor)


def tf_apply_stats(features, params: FrontEndParams, stats=None):
    """Normalisation and PCA. `stats`: None (the pooled statistics, as graph constants) or
    (mean, std) tensors ``[batch, D]`` or ``[D]`` (any float dtype; applied in float64)."""
    import tensorflow as tf

    x = features
    if stats is not None:
        mean, std = (tf.cast(v, tf.float64) for v in stats)
        if mean.shape.rank == 2:
            mean, std = mean[:, None, :], std[:, None, :]
        x = tf.cast((tf.cast(x, tf.float64) - mean) / std, tf.float32)
    elif params.norm_mean is not None:
        x = (x - tf.constant(params.norm_mean, tf.float32)) / tf.constant(params.norm_std, tf.float32)
    shape = tf.shape(x)
    # (B, T, D) @ (D, k) as one 2-D matmul: the fastest form on CPU.
    flat = tf.reshape(x, [-1, params.input_dim])
    if params.n_views > 1:
        # Every view's warp and PCA folded into one matrix (`view_projection`): one product,
        # and a (D, views * k) constant in the graph instead of a (bins, bins) one per view.
        weights, offset = params.view_projection()
        flat = tf.linalg.matmul(flat, tf.constant(weights, tf.float32)) - tf.constant(offset, tf.float32)
    elif params.pca_components is not None:
        flat = tf.linalg.matmul(flat - tf.constant(params.pca_mean, tf.float32),
                                tf.constant(params.pca_components, tf.float32))
    return tf.reshape(flat, [shape[0], shape[1], params.n_views * params.output_dim])


def tf_frame_moments(raw, n_frames):
    """(count [B], sum [B, D], sum of squares [B, D]), float64, of each row's first
    ``n_frames[b]`` frames of ``raw`` ``[B, T, D]`` (the un-normalised features)."""
    import tensorflow as tf

    valid = tf.sequence_mask(n_frames, tf.shape(raw)[1], dtype=tf.float64)[:, :, None]
    x = tf.cast(raw, tf.float64) * valid
    return tf.reduce_sum(valid, axis=[1, 2]), tf.reduce_sum(x, axis=1), tf.reduce_sum(x * x, axis=1)


def tf_mean_std(count, total, squares, std_floor: float):
    """Mean and floored std from moments (float64; the formula of ``features.normalize``);
    works per row (``count`` ``[B]``) or for one set (``count`` a scalar)."""
    import tensorflow as tf

    count = tf.maximum(tf.cast(count, tf.float64), 1.0)
    if count.shape.rank == 1:
        count = count[:, None]
    mean = total / count
    variance = tf.maximum(squares / count - mean * mean, 0.0)
    return mean, tf.maximum(tf.sqrt(variance), tf.constant(std_floor, tf.float64))


def tf_level_normalize(raw, n_frames, floor_db=None):
    """``raw`` ``[B, T, D]`` log spectrograms minus each row's level reference over its first
    ``n_frames[b]`` frames (at least one), raised to ``-floor_db`` dB where given: the twin of
    ``features.level.level_normalize``."""
    import tensorflow as tf

    x = tf.cast(raw, tf.float64)
    peak = tf.reduce_max(x, axis=2, keepdims=True)
    # log mean power of each frame, as features.level.frame_levels computes it
    per_frame = (peak[:, :, 0] + tf.math.log(tf.reduce_sum(tf.exp(x - peak), axis=2))
                 - tf.math.log(tf.cast(tf.shape(x)[2], tf.float64)))  # [B, T]
    total = tf.shape(per_frame)[1]
    n = tf.clip_by_value(tf.cast(n_frames, tf.int32), 1, total)
    lowest = tf.constant(np.finfo(np.float64).min, tf.float64)
    ranked = tf.sort(tf.where(tf.sequence_mask(n, total), per_frame, lowest), axis=1, direction="DESCENDING")
    k = _top_count(n)
    top = tf.sequence_mask(k, total)
    reference = tf.reduce_sum(tf.where(top, ranked, tf.zeros_like(ranked)), axis=1) / tf.cast(k, tf.float64)
    normalized = raw - tf.cast(reference, raw.dtype)[:, None, None]
    floor = relative_floor(floor_db)
    return normalized if floor is None else tf.maximum(normalized, tf.cast(floor, raw.dtype))


def _top_count(n):
    """``features.level.top_count`` of a frame-count tensor."""
    import tensorflow as tf

    return tf.maximum(1, (n + TOP_FRACTION_DENOMINATOR - 1) // TOP_FRACTION_DENOMINATOR)


def tf_speech_flags(waveform, lengths, params: FrontEndParams):
    """bool ``[B]``: whether each row's first ``lengths[b]`` samples hold speech — the twin of
    ``features.level.has_speech`` (frame powers from a running sum of squares, float64)."""
    import tensorflow as tf

    x = tf.cast(waveform, tf.float64)
    lengths = tf.cast(lengths, tf.int32)
    x = x * tf.sequence_mask(lengths, tf.shape(x)[1], dtype=tf.float64)
    x = tf.pad(x, [[0, 0], [0, tf.maximum(params.frame - tf.shape(x)[1], 0)]])
    size = tf.shape(x)[1]
    cumulative = tf.pad(tf.cumsum(x * x, axis=1), [[0, 0], [1, 0]])
    n_frames = tf_frame_counts(lengths, params)
    total = tf.maximum(tf.reduce_max(tf.concat([n_frames, [1]], 0)), 1)
    starts = tf.range(total) * params.hop
    ends = tf.minimum(starts + params.frame, size)
    starts = tf.minimum(starts, size)
    powers = tf.maximum(tf.gather(cumulative, ends, axis=1) - tf.gather(cumulative, starts, axis=1), 0.0)
    powers = powers / float(params.frame)
    valid = tf.sequence_mask(n_frames, total)
    k = _top_count(n_frames)
    take = tf.sequence_mask(k, total)
    big = tf.constant(np.finfo(np.float64).max, tf.float64)

    def mean_of_first_k(ranked):
        return tf.reduce_sum(tf.where(take, ranked, tf.zeros_like(ranked)), axis=1) / tf.cast(k, tf.float64)

    top = mean_of_first_k(tf.sort(tf.where(valid, powers, -tf.ones_like(powers)), axis=1, direction="DESCENDING"))
    low = mean_of_first_k(tf.sort(tf.where(valid, powers, big * tf.ones_like(powers)), axis=1))
    long_enough = tf.cast(lengths, tf.float64) >= params.speech_min_ms * params.sample_rate / 1000.0
    loud = top >= 10.0 ** (params.speech_threshold_dbfs / 10.0)
    modulated = top >= low * 10.0 ** (params.speech_min_contrast_db / 10.0)
    return long_enough & loud & modulated


def tf_raw_features(inputs, params: FrontEndParams, per_row: bool = False, n_frames=None):
    """Features ``(batch, frames, input_dim)`` before the per-dimension normalisation: the log
    spectrogram of a ``(batch, samples)`` waveform (level-normalised over each row's first
    ``n_frames[b]`` frames, default all, when ``params.level_normalization``; its pitch
    channels appended when ``params.pitch_channels``), or the ``(batch, frames, D)`` LLDs as
    they are."""
    import tensorflow as tf

    if params.kind == "lld":
        return tf.convert_to_tensor(inputs, tf.float32)
    return _by_row(lambda x, n: _spectrogram(x, n, params), inputs, _valid_frames(inputs, params, n_frames),
                   params.input_dim, per_row)


def _spectrogram(x, n_frames, params: FrontEndParams):
    import tensorflow as tf

    raw = tf_log_spectrogram(x, params)
    if params.level_normalization:
        raw = tf_level_normalize(raw, n_frames, params.level_floor_db)
    if params.pitch_channels:  # after the level normalisation, which they skip
        raw = tf.concat([raw, tf_pitch_channels(x, n_frames, params)], axis=2)
    return raw


def _valid_frames(inputs, params: FrontEndParams, n_frames):
    """`n_frames` as int32 ``[batch]``, or every row's full frame count when None."""
    import tensorflow as tf

    if n_frames is not None:
        return tf.cast(n_frames, tf.int32)
    shape = tf.shape(inputs)
    return tf_frame_counts(tf.fill([shape[0]], shape[1]), params)


def _by_row(function, inputs, n_frames, dim: int, per_row: bool):
    """``function(inputs, n_frames)`` of the whole batch, or (``per_row``) of one row at a time
    (``tf.map_fn``): the same numbers, but the frame/FFT intermediates of one row stay in the
    CPU caches, where a whole batch's (32 x 10 s: ~300 MB of complex spectra) would not —
    5-10x faster for large batches without XLA. (XLA fuses the steps and needs no such help.)"""
    import tensorflow as tf

    if not per_row:
        return function(inputs, n_frames)

    def rows(x, n):
        return tf.map_fn(lambda row: function(row[0][None], row[1][None])[0], (x, n),
                         fn_output_signature=tf.TensorSpec([None, dim], tf.float32),
                         parallel_iterations=2)

    # One row needs no loop around it.
    return tf.cond(tf.shape(inputs)[0] <= 1, lambda: function(inputs, n_frames), lambda: rows(inputs, n_frames))


def tf_frontend(inputs, params: FrontEndParams, per_row: bool = False, stats=None, n_frames=None):
    """Model input ``(batch, frames, k)`` from a ``(batch, samples)`` float32 waveform
    (``kind="spectrogram"``) or from ``(batch, frames, D)`` LLDs (``kind="lld"``).

    Normalisation: by `stats` (mean, std: ``[D]`` or ``[batch, D]``) when given, else by the
    pooled statistics. ``per_row=True``: the waveform front end runs one batch row at a time
    (see ``_by_row``). `n_frames` ``[batch]``: the valid frames of each zero-padded row (the
    level reference is taken over them); None: every frame is valid.
    """
    if stats is None:
        if params.kind == "lld":
            return tf_apply_stats(inputs, params)
        return _by_row(lambda x, n: tf_apply_stats(_spectrogram(x, n, params), params), inputs,
                       _valid_frames(inputs, params, n_frames), params.n_views * params.output_dim, per_row)
    return tf_apply_stats(tf_raw_features(inputs, params, per_row, n_frames), params, stats)


def tf_frame_counts(lengths, params: FrontEndParams):
    """Frames made of each waveform length (``(batch,)`` int) — for masking padded batches."""
    import tensorflow as tf

    lengths = tf.maximum(tf.cast(lengths, tf.int32), params.frame)
    return 1 + (lengths - params.frame) // params.hop
