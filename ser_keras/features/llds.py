"""Frame-level low-level descriptors (LLDs) and their utterance-level functionals.

Section 4.1 of the paper lists F0, formants, frame energy, zero-crossing rate and 13 MFCC as
the LLDs of each speech frame. ``frame_llds`` computes them on exactly the frame grid of
``spectrogram.log_spectrogram`` (frame ``i`` centred on sample ``i * hop + frame / 2``), so the
two can be stacked or compared frame by frame. Columns, in order (see ``lld_names``):

==============  ==============================================================================
``f0``          fundamental frequency in Hz, 0 where unvoiced. YIN (de Cheveigne & Kawahara
                2002): cumulative-mean-normalised difference function computed with one FFT over
                the whole matrix of analysis frames, the first dip below
                ``voicing_threshold`` between ``1/f0_max_hz`` and ``1/f0_min_hz``, parabolic
                interpolation. The difference function integrates over 2.5 periods of
                ``f0_min_hz`` (42 ms at 60 Hz; at least one frame), on a window centred on the
                frame centre, because a 20 ms frame holds barely one period at 60 Hz.
``voicing``     1.0 where voiced, else 0.0: a YIN dip below the threshold and a frame energy
                no lower than -65 dBFS and no more than 40 dB below the loudest frame.
``f1..f3``      first three formants in Hz from LPC (order ``lpc_order``) of the pre-emphasised,
                Hamming-windowed frame: batched Levinson-Durbin over all frames, roots as the
                eigenvalues of batched companion matrices; a root is a formant when it lies
                between 90 Hz and Nyquist - 90 Hz with a bandwidth under 400 Hz (order 18 at
                16 kHz by default: 12 poles over 0..8 kHz miss F1/F2 in real speech). Computed
                on voiced frames only; 0 on unvoiced frames and where fewer are found.
``log_energy``  ``log(sum(frame**2) + log_floor)`` of the raw frame.
``zcr``         fraction of adjacent sample pairs in the frame whose sign differs.
``mfcc_0..``    ``n_mfcc`` MFCCs: DCT-II (orthonormal) of the log of a Slaney mel filterbank
                (``n_mels`` bands, 0..sr/2, identical to ``librosa.filters.mel``) applied to the
                same Hann/``n_fft`` power spectrum as the spectrogram.
``*_delta``     with ``lld_deltas``: regression deltas (+-2 frames) of every LLD but ``voicing``.
==============  ==============================================================================

No value is ever NaN or infinite: silent, constant or very short input gives defined values
(unvoiced, zero formants, ``log(log_floor)`` energy).

``functionals`` turns a (frames, D) LLD matrix into one vector: per LLD the mean, standard
deviation, min, max, range, 1/25/50/75/99th percentiles, skewness, excess kurtosis and the
linear-regression slope against the frame index (per frame). F0, the formants and their deltas
are summarised over voiced frames only (formants also only where one was found), the other LLDs
over all frames; a set with no frames gives zeros, a constant one zero spread, skewness,
kurtosis and slope.
"""

from __future__ import annotations

import functools

import numpy as np
import scipy.fft

from ser_keras.config import FeatureConfig
from ser_keras.features import spectrogram

#: Columns summarised over voiced frames only (formants also where non-zero).
VOICED_ONLY = ("f0", "f1", "f2", "f3", "f0_delta", "f1_delta", "f2_delta", "f3_delta")
FORMANTS = ("f1", "f2", "f3")
STATS = ("mean", "std", "min", "max", "range", "p1", "p25", "p50", "p75", "p99", "skewness", "kurtosis", "slope")
PERCENTILES = (1.0, 25.0, 50.0, 75.0, 99.0)

# Voicing gate: a frame quieter than this (mean square, full scale = 1) or more than
# SILENCE_RELATIVE_DB below the loudest frame of the utterance is never voiced.
SILENCE_ABSOLUTE_DB = -65.0
SILENCE_RELATIVE_DB = 40.0
FORMANT_MIN_HZ = 90.0
FORMANT_MAX_BANDWIDTH_HZ = 400.0
N_FORMANTS = 3


