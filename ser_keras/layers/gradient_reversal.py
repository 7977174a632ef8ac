"""Identity forward, gradient times -weight backward: the speaker adversary's hinge."""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="ser_keras")
class GradientReversal(keras.layers.Layer):
    """Pass the input through unchanged; multiply the gradient flowing back by `-weight`.

    Put between a shared representation and an adversary (a speaker classifier): the adversary
    learns to tell the speakers apart while the layers below learn to make that harder
    (domain-adversarial training, Ganin & Lempitsky 2015). `weight` sets how hard.

    Args:
        weight: the factor of the reversed gradient (>= 0; 0 cuts the adversary off).
        **kwargs: base `Layer` arguments.
    """

    def __init__(self, weight, **kwargs):
        super().__init__(**kwargs)
        if float(weight) < 0:
            raise ValueError(f"GradientReversal: weight must be >= 0, received weight={weight}")
        self.weight = float(weight)
        self.supports_masking = True

    def call(self, inputs):
        weight = self.weight

        @tf.custom_gradient
        def reverse(x):
            return tf.identity(x), lambda upstream: -weight * upstream

        return reverse(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"weight": self.weight})
        return config
