"""The pitch channels as TensorFlow ops: the twin of ``features.pitch.pitch_channels``.

``tf_pitch_channels`` computes, for every row of a zero-padded ``(batch, samples)`` waveform,
the ``(frames, 2)`` [log F0, voicing] that ``features.pitch.pitch_channels`` gives the row's
valid part, step by step as there:

1. YIN (``features.llds.yin``): a segment of ``length`` samples centred on every frame centre
   (``left`` zeros before the waveform, zeros after it), the cross term
   ``r(tau) = sum_{j<width} x_j x_{j+tau}`` by a float32 FFT of ``n_fft`` points, the energies
   from a float64 running sum of squares within each segment, the cumulative-mean-normalised difference in
   float64, the first local minimum below ``voicing_threshold`` in ``[tau_min, tau_max]`` (else
   the global minimum, unvoiced), parabolic interpolation; voiced when a dip was found and F0
   lies in ``[f0_min_hz, f0_max_hz]``;
2. the relative voicing gate: a frame whose mean square is more than ``VOICING_RELATIVE_DB``
   below the loudest valid frame of its row is unvoiced;
3. log F0 linear between voiced frames (``np.interp``), held before the first and after the
   last, ``unvoiced_log_f0`` on a row without a voiced frame.

Frames past a row's ``n_frames[b]`` are padding: they never count as voiced and never enter the
gate's maximum, so a row's channels do not depend on what else is in the batch. Every constant
(YIN's lags, the FFT length) is fixed when the graph is built; serving needs no ser_keras.
"""

from __future__ import annotations

import numpy as np

from ser_keras.features import llds
from ser_keras.features.pitch import VOICING_RELATIVE_DB, unvoiced_log_f0


def yin_geometry(params) -> dict:
    """YIN's integer constants for ``params`` (a ``FrontEndParams``): ``llds.yin_geometry`` and
    the FFT length ``llds.yin`` uses."""
    tau_min, tau_max, width, length, left = llds.yin_geometry(
        params.sample_rate, params.frame, params.f0_min_hz, params.f0_max_hz)
    return dict(tau_min=tau_min, tau_max=tau_max, width=width, length=length, left=left,
                # A power of two: LiteRT's FFT takes no other length (any n_fft >= length is exact).
                n_fft=1 << (int(length) - 1).bit_length())


def tf_pitch_channels(waveform, n_frames, params):
    """``(batch, samples)`` float32 zero-padded waveforms and the valid frames of each row
    (``[batch]`` int) -> ``(batch, frames, 2)`` float32 [log F0, voicing], ``frames`` being the
    spectrogram's frame count of ``samples`` (see the module docstring)."""
    import tensorflow as tf

    g = yin_geometry(params)
    waveform = tf.convert_to_tensor(waveform, tf.float32)
    size = tf.shape(waveform)[1]
    total = 1 + (tf.maximum(size, params.frame) - params.frame) // params.hop  # frames of the batch
    n_frames = tf.clip_by_value(tf.cast(n_frames, tf.int32), 1, total)
    valid = tf.sequence_mask(n_frames, total)

    # Segment i covers padded[i * hop : i * hop + length], padded = left zeros + waveform + zeros.
    needed = (total - 1) * params.hop + g["length"]
    padded = tf.pad(waveform, [[0, 0], [g["left"], tf.maximum(needed - g["left"] - size, 0)]])[:, :needed]
    segments = _frames(padded, g["length"], params.hop, total)  # [B, T, length]
    # Running sums of squares within each segment, not along the whole row: a difference of two
    # sums over the row loses a quiet frame's energy to rounding unless it is float64, which
    # LiteRT does not run; within a segment it is exact enough in float32.
    cumulative = _running_energy(segments)
    f0, dip = _yin(segments, cumulative, params, g)

    # Mean square of each frame of the waveform (features.level.frame_powers): frame i lies at
    # offset `left` of segment i.
    powers = tf.maximum(cumulative[:, :, g["left"] + params.frame] - cumulative[:, :, g["left"]],
                        0.0) / float(params.frame)
    loudest = tf.reduce_max(tf.where(valid, powers, tf.zeros_like(powers)), axis=1, keepdims=True)
    voiced = dip & valid & (powers >= loudest * 10.0 ** (-VOICING_RELATIVE_DB / 10.0))
    log_f0 = _interpolated_log_f0(f0, voiced, unvoiced_log_f0(params))
    return tf.cast(tf.stack([log_f0, tf.cast(voiced, tf.float64)], axis=2), tf.float32)


