"""Wide functionals of a waveform, in TensorFlow ops: one float32 vector per recording.

``extract_functionals(waveform)`` (a ``tf.function`` over a 1-D float32 16 kHz waveform of any
length, traced once) takes the waveform relative to its loudest fifth of frames (the network's
level reference, so a gain moves no functional; loudness differences within the recording stay),
computes the LLD groups of ``descriptors.frame_descriptors``, smooths every
contour with a 3-frame moving average over the frames its group counts (ComParE smooths its LLDs
the same way), appends deltas, and summarises every contour over the frames of its group with
``FUNCTIONALS``:

- moments: mean, standard deviation, skewness, kurtosis;
- percentiles 1, 20, 50, 80, 99 (nearest rank) and the ranges 20-80, 1-99;
- linear regression against time (s): slope and the residuals' RMS;
- rise / fall: the share of consecutive counted frames where the contour goes up / down;
- up-level times: the share of frames above 25 / 50 / 75 % of the 1-99 percentile range;
- peaks (a local maximum above the mean): rate per second of counted frames, the mean distance
  between peaks (s), the mean peak height over the mean.

Deltas: a regression over +-2 frames on every-frame contours; over +-1 frame, counted only where
three frames in a row are counted, on voiced ones (F0, HNR, jitter, shimmer, formants), so a delta
never spans an unvoiced gap. A group with no counted frame (silence: nothing voiced) gives zeros.
Global features close the vector: the voiced share of the frames, voiced segments per second and
their mean length (s). ``FEATURE_NAMES`` names every entry.
"""

from __future__ import annotations

import tensorflow as tf

from ser_keras.features import descriptors

FUNCTIONALS = ("mean", "std", "skewness", "kurtosis", "p1", "p20", "p50", "p80", "p99", "range20_80",
               "range1_99", "slope", "regression_error", "rise", "fall", "up25", "up50", "up75", "peak_rate",
               "peak_distance", "peak_height")
GLOBAL_NAMES = ("voiced_share", "voiced_segment_rate", "voiced_segment_length")
FRAME_RATE = descriptors.SAMPLE_RATE / descriptors.HOP  # frames per second
EPS = 1e-8


def _feature_names() -> list:
    names = []
    for lld in (descriptors.SPECTRAL_NAMES, descriptors.VOICED_NAMES, descriptors.PAIR_NAMES,
                descriptors.FORMANT_NAMES):
        contours = [*lld, *[f"{name}_de" for name in lld]]
        names += [f"{contour}_{functional}" for contour in contours for functional in FUNCTIONALS]
    return names + list(GLOBAL_NAMES)


FEATURE_NAMES = _feature_names()


def _shift(x, offset: int):
    """x[t + offset] with the edge frame repeated past either end ([frames, ...])."""
    if offset == 0:
        return x
    if offset > 0:
        return tf.concat([x[offset:], tf.repeat(x[-1:], offset, axis=0)], axis=0)[:tf.shape(x)[0]]
    return tf.concat([tf.repeat(x[:1], -offset, axis=0), x[:offset]], axis=0)[-tf.shape(x)[0]:]


def _masked_shift(mask, offset: int):
    """mask[t + offset], False past either end."""
    if offset == 0:
        return mask
    if offset > 0:
        return tf.concat([mask[offset:], tf.zeros([offset], tf.bool)], axis=0)[:tf.shape(mask)[0]]
    return tf.concat([tf.zeros([-offset], tf.bool), mask[:offset]], axis=0)[-tf.shape(mask)[0]:]


def smooth(values, mask):
    """3-frame moving average over counted frames only ([frames, n]; uncounted frames keep theirs)."""
    total = sum(tf.where((mask if k == 0 else _masked_shift(mask, k))[:, None], _shift(values, k), 0.0)
                for k in (-1, 0, 1))
    count = sum(tf.cast(mask if k == 0 else _masked_shift(mask, k), tf.float32)[:, None] for k in (-1, 0, 1))
    return tf.where(mask[:, None], total / tf.maximum(count, 1.0), values)


def deltas(values, mask, every_frame: bool):
    """(delta [frames, n], its mask) as the module docstring says."""
    if every_frame:
        delta = sum(k * (_shift(values, k) - _shift(values, -k)) for k in (1, 2)) / 10.0
        return delta, mask
    delta = 0.5 * (_shift(values, 1) - _shift(values, -1))
    return delta, mask & _masked_shift(mask, 1) & _masked_shift(mask, -1)


