"""The pitch channels in TensorFlow ops: YIN, the voicing gate, the log F0 contour.

``tf_pitch_channels`` computes, for every row of a zero-padded ``(batch, samples)`` waveform,
the ``(frames, 2)`` [log F0, voicing] of the row's valid frames (``features.channels`` says
what they are), in float32 throughout and with LiteRT's builtin ops only (no float64, no
inverse FFT, no complex arithmetic, power-of-two FFT lengths):

1. YIN (de Cheveigne & Kawahara 2002) on the full-band waveform (``channels.yin_geometry``
   says why not decimated), over a window of ``blocks`` hops (about ``WIDTH_PERIODS`` periods
   of ``f0_min_hz``) centred, with its lags, on the frame's centre: the difference function
   ``d(tau) = sum_{j<W} (x_j - x_{j+tau})^2 = E(0) + E(tau) - 2 r(tau)`` for the lags
   ``0 .. tau_max + 1`` only, block by block: a frame's cross term ``r`` and energies ``E`` are
   sums of per-hop terms that neighbouring frames share. Each hop's cross term comes from the
   spectra of the hop and of its segment (the hop and its lags), both from one small FFT of
   every hop (``_correlation``); the energies from prefix sums inside each hop (no running sum
   over the recording, which float32 could not difference);
2. the cumulative-mean-normalised difference, the first local minimum below
   ``voicing_threshold`` in ``[tau_min, tau_max]`` (else the global minimum, unvoiced),
   parabolic interpolation; voiced when a dip was found and F0 lies in
   ``[f0_min_hz, f0_max_hz]``;
3. the relative voicing gate: a frame whose mean square (``level.frame_powers``, of the
   full-band waveform) is more than ``VOICING_RELATIVE_DB`` below the loudest valid frame of
   its row is unvoiced;
4. log F0 linear between voiced frames (``np.interp``'s formula), held before the first and
   after the last, ``unvoiced_log_f0`` on a row without a voiced frame.

Frames past a row's ``n_frames[b]`` are padding: they never count as voiced and never enter the
gate's maximum, so a row's channels do not depend on what else is in the batch. Every constant
(the lags, the FFT length) is fixed when the graph is built, every shape is static
given the input's (XLA compiles it); serving needs no ser_keras.
"""

from __future__ import annotations

import numpy as np

from ser_keras.features.channels import VOICING_RELATIVE_DB, unvoiced_log_f0
from ser_keras.features.channels import yin_geometry as _yin_geometry
from ser_keras.features.level import fit_length, frame_powers, shifted_sum


def yin_geometry(params) -> dict:
    """YIN's integer constants for ``params`` (a ``FrontEndParams``): ``channels.yin_geometry``
    and the FFT length, a power of two (LiteRT's FFT takes no other) that holds a hop's
    segment, so that the circular correlation does not wrap onto the lags kept."""
    g = _yin_geometry(params.sample_rate, params.frame, params.hop, params.f0_min_hz, params.f0_max_hz)
    g["n_fft"] = 1 << (g["seg_blocks"] * g["hop"] - 1).bit_length()
    return g


def tf_pitch_channels(waveform, n_frames, params):
    """``(batch, samples)`` float32 zero-padded waveforms and the valid frames of each row
    (``[batch]`` int) -> ``(batch, frames, 2)`` float32 [log F0, voicing], ``frames`` being the
    spectrogram's frame count of ``samples`` (see the module docstring)."""
    import tensorflow as tf

    with tf.name_scope("pitch"):
        waveform = tf.convert_to_tensor(waveform, tf.float32)
        size = tf.shape(waveform)[1]
        total = 1 + (tf.maximum(size, params.frame) - params.frame) // params.hop  # frames of the batch
        n_frames = tf.clip_by_value(tf.cast(n_frames, tf.int32), 1, total)
        valid = tf.sequence_mask(n_frames, total)

        f0, dip, _ = yin(waveform, total, params)
        powers = frame_powers(waveform, total, params)
        loudest = tf.reduce_max(tf.where(valid, powers, tf.zeros_like(powers)), axis=1, keepdims=True)
        voiced = dip & valid & (powers >= loudest * 10.0 ** (-VOICING_RELATIVE_DB / 10.0))
        log_f0 = _interpolated_log_f0(f0, voiced, unvoiced_log_f0(params))
        return tf.stack([log_f0, tf.cast(voiced, tf.float32)], axis=2)


