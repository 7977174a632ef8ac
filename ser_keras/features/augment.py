"""Frequency warping of the log spectrogram (VTLP-style): training augmentation and test-time views.

A speaker-independent model sees only a handful of training voices (9 per EMO-DB LOSO fold
minus the validation speakers). Warping the frequency axis by a factor alpha moves formants and
harmonics the way a shorter (alpha > 1) or longer (alpha < 1) vocal tract would (Jaitly &
Hinton 2013, "vocal tract length perturbation"), so each factor adds a set of plausible new
voices. Each warped copy of a speaker is normalised as a speaker of its own (its own statistics),
exactly as an unseen test speaker is, and only training utterances are warped.

Test-time views (``features.test_warp_factors``): a recording is also scored warped by each
factor and the model's outputs are averaged over the views. The warp is linear in the log-power
bins (``warp_matrix``), so the views are taken from the *normalised* frames (``frontend_ops``):
each view then needs no statistics of its own, which a single served recording could not give
(the mean and spread of warped frames are, up to the level reference, the warped mean and
spread), and the export computes them with one matrix product per view.
"""

from __future__ import annotations

import functools

import numpy as np

from ser_keras.errors import SerKerasError


def check_factors(factors, name: str = "warp_factors") -> list:
    """The warp factors (``features.<name>``) as floats; each must lie in [0.5, 2] and differ from 1."""
    out = []
    for factor in factors or []:
        value = float(factor)
        if not 0.5 <= value <= 2.0 or value == 1.0:
            raise SerKerasError(f"features.{name}: {factor} must be in [0.5, 2] and not 1")
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
    low, high, weight = _interpolation(x.shape[1], factor)
    weight = weight.astype(np.float32)
    return x[:, low] * (1.0 - weight) + x[:, high] * weight


def _interpolation(bins: int, factor: float) -> tuple:
    """(low, high, weight) of every output bin: it reads input bins low and high, weighted
    1 - weight and weight (the source position k / factor, capped at the top bin)."""
    return _between(np.arange(bins, dtype=np.float64) / float(factor), bins)


def _between(source: np.ndarray, size: int) -> tuple:
    """(low, high, weight) reading positions `source` (capped at the last of `size` entries)
    by linear interpolation between entries low and high."""
    source = np.minimum(source, size - 1)
    low = np.floor(source).astype(np.int64)
    high = np.minimum(low + 1, size - 1)
    return low, high, source - low


def warped_speaker(speaker, factor: float) -> str:
    """The pseudo-speaker a warped copy is normalised as."""
    return f"{speaker}@warp{factor:g}"


@functools.lru_cache(maxsize=16)
def warp_matrix(bins: int, factor: float) -> np.ndarray:
    """``(bins, bins)`` float64 matrix M with ``x @ M == warp_frequency(x, factor)`` (up to
    rounding): column k holds the interpolation weights of bin k of the warped spectrum.
    Read-only and cached: serving a recording window by window asks for it at every window."""
    low, high, weight = _interpolation(bins, factor)
    matrix = np.zeros((bins, bins))
    columns = np.arange(bins)
    np.add.at(matrix, (low, columns), 1.0 - weight)
    np.add.at(matrix, (high, columns), weight)
    matrix.setflags(write=False)
    return matrix
