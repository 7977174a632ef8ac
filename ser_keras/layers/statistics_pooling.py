"""Masked utterance statistics of a frame sequence (statistics pooling)."""

from __future__ import annotations

import keras
from keras import ops

# Stands in for padding: sorts after every valid frame, and (negated or not) never wins a
# maximum or minimum over the valid frames.
_PADDING_VALUE = 1e9
# A voicing flag whose values over an utterance differ by less holds one value only (a
# normalised 0/1 flag's two values differ by 1 / std, at least 2).
_FLAG_SPREAD = 1e-3


@keras.saving.register_keras_serializable(package="ser_keras")
class StatisticsPooling(keras.layers.Layer):
    """Pool a sequence into per-channel statistics over its valid frames.

    For every channel: the mean and standard deviation over the unmasked frames and, with
    `deltas=True`, the mean absolute value and standard deviation of the frame-to-frame
    differences (between consecutive valid frames); with `percentiles`, those percentiles of
    the valid frames (linear interpolation between order statistics, as numpy's default); with
    `voiced_channel`, the mean and standard deviation over the voiced frames only. These are the
    functionals that make the classical functionals + SVM baseline strong (level, spread,
    dynamics and robust range of each channel, and descriptors of the voiced segments, as
    openSMILE's eGeMAPS computes them), computed inside the network so that a served model needs
    nothing but the waveform. Padding never contributes; a sequence with no valid frame pools
    to zeros (and with one valid frame its spreads and deltas are zero, every percentile its
    value).

    A frame is voiced when its `voiced_channel` value is the higher of the two values that
    channel takes over the utterance's valid frames: the channel is a 0/1 voicing flag after an
    affine normalisation (per speaker, or pooled), which keeps the order of its two values
    whatever its offset and (positive) scale. An utterance whose frames are all voiced or all
    unvoiced has no voiced frames here; its voiced statistics are zeros.

    Args:
        deltas: also pool the frame-to-frame differences.
        percentiles: percentiles in (0, 100) to pool per channel; () for none.
        voiced_channel: index of the voicing flag among the input channels (negative counts
            from the end), or None for no voiced-frame statistics.
        epsilon: added to the variance under the square root, so its gradient stays finite.
        **kwargs: base `Layer` arguments.

    Call arguments:
        inputs: `(batch, frames, channels)` float tensor.
        mask: optional `(batch, frames)` boolean mask; valid frames form a prefix (padding at
            the end, as the data pipeline and the serving graph pad).

    Input shape:
        `(batch, frames, channels)`.

    Output shape:
        `(batch, channels * n)`, n = 2 (mean, std) + 2 with `deltas` + one per percentile +
        2 with `voiced_channel` (voiced mean, voiced std), in that order and statistic-major
        (all channels' means, then all stds, ...). Time is pooled away, so `compute_mask`
        returns None.

    Example:

    >>> layer = StatisticsPooling(deltas=True)
    >>> layer(np.random.rand(2, 7, 60).astype("float32")).shape
    (2, 240)

    Reference:
        Snyder et al. (2018), "X-vectors: robust DNN embeddings for speaker recognition"
        (statistics pooling); Schuller et al. (2009), "The INTERSPEECH 2009 emotion challenge"
        (utterance functionals of frame descriptors).
    """

    def __init__(self, deltas=True, percentiles=(), voiced_channel=None, epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        if epsilon <= 0:
            raise ValueError(f"StatisticsPooling: epsilon must be positive, received epsilon={epsilon}")
        if any(not 0 < q < 100 for q in percentiles):
            raise ValueError(f"StatisticsPooling: percentiles must be in (0, 100), received {list(percentiles)}")
        self.deltas = bool(deltas)
        self.percentiles = tuple(float(q) for q in percentiles)
        self.voiced_channel = None if voiced_channel is None else int(voiced_channel)
        self.epsilon = float(epsilon)
        self.supports_masking = True

    def build(self, input_shape):
        if len(input_shape) != 3 or input_shape[-1] is None:
            raise ValueError(
                "StatisticsPooling expects (batch, frames, channels) with known channels, "
                f"received input shape {input_shape}"
            )
        channels = input_shape[-1]
        if self.voiced_channel is not None and not -channels <= self.voiced_channel < channels:
            raise ValueError(f"StatisticsPooling: voiced_channel {self.voiced_channel} is not one of the "
                             f"{channels} input channels")

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
        outputs += self._percentiles(inputs, valid)
        if self.voiced_channel is not None:
            outputs += list(self._moments(inputs, ops.expand_dims(self._voiced(inputs, valid), -1)))
        return ops.concatenate(outputs, axis=-1)

    def _voiced(self, inputs, valid):
        """`(batch, frames)` 0/1: valid frames whose voicing flag is the utterance's higher value."""
        flag = inputs[:, :, self.voiced_channel]
        is_valid = valid > 0
        highest = ops.max(ops.where(is_valid, flag, -_PADDING_VALUE), axis=1, keepdims=True)
        lowest = ops.min(ops.where(is_valid, flag, _PADDING_VALUE), axis=1, keepdims=True)
        both_values = ops.cast(highest - lowest > _FLAG_SPREAD, inputs.dtype)
        return valid * ops.cast(flag > 0.5 * (highest + lowest), inputs.dtype) * both_values

    def _percentiles(self, inputs, valid):
        """One `(batch, channels)` tensor per percentile, over the valid frames."""
        if not self.percentiles:
            return []
        filled = ops.where(ops.expand_dims(valid > 0, -1), inputs, _PADDING_VALUE)
        ordered = ops.sort(filled, axis=1)
        count = ops.sum(valid, axis=1)
        has_frames = ops.expand_dims(ops.cast(count > 0, inputs.dtype), -1)
        last = ops.maximum(count, 1.0) - 1.0
        channels = ops.shape(inputs)[-1]
        outputs = []
        for q in self.percentiles:
            position = last * (q / 100.0)
            lower = ops.floor(position)
            fraction = ops.expand_dims(position - lower, -1)
            values = []
            for index in (lower, ops.minimum(lower + 1.0, last)):
                index = ops.broadcast_to(ops.reshape(ops.cast(index, "int32"), (-1, 1, 1)),
                                         (ops.shape(inputs)[0], 1, channels))
                values.append(ops.squeeze(ops.take_along_axis(ordered, index, axis=1), 1))
            outputs.append((values[0] + fraction * (values[1] - values[0])) * has_frames)
        return outputs

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        count = 2 + 2 * self.deltas + len(self.percentiles) + 2 * (self.voiced_channel is not None)
        return (input_shape[0], input_shape[-1] * count)

    def get_config(self):
        config = super().get_config()
        config.update({"deltas": self.deltas, "percentiles": list(self.percentiles),
                       "voiced_channel": self.voiced_channel, "epsilon": self.epsilon})
        return config