def yin(waveform, total, params):
    """YIN on every frame of ``(batch, samples)`` float32 waveforms (step 1 of the module
    docstring), ``total`` frames per row: (F0 Hz float32 ``[B, total]``, a dip found and F0 in
    range bool, the aperiodicity d' at the chosen lag float32 in [0, 1])."""
    g = yin_geometry(params)
    return _yin(_blocks(waveform, total, g), params, g)


def _blocks(waveform, total, g):
    """``[B, n_blocks, hop]``: the waveform in hops, hop m starting at sample ``m * hop - left``;
    enough hops for every frame's segments (zeros beyond the waveform)."""
    import tensorflow as tf

    hop = g["hop"]
    n_blocks = total + g["blocks"] - 1 + max(g["seg_blocks"], g["lag_blocks"] + 1) - 1
    x = fit_length(waveform, -g["left"], n_blocks * hop)
    return tf.reshape(x, [tf.shape(waveform)[0], n_blocks, hop])


def _triangle(n: int, first_row: bool = True, strict: bool = False):
    """``[n, n]`` float32: 1 where row <= column (row < column when ``strict``), else 0, row 0
    zeroed without ``first_row``; made in the graph from a range (a constant would be stored
    in every traced function of the export)."""
    import tensorflow as tf

    rows, columns = tf.range(n)[:, None], tf.range(n)[None, :]
    ones = (rows < columns) if strict else (rows <= columns)
    if not first_row:
        ones = ones & (rows > 0)
    return tf.cast(ones, tf.float32)


def _matmul(x, matrix):
    """``[B, T, n] @ [n, m]`` as one 2-D product (the batched kernel is several times slower)."""
    import tensorflow as tf

    shape = tf.shape(x)
    product = tf.linalg.matmul(tf.reshape(x, [-1, shape[2]]), matrix)
    return tf.reshape(product, [shape[0], shape[1], tf.shape(matrix)[1]])


