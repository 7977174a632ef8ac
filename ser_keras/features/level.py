"""Recording level, in TensorFlow ops: the gain-free log spectrogram, and whether a recording
holds speech.

Level normalisation (``features.level_normalization``). A gain ``g`` on the waveform multiplies
every bin of the power spectrum by ``g**2``, i.e. adds ``2 ln g`` to every bin of the
(natural-log) spectrogram of ``spectrogram.log_spectrogram`` — except where the power is at or
is pushed down to ``log_floor`` (1e-10, about -100 dB): digital silence, padding, band edges left
empty by resampling, and quiet cells once the gain is low (at gain 0.1 a few per cent of the
cells of real EMO-DB and CASIA recordings). Elsewhere, subtracting a per-utterance *reference*
that moves by exactly that constant removes the gain:

- per frame, ``e_t`` = the log of the frame's mean power over the bins, computed from the log
  features as ``logsumexp_k(x_tk) - ln(bins)``: it moves by exactly ``c`` when every bin does,
  and it is dominated by the loud bins, so bins down at the floor hardly move it (a mean of the
  log powers did: on EMO-DB files, whose top bins sit near the floor after resampling, gain 0.5
  moved it by 1.373 instead of 2 ln 2 = 1.386);
- the reference is the mean of ``e_t`` over the loudest ``ceil(frames / 5)`` valid frames (at
  least one): a uniform shift of every ``e_t`` keeps the same frames on top and shifts their
  mean by the same amount, so ``reference(x + c) = reference(x) + c`` exactly. The loudest
  fifth, not all frames, so that pauses (whose level is the room's, not the speaker's) do not
  move it.

The reference is subtracted from every bin of every frame, before any other normalisation
(speaker, pooled) and the PCA, in training, evaluation, ``predict`` and the export's graph.
Features in the cache stay raw: it is applied after the cache read.

Relative floor (``features.level_floor_db``). The cells at the absolute floor do not move with
the gain, and a lower gain pushes more cells down to it, so they alone would still change the
features. With a floor of F dB every level-normalised cell below ``-F`` dB is raised to it:
then a cell either moves with the gain (and the reference takes the move away) or sits at
``-F`` at every gain, as long as ``-F`` dB below the reference stays well above the absolute
floor at the lowest gain served. The value shipped was chosen on validation speakers (docs/serving.md,
*Gain invariance*).

Speech detection (the ``speech`` output of the export, ``"speech"`` in ``predict``'s JSON). On
the spectrogram's frame grid (un-windowed samples), with P_top the mean power of the loudest
``top_count`` frames and P_low that of the quietest ``top_count`` frames, a recording holds
speech when all three hold:

- it is at least ``features.speech_min_ms`` long (nothing shorter carries an emotion);
- P_top is at least ``features.speech_threshold_dbfs`` dB re a full-scale (RMS 1.0) signal;
- P_top is at least ``features.speech_min_contrast_db`` dB above P_low: speech comes in
  syllables and pauses, a steady noise does not (white noise: about 1 dB at any level).

See the ``FeatureConfig`` fields for the defaults and why.
"""

from __future__ import annotations

import typing

import numpy as np

# The share of frames (the loudest) the level reference and the speech level are taken over.
TOP_FRACTION_DENOMINATOR = 5


