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

import numpy as np
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
    n = tf.shape(x)[0]
    return tf.gather(x, tf.clip_by_value(tf.range(n) + offset, 0, n - 1))


def _masked_shift(mask, offset: int):
    """mask[t + offset], False past either end ([frames, n] bool)."""
    if offset == 0:
        return mask
    n = tf.shape(mask)[0]
    index = tf.range(n) + offset
    inside = (index >= 0) & (index < n)
    return tf.gather(mask, tf.clip_by_value(index, 0, n - 1)) & inside[:, None]


def smooth(values, mask):
    """3-frame moving average over counted frames only ([frames, n], mask [frames, n]; uncounted
    frames keep theirs)."""
    shifted = [(_shift(values, k), _masked_shift(mask, k)) for k in (-1, 0, 1)]
    total = sum(tf.where(m, v, 0.0) for v, m in shifted)
    count = sum(tf.cast(m, tf.float32) for _, m in shifted)
    return tf.where(mask, total / tf.maximum(count, 1.0), values)


def deltas(values, mask, every_frame):
    """(delta [frames, n], its mask) as the module docstring says; ``every_frame`` [n] bool names
    the columns of every-frame contours (the others are voiced ones)."""
    step = _shift(values, 1) - _shift(values, -1)
    every = (step + 2.0 * (_shift(values, 2) - _shift(values, -2))) / 10.0
    voiced = 0.5 * step
    voiced_mask = mask & _masked_shift(mask, 1) & _masked_shift(mask, -1)
    return tf.where(every_frame, every, voiced), tf.where(every_frame, mask, voiced_mask)


def functionals(values, mask):
    """[n * len(FUNCTIONALS)] float32: ``FUNCTIONALS`` of every column of ``values`` [frames, n]
    over the frames where its column of ``mask`` [frames, n] holds; zeros for a column without
    such a frame. Contour-major: column 0's functionals, then column 1's ..."""
    w = tf.cast(mask, tf.float32)
    count = tf.reduce_sum(w, axis=0)
    n = tf.maximum(count, 1.0)
    mean = tf.reduce_sum(values * w, axis=0) / n
    centred = (values - mean) * w
    variance = tf.reduce_sum(tf.square(centred), axis=0) / n
    std = tf.sqrt(variance + EPS)
    skewness = tf.reduce_sum(centred ** 3, axis=0) / n / std ** 3
    kurtosis = tf.reduce_sum(centred ** 4, axis=0) / n / std ** 4

    frames = tf.shape(values)[0]
    ordered = tf.sort(tf.where(mask, values, tf.float32.max), axis=0)
    index = tf.range(frames)[:, None]

    def percentile(q):  # the column's value at its own rank (columns count different frames)
        rank = tf.cast(tf.round(q * (n - 1.0)), tf.int32)
        return tf.reduce_sum(tf.where(index == rank, ordered, 0.0), axis=0)

    p1, p20, p50, p80, p99 = (percentile(q) for q in (0.01, 0.2, 0.5, 0.8, 0.99))

    t = tf.cast(index, tf.float32) / FRAME_RATE
    t_mean = tf.reduce_sum(t * w, axis=0) / n
    tc = (t - t_mean) * w
    t_var = tf.reduce_sum(tf.square(tc), axis=0) + EPS
    slope = tf.reduce_sum(tc * centred, axis=0) / t_var
    residual = (centred - slope * tc) * w
    regression_error = tf.sqrt(tf.reduce_sum(tf.square(residual), axis=0) / n)

    previous = _shift(values, -1)
    counted_before = mask & _masked_shift(mask, -1)
    pair = tf.cast(counted_before, tf.float32)
    pairs = tf.maximum(tf.reduce_sum(pair, axis=0), 1.0)
    rise = tf.reduce_sum(tf.cast(values > previous, tf.float32) * pair, axis=0) / pairs
    fall = tf.reduce_sum(tf.cast(values < previous, tf.float32) * pair, axis=0) / pairs

    span = p99 - p1
    ups = [tf.reduce_sum(tf.cast(values > p1 + q * span, tf.float32) * w, axis=0) / n for q in (0.25, 0.5, 0.75)]

    inner = counted_before & _masked_shift(mask, 1)
    peak = inner & (values > previous) & (values >= _shift(values, 1)) & (values > mean)
    peaks = tf.cast(peak, tf.float32)
    n_peaks = tf.reduce_sum(peaks, axis=0)
    peak_rate = n_peaks / (n / FRAME_RATE)
    position = tf.cast(index, tf.float32)
    last = tf.reduce_max(tf.where(peak, position, -1.0), axis=0)
    first = tf.reduce_min(tf.where(peak, position, tf.float32.max), axis=0)
    peak_distance = tf.where(n_peaks > 1.0, (last - first) / tf.maximum(n_peaks - 1.0, 1.0) / FRAME_RATE, 0.0)
    peak_height = tf.where(n_peaks > 0.0, tf.reduce_sum(peaks * values, axis=0) / tf.maximum(n_peaks, 1.0) - mean,
                           0.0)

    stacked = tf.stack([mean, std, skewness, kurtosis, p1, p20, p50, p80, p99, p80 - p20, p99 - p1, slope,
                        regression_error, rise, fall, *ups, peak_rate, peak_distance, peak_height], axis=1)
    stacked = tf.where((count > 0.0)[:, None] & tf.math.is_finite(stacked), stacked, 0.0)
    return tf.reshape(stacked, [-1])


