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
- ``voiced`` (voiced frames): F0 in semitones above 27.5 Hz and HNR (dB), both from the
  network's YIN (``features.pitch.yin``: cumulative-mean-normalised difference over 2.5 periods
  of ``F0_MIN_HZ`` centred on the frame) with this module's settings; HNR = 10 log10((1 - d') / d')
  at the chosen lag, d' being the aperiodic share of the window's energy.
- ``pairs`` (two voiced frames in a row): frame-level jitter and shimmer. They are not openSMILE's
  cycle-to-cycle measures: jitter is the relative change of the YIN period from one frame to the
  next, |T_t - T_{t-1}| / mean(T_t, T_{t-1}); shimmer the absolute change of the frame's RMS level
  in dB. Both grow with the same period / amplitude irregularity, at a 10 ms instead of a cycle
  resolution.
- ``formants`` (voiced frames with three formants found): F1-F3 and their bandwidths (Hz) from
  LPC of order ``LPC_ORDER`` of the pre-emphasised frame (autocorrelation from the spectral
  group's power spectrum, Levinson-Durbin), the resonances of its envelope (``formants``) between
  90 Hz and 5.5 kHz with bandwidths under 700 Hz.

LiteRT's builtin operators run every step (no inverse FFT, complex arithmetic, DCT or eigenvalues),
so ``model.tflite`` holds the functionals classifier as the SavedModel does.

``frame_descriptors`` returns each group as ``(values [frames, lld], mask [frames], names)``.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from ser_keras.features import level
from ser_keras.features import pitch

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
PRE_EMPHASIS = 0.97
FORMANT_MIN_HZ, FORMANT_MAX_HZ, FORMANT_MAX_BANDWIDTH_HZ = 90.0, 5500.0, 700.0
ENVELOPE_FFT = 1024  # the LPC envelope's grid for the formants: 15.6 Hz bins
EPS = 1e-10


class YinParams(NamedTuple):
    """The settings ``features.pitch.yin`` reads (a ``FrontEndParams`` has them too)."""
    sample_rate: int
    frame: int
    hop: int
    f0_min_hz: float
    f0_max_hz: float
    voicing_threshold: float


YIN_PARAMS = YinParams(SAMPLE_RATE, FRAME, HOP, F0_MIN_HZ, F0_MAX_HZ, VOICING_THRESHOLD)
_FREQS_KHZ = np.arange(N_FFT // 2 + 1, dtype=np.float32) * (SAMPLE_RATE / N_FFT / 1000.0)
_ENVELOPE_BINS = int(math.ceil(FORMANT_MAX_HZ * ENVELOPE_FFT / SAMPLE_RATE))
# Lags 0..LPC_ORDER of the pre-emphasised frame's autocorrelation from the frame's N_FFT-point power
# spectrum: the pre-emphasis filter's power gain, then the inverse real FFT, as one product
# (N_FFT >= FRAME + LPC_ORDER: no lag wraps).
_OMEGA = 2.0 * np.pi * np.arange(N_FFT // 2 + 1) / N_FFT
_EMPHASISED_AUTOCORRELATION = (
    (1.0 + PRE_EMPHASIS ** 2 - 2.0 * PRE_EMPHASIS * np.cos(_OMEGA))[:, None]
    * np.where((np.arange(N_FFT // 2 + 1) % (N_FFT // 2)) == 0, 1.0, 2.0)[:, None]
    * np.cos(_OMEGA[:, None] * np.arange(LPC_ORDER + 1)[None, :]) / N_FFT).astype(np.float32)
# A(e^jw) of the LPC coefficients at the envelope's bins up to FORMANT_MAX_HZ and one past
# (the real DFT of a few coefficients as one product: cosines, then minus sines).
_ENVELOPE_ANGLES = (2.0 * np.pi / ENVELOPE_FFT * np.arange(LPC_ORDER + 1)[:, None]
                    * np.arange(_ENVELOPE_BINS + 2)[None, :])
_ENVELOPE_DFT = np.concatenate([np.cos(_ENVELOPE_ANGLES), -np.sin(_ENVELOPE_ANGLES)], axis=1).astype(np.float32)
# MFCC 1..N_MFCC of the log mel powers: tf.signal.mfccs_from_log_mel_spectrograms' scaled DCT-II as
# one product (LiteRT has no DCT: its FFT route slices a complex tensor).
_MFCC_DCT = (2.0 * np.cos(np.pi * np.arange(1, N_MFCC + 1)[None, :] * (2 * np.arange(N_MELS)[:, None] + 1)
                          / (2 * N_MELS)) / np.sqrt(2.0 * N_MELS)).astype(np.float32)

SPECTRAL_NAMES = (["log_rms", "loudness"] + [f"mel{i}" for i in range(N_MELS)]
                  + [f"mfcc{i}" for i in range(1, N_MFCC + 1)]
                  + ["flux", "centroid", "variance", "skewness", "kurtosis", "entropy", "flatness",
                     "slope", "slope0_500", "slope500_1500", "rolloff25", "rolloff50", "rolloff75", "rolloff90",
                     "alpha_ratio", "hammarberg", "band0_500", "band500_1k", "band1k_2k", "band2k_4k", "band4k_8k",
                     "zcr"])
VOICED_NAMES = ["f0_semitones", "hnr"]
PAIR_NAMES = ["jitter", "shimmer"]
FORMANT_NAMES = ["f1", "f2", "f3", "bw1", "bw2", "bw3"]


_SHARE_BANDS = ((0.0, 500.0), (500.0, 1000.0), (1000.0, 2000.0), (2000.0, 4000.0), (4000.0, 8000.0))
_POWER_BANDS = ((50.0, 1000.0), (1000.0, 5000.0), *_SHARE_BANDS)  # alpha ratio's two, then the shares


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


def _centred(x: np.ndarray) -> np.ndarray:
    """float32 weights that give, as a product with values [frames, len(x)], the values'
    least-squares slope against the abscissa x (sum((v - mean) * xc) = sum(v * xc))."""
    xc = x - x.mean()
    return (xc / np.sum(xc * xc)).astype(np.float32)


def _spectral_weights():
    """The linear statistics of a frame's spectra, each a column of one product: of the power
    spectrum (total, raw moments 1-4 of frequency in kHz, band powers), of the magnitude (its sum,
    its slope), of the log power (its mean, its slopes under 500 Hz and in 500-1500 Hz)."""
    f = _FREQS_KHZ.astype(np.float64)
    bands = [_band(lo, hi) for lo, hi in _POWER_BANDS]
    power = np.stack([np.ones_like(f), f, f ** 2, f ** 3, f ** 4, *bands], axis=1)
    magnitude = np.stack([np.ones_like(f), _centred(f)], axis=1)
    low, mid = _band(0.0, 500.0) > 0, _band(500.0, 1500.0) > 0
    log_power = np.stack([np.full_like(f, 1.0 / f.size), _centred_in(f, low), _centred_in(f, mid)], axis=1)
    return [w.astype(np.float32) for w in (power, magnitude, log_power)]


def _centred_in(f: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """``_centred`` of the frequencies inside a band, zero elsewhere ([bins])."""
    weights = np.zeros_like(f)
    weights[inside] = _centred(f[inside])
    return weights


_SPECTRAL_WEIGHTS = _spectral_weights()


@functools.lru_cache(maxsize=None)
def _mel_matrix() -> np.ndarray:
    """[N_FFT // 2 + 1, N_MELS] mel filters (20 Hz - 8 kHz), computed once, outside any graph
    being traced, so a trace holds one constant instead of the ops that build it."""
    with tf.init_scope():
        return tf.signal.linear_to_mel_weight_matrix(N_MELS, N_FFT // 2 + 1, SAMPLE_RATE, 20.0, 8000.0).numpy()


def _db(x):
    return 10.0 * tf.math.log(x + EPS) / math.log(10.0)


def spectral_descriptors(frames):
    """([frames, len(SPECTRAL_NAMES)] float32 (module docstring, ``spectral``), the log RMS energy
    [frames], the power spectra of the Hamming-windowed frames [frames, N_FFT // 2 + 1])."""
    window = tf.signal.hamming_window(FRAME, periodic=True)
    spectrum = tf.signal.rfft(frames * window, fft_length=[N_FFT])
    power = tf.square(tf.math.real(spectrum)) + tf.square(tf.math.imag(spectrum))
    magnitude = tf.sqrt(power)
    power_weights, magnitude_weights, log_weights = _SPECTRAL_WEIGHTS
    sums = tf.matmul(power, power_weights)
    total = sums[:, 0] + EPS

    log_rms = _db(tf.reduce_mean(tf.square(frames), axis=1))
    mel = tf.matmul(power, _mel_matrix())
    loudness = tf.reduce_sum(tf.pow(mel + EPS, 0.3), axis=1)
    log_mel = tf.math.log(mel + 1e-8)
    mfcc = tf.matmul(log_mel, _MFCC_DCT)

    magnitude_sums = tf.matmul(magnitude, magnitude_weights)
    share = magnitude / (magnitude_sums[:, :1] + EPS)
    flux = tf.concat([tf.zeros([1]), tf.reduce_sum(tf.square(share[1:] - share[:-1]), axis=1)], axis=0)
    slope = magnitude_sums[:, 1]

    # Central moments of the normalised power spectrum p from its raw moments m1..m4.
    m1, m2, m3, m4 = (sums[:, k] / total for k in (1, 2, 3, 4))
    centroid = m1
    variance = tf.maximum(m2 - m1 * m1, 0.0)
    skewness = (m3 - 3.0 * m1 * m2 + 2.0 * m1 ** 3) / (variance ** 1.5 + EPS)
    kurtosis = (m4 - 4.0 * m1 * m3 + 6.0 * m1 * m1 * m2 - 3.0 * m1 ** 4) / (variance ** 2 + EPS)
    p = power / total[:, None]
    entropy = -tf.reduce_sum(p * tf.math.log(p + EPS), axis=1) / math.log(N_FFT // 2 + 1)
    log_sums = tf.matmul(tf.math.log(power + EPS), log_weights)
    flatness = log_sums[:, 0] - tf.math.log(tf.reduce_mean(power, axis=1) + EPS)
    slope_low, slope_mid = (log_sums[:, k] * (10.0 / math.log(10.0)) for k in (1, 2))  # of the dB spectrum

    cumulative = tf.cumsum(p, axis=1)
    rolloffs = [tf.reduce_sum(tf.cast(cumulative < q, tf.float32), axis=1) * (SAMPLE_RATE / N_FFT / 1000.0)
                for q in (0.25, 0.5, 0.75, 0.9)]

    band = {edges: sums[:, 5 + i] for i, edges in enumerate(_POWER_BANDS)}
    alpha = _db(band[(50.0, 1000.0)]) - _db(band[(1000.0, 5000.0)])
    under_2k, under_5k = (int(np.sum(_FREQS_KHZ < khz)) for khz in (2.0, 5.0))
    hammarberg = (_db(tf.reduce_max(power[:, :under_2k], axis=1))
                  - _db(tf.reduce_max(power[:, under_2k:under_5k], axis=1)))
    total_db = _db(total - EPS)
    bands = [_db(band[edges]) - total_db for edges in _SHARE_BANDS]
    signs = tf.sign(frames - tf.reduce_mean(frames, axis=1, keepdims=True))
    zcr = tf.reduce_mean(tf.cast(signs[:, 1:] * signs[:, :-1] < 0, tf.float32), axis=1)

    shape = [flux, centroid, variance, skewness, kurtosis, entropy, flatness, slope, slope_low, slope_mid,
             *rolloffs, alpha, hammarberg, *bands, zcr]
    columns = [tf.stack([log_rms, loudness], axis=1), log_mel, mfcc, tf.stack(shape, axis=1)]
    return tf.concat(columns, axis=1), log_rms, power


def formants(power):
    """[frames, 6] F1-F3 and bandwidths (Hz), and [frames] bool: three formants found, from the
    frames' ``N_FFT``-point power spectra (module docstring). The LPC of the pre-emphasised frame
    (its autocorrelation from the power spectrum times the pre-emphasis filter's gain); the
    resonances of its envelope read from the minima of |A(e^jw)|^2 on an ``ENVELOPE_FFT``-point
    grid rather than from the roots of A (LiteRT has no eigenvalue op). Near a pole of radius rho
    at angle theta, |A|^2 ~ C ((1 - rho)^2 + rho (w - theta)^2): a parabola through the minimum
    bin and its neighbours gives theta (its vertex) and rho (its depth over its curvature), the
    bandwidth being -ln(rho) fs / pi as for a root."""
    r = tf.matmul(power, _EMPHASISED_AUTOCORRELATION)
    # A -40 dB white-noise floor keeps Levinson-Durbin stable on silence and pure tones.
    r = tf.concat([r[:, :1] * (1.0 + 1e-4) + EPS, r[:, 1:]], axis=1)

    rows = tf.shape(power)[0]
    a = tf.concat([tf.ones([rows, 1]), tf.zeros([rows, LPC_ORDER])], axis=1)
    error = r[:, 0]
    for i in range(1, LPC_ORDER + 1):
        acc = tf.reduce_sum(a[:, :i] * tf.reverse(r[:, 1:i + 1], axis=[1]), axis=1)
        k = -acc / error
        head = a[:, :i + 1] + k[:, None] * tf.reverse(a[:, :i + 1], axis=[1])
        a = tf.concat([head, a[:, i + 1:]], axis=1)
        error = tf.maximum(error * (1.0 - tf.square(k)), EPS)

    response = tf.matmul(a, _ENVELOPE_DFT)  # A at bins 0 .. _ENVELOPE_BINS + 1: real parts, then imaginary
    inverse = tf.square(response[:, :_ENVELOPE_BINS + 2]) + tf.square(response[:, _ENVELOPE_BINS + 2:])  # |A|^2
    below, at, above = inverse[:, :-2], inverse[:, 1:-1], inverse[:, 2:]
    minimum = (at < below) & (at <= above)
    step = 2.0 * math.pi / ENVELOPE_FFT
    curvature = tf.maximum(0.5 * (above - 2.0 * at + below), EPS * at)  # per step^2
    offset = tf.clip_by_value(0.25 * (below - above) / curvature, -1.0, 1.0)  # vertex, in bins
    depth = tf.maximum(at - curvature * tf.square(offset), 0.0)
    u = depth / curvature * step * step  # (1 - rho)^2 / rho
    rho = tf.maximum(0.5 * ((2.0 + u) - tf.sqrt(tf.maximum(u * (4.0 + u), 0.0))), EPS)
    bins = tf.range(1, _ENVELOPE_BINS + 1, dtype=tf.float32)
    frequency = (bins + offset) * (SAMPLE_RATE / ENVELOPE_FFT)
    bandwidth = -tf.math.log(rho) * (SAMPLE_RATE / math.pi)
    valid = (minimum & (frequency > FORMANT_MIN_HZ) & (frequency < FORMANT_MAX_HZ)
             & (bandwidth < FORMANT_MAX_BANDWIDTH_HZ))
    rank = tf.cumsum(tf.cast(valid, tf.int32), axis=1)  # the k-th valid resonance upwards in frequency
    chosen = [valid & (rank == k) for k in (1, 2, 3)]
    f = [tf.reduce_sum(tf.where(c, frequency, 0.0), axis=1) for c in chosen]
    bw = [tf.reduce_sum(tf.where(c, bandwidth, 0.0), axis=1) for c in chosen]
    return tf.stack(f + bw, axis=1), rank[:, -1] >= 3


def frame_descriptors(waveform):
    """Groups of LLDs of a 1-D float32 16 kHz waveform: a dict name -> (values [frames, n],
    mask [frames] bool, names); see the module docstring."""
    waveform = tf.convert_to_tensor(waveform, tf.float32)
    frames = _frames(waveform)
    n_frames = tf.shape(frames)[0]
    spectral, log_rms, power = spectral_descriptors(frames)
    f0, dip, aperiodicity = (row[0] for row in pitch.yin(waveform[None], n_frames, YIN_PARAMS))
    voiced = dip & (log_rms > tf.reduce_max(log_rms) - VOICING_RELATIVE_DB) & (log_rms > -70.0)
    semitones = 12.0 * tf.math.log(f0 / 27.5) / math.log(2.0)
    hnr = 10.0 * tf.math.log(tf.maximum(1.0 - aperiodicity, 1e-3) / tf.maximum(aperiodicity, 1e-3)) / math.log(10.0)

    period = 1.0 / f0
    jitter = tf.abs(period[1:] - period[:-1]) / (0.5 * (period[1:] + period[:-1]))
    shimmer = tf.abs(log_rms[1:] - log_rms[:-1])
    pairs = tf.concat([[False], voiced[1:] & voiced[:-1]], axis=0)
    pair_values = tf.concat([tf.zeros([1, 2]), tf.stack([jitter, shimmer], axis=1)], axis=0)

    formant_values, found = formants(power)
    all_frames = tf.ones([n_frames], tf.bool)
    return {
        "spectral": (spectral, all_frames, SPECTRAL_NAMES),
        "voiced": (tf.stack([semitones, hnr], axis=1), voiced, VOICED_NAMES),
        "pairs": (pair_values, pairs, PAIR_NAMES),
        "formants": (formant_values, voiced & found, FORMANT_NAMES),
    }
