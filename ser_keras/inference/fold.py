"""One fold of a run directory, loaded for inference: config, labels, Keras model, front end.

A run directory (``rundir.RunDir``, written by ``ser-keras fit``) holds the resolved config
and the label order, and per fold the Keras model and the fitted front end
(``features.frontend.FittedFrontEnd``), whose serving arrays become ``FrontEndParams``. ``load_fold``
turns one fold into a ``FoldModel`` that both the exporter and ``predict`` use, so the
exported graph and the in-process pipeline are built from the very same pieces (and the
same front-end ops, ``features.frontend_ops``).
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import re
import typing

import keras
import numpy as np
import tensorflow as tf

import ser_keras.layers  # noqa: F401  (registers the custom layers for load_model)
from ser_keras.errors import SerKerasError
from ser_keras.features import frontend_ops as fe
from ser_keras.features import functionals
from ser_keras.features.frontend import FittedFrontEnd
from ser_keras.features.normalize import SPEAKER_MODES
from ser_keras.models import ATTENTION_LAYER, attention_model, attention_span_frames, attention_step_frames
from ser_keras.models.functionals import FunctionalsClassifier
from ser_keras.rundir import RunDir, load_run_config


def _natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def fold_names(run_dir) -> list:
    """Names of the folds of `run_dir` that hold a model, in the protocol's fold order.

    The order is the one ``folds.json`` (or ``results.json``) lists; folders it does not
    name follow in natural order (fold_2 before fold_10).
    """
    run = RunDir(run_dir)
    if not run.folds_dir.is_dir():
        raise SerKerasError(f"{run_dir}: not a run directory (no 'folds' folder)")
    present = sorted((p.name for p in run.folds_dir.iterdir() if run.fold(p.name).keras_model.is_file()),
                     key=_natural_key)
    ordered = [name for name in run.protocol_fold_names() if name in present]
    return ordered + [name for name in present if name not in ordered]


def resolve_fold(run_dir, fold: typing.Union[int, str, None] = None) -> str:
    """The fold to use: None -> the first trained fold; an int N -> the protocol's fold N
    (0-based, as ``fit --fold N``); a str -> the fold of that name."""
    run_dir = pathlib.Path(run_dir)
    trained = fold_names(run_dir)
    if not trained:
        raise SerKerasError(f"{run_dir}: no trained fold (no folds/<fold>/model.keras)")
    if fold is None:
        return trained[0]
    if isinstance(fold, str) and not fold.isdigit():
        if fold not in trained:
            raise SerKerasError(f"{run_dir}: no trained fold '{fold}' (trained: {', '.join(trained)})")
        return fold
    index = int(fold)
    protocol = RunDir(run_dir).protocol_fold_names() or trained
    if not 0 <= index < len(protocol):
        raise SerKerasError(f"{run_dir}: --fold {index} is out of range (the protocol has "
                            f"{len(protocol)} folds: 0..{len(protocol) - 1})")
    name = protocol[index]
    if name not in trained:
        raise SerKerasError(f"{run_dir}: fold {index} ('{name}') has no model.keras "
                            f"(trained: {', '.join(trained)})")
    return name


def attention_steps(n_frames: int, config) -> int:
    """Recurrent (attention) steps the model makes of `n_frames` input frames.

    exp2: one step per frame; exp3/exp4: the blocks of ``layers.BlockPooling``
    (``windows = ceil(frames / pool_window)``, ``1 + max(0, ceil((windows - block_windows) /
    block_stride))``).
    """
    n_frames = max(int(n_frames), 1)
    if config.model.frontend == "dense":
        return n_frames
    windows = math.ceil(n_frames / config.model.pool_window)
    return 1 + max(0, -(-(windows - config.model.block_windows) // config.model.block_stride))


def speaker_adapted(config) -> bool:
    """Whether the run normalised every speaker by their own statistics (its serve_speaker
    uses a speaker's statistics; otherwise serve_speaker is serve_lengths)."""
    return config.features.normalization in SPEAKER_MODES


def call_network(net, features):
    """Call a one-input functional model with its inputs in the structure it was built with
    (a bare tensor or a one-element list), in inference mode."""
    return net([features] if isinstance(net.input, (list, tuple)) else features, training=False)


@dataclasses.dataclass
class FoldModel:
    """Everything needed to score audio with one fold of a run.

    Attributes:
        run_dir, fold, fold_dir: where it came from.
        config: the run's resolved Config.
        labels: class names in model output order.
        model: the fold's Keras model (features -> probabilities).
        params: the front end (frame grid, normalisation and PCA statistics).
        functionals: the functionals classifier fused with the network (``models.functionals``),
            or None for a model without one.
    """

    run_dir: pathlib.Path
    fold: str
    fold_dir: pathlib.Path
    config: typing.Any
    labels: list
    model: typing.Any
    params: fe.FrontEndParams
    functionals: typing.Optional[FunctionalsClassifier] = None
    _attention_net: typing.Any = None
    _compiled: typing.Any = None

    @property
    def experiment(self) -> str:
        return self.config.model.experiment

    @property
    def has_attention(self) -> bool:
        """True when the model has an attention pooling layer (exp4); else alpha is uniform."""
        return self._has_attention_layer()

    def _has_attention_layer(self) -> bool:
        return any(layer.name == ATTENTION_LAYER for layer in self.model.layers)

    @property
    def sample_rate(self) -> int:
        return self.params.sample_rate

    @property
    def step_frames(self) -> int:
        return int(attention_step_frames(self.config))

    @property
    def span_frames(self) -> int:
        return int(attention_span_frames(self.config))

    def steps(self, n_frames: int) -> int:
        return attention_steps(n_frames, self.config)

    def network(self):
        """The model with outputs ``[probabilities, alpha]`` when it has attention, else the model."""
        if self._attention_net is None:
            if self._has_attention_layer():
                self._attention_net = attention_model(self.model)
            else:
                self._attention_net = self.model
        return self._attention_net

    def raw_features(self, waveform: np.ndarray) -> np.ndarray:
        """The frame features of a waveform at `sample_rate` before the per-dimension
        normalisation (``frontend_ops.raw_features``)."""
        return fe.raw_features(waveform, self.params)

    def features(self, waveform: np.ndarray, stats=None) -> np.ndarray:
        """Model input of a waveform: ``(frames, k)``, or with test-time views
        ``(frames, views * k)``, the views side by side (as ``score`` takes them).

        `stats`: (mean, std) of the speaker to normalise with; None: the pooled statistics, as
        the export's ``serve`` does.
        """
        return fe.apply_stats(self.raw_features(waveform)[None], self.params, stats).numpy()[0]

    def wide_functionals(self, waveforms) -> np.ndarray:
        """``(len(waveforms), D)`` wide functionals (``features.functionals``)."""
        return np.stack([functionals.extract_functionals(np.asarray(w, np.float32)).numpy() for w in waveforms])

    def functionals_probabilities(self, waveforms, speaker=None) -> np.ndarray:
        """The functionals classifier's probabilities ``(len(waveforms), classes)``: each
        waveform on its own (the pooled head), or with `speaker` = the speaker's functionals
        (mean, std) the speaker head on the functionals z-normalised by them."""
        x = self.wide_functionals(waveforms)
        if not speaker:
            return self.functionals.heads["pooled"].probabilities(x)
        return self.functionals.heads["speaker"].probabilities((x - speaker[0]) / speaker[1])

    def score(self, batch: np.ndarray) -> tuple:
        """``(batch, frames, views * k)`` equal-length features (``features``) ->
        (probabilities, alpha) as NumPy, each the mean over the test-time views.

        alpha is ``(batch, steps)``: the attention weights, or uniform weights over the
        steps for a model without attention (see ``export.serving`` for the definition).
        """
        if self._compiled is None:
            # One graph for every length (eager execution of the LSTM loop is ~10x slower).
            self._compiled = tf.function(
                lambda x: call_network(self.network(), x),
                input_signature=[tf.TensorSpec([None, None, self.params.output_dim], tf.float32)])
        batch = np.asarray(batch, np.float32)
        views = self.params.n_views
        # Every view in one call, stacked on the batch axis.
        stacked = np.concatenate(fe.split_views(batch, views), axis=0)
        outputs = self._compiled(stacked)
        if isinstance(outputs, (list, tuple)):
            probs, alpha = (np.asarray(o) for o in outputs)
        else:
            probs = np.asarray(outputs)
            steps = self.steps(batch.shape[1])
            alpha = np.full((stacked.shape[0], steps), 1.0 / steps, np.float32)
        n = batch.shape[0]
        return (probs.reshape(views, n, -1).mean(axis=0).astype(np.float32),
                alpha.reshape(views, n, -1).mean(axis=0).astype(np.float32))


def load_fold(run_dir, fold: typing.Union[int, str, None] = None) -> FoldModel:
    """Load one fold of a run directory (default: the first) for inference."""
    run_dir = pathlib.Path(run_dir)
    if not run_dir.is_dir():
        raise SerKerasError(f"{run_dir}: no such run directory")
    config, labels = load_run_config(run_dir)
    if config.model.classifier == "svm":
        raise SerKerasError(f"{run_dir}: {config.model.experiment} is an SVM (LLD functionals), not a Keras "
                            "model; export and predict need a network experiment's run")
    name = resolve_fold(run_dir, fold)
    fold = RunDir(run_dir).fold(name)
    fold_dir = fold.path
    try:
        model = keras.saving.load_model(fold.keras_model, compile=False)
    except (OSError, ValueError, TypeError) as exc:
        raise SerKerasError(f"{fold.keras_model}: cannot load the Keras model "
                            f"({str(exc).splitlines()[0][:200]})") from None
    stats = FittedFrontEnd.read_serving_arrays(fold)
    kind = config.model.input_features
    sample_rate = int(np.asarray(stats["sample_rate"])) if "sample_rate" in stats else config.data.sample_rate
    params = fe.params_from_arrays(config.features, stats, sample_rate=sample_rate, kind=kind,
                                   source=str(fold.frontend), std_floor=config.features.norm_std_floor)
    model_dim = model.inputs[0].shape[-1]
    if model_dim is not None and int(model_dim) != params.output_dim:
        raise SerKerasError(f"{fold.frontend} gives {params.output_dim}-dim features but "
                            f"model.keras expects {model_dim}")
    n_out = model.outputs[0].shape[-1]
    if n_out is not None and int(n_out) != len(labels):
        raise SerKerasError(f"{fold_dir}: model.keras has {n_out} outputs but config.yaml lists "
                            f"{len(labels)} labels")
    functionals = None
    if config.model.functionals_weights:
        if not fold.functionals.is_file():
            raise SerKerasError(f"{fold.functionals}: missing; this fold's model is fused with a functionals "
                                "classifier (model.functionals_weights) that was never saved: run fit again")
        functionals = FunctionalsClassifier.load(fold.functionals)
    return FoldModel(run_dir=run_dir, fold=name, fold_dir=fold_dir, config=config, labels=list(labels),
                     model=model, params=params, functionals=functionals)