def functionals(values, mask):
    """[n * len(FUNCTIONALS)] float32: ``FUNCTIONALS`` of every column of ``values`` [frames, n]
    over the frames where ``mask`` [frames] holds, column by column; zeros without such a frame."""
    w = tf.cast(mask, tf.float32)[:, None]
    count = tf.reduce_sum(w)
    n = tf.maximum(count, 1.0)
    mean = tf.reduce_sum(values * w, axis=0) / n
    centred = (values - mean) * w
    variance = tf.reduce_sum(tf.square(centred), axis=0) / n
    std = tf.sqrt(variance + EPS)
    skewness = tf.reduce_sum(centred ** 3, axis=0) / n / std ** 3
    kurtosis = tf.reduce_sum(centred ** 4, axis=0) / n / std ** 4

    ordered = tf.sort(tf.where(mask[:, None], values, tf.float32.max), axis=0)

    def percentile(q):
        rank = tf.cast(tf.round(q * (n - 1.0)), tf.int32)
        return tf.gather(ordered, rank, axis=0)

    p1, p20, p50, p80, p99 = (percentile(q) for q in (0.01, 0.2, 0.5, 0.8, 0.99))

    frames = tf.shape(values)[0]
    t = tf.range(frames, dtype=tf.float32)[:, None] / FRAME_RATE
    t_mean = tf.reduce_sum(t * w) / n
    tc = (t - t_mean) * w
    t_var = tf.reduce_sum(tf.square(tc)) + EPS
    slope = tf.reduce_sum(tc * centred, axis=0) / t_var
    residual = (centred - slope * tc) * w
    regression_error = tf.sqrt(tf.reduce_sum(tf.square(residual), axis=0) / n)

    previous = _shift(values, -1)
    pair = tf.cast(mask & _masked_shift(mask, -1), tf.float32)[:, None]
    pairs = tf.maximum(tf.reduce_sum(pair), 1.0)
    rise = tf.reduce_sum(tf.cast(values > previous, tf.float32) * pair, axis=0) / pairs
    fall = tf.reduce_sum(tf.cast(values < previous, tf.float32) * pair, axis=0) / pairs

    span = p99 - p1
    ups = [tf.reduce_sum(tf.cast(values > p1 + q * span, tf.float32) * w, axis=0) / n for q in (0.25, 0.5, 0.75)]

    inner = mask & _masked_shift(mask, -1) & _masked_shift(mask, 1)
    peak = inner[:, None] & (values > previous) & (values >= _shift(values, 1)) & (values > mean)
    peaks = tf.cast(peak, tf.float32)
    n_peaks = tf.reduce_sum(peaks, axis=0)
    peak_rate = n_peaks / (n / FRAME_RATE)
    index = tf.cast(tf.range(frames), tf.float32)[:, None]
    last = tf.reduce_max(tf.where(peak, index, -1.0), axis=0)
    first = tf.reduce_min(tf.where(peak, index, tf.float32.max), axis=0)
    peak_distance = tf.where(n_peaks > 1.0, (last - first) / tf.maximum(n_peaks - 1.0, 1.0) / FRAME_RATE, 0.0)
    peak_height = tf.where(n_peaks > 0.0, tf.reduce_sum(peaks * values, axis=0) / tf.maximum(n_peaks, 1.0) - mean,
                           0.0)

    stacked = tf.stack([mean, std, skewness, kurtosis, p1, p20, p50, p80, p99, p80 - p20, p99 - p1, slope,
                        regression_error, rise, fall, *ups, peak_rate, peak_distance, peak_height], axis=1)
    stacked = tf.where((count > 0.0) & tf.math.is_finite(stacked), stacked, 0.0)
    return tf.reshape(stacked, [-1])  # contour-major: contour 0's functionals, then contour 1's ...


def _global_features(voiced, n_frames):
    frames = tf.maximum(tf.cast(n_frames, tf.float32), 1.0)
    flags = tf.cast(voiced, tf.float32)
    starts = tf.reduce_sum(tf.cast(voiced & ~_masked_shift(voiced, -1), tf.float32))
    return tf.stack([tf.reduce_sum(flags) / frames, starts / (frames / FRAME_RATE),
                     tf.reduce_sum(flags) / tf.maximum(starts, 1.0) / FRAME_RATE])


def functionals_of_waveform(waveform):
    """[len(FEATURE_NAMES)] float32 functionals of a 1-D float32 16 kHz waveform (eager or traced;
    its ops under the name scope ``functionals``, which bench/inference.py times as a stage)."""
    with tf.name_scope("functionals"):
        groups = descriptors.frame_descriptors(descriptors.level_normalised(waveform))
        parts = []
        for name, (values, mask, _) in groups.items():
            values = smooth(values, mask)
            delta, delta_mask = deltas(values, mask, every_frame=name == "spectral")
            parts += [functionals(values, mask), functionals(delta, delta_mask)]
        voiced = groups["voiced"][1]
        parts.append(_global_features(voiced, tf.shape(voiced)[0]))
        return tf.concat(parts, axis=0)


@tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="waveform")])
def extract_functionals(waveform):
    """``functionals_of_waveform`` as one graph, traced once for every length."""
    return functionals_of_waveform(waveform)
