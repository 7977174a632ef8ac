"""PCA of spectrogram frames to ``pca_components`` channels (experiment 3/4 of the paper).

``FramePCA`` is fitted on the frames of the TRAINING fold only. With more than ``max_frames``
training frames it fits on a subsample of frames drawn without replacement with ``seed``, so
the result is reproducible and the covariance costs a bounded amount of memory and time.

The projection is ``y = (x - mean_) @ components_`` with ``components_`` (D, k) holding the
top-k eigenvectors of the frame covariance as columns, in order of decreasing variance, each
with its largest-magnitude entry positive (so the sign does not depend on the LAPACK build).
There is no whitening: the paper only reduces the dimension. The export bakes ``mean_`` and
``components_`` into the serving graph.
"""

from __future__ import annotations

import typing

import numpy as np

from ser_keras.errors import SerKerasError
from ser_keras.features.frontend_ops import project_each
from ser_keras.features.channels import pitch_channel_count


class FramePCA:
    """Frame-level PCA fitted on training frames.

    Args:
        n_components: output channels k (60 in the paper).
        seed: seed of the frame subsample.
        max_frames: fit on at most this many frames (seeded subsample beyond it).
        passthrough: the last this many input columns are not projected but appended to the
            components as they are (the pitch channels): ``components_`` is block diagonal,
            the principal axes of the other columns and an identity, and ``mean_`` is zero
            there, so the export applies it as one matrix like any PCA.

    Attributes:
        mean_: (D,) float32 training frame mean.
        components_: (D, k) float32 projection matrix.
        explained_variance_: (k,) variance along each component.
        explained_variance_ratio_: (k,) fraction of the total variance.
    """

    def __init__(self, n_components: int = 60, seed: int = 0, max_frames: int = 200000, passthrough: int = 0):
        if int(n_components) < 1:
            raise SerKerasError(f"features.pca_components: must be >= 1, got {n_components}")
        if int(max_frames) < 2:
            raise SerKerasError(f"features.pca_max_frames: must be >= 2, got {max_frames}")
        self.n_components = int(n_components)
        self.seed = int(seed)
        self.max_frames = int(max_frames)
        self.passthrough = int(passthrough)
        self.mean_ = None
        self.components_ = None
        self.explained_variance_ = None
        self.explained_variance_ratio_ = None

    @classmethod
    def from_config(cls, config) -> "FramePCA":
        """From a full ``Config`` (features.pca_components, features.pca_max_frames, train.seed)."""
        return cls(config.features.pca_components, config.train.seed, config.features.pca_max_frames,
                   passthrough=pitch_channel_count(config.features))

    def fit(self, features: typing.Union[np.ndarray, typing.Sequence[np.ndarray]]) -> "FramePCA":
        """Fit on training frames: a (frames, D) array or a list of them (one per utterance)."""
        arrays = self._arrays(features)
        passed = None
        if self.passthrough:
            passed = [a[:, -self.passthrough:] for a in arrays]
            arrays = [a[:, :-self.passthrough] for a in arrays]
        lengths = np.array([a.shape[0] for a in arrays])
        total = int(lengths.sum())
        if total < 2:
            raise SerKerasError(f"PCA: needs at least 2 training frames, got {total}")
        dim = arrays[0].shape[1]
        if self.n_components > dim:
            raise SerKerasError(f"features.pca_components: {self.n_components} exceeds the feature dimension {dim}")
        if total > self.max_frames:
            # Pick global frame indices, then gather them per utterance (no full concatenation).
            rng = np.random.default_rng(self.seed)
            rows = np.sort(rng.choice(total, size=self.max_frames, replace=False))
            starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
            cuts = np.searchsorted(rows, np.append(starts, total))  # rows is sorted
            frames = np.concatenate([arrays[u][rows[cuts[u]:cuts[u + 1]] - starts[u]]
                                     for u in range(len(arrays)) if cuts[u + 1] > cuts[u]])
        else:
            frames = np.concatenate(arrays, axis=0)
        count = frames.shape[0]
        mean = frames.sum(axis=0, dtype=np.float64) / count
        covariance = np.zeros((dim, dim))
        for start in range(0, count, 16384):  # float64 in bounded chunks
            centred = frames[start:start + 16384].astype(np.float64) - mean
            covariance += centred.T @ centred
        covariance /= count - 1
        values, vectors = np.linalg.eigh(covariance)
        order = np.argsort(values)[::-1][: self.n_components]
        values, vectors = np.maximum(values[order], 0.0), vectors[:, order]
        signs = np.sign(vectors[np.abs(vectors).argmax(axis=0), np.arange(vectors.shape[1])])
        vectors *= np.where(signs == 0, 1.0, signs)
        total = float(np.trace(covariance))
        self.mean_ = mean.astype(np.float32)
        self.components_ = vectors.astype(np.float32)
        self.explained_variance_ = values.astype(np.float32)
        self.explained_variance_ratio_ = (values / total if total > 0 else np.zeros_like(values)).astype(np.float32)
        if passed is not None:
            self._append_passthrough(passed)
        return self

    def _append_passthrough(self, passed: list) -> None:
        """Extend the fitted projection by the passed-through columns (identity, zero mean)."""
        p, (dim, k) = self.passthrough, self.components_.shape
        components = np.zeros((dim + p, k + p), np.float32)
        components[:dim, :k] = self.components_
        components[dim:, k:] = np.eye(p, dtype=np.float32)
        self.components_ = components
        self.mean_ = np.concatenate([self.mean_, np.zeros(p, np.float32)])
        variance = np.concatenate(passed).astype(np.float64).var(axis=0)
        self.explained_variance_ = np.concatenate([self.explained_variance_, variance.astype(np.float32)])
        self.explained_variance_ratio_ = np.concatenate([self.explained_variance_ratio_, np.zeros(p, np.float32)])

    def transform(self, x):
        """Project a (frames, D) array, or each array of a list -> float32 (frames, k)."""
        if self.components_ is None:
            raise SerKerasError("PCA: FramePCA used before fit()")
        items = [np.asarray(item, dtype=np.float32) for item in (x if isinstance(x, (list, tuple)) else [x])]
        for item in items:
            if item.shape[-1] != self.mean_.shape[0]:
                raise ValueError(f"PCA was fitted on {self.mean_.shape[0]} dimensions, got {item.shape[-1]}")
        out = project_each(items, self.mean_, self.components_)
        return out if isinstance(x, (list, tuple)) else out[0]

    def fit_transform(self, features):
        return self.fit(features).transform(features)

    def to_arrays(self) -> dict:
        return {"pca_mean": self.mean_, "pca_components": self.components_,
                "pca_explained_variance": self.explained_variance_}

    @classmethod
    def from_arrays(cls, arrays: typing.Mapping) -> "FramePCA":
        components = np.asarray(arrays["pca_components"], dtype=np.float32)
        pca = cls(components.shape[1])
        pca.mean_ = np.asarray(arrays["pca_mean"], dtype=np.float32)
        pca.components_ = components
        if "pca_explained_variance" in arrays:
            pca.explained_variance_ = np.asarray(arrays["pca_explained_variance"], dtype=np.float32)
        return pca

    @staticmethod
    def _arrays(features) -> list:
        if isinstance(features, np.ndarray) and features.ndim == 2:
            return [features]
        arrays = [np.asarray(x) for x in features]
        if not arrays:
            raise SerKerasError("PCA: no training utterances to fit on")
        if any(a.ndim != 2 for a in arrays) or len({a.shape[1] for a in arrays}) != 1:
            raise ValueError("PCA: every feature array must be (frames, D) with the same D")
        return arrays
