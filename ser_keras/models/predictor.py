"""Class probabilities of a Keras model over a dataset, traced once for every batch shape, and
their mean over the test-time views of the same utterances."""

from __future__ import annotations

import weakref

import keras
import numpy as np
import tensorflow as tf

_PREDICTORS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def make_predictor(model: keras.Model):
    """`f(dataset) -> probabilities` through one `tf.function` traced ONCE for inputs
    `(batch, frames, D)` of any batch size and length. `model.predict` retraces for the first
    few padded lengths it meets (seconds each on a CPU, in every fold); this does not."""
    if model in _PREDICTORS:
        return _PREDICTORS[model]
    dim = model.inputs[0].shape[-1]
    signature = [tf.TensorSpec([None, None, dim], tf.float32)]
    forward = tf.function(lambda x: model(x, training=False), input_signature=signature)

    def predict(dataset) -> np.ndarray:
        outputs = []
        for batch in dataset:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            outputs.append(forward(x).numpy())
        if not outputs:
            return np.zeros((0, model.outputs[0].shape[-1]), np.float32)
        return np.concatenate(outputs, axis=0)

    _PREDICTORS[model] = predict
    return predict


def predict_views(predict, views) -> np.ndarray:
    """Class probabilities averaged over test-time views: `views` is one dataset or a list of
    datasets (the same utterances in the same order, one per view: ``features.test_warp_factors``);
    `predict` is ``make_predictor(model)``."""
    if not isinstance(views, (list, tuple)):
        return predict(views)
    return np.mean([predict(view) for view in views], axis=0)
