"""Frame-level low-level descriptors (LLDs) of a 16 kHz waveform, in TensorFlow ops.

The descriptors that eGeMAPS and ComParE draw on, computed from one 25 ms Hamming frame every
10 ms (a waveform shorter than one frame is zero-padded to one frame), float32 throughout:

- ``spectral`` (every frame): log RMS energy (dB), loudness (the 26 mel band powers raised to
  0.3 and summed: Stevens' power law on an auditory band scale, as openSMILE's loudness is),
  26 mel band log powers, MFCC 1-14, spectral flux (of the sum-normalised magnitude spectrum),
  centroid, variance, skewness, kurtosis, entropy and flatness of the power spectrum, slope of
  the magnitude spectrum over 0-8 kHz and of the dB spectrum over 0-500 Hz and 500-1500 Hz,
  roll-off points 25/50/75/90 %, alpha ratio (dB, 50-1000 Hz over 1-5 kHz), Hammarberg index
  (dB, strongest bin under 2 kHz over strongest in 2-5 kHz), the share of power in 0-0.5,
  0.5-1, 1-2, 2-4, 4-8 kHz (dB), zero-crossing rate.
- ``voiced`` (voiced frames): F0 in semitones above 27.5 Hz and HNR (dB), both from a float32
  YIN (cumulative-mean-normalised difference; HNR = 10 log10((1 - d') / d') at the chosen lag,
  d' being the aperiodic share of the frame's energy).
- ``pairs`` (two voiced frames in a row): frame-level jitter and shimmer. They are not openSMILE's
  cycle-to-cycle measures: jitter is the relative change of the YIN period from one frame to the
  next, |T_t - T_{t-1}| / mean(T_t, T_{t-1}); shimmer the absolute change of the frame's RMS level
  in dB. Both grow with the same period / amplitude irregularity, at a 10 ms instead of a cycle
  resolution.
- ``formants`` (voiced frames with three formants found): F1-F3 and their bandwidths (Hz) from
  LPC of order ``LPC_ORDER`` (autocorrelation, Levinson-Durbin, roots as the eigenvalues of the
  companion matrix), poles between 90 Hz and 5.5 kHz with bandwidths under 700 Hz.

``frame_descriptors`` returns each group as ``(values [frames, lld], mask [frames], names)``.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from ser_keras.features import level

SAMPLE_RATE = 16000
FRAME = 400  # 25 ms
HOP = 160  # 10 ms
N_FFT = 512
N_MELS = 26
N_MFCC = 14
F0_MIN_HZ = 60.0
F0_MAX_HZ = 600.0
# YIN's dip threshold: the feature store keeps periodicity as HNR, so a lenient gate loses little.
VOICING_THRESHOLD = 0.3
VOICING_RELATIVE_DB = 40.0  # a frame this far under the loudest frame is not voiced
LPC_ORDER = 14
EPS = 1e-10

_TAU_MIN = int(SAMPLE_RATE // F0_MAX_HZ)
_TAU_MAX = int(math.ceil(SAMPLE_RATE / F0_MIN_HZ))
_YIN_LENGTH = FRAME + _TAU_MAX + 1  # a frame and the lags past it
_YIN_FFT = 1 << (_YIN_LENGTH - 1).bit_length()
_FREQS_KHZ = np.arange(N_FFT // 2 + 1, dtype=np.float32) * (SAMPLE_RATE / N_FFT / 1000.0)

SPECTRAL_NAMES = (["log_rms", "loudness"] + [f"mel{i}" for i in range(N_MELS)]
                  + [f"mfcc{i}" for i in range(1, N_MFCC + 1)]
                  + ["flux", "centroid", "variance", "skewness", "kurtosis", "entropy", "flatness",
                     "slope", "slope0_500", "slope500_1500", "rolloff25", "rolloff50", "rolloff75", "rolloff90",
                     "alpha_ratio", "hammarberg", "band0_500", "band500_1k", "band1k_2k", "band2k_4k", "band4k_8k",
                     "zcr"])
VOICED_NAMES = ["f0_semitones", "hnr"]
PAIR_NAMES = ["jitter", "shimmer"]
FORMANT_NAMES = ["f1", "f2", "f3", "bw1", "bw2", "bw3"]


def _band(lo_hz: float, hi_hz: float) -> np.ndarray:
    """float32 [bins] 1 where lo <= bin frequency < hi (the top band takes Nyquist too)."""
    f = _FREQS_KHZ * 1000.0
    upper = f <= hi_hz if hi_hz >= SAMPLE_RATE / 2 else f < hi_hz
    return ((f >= lo_hz) & upper).astype(np.float32)


def _frames(waveform):
    """[frames, FRAME] raw frames of the waveform, zero-padded to at least one frame."""
    n = tf.shape(waveform)[0]
    padded = tf.pad(waveform, [[0, tf.maximum(FRAME - n, 0)]])
    return tf.signal.frame(padded, FRAME, HOP, pad_end=False)


def level_normalised(waveform):
    """The waveform scaled so that the mean log power of its loudest fifth of frames is 0 dB (the
    network's level reference, features/level.py): a gain does not move the functionals."""
    waveform = tf.convert_to_tensor(waveform, tf.float32)
    power = tf.reduce_mean(tf.square(_frames(waveform)), axis=1)
    top = tf.math.top_k(power, level.top_count(tf.shape(power)[0])).values
    return waveform * tf.exp(-0.5 * tf.reduce_mean(tf.math.log(top + 1e-20)))


def _regression_slope(values, x: np.ndarray):
    """[frames]: least-squares slope of ``values`` [frames, k] against the fixed abscissa x [k]."""
    xc = (x - x.mean()).astype(np.float32)
    mean = tf.reduce_mean(values, axis=1, keepdims=True)
    return tf.reduce_sum((values - mean) * xc, axis=1) / float(np.sum(xc * xc))


def spectral_descriptors(frames):
    """[frames, len(SPECTRAL_NAMES)] float32 (module docstring, ``spectral``)."""
    window = tf.signal.hamming_window(FRAME, periodic=True)
    spectrum = tf.signal.rfft(frames * window, fft_length=[N_FFT])
    magnitude = tf.abs(spectrum)
    power = tf.square(magnitude)
    total = tf.reduce_sum(power, axis=1) + EPS

    log_rms = 10.0 * tf.math.log(tf.reduce_mean(tf.square(frames), axis=1) + EPS) / math.log(10.0)
    mel_matrix = tf.signal.linear_to_mel_weight_matrix(N_MELS, N_FFT // 2 + 1, SAMPLE_RATE, 20.0, 8000.0)
    mel = tf.matmul(power, mel_matrix)
    loudness = tf.reduce_sum(tf.pow(mel + EPS, 0.3), axis=1)
    log_mel = tf.math.log(mel + 1e-8)
    mfcc = tf.signal.mfccs_from_log_mel_spectrograms(log_mel)[:, 1:N_MFCC + 1]

    share = magnitude / (tf.reduce_sum(magnitude, axis=1, keepdims=True) + EPS)
    flux = tf.concat([tf.zeros([1]), tf.reduce_sum(tf.square(share[1:] - share[:-1]), axis=1)], axis=0)

    p = power / total[:, None]
    f = tf.constant(_FREQS_KHZ)
    centroid = tf.reduce_sum(p * f, axis=1)
    deviation = f[None, :] - centroid[:, None]
    variance = tf.reduce_sum(p * tf.square(deviation), axis=1)
    skewness = tf.reduce_sum(p * deviation ** 3, axis=1) / (variance ** 1.5 + EPS)
    kurtosis = tf.reduce_sum(p * deviation ** 4, axis=1) / (variance ** 2 + EPS)
    entropy = -tf.reduce_sum(p * tf.math.log(p + EPS), axis=1) / math.log(N_FFT // 2 + 1)
    log_power = tf.math.log(power + EPS)
    flatness = tf.reduce_mean(log_power, axis=1) - tf.math.log(tf.reduce_mean(power, axis=1) + EPS)

    db = 10.0 * log_power / math.log(10.0)
    low = _band(0.0, 500.0) > 0
    mid = _band(500.0, 1500.0) > 0
    slope = _regression_slope(magnitude, _FREQS_KHZ)
    slope_low = _regression_slope(tf.boolean_mask(db, low, axis=1), _FREQS_KHZ[low])
    slope_mid = _regression_slope(tf.boolean_mask(db, mid, axis=1), _FREQS_KHZ[mid])

    cumulative = tf.cumsum(p, axis=1)
    rolloffs = [tf.reduce_sum(tf.cast(cumulative < q, tf.float32), axis=1) * (SAMPLE_RATE / N_FFT / 1000.0)
                for q in (0.25, 0.5, 0.75, 0.9)]

    def band_db(lo, hi):
        return 10.0 * tf.math.log(tf.reduce_sum(power * _band(lo, hi), axis=1) + EPS) / math.log(10.0)

    def peak_db(lo, hi):
        return 10.0 * tf.math.log(tf.reduce_max(power * _band(lo, hi), axis=1) + EPS) / math.log(10.0)

    alpha = band_db(50.0, 1000.0) - band_db(1000.0, 5000.0)
    hammarberg = peak_db(0.0, 2000.0) - peak_db(2000.0, 5000.0)
    total_db = 10.0 * tf.math.log(total) / math.log(10.0)
    edges = ((0, 500), (500, 1000), (1000, 2000), (2000, 4000), (4000, 8000))
    bands = [band_db(lo, hi) - total_db for lo, hi in edges]
    signs = tf.sign(frames - tf.reduce_mean(frames, axis=1, keepdims=True))
    zcr = tf.reduce_mean(tf.cast(signs[:, 1:] * signs[:, :-1] < 0, tf.float32), axis=1)

    columns = [log_rms, loudness, *tf.unstack(log_mel, N_MELS, axis=1), *tf.unstack(mfcc, N_MFCC, axis=1),
               flux, centroid, variance, skewness, kurtosis, entropy, flatness, slope, slope_low, slope_mid,
               *rolloffs, alpha, hammarberg, *bands, zcr]
    return tf.stack(columns, axis=1), log_rms


def yin(waveform, n_frames):
    """(f0 Hz [frames], aperiodicity d' [frames], dip found [frames] bool): YIN on a segment of
    ``_YIN_LENGTH`` samples starting at every frame start; the difference function from an FFT
    cross term and running energies (float32, its terms are sums of at most FRAME products)."""
    n = tf.shape(waveform)[0]
    needed = (n_frames - 1) * HOP + _YIN_LENGTH
    padded = tf.pad(waveform, [[0, tf.maximum(needed - n, 0)]])[:needed]
    segments = tf.signal.frame(padded, _YIN_LENGTH, HOP, pad_end=False)[:n_frames]
    segments = segments - tf.reduce_mean(segments[:, :FRAME], axis=1, keepdims=True)
    lags = _TAU_MAX + 2
    cross = tf.signal.irfft(tf.math.conj(tf.signal.rfft(segments[:, :FRAME], fft_length=[_YIN_FFT]))
                            * tf.signal.rfft(segments, fft_length=[_YIN_FFT]), fft_length=[_YIN_FFT])[:, :lags]
    running = tf.pad(tf.cumsum(tf.square(segments), axis=1), [[0, 0], [1, 0]])
    shifted = running[:, FRAME:FRAME + lags] - running[:, :lags]  # sum_{j<FRAME} x_{j+tau}^2
    diff = tf.maximum(shifted[:, :1] + shifted - 2.0 * cross, 0.0)
    summed = tf.cumsum(diff[:, 1:], axis=1)
    taus = tf.range(1, lags, dtype=tf.float32)
    safe = summed > 1e-6 * (shifted[:, :1] + EPS)
    tail = tf.where(safe, diff[:, 1:] * taus / tf.where(safe, summed, tf.ones_like(summed)), tf.ones_like(summed))
    cmnd = tf.concat([tf.ones_like(diff[:, :1]), tail], axis=1)

    lo, hi = _TAU_MIN, _TAU_MAX + 1
    window = cmnd[:, lo:hi]
    local_min = (window <= cmnd[:, lo - 1:hi - 1]) & (window < cmnd[:, lo + 1:hi + 1])
    candidate = local_min & (window < VOICING_THRESHOLD)
    found = tf.reduce_any(candidate, axis=1)
    index = tf.range(hi - lo)
    first = tf.reduce_min(tf.where(candidate, index, hi - lo), axis=1)
    lowest = tf.cast(tf.argmin(window, axis=1), tf.int32)
    best = tf.where(found, first, lowest) + lo
    before = tf.gather(cmnd, best - 1, batch_dims=1)
    at = tf.gather(cmnd, best, batch_dims=1)
    after = tf.gather(cmnd, best + 1, batch_dims=1)
    curvature = before - 2.0 * at + after
    curved = curvature > 1e-6
    shift = tf.where(curved, 0.5 * (before - after) / tf.where(curved, curvature, tf.ones_like(curvature)), 0.0)
    period = tf.cast(best, tf.float32) + tf.clip_by_value(shift, -1.0, 1.0)
    f0 = SAMPLE_RATE / period
    return f0, tf.clip_by_value(at, 0.0, 1.0), found & (f0 >= F0_MIN_HZ) & (f0 <= F0_MAX_HZ)


def formants(frames):
    """[frames, 6] F1-F3 and bandwidths (Hz), and [frames] bool: three formants found."""
    emphasised = tf.concat([frames[:, :1], frames[:, 1:] - 0.97 * frames[:, :-1]], axis=1)
    x = emphasised * tf.signal.hamming_window(FRAME, periodic=False)
    spectrum = tf.signal.rfft(x, fft_length=[1024])
    r = tf.signal.irfft(tf.cast(tf.square(tf.abs(spectrum)), tf.complex64), fft_length=[1024])[:, :LPC_ORDER + 1]
    # A -40 dB white-noise floor keeps Levinson-Durbin stable on silence and pure tones.
    r = tf.concat([r[:, :1] * (1.0 + 1e-4) + EPS, r[:, 1:]], axis=1)

    rows = tf.shape(frames)[0]
    a = tf.concat([tf.ones([rows, 1]), tf.zeros([rows, LPC_ORDER])], axis=1)
    error = r[:, 0]
    for i in range(1, LPC_ORDER + 1):
        acc = tf.reduce_sum(a[:, :i] * tf.reverse(r[:, 1:i + 1], axis=[1]), axis=1)
        k = -acc / error
        head = a[:, :i + 1] + k[:, None] * tf.reverse(a[:, :i + 1], axis=[1])
        a = tf.concat([head, a[:, i + 1:]], axis=1)
        error = tf.maximum(error * (1.0 - tf.square(k)), EPS)

    # Companion matrix of z^p + a1 z^(p-1) + ... + ap: its eigenvalues are the LPC poles.
    shift = tf.eye(LPC_ORDER - 1, LPC_ORDER)
    companion = tf.concat([-a[:, None, 1:], tf.broadcast_to(shift, [rows, LPC_ORDER - 1, LPC_ORDER])], axis=1)
    poles = tf.linalg.eigvals(companion)
    angle = tf.math.angle(poles)
    radius = tf.maximum(tf.abs(poles), EPS)
    frequency = angle * (SAMPLE_RATE / (2.0 * math.pi))
    bandwidth = -tf.math.log(radius) * (SAMPLE_RATE / math.pi)
    valid = (angle > 0) & (frequency > 90.0) & (frequency < 5500.0) & (bandwidth < 700.0)
    order = tf.argsort(tf.where(valid, frequency, 1e6), axis=1)[:, :3]
    f = tf.gather(frequency, order, batch_dims=1)
    bw = tf.gather(bandwidth, order, batch_dims=1)
    found = tf.reduce_all(tf.gather(valid, order, batch_dims=1), axis=1)
    return tf.concat([f, bw], axis=1), found


def frame_descriptors(waveform):
    """Groups of LLDs of a 1-D float32 16 kHz waveform: a dict name -> (values [frames, n],
    mask [frames] bool, names); see the module docstring."""
    waveform = tf.convert_to_tensor(waveform, tf.float32)
    frames = _frames(waveform)
    n_frames = tf.shape(frames)[0]
    spectral, log_rms = spectral_descriptors(frames)
    f0, aperiodicity, dip = yin(waveform, n_frames)
    voiced = dip & (log_rms > tf.reduce_max(log_rms) - VOICING_RELATIVE_DB) & (log_rms > -70.0)
    semitones = 12.0 * tf.math.log(f0 / 27.5) / math.log(2.0)
    hnr = 10.0 * tf.math.log(tf.maximum(1.0 - aperiodicity, 1e-3) / tf.maximum(aperiodicity, 1e-3)) / math.log(10.0)

    period = 1.0 / f0
    jitter = tf.abs(period[1:] - period[:-1]) / (0.5 * (period[1:] + period[:-1]))
    shimmer = tf.abs(log_rms[1:] - log_rms[:-1])
    pairs = tf.concat([[False], voiced[1:] & voiced[:-1]], axis=0)
    pair_values = tf.concat([tf.zeros([1, 2]), tf.stack([jitter, shimmer], axis=1)], axis=0)

    formant_values, found = formants(frames)
    all_frames = tf.ones([n_frames], tf.bool)
    return {
        "spectral": (spectral, all_frames, SPECTRAL_NAMES),
        "voiced": (tf.stack([semitones, hnr], axis=1), voiced, VOICED_NAMES),
        "pairs": (pair_values, pairs, PAIR_NAMES),
        "formants": (formant_values, voiced & found, FORMANT_NAMES),
    }
