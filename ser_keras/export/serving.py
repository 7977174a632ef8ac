"""Export one fold of a run as a Keras SavedModel that needs nothing but TensorFlow.

``export_run(run_dir, out_dir, fold=None)`` writes ``out_dir`` with:

- ``saved_model.pb``, ``variables/``, ``assets/labels.txt`` — the SavedModel
  (``keras.export.ExportArchive``), loadable with ``tf.saved_model.load`` in a process that has
  never heard of ser_keras, and by ``saved_model_cli`` / TF Serving;
- ``model.keras`` — the fold's Keras model (features -> probabilities), plus
  ``frontend.npz`` and ``config.yaml`` from the run, so the export can also be used in-process;
- ``export.json`` — labels, sample rate, attention step and span in seconds, experiment,
  protocol, fold, the normalisation (``normalization``, ``serve_without_speaker``,
  ``norm_std_floor``), the endpoints.

Normalisation. The features are normalised per dimension before the PCA, as in training
(``features.normalization``). The shipped experiment configs normalise each speaker by the
mean/std of all of their frames (``speaker``; ``neutral_speaker`` too, for a speaker unseen in
training), and ``fit``'s protocol figure (``results.json["pooled"]``) scores every test speaker
that way: it is a figure for *speaker-adapted* use, where several recordings of the speaker are
at hand. The export offers both uses:

- one recording, no speaker context (``serve``, ``serve_lengths``): normalised with the
  statistics pooled over the fold's training speakers (``export.json["serve_without_speaker"]``
  is ``"pooled"``; ``"none"`` for a model trained without normalisation). That measured far
  better than each recording's own statistics (``bench/normalisation.py``, exp4 LOSO, UA %:
  EMO-DB 52.0 pooled vs 22.9 per utterance; demo 42.2 vs 25.0), but below the speaker-adapted
  figure (EMO-DB 62.6). ``fit`` reports what single recordings get on its test folds as
  ``results.json["serving"]`` (``serving_wa``/``serving_ua`` per fold);
- several recordings of one speaker (``serve_speaker``): the statistics of all of them, exactly
  as ``fit`` normalises a test speaker, so ``fit``'s protocol figure (``results.json["pooled"]``)
  is what this endpoint gives when it gets all of a speaker's recordings;
- statistics kept from earlier recordings of the speaker (enrolment: ``speaker_statistics``
  once, then ``serve_with_statistics`` for every new recording). Measured on EMO-DB, UA % with
  the statistics of k recordings: 39.1 (k=1), 48.7 (k=3), 58.6 (k=10) — below the pooled
  statistics until several recordings are in.

Endpoints (signatures) of the SavedModel:

``serve`` (also ``serving_default``)
    exp3/exp4: ``waveform``: float32 ``[batch, samples]``, mono, at the run's sample rate
    (``export.json["sample_rate"]``, 16 kHz by default — resample before calling; the endpoint
    cannot know the rate of what it is given), any length. Every row is one recording of
    ``samples`` samples; a recording shorter than one 20 ms frame is zero-padded to one frame.
    Mix stereo to mono first: a ``[samples, channels]`` array would be read as a batch of
    ``samples`` one-frame recordings. (``ser-keras predict`` reads any file through
    ``ser_keras.audio.load_audio``, which mixes to mono and resamples before the endpoint.)
    exp2: ``features``: float32 ``[batch, frames, D]``, the LLD matrix of
    ``ser_keras.features.llds.frame_llds`` (F0, formants, energy, ZCR, MFCC cannot run in the
    graph), un-normalised; the normalisation is in the graph.
    Returns ``probabilities`` ``[batch, classes]`` (softmax, label order of ``labels``) and
    ``attention`` ``[batch, steps]``: the attention weights of the model's attention pooling
    (exp4), one per recurrent step; step ``j`` covers input frames
    ``[j * step, j * step + span)`` (``attention_step_s`` / ``attention_span_s`` in seconds).
    Weights sum to 1 over a recording's steps. Models without attention (exp3, exp2) have no
    learned weights: their ``attention`` is defined as uniform, ``1 / steps`` on every step,
    so consumers can treat every export alike.
``serve_lengths``
    Same, plus ``lengths``: int32 ``[batch]``, the valid samples (exp2: frames) of each row, for
    batches of recordings of different lengths zero-padded at the end. Each row's result equals
    what ``serve`` gives for that recording alone; ``attention`` is zero past a row's steps.
``serve_speaker``
    ``waveform`` ``[batch, samples]`` and ``lengths`` ``[batch]`` as for ``serve_lengths``, but
    all rows are recordings of ONE speaker: the normalisation statistics are the mean/std over
    all valid frames of all rows (std floored at ``norm_std_floor``), as ``fit`` normalises a
    test speaker (``features.normalization=speaker``); every row is then scored with them.
    (For a model trained without per-speaker normalisation — ``neutral_global``, ``none`` — it
    is ``serve_lengths``: such a model never saw speaker statistics.)
    Returns ``probabilities`` and ``attention`` per row, as ``serve_lengths``. The result of a
    row depends on the other rows (through the statistics) — send one speaker per call, and
    enough speech: with one to three recordings ``serve`` (pooled statistics) is better; about
    ten come close to what ``fit`` reports (``bench/normalisation.py``, "enrol k").
``speaker_statistics``
    ``waveform``, ``lengths`` as above; returns the statistics of all valid frames of the batch:
    ``mean``, ``std`` (float32 ``[D]``, D the feature dimension before the PCA), and the moments
    ``frames`` (float64 scalar), ``sum``, ``sum_squares`` (float64 ``[D]``) so that statistics of
    several calls can be added up (mean = sum / frames, std = max(sqrt(sum_squares / frames -
    mean^2), norm_std_floor)).
``serve_with_statistics``
    ``waveform``, ``lengths``, ``mean``, ``std`` (float32 ``[D]``): every row normalised with the
    given statistics (of its speaker, from ``speaker_statistics``), then scored as ``serve_lengths``.
``labels``
    No input; returns ``labels``: string ``[classes]`` and ``labels_file``, the path of
    ``assets/labels.txt`` (one label per line) in the loaded export.
``metadata``
    No input; ``sample_rate`` (int32), ``attention_step_s``, ``attention_span_s`` (float32);
    what the model was trained on: ``corpus``, ``protocol``, ``fold`` (string),
    ``training_speakers`` (string ``[n]``), ``n_training_utterances`` (int32, -1 if unknown),
    ``level_normalization`` (bool); the protocol figure that estimates it (``fit --protocol all
    --estimate-from`` or ``export --estimate-from``): ``estimate_protocol`` (string, empty when
    none), ``estimate_wa``, ``estimate_ua``, ``estimate_serving_wa``, ``estimate_serving_ua``
    (float32, -1 when none). ``export.json`` holds the same as ``training_data`` and
    ``accuracy_estimate``.

Speech. Every scoring endpoint also returns ``speech``: int32 ``[batch]``, 1 where the row holds
speech, 0 where it does not (``features.level``: too short, too quiet, or steady noise; the
thresholds are the run's ``features.speech_*``, in ``export.json["speech"]``). A row without
speech gets uniform probabilities (``1 / classes``): the export names no emotion it has no
speech for. ``serve_speaker`` and ``speaker_statistics`` leave such rows out of the speaker's
statistics. exp2 exports take LLDs, not a waveform: every row counts as speech there.

Level. A run trained with ``features.level_normalization`` subtracts each recording's level
reference (``features.level``) from its log spectrogram in the graph too, before any
normalisation, over the row's valid frames only (``serve_lengths``, padded batches).

Inputs holding NaN or Inf are rejected with a message that says so. Inputs of the wrong dtype
or rank are rejected: calling ``loaded.serve(x)`` with a tensor
checks it against the TensorSpec (TypeError naming the expected spec), ``saved_model_cli`` and
TF Serving check the feed, and the graph itself asserts the rank with a message naming the input
(for callers of ``loaded.signatures[...]``, which do not check shapes). NumPy arrays of another
dtype are cast to float32 by TensorFlow's argument binding; so that integer PCM passed that way
is not scored as a very loud recording, a waveform with samples beyond +-64 is rejected with a
message saying to scale it (int16: divide by 32768).

Speed: Keras runs an LSTM on CPU as a while-loop of small ops per time step, which dominated
the serving time. The export runs the recurrent layers with TensorFlow's fused LSTM kernel
instead (``export.fastgraph``: same weights, same numbers, one op per direction), and the
waveform front end one batch row at a time so its FFT intermediates stay in the CPU caches.
No compilation is involved, so any input length runs at full speed from the first call.
``bench/inference.py`` measures it (>= 500x real-time on a 10 s clip at batch 1 on a 2-core CPU).

``export_run(..., jit_compile=True)`` compiles the (Keras) graph with XLA instead. XLA compiles
once per input shape, so that graph pads the input to a *bucket* — frames rounded up to the
next of 16, 20, 24, 28, 32, 40, ... (4 sizes per octave, at most 25 % padding) and the batch to
the next power of two (multiples of 32 above 32) — and masks the padding (the model's
``Masking`` layer makes padded frames exact no-ops). The first call in a new bucket pays a
compilation of 2-4 s on CPU; measured steady-state speed is no better than the fused path, so
it is not the default.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pathlib
import shutil
import tempfile
import typing

import numpy as np

from ser_keras.errors import SerKerasError
from ser_keras.export import frontend as fe
from ser_keras.export.bundle import FoldModel, call_network, load_fold

EXPORT_FORMAT = "ser_keras-savedmodel"
# 2: serve_speaker, speaker_statistics, serve_with_statistics; export.json normalization,
# serve_without_speaker, norm_std_floor, feature_dim.
# 3: the speech output of every endpoint, level_normalization, training_data,
# accuracy_estimate; the metadata endpoint names the training data.
EXPORT_FORMAT_VERSION = 3
BUCKETS_PER_OCTAVE = 4
MIN_BUCKET_FRAMES = 16
# Float audio may overshoot +-1 a little; beyond this it is integer PCM passed as float.
MAX_ABS_SAMPLE = 64.0


def frame_buckets(max_frames: int = 1 << 26) -> np.ndarray:
    """The bucket grid of frame counts: 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, ..."""
    grid = []
    base = MIN_BUCKET_FRAMES // BUCKETS_PER_OCTAVE
    while base * BUCKETS_PER_OCTAVE <= max_frames:
        grid.extend(base * m for m in range(BUCKETS_PER_OCTAVE, 2 * BUCKETS_PER_OCTAVE))
        base *= 2
    return np.asarray(grid, np.int32)


def bucket_frames(n_frames: int) -> int:
    """The bucket (padded frame count) of `n_frames` frames — NumPy twin of the graph's rule."""
    grid = frame_buckets()
    index = int(np.searchsorted(grid, n_frames, side="left"))
    return int(grid[index]) if index < len(grid) else int(n_frames)


