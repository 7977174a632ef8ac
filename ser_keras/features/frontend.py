"""The fitted front end of one fold: normaliser and (spectrogram input) PCA, as one object.

``FittedFrontEnd.fit`` learns them from the fold's *training* utterances only; ``transform``
applies them to any set of utterances (all utterances of a speaker in one call, so a speaker
unseen in training is normalised with statistics of all of their speech); ``transform_serving``
normalises each utterance as a served single recording is (no speaker context: the pooled
training statistics, ``normalize.serving_normalization``); ``transform_warped`` makes the
frequency-warped training versions (``features.augment``), each (speaker, factor) a speaker of
its own; ``transform_views`` gives the test-time views (``features.test_warp_factors``) a model
is scored on, plain first.

It owns its saved state: ``save(fold_dir)`` writes the normaliser's arrays (per-speaker
statistics included) and the arrays the export bakes into its graph (pooled normalisation
statistics as float32, PCA mean and components — an identity when there is no PCA, so every
run has the same keys — the sample rate, feature kind and normalisation mode); ``load`` reads
them back, and ``serving_arrays`` gives the latter to ``features.frontend_ops.params_from_arrays``,
from which the front end's ops take them. Training writes it, evaluation and export read it.
"""

from __future__ import annotations

import typing

import numpy as np

from ser_keras.errors import SerKerasError
from ser_keras.features.augment import check_factors, warp_frequency, warped_speaker
from ser_keras.features.channels import map_spectral
from ser_keras.features.frontend_ops import level_normalized, project_each, view_projection
from ser_keras.features.normalize import SPEAKER_MODES, FeatureNormalizer, serving_normalization
from ser_keras.features.pca import FramePCA
from ser_keras.rundir import FoldDir


def reports_serving(config) -> bool:
    """Whether a run reports the served model's figure besides the protocol's: speaker-
    normalised network models (an SVM is not exported; other modes serve what they test)."""
    return config.model.classifier == "network" and config.features.normalization in SPEAKER_MODES


def serving_mode(config) -> str:
    """How a recording served without speaker context is normalised ("pooled" or "none")."""
    return serving_normalization(config.features.normalization)


def uses_pca(config) -> bool:
    """The PCA is fitted on spectrogram input only."""
    return config.model.input_features == "spectrogram"


