"""Pitch channels: a frame-level log F0 contour and voicing flag beside the spectrogram.

A log spectrogram reduced to 60 PCA channels keeps the spectral envelope and blurs the
harmonics, so a network reading it sees little of the pitch contour, which carries much of
what distinguishes emotions across speakers (the exp1 SVM loses several UA points on EMO-DB
and CASIA under leave-one-speaker-out without its F0 and voicing functionals). With
``features.pitch_channels`` every spectrogram frame gets ``PITCH_CHANNELS`` appended after its
``n_bins`` log-power bins; they skip the level normalisation, the frequency warp and the PCA
(``FramePCA(passthrough=...)``) but are normalised per speaker like every other column.

Per frame of the spectrogram's grid (``spectrogram.frame_params``):

``log_f0``   natural log of F0 in Hz from YIN (``llds.yin``: the same tracker, range and
             threshold as the LLDs of exp1), on voiced frames; linearly interpolated over the
             unvoiced frames between two voiced ones and held constant before the first and
             after the last, so the contour has no jumps to zero; a recording without a voiced
             frame gets ``log(sqrt(f0_min_hz * f0_max_hz))`` everywhere.
``voicing``  1.0 where voiced, else 0.0. Voiced: a YIN dip below ``voicing_threshold`` and a
             frame mean square no more than ``VOICING_RELATIVE_DB`` below the loudest frame's.

Both are independent of the recording's gain: YIN's normalised difference function is a ratio
of energies and the voicing gate is relative (exp1's LLDs also have an absolute gate, which a
gain would move). ``export.frontend`` computes the same channels in the graph.
"""

from __future__ import annotations

import numpy as np

from ser_keras.features import llds
from ser_keras.features.level import frame_powers
from ser_keras.features.spectrogram import frame_count, frame_params

PITCH_CHANNELS = ("log_f0", "voicing")
# Quieter frames (relative to the loudest frame of the recording) are never voiced.
VOICING_RELATIVE_DB = llds.SILENCE_RELATIVE_DB


def pitch_channel_count(feature_config) -> int:
    """Columns appended to each spectrogram frame: len(PITCH_CHANNELS) with pitch channels on."""
    return len(PITCH_CHANNELS) if getattr(feature_config, "pitch_channels", False) else 0


def unvoiced_log_f0(feature_config) -> float:
    """The log F0 of every frame of a recording without a voiced frame: the range's midpoint."""
    return 0.5 * float(np.log(feature_config.f0_min_hz) + np.log(feature_config.f0_max_hz))


def pitch_channels(waveform: np.ndarray, feature_config, sample_rate: int) -> np.ndarray:
    """``(frames, 2)`` float32: log F0 and voicing of every frame of ``waveform`` (see above)."""
    waveform = np.asarray(waveform, np.float32).reshape(-1)
    frame, hop = frame_params(feature_config, sample_rate)
    n_frames = frame_count(waveform.shape[0], feature_config, sample_rate)
    f0, voiced = llds.yin(waveform, n_frames, frame, hop, sample_rate, feature_config.f0_min_hz,
                          feature_config.f0_max_hz, feature_config.voicing_threshold)
    powers = frame_powers(waveform, frame, hop)
    voiced &= powers >= powers.max() * 10.0 ** (-VOICING_RELATIVE_DB / 10.0)
    return np.stack([interpolated_log_f0(f0, voiced, feature_config), voiced.astype(np.float64)],
                    axis=1).astype(np.float32)


def interpolated_log_f0(f0: np.ndarray, voiced: np.ndarray, feature_config) -> np.ndarray:
    """log F0 on voiced frames, linear between them, held beyond the first and last (float64)."""
    rows = np.flatnonzero(voiced)
    if rows.size == 0:
        return np.full(f0.shape[0], unvoiced_log_f0(feature_config))
    return np.interp(np.arange(f0.shape[0]), rows, np.log(f0[rows]))


def map_spectral(function, x: np.ndarray, feature_config) -> np.ndarray:
    """``function`` applied to the log-power bins of ``x``; the pitch channels as they are."""
    count = pitch_channel_count(feature_config)
    if not count:
        return function(x)
    bins = function(x[:, : x.shape[1] - count])
    return np.concatenate([bins, x[:, x.shape[1] - count:].astype(bins.dtype)], axis=1)
