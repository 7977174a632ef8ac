"""What the pitch channels are: their names, the voicing gate and YIN's geometry.

Pure numbers, no TensorFlow: ``features.pitch`` (the YIN tracker in TF ops), ``features.llds``
(exp1/exp2's F0 column) and ``models`` read them.

With ``features.pitch_channels`` every spectrogram frame gets ``PITCH_CHANNELS`` appended after
its ``n_bins`` log-power bins; they skip the level normalisation, the frequency warp and the
PCA (``FramePCA(passthrough=...)``) but are normalised per speaker like every other column:

``log_f0``   natural log of F0 in Hz from YIN on voiced frames; linear between voiced frames,
             held before the first and after the last, so the contour has no jumps to zero; a
             recording without a voiced frame gets ``unvoiced_log_f0`` everywhere.
``voicing``  1.0 where voiced, else 0.0. Voiced: a YIN dip below ``voicing_threshold`` and a
             frame mean square no more than ``VOICING_RELATIVE_DB`` below the loudest frame's.

Both are independent of the recording's gain: YIN's normalised difference function is a ratio
of energies and the voicing gate is relative (exp1's LLDs also have an absolute gate,
``SILENCE_ABSOLUTE_DB``, which a gain would move).
"""

from __future__ import annotations

import numpy as np

PITCH_CHANNELS = ("log_f0", "voicing")
# Voicing gate: a frame quieter than SILENCE_ABSOLUTE_DB (mean square, full scale = 1; the LLDs
# only) or more than SILENCE_RELATIVE_DB below the loudest frame of the utterance is never voiced.
SILENCE_ABSOLUTE_DB = -65.0
SILENCE_RELATIVE_DB = 40.0
VOICING_RELATIVE_DB = SILENCE_RELATIVE_DB


def pitch_channel_count(feature_config) -> int:
    """Columns appended to each spectrogram frame: len(PITCH_CHANNELS) with pitch channels on."""
    return len(PITCH_CHANNELS) if getattr(feature_config, "pitch_channels", False) else 0


def unvoiced_log_f0(feature_config) -> float:
    """The log F0 of every frame of a recording without a voiced frame: the range's midpoint."""
    return 0.5 * float(np.log(feature_config.f0_min_hz) + np.log(feature_config.f0_max_hz))


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


def map_spectral(function, x: np.ndarray, feature_config) -> np.ndarray:
    """``function`` applied to the log-power bins of ``x``; the pitch channels as they are."""
    count = pitch_channel_count(feature_config)
    if not count:
        return function(x)
    bins = function(x[:, : x.shape[1] - count])
    return np.concatenate([bins, x[:, x.shape[1] - count:].astype(bins.dtype)], axis=1)