def _running_energy(segments):
    """``[B, T, length + 1]`` float64: 0 then the running sum of squares of each segment."""
    import tensorflow as tf

    x = tf.cast(segments, tf.float64)
    return tf.pad(tf.cumsum(x * x, axis=2), [[0, 0], [0, 0], [1, 0]])


def _frames(values, length: int, hop: int, total):
    """``[B, total, length]``: ``values[:, i * hop : i * hop + length]`` for i < total."""
    import tensorflow as tf

    return tf.signal.frame(values, length, hop, pad_end=False)[:, :total]


def _yin(segments, cumulative, params, g):
    """(f0 Hz float64 ``[B, T]``, dip found and F0 in range bool ``[B, T]``): ``llds.yin`` on
    every frame's segment (``cumulative``: their ``_running_energy``)."""
    import tensorflow as tf

    lags = g["tau_max"] + 2  # taus 0 .. tau_max + 1
    spectrum = tf.signal.rfft(segments, fft_length=[g["n_fft"]])
    head = tf.signal.rfft(segments[:, :, : g["width"]], fft_length=[g["n_fft"]])
    # irfft(conj(head) * spectrum)[:lags] with one forward real FFT (LiteRT has no inverse FFT nor
    # complex maths): for the Hermitian X = re + i im, irfft(X) = Re(FFT(conj X)) / n_fft, and
    # conj X over all n_fft bins is A + iB with A the even extension of re, B the odd one of -im,
    # so irfft(X) = (Re rfft(A) - Im rfft(B)) / n_fft; rfft(A) is real and rfft(B) imaginary (A
    # even, B odd), so both are read from rfft(A + B).
    hr, hi, sr, si = (part(x) for x in (head, spectrum) for part in (tf.math.real, tf.math.imag))
    half = g["n_fft"] // 2
    real = hr * sr + hi * si
    imag = (hr * si - hi * sr) * np.pad(np.ones(half - 1, np.float32), 1)  # irfft ignores DC/Nyquist imag
    both = tf.signal.rfft(tf.concat([real - imag, tf.reverse(real[:, :, 1:half] + imag[:, :, 1:half], axis=[2])],
                                    axis=2))
    cross = (tf.math.real(both)[:, :, :lags] - tf.math.imag(both)[:, :, :lags]) / float(g["n_fft"])
    cross = tf.cast(cross, tf.float64)

    # sum_{j<width} x_{j+tau}^2 for every tau
    energy_shifted = cumulative[:, :, g["width"]:g["width"] + lags] - cumulative[:, :, :lags]
    diff = tf.maximum(energy_shifted[:, :, :1] + energy_shifted - 2.0 * cross, 0.0)
    total_energy = cumulative[:, :, g["length"]]

    # Cumulative-mean-normalised difference d'(tau) = d(tau) * tau / sum_{1<=j<=tau} d(j).
    running = tf.cumsum(diff[:, :, 1:], axis=2)
    taus = tf.range(1, lags, dtype=tf.float64)
    safe = running > 1e-12 * (total_energy[:, :, None] + 1e-30)
    tail = tf.where(safe, diff[:, :, 1:] * taus / tf.where(safe, running, tf.ones_like(running)),
                    tf.ones_like(running))
    cmnd = tf.concat([tf.ones_like(diff[:, :, :1]), tail], axis=2)

    # First local minimum below the threshold in [tau_min, tau_max]; else the global minimum.
    lo, hi = g["tau_min"], g["tau_max"] + 1
    window = cmnd[:, :, lo:hi]
    local_min = (window <= cmnd[:, :, lo - 1:hi - 1]) & (window < cmnd[:, :, lo + 1:hi + 1])
    candidate = local_min & (window < params.voicing_threshold)
    has_candidate = tf.reduce_any(candidate, axis=2)
    index = tf.range(hi - lo)
    beyond = tf.constant(hi - lo, tf.int32)
    # First True / first minimum (np.argmax / np.argmin take the first; tf.argmax may not).
    first_candidate = tf.reduce_min(tf.where(candidate, index, beyond), axis=2)
    lowest = tf.reduce_min(window, axis=2, keepdims=True)
    first_lowest = tf.reduce_min(tf.where(window == lowest, index, beyond), axis=2)
    best = tf.where(has_candidate, first_candidate, tf.minimum(first_lowest, hi - lo - 1)) + lo

    before = tf.gather(cmnd, best - 1, axis=2, batch_dims=2)
    at = tf.gather(cmnd, best, axis=2, batch_dims=2)
    after = tf.gather(cmnd, best + 1, axis=2, batch_dims=2)
    curvature = before - 2.0 * at + after
    curved = curvature > 1e-12
    shift = tf.where(curved, 0.5 * (before - after) / tf.where(curved, curvature, tf.ones_like(curvature)),
                     tf.zeros_like(curvature))
    period = tf.cast(best, tf.float64) + tf.clip_by_value(shift, -1.0, 1.0)
    f0 = float(params.sample_rate) / period
    return f0, has_candidate & (f0 >= params.f0_min_hz) & (f0 <= params.f0_max_hz)


