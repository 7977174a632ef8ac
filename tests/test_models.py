"""Model builders: exp2-exp5 graphs, names, masking, .keras round trip, attention, SVM."""

import os

import numpy as np
import pytest

import keras  # noqa: E402 - a required dependency: a broken install fails, never skips

from ser_keras.config import Config, config_from_dict  # noqa: E402
from ser_keras.errors import SerKerasError  # noqa: E402
from ser_keras.layers import AttentionPooling, BlockPooling, SparseAEConv  # noqa: E402
from ser_keras.models import (  # noqa: E402
    attention_model,
    attention_span_frames,
    attention_step_frames,
    build_model,
    build_svm,
    compile_model,
)

N_CLASSES = 3
D = 6
LENGTHS = (41, 17, 3)


def tiny_config(experiment, **model):
    """The shipped experiment shapes, shrunk."""
    config = Config()
    config.model.experiment = experiment
    # The paper's shapes (the defaults are exp5's): no statistics branch, frozen kernels.
    config.model.statistics_units = 0
    config.model.fine_tune_kernels = False
    config.model.input_noise = 0.1
    config.model.frontend = "dense" if experiment == "exp2" else "sae_conv"
    config.model.dense_units = 8
    config.model.lstm_units = 4
    config.model.lstm_layers = 2 if experiment == "exp4" else 1
    config.model.attention = experiment == "exp4"
    config.model.pool_window = 2
    config.model.block_windows = 3
    config.model.block_stride = 2
    config.sae.kernel_sizes = [2, 3]
    config.sae.hidden_units = 3
    for key, value in model.items():
        setattr(config.model, key, value)
    return config


def predict(model, x):
    """Eager inference call: faster than `predict` for tiny models and changing shapes."""
    out = model(x, training=False)
    return [np.asarray(o) for o in out] if isinstance(out, (list, tuple)) else np.asarray(out)


def padded_batch(lengths=LENGTHS, dim=D, seed=0):
    rng = np.random.default_rng(seed)
    x = np.zeros((len(lengths), max(lengths), dim), np.float32)
    for i, n in enumerate(lengths):
        x[i, :n] = rng.normal(size=(n, dim)) + 0.5
    return x


@pytest.mark.parametrize("experiment", ["exp2", "exp3", "exp4"])
def test_model_saves_loads_and_predicts_identically(experiment, tmp_path):
    model = build_model(tiny_config(experiment), N_CLASSES, D)
    x = padded_batch()
    before = predict(model, x)
    assert before.shape == (3, N_CLASSES)
    np.testing.assert_allclose(before.sum(axis=1), 1.0, rtol=1e-5)
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(predict(loaded, x), before)
    assert [w.shape for w in loaded.weights] == [w.shape for w in model.weights]


@pytest.mark.parametrize("experiment", ["exp2", "exp3", "exp4"])
def test_prediction_does_not_depend_on_the_padding(experiment):
    model = build_model(tiny_config(experiment), N_CLASSES, D)
    x = padded_batch()
    batch = predict(model, x)
    longer = predict(model, np.pad(x, ((0, 0), (0, 23), (0, 0))))
    np.testing.assert_allclose(longer, batch, atol=1e-6)
    for i, n in enumerate(LENGTHS):
        np.testing.assert_allclose(predict(model, x[i : i + 1, :n])[0], batch[i], atol=1e-6)


def test_names_and_structure():
    names = {
        "exp2": ["features", "masking", "input_noise", "dense", "frontend_dropout", "blstm_1", "dropout",
                 "probabilities"],
        "exp3": ["features", "masking", "input_noise", "sae_conv", "block_pooling", "frontend_dropout", "blstm_1",
                 "dropout", "probabilities"],
        "exp4": ["features", "masking", "input_noise", "sae_conv", "block_pooling", "frontend_dropout", "blstm_1",
                 "blstm_2", "attention_pooling", "dropout", "probabilities"],
    }
    for experiment, expected in names.items():
        model = build_model(tiny_config(experiment), N_CLASSES, D)
        layer_names = [layer.name for layer in model.layers]
        assert [n for n in layer_names if n in expected] == expected, layer_names
        assert model.inputs[0].name == "features" and model.output_names == ["probabilities"]
        assert model.inputs[0].shape == (None, None, D)
        assert model.get_layer("probabilities").activation is keras.activations.softmax
    exp4 = build_model(tiny_config("exp4"), N_CLASSES, D)
    assert exp4.get_layer("blstm_1").return_sequences and exp4.get_layer("blstm_2").return_sequences
    assert isinstance(exp4.get_layer("attention_pooling"), AttentionPooling)
    conv = exp4.get_layer("sae_conv")
    assert isinstance(conv, SparseAEConv) and not conv.trainable_weights and conv.kernel_sizes == [2, 3]
    assert isinstance(exp4.get_layer("block_pooling"), BlockPooling)
    exp3 = build_model(tiny_config("exp3"), N_CLASSES, D)
    assert not exp3.get_layer("blstm_1").return_sequences


