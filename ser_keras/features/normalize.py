"""Normalisation by the statistics of neutral speech in the training fold (section 4.1).

The paper normalises the features "by global mean and standard deviation based on neutral
speech characteristics in the training set". ``FeatureNormalizer`` does that per feature
dimension over frames, in one of four modes:

- ``neutral_speaker`` (the class's default): each training speaker is normalised by the mean/std of
  *their own* neutral frames in the training fold, which removes speaker identity (pitch range,
  vocal tract, recording level) and keeps what differs from that speaker's neutral voice.
- ``neutral_global``: everyone is normalised by the pooled neutral frames of the training fold.
- ``none``: features pass through unchanged (as float32 copies).
- ``speaker`` (the config's default, ``features.normalization``): every speaker is normalised by the
  mean/std of *all* of their frames, training speakers from the training fold, unseen (test)
  speakers from all of their utterances passed to ``transform`` (no labels used). Training
  and test speakers are then treated alike; under leave-one-speaker-out ``neutral_speaker``
  is not (training speakers get neutral statistics, a test speaker, whose neutral utterances
  are unknown, the statistics of all of its speech), which costs a lot of accuracy. The pooled
  statistics (``global_mean_``/``global_std_``) are then those of all training frames.

A speaker with no neutral frames in the training fold (every test speaker under
leave-one-speaker-out, or a training speaker who recorded no neutral utterance) is handled
by ``fallback``:

- ``speaker_all``: mean/std over *all* of that speaker's frames passed to ``transform``
  (unsupervised speaker adaptation: no labels are used, only the speaker id);
- ``global``: the pooled neutral statistics of the training fold.

``transform(features, speakers=None)`` without speakers uses the pooled statistics for every
utterance (``global_mean_`` / ``global_std_``).

Serving a single recording (no speaker id, no other utterances of its speaker): the speaker
statistics cannot be computed, so ``serving_normalization(mode)`` names what replaces them,
for the export's ``serve`` endpoint and for ``fit``'s ``serving_wa``/``serving_ua``: the
training fold's pooled statistics (``"pooled"``; ``"none"`` for mode ``none``). Measured with
``bench/normalisation.py`` (exp4, LOSO; the same trained models, only the test speaker's
normalisation changed), UA %: EMO-DB 62.6 with the speaker's own statistics (what ``fit``
reports), 52.0 pooled, 22.9 per utterance (each recording by its own mean/std, which also
removes the loudness and spectral tilt that carry much of the emotion); demo corpus 66.1 /
42.2 / 25.0. Statistics of k enrolment utterances of the speaker: EMO-DB 39.1 (k=1), 48.7
(k=3), 58.6 (k=10).

If the training fold holds no neutral utterance at all (a label set without "neutral"), the
pooled and per-speaker statistics fall back to *all* training frames (of the fold / of that
speaker) and ``reference_`` says ``"all"`` instead of ``"neutral"``.

Every standard deviation is floored at ``std_floor`` so a (nearly) constant dimension is
never divided by ~0. Statistics are accumulated in float64; outputs are float32.
"""

from __future__ import annotations

import typing

import numpy as np

from ser_keras.config import NORMALIZATIONS, SPEAKER_FALLBACKS
from ser_keras.errors import SerKerasError
from ser_keras.features.frontend_ops import standardize_each

MODES = NORMALIZATIONS
FALLBACKS = SPEAKER_FALLBACKS
# Modes whose models see speaker-normalised input (a test speaker: statistics of their speech).
SPEAKER_MODES = ("neutral_speaker", "speaker")


def serving_normalization(mode: str) -> str:
    """How a recording served without speaker context is normalised for a model trained with
    normalisation `mode`: "pooled" (the training fold's pooled statistics, ``global_mean_`` /
    ``global_std_``) or "none". Per-utterance statistics measured far worse for the
    per-speaker modes (module docstring)."""
    if mode not in MODES:
        raise SerKerasError(f"features.normalization: '{mode}' is not one of {', '.join(MODES)}")
    return "none" if mode == "none" else "pooled"


def frame_stats(features: typing.Sequence[np.ndarray], std_floor: float = 1e-3) -> tuple:
    """(mean, std) per dimension (float64) over every frame of `features` (a list of
    (frames, D) arrays), std floored at `std_floor`: exactly the statistics the "speaker" mode
    gives one speaker whose utterances these are. ``frame_stats([x])`` are x's own."""
    moments = _Moments()
    for x in features:
        moments.add(_as_2d(x))
    if moments.count == 0:
        raise SerKerasError("normalisation: no frames to compute statistics from")
    return moments.mean_std(float(std_floor))


