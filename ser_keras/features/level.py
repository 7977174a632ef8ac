"""Recording level: the gain-free log spectrogram, and whether a recording holds speech.

Level normalisation (``features.level_normalization``). A gain ``g`` on the waveform multiplies
every bin of the power spectrum by ``g**2``, i.e. adds ``2 ln g`` to every bin of the
(natural-log) spectrogram of ``spectrogram.log_spectrogram`` — except where the power is at or
is pushed down to ``log_floor`` (1e-10, about -100 dB): digital silence, padding, band edges left
empty by resampling, and quiet cells once the gain is low (at gain 0.1 a few per cent of the
cells of real EMO-DB and CASIA recordings). Elsewhere, subtracting a per-utterance *reference*
that moves by exactly that constant removes the gain:

- per frame, ``e_t`` = the log of the frame's mean power over the bins, computed from the log
  features as ``logsumexp_k(x_tk) - ln(bins)``: it moves by exactly ``c`` when every bin does,
  and it is dominated by the loud bins, so bins down at the floor hardly move it (a mean of the
  log powers did: on EMO-DB files, whose top bins sit near the floor after resampling, gain 0.5
  moved it by 1.373 instead of 2 ln 2 = 1.386);
- the reference is the mean of ``e_t`` over the loudest ``ceil(frames / 5)`` frames (at least
  one): a uniform shift of every ``e_t`` keeps the same frames on top and shifts their mean by
  the same amount, so ``reference(x + c) = reference(x) + c`` exactly. The loudest fifth, not all
  frames, so that pauses (whose level is the room's, not the speaker's) do not move it.

The reference is subtracted from every bin of every frame, before any other normalisation
(speaker, pooled) and the PCA, in training, evaluation, ``predict`` and the export's graph
(``export.frontend.tf_level_normalize``, tested against ``level_normalize``). Features in the
cache stay raw: it is applied after the cache read.

Relative floor (``features.level_floor_db``). The cells at the absolute floor do not move with
the gain, and a lower gain pushes more cells down to it, so they alone would still change the
features. With a floor of F dB every level-normalised cell below ``-F`` dB is raised to it:
then a cell either moves with the gain (and the reference takes the move away) or sits at
``-F`` at every gain, as long as ``-F`` dB below the reference stays well above the absolute
floor at the lowest gain served. The value shipped was chosen on validation speakers (docs/serving.md,
*Gain invariance*).

Speech detection (the ``speech`` output of the export, ``"speech"`` in ``predict``'s JSON). On
the spectrogram's frame grid (un-windowed samples), with P_top the mean power of the loudest
``top_count`` frames and P_low that of the quietest ``top_count`` frames, a recording holds
speech when all three hold:

- it is at least ``features.speech_min_ms`` long (nothing shorter carries an emotion);
- P_top is at least ``features.speech_threshold_dbfs`` dB re a full-scale (RMS 1.0) signal;
- P_top is at least ``features.speech_min_contrast_db`` dB above P_low: speech comes in
  syllables and pauses, a steady noise does not (white noise: about 1 dB at any level).

See the ``FeatureConfig`` fields for the defaults and why. ``has_speech`` here and
``export.frontend.tf_speech_flags`` are twins.
"""

from __future__ import annotations

import typing

import numpy as np

from ser_keras.features.spectrogram import frame_params

# The share of frames (the loudest) the level reference and the speech level are taken over.
TOP_FRACTION_DENOMINATOR = 5


