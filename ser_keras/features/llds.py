"""Frame-level low-level descriptors (LLDs), in TensorFlow ops, and their utterance-level functionals.

Section 4.1 of the paper lists F0, formants, frame energy, zero-crossing rate and 13 MFCC as
the LLDs of each speech frame. ``frame_llds`` computes them on exactly the frame grid of
``spectrogram.log_spectrogram`` (frame ``i`` centred on sample ``i * hop + frame / 2``), so the
two can be stacked or compared frame by frame; extraction and the export graph (exp2 serves
from a raw waveform) run the same ops. Columns, in order (see ``lld_names``):

==============  ==============================================================================
``f0``          fundamental frequency in Hz, 0 where unvoiced: the YIN of the pitch channels
                (``features.pitch``: the first dip below ``voicing_threshold`` between
                ``1/f0_max_hz`` and ``1/f0_min_hz``, parabolic interpolation, integrated over
                2.5 periods of ``f0_min_hz`` on a window centred on the frame centre).
``voicing``     1.0 where voiced, else 0.0: a YIN dip below the threshold and a frame energy
                no lower than -65 dBFS and no more than 40 dB below the loudest frame.
``f1..f3``      first three formants in Hz from LPC (order ``lpc_order``) of the pre-emphasised,
                Hamming-windowed frame: autocorrelation, batched Levinson-Durbin, roots as the
                eigenvalues of the companion matrices; a root is a formant when it lies
                between 90 Hz and Nyquist - 90 Hz with a bandwidth under 400 Hz (order 18 at
                16 kHz by default: 12 poles over 0..8 kHz miss F1/F2 in real speech). Computed
                on voiced frames only; 0 on unvoiced frames and where fewer are found.
``log_energy``  ``log(sum(frame**2) + log_floor)`` of the raw frame.
``zcr``         fraction of adjacent sample pairs in the frame whose sign differs.
``mfcc_0..``    ``n_mfcc`` MFCCs: DCT-II (orthonormal) of the log of a Slaney mel filterbank
                (``n_mels`` bands, 0..sr/2, equal to ``librosa.filters.mel``, tested) applied to
                the same Hann/``n_fft`` power spectrum as the spectrogram.
==============  ==============================================================================

No value is ever NaN or infinite: silent, constant or very short input gives defined values
(unvoiced, zero formants, ``log(log_floor)`` energy).

``functionals`` (NumPy: statistics, no signal processing) turns a (frames, D) LLD matrix into
one vector: per LLD the mean, standard deviation, min, max, range, 1/25/50/75/99th percentiles,
skewness, excess kurtosis and the linear-regression slope against the frame index (per frame).
F0 and the formants are summarised over voiced frames only (formants also only where one was
found), the other LLDs over all frames; a set with no frames gives zeros, a constant one zero
spread, skewness, kurtosis and slope.
"""

from __future__ import annotations

import functools

import numpy as np

from ser_keras.config import FeatureConfig
from ser_keras.features import spectrogram
from ser_keras.features.channels import SILENCE_ABSOLUTE_DB
from ser_keras.features.pitch import tf_pitch_channels

#: Columns summarised over voiced frames only (formants also where non-zero).
VOICED_ONLY = ("f0", "f1", "f2", "f3")
FORMANTS = ("f1", "f2", "f3")
STATS = ("mean", "std", "min", "max", "range", "p1", "p25", "p50", "p75", "p99", "skewness", "kurtosis", "slope")
PERCENTILES = (1.0, 25.0, 50.0, 75.0, 99.0)

FORMANT_MIN_HZ = 90.0
FORMANT_MAX_BANDWIDTH_HZ = 400.0
N_FORMANTS = 3


def lld_names(config) -> list:
    """Column names of `frame_llds` for `config` (a FeatureConfig)."""
    return ["f0", "voicing", "f1", "f2", "f3", "log_energy", "zcr"] + [f"mfcc_{i}" for i in range(config.n_mfcc)]


def functional_names(config) -> list:
    """Names of the entries of `functionals`: '<lld>_<stat>', LLD-major."""
    return [f"{name}_{stat}" for name in lld_names(config) for stat in STATS]