def base_names(config) -> list:
    return ["f0", "voicing", "f1", "f2", "f3", "log_energy", "zcr"] + [f"mfcc_{i}" for i in range(config.n_mfcc)]


def lld_names(config) -> list:
    """Column names of `frame_llds` for `config` (a FeatureConfig)."""
    names = base_names(config)
    if config.lld_deltas:
        names += [f"{name}_delta" for name in names if name != "voicing"]
    return names


def functional_names(config) -> list:
    """Names of the entries of `functionals`: '<lld>_<stat>', LLD-major."""
    return [f"{name}_{stat}" for name in lld_names(config) for stat in STATS]


def frame_llds(waveform: np.ndarray, config, sample_rate: int) -> np.ndarray:
    """LLDs of `waveform`, float32 (frames, len(lld_names(config))), on the spectrogram grid."""
    waveform = np.asarray(waveform, dtype=np.float32)
    frame, hop = spectrogram.check_fft(config, sample_rate)
    frames = spectrogram.frame_signal(waveform, frame, hop).astype(np.float64)
    n_frames = frames.shape[0]

    energy = np.einsum("ij,ij->i", frames, frames)
    log_energy = np.log(energy + config.log_floor)
    signs = np.signbit(frames)
    zcr = np.count_nonzero(signs[:, 1:] != signs[:, :-1], axis=1) / float(frame - 1)

    mean_square = energy / frame
    gate = max(10.0 ** (SILENCE_ABSOLUTE_DB / 10.0), mean_square.max() * 10.0 ** (-SILENCE_RELATIVE_DB / 10.0))
    f0, voiced = yin(waveform, n_frames, frame, hop, sample_rate,
                     config.f0_min_hz, config.f0_max_hz, config.voicing_threshold)
    voiced &= mean_square >= gate
    f0 = np.where(voiced, f0, 0.0)

    # Formants only where voiced: they are vowel/sonorant resonances, and root finding on
    # silence and noise frames (near-nilpotent companion matrices) is slow and meaningless.
    formants = np.zeros((n_frames, N_FORMANTS))
    if voiced.any():
        rows = np.flatnonzero(voiced)
        formants[rows] = lpc_formants(frames[rows], sample_rate, config.lpc_order, config.pre_emphasis,
                                      waveform, hop, starts=rows * hop)

    power = spectrogram.power_spectrum(waveform, config, sample_rate)
    mfcc = mel_cepstrum(power, sample_rate, config.n_fft, config.n_mels, config.n_mfcc, config.log_floor)

    columns = [f0[:, None], voiced[:, None].astype(np.float64), formants, log_energy[:, None], zcr[:, None], mfcc]
    base = np.concatenate(columns, axis=1)
    if config.lld_deltas:
        keep = [i for i, name in enumerate(base_names(config)) if name != "voicing"]
        base = np.concatenate([base, deltas(base[:, keep])], axis=1)
    out = base.astype(np.float32)
    # Belt and braces: the arithmetic above is guarded, but a feature must never be NaN.
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0, copy=False)


# --------------------------------------------------------------------------------------- F0


def yin_geometry(sample_rate: int, frame: int, f0_min: float, f0_max: float) -> tuple:
    """YIN's integer constants: (tau_min, tau_max, width, length, left) — the lag range, the
    integration window, the segment analysed per frame and the zeros before the waveform."""
    if not 0 < f0_min < f0_max:
        raise ValueError(f"f0_min_hz ({f0_min}) must be positive and below f0_max_hz ({f0_max})")
    tau_min = max(2, int(np.floor(sample_rate / f0_max)))
    tau_max = max(tau_min + 2, int(np.ceil(sample_rate / f0_min)))
    # Integration window of the difference function: 2.5 periods of the lowest F0 (42 ms at
    # 60 Hz), never less than a frame. With only the 20 ms frame, low male voices (2 periods)
    # give shallow dips and half of their voiced frames were missed (checked against pYIN).
    width = max(frame, int(np.ceil(2.5 * sample_rate / f0_min)))
    length = width + tau_max + 2  # taus 0 .. tau_max + 1
    # Segment i starts at centre_i - length // 2 with centre_i = i * hop + frame // 2.
    left = length // 2 - frame // 2
    return tau_min, tau_max, width, length, left


