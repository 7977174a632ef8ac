"""The export's fused LSTM (``export.fused``): the same numbers as the Keras model on padded
batches, for every recurrent topology the experiments build, and the training model untouched."""

import numpy as np
import pytest
import tensorflow as tf

from ser_keras.export.fused import FusedLSTM, fused_model
from ser_keras.models import build_model
from tests.conftest import tiny_export_config


def _padded_batch(dim: int, lengths, seed: int = 0) -> np.ndarray:
    """Features [B, T, dim], zero past each row's length (the padding Masking(0) turns into a mask)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (len(lengths), max(lengths), dim)).astype(np.float32)
    for row, n in enumerate(lengths):
        x[row, n:] = 0.0
    return x


def _model(experiment: str, overrides=()):
    from ser_keras.config import load_config

    if overrides:
        config = load_config(experiment=experiment, corpus="demo", overrides=list(overrides))
    else:
        config = tiny_export_config(experiment)
    k = config.features.pca_components if experiment != "exp2" else 12
    return build_model(config, 4, k), k


def _outputs(net, x):
    y = net(x, training=False)
    return [np.asarray(t) for t in (y if isinstance(y, (list, tuple)) else [y])]


@pytest.mark.parametrize("experiment,overrides", [
    ("exp4", ()), ("exp5", ()), ("exp3", ()),
    ("exp4", ("model.bidirectional=false",)),
])
def test_fused_equals_keras_on_padded_batches(experiment, overrides):
    model, k = _model(experiment, overrides)
    fused = fused_model(model)
    assert fused is not model
    assert any(isinstance(layer, FusedLSTM) for layer in fused.layers)
    # Every other layer is shared, so no weight is copied.
    assert {id(w) for w in fused.weights} == {id(w) for w in model.weights}
    # Lengths from a full row down to a row shorter than one recurrent block, and an empty row.
    x = _padded_batch(k, [300, 211, 97, 40, 3, 0])
    for ref, out in zip(_outputs(model, x), _outputs(fused, x)):
        np.testing.assert_allclose(out, ref, atol=1e-5)
    # One recording alone, unpadded.
    for ref, out in zip(_outputs(model, x[1:2, :211]), _outputs(fused, x[1:2, :211])):
        np.testing.assert_allclose(out, ref, atol=1e-5)


def test_fused_equals_keras_with_return_sequences_outputs():
    """The recurrent layers' own outputs, padded steps included (a plain LSTM repeats its last
    valid output there, a Bidirectional gives zeros)."""
    import keras

    for bidirectional in (True, False):
        inputs = keras.Input((None, 5))
        masked = keras.layers.Masking(0.0)(inputs)
        lstm = keras.layers.LSTM(7, return_sequences=True)
        layer = keras.layers.Bidirectional(lstm, merge_mode="concat") if bidirectional else lstm
        model = keras.Model(inputs, layer(masked))
        x = _padded_batch(5, [12, 8, 1, 0], seed=3)
        np.testing.assert_allclose(_outputs(fused_model(model), x)[0], _outputs(model, x)[0], atol=1e-5)


def test_layers_the_kernel_cannot_reproduce_stay_keras():
    import keras

    inputs = keras.Input((None, 5))
    out = keras.layers.LSTM(4, activation="relu")(inputs)
    model = keras.Model(inputs, out)
    assert fused_model(model) is model


def test_training_model_is_untouched():
    model, k = _model("exp5")
    names = [layer.name for layer in model.layers]
    before = _outputs(model, _padded_batch(k, [50, 20]))
    fused_model(model)
    assert [layer.name for layer in model.layers] == names
    np.testing.assert_array_equal(_outputs(model, _padded_batch(k, [50, 20]))[0], before[0])


def test_fused_graph_has_no_while_loop():
    """What makes it fast: no step-by-step loop left in the traced network."""
    model, k = _model("exp5")
    fused = fused_model(model)
    concrete = tf.function(lambda x: fused(x, training=False)).get_concrete_function(
        tf.TensorSpec([None, None, k], tf.float32))
    ops = {op.type for op in concrete.graph.get_operations()}
    assert "BlockLSTMV2" in ops
    assert not ops & {"While", "StatelessWhile"}