class FittedFrontEnd:
    """Normaliser + optional PCA fitted on one training fold.

    Args:
        normalizer: a fitted ``FeatureNormalizer``.
        pca: a fitted ``FramePCA``, or None (LLD input).
        serving: the arrays the export bakes in (``serving_arrays``); None to derive them.
    """

    def __init__(self, normalizer: FeatureNormalizer, pca: typing.Optional[FramePCA] = None,
                 serving: typing.Optional[dict] = None):
        self.normalizer = normalizer
        self.pca = pca
        self._serving = serving

    # ------------------------------------------------------------------------------ fit

    @classmethod
    def fit(cls, config, features: list, labels: list, speakers: list) -> "FittedFrontEnd":
        """Fit on the training utterances (``(frames, D)`` arrays, their labels and speakers)."""
        normalizer = FeatureNormalizer.from_config(config)
        normalizer.fit(features, labels, speakers)
        pca = None
        dim = features[0].shape[-1]
        if uses_pca(config):
            pca = FramePCA.from_config(config).fit(normalizer.transform(features, speakers))
            pca_mean, pca_components = pca.mean_, pca.components_
        else:  # no PCA: identity, so the file has the same keys for every experiment
            pca_mean, pca_components = np.zeros(dim, np.float32), np.eye(dim, dtype=np.float32)
        if config.features.normalization == "none":
            norm_mean, norm_std = np.zeros(dim, np.float32), np.ones(dim, np.float32)
        else:
            norm_mean = normalizer.global_mean_.astype(np.float32)
            norm_std = normalizer.global_std_.astype(np.float32)
        serving = {
            "norm_mean": norm_mean, "norm_std": norm_std,
            "pca_mean": np.asarray(pca_mean, np.float32), "pca_components": np.asarray(pca_components, np.float32),
            "sample_rate": np.array(config.data.sample_rate),
            "feature_kind": np.array(config.model.input_features),
            "normalization": np.array(config.features.normalization),
        }
        return cls(normalizer, pca, serving)

    # ------------------------------------------------------------------------ transform

    def transform(self, features: list, speakers: typing.Optional[list] = None) -> list:
        """Normalise (and project) `features` in ONE call: a speaker unseen in training is
        normalised with statistics of all of their utterances in the set; without
        `speakers`, every utterance with the pooled training statistics."""
        if len(features) == 0:
            return []
        out = self.normalizer.transform(features, speakers)
        if self.pca is not None:
            out = self.pca.transform(out)
        return out

    def transform_serving(self, features: list) -> list:
        """Each utterance on its own, without speaker context, normalised as the export's
        ``serve`` does (the pooled training statistics), then projected."""
        return self.transform(features, None)

    def transform_views(self, features: list, speakers: typing.Optional[list], feature_config) -> list:
        """The test-time views of `features` as a model is scored on them: one list per view,
        the plain one first (``transform``'s), then one per ``feature_config.test_warp_factors``
        entry with the normalised log-power bins warped (``features.augment.warp_matrix``)
        before the PCA (``frontend_ops.view_projection``, as the export graph does). `speakers`
        as for ``transform`` (None: as served, pooled statistics)."""
        if len(features) == 0:
            return [[]]
        return self.project_views(self.normalizer.transform(features, speakers), feature_config)

    def project_views(self, normalised: list, feature_config) -> list:
        """``transform_views`` of utterances already normalised (by any statistics)."""
        factors = check_factors(feature_config.test_warp_factors, "test_warp_factors")
        if not factors:
            return [self.pca.transform(normalised) if self.pca is not None else normalised]
        if self.pca is None:
            raise SerKerasError("test-time views need the front end's PCA (spectrogram input)")
        weights, offset = view_projection(self.pca.mean_, self.pca.components_, int(feature_config.n_bins), factors)
        projected = project_each(normalised, None, weights, offset)
        k = self.pca.components_.shape[1]
        return [[x[:, view * k:(view + 1) * k] for x in projected] for view in range(len(factors) + 1)]

    def transform_warped(self, features: list, speakers: list, feature_config) -> list:
        """The frequency-warped copies of `features`: one block per
        ``feature_config.warp_factors`` entry, each (speaker, factor) normalised as a speaker
        of its own; empty without warp factors."""
        out = []
        for factor in check_factors(feature_config.warp_factors):
            # A warped copy is a voice of its own: level-normalised by its own reference, as a
            # recording of that voice would be (warping moves energy across bins).
            warped = [map_spectral(lambda bins: _warped_bins(bins, factor, feature_config), x, feature_config)
                      for x in features]
            normalised = self.normalizer.transform(warped, [warped_speaker(s, factor) for s in speakers])
            out.extend(self.pca.transform(normalised) if self.pca is not None else normalised)
        return out

    # -------------------------------------------------------------------------- saving

    def serving_arrays(self) -> dict:
        """What the export bakes in: norm_mean/norm_std, pca_mean/pca_components, sample_rate
        (and feature_kind, normalization)."""
        if self._serving is None:
            raise SerKerasError("front end: no serving arrays (fitted front ends and saved ones have them)")
        return dict(self._serving)

    def save(self, fold_dir: FoldDir) -> None:
        np.savez(fold_dir.normalizer, **self.normalizer.to_arrays())
        np.savez(fold_dir.frontend, **self.serving_arrays())

    @staticmethod
    def saved(fold_dir: FoldDir) -> bool:
        return fold_dir.normalizer.is_file() and fold_dir.frontend.is_file()

    @classmethod
    def load(cls, fold_dir: FoldDir, pca: bool) -> "FittedFrontEnd":
        """The front end a fold saved (`pca`: whether it has one: ``uses_pca(config)``)."""
        with np.load(fold_dir.normalizer) as arrays:
            normalizer = FeatureNormalizer.from_arrays(dict(arrays))
        serving = cls.read_serving_arrays(fold_dir)
        return cls(normalizer, FramePCA.from_arrays(serving) if pca else None, serving)

    @staticmethod
    def read_serving_arrays(fold_dir: FoldDir) -> dict:
        """The arrays of a fold's (or an export's) saved front end that serving needs, as a
        dict; raises SerKerasError naming the file when it is missing or unreadable."""
        path = fold_dir.frontend
        if not path.is_file():
            raise SerKerasError(f"{path}: front-end statistics not found")
        try:
            with np.load(path, allow_pickle=False) as data:
                return {key: data[key] for key in data.files}
        except (OSError, ValueError) as exc:
            raise SerKerasError(f"{path}: not a readable .npz file ({exc.__class__.__name__})") from None


def _warped_bins(bins: np.ndarray, factor: float, feature_config) -> np.ndarray:
    """The log-power bins warped by `factor` and level-normalised again (the pitch channels of
    a warped copy stay as they are: normalised per (speaker, factor), a scaled F0 contour is
    the same contour)."""
    return level_normalized([warp_frequency(bins, factor)], feature_config)[0]