def _correlation(blocks, after: int, g):
    """``[B, n_blocks - after, lags]``: for every hop m of ``blocks`` ``[B, n_blocks, hop]``,
    ``sum_j x_m[j] * s_m[j + tau]`` for tau < lags, ``s_m`` being the segment of ``seg_blocks``
    hops that starts with hop m (``g``: ``yin_geometry``), i.e. ``irfft(conj(rfft(x_m)) * rfft(s_m))[:lags]``.

    One forward FFT of every hop gives both spectra: a segment's is the sum of its hops',
    each delayed by its offset ``k * hop`` (a factor ``e^{-i w k hop}``; ``n_fft`` holds the
    whole segment, so nothing wraps). Forward real FFTs and real arithmetic only (LiteRT has no
    inverse FFT nor complex maths): for the Hermitian ``X = re + i im``,
    ``irfft(X) = Re(FFT(conj X)) / n_fft``, and ``conj X`` over all ``n_fft`` bins is ``A + iB``
    with A the even extension of re and B the odd one of -im, so
    ``irfft(X) = (Re rfft(A) - Im rfft(B)) / n_fft``; ``rfft(A)`` is real and ``rfft(B)``
    imaginary (A even, B odd), so both are read from ``rfft(A + B)``; past ``n_fft / 2`` the
    symmetries of A and B give ``(Re + Im) rfft(A + B)`` at ``n_fft - tau``."""
    import tensorflow as tf

    hop, n_fft, lags = g["hop"], g["n_fft"], g["lags"]
    spectra = tf.signal.rfft(blocks, fft_length=[n_fft])
    re, im = tf.math.real(spectra), tf.math.imag(spectra)
    hr, hi = re[:, :-after], im[:, :-after]
    sr, si = hr, hi
    omega = 2.0 * np.pi * np.arange(n_fft // 2 + 1) / n_fft
    for k in range(1, g["seg_blocks"]):
        cos, sin = np.cos(omega * k * hop).astype(np.float32), np.sin(omega * k * hop).astype(np.float32)
        kr, ki = re[:, k: k - after or None], im[:, k: k - after or None]
        sr, si = sr + (kr * cos + ki * sin), si + (ki * cos - kr * sin)
    half = n_fft // 2
    real = hr * sr + hi * si
    imag = (hr * si - hi * sr) * np.pad(np.ones(half - 1, np.float32), 1)  # irfft ignores DC/Nyquist imag
    both = tf.signal.rfft(tf.concat([real - imag, tf.reverse(real[..., 1:half] + imag[..., 1:half], axis=[-1])],
                                    axis=-1))
    re, im = tf.math.real(both), tf.math.imag(both)
    cross = (re - im)[..., :min(lags, half + 1)]
    if lags > half + 1:  # tau = half + 1 .. lags - 1 from bins half - 1 down to n_fft - lags + 1
        cross = tf.concat([cross, tf.reverse((re + im)[..., n_fft - lags + 1: half], axis=[-1])], axis=-1)
    return cross / float(n_fft)


def _yin(blocks, params, g):
    """(f0 Hz float32 ``[B, T]``, dip found and F0 in range bool ``[B, T]``, d' at the chosen lag
    float32 ``[B, T]``): YIN on every frame, from the waveform's hops (``_blocks``)."""
    import tensorflow as tf

    hop, lags, width = g["hop"], g["lags"], g["blocks"]
    # blocks holds the hops that start a part of a frame's window, then `after` more.
    after = max(g["seg_blocks"], g["lag_blocks"] + 1) - 1

    # Per hop m: its difference function over its own samples,
    # dd_m(tau) = sum_{j<hop} (x_{m,j} - x_{m,j+tau})^2 = e_m(0) + e_m(tau) - 2 c_m(tau); a
    # frame's d(tau) is the sum of dd over the `width` hops of its window.
    # c_m: the hop against the segment of seg_blocks hops that starts with it.
    cross = _correlation(blocks, after, g)
    # e_m(tau) = sum_{j<hop} x_{m,j+tau}^2 = box[m * hop + tau], box the hop-long moving sum of
    # squares: at offset r into hop n, the rest of hop n from r and the first r samples of hop
    # n + 1 (prefix sums inside each hop, as a product with a triangle of ones).
    squares = blocks * blocks
    before = _matmul(squares, _triangle(hop, strict=True))  # sum_{j<r}
    sums = tf.reduce_sum(squares, axis=2)
    # (tf.expand_dims, not [..., None]: LiteRT's strided slice takes no new axis with an end bound)
    box = tf.expand_dims(sums[:, :-1], 2) - before[:, :-1] + before[:, 1:]
    energy = tf.concat([box[:, a: a - after + 1 or None] for a in range(g["lag_blocks"])], axis=2)[:, :, :lags]
    diff = tf.maximum(shifted_sum(energy[:, :, :1] + energy - 2.0 * cross, width), 0.0)
    scale = tf.expand_dims(shifted_sum(sums[:, :-after], width), 2)  # the window's energy, E(0)

    # Cumulative-mean-normalised difference d'(tau) = d(tau) * tau / sum_{1<=j<=tau} d(j) (the
    # triangle's first row zeroed: d(0) is not summed); a running sum at float32 rounding of the
    # window's energy counts as zero (d' = 1), so d'(0) = 1.
    running = _matmul(diff, _triangle(lags, first_row=False))
    floor = 1e-6 * scale + 1e-30
    cmnd = tf.where(running > floor, diff * tf.range(lags, dtype=tf.float32) / tf.maximum(running, floor), 1.0)

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
    first_lowest = tf.reduce_min(tf.where(tf.equal(window, lowest), index, beyond), axis=2)
    best = tf.where(has_candidate, first_candidate, tf.minimum(first_lowest, hi - lo - 1)) + lo

    around = tf.gather(cmnd, tf.expand_dims(best, 2) + tf.constant([-1, 0, 1]), axis=2, batch_dims=2)
    before, at, after = around[:, :, 0], around[:, :, 1], around[:, :, 2]
    curvature = before - 2.0 * at + after
    curved = curvature > 1e-12
    shift = tf.where(curved, 0.5 * (before - after) / tf.where(curved, curvature, tf.ones_like(curvature)),
                     tf.zeros_like(curvature))
    period = tf.cast(best, tf.float32) + tf.clip_by_value(shift, -1.0, 1.0)
    f0 = float(params.sample_rate) / period
    voiced = has_candidate & (f0 >= params.f0_min_hz) & (f0 <= params.f0_max_hz)
    return f0, voiced, tf.clip_by_value(at, 0.0, 1.0)


def _interpolated_log_f0(f0, voiced, fallback: float):
    """float32 ``[B, T]``: log F0 interpolated over every row's unvoiced frames (``np.interp``'s
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

    t0, y0 = tf.cast(read(times, previous), tf.float32), read(values, previous)
    t1, y1 = tf.cast(read(times, following), tf.float32), read(values, following)
    t = tf.cast(t, tf.float32)
    between = has_previous & has_following & (t1 > t0)
    slope = (y1 - y0) / tf.where(between, t1 - t0, tf.ones_like(t0))
    inner = tf.where(between, slope * (t - t0) + y0, y0)
    outer = tf.where(has_previous, y0, tf.where(has_following, y1, tf.fill(shape, tf.constant(fallback, tf.float32))))
    return tf.where(has_previous & has_following, inner, outer)