def top_count(n_frames: int) -> int:
    """How many of `n_frames` frames count as the loudest: ``ceil(n / 5)``, at least one."""
    return max(1, (int(n_frames) + TOP_FRACTION_DENOMINATOR - 1) // TOP_FRACTION_DENOMINATOR)


def level_reference(log_spectrogram: np.ndarray) -> float:
    """The utterance's reference level (float64): the mean over the loudest ``top_count`` frames
    of each frame's log mean power. ``(frames, bins)`` in, a scalar out."""
    x = np.asarray(log_spectrogram, np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"level_reference: expected (frames, bins) with frames >= 1, got shape {x.shape}")
    per_frame = frame_levels(x)
    k = top_count(per_frame.shape[0])
    return float(np.sort(per_frame)[::-1][:k].mean())


def frame_levels(log_spectrogram: np.ndarray) -> np.ndarray:
    """``e_t``, float64 ``(frames,)``: the log of each frame's mean power over the bins."""
    x = np.asarray(log_spectrogram, np.float64)
    peak = x.max(axis=1, keepdims=True)
    return peak[:, 0] + np.log(np.exp(x - peak).sum(axis=1)) - np.log(x.shape[1])


def relative_floor(floor_db) -> typing.Optional[float]:
    """The natural-log value ``-floor_db`` dB below the reference is, or None without a floor."""
    return None if floor_db is None else -float(floor_db) * np.log(10.0) / 10.0


def level_normalize(log_spectrogram: np.ndarray, floor_db=None) -> np.ndarray:
    """``log_spectrogram`` minus its ``level_reference`` (float32, a new array), every cell below
    ``-floor_db`` dB raised to it when `floor_db` is given."""
    x = np.asarray(log_spectrogram, np.float32)
    y = x - np.float32(level_reference(x))
    floor = relative_floor(floor_db)
    return y if floor is None else np.maximum(y, np.float32(floor))


def maybe_level_normalize(features: list, feature_config) -> list:
    """`features` (a list of ``(frames, bins)`` log spectrograms, None where extraction failed),
    level-normalised when ``feature_config.level_normalization`` is on, else as they are."""
    if not getattr(feature_config, "level_normalization", False):
        return features
    floor_db = getattr(feature_config, "level_floor_db", None)
    return [None if x is None else level_normalize(x, floor_db) for x in features]


def frame_powers(waveform: np.ndarray, frame: int, hop: int, length=None) -> np.ndarray:
    """Mean square of each frame's samples (float64), on the spectrogram's frame grid:
    ``1 + (max(n, frame) - frame) // hop`` frames of the first ``length`` (default: all)
    samples, a recording shorter than one frame zero-padded to one."""
    x = np.asarray(waveform, np.float64).reshape(-1)
    n = x.shape[0] if length is None else max(0, min(int(length), x.shape[0]))
    x = x[:n]
    if n < frame:
        x = np.pad(x, (0, frame - n))
    frames = 1 + (max(n, frame) - frame) // hop
    cumulative = np.concatenate([[0.0], np.cumsum(x * x)])
    starts = np.arange(frames) * hop
    # Differences of a running sum: the same formula as the graph's twin (one pass, no frames).
    return np.maximum(cumulative[starts + frame] - cumulative[starts], 0.0) / frame


def speech_levels(waveform: np.ndarray, frame: int, hop: int, length=None) -> tuple:
    """(P_top, P_low): mean power (float64) of the loudest and of the quietest ``top_count``
    frames of the first `length` samples."""
    powers = np.sort(frame_powers(waveform, frame, hop, length))
    k = top_count(powers.shape[0])
    return float(powers[-k:].mean()), float(powers[:k].mean())


def speech_level_dbfs(waveform: np.ndarray, frame: int, hop: int, length=None) -> float:
    """dB re full scale (RMS 1.0) of P_top, the mean power of the loudest ``top_count`` frames."""
    top = speech_levels(waveform, frame, hop, length)[0]
    return float(10.0 * np.log10(top)) if top > 0 else float("-inf")


def has_speech(waveform: np.ndarray, feature_config, sample_rate: int, length=None) -> bool:
    """Whether a mono waveform at `sample_rate` holds speech (module docstring); `length`: the
    valid samples (default: all)."""
    frame, hop = frame_params(feature_config, sample_rate)
    n = np.asarray(waveform).reshape(-1).shape[0] if length is None else int(length)
    if n < feature_config.speech_min_ms * sample_rate / 1000.0:
        return False
    top, low = speech_levels(waveform, frame, hop, n)
    return bool(top >= 10.0 ** (feature_config.speech_threshold_dbfs / 10.0)
                and top >= low * 10.0 ** (feature_config.speech_min_contrast_db / 10.0))