def yin(waveform, n_frames, frame, hop, sample_rate, f0_min, f0_max, threshold) -> tuple:
    """(f0 Hz (frames,), voiced bool (frames,)) by vectorised YIN on frames centred like the grid."""
    tau_min, tau_max, width, length, left = yin_geometry(sample_rate, frame, f0_min, f0_max)
    right = max(0, (n_frames - 1) * hop + length - left - waveform.shape[0])
    padded = np.pad(waveform.astype(np.float32), (left, right))
    segments = np.lib.stride_tricks.sliding_window_view(padded, length)[::hop][:n_frames]

    # Cross term r(tau) = sum_{j<width} x_j x_{j+tau} by FFT (single precision is plenty next
    # to the thresholds used), energies from one cumulative sum over the whole signal.
    n_fft = scipy.fft.next_fast_len(length, real=True)  # no wrap-around: width + tau <= length
    spectrum = scipy.fft.rfft(segments, n=n_fft, axis=1)
    head = scipy.fft.rfft(segments[:, :width], n=n_fft, axis=1)
    cross = scipy.fft.irfft(np.conj(head) * spectrum, n=n_fft, axis=1)[:, : tau_max + 2].astype(np.float64)
    cumulative = np.concatenate([[0.0], np.cumsum(np.square(padded, dtype=np.float64))])
    starts = np.lib.stride_tricks.sliding_window_view(cumulative, tau_max + 2)[::hop][:n_frames]  # S[i*hop + tau]
    ends = np.lib.stride_tricks.sliding_window_view(cumulative[width:], tau_max + 2)[::hop][:n_frames]
    energy_shifted = ends - starts  # sum_{j<width} x_{j+tau}^2
    diff = np.maximum(energy_shifted[:, :1] + energy_shifted - 2.0 * cross, 0.0)
    total_energy = cumulative[np.arange(n_frames) * hop + length] - cumulative[np.arange(n_frames) * hop]
    taus = np.arange(tau_max + 2)

    # Cumulative-mean-normalised difference d'(tau) = d(tau) * tau / sum_{j<=tau} d(j).
    running = np.cumsum(diff[:, 1:], axis=1)
    cmnd = np.ones_like(diff)
    safe = running > 1e-12 * (total_energy[:, None] + 1e-30)
    cmnd[:, 1:] = np.where(safe, diff[:, 1:] * taus[1:] / np.where(safe, running, 1.0), 1.0)

    # First local minimum below the threshold in [tau_min, tau_max]; else the global minimum.
    lo, hi = tau_min, tau_max + 1
    window = cmnd[:, lo:hi]
    local_min = (window <= cmnd[:, lo - 1:hi - 1]) & (window < cmnd[:, lo + 1:hi + 1])
    candidate = local_min & (window < threshold)
    has_candidate = candidate.any(axis=1)
    best = np.where(has_candidate, candidate.argmax(axis=1), window.argmin(axis=1)) + lo

    rows = np.arange(n_frames)
    before, at, after = cmnd[rows, best - 1], cmnd[rows, best], cmnd[rows, best + 1]
    curvature = before - 2.0 * at + after
    shift = np.where(curvature > 1e-12, 0.5 * (before - after) / np.where(curvature > 1e-12, curvature, 1.0), 0.0)
    period = best + np.clip(shift, -1.0, 1.0)
    f0 = sample_rate / period
    voiced = has_candidate & (f0 >= f0_min) & (f0 <= f0_max)
    return f0, voiced


# -------------------------------------------------------------------------------- formants


@functools.lru_cache(maxsize=8)
def _hamming(length: int) -> np.ndarray:
    window = np.hamming(length)
    window.setflags(write=False)
    return window