def bucket_batch(batch: int) -> int:
    """Padded batch size: the next power of two up to 32, then the next multiple of 32."""
    if batch <= 32:
        return 1 << max(0, int(batch - 1).bit_length())
    return -(-batch // 32) * 32


class _ServingGraph:
    """The TensorFlow functions of the export, built from a loaded fold."""

    def __init__(self, bundle: FoldModel, jit_compile: bool = False, fused_lstm: bool = True):
        import tensorflow as tf

        from ser_keras.export import fastgraph

        self.tf = tf
        self.bundle = bundle
        self.params = bundle.params
        self.net = bundle.network()
        # The fused LSTM kernel has no XLA implementation: XLA compiles the Keras graph.
        self.fused_lstm = bool(fused_lstm) and not jit_compile and fastgraph.supports(bundle.model)
        self.has_attention = bundle.has_attention
        self.config = bundle.config
        self.grid = frame_buckets()
        self.jit_compile = bool(jit_compile)
        self.core = tf.function(self._core, jit_compile=jit_compile, reduce_retracing=True)
        self.raw = tf.function(self._raw, jit_compile=jit_compile, reduce_retracing=True)
        self.speaker_adapted = speaker_adapted(bundle.config)

    # -- shape arithmetic (TF twins of bundle.attention_steps / bucket_*) --------------------

    def _steps(self, n_frames):
        tf = self.tf
        n_frames = tf.maximum(n_frames, 1)
        if self.params.kind == "lld":
            return n_frames
        m = self.config.model
        windows = (n_frames + m.pool_window - 1) // m.pool_window
        return 1 + tf.maximum(0, (windows - m.block_windows + m.block_stride - 1) // m.block_stride)

    def _bucket_frames(self, n_frames):
        tf = self.tf
        grid = tf.constant(self.grid)
        index = tf.searchsorted(grid, tf.reshape(n_frames, [1]), side="left")[0]
        inside = index < tf.size(grid)
        return tf.where(inside, tf.gather(grid, tf.minimum(index, tf.size(grid) - 1)), n_frames)

    def _bucket_batch(self, batch):
        tf = self.tf
        powers = tf.constant([1, 2, 4, 8, 16, 32], tf.int32)
        index = tf.minimum(tf.searchsorted(powers, tf.reshape(batch, [1]), side="left")[0], 5)
        return tf.where(batch <= 32, tf.gather(powers, index), (batch + 31) // 32 * 32)

    # -- the compiled part ---------------------------------------------------------------

    def _raw(self, inputs, n_frames):
        """Moments (count, sum, sum of squares; float64) of all valid frames of a padded batch's
        un-normalised features (rows past the real batch have 0 valid frames)."""
        tf = self.tf
        raw = fe.tf_raw_features(inputs, self.params, per_row=not self.jit_compile, n_frames=n_frames)
        count, total, squares = fe.tf_frame_moments(raw, n_frames)
        return tf.reduce_sum(count), tf.reduce_sum(total, axis=0), tf.reduce_sum(squares, axis=0)

    def _core(self, inputs, n_frames, mean=None, std=None):
        """Padded inputs (waveform [B, Nb] or LLD [B, Tb, D]) + valid frames [B] ->
        (probabilities [B, C], alpha [B, steps(Tb)]). `mean`, `std` ([D]): normalise every row
        with these instead of the pooled statistics."""
        tf = self.tf
        stats = None if mean is None else (mean, std)
        features = fe.tf_frontend(inputs, self.params, per_row=not self.jit_compile, stats=stats,
                                  n_frames=n_frames)
        # Zero the padded frames: the model's Masking(0.0) turns them into a mask, and every
        # layer after it honours the mask, so the padding changes nothing.
        valid = tf.sequence_mask(n_frames, tf.shape(features)[1], dtype=features.dtype)
        features = features * valid[:, :, None]
        if self.fused_lstm:
            from ser_keras.export.fastgraph import fast_forward

            outputs = fast_forward(self.bundle.model, features)
        else:
            outputs = call_network(self.net, features)
        if self.has_attention:
            probabilities, alpha = outputs
        else:
            probabilities = outputs
            steps = self._steps(n_frames)
            total = self._steps(tf.shape(features)[1])
            alpha = tf.sequence_mask(steps, total, dtype=probabilities.dtype)
            alpha = alpha / tf.cast(steps, probabilities.dtype)[:, None]
        return probabilities, alpha

    # -- endpoints -------------------------------------------------------------------------

    def _check_rank(self, x, rank: int, what: str):
        """Assert the rank at run time (signature callers are not checked against the spec).

        The count is computed from the run-time shape padded with -1s, which no graph
        optimiser can fold away from the static (None, ...) shape.
        """
        tf = self.tf
        dims = tf.concat([tf.shape(x), -tf.ones([4], tf.int32)], axis=0)
        actual = tf.reduce_sum(tf.cast(dims >= 0, tf.int32))
        return tf.debugging.assert_equal(actual, rank, message=f"ser_keras export: {what}")

    def _check_scale(self, waveform) -> list:
        """NaN or Inf samples are an error of their own. Integer PCM passed as a NumPy array is
        cast to float32 silently by TensorFlow's argument binding; finite samples far outside
        [-1, 1] can only be that mistake."""
        tf = self.tf
        magnitude = tf.reshape(tf.abs(waveform), [-1])
        finite = tf.math.is_finite(magnitude)
        checks = [tf.debugging.assert_equal(
            tf.reduce_all(finite), True,
            message="ser_keras export: input holds NaN or Inf values; pass finite float audio")]
        if self.params.kind == "lld":
            return checks
        # Non-finite samples are left to the check above, so each mistake gets its own message.
        peak = tf.reduce_max(tf.concat([tf.where(finite, magnitude, tf.zeros_like(magnitude)), [0.0]], 0))
        return checks + [tf.debugging.assert_less_equal(
            peak, MAX_ABS_SAMPLE, summarize=1,
            message=(f"ser_keras export: input waveform must be float audio in [-1, 1]; samples beyond "
                     f"+-{MAX_ABS_SAMPLE:g} look like integer PCM (int16: divide by 32768)"))]

    def run(self, inputs, lengths, stats=None):
        """Shared body of the endpoints: bucket, pad, run, crop. `stats`: None (the pooled
        statistics), "speaker" (statistics over all valid frames of the batch), "moments" (return
        those statistics' moments instead of scoring) or (mean, std) tensors [D]."""
        tf = self.tf
        p = self.params
        batch = tf.shape(inputs)[0]
        size = tf.shape(inputs)[1]
        lengths = tf.clip_by_value(tf.cast(lengths, tf.int32), 0, size)
        if p.kind == "lld":
            n_frames = tf.maximum(lengths, 1)
        else:
            n_frames = fe.tf_frame_counts(lengths, p)
        longest = tf.maximum(tf.reduce_max(tf.concat([n_frames, [1]], 0)), 1)
        if self.jit_compile:
            frames_b, batch_b = self._bucket_frames(longest), self._bucket_batch(batch)
        else:  # a plain graph runs any shape as it is: no padding needed
            frames_b, batch_b = longest, batch
        if p.kind == "lld":
            target = frames_b
            inputs = inputs[:, : tf.minimum(size, target)]
            valid = tf.sequence_mask(lengths, tf.shape(inputs)[1], dtype=inputs.dtype)
            inputs = inputs * valid[:, :, None]
            inputs = tf.pad(inputs, [[0, batch_b - batch], [0, target - tf.shape(inputs)[1]], [0, 0]])
            inputs = tf.ensure_shape(inputs, [None, None, p.input_dim])
        else:
            target = p.frame + (frames_b - 1) * p.hop
            inputs = inputs[:, : tf.minimum(size, target)]
            # Samples past a row's length are zero, as the NumPy front end pads short ones.
            valid = tf.sequence_mask(lengths, tf.shape(inputs)[1], dtype=inputs.dtype)
            inputs = inputs * valid
            inputs = tf.pad(inputs, [[0, batch_b - batch], [0, target - tf.shape(inputs)[1]]])
        n_frames_b = tf.pad(n_frames, [[0, batch_b - batch]], constant_values=1)
        if p.kind == "lld":  # the LLD input shows no waveform: every row counts as speech
            speech = tf.ones([batch], tf.bool)
        else:
            speech = fe.tf_speech_flags(inputs[:batch], lengths, p)
        if isinstance(stats, str):
            # "speaker": padding rows (if any) hold no valid frame, and neither do rows without
            # speech (silence or noise says nothing about the speaker; predict agrees).
            moments = self.raw(inputs, tf.pad(tf.where(speech, n_frames, 0), [[0, batch_b - batch]]))
            if stats == "moments":
                return moments, speech
            mean, std = fe.tf_mean_std(*moments, self.params.std_floor)
            probabilities, alpha = self.core(inputs, n_frames_b, tf.cast(mean, tf.float32),
                                             tf.cast(std, tf.float32))
        elif stats is not None:
            probabilities, alpha = self.core(inputs, n_frames_b, *stats)
        else:
            probabilities, alpha = self.core(inputs, n_frames_b)
        steps = self._steps(longest)
        probabilities = probabilities[:batch]
        # No speech, no emotion: uniform probabilities, so no label is confident.
        uniform = tf.fill(tf.shape(probabilities), 1.0 / len(self.bundle.labels))
        probabilities = tf.where(speech[:, None], probabilities, uniform)
        return {"probabilities": probabilities, "attention": alpha[:batch, :steps],
                "speech": tf.cast(speech, tf.int32)}

    def input_spec(self):
        tf = self.tf
        if self.params.kind == "lld":
            return tf.TensorSpec([None, None, self.params.input_dim], tf.float32, name="features")
        return tf.TensorSpec([None, None], tf.float32, name="waveform")

    def _input_checks(self, inputs) -> list:
        lld = self.params.kind == "lld"
        rank, name, shape = (3, "features", "[batch, frames, D]") if lld else (2, "waveform", "[batch, samples]")
        message = f"input {name} must be a rank-{rank} float32 tensor {shape} (x below is the rank received)"
        return [self._check_rank(inputs, rank, message)] + self._check_scale(inputs)

    def serve(self, inputs):
        tf = self.tf
        with tf.control_dependencies(self._input_checks(inputs)):
            inputs = tf.identity(inputs)
        lengths = tf.fill([tf.shape(inputs)[0]], tf.shape(inputs)[1])
        return self.run(inputs, lengths)

    def _checked(self, inputs, lengths, *stats):
        tf = self.tf
        checks = self._input_checks(inputs)
        checks.append(self._check_rank(lengths, 1, "input lengths must be a rank-1 int32 tensor [batch] "
                                                   "(x below is the rank received)"))
        dim = self.params.input_dim
        for name, value in zip(("mean", "std"), stats):
            checks.append(tf.debugging.assert_equal(
                tf.shape(value), [dim], message=f"input {name} must be a float32 tensor [{dim}]"))
        if stats:
            checks.append(tf.debugging.assert_positive(stats[1], message="input std must be positive"))
        with tf.control_dependencies(checks):
            return [tf.identity(x) for x in (inputs, lengths, *stats)]

    def serve_lengths(self, inputs, lengths):
        return self.run(*self._checked(inputs, lengths))

    def serve_speaker(self, inputs, lengths):
        return self.run(*self._checked(inputs, lengths), stats="speaker" if self.speaker_adapted else None)

    def speaker_statistics(self, inputs, lengths):
        tf = self.tf
        (frames, total, squares), speech = self.run(*self._checked(inputs, lengths), stats="moments")
        mean, std = fe.tf_mean_std(frames, total, squares, self.params.std_floor)
        return {"mean": tf.cast(mean, tf.float32), "std": tf.cast(std, tf.float32),
                "frames": frames, "sum": total, "sum_squares": squares, "speech": tf.cast(speech, tf.int32)}

    def serve_with_statistics(self, inputs, lengths, mean, std):
        inputs, lengths, mean, std = self._checked(inputs, lengths, mean, std)
        return self.run(inputs, lengths, stats=(mean, std))


def _export_metadata(bundle: FoldModel, jit_compile: bool) -> dict:
    from ser_keras import __version__
    from ser_keras.features.normalize import serving_normalization

    config, p = bundle.config, bundle.params
    hop_s = p.hop / p.sample_rate
    waveform = p.kind == "spectrogram"
    meta = {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_FORMAT_VERSION,
        "ser_keras_version": __version__,
        "labels": list(bundle.labels),
        "sample_rate": p.sample_rate,
        "input": "waveform" if waveform else "lld",
        "input_signature": ("waveform: float32 [batch, samples] at sample_rate" if waveform else
                            f"features: float32 [batch, frames, {p.input_dim}] "
                            "(ser_keras.features.llds.frame_llds, un-normalised)"),
        "frame_s": p.frame / p.sample_rate,
        "hop_s": hop_s,
        "attention": "learned" if bundle.has_attention else "uniform",
        "attention_step_s": bundle.step_frames * hop_s,
        "attention_span_s": bundle.span_frames * hop_s,
        "window_frames": config.features.max_frames,
        "experiment": config.model.experiment,
        "protocol": config.train.protocol,
        "corpus": config.data.corpus,
        "fold": bundle.fold,
        "run_dir": str(bundle.run_dir.resolve()),
        "jit_compile": bool(jit_compile),
        "normalization": config.features.normalization,
        "serve_without_speaker": serving_normalization(config.features.normalization),
        "serve_without_speaker_note": _SERVE_NOTES[serving_normalization(config.features.normalization)],
        "norm_std_floor": p.std_floor,
        "feature_dim": p.input_dim,
        "level_normalization": bool(p.level_normalization),
        "speech": {"threshold_dbfs": p.speech_threshold_dbfs, "min_contrast_db": p.speech_min_contrast_db,
                   "min_ms": p.speech_min_ms,
                   "rule": "speech when at least min_ms long, the mean power of the loudest fifth of the "
                           "frames is at least threshold_dbfs (re RMS 1.0) and at least min_contrast_db "
                           "above that of the quietest fifth; rows without speech get uniform probabilities"
                   if waveform else "LLD input: every row counts as speech"},
        "training_data": _training_data(bundle),
        "endpoints": {
            "serve": "probabilities [batch, classes], attention [batch, steps], speech int32 [batch] (1: the "
                     "row holds speech; 0: it does not, and its probabilities are uniform); each row one "
                     "recording, normalised as serve_without_speaker says (no speaker context)",
            "serve_lengths": "as serve, plus lengths int32 [batch] (valid samples or frames per row)",
            "serve_speaker": ("as serve_lengths, all rows ONE speaker: normalised by the statistics of all "
                              "their valid frames (as fit normalises a test speaker)") if speaker_adapted(config)
            else "the same as serve_lengths (this model was not trained with per-speaker normalisation)",
            "speaker_statistics": "waveform, lengths -> mean, std float32 [feature_dim]; frames, sum, "
                                  "sum_squares float64 (to add up over calls), over the rows with speech; "
                                  "speech int32 [batch]",
            "serve_with_statistics": "as serve_lengths, plus mean, std float32 [feature_dim]: every row "
                                     "normalised with these (a speaker's, from speaker_statistics)",
            "labels": "labels string [classes], labels_file (assets/labels.txt)",
            "metadata": "sample_rate, attention_step_s, attention_span_s, corpus, protocol, fold, "
                        "training_speakers, n_training_utterances, level_normalization; with an accuracy "
                        "estimate: estimate_protocol, estimate_wa, estimate_ua, estimate_serving_wa, "
                        "estimate_serving_ua (-1 when unknown)",
        },
    }
    if not waveform:
        from ser_keras.features.llds import lld_names

        meta["lld_names"] = lld_names(config.features)
    return meta


def _training_data(bundle: FoldModel) -> dict:
    """What the exported model was trained on, from the fold's result.json (runs made before
    it named the speakers give null there)."""
    result = {}
    path = bundle.fold_dir / "result.json"
    if path.is_file():
        try:
            result = json.loads(path.read_text())
        except ValueError:
            result = {}
    return {"corpus": bundle.config.data.corpus, "protocol": bundle.config.train.protocol, "fold": bundle.fold,
            "training_speakers": result.get("training_speakers"),
            "n_training_utterances": result.get("n_training_utterances"),
            "validation_speakers": result.get("validation_speakers"),
            "test_speakers": None if bundle.config.train.protocol == "all" else _test_speakers(bundle)}


def _test_speakers(bundle: FoldModel):
    path = bundle.run_dir / "folds.json"
    try:
        folds = json.loads(path.read_text())["folds"]
    except (OSError, ValueError, KeyError):
        return None
    return next((f.get("test_speakers") for f in folds if f.get("name") == bundle.fold), None)


def _accuracy_estimate(bundle: FoldModel, estimate_from) -> typing.Optional[dict]:
    """The protocol figure that estimates the model: `estimate_from` (a run of the same config),
    else the run's estimate.json (``fit --protocol all --estimate-from``), else None."""
    if estimate_from is not None:
        from ser_keras.evaluation.estimate import estimate_from as read_estimate

        return read_estimate(bundle.config, estimate_from)
    from ser_keras.training.run import ESTIMATE_FILE

    path = bundle.run_dir / ESTIMATE_FILE
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except ValueError:
            raise SerKerasError(f"{path}: not valid JSON") from None
    return None


_SERVE_NOTES = {
    "pooled": "serve/serve_lengths normalise each recording with the statistics pooled over the training "
              "speakers (no speaker context); for a speaker-normalised model the run's "
              "results.json['serving'] is what that gives on its test folds, results.json['pooled'] what "
              "serve_speaker gives with all of a test speaker's recordings",
    "none": "no normalisation (features.normalization=none)",
}


def speaker_adapted(config) -> bool:
    """Whether the run normalised every speaker by their own statistics (its serve_speaker
    uses a speaker's statistics; otherwise serve_speaker is serve_lengths)."""
    from ser_keras.features.normalize import SPEAKER_MODES

    return config.features.normalization in SPEAKER_MODES


@contextlib.contextmanager
def _quiet_tf_info():
    """Hide TensorFlow's INFO log lines (the SavedModel writer's "Assets written to: ...")."""
    import tensorflow as tf

    logger = tf.get_logger()
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


def _prepare_out_dir(out_dir: pathlib.Path) -> None:
    if out_dir.exists():
        if not out_dir.is_dir():
            raise SerKerasError(f"{out_dir}: exists and is not a directory")
        if any(out_dir.iterdir()) and not (out_dir / "export.json").is_file():
            raise SerKerasError(f"{out_dir}: exists, is not empty and is not a ser_keras export; "
                                "choose another --out")


def export_run(run_dir, out_dir, fold: typing.Union[int, str, None] = None, jit_compile: bool = False,
               fused_lstm: bool = True, estimate_from=None) -> pathlib.Path:
    """Export one fold of `run_dir` (default: the first) to `out_dir`; returns `out_dir`.

    Args:
        run_dir: a run directory written by ``ser_keras.training.run.fit`` (exp2, exp3, exp4).
        out_dir: the export directory; replaced if it holds an earlier export.
        fold: fold position (int, 0-based), fold name (str) or None for the first fold.
        jit_compile: compile the graph with XLA instead (buckets input lengths; each new bucket
            compiles once; see the module docstring). Off by default: the fused LSTM path is
            as fast on CPU without compilation stalls.
        fused_lstm: run the recurrent layers with TensorFlow's fused LSTM kernel
            (``export.fastgraph``; same numbers as Keras, several times faster on CPU).
        estimate_from: a run of the same config under a test protocol whose figures estimate
            the model's accuracy (``evaluation.estimate``); default: the run's estimate.json.

    Raises:
        SerKerasError: exp1 runs (an SVM, not a Keras model), a missing fold, a non-export
            ``out_dir`` that is not empty.
    """
    import keras
    import tensorflow as tf

    from ser_keras.config import load_run_config

    run_dir = pathlib.Path(run_dir)
    out_dir = pathlib.Path(out_dir)
    config, _ = load_run_config(run_dir)
    if config.model.classifier == "svm":
        raise SerKerasError(f"{run_dir}: export is not available for exp1 (LLD functionals + SVM): "
                            "only the Keras models of exp2, exp3 and exp4 can be exported")
    _prepare_out_dir(out_dir)
    bundle = load_fold(run_dir, fold)
    graph = _ServingGraph(bundle, jit_compile=jit_compile, fused_lstm=fused_lstm)
    meta = _export_metadata(bundle, jit_compile)
    meta["fused_lstm"] = graph.fused_lstm
    meta["accuracy_estimate"] = _accuracy_estimate(bundle, estimate_from)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    # mkdtemp makes the directory 0700 (private while it is written); the export is renamed to
    # its final name as it is, so give it what mkdir would have given it under the user's umask.
    os.chmod(staging, 0o777 & ~_current_umask())
    try:
        labels_path = staging / "labels.txt"
        labels_path.write_text("".join(f"{label}\n" for label in bundle.labels))
        archive = keras.export.ExportArchive()
        # No archive.track(model): the endpoints' variables are tracked from the traced
        # functions, and tracking the model itself walks every layer attribute (a dict
        # keyed by int, as SparseAEConv holds, cannot be walked by the SavedModel saver).
        labels_asset = tf.saved_model.Asset(str(labels_path))
        # ExportArchive has no public hook for assets; an Asset attached to the object it
        # saves is copied into assets/ and its path re-pointed there on load.
        archive._tf_trackable.labels_file = labels_asset
        spec = graph.input_spec()
        archive.add_endpoint("serve", graph.serve, input_signature=[spec])
        lengths_spec = tf.TensorSpec([None], tf.int32, name="lengths")
        archive.add_endpoint("serve_lengths", graph.serve_lengths, input_signature=[spec, lengths_spec])
        archive.add_endpoint("serve_speaker", graph.serve_speaker, input_signature=[spec, lengths_spec])
        archive.add_endpoint("speaker_statistics", graph.speaker_statistics,
                             input_signature=[spec, lengths_spec])
        dim = bundle.params.input_dim
        archive.add_endpoint("serve_with_statistics", graph.serve_with_statistics, input_signature=[
            spec, lengths_spec, tf.TensorSpec([dim], tf.float32, name="mean"),
            tf.TensorSpec([dim], tf.float32, name="std")])
        labels = list(bundle.labels)
        archive.add_endpoint("labels", lambda: {"labels": tf.constant(labels, tf.string),
                                                "labels_file": labels_asset.asset_path},
                             input_signature=[])
        archive.add_endpoint("metadata", lambda: _metadata_endpoint(meta, bundle.sample_rate), input_signature=[])
        saved = staging / "saved"
        with _quiet_tf_info():
            archive.write_out(str(saved), verbose=False)
        for item in saved.iterdir():
            item.rename(staging / item.name)
        saved.rmdir()
        labels_path.unlink()
        shutil.copyfile(bundle.fold_dir / "model.keras", staging / "model.keras")
        shutil.copyfile(bundle.fold_dir / "frontend.npz", staging / "frontend.npz")
        shutil.copyfile(bundle.run_dir / "config.yaml", staging / "config.yaml")
        (staging / "export.json").write_text(json.dumps(meta, indent=2) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def _metadata_endpoint(meta: dict, rate: int) -> dict:
    """The ``metadata`` endpoint's constants: what a plain-TensorFlow caller needs to know."""
    import tensorflow as tf

    data = meta["training_data"]
    estimate = meta.get("accuracy_estimate") or {}

    def number(value):
        return tf.constant(-1.0 if value is None else float(value), tf.float32)

    return {
        "sample_rate": tf.constant(rate, tf.int32),
        "attention_step_s": tf.constant(meta["attention_step_s"], tf.float32),
        "attention_span_s": tf.constant(meta["attention_span_s"], tf.float32),
        "corpus": tf.constant(str(data["corpus"])),
        "protocol": tf.constant(str(data["protocol"])),
        "fold": tf.constant(str(data["fold"])),
        "training_speakers": tf.constant([str(s) for s in data["training_speakers"] or []], tf.string),
        "n_training_utterances": tf.constant(-1 if data["n_training_utterances"] is None
                                             else int(data["n_training_utterances"]), tf.int32),
        "level_normalization": tf.constant(bool(meta["level_normalization"])),
        "estimate_protocol": tf.constant(str(estimate.get("protocol_name") or estimate.get("protocol") or "")),
        "estimate_wa": number(estimate.get("wa")),
        "estimate_ua": number(estimate.get("ua")),
        "estimate_serving_wa": number(estimate.get("serving_wa")),
        "estimate_serving_ua": number(estimate.get("serving_ua")),
    }


def _current_umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def read_export_json(export_dir) -> dict:
    """The export.json of an export directory (SerKerasError naming the file if unusable)."""
    path = pathlib.Path(export_dir) / "export.json"
    if not path.is_file():
        raise SerKerasError(f"{export_dir}: not a ser_keras export (no export.json)")
    try:
        meta = json.loads(path.read_text())
    except ValueError:
        raise SerKerasError(f"{path}: not valid JSON") from None
    if meta.get("format") != EXPORT_FORMAT:
        raise SerKerasError(f"{path}: not a ser_keras export (format {meta.get('format')!r})")
    return meta
