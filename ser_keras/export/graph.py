"""The TensorFlow functions of an export, built from one loaded fold (``inference.FoldModel``).

``ServingGraph`` holds what ``serving.export_run`` saves as endpoints: the front end in the
graph (``features.frontend_ops``, the very ops feature extraction runs), the Keras model, the
speech flags, the per-speaker statistics. The waveform front end runs one batch row at a time
so its FFT intermediates stay in the CPU caches. No compilation is involved, so any input
length runs at full speed from the first call (``bench/inference.py`` measures it).

``export_run(..., jit_compile=True)`` compiles the (Keras) graph with XLA instead. XLA compiles
once per input shape, so that graph pads the input to a *bucket* — frames rounded up to the
next of 16, 20, 24, 28, 32, 40, ... (4 sizes per octave, at most 25 % padding) and the batch to
the next power of two (multiples of 32 above 32) — and masks the padding (the model's
``Masking`` layer makes padded frames exact no-ops). The first call in a new bucket pays a
compilation of 2-4 s on CPU; measured steady-state speed is no better than the plain graph, so
it is not the default. (exp2's LLDs cannot be compiled: the formants' root finding has no XLA
kernel.)
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from ser_keras.export.fused import fused_model
from ser_keras.features import frontend_ops as fe
from ser_keras.features.functionals import FEATURE_NAMES, extract_functionals
from ser_keras.features.functionals import functionals_of_waveform as wide_functionals
from ser_keras.features.level import frame_counts, speech_flags
from ser_keras.inference.fold import FoldModel, call_network, speaker_adapted
from ser_keras.models.functionals import SPEAKER_STD_FLOOR

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


class ServingGraph:
    """The TensorFlow functions of the export, built from a loaded fold.

    `fused` (default): the network's LSTMs run TensorFlow's fused sequence kernel
    (``export.fused``: a clone of the Keras model sharing its weights), several times faster on
    CPU than Keras' step-by-step loop, same outputs. ``fused=False`` keeps the plain Keras model:
    the LiteRT conversion uses that, since the fused kernel is not a LiteRT builtin (nor an XLA
    one: ``jit_compile`` keeps it too). Both come from this same code; only the recurrent
    kernel differs.

    A fold with a functionals classifier (``bundle.functionals``) fuses its probabilities with
    the network's in every scoring endpoint: the wide functionals of each row's valid samples
    (``features.functionals``, the ops extraction runs), the ``speaker`` head on functionals
    z-normalised over the batch's rows with speech for ``serve_speaker``, the ``pooled`` head
    otherwise.
    """

    def __init__(self, bundle: FoldModel, jit_compile: bool = False, fused: bool = True):
        self.tf = tf
        self.bundle = bundle
        self.params = bundle.params
        # XLA has no kernel for the fused LSTM op: a compiled graph keeps Keras' loop.
        self.net = fused_model(bundle.network()) if fused and not jit_compile else bundle.network()
        self.has_attention = bundle.has_attention
        self.config = bundle.config
        self.grid = frame_buckets()
        self.jit_compile = bool(jit_compile)
        self.core = tf.function(self._core, jit_compile=jit_compile, reduce_retracing=True, autograph=False)
        self.raw = tf.function(self._raw, jit_compile=jit_compile, reduce_retracing=True, autograph=False)
        self.speaker_adapted = speaker_adapted(bundle.config)
        self.functionals = bundle.functionals
        # The heads' arrays as variables: saved once, not once per endpoint that reads them.
        self.heads = {} if self.functionals is None else {
            condition: {name: tf.Variable(value, trainable=False, name=f"functionals_{condition}_{name}")
                        for name, value in vars(head).items() if isinstance(value, np.ndarray)}
            for condition, head in self.functionals.heads.items()}

    # -- shape arithmetic (TF versions of inference.fold.attention_steps / bucket_*) --------

    def _steps(self, n_frames):
        tf = self.tf
        n_frames = tf.maximum(n_frames, 1)
        m = self.config.model
        if m.frontend == "dense":  # one recurrent step per frame
            return n_frames
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
        count, total, squares = fe.frame_moments(raw, n_frames)
        return tf.reduce_sum(count), tf.reduce_sum(total, axis=0), tf.reduce_sum(squares, axis=0)

    def _core(self, inputs, n_frames, mean=None, std=None):
        """Padded waveforms [B, Nb] + valid frames [B] ->
        (probabilities [B, C], alpha [B, steps(Tb)]). `mean`, `std` ([D]): normalise every row
        with these instead of the pooled statistics."""
        tf = self.tf
        stats = None if mean is None else (mean, std)
        features = fe.tf_frontend(inputs, self.params, per_row=not self.jit_compile, stats=stats,
                                  n_frames=n_frames)
        # The test-time views (features.test_warp_factors) run as one batch, stacked on its axis,
        # and their outputs are averaged below.
        views = self.params.n_views
        batch = tf.shape(features)[0]
        features = tf.concat(fe.split_views(features, views), axis=0)
        n_frames = tf.tile(n_frames, [views])
        # Zero the padded frames: the model's Masking(0.0) turns them into a mask, and every
        # layer after it honours the mask, so the padding changes nothing.
        valid = tf.sequence_mask(n_frames, tf.shape(features)[1], dtype=features.dtype)
        features = features * valid[:, :, None]
        outputs = call_network(self.net, features)
        if self.has_attention:
            probabilities, alpha = outputs
        else:
            probabilities = outputs
            steps = self._steps(n_frames)
            total = self._steps(tf.shape(features)[1])
            alpha = tf.sequence_mask(steps, total, dtype=probabilities.dtype)
            alpha = alpha / tf.cast(steps, probabilities.dtype)[:, None]
        if views > 1:
            probabilities = tf.reduce_mean(tf.reshape(probabilities, [views, batch, -1]), axis=0)
            alpha = tf.reduce_mean(tf.reshape(alpha, [views, batch, -1]), axis=0)
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
        # A batch of one known when tracing (the LiteRT model) stays known through the padding and
        # cropping below, so the front end and the functionals trace without a loop over rows.
        static_one = inputs.shape[0] == 1 and not self.jit_compile
        batch = 1 if static_one else tf.shape(inputs)[0]
        size = tf.shape(inputs)[1]
        lengths = tf.clip_by_value(tf.cast(lengths, tf.int32), 0, size)
        n_frames = frame_counts(lengths, p)
        longest = tf.maximum(tf.reduce_max(tf.concat([n_frames, [1]], 0)), 1)
        if self.jit_compile:
            frames_b, batch_b = self._bucket_frames(longest), self._bucket_batch(batch)
        else:  # a plain graph runs any shape as it is: no padding needed
            frames_b, batch_b = longest, batch
        # Room for frames_b frames and the samples after the last one (up to hop - 1: YIN's
        # segments reach past a frame's end), so no valid sample is ever cut off.
        target = p.frame + frames_b * p.hop - 1
        inputs = inputs[:, : tf.minimum(size, target)]
        # Samples past a row's length are zero, as the front end pads a short recording.
        valid = tf.sequence_mask(lengths, tf.shape(inputs)[1], dtype=inputs.dtype)
        inputs = inputs * valid
        inputs = tf.pad(inputs, [[0, batch_b - batch], [0, target - tf.shape(inputs)[1]]])
        n_frames_b = tf.pad(n_frames, [[0, batch_b - batch]], constant_values=1)
        if static_one:
            inputs.set_shape([1, None])
            n_frames_b.set_shape([1])
        speech = speech_flags(inputs[:batch], lengths, p)
        if isinstance(stats, str):
            # "speaker": padding rows (if any) hold no valid frame, and neither do rows without
            # speech (silence or noise says nothing about the speaker; predict agrees).
            moments = self.raw(inputs, tf.pad(tf.where(speech, n_frames, 0), [[0, batch_b - batch]]))
            if stats == "moments":
                return moments, speech
            mean, std = fe.mean_std(*moments, self.params.std_floor)
            probabilities, alpha = self.core(inputs, n_frames_b, tf.cast(mean, tf.float32),
                                             tf.cast(std, tf.float32))
        elif stats is not None:
            probabilities, alpha = self.core(inputs, n_frames_b, *stats[:2])
        else:
            probabilities, alpha = self.core(inputs, n_frames_b)
        steps = self._steps(longest)
        probabilities = probabilities[:batch]
        if self.functionals is not None:
            by_speaker = tuple(stats[2:]) if isinstance(stats, tuple) and len(stats) == 4 else stats == "speaker"
            probabilities = self._fuse_functionals(probabilities, inputs[:batch], lengths, speech, by_speaker)
        # No speech, no emotion: uniform probabilities, so no label is confident.
        uniform = tf.fill(tf.shape(probabilities), 1.0 / len(self.bundle.labels))
        probabilities = tf.where(speech[:, None], probabilities, uniform)
        return {"probabilities": probabilities, "attention": alpha[:batch, :steps],
                "speech": tf.cast(speech, tf.int32)}

    def _fuse_functionals(self, probabilities, inputs, lengths, speech, by_speaker):
        """(1 - w) * network + w * the functionals classifier's probabilities (class docstring).
        `by_speaker`: False (the pooled head), True (the speaker head, z-normalised over the
        batch's rows with speech) or a speaker's functionals (mean, std) for the speaker head."""
        tf = self.tf
        x = self._row_functionals(inputs, lengths)
        condition = "pooled" if by_speaker is False else "speaker"
        head, arrays = self.functionals.heads[condition], self.heads[condition]
        if isinstance(by_speaker, tuple):  # a speaker's (mean, std), from predict --same-speaker
            x = tf.cast((tf.cast(x, tf.float64) - tf.cast(by_speaker[0], tf.float64))
                        / tf.cast(by_speaker[1], tf.float64), tf.float32)
        elif by_speaker:  # one speaker: z-normalised over the rows with speech (models.functionals)
            weights = tf.cast(speech, tf.float64)[:, None]
            x64 = tf.cast(x, tf.float64)
            count = tf.maximum(tf.reduce_sum(weights), 1.0)
            mean = tf.reduce_sum(x64 * weights, axis=0) / count
            std = tf.sqrt(tf.reduce_sum(tf.square(x64 - mean) * weights, axis=0) / count)
            x = tf.cast((x64 - mean) / tf.where(std > SPEAKER_STD_FLOOR, std, tf.ones_like(std)), tf.float32)
        if head.support is not None:  # the RBF basis (models.functionals.rbf_basis)
            z = (tf.cast(x, tf.float64) - tf.cast(arrays["mean"], tf.float64)) / tf.cast(arrays["scale"], tf.float64)
            support = tf.cast(arrays["support"], tf.float64)
            squared = (tf.reduce_sum(z * z, axis=1)[:, None] - 2.0 * tf.matmul(z, support, transpose_b=True)
                       + tf.reduce_sum(support * support, axis=1)[None, :])
            x = tf.cast(tf.exp(-head.gamma * tf.maximum(squared, 0.0)), tf.float32)
        logits = tf.matmul(x, arrays["kernel"]) + arrays["bias"]
        weight = head.weight
        return (1.0 - weight) * probabilities + weight * tf.nn.softmax(logits, axis=-1)

    def input_spec(self):
        return self.tf.TensorSpec([None, None], self.tf.float32, name="waveform")

    def _input_checks(self, inputs) -> list:
        message = "input waveform must be a rank-2 float32 tensor [batch, samples] (x below is the rank received)"
        return [self._check_rank(inputs, 2, message)] + self._check_scale(inputs)

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
        mean, std = fe.mean_std(frames, total, squares, self.params.std_floor)
        return {"mean": tf.cast(mean, tf.float32), "std": tf.cast(std, tf.float32),
                "frames": frames, "sum": total, "sum_squares": squares, "speech": tf.cast(speech, tf.int32)}

    def serve_with_statistics(self, inputs, lengths, mean, std, functionals_mean=None, functionals_std=None):
        inputs, lengths, mean, std = self._checked(inputs, lengths, mean, std)
        if functionals_mean is None:
            return self.run(inputs, lengths, stats=(mean, std))
        return self.run(inputs, lengths, stats=(mean, std, functionals_mean, functionals_std))

    def wide_functionals(self, inputs, lengths):
        """The wide functionals of each row's valid samples (what the functionals classifier reads)."""
        tf = self.tf
        inputs, lengths = self._checked(inputs, lengths)
        lengths = tf.clip_by_value(tf.cast(lengths, tf.int32), 0, tf.shape(inputs)[1])
        return {"functionals": self._row_functionals(inputs, lengths)}

    def _row_functionals(self, inputs, lengths):
        if inputs.shape[0] == 1:  # one recording (the LiteRT model): no loop over rows, no call
            return wide_functionals(inputs[0, :lengths[0]])[None]
        # extract_functionals is one tf.function: traced once, stored once in the SavedModel
        # however many endpoints call it.
        return self.tf.map_fn(lambda row: extract_functionals(row[0][:row[1]]), (inputs, lengths),
                              fn_output_signature=self.tf.TensorSpec([len(FEATURE_NAMES)], self.tf.float32))
