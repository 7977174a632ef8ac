"""Masked utterance statistics of a frame sequence (statistics pooling)."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="ser_keras")
class StatisticsPooling(keras.layers.Layer):
    """Pool a sequence into per-channel statistics over its valid frames.

    For every channel: the mean and standard deviation over the unmasked frames and, with
    `deltas=True`, the mean absolute value and standard deviation of the frame-to-frame
    differences (between consecutive valid frames). These are the functionals that make the
    classical functionals + SVM baseline strong (level, spread and dynamics of each channel),
    computed inside the network so that a served model needs nothing but the waveform. Padding
    never contributes; a sequence with no valid frame pools to zeros (and with one valid frame
    its spreads and deltas are zero).

    Args:
        deltas: also pool the frame-to-frame differences.
        epsilon: added to the variance under the square root, so its gradient stays finite.
        **kwargs: base `Layer` arguments.

    Call arguments:
        inputs: `(batch, frames, channels)` float tensor.
        mask: optional `(batch, frames)` boolean mask.

    Input shape:
        `(batch, frames, channels)`.

    Output shape:
        `(batch, channels * n)`, n = 2 (mean, std) + 2 with `deltas` (mean absolute delta, delta
        std), in that order and statistic-major (all channels' means, then all stds, ...). Time
        is pooled away, so `compute_mask` returns None.

    Example:

    >>> layer = StatisticsPooling(deltas=True)
    >>> layer(np.random.rand(2, 7, 60).astype("float32")).shape
    (2, 240)

    Reference:
        Snyder et al. (2018), "X-vectors: robust DNN embeddings for speaker recognition"
        (statistics pooling); Schuller et al. (2009), "The INTERSPEECH 2009 emotion challenge"
        (utterance functionals of frame descriptors).
    """

    def __init__(self, deltas=True, epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        if epsilon <= 0:
            raise ValueError(f"StatisticsPooling: epsilon must be positive, received epsilon={epsilon}")
        self.deltas = bool(deltas)
        self.epsilon = float(epsilon)
        self.supports_masking = True

    def build(self, input_shape):
        if len(input_shape) != 3 or input_shape[-1] is None:
            raise ValueError(
                "StatisticsPooling expects (batch, frames, channels) with known channels, "
                f"received input shape {input_shape}"
            )

    def _moments(self, x, weights):
        """Weighted mean and std over axis 1; `weights` (batch, frames, 1) of 0/1."""
        total = ops.sum(weights, axis=1)
        count = ops.maximum(total, 1.0)
        mean = ops.sum(x * weights, axis=1) / count
        centred = (x - ops.expand_dims(mean, 1)) * weights
        variance = ops.sum(centred * centred, axis=1) / count
        # Rows without frames pool to zero spread, not sqrt(epsilon).
        return mean, ops.sqrt(variance + self.epsilon) * ops.cast(total > 0, x.dtype)

    def call(self, inputs, mask=None):
        if mask is None:
            valid = ops.ones(ops.shape(inputs)[:2], dtype=inputs.dtype)
        else:
            valid = ops.cast(mask, inputs.dtype)
        weights = ops.expand_dims(valid, -1)
        mean, std = self._moments(inputs, weights)
        outputs = [mean, std]
        if self.deltas:
            differences = inputs[:, 1:] - inputs[:, :-1]
            # A difference is valid where both of its frames are.
            pair_weights = weights[:, 1:] * weights[:, :-1]
            delta_std = self._moments(differences, pair_weights)[1]
            count = ops.maximum(ops.sum(pair_weights, axis=1), 1.0)
            delta_mean = ops.sum(ops.abs(differences) * pair_weights, axis=1) / count
            outputs += [delta_mean, delta_std]
        return ops.concatenate(outputs, axis=-1)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1] * (2 + 2 * self.deltas))

    def get_config(self):
        config = super().get_config()
        config.update({"deltas": self.deltas, "epsilon": self.epsilon})
        return config
