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


# Integration window of the difference function: about 2.5 periods of the lowest F0, the whole
# number of hops nearest to it (4 at 60 Hz: 2.4 periods). With only 2 periods (or the 20 ms
# frame), low male voices give shallow dips and many voiced frames are missed (checked against
# pYIN); a longer window (rounding up to 5 hops) calls voiced more frames at the edges of
# voiced stretches than the 2.5-period window the pitch channels were chosen with.
# YIN runs on the full-band signal: a low-pass before decimating to 8 kHz (tried, for speed)
# removed the aperiodic energy above it, so noisy frames gave deep dips and were called voiced,
# and the default's LOSO accuracy dropped (docs/results.md).
WIDTH_PERIODS = 2.5


def yin_geometry(sample_rate: int, frame: int, hop: int, f0_min: float, f0_max: float) -> dict:
    """YIN's integer constants, in samples: the lag range ``tau_min .. tau_max`` and the
    ``lags`` computed (``0 .. tau_max + 1``), the window in hops (``blocks``), ``left`` (the
    window of frame i starts ``i * hop - left`` after the waveform's first sample), and the hops
    a hop's segment (``seg_blocks``: the hop and its lags) and the lags alone (``lag_blocks``)
    span."""
    f0_min, f0_max = float(f0_min), float(f0_max)
    if not 0 < f0_min < f0_max:
        raise ValueError(f"f0_min_hz ({f0_min}) must be positive and below f0_max_hz ({f0_max})")
    tau_min = max(2, int(np.floor(sample_rate / f0_max)))
    tau_max = max(tau_min + 2, int(np.ceil(sample_rate / f0_min)))
    lags = tau_max + 2
    blocks = max(1, int(np.floor(WIDTH_PERIODS * sample_rate / f0_min / hop + 0.5)))
    # The window and its lags, (blocks * hop + lags - 1) samples, centred on the frame's centre.
    left = (blocks * hop + lags - 1) // 2 - frame // 2
    return dict(hop=hop, tau_min=tau_min, tau_max=tau_max, lags=lags, blocks=blocks, left=left,
                seg_blocks=-(-(hop + lags - 1) // hop), lag_blocks=-(-lags // hop))


def map_spectral(function, x: np.ndarray, feature_config) -> np.ndarray:
    """``function`` applied to the log-power bins of ``x``; the pitch channels as they are."""
    count = pitch_channel_count(feature_config)
    if not count:
        return function(x)
    bins = function(x[:, : x.shape[1] - count])
    return np.concatenate([bins, x[:, x.shape[1] - count:].astype(bins.dtype)], axis=1)
