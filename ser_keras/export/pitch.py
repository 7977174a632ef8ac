"""The pitch channels as TensorFlow ops: log F0 and voicing of every spectrogram frame.

``tf_pitch_channels`` computes, for every row of a zero-padded ``(batch, samples)`` waveform,
the ``(frames, 2)`` [log F0, voicing] of the row's valid frames (``features.pitch`` says what
the channels mean), in float32 throughout:

1. decimation: the waveform is low-passed (a binomial filter, ``box(q)`` convolved with
   itself ``DECIMATION_ORDER`` times: zeros on every frequency that folds onto 0 Hz) and
   every ``q``-th sample kept, ``q`` the largest divisor of the hop that leaves the shortest
   period (``1 / f0_max_hz``) at least ``MIN_PERIOD_SAMPLES`` samples (2 at 16 kHz, 500 Hz);
2. YIN (de Cheveigne & Kawahara 2002) on the decimated signal, over a window of ``blocks``
   hops (at least ``WIDTH_PERIODS`` periods of ``f0_min_hz``) centred, with its lags, on the
   frame's centre: the difference function
   ``d(tau) = sum_{j<W} (x_j - x_{j+tau})^2 = E(0) + E(tau) - 2 r(tau)`` for the lags
   ``0 .. tau_max + 1`` only, computed block by block: the window is ``blocks`` hops long, so a
   frame's cross term ``r`` and energies ``E`` are sums of per-hop terms that neighbouring
   frames share. Each hop's cross term comes from one small FFT of the hop (its segment's
   spectrum is the sum of the next hops' spectra, shifted); the energies from prefix sums
   inside each hop (no running sum over the recording, which float32 could not difference);
3. the cumulative-mean-normalised difference, the first local minimum below
   ``voicing_threshold`` in ``[tau_min, tau_max]`` (else the global minimum, unvoiced),
   parabolic interpolation; voiced when a dip was found and F0 lies in
   ``[f0_min_hz, f0_max_hz]``;
4. the relative voicing gate: a frame whose mean square (of the full-band waveform, on the
   spectrogram's frames) is more than ``VOICING_RELATIVE_DB`` below the loudest valid frame of
   its row is unvoiced;
5. log F0 linear between voiced frames (``np.interp``'s formula), held before the first and
   after the last, ``unvoiced_log_f0`` on a row without a voiced frame.

Frames past a row's ``n_frames[b]`` are padding: they never count as voiced and never enter the
gate's maximum, so a row's channels do not depend on what else is in the batch. Every constant
(the lags, the FFT length, the filter) is fixed when the graph is built, every shape is static
given the input's (XLA compiles it); serving needs no ser_keras.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft

from ser_keras.features.pitch import VOICING_RELATIVE_DB, unvoiced_log_f0

# Decimate while the shortest period keeps at least this many samples: the parabola through
# the dip then places F0 well inside the 5 % that the pYIN reference test allows.
MIN_PERIOD_SAMPLES = 16
# The low-pass before decimating by q: box(q) convolved DECIMATION_ORDER times (at q = 2 the
# taps [1, 4, 6, 4, 1] / 16: -12 dB at the new Nyquist frequency, -33 dB at 3/4 of the old).
DECIMATION_ORDER = 4
# Integration window of the difference function: at least 2.5 periods of the lowest F0. With
# only 2 periods, low male voices give shallow dips and many voiced frames are missed.
WIDTH_PERIODS = 2.5


def yin_geometry(params) -> dict:
    """YIN's integer constants for ``params`` (a ``FrontEndParams``), all in samples of the
    decimated signal: the decimation ``q``, the hop, the lag range ``tau_min .. tau_max`` and
    the ``lags`` computed (``0 .. tau_max + 1``), the window in hops (``blocks``), ``left``
    (the window of frame i starts ``i * hop - left`` after the waveform's first sample), the
    FFT length and the hops a segment (``seg_blocks``) and the lags (``lag_blocks``) span."""
    f0_min, f0_max = float(params.f0_min_hz), float(params.f0_max_hz)
    if not 0 < f0_min < f0_max:
        raise ValueError(f"f0_min_hz ({f0_min}) must be positive and below f0_max_hz ({f0_max})")
    q = max(d for d in range(1, params.hop + 1)
            if params.hop % d == 0 and (d == 1 or params.sample_rate / d >= MIN_PERIOD_SAMPLES * f0_max))
    rate = params.sample_rate / q
    hop = params.hop // q
    tau_min = max(2, int(math.floor(rate / f0_max)))
    tau_max = max(tau_min + 2, int(math.ceil(rate / f0_min)))
    lags = tau_max + 2
    blocks = max(1, int(math.ceil(WIDTH_PERIODS * params.sample_rate / f0_min / params.hop)))
    seg_blocks = -(-(hop + lags - 1) // hop)
    # The window and its lags, (blocks * hop + lags - 1) samples, centred on the frame's centre.
    left = (blocks * hop + lags - 1) // 2 - (params.frame // 2) // q
    return dict(q=q, hop=hop, tau_min=tau_min, tau_max=tau_max, lags=lags, blocks=blocks, left=left,
                seg_blocks=seg_blocks, lag_blocks=-(-lags // hop),
                n_fft=int(scipy.fft.next_fast_len(seg_blocks * hop, real=True)))


def _decimation_taps(q: int) -> np.ndarray:
    """The low-pass before keeping every q-th sample: box(q) ** DECIMATION_ORDER, sum 1."""
    taps = np.ones(1)
    for _ in range(DECIMATION_ORDER):
        taps = np.convolve(taps, np.ones(q) / q)
    return taps


def tf_pitch_channels(waveform, n_frames, params):
    """``(batch, samples)`` float32 zero-padded waveforms and the valid frames of each row
    (``[batch]`` int) -> ``(batch, frames, 2)`` float32 [log F0, voicing], ``frames`` being the
    spectrogram's frame count of ``samples`` (see the module docstring)."""
    import tensorflow as tf

    with tf.name_scope("pitch"):
        g = yin_geometry(params)
        waveform = tf.convert_to_tensor(waveform, tf.float32)
        size = tf.shape(waveform)[1]
        total = 1 + (tf.maximum(size, params.frame) - params.frame) // params.hop  # frames of the batch
        n_frames = tf.clip_by_value(tf.cast(n_frames, tf.int32), 1, total)
        valid = tf.sequence_mask(n_frames, total)

        f0, dip = _yin(_decimated_blocks(waveform, total, g), params, g)
        powers = _frame_powers(waveform, total, params)
        loudest = tf.reduce_max(tf.where(valid, powers, tf.zeros_like(powers)), axis=1, keepdims=True)
        voiced = dip & valid & (powers >= loudest * 10.0 ** (-VOICING_RELATIVE_DB / 10.0))
        log_f0 = _interpolated_log_f0(f0, voiced, unvoiced_log_f0(params))
        return tf.stack([log_f0, tf.cast(voiced, tf.float32)], axis=2)


def _fit(x, start: int, length):
    """``x[:, start : start + length]`` of the zero-extended rows (``start`` may be negative,
    ``length`` may reach past the end)."""
    import tensorflow as tf

    before = max(-start, 0)
    x = x[:, max(start, 0):]
    return tf.pad(x, [[0, 0], [before, tf.maximum(length - before - tf.shape(x)[1], 0)]])[:, :length]


def _decimated_blocks(waveform, total, g):
    """``[B, n_blocks, hop]``: the decimated signal in hops, hop m starting at decimated sample
    ``m * hop - left``; enough hops for every frame's segments (zeros beyond the waveform)."""
    import tensorflow as tf

    q, hop = g["q"], g["hop"]
    n_blocks = total + g["blocks"] - 1 + max(g["seg_blocks"], g["lag_blocks"] + 1) - 1
    n = n_blocks * hop
    taps = _decimation_taps(q)
    centre = (len(taps) - 1) // 2  # symmetric taps: output k sits on input sample q * k
    extra = -(-(len(taps) - 1) // q)
    x = _fit(waveform, -q * g["left"] - centre, q * (n + extra))
    if q == 1:
        decimated = x[:, :n]
    else:
        # Polyphase: phase p holds samples q * k + p; tap i reads phase i % q from k + i // q.
        # (Strided slices of the waveform, one per tap, cost several times more.)
        phases = tf.unstack(tf.reshape(x, [tf.shape(x)[0], n + extra, q]), axis=2)
        decimated = tf.add_n([float(tap) * phases[i % q][:, i // q: i // q + n] for i, tap in enumerate(taps)])
    return tf.reshape(decimated, [tf.shape(waveform)[0], n_blocks, hop])


def _frame_powers(waveform, total, params):
    """``[B, T]``: mean square of each spectrogram frame (``features.level.frame_powers``): the
    sums of squares of whole hops plus the part of a hop that a frame ends in."""
    import tensorflow as tf

    whole, part = divmod(params.frame, params.hop)
    n_hops = total - 1 + whole + (1 if part else 0)
    hops = tf.reshape(_fit(waveform, 0, n_hops * params.hop), [tf.shape(waveform)[0], n_hops, params.hop])
    squares = hops * hops
    sums = 0.0
    if whole:  # hops i .. i + whole - 1 of frame i
        per_hop = tf.reduce_sum(squares, axis=2)
        sums = _shifted_sum(per_hop[:, :-1] if part else per_hop, whole)
    if part:  # and the start of hop i + whole
        sums += tf.reduce_sum(squares[:, whole:, :part], axis=2)
    return sums / float(params.frame)


def _shifted_sum(values, shifts: int):
    """``sum_{k < shifts} values[:, k : k + n - shifts + 1]`` for ``n = values.shape[1]``: static
    slices (bounds from the end need no shape arithmetic in the graph)."""
    import tensorflow as tf

    return tf.add_n([values[:, k: k - shifts + 1 or None] for k in range(shifts)])


def _triangle(n: int, strict: bool = False):
    """``[n, n]`` float32: 1 where row <= column (row < column when `strict`), else 0; made
    in the graph (a constant would be stored in every traced function of the export)."""
    import tensorflow as tf

    ones = tf.linalg.band_part(tf.ones([n, n]), 0, -1)
    return ones - tf.eye(n) if strict else ones


def _matmul(x, matrix):
    """``[B, T, n] @ [n, m]`` as one 2-D product (the batched kernel is several times slower)."""
    import tensorflow as tf

    shape = tf.shape(x)
    product = tf.linalg.matmul(tf.reshape(x, [-1, shape[2]]), matrix)
    return tf.reshape(product, [shape[0], shape[1], tf.shape(matrix)[1]])


def _yin(blocks, params, g):
    """(f0 Hz float32 ``[B, T]``, dip found and F0 in range bool ``[B, T]``): YIN on every
    frame, from the decimated hops (``_decimated_blocks``)."""
    import tensorflow as tf

    hop, lags, n_fft, width = g["hop"], g["lags"], g["n_fft"], g["blocks"]
    # blocks holds the `heads` hops that start a part of a frame's window, then `after` more.
    after = max(g["seg_blocks"], g["lag_blocks"] + 1) - 1

    # Per hop m: its difference function over its own samples,
    # dd_m(tau) = sum_{j<hop} (x_{m,j} - x_{m,j+tau})^2 = e_m(0) + e_m(tau) - 2 c_m(tau); a
    # frame's d(tau) is the sum of dd over the `width` hops of its window.
    # c_m: the hop against the segment of seg_blocks hops that starts with it (n_fft >= the
    # segment, so the circular correlation does not wrap onto the lags kept).
    segment = tf.concat([blocks[:, j: j - after or None] for j in range(g["seg_blocks"])], axis=2)
    spectrum = tf.signal.rfft(segment, fft_length=[n_fft])
    head = tf.signal.rfft(blocks[:, :-after], fft_length=[n_fft])
    cross = tf.signal.irfft(tf.math.conj(head) * spectrum, fft_length=[n_fft])[:, :, :lags]
    # e_m(tau) = sum_{j<hop} x_{m,j+tau}^2 = box[m * hop + tau], box the hop-long moving sum of
    # squares: at offset r into hop n, the rest of hop n from r and the first r samples of hop
    # n + 1 (prefix sums inside each hop, as a product with a triangle of ones: no running sum
    # over the recording, which float32 could not difference).
    squares = blocks * blocks
    before = _matmul(squares, _triangle(hop, strict=True))  # sum_{j<r}
    sums = tf.reduce_sum(squares, axis=2)
    box = sums[:, :-1, None] - before[:, :-1] + before[:, 1:]
    energy = tf.concat([box[:, a: a - after + 1 or None] for a in range(g["lag_blocks"])], axis=2)[:, :, :lags]
    diff = tf.maximum(_shifted_sum(energy[:, :, :1] + energy - 2.0 * cross, width), 0.0)
    scale = _shifted_sum(sums[:, :-after], width)[:, :, None]  # the window's energy, E(0)

    # Cumulative-mean-normalised difference d'(tau) = d(tau) * tau / sum_{1<=j<=tau} d(j) (the
    # triangle's first row zeroed: d(0) is not summed); a running sum at float32 rounding of the
    # window's energy counts as zero (d' = 1), so d'(0) = 1.
    running = _matmul(diff, _triangle(lags) - tf.one_hot(0, lags)[:, None])
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

    around = tf.gather(cmnd, best[:, :, None] + tf.constant([-1, 0, 1]), axis=2, batch_dims=2)
    before, at, after = around[:, :, 0], around[:, :, 1], around[:, :, 2]
    curvature = before - 2.0 * at + after
    curved = curvature > 1e-12
    shift = tf.where(curved, 0.5 * (before - after) / tf.where(curved, curvature, tf.ones_like(curvature)),
                     tf.zeros_like(curvature))
    period = tf.cast(best, tf.float32) + tf.clip_by_value(shift, -1.0, 1.0)
    f0 = float(params.sample_rate / g["q"]) / period
    return f0, has_candidate & (f0 >= params.f0_min_hz) & (f0 <= params.f0_max_hz)


def _interpolated_log_f0(f0, voiced, fallback: float):
    """float32 ``[B, T]``: ``features.pitch.interpolated_log_f0`` of every row (``np.interp``'s
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
