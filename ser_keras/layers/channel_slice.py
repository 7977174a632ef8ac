"""The leading channels of a frame sequence, keeping its mask."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="ser_keras")
class ChannelSlice(keras.layers.Layer):
    """Keep the first `channels` channels of every frame; the mask passes through unchanged
    and masked frames come out as zeros.

    A model whose input frames carry extra channels for one branch only (the pitch channels,
    read by the statistics branch and not by the convolution) gives the other branches this.

    Args:
        channels: how many leading channels to keep (>= 1).
        **kwargs: base `Layer` arguments.

    Input shape:
        `(batch, frames, input_channels)` with `input_channels >= channels`.
    Output shape:
        `(batch, frames, channels)`.
    """

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        if int(channels) < 1:
            raise ValueError(f"ChannelSlice: channels must be >= 1, received channels={channels}")
        self.channels = int(channels)
        self.supports_masking = True

    def build(self, input_shape):
        if input_shape[-1] is not None and input_shape[-1] < self.channels:
            raise ValueError(f"ChannelSlice: input has {input_shape[-1]} channels, fewer than {self.channels}")

    def call(self, inputs, mask=None):
        kept = inputs[..., : self.channels]
        if mask is None:
            return kept
        # Padded frames come out as zeros, whatever they held (input noise in training).
        return kept * ops.expand_dims(ops.cast(mask, kept.dtype), -1)

    def compute_mask(self, inputs, mask=None):
        return mask

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.channels)

    def get_config(self):
        config = super().get_config()
        config.update({"channels": self.channels})
        return config
