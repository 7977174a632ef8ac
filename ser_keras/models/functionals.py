"""The functionals classifier as it is saved, served and fused: an affine map and a softmax.

``training.functionals`` fits an SVM on standardised wide functionals (``features.functionals``)
and a softmax temperature on validation speakers. For a linear SVM the standardisation, the
decision function and the temperature fold exactly into one ``kernel [D, classes]`` and ``bias
[classes]``: probabilities = softmax(x @ kernel + bias) of the raw (or per-speaker
z-normalised) functionals x. For an RBF SVM (one class against the rest, per class) x is first
standardised (``mean``, ``scale``) and mapped onto its basis, exp(-gamma * |z - s|^2) for every
support vector s (``support [n, D]``), and ``kernel`` is ``[n, classes]``. One head per condition:

- ``speaker``: x z-normalised with the mean/std of all of the speaker's recordings (the
  protocol's figure; the export's ``serve_speaker``);
- ``pooled``: x as computed (a single served recording, no speaker context).

Each head carries the weight w its probabilities get in that condition's fused output:
(1 - w) * network + w * head.

Saved as ``folds/<fold>/functionals.npz`` (``rundir.FoldDir.functionals``); NumPy here, the same
two ops in the export's graph (``export.graph``).
"""

from __future__ import annotations

import dataclasses
import pathlib
import typing

import numpy as np

from ser_keras.errors import SerKerasError

CONDITIONS = ("speaker", "pooled")
# A functional that does not vary over a speaker's recordings is left at 0, not divided by ~0.
SPEAKER_STD_FLOOR = 1e-8


@dataclasses.dataclass
class FunctionalsHead:
    """One condition's head: probabilities = softmax(features(x) @ kernel + bias), and its
    weight in the fusion with the network."""

    kernel: np.ndarray  # [features or support vectors, classes] float32
    bias: np.ndarray  # [classes] float32
    weight: float = 0.5
    # An RBF head's basis (None for a linear one): the standardisation and the support vectors.
    support: typing.Optional[np.ndarray] = None  # [n, D] float16
    mean: typing.Optional[np.ndarray] = None
    scale: typing.Optional[np.ndarray] = None
    gamma: float = 0.0

    def features(self, x: np.ndarray) -> np.ndarray:
        """What ``kernel`` multiplies: x itself, or its RBF basis."""
        x = np.asarray(x, np.float64)
        if self.support is None:
            return x
        return rbf_basis((x - self.mean) / self.scale, self.support, self.gamma)

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        logits = self.features(x) @ self.kernel.astype(np.float64) + self.bias.astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


@dataclasses.dataclass
class FunctionalsClassifier:
    """The fold's heads by condition (``CONDITIONS``)."""

    heads: typing.Dict[str, FunctionalsHead]

    def save(self, path: pathlib.Path) -> None:
        arrays = {}
        for condition, head in self.heads.items():
            arrays[f"{condition}_weight"] = np.float64(head.weight)
            arrays[f"{condition}_kernel"] = head.kernel.astype(np.float32)
            arrays[f"{condition}_bias"] = head.bias.astype(np.float32)
            if head.support is not None:
                arrays[f"{condition}_support"] = head.support  # as trained: float16 (training.functionals)
                for name in ("mean", "scale"):
                    arrays[f"{condition}_{name}"] = getattr(head, name).astype(np.float32)
                arrays[f"{condition}_gamma"] = np.float64(head.gamma)
        tmp = pathlib.Path(path).with_suffix(".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(path)

    @classmethod
    def load(cls, path: pathlib.Path) -> "FunctionalsClassifier":
        try:
            with np.load(path) as data:
                heads = {}
                for c in CONDITIONS:
                    basis = {}
                    if f"{c}_support" in data.files:
                        basis = {name: data[f"{c}_{name}"] for name in ("support", "mean", "scale")}
                        basis["gamma"] = float(data[f"{c}_gamma"])
                    heads[c] = FunctionalsHead(data[f"{c}_kernel"], data[f"{c}_bias"], float(data[f"{c}_weight"]),
                                               **basis)
                return cls(heads=heads)
        except (OSError, KeyError, ValueError) as exc:
            raise SerKerasError(f"{path}: not a functionals classifier ({exc})") from None

    def fuse(self, network: np.ndarray, functionals: np.ndarray, condition: str) -> np.ndarray:
        """(1 - w) * network + w * functionals probabilities, w the `condition` head's weight."""
        weight = self.heads[condition].weight
        return (1.0 - weight) * np.asarray(network, np.float32) + weight * np.asarray(functionals, np.float32)


def rbf_basis(z: np.ndarray, support: np.ndarray, gamma: float) -> np.ndarray:
    """exp(-gamma * |z_i - s_j|^2), ``[len(z), len(support)]``, in float64 (the export's graph
    computes the same expansion)."""
    z, support = np.asarray(z, np.float64), np.asarray(support, np.float64)
    squared = (z * z).sum(axis=1)[:, None] - 2.0 * z @ support.T + (support * support).sum(axis=1)[None, :]
    return np.exp(-gamma * np.maximum(squared, 0.0))


def speaker_znorm(x: np.ndarray, speakers: typing.Sequence[str]) -> np.ndarray:
    """Each speaker's rows z-normalised with that speaker's own mean/std (labels unused)."""
    x = np.asarray(x, np.float64)
    out = np.empty_like(x)
    speakers = np.asarray(speakers)
    for speaker in np.unique(speakers):
        rows = speakers == speaker
        out[rows] = znorm(x[rows])
    return out.astype(np.float32)


def znorm(x: np.ndarray) -> np.ndarray:
    """Rows of one speaker z-normalised with their own mean/std."""
    mean, std = znorm_statistics(x)
    return (np.asarray(x, np.float64) - mean) / std


def znorm_statistics(x: np.ndarray) -> tuple:
    """(mean, std) float64 of one speaker's functionals rows, a std at or below the floor
    replaced by 1 (what ``znorm`` divides by; ``predict --same-speaker`` hands them to the
    export's ``serve_with_statistics``)."""
    x = np.asarray(x, np.float64)
    std = x.std(axis=0)
    return x.mean(axis=0), np.where(std > SPEAKER_STD_FLOOR, std, 1.0)