def test_config_switches():
    lstm = build_model(tiny_config("exp4", bidirectional=False), N_CLASSES, D)
    assert isinstance(lstm.get_layer("lstm_1"), keras.layers.LSTM)
    assert lstm.get_layer("lstm_2").units == 4
    fine = build_model(tiny_config("exp3", fine_tune_kernels=True), N_CLASSES, D)
    assert len(fine.get_layer("sae_conv").trainable_weights) == 4
    config = tiny_config("exp3", dropout=0.25, input_noise=0.3)
    model = build_model(config, N_CLASSES, D)
    assert model.get_layer("dropout").rate == 0.25 and model.get_layer("input_noise").stddev == 0.3
    three = build_model(tiny_config("exp3", lstm_layers=3, attention=True), N_CLASSES, D)
    assert [three.get_layer(f"blstm_{i}").return_sequences for i in (1, 2, 3)] == [True, True, True]


def test_recurrent_and_attention_init_within_scale_and_directions_differ():
    config = tiny_config("exp4", init_scale=0.05)
    model = build_model(config, N_CLASSES, D)
    blstm = model.get_layer("blstm_1")
    forward = blstm.forward_layer.cell.kernel.numpy()
    backward = blstm.backward_layer.cell.kernel.numpy()
    for w in (forward, backward, blstm.forward_layer.cell.recurrent_kernel.numpy(),
              model.get_layer("attention_pooling").theta.numpy()):
        assert np.abs(w).max() <= 0.05 and np.abs(w).max() > 0.02
    assert not np.allclose(forward, backward)


def test_same_seed_same_weights_other_seed_other_weights():
    a = build_model(tiny_config("exp4"), N_CLASSES, D).get_weights()
    b = build_model(tiny_config("exp4"), N_CLASSES, D).get_weights()
    other = tiny_config("exp4")
    other.train.seed = 7
    c = build_model(other, N_CLASSES, D).get_weights()
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert not all(np.array_equal(p, q) for p, q in zip(a, c))


def test_attention_model_exposes_alpha(tmp_path):
    config = tiny_config("exp4")
    model = build_model(config, N_CLASSES, D)
    x = padded_batch()
    probabilities, alpha = predict(attention_model(model), x)
    np.testing.assert_allclose(probabilities, predict(model, x), atol=1e-6)
    step = attention_step_frames(config)
    assert step == 4 and attention_span_frames(config) == 6
    # 41 frames -> 21 windows of 2 -> 1 + ceil((21 - 3) / 2) = 10 blocks.
    assert alpha.shape == (3, 10)
    np.testing.assert_allclose(alpha.sum(axis=1), 1.0, rtol=1e-5)
    # 17 frames -> 9 windows -> 4 blocks; 3 frames -> 2 windows -> 1 block.
    assert np.all(alpha[1, 4:] == 0) and np.all(alpha[1, :4] > 0)
    assert np.all(alpha[2, 1:] == 0) and alpha[2, 0] == pytest.approx(1.0)
    # And after a .keras round trip.
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    _, alpha_loaded = predict(attention_model(keras.models.load_model(path)), x)
    np.testing.assert_allclose(alpha_loaded, alpha, atol=1e-7)


def test_attention_model_needs_attention_and_exp1_is_no_keras_model():
    with pytest.raises(SerKerasError, match="attention_pooling"):
        attention_model(build_model(tiny_config("exp3"), N_CLASSES, D))
    assert attention_step_frames(tiny_config("exp2")) == 1
    with pytest.raises(SerKerasError, match="build_svm"):
        build_model(tiny_config("exp1", classifier="svm", input_features="functionals"), N_CLASSES, D)
    with pytest.raises(SerKerasError, match="n_classes"):
        build_model(tiny_config("exp4"), 1, D)
    with pytest.raises(SerKerasError, match="block_stride"):
        tiny_config("exp4", block_stride=5).validate()


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_compile_model_and_one_fit_step(optimizer):
    config = tiny_config("exp4")
    config.train.optimizer = optimizer
    config.train.learning_rate = 0.01
    config.train.momentum = 0.8
    model = compile_model(build_model(config, N_CLASSES, D), config)
    opt = model.optimizer
    assert isinstance(opt, keras.optimizers.Adam if optimizer == "adam" else keras.optimizers.SGD)
    assert float(opt.learning_rate) == pytest.approx(0.01)
    if optimizer == "sgd":
        assert opt.momentum == pytest.approx(0.8)
    x = padded_batch()
    history = model.fit(x, np.array([0, 1, 2]), batch_size=3, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0]) and "accuracy" in history.history