def frame_llds(waveform, n_frames, params):
    """LLDs ``(batch, frames, len(lld_names))`` float32 of zero-padded ``(batch, samples)``
    waveforms, every row's first ``n_frames[b]`` frames valid (the voicing gate's loudest frame
    is taken over them). ``params``: a ``FrontEndParams`` (frame grid, F0 range, LPC and MFCC
    settings)."""
    import tensorflow as tf

    waveform = tf.convert_to_tensor(waveform, tf.float32)
    frames = tf.cast(spectrogram.frames(waveform, params.frame, params.hop), tf.float64)  # [B, T, frame]
    energy = tf.reduce_sum(frames * frames, axis=2)
    log_energy = tf.math.log(energy + params.log_floor)
    # The sign bit, as np.signbit reads it (-0.0 counts as negative).
    signs = tf.bitcast(tf.cast(frames, tf.float32), tf.int32) < 0
    zcr = tf.reduce_sum(tf.cast(signs[:, :, 1:] != signs[:, :, :-1], tf.float64), axis=2) / float(params.frame - 1)

    # F0 and voicing from the pitch channels (YIN + the relative gate), plus the absolute gate.
    pitch = tf_pitch_channels(waveform, n_frames, params)
    voiced = (pitch[:, :, 1] > 0.5) & (energy / params.frame >= 10.0 ** (SILENCE_ABSOLUTE_DB / 10.0))
    f0 = tf.where(voiced, tf.exp(tf.cast(pitch[:, :, 0], tf.float64)), tf.zeros_like(energy))

    formants = _voiced_formants(waveform, voiced, params)
    power = tf.cast(spectrogram.power_spectrum(waveform, params), tf.float64)
    mfcc = mel_cepstrum(power, params)
    out = tf.concat([f0[:, :, None], tf.cast(voiced, tf.float64)[:, :, None], formants, log_energy[:, :, None],
                     zcr[:, :, None], mfcc], axis=2)
    # Belt and braces: the arithmetic above is guarded, but a feature must never be NaN.
    return tf.cast(tf.where(tf.math.is_finite(out), out, tf.zeros_like(out)), tf.float32)


# -------------------------------------------------------------------------------- formants


def _voiced_formants(waveform, voiced, params):
    """``[B, T, 3]`` float64: ``lpc_formants`` of the voiced frames, 0 elsewhere. Formants only
    where voiced: they are vowel/sonorant resonances, and root finding on silence and noise
    frames (near-nilpotent companion matrices) is slow and meaningless."""
    import tensorflow as tf

    # Each frame with the sample before it (0 before the first), for the pre-emphasis on the
    # continuous signal.
    padded = tf.pad(waveform, [[0, 0], [1, 0]])
    extended = tf.cast(spectrogram.frames(padded, params.frame + 1, params.hop), tf.float64)
    extended = extended[:, :tf.shape(voiced)[1]]
    where = tf.where(voiced)
    chosen = tf.gather_nd(extended, where)  # [N, frame + 1]
    emphasised = chosen[:, 1:] - params.pre_emphasis * chosen[:, :-1]
    found = lpc_formants(emphasised, params.sample_rate, params.lpc_order)
    shape = tf.concat([tf.shape(voiced, out_type=tf.int64), [N_FORMANTS]], 0)
    return tf.scatter_nd(where, found, shape)


@functools.lru_cache(maxsize=8)
def _hamming(length: int) -> np.ndarray:
    window = np.hamming(length)
    window.setflags(write=False)
    return window


def lpc(frames, order: int):
    """LPC polynomials ``[N, order + 1]`` float64, ``a[:, 0] = 1``, of ``[N, length]`` frames:
    autocorrelation, then Levinson-Durbin over all frames at once."""
    import tensorflow as tf

    length = int(frames.shape[-1])
    order = min(order, length - 1)
    autocorr = [tf.reduce_sum(frames[:, :length - lag] * frames[:, lag:], axis=1) for lag in range(order + 1)]
    # White-noise correction (40 dB) and a floor keep silent and periodic frames well posed.
    autocorr[0] = autocorr[0] * (1.0 + 1e-4) + 1e-12
    coeffs = [tf.ones_like(autocorr[0])] + [tf.zeros_like(autocorr[0])] * order
    error = autocorr[0]
    for i in range(1, order + 1):
        acc = autocorr[i]
        for j in range(1, i):
            acc = acc + coeffs[j] * autocorr[i - j]
        reflection = -acc / error
        coeffs = ([coeffs[0]] + [coeffs[j] + reflection * coeffs[i - j] for j in range(1, i)] + [reflection]
                  + coeffs[i + 1:])
        error = tf.maximum(error * (1.0 - reflection * reflection), 1e-30)
    return tf.stack(coeffs, axis=1)


def lpc_formants(frames, sample_rate: int, order: int):
    """First N_FORMANTS formant frequencies ``[N, 3]`` in Hz (0 where not found) of ``[N, length]``
    pre-emphasised frames (float64)."""
    import tensorflow as tf

    length = int(frames.shape[-1])
    coeffs = lpc(frames * tf.constant(_hamming(length), tf.float64), order)
    order = int(coeffs.shape[1]) - 1
    # Companion matrix: -a[1:] on the first row, ones below the diagonal.
    below = np.concatenate([np.eye(order - 1), np.zeros((order - 1, 1))], axis=1)
    rows = tf.shape(coeffs)[0]
    companion = tf.concat([-coeffs[:, None, 1:], tf.broadcast_to(tf.constant(below), [rows, order - 1, order])],
                          axis=1)
    roots = tf.linalg.eigvals(companion)
    real, imag = tf.math.real(roots), tf.math.imag(roots)
    freqs = tf.math.atan2(imag, real) * (sample_rate / (2.0 * np.pi))
    bandwidths = -tf.math.log(tf.maximum(tf.abs(roots), 1e-12)) * (sample_rate / np.pi)
    keep = ((imag > 0) & (freqs > FORMANT_MIN_HZ) & (freqs < sample_rate / 2.0 - FORMANT_MIN_HZ)
            & (bandwidths < FORMANT_MAX_BANDWIDTH_HZ))
    candidates = tf.sort(tf.where(keep, freqs, np.inf * tf.ones_like(freqs)), axis=1)
    if order < N_FORMANTS:
        candidates = tf.pad(candidates, [[0, 0], [0, N_FORMANTS - order]], constant_values=np.inf)
    picked = candidates[:, :N_FORMANTS]
    return tf.where(tf.math.is_finite(picked), picked, tf.zeros_like(picked))