def _global_features(voiced, n_frames):
    frames = tf.maximum(tf.cast(n_frames, tf.float32), 1.0)
    flags = tf.cast(voiced, tf.float32)
    starts = tf.reduce_sum(tf.cast(voiced & ~_masked_shift(voiced[:, None], -1)[:, 0], tf.float32))
    return tf.stack([tf.reduce_sum(flags) / frames, starts / (frames / FRAME_RATE),
                     tf.reduce_sum(flags) / tf.maximum(starts, 1.0) / FRAME_RATE])


def _layout():
    """Static tables for computing every group at once: the group of each LLD column, whether it
    is an every-frame contour, and the order that puts the functionals of all LLDs then all deltas
    (as computed) back into ``FEATURE_NAMES``' order (per group: its LLDs, then their deltas)."""
    widths = [len(names) for names in (descriptors.SPECTRAL_NAMES, descriptors.VOICED_NAMES,
                                       descriptors.PAIR_NAMES, descriptors.FORMANT_NAMES)]
    group = np.repeat(np.arange(len(widths)), widths)
    every_frame = group == 0  # the spectral group
    starts, total = np.cumsum([0, *widths[:-1]]), sum(widths)
    order = np.concatenate([np.r_[np.arange(s, s + w), total + np.arange(s, s + w)]
                            for s, w in zip(starts, widths)])
    return group.astype(np.int32), every_frame, order.astype(np.int32)


_GROUP_OF_COLUMN, _EVERY_FRAME, _ORDER = _layout()


def functionals_of_waveform(waveform):
    """[len(FEATURE_NAMES)] float32 functionals of a 1-D float32 16 kHz waveform (eager or traced;
    its ops under the name scope ``functionals``, which bench/inference.py times as a stage).
    Every group's contours are one [frames, columns] tensor with a mask per column, so each step
    is one set of ops whatever the number of groups."""
    with tf.name_scope("functionals"):
        groups = descriptors.frame_descriptors(descriptors.level_normalised(waveform))
        values = tf.concat([v for v, _, _ in groups.values()], axis=1)
        masks = tf.stack([m for _, m, _ in groups.values()], axis=1)
        mask = tf.gather(masks, _GROUP_OF_COLUMN, axis=1)
        values = smooth(values, mask)
        delta, delta_mask = deltas(values, mask, _EVERY_FRAME)
        summary = functionals(tf.concat([values, delta], axis=1), tf.concat([mask, delta_mask], axis=1))
        summary = tf.reshape(tf.gather(tf.reshape(summary, [-1, len(FUNCTIONALS)]), _ORDER), [-1])
        voiced = groups["voiced"][1]
        return tf.concat([summary, _global_features(voiced, tf.shape(voiced)[0])], axis=0)


# No autograph: the code has no tensor-dependent Python control flow, and converting it doubles the trace.
@tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="waveform")], autograph=False)
def extract_functionals(waveform):
    """``functionals_of_waveform`` as one graph, traced once for every length."""
    return functionals_of_waveform(waveform)