def top_count(n_frames):
    """How many of `n_frames` frames count as the loudest: ``ceil(n / 5)``, at least one (an int,
    or an int tensor of counts)."""
    if isinstance(n_frames, (int, np.integer)):
        return max(1, (int(n_frames) + TOP_FRACTION_DENOMINATOR - 1) // TOP_FRACTION_DENOMINATOR)
    import tensorflow as tf

    return tf.maximum(1, (n_frames + TOP_FRACTION_DENOMINATOR - 1) // TOP_FRACTION_DENOMINATOR)


def relative_floor(floor_db) -> typing.Optional[float]:
    """The natural-log value ``-floor_db`` dB below the reference is, or None without a floor."""
    return None if floor_db is None else float(-float(floor_db) * np.log(10.0) / 10.0)


def frame_counts(lengths, params):
    """Frames made of each waveform length (``(batch,)`` int) — for masking padded batches."""
    import tensorflow as tf

    lengths = tf.maximum(tf.cast(lengths, tf.int32), params.frame)
    return 1 + (lengths - params.frame) // params.hop


def level_references(raw, n_frames):
    """float32 ``[B]``: each row's level reference over its first ``n_frames[b]`` frames (at
    least one) of ``raw`` ``[B, T, bins]`` log spectrograms."""
    import tensorflow as tf

    x = tf.cast(raw, tf.float32)
    peak = tf.reduce_max(x, axis=2, keepdims=True)
    # e_t, the log mean power of each frame (module docstring)
    per_frame = (peak[:, :, 0] + tf.math.log(tf.reduce_sum(tf.exp(x - peak), axis=2))
                 - tf.math.log(tf.cast(tf.shape(x)[2], tf.float32)))  # [B, T]
    total = tf.shape(per_frame)[1]
    n = tf.clip_by_value(tf.cast(n_frames, tf.int32), 1, total)
    lowest = tf.constant(np.finfo(np.float32).min, tf.float32)
    ranked = tf.sort(tf.where(tf.sequence_mask(n, total), per_frame, lowest), axis=1, direction="DESCENDING")
    k = top_count(n)
    top = tf.sequence_mask(k, total)
    return tf.reduce_sum(tf.where(top, ranked, tf.zeros_like(ranked)), axis=1) / tf.cast(k, tf.float32)


def level_normalize(raw, n_frames, floor_db=None):
    """``raw`` ``[B, T, bins]`` log spectrograms minus each row's level reference over its first
    ``n_frames[b]`` frames, raised to ``-floor_db`` dB where given."""
    import tensorflow as tf

    normalized = raw - tf.cast(level_references(raw, n_frames), raw.dtype)[:, None, None]
    floor = relative_floor(floor_db)
    return normalized if floor is None else tf.maximum(normalized, tf.cast(floor, raw.dtype))


def level_reference(log_spectrogram: np.ndarray) -> float:
    """The reference level of one ``(frames, bins)`` log spectrogram (``level_references``)."""
    x = np.asarray(log_spectrogram, np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"level_reference: expected (frames, bins) with frames >= 1, got shape {x.shape}")
    return float(level_references(x[None], [x.shape[0]])[0])


def fit_length(x, start: int, length):
    """``x[:, start : start + length]`` of the zero-extended rows of ``x`` ``[B, samples]``
    (``start`` may be negative, ``length`` may reach past the end)."""
    import tensorflow as tf

    before = max(-start, 0)
    x = x[:, max(start, 0):]
    return tf.pad(x, [[0, 0], [before, tf.maximum(length - before - tf.shape(x)[1], 0)]])[:, :length]


def frame_powers(waveform, total, params):
    """float32 ``[B, total]``: the mean square of each of the first ``total`` spectrogram frames
    of the zero-extended rows of ``waveform`` ``[B, samples]``: sums of squares of whole hops
    plus the part of a hop that a frame ends in. Per-hop sums, not a running sum along the
    recording, whose differences float32 (all LiteRT runs) could not take for quiet frames."""
    import tensorflow as tf

    whole, part = divmod(params.frame, params.hop)
    n_hops = total - 1 + whole + (1 if part else 0)
    hops = tf.reshape(fit_length(tf.cast(waveform, tf.float32), 0, n_hops * params.hop),
                      [tf.shape(waveform)[0], n_hops, params.hop])
    squares = hops * hops
    sums = 0.0
    if whole:  # hops i .. i + whole - 1 of frame i
        per_hop = tf.reduce_sum(squares, axis=2)
        sums = shifted_sum(per_hop[:, :-1] if part else per_hop, whole)
    if part:  # and the start of hop i + whole
        sums += tf.reduce_sum(squares[:, whole:, :part], axis=2)
    return sums / float(params.frame)


def shifted_sum(values, shifts: int):
    """``sum_{k < shifts} values[:, k : k + n - shifts + 1]`` for ``n = values.shape[1]``: static
    slices (bounds from the end need no shape arithmetic in the graph)."""
    import tensorflow as tf

    return tf.add_n([values[:, k: k - shifts + 1 or None] for k in range(shifts)])


def speech_flags(waveform, lengths, params):
    """bool ``[B]``: whether each row's first ``lengths[b]`` samples hold speech (module
    docstring; ``frame_powers``, float32). ``params``: frame, hop, sample_rate and the
    ``speech_*`` settings (``FrontEndParams``)."""
    import tensorflow as tf

    x = tf.cast(waveform, tf.float32)
    lengths = tf.cast(lengths, tf.int32)
    x = x * tf.sequence_mask(lengths, tf.shape(x)[1], dtype=tf.float32)
    n_frames = frame_counts(lengths, params)
    total = tf.maximum(tf.reduce_max(tf.concat([n_frames, [1]], 0)), 1)
    powers = frame_powers(x, total, params)
    valid = tf.sequence_mask(n_frames, total)
    k = top_count(n_frames)
    take = tf.sequence_mask(k, total)
    big = tf.constant(np.finfo(np.float32).max, tf.float32)

    def mean_of_first_k(ranked):
        return tf.reduce_sum(tf.where(take, ranked, tf.zeros_like(ranked)), axis=1) / tf.cast(k, tf.float32)

    top = mean_of_first_k(tf.sort(tf.where(valid, powers, -tf.ones_like(powers)), axis=1, direction="DESCENDING"))
    low = mean_of_first_k(tf.sort(tf.where(valid, powers, big * tf.ones_like(powers)), axis=1))
    long_enough = lengths >= int(np.ceil(params.speech_min_ms * params.sample_rate / 1000.0))
    loud = top >= 10.0 ** (params.speech_threshold_dbfs / 10.0)
    modulated = top >= low * 10.0 ** (params.speech_min_contrast_db / 10.0)
    return long_enough & loud & modulated