# ------------------------------------------------------------------------------------ MFCC


def _hz_to_mel(hz):
    """Slaney mel scale (librosa's default, htk=False): linear to 1 kHz, then logarithmic."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp, min_log_hz, min_log_mel, logstep = 200.0 / 3, 1000.0, 15.0, np.log(6.4) / 27.0
    mel = hz / f_sp
    return np.where(hz >= min_log_hz, min_log_mel + np.log(np.maximum(hz, min_log_hz) / min_log_hz) / logstep, mel)


def _mel_to_hz(mel):
    mel = np.asarray(mel, dtype=np.float64)
    f_sp, min_log_hz, min_log_mel, logstep = 200.0 / 3, 1000.0, 15.0, np.log(6.4) / 27.0
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)


@functools.lru_cache(maxsize=8)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) Slaney-normalised mel filterbank (a constant of the graph),
    equal to ``librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels)``."""
    fft_freqs = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    mel_freqs = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2.0), n_mels + 2))
    widths = np.diff(mel_freqs)
    ramps = mel_freqs[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_freqs[2:] - mel_freqs[:-2]))[:, None]
    weights = weights.astype(np.float32)
    weights.setflags(write=False)
    return weights


def mel_cepstrum(power, params):
    """MFCC ``[..., n_mfcc]`` float64 from a ``[..., n_fft // 2 + 1]`` power spectrum."""
    import tensorflow as tf

    if params.n_mfcc > params.n_mels:
        raise ValueError(f"n_mfcc ({params.n_mfcc}) cannot exceed n_mels ({params.n_mels})")
    bank = mel_filterbank(params.sample_rate, params.n_fft, params.n_mels).T.astype(np.float64)
    mel = tf.tensordot(tf.cast(power, tf.float64), tf.constant(bank), axes=1)
    return tf.signal.dct(tf.math.log(mel + params.log_floor), type=2, norm="ortho")[..., :params.n_mfcc]


# ----------------------------------------------------------------------------- functionals


def _column_stats(values: np.ndarray, times: np.ndarray) -> np.ndarray:
    """(columns, len(STATS)) statistics of `values` (n, columns) observed at frame `times`."""
    n, columns = values.shape
    out = np.zeros((columns, len(STATS)))
    if n == 0:
        return out
    mean = values.mean(axis=0)
    centred = values - mean
    var = np.mean(centred**2, axis=0)
    std = np.sqrt(var)
    lo, hi = values.min(axis=0), values.max(axis=0)
    pct = np.percentile(values, PERCENTILES, axis=0)
    spread = std > 1e-8 * np.maximum(1.0, np.abs(mean))
    safe_std = np.where(spread, std, 1.0)
    skew = np.where(spread, np.mean(centred**3, axis=0) / safe_std**3, 0.0)
    kurt = np.where(spread, np.mean(centred**4, axis=0) / safe_std**4 - 3.0, 0.0)
    t = times - times.mean()
    denom = float(np.dot(t, t))
    slope = (t @ centred) / denom if denom > 0 else np.zeros(columns)
    slope = np.where(spread, slope, 0.0)
    stats = [mean, std, lo, hi, hi - lo, *pct, skew, kurt, slope]
    return np.stack(stats, axis=1)


def functionals(llds: np.ndarray, config=None) -> np.ndarray:
    """Utterance-level functionals of a (frames, D) LLD matrix -> float32 (D * len(STATS),).

    `config` (a FeatureConfig, default ``FeatureConfig()``) tells the column layout; D must
    equal ``len(lld_names(config))``.
    """
    if config is None:
        config = FeatureConfig()
    names = lld_names(config)
    llds = np.asarray(llds, dtype=np.float64)
    if llds.ndim != 2 or llds.shape[1] != len(names):
        raise ValueError(f"llds must be (frames, {len(names)}) for this config, got {llds.shape}")
    times = np.arange(llds.shape[0], dtype=np.float64)
    voiced = llds[:, names.index("voicing")] > 0.5
    out = np.zeros((len(names), len(STATS)))
    everywhere = [i for i, name in enumerate(names) if name not in VOICED_ONLY]
    out[everywhere] = _column_stats(llds[:, everywhere], times)
    voiced_cols = [i for i, name in enumerate(names) if name in VOICED_ONLY and name not in FORMANTS]
    out[voiced_cols] = _column_stats(llds[voiced][:, voiced_cols], times[voiced])
    for name in FORMANTS:
        i = names.index(name)
        rows = voiced & (llds[:, i] > 0)
        out[i] = _column_stats(llds[rows][:, [i]], times[rows])[0]
    out = out.reshape(-1).astype(np.float32)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0, copy=False)
