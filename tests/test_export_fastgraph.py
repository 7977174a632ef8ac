"""The fused-LSTM inference graph gives the Keras model's numbers, masks included."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ser_keras.export import fastgraph
from tests.conftest import tiny_export_config


def _model(bidirectional=True, return_sequences=True, layers=2, attention=True, units=7):
    from ser_keras.config import Config
    from ser_keras.models import build_model

    config = Config()
    config.model.experiment = "exp4" if attention else "exp3"
    config.model.statistics_units = 0  # the paper's models (the defaults are exp5's)
    config.model.attention = attention
    config.model.bidirectional = bidirectional
    config.model.lstm_layers = layers
    config.model.lstm_units = units
    config.sae.hidden_units = 5
    model = build_model(config, 3, 12)
    # Large recurrent weights and biases drive the cell state far beyond +-3, where a
    # clipping LSTM kernel would differ from Keras.
    rng = np.random.default_rng(0)
    for layer in model.layers:
        for weight in layer.weights:
            if "lstm" in weight.path or "forward" in weight.path or "backward" in weight.path:
                value = rng.normal(0, 0.3, weight.shape).astype("float32")
                if weight.path.endswith("bias"):  # gates open, candidate positive: c grows
                    value[: 3 * units] += 4.0
                weight.assign(value)
    return model


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 3, size=(4, 170, 12)).astype(np.float32)
    x[1, 120:] = 0  # padded rows (Masking(0) turns them into a mask)
    x[2, 9:] = 0  # shorter than one block
    x[3, 31:] = 0
    return x


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("attention", [True, False])
def test_fast_forward_equals_keras(bidirectional, attention):
    model = _model(bidirectional=bidirectional, attention=attention)
    assert fastgraph.supports(model)
    x = _inputs()
    expected = model(x, training=False)
    got = tf.function(lambda t: fastgraph.fast_forward(model, t))(x)
    expected = expected if isinstance(expected, list) else [expected]
    got = got if isinstance(got, list) else [got]
    if attention:  # the model itself returns probabilities only; alpha comes from attention_model
        from ser_keras.models import attention_model

        expected = attention_model(model)(x, training=False)
    for e, g in zip(expected, got):
        np.testing.assert_allclose(np.asarray(g), np.asarray(e), atol=2e-6)
    # Padding never changes a row: each padded row equals the row alone, unpadded.
    for row, n in ((1, 120), (2, 9), (3, 31)):
        alone = fastgraph.fast_forward(model, x[row:row + 1, :n])
        alone = alone[0] if isinstance(alone, list) else alone
        np.testing.assert_allclose(np.asarray(alone)[0], np.asarray(got[0])[row], atol=2e-6)


def test_cell_state_really_exceeds_clip_range():
    """Guard for the test above: the chosen weights make |c| > 3 somewhere."""
    model = _model(attention=False, layers=1)
    layer = next(layer for layer in model.layers if isinstance(layer, keras.layers.Bidirectional))
    lstm = layer.forward_layer
    seq = keras.layers.LSTM(lstm.units, return_state=True, return_sequences=True)
    seq.build((None, None, lstm.cell.kernel.shape[0]))
    seq.set_weights(lstm.get_weights())
    x = np.random.default_rng(1).normal(0, 1, size=(2, 60, lstm.cell.kernel.shape[0])).astype(np.float32)
    _, _, c = seq(x)
    assert float(np.abs(np.asarray(c)).max()) > 3.0


def test_exp2_model_is_supported():
    from ser_keras.models import build_model

    config = tiny_export_config("exp2")
    model = build_model(config, 4, 10)
    assert fastgraph.supports(model)
    x = _inputs()[:, :, :10]
    np.testing.assert_allclose(np.asarray(fastgraph.fast_forward(model, x)), np.asarray(model(x, training=False)),
                               atol=2e-6)


def test_unsupported_models_are_detected():
    inputs = keras.Input((None, 4))
    gru = keras.layers.GRU(3)(inputs)
    assert not fastgraph.supports(keras.Model(inputs, keras.layers.Dense(2)(gru)))
    a = keras.layers.LSTM(3)(inputs)
    b = keras.layers.LSTM(3)(inputs)
    assert not fastgraph.supports(keras.Model(inputs, keras.layers.Concatenate()([a, b])))
    relu = keras.layers.LSTM(3, activation="relu")(inputs)
    assert not fastgraph.supports(keras.Model(inputs, relu))
