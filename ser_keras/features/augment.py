"""Training-set augmentation by frequency warping of the log spectrogram (VTLP-style).

A speaker-independent model sees only a handful of training voices (9 per EMO-DB LOSO fold
minus the validation speakers). Warping the frequency axis by a factor alpha moves formants and
harmonics the way a shorter (alpha > 1) or longer (alpha < 1) vocal tract would (Jaitly &
Hinton 2013, "vocal tract length perturbation"), so each factor adds a set of plausible new
voices. Each warped copy of a speaker is normalised as a speaker of its own (its own statistics),
exactly as an unseen test speaker is, and only training utterances are warped.
"""

from __future__ import annotations

import numpy as np

from ser_keras.errors import SerKerasError


def check_factors(factors) -> list:
    """The warp factors as floats; each must lie in [0.5, 2] and differ from 1."""
    out = []
    for factor in factors or []:
        value = float(factor)
        if not 0.5 <= value <= 2.0 or value == 1.0:
            raise SerKerasError(f"features.warp_factors: {factor} must be in [0.5, 2] and not 1")
        out.append(value)
    return out


def warp_frequency(spectrogram: np.ndarray, factor: float) -> np.ndarray:
    """`(frames, bins)` log spectrogram with its frequency axis scaled by `factor`.

    Bin k of the result takes the (linearly interpolated) value at bin k / factor of the input,
    so a formant at bin b moves to bin b * factor; bins that would read beyond the top bin
    repeat it.
    """
    x = np.asarray(spectrogram, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"warp_frequency: expected (frames, bins), got shape {x.shape}")
    bins = x.shape[1]
    source = np.minimum(np.arange(bins, dtype=np.float64) / float(factor), bins - 1)
    low = np.floor(source).astype(np.int64)
    high = np.minimum(low + 1, bins - 1)
    weight = (source - low).astype(np.float32)
    return x[:, low] * (1.0 - weight) + x[:, high] * weight


def warped_speaker(speaker, factor: float) -> str:
    """The pseudo-speaker a warped copy is normalised as."""
    return f"{speaker}@warp{factor:g}"