def normalize_with(features: typing.Sequence[np.ndarray], stats=None, std_floor: float = 1e-3) -> list:
    """float32 ``(x - mean) / std`` of every array: with `stats` = (mean, std) for all of them,
    or, when `stats` is None, each array by its own ``frame_stats([x], std_floor)``."""
    features = [_as_2d(x) for x in features]
    return standardize_each(features, [frame_stats([x], std_floor) if stats is None else stats for x in features])


class _Moments:
    """Streaming sum / sum of squares per dimension (float64)."""

    def __init__(self):
        self.count = 0
        self.total = None
        self.squares = None

    def add(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64)
        if x.shape[0] == 0:
            return
        if self.total is None:
            self.total = np.zeros(x.shape[1])
            self.squares = np.zeros(x.shape[1])
        self.count += x.shape[0]
        self.total += x.sum(axis=0)
        self.squares += np.einsum("ij,ij->j", x, x)

    def mean_std(self, floor: float) -> tuple:
        return mean_std_from_moments(self.count, self.total, self.squares, floor)


def mean_std_from_moments(count, total, squares, std_floor: float) -> tuple:
    """(mean, std) float64 from frame count, per-dimension sum and sum of squares (the formula
    every statistic here uses; the export's graph computes the same)."""
    total = np.asarray(total, np.float64)
    mean = total / count
    var = np.maximum(np.asarray(squares, np.float64) / count - mean**2, 0.0)
    return mean, np.maximum(np.sqrt(var), float(std_floor))