def test_statistics_branch_survives_keras_file_and_tf_saved_model(tmp_path):
    """The statistics branch (exp5) is graph ops: the .keras file and a TF SavedModel (the serving
    path) compute what the model computes."""
    import tensorflow as tf

    model = build_model(tiny_config("exp5", statistics_units=6), N_CLASSES, D)
    x = padded_batch()
    batch = predict(model, x)
    model.save(tmp_path / "model.keras")
    np.testing.assert_allclose(predict(keras.models.load_model(tmp_path / "model.keras"), x), batch, atol=1e-6)
    model.export(str(tmp_path / "saved"), format="tf_saved_model", verbose=False)
    loaded = tf.saved_model.load(str(tmp_path / "saved"))
    np.testing.assert_allclose(np.asarray(loaded.serve(tf.constant(x))), batch, atol=1e-6)


def test_build_svm_grid_and_fit():
    config = config_from_dict({"model": {"experiment": "exp1", "svm_c_grid": [0.1, 10],
                                         "svm_gamma_grid": ["scale", "1e-2"], "svm_cv_folds": 3}})
    search = build_svm(config)
    assert search.param_grid == {"svc__C": [0.1, 10.0], "svc__gamma": ["scale", 0.01]}
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 20)
    x = rng.normal(size=(60, 5)) + y[:, None] * 2.0
    search.fit(x, y)
    assert search.score(x, y) > 0.9
    # The paper's grid stays reachable.
    paper = config_from_dict({"model": {"svm_c_grid": [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1]}})
    assert build_svm(paper).param_grid["svc__C"][0] == 1e-6
    assert build_svm(Config()).param_grid["svc__C"][:7] == [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0]


@pytest.mark.parametrize("model", [{"svm_gamma_grid": ["wide"]}, {"svm_gamma_grid": [-1]}, {"svm_c_grid": [0]},
                                   {"svm_cv_folds": 1}])
def test_bad_svm_grids_are_refused_by_validate(model):
    with pytest.raises(SerKerasError, match="model.svm_"):
        config_from_dict({"model": model}).validate()


def test_exp4_exports_as_tf_saved_model(tmp_path):
    """The custom layers must survive a TF SavedModel export (the serving path)."""
    import tensorflow as tf
    model = attention_model(build_model(tiny_config("exp4"), N_CLASSES, D))
    x = padded_batch()
    model.export(str(tmp_path / "saved"), format="tf_saved_model", verbose=False)
    loaded = tf.saved_model.load(str(tmp_path / "saved"))  # keep a reference: it owns the variables
    served = loaded.serve
    for got, want in zip(served(tf.constant(x)), predict(model, x)):
        np.testing.assert_allclose(np.asarray(got), want, atol=1e-6)
    probabilities, alpha = served(tf.constant(x[1:2, :17]))  # another length, unpadded
    np.testing.assert_allclose(np.asarray(alpha)[0], predict(model, x)[1][1, :4], atol=1e-6)


def test_statistics_branch_is_fused_and_padding_free():
    """model.statistics_units adds utterance statistics of the input beside the pooled sequence."""
    config = tiny_config("exp5", statistics_units=6)
    model = build_model(config, N_CLASSES, D)
    assert model.get_layer("statistics_dense").units == 6
    fusion = model.get_layer("fusion")
    assert fusion.output.shape[-1] == 2 * config.model.lstm_units + 6
    x = padded_batch()
    batch = predict(model, x)
    np.testing.assert_allclose(predict(model, np.pad(x, ((0, 0), (0, 23), (0, 0)))), batch, atol=1e-6)
    for i, n in enumerate(LENGTHS):
        np.testing.assert_allclose(predict(model, x[i : i + 1, :n])[0], batch[i], atol=1e-6)
    # The branch reaches the output: silencing it changes the prediction.
    dense = model.get_layer("statistics_dense")
    dense.set_weights([np.zeros_like(w) for w in dense.get_weights()])
    assert np.abs(predict(model, x) - batch).max() > 1e-4
    plain = build_model(tiny_config("exp5"), N_CLASSES, D)
    assert "fusion" not in [layer.name for layer in plain.layers]
