"""Predictors: what ``predict`` scores windows with — one fold of a run directory in-process
(``RunPredictor``) or an export's SavedModel (``ExportPredictor``); ``load_predictor`` picks
one from a directory. Both run the same front-end ops (``features.frontend_ops``).
"""

from __future__ import annotations

import json
import pathlib
import typing

import numpy as np
import tensorflow as tf

from ser_keras.config import Config
from ser_keras.errors import SerKerasError
from ser_keras.features import frontend_ops as fe
from ser_keras.features.normalize import SPEAKER_MODES, mean_std_from_moments, serving_normalization
from ser_keras.inference.fold import attention_steps, load_fold, speaker_adapted
from ser_keras.models.functionals import znorm_statistics
from ser_keras.rundir import CONFIG_FILE, EXPORT_FILE, load_run_config

EXPORT_FORMAT = "ser_keras-savedmodel"


def read_export_json(export_dir) -> dict:
    """The export.json of an export directory (SerKerasError naming the file if unusable)."""
    path = pathlib.Path(export_dir) / EXPORT_FILE
    if not path.is_file():
        raise SerKerasError(f"{export_dir}: not a ser_keras export (no export.json)")
    try:
        meta = json.loads(path.read_text())
    except ValueError:
        raise SerKerasError(f"{path}: not valid JSON") from None
    if meta.get("format") != EXPORT_FORMAT:
        raise SerKerasError(f"{path}: not a ser_keras export (format {meta.get('format')!r})")
    return meta


class Predictor:
    """Scores equal-length windows of a recording. Subclasses: ``RunPredictor``,
    ``ExportPredictor``; ``load_predictor`` picks one from a directory."""

    source: str
    labels: list
    sample_rate: int
    frame: int
    hop: int
    step_frames: int
    span_frames: int
    window_frames: typing.Optional[int]
    kind: str  # "spectrogram" | "lld"
    feature_config: typing.Any
    normalization: str = "pooled"  # how `score` normalises without given statistics: pooled | none
    speaker_adapted: bool = False  # whether the model was trained on per-speaker statistics
    fuses_functionals: bool = False  # whether a functionals classifier is fused with the network
    std_floor: float = 1e-3

    def frame_count(self, n_samples: int) -> int:
        return 1 + (max(int(n_samples), self.frame) - self.frame) // self.hop

    def steps(self, n_frames: int) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def cut(self, waveform: np.ndarray, start: int, n_frames: int) -> np.ndarray:
        """The samples of one window of `n_frames` frames from frame `start`; the last window
        keeps the recording's tail after its last frame (fewer than ``hop`` samples, which the
        pitch tracker reads), so a recording in one window is scored whole."""
        first = start * self.hop
        end = first + self.frame + (n_frames - 1) * self.hop
        return waveform[first:len(waveform) if len(waveform) - end < self.hop else end]

    def has_speech(self, waveform: np.ndarray) -> bool:
        """Whether `waveform` holds speech, by the model's ``features.speech_*`` settings."""
        if getattr(self, "_speech_params", None) is None:
            self._speech_params = fe.params_for(self.feature_config, self.sample_rate)
        return fe.has_speech(waveform, self._speech_params)

    def score(self, batch: np.ndarray, stats=None) -> tuple:  # pragma: no cover - abstract
        """Equal-length window inputs ``[n, ...]`` -> (probabilities [n, C], alpha [n, steps]);
        `stats` = (mean, std) normalise every window (else the predictor's own normalisation)."""
        raise NotImplementedError

    def moments(self, waveform) -> tuple:  # pragma: no cover - abstract
        """(frames, sum, sum of squares), float64, of a whole recording's un-normalised features."""
        raise NotImplementedError

    def require_statistics(self) -> None:
        """Raise SerKerasError when this predictor cannot normalise by given statistics."""

    def functionals(self, waveform) -> np.ndarray:  # pragma: no cover - abstract
        """The wide functionals of a whole recording (a model with a functionals classifier)."""
        raise NotImplementedError

    def statistics(self, moments: typing.Sequence[tuple], functionals=None) -> tuple:
        """(mean, std) float64 over the frames whose ``moments`` are given (std floored); with
        the recordings' `functionals` rows also their (mean, std) (``models.functionals``)."""
        count = sum(float(m[0]) for m in moments)
        total = sum(np.asarray(m[1], np.float64) for m in moments)
        squares = sum(np.asarray(m[2], np.float64) for m in moments)
        stats = mean_std_from_moments(count, total, squares, self.std_floor)
        if functionals is None:
            return stats
        return stats + znorm_statistics(np.stack(functionals))

    def read_export_geometry(self, meta: dict, export_dir: pathlib.Path) -> None:
        """Labels, frame and attention geometry and normalisation from an export's
        ``export.json`` (`meta`) and the run config kept beside it."""
        self.labels = list(meta["labels"])
        self.sample_rate = int(meta["sample_rate"])
        self.config = load_run_config(export_dir)[0] if (export_dir / CONFIG_FILE).is_file() else Config()
        self.feature_config = self.config.features
        self.frame = int(round(meta["frame_s"] * self.sample_rate))
        self.hop = int(round(meta["hop_s"] * self.sample_rate))
        self.step_frames = int(round(meta["attention_step_s"] / meta["hop_s"]))
        self.span_frames = int(round(meta["attention_span_s"] / meta["hop_s"]))
        self.window_frames = meta.get("window_frames")
        self.normalization = meta.get("serve_without_speaker", "pooled")
        self.speaker_adapted = meta.get("normalization") in SPEAKER_MODES
        self.std_floor = float(meta.get("norm_std_floor", 1e-3))