class FeatureNormalizer:
    """Per-dimension standardisation of frame features, fitted on a fold's training part: by
    each speaker's statistics (all of their speech, or their neutral speech) or by the neutral
    speech of the whole training part.

    Args:
        mode: one of ``MODES`` (``features.normalization``).
        fallback: "speaker_all" or "global", for speakers without training neutral frames.
        neutral_label: the label (as given to ``fit``) of neutral utterances.
        std_floor: lower bound of every standard deviation.

    Example:
        >>> norm = FeatureNormalizer("neutral_speaker", "speaker_all", "neutral")
        >>> norm.fit(train_features, train_labels, train_speakers)
        >>> test_x = norm.transform(test_features, test_speakers)
    """

    def __init__(self, mode: str = "neutral_speaker", fallback: str = "speaker_all",
                 neutral_label: typing.Any = "neutral", std_floor: float = 1e-3):
        if mode not in MODES:
            raise SerKerasError(f"features.normalization: '{mode}' is not one of {', '.join(MODES)}")
        if fallback not in FALLBACKS:
            raise SerKerasError(f"features.speaker_fallback: '{fallback}' is not one of {', '.join(FALLBACKS)}")
        if not std_floor > 0:
            raise SerKerasError(f"features.norm_std_floor: must be positive, got {std_floor}")
        self.mode = mode
        self.fallback = fallback
        self.neutral_label = neutral_label
        self.std_floor = float(std_floor)
        self.global_mean_ = None
        self.global_std_ = None
        self.speaker_stats_ = {}
        self.reference_ = None

    @classmethod
    def from_config(cls, config) -> "FeatureNormalizer":
        """From a full ``Config`` (features section + data.neutral_label)."""
        return cls(config.features.normalization, config.features.speaker_fallback,
                   config.data.neutral_label, config.features.norm_std_floor)

    # ------------------------------------------------------------------------------ fit

    def fit(self, features: typing.Sequence[np.ndarray], labels: typing.Sequence,
            speakers: typing.Optional[typing.Sequence] = None) -> "FeatureNormalizer":
        """Learn statistics from the TRAINING fold only: `features` (frames, D) per utterance."""
        features = list(features)
        if not features:
            raise SerKerasError("normalisation: no training utterances to fit on")
        labels = list(labels)
        if len(labels) != len(features):
            raise ValueError(f"{len(features)} feature arrays but {len(labels)} labels")
        speakers = [None] * len(features) if speakers is None else [_key(s) for s in speakers]
        if len(speakers) != len(features):
            raise ValueError(f"{len(features)} feature arrays but {len(speakers)} speakers")
        dims = {np.shape(x)[-1] for x in features}
        if len(dims) != 1:
            raise ValueError(f"feature arrays disagree on their last dimension: {sorted(dims)}")
        neutral = [_same(label, self.neutral_label) for label in labels]
        if self.mode == "speaker":  # every frame, labels unused
            neutral = [False] * len(features)
        self.reference_ = "neutral" if any(neutral) else "all"
        use = neutral if any(neutral) else [True] * len(features)

        pooled = _Moments()
        per_speaker = {}
        for x, speaker, keep in zip(features, speakers, use):
            if not keep:
                continue
            x = _as_2d(x)
            pooled.add(x)
            if speaker is not None:
                per_speaker.setdefault(speaker, _Moments()).add(x)
        if pooled.count == 0:
            raise SerKerasError("normalisation: the training utterances hold no frames")
        self.global_mean_, self.global_std_ = pooled.mean_std(self.std_floor)
        self.speaker_stats_ = {}
        if self.mode in ("neutral_speaker", "speaker"):
            for speaker, moments in per_speaker.items():
                if moments.count:
                    self.speaker_stats_[speaker] = moments.mean_std(self.std_floor)
        return self

    # ------------------------------------------------------------------------ transform

    def transform(self, features: typing.Sequence[np.ndarray],
                  speakers: typing.Optional[typing.Sequence] = None) -> list:
        """Normalised float32 copies of `features` (a list of (frames, D) arrays)."""
        features = [_as_2d(x) for x in features]
        if self.mode == "none":
            return [x.astype(np.float32, copy=True) for x in features]
        self._check_fitted()
        return standardize_each(features, self.utterance_stats(features, speakers))

    def utterance_stats(self, features, speakers=None) -> list:
        """(mean, std) used for each utterance by ``transform``."""
        pooled = (self.global_mean_, self.global_std_)
        if self.mode == "neutral_global" or speakers is None:
            return [pooled] * len(features)
        speakers = [_key(s) for s in speakers]
        if len(speakers) != len(features):
            raise ValueError(f"{len(features)} feature arrays but {len(speakers)} speakers")
        fallback = {}
        unknown = sorted({s for s in speakers if s not in self.speaker_stats_}, key=str)
        for speaker in unknown:
            if self.fallback == "global" or speaker is None:
                fallback[speaker] = pooled
            else:
                moments = _Moments()
                for x, s in zip(features, speakers):
                    if s == speaker:
                        moments.add(x)
                fallback[speaker] = moments.mean_std(self.std_floor) if moments.count else pooled
        return [self.speaker_stats_.get(s) or fallback[s] for s in speakers]

    def fit_transform(self, features, labels, speakers=None) -> list:
        return self.fit(features, labels, speakers).transform(features, speakers)

    # -------------------------------------------------------------------------- saving

    def to_arrays(self) -> dict:
        """Plain numpy arrays (for ``np.savez``) that ``from_arrays`` turns back into this."""
        self._check_fitted()
        names = sorted(self.speaker_stats_, key=str)
        dim = self.global_mean_.shape[0]
        return {
            "mode": np.array(self.mode),
            "fallback": np.array(self.fallback),
            "neutral_label": np.array(str(self.neutral_label)),
            "std_floor": np.array(self.std_floor),
            "reference": np.array(self.reference_),
            "global_mean": self.global_mean_.astype(np.float64),
            "global_std": self.global_std_.astype(np.float64),
            "speakers": np.array([str(s) for s in names], dtype=str),
            "speaker_mean": np.array([self.speaker_stats_[s][0] for s in names]).reshape(len(names), dim),
            "speaker_std": np.array([self.speaker_stats_[s][1] for s in names]).reshape(len(names), dim),
        }

    @classmethod
    def from_arrays(cls, arrays: typing.Mapping) -> "FeatureNormalizer":
        """Inverse of ``to_arrays`` (works on an ``np.load``-ed npz file). Speaker ids and the
        neutral label come back as strings."""
        norm = cls(str(arrays["mode"]), str(arrays["fallback"]), str(arrays["neutral_label"]),
                   float(arrays["std_floor"]))
        norm.reference_ = str(arrays["reference"])
        norm.global_mean_ = np.asarray(arrays["global_mean"], dtype=np.float64)
        norm.global_std_ = np.asarray(arrays["global_std"], dtype=np.float64)
        norm.speaker_stats_ = {
            str(s): (np.asarray(m, dtype=np.float64), np.asarray(d, dtype=np.float64))
            for s, m, d in zip(arrays["speakers"], arrays["speaker_mean"], arrays["speaker_std"])
        }
        return norm

    def _check_fitted(self) -> None:
        if self.global_mean_ is None:
            raise SerKerasError("normalisation: FeatureNormalizer used before fit()")


def _as_2d(x) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"feature arrays must be (frames, D), got shape {x.shape}")
    return x


def _key(speaker):
    """Speaker ids compare as strings (manifests hold strings, saved arrays too)."""
    return None if speaker is None else str(speaker)


def _same(label, neutral) -> bool:
    return label == neutral or str(label) == str(neutral)