def _interpolated_log_f0(f0, voiced, fallback: float):
    """float64 ``[B, T]``: ``features.pitch.interpolated_log_f0`` of every row (``np.interp``'s
    formula between the previous and the next voiced frame; held at the ends).

    Static shapes only (XLA compiles ``tf.where``'s data-dependent output for minutes): the
    k-th voiced frame of row b is written to slot ``[b, k]`` of a ``[B, T + 1]`` table (slot T
    takes the unvoiced frames), and a frame reads its neighbours from slots ``count - 1`` and
    ``count - voiced``, ``count`` being the voiced frames up to and including it."""
    import tensorflow as tf

    shape = tf.shape(voiced)
    batch, frames = shape[0], shape[1]
    flags = tf.cast(voiced, tf.int32)
    count = tf.cumsum(flags, axis=1)
    slot = tf.where(voiced, count - 1, frames) + tf.range(batch)[:, None] * (frames + 1)
    t = tf.broadcast_to(tf.range(frames)[None, :], shape)

    def table(values):  # [B, T + 1]: the value of each row's k-th voiced frame at k
        spread = tf.math.unsorted_segment_max(values, slot, batch * (frames + 1))
        return tf.reshape(spread, [batch, frames + 1])

    times = table(t)
    values = table(tf.math.log(tf.where(voiced, f0, tf.ones_like(f0))))
    previous = count - 1  # slot of the last voiced frame at or before each frame
    following = count - flags  # of the first voiced frame at or after it
    has_previous = previous >= 0
    has_following = following < count[:, -1:]

    def read(table_, index):
        return tf.gather(table_, tf.clip_by_value(index, 0, frames), axis=1, batch_dims=1)

    t0, y0 = tf.cast(read(times, previous), tf.float64), read(values, previous)
    t1, y1 = tf.cast(read(times, following), tf.float64), read(values, following)
    t = tf.cast(t, tf.float64)
    between = has_previous & has_following & (t1 > t0)
    slope = (y1 - y0) / tf.where(between, t1 - t0, tf.ones_like(t0))
    inner = tf.where(between, slope * (t - t0) + y0, y0)
    outer = tf.where(has_previous, y0, tf.where(has_following, y1, tf.fill(shape, tf.constant(fallback, tf.float64))))
    return tf.where(has_previous & has_following, inner, outer)