class RunPredictor(Predictor):
    """One fold of a run directory, in-process: the front end's ops + the fold's Keras model."""

    def __init__(self, run_dir, fold=None):
        self.bundle = bundle = load_fold(run_dir, fold)
        self.source = f"{run_dir} (fold {bundle.fold})"
        self.labels = list(bundle.labels)
        p = bundle.params
        self.sample_rate, self.frame, self.hop, self.kind = p.sample_rate, p.frame, p.hop, p.kind
        self.step_frames, self.span_frames = bundle.step_frames, bundle.span_frames
        self.window_frames = bundle.config.features.max_frames
        self.feature_config = bundle.config.features
        self.normalization = serving_normalization(bundle.config.features.normalization)
        self.std_floor = p.std_floor
        self.speaker_adapted = speaker_adapted(bundle.config)
        self.fuses_functionals = bundle.functionals is not None

    def steps(self, n_frames: int) -> int:
        return self.bundle.steps(n_frames)

    def functionals(self, waveform) -> np.ndarray:
        return self.bundle.wide_functionals([waveform])[0]

    def score(self, batch, stats=None):
        network_stats = None if stats is None else stats[:2]
        probabilities, alpha = self.bundle.score(np.stack([self.bundle.features(w, network_stats) for w in batch]))
        if self.bundle.functionals is not None:  # as the export's serve / serve_with_statistics
            probabilities = self.bundle.functionals.fuse(
                probabilities, self.bundle.functionals_probabilities(batch, None if stats is None else stats[2:]),
                "pooled" if stats is None else "speaker")
        return probabilities, alpha

    def moments(self, waveform):
        x = np.asarray(self.bundle.raw_features(waveform), np.float64)
        return float(x.shape[0]), x.sum(axis=0), np.einsum("ij,ij->j", x, x)


class ExportPredictor(Predictor):
    """An export directory: ``tf.saved_model.load`` and its ``serve`` endpoint."""

    def __init__(self, export_dir):
        export_dir = pathlib.Path(export_dir)
        self.meta = meta = read_export_json(export_dir)
        if meta.get("input") != "waveform":  # exp2 exports before format 4 took LLD frames
            raise SerKerasError(f"{export_dir}: this export takes {meta.get('input')!r} input, not a waveform "
                                f"(export format {meta.get('format_version')}); export the run again")
        try:
            self.loaded = tf.saved_model.load(str(export_dir))
        except (OSError, ValueError, tf.errors.OpError) as exc:
            raise SerKerasError(f"{export_dir}: cannot load the SavedModel "
                                f"({str(exc).splitlines()[0][:200]})") from None
        self.source = str(export_dir)
        self.kind = meta.get("features", "spectrogram")
        self.read_export_geometry(meta, export_dir)
        self._steps = attention_steps
        self.export_dir = export_dir
        self.fuses_functionals = bool(meta.get("functionals"))

    def steps(self, n_frames: int) -> int:
        return self._steps(n_frames, self.config)

    def require_statistics(self) -> None:
        for name in ("speaker_statistics", "serve_with_statistics"):
            self._endpoint(name)

    def _endpoint(self, name: str):
        if not hasattr(self.loaded, name):
            raise SerKerasError(f"{self.export_dir}: this export has no '{name}' endpoint (export format "
                                f"{self.meta.get('format_version')}); export the run again")
        return getattr(self.loaded, name)

    def score(self, batch, stats=None):
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if stats is None:
            outputs = self.loaded.serve(batch)
        else:
            lengths = np.full(batch.shape[0], batch.shape[1], np.int32)
            outputs = self._endpoint("serve_with_statistics")(
                batch, lengths, *(np.asarray(s, np.float32) for s in stats))
        return outputs["probabilities"].numpy(), outputs["attention"].numpy()

    def functionals(self, waveform):
        x = np.ascontiguousarray(waveform, dtype=np.float32)
        out = self._endpoint("wide_functionals")(x[None], np.array([x.shape[0]], np.int32))
        return out["functionals"].numpy()[0]

    def moments(self, waveform):
        x = np.ascontiguousarray(waveform, dtype=np.float32)
        if x.shape[0] < self.frame:  # as score_waveform pads a window
            x = np.pad(x, (0, self.frame - x.shape[0]))
        out = self._endpoint("speaker_statistics")(x[None], np.array([x.shape[0]], np.int32))
        return float(out["frames"].numpy()), out["sum"].numpy(), out["sum_squares"].numpy()