def lpc(frames: np.ndarray, order: int) -> np.ndarray:
    """LPC polynomials (frames, order + 1), a[:, 0] = 1, by batched Levinson-Durbin."""
    n_frames, length = frames.shape
    order = min(order, length - 1)
    autocorr = np.empty((n_frames, order + 1))
    for lag in range(order + 1):
        autocorr[:, lag] = np.einsum("ij,ij->i", frames[:, : length - lag], frames[:, lag:])
    # White-noise correction (40 dB) and a floor keep silent and periodic frames well posed.
    autocorr[:, 0] = autocorr[:, 0] * (1.0 + 1e-4) + 1e-12
    coeffs = np.zeros((n_frames, order + 1))
    coeffs[:, 0] = 1.0
    error = autocorr[:, 0].copy()
    for i in range(1, order + 1):
        acc = autocorr[:, i] + np.einsum("ij,ij->i", coeffs[:, 1:i], autocorr[:, i - 1:0:-1])
        reflection = -acc / error
        coeffs[:, 1:i] = coeffs[:, 1:i] + reflection[:, None] * coeffs[:, i - 1:0:-1]
        coeffs[:, i] = reflection
        error = np.maximum(error * (1.0 - reflection**2), 1e-30)
    return coeffs


def lpc_formants(frames, sample_rate, order, pre_emphasis, waveform, hop, starts=None) -> np.ndarray:
    """First N_FORMANTS formant frequencies (frames, 3) in Hz, 0 where not found.

    `frames` are rows of the frame grid starting at sample `starts` (default ``i * hop``).
    """
    n_frames, length = frames.shape
    if pre_emphasis:
        # Pre-emphasis on the continuous signal (the previous sample of frame i is known).
        previous = np.empty_like(frames)
        previous[:, 1:] = frames[:, :-1]
        starts = np.arange(n_frames) * hop if starts is None else np.asarray(starts)
        previous[:, 0] = np.where(starts > 0, waveform[np.maximum(starts - 1, 0)], 0.0)
        emphasised = frames - pre_emphasis * previous
    else:
        emphasised = frames
    coeffs = lpc(emphasised * _hamming(length), order)
    order = coeffs.shape[1] - 1
    companion = np.zeros((n_frames, order, order))
    companion[:, 0, :] = -coeffs[:, 1:]
    companion[:, np.arange(1, order), np.arange(order - 1)] = 1.0
    roots = np.linalg.eigvals(companion)
    freqs = np.angle(roots) * (sample_rate / (2.0 * np.pi))
    bandwidths = -np.log(np.maximum(np.abs(roots), 1e-12)) * (sample_rate / np.pi)
    keep = (
        (roots.imag > 0)
        & (freqs > FORMANT_MIN_HZ)
        & (freqs < sample_rate / 2.0 - FORMANT_MIN_HZ)
        & (bandwidths < FORMANT_MAX_BANDWIDTH_HZ)
    )
    candidates = np.sort(np.where(keep, freqs, np.inf), axis=1)
    out = np.zeros((n_frames, N_FORMANTS))
    count = min(N_FORMANTS, candidates.shape[1])
    picked = candidates[:, :count]
    out[:, :count] = np.where(np.isfinite(picked), picked, 0.0)
    return out


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
    """(n_mels, n_fft // 2 + 1) Slaney-normalised mel filterbank, equal to
    ``librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels)`` (without importing
    librosa, whose import costs a second in every extraction worker)."""
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


def mel_cepstrum(power, sample_rate, n_fft, n_mels, n_mfcc, log_floor) -> np.ndarray:
    """MFCC (frames, n_mfcc) from a (frames, n_fft // 2 + 1) power spectrum."""
    if n_mfcc > n_mels:
        raise ValueError(f"n_mfcc ({n_mfcc}) cannot exceed n_mels ({n_mels})")
    mel = power.astype(np.float64) @ mel_filterbank(sample_rate, n_fft, n_mels).T.astype(np.float64)
    return scipy.fft.dct(np.log(mel + log_floor), type=2, norm="ortho", axis=1)[:, :n_mfcc]


def deltas(values: np.ndarray, width: int = 2) -> np.ndarray:
    """Regression deltas over +-`width` frames (edges repeated), like HTK/librosa.feature.delta."""
    padded = np.pad(values, ((width, width), (0, 0)), mode="edge")
    n = values.shape[0]
    out = np.zeros_like(values, dtype=np.float64)
    for k in range(1, width + 1):
        out += k * (padded[width + k:width + k + n] - padded[width - k:width - k + n])
    return out / (2.0 * sum(k * k for k in range(1, width + 1)))


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
