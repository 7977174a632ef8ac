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


# YIN runs on the waveform decimated by q while the shortest period (1 / f0_max_hz) keeps at
# least MIN_PERIOD_SAMPLES samples: the parabola through the dip then places F0 well inside the
# 5 % of the pYIN reference test. The low-pass before decimating by q: box(q) convolved
# DECIMATION_ORDER times (at q = 2 the taps [1, 4, 6, 4, 1] / 16: zeros on every frequency that
# folds onto 0 Hz, -12 dB at the new Nyquist frequency).
MIN_PERIOD_SAMPLES = 16
DECIMATION_ORDER = 4
# Integration window of the difference function: at least 2.5 periods of the lowest F0. With
# only 2 periods (or the 20 ms frame), low male voices give shallow dips and many voiced frames
# are missed (checked against pYIN).
WIDTH_PERIODS = 2.5


def yin_geometry(sample_rate: int, frame: int, hop: int, f0_min: float, f0_max: float) -> dict:
    """YIN's integer constants, all in samples of the decimated signal: the decimation ``q``,
    the ``hop``, the lag range ``tau_min .. tau_max`` and the ``lags`` computed
    (``0 .. tau_max + 1``), the window in hops (``blocks``), ``left`` (the window of frame i
    starts ``i * hop - left`` after the waveform's first sample), and the hops a hop's segment
    (``seg_blocks``: the hop and its lags) and the lags alone (``lag_blocks``) span."""
    f0_min, f0_max = float(f0_min), float(f0_max)
    if not 0 < f0_min < f0_max:
        raise ValueError(f"f0_min_hz ({f0_min}) must be positive and below f0_max_hz ({f0_max})")
    q = max(d for d in range(1, hop + 1)
            if hop % d == 0 and (d == 1 or sample_rate / d >= MIN_PERIOD_SAMPLES * f0_max))
    rate = sample_rate / q
    step = hop // q
    tau_min = max(2, int(np.floor(rate / f0_max)))
    tau_max = max(tau_min + 2, int(np.ceil(rate / f0_min)))
    lags = tau_max + 2
    blocks = max(1, int(np.ceil(WIDTH_PERIODS * sample_rate / f0_min / hop)))
    # The window and its lags, (blocks * step + lags - 1) samples, centred on the frame's centre.
    left = (blocks * step + lags - 1) // 2 - (frame // 2) // q
    return dict(q=q, hop=step, tau_min=tau_min, tau_max=tau_max, lags=lags, blocks=blocks, left=left,
                seg_blocks=-(-(step + lags - 1) // step), lag_blocks=-(-lags // step))


def map_spectral(function, x: np.ndarray, feature_config) -> np.ndarray:
    """``function`` applied to the log-power bins of ``x``; the pitch channels as they are."""
    count = pitch_channel_count(feature_config)
    if not count:
        return function(x)
    bins = function(x[:, : x.shape[1] - count])
    return np.concatenate([bins, x[:, x.shape[1] - count:].astype(bins.dtype)], axis=1)
