"""Sparse auto-encoder pre-training: the penalty, the exact fold of the input affine, training
behaviour on synthetic and on real CASIA spectrogram patches, and kernel assignment."""

import os
import pathlib
import time

import numpy as np
import pytest

import keras  # noqa: E402 - required dependencies: a broken install fails, never skips
import tensorflow as tf  # noqa: E402

from ser_keras.config import Config  # noqa: E402
from ser_keras.data.pipeline import sample_patches  # noqa: E402
from ser_keras.errors import SerKerasError  # noqa: E402
from ser_keras.layers import SparseAEConv  # noqa: E402
from ser_keras.models import build_model  # noqa: E402
from ser_keras.training.sae_pretrain import (  # noqa: E402
    PretrainedKernels,
    assign_kernels,
    fit_scaling,
    kl_sparsity_penalty,
    pretrain_kernels,
    train_sparse_autoencoder,
)
from tests.conftest import corpus_dir  # noqa: E402

D = 8


def smooth_features(n=40, dim=D, seed=0):
    """Temporally correlated (AR(1)) utterances: patches carry structure an AE can learn."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(4, dim))
    out = []
    for length in rng.integers(20, 80, size=n):
        state = np.zeros(4)
        frames = []
        for _ in range(length):
            state = 0.9 * state + rng.normal(scale=0.5, size=4)
            frames.append(state @ mixing + 0.1 * rng.normal(size=dim) + 2.0)
        out.append(np.asarray(frames, np.float32))
    return out


def tiny_config(**sae):
    config = Config()
    config.sae.kernel_sizes = [3, 4]
    config.sae.hidden_units = 8
    config.sae.patches_per_size = 3000
    config.sae.epochs = 12
    config.sae.batch_size = 128
    for key, value in sae.items():
        setattr(config.sae, key, value)
    return config


def numpy_kl(h, rho):
    rho_hat = h.mean(axis=0)
    return np.sum(rho * np.log(rho / rho_hat) + (1 - rho) * np.log((1 - rho) / (1 - rho_hat)))


def test_kl_sparsity_penalty_matches_numpy():
    rng = np.random.default_rng(0)
    h = rng.uniform(0.01, 0.99, size=(64, 10)).astype(np.float32)
    for rho in (0.05, 0.3):
        want = numpy_kl(h.astype(np.float64), rho)
        assert float(kl_sparsity_penalty(h, rho)) == pytest.approx(want, rel=1e-5)
        assert float(kl_sparsity_penalty(tf.constant(h), rho)) == pytest.approx(want, rel=1e-5)
    # Zero exactly when every unit's mean activation is rho; finite for dead units.
    assert float(kl_sparsity_penalty(np.full((4, 3), 0.2, np.float32), 0.2)) == pytest.approx(0.0, abs=1e-6)
    assert np.isfinite(float(kl_sparsity_penalty(np.zeros((4, 3), np.float32), 0.05)))


def test_scaling_standardises_inputs_and_maps_targets_to_0_1_0_9():
    rng = np.random.default_rng(1)
    patches = (rng.normal(size=(5000, 3 * 4)) * np.tile([1, 10, 0.1, 3], 3) + 7).astype(np.float32)
    scale, offset, target_scale, target_offset = fit_scaling(patches, 3, clip_std=3.0)
    inputs = patches * scale + offset
    np.testing.assert_allclose(inputs.mean(axis=0), 0, atol=0.05)
    np.testing.assert_allclose(inputs.std(axis=0), 1, atol=0.05)
    frames = patches.reshape(-1, 4)
    mean, std = frames.mean(axis=0), frames.std(axis=0)
    np.testing.assert_allclose((mean + 3 * std) * target_scale[:4] + target_offset[:4], 0.9, atol=1e-4)
    np.testing.assert_allclose((mean - 3 * std) * target_scale[:4] + target_offset[:4], 0.1, atol=1e-4)
    # One affine per feature dimension, the same at every frame of the patch.
    np.testing.assert_array_equal(scale[:4], scale[8:12])


@pytest.mark.parametrize("kernel_size", [3, 4])
def test_folded_kernel_reproduces_the_encoder_on_unscaled_features(kernel_size):
    features = smooth_features(n=10)
    patches = sample_patches(features, kernel_size, 2000, 1.0, seed=0)
    result = train_sparse_autoencoder(patches, kernel_size, tiny_config(epochs=3).sae, seed=0)
    kernel, bias = result.conv_kernel()
    assert kernel.shape == (kernel_size, D, 8) and bias.shape == (8,) and kernel.dtype == np.float32

    layer = SparseAEConv(kernel_sizes=[kernel_size], units=8)
    x = features[0][None]
    layer.build(x.shape)
    assign_kernels(keras.Sequential([keras.Input((None, D)), layer]), {kernel_size: (kernel, bias)})
    maps = np.asarray(layer(x))[0]
    utterance = features[0]
    windows = np.stack([utterance[t : t + kernel_size].reshape(-1) for t in range(len(utterance) - kernel_size + 1)])
    centre = (kernel_size - 1) // 2  # 'same' padding puts patch t at output frame t + centre
    np.testing.assert_allclose(maps[centre : centre + len(windows)], result.encode(windows), atol=2e-5)


def test_pretraining_lowers_reconstruction_error_and_reaches_target_sparsity():
    config = tiny_config()
    kernels = pretrain_kernels(smooth_features(), config, seed=0)
    assert isinstance(kernels, PretrainedKernels) and isinstance(kernels, dict)
    assert list(kernels) == [3, 4]
    for k, (kernel, bias) in kernels.items():
        assert kernel.shape == (k, D, 8) and bias.shape == (8,)
        h = kernels.history[k]
        assert h["n_patches"] == 3000 and len(h["loss"]) == 12
        assert h["loss"][-1] < h["loss"][0]
        assert h["reconstruction_after"] < 0.7 * h["reconstruction_before"]
        assert h["reconstruction_after"] < 0.7 * h["target_variance"]
        assert abs(h["mean_activation"] - config.sae.sparsity) < 0.02
        assert h["seconds"] > 0


def test_pretraining_is_deterministic_given_the_seed():
    config = tiny_config(epochs=2, patches_per_size=500, kernel_sizes=[3])
    first = pretrain_kernels(smooth_features(), config, seed=0)
    again = pretrain_kernels(smooth_features(), config, seed=0)
    other = pretrain_kernels(smooth_features(), config, seed=1)
    for k in first:
        np.testing.assert_array_equal(again[k][0], first[k][0])
        np.testing.assert_array_equal(again[k][1], first[k][1])
    assert not np.allclose(other[3][0], first[3][0])


def test_no_retracing_across_auto_encoders_and_folds():
    """Every fold pre-trains one auto-encoder per kernel size: each shape's trainer traces its
    graph once or twice per process (reduce_retracing), never once per call, so TensorFlow
    prints no retracing warning in the folds."""
    import logging

    from ser_keras.training import sae_pretrain

    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    logger = tf.get_logger()
    handler = Keep()
    logger.addHandler(handler)
    config = tiny_config(epochs=1, patches_per_size=300, kernel_sizes=[3, 4, 6])
    try:
        for fold in range(4):  # 4 "folds" x 3 kernel sizes of different widths
            pretrain_kernels(smooth_features(n=6, seed=fold), config, seed=fold)
    finally:
        logger.removeHandler(handler)
    assert not [r for r in records if "retracing" in r], records
    for k in (3, 4, 6):
        trainer = sae_pretrain._trainer(k * D, config.sae.hidden_units)
        assert trainer.train_epoch.experimental_get_tracing_count() <= 2
        assert trainer.evaluate.experimental_get_tracing_count() <= 2


def test_graph_loop_is_keras_adam_step_by_step():
    """The one-call-per-epoch graph loop gives the kernels of plain eager training with
    keras.optimizers.Adam, one apply_gradients per batch, on the same initial weights and
    batch order."""
    config = tiny_config(epochs=3, learning_rate=3e-3)
    sae = config.sae
    patches = sample_patches(smooth_features(n=10), 3, 1000, 1.0, seed=0)
    result = train_sparse_autoencoder(patches, 3, sae, seed=5)

    scale, offset, target_scale, target_offset = fit_scaling(patches, 3, sae.clip_std)
    x = (patches * scale + offset).astype(np.float32)
    t = np.clip(patches * target_scale + target_offset, 0.1, 0.9).astype(np.float32)
    n, width = x.shape
    rng = np.random.default_rng(5)
    limit = np.sqrt(6.0 / (width + sae.hidden_units + 1))
    w1 = rng.uniform(-limit, limit, (width, sae.hidden_units)).astype(np.float32)
    w2 = rng.uniform(-limit, limit, (sae.hidden_units, width)).astype(np.float32)
    b1 = np.full(sae.hidden_units, np.log(sae.sparsity / (1 - sae.sparsity)), np.float32)
    mean_target = np.clip(t.mean(axis=0), 1e-3, 1 - 1e-3)
    b2 = np.log(mean_target / (1 - mean_target)).astype(np.float32)
    weights = [tf.Variable(v) for v in (w1, b1, w2, b2)]
    optimizer = keras.optimizers.Adam(learning_rate=sae.learning_rate)
    for _ in range(sae.epochs):
        order = rng.permutation(n)
        for first in range(0, n - sae.batch_size + 1, sae.batch_size):
            index = order[first:first + sae.batch_size]
            with tf.GradientTape() as tape:
                h = tf.sigmoid(x[index] @ weights[0] + weights[1])
                x_hat = tf.sigmoid(h @ weights[2] + weights[3])
                loss = (tf.reduce_mean(tf.reduce_sum(tf.square(x_hat - t[index]), axis=1))
                        + sae.sparsity_weight * kl_sparsity_penalty(h, sae.sparsity)
                        + 0.5 * sae.weight_decay * (tf.reduce_sum(tf.square(weights[0]))
                                                    + tf.reduce_sum(tf.square(weights[2]))))
            optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights))
    np.testing.assert_allclose(result.encoder_weights, weights[0].numpy(), atol=2e-5)
    np.testing.assert_allclose(result.encoder_bias, weights[1].numpy(), atol=2e-5)
    np.testing.assert_allclose(result.decoder_weights, weights[2].numpy(), atol=2e-5)


def test_pretrain_kernels_uses_the_given_patch_sampler():
    calls = []

    def sampler(features, kernel_size, n, subset_fraction, seed):
        calls.append((kernel_size, n, subset_fraction, seed))
        return sample_patches(features, kernel_size, n, subset_fraction, seed)

    pretrain_kernels(smooth_features(n=5), tiny_config(epochs=1, patches_per_size=300), seed=4, patch_sampler=sampler)
    assert calls == [(3, 300, 0.3333, 4), (4, 300, 0.3333, 4)]


def test_assign_kernels_into_a_built_model():
    config = Config()
    config.model.fine_tune_kernels = False  # the paper's frozen kernels
    config.model.lstm_units = 4
    config.sae.kernel_sizes = [3, 4]
    config.sae.hidden_units = 8
    model = build_model(config, 3, D)
    x = np.stack([f[:20] for f in smooth_features(n=2)])
    before = np.asarray(model(x))
    kernels = pretrain_kernels(smooth_features(n=10), tiny_config(epochs=1, patches_per_size=500), seed=0)
    assign_kernels(model, kernels)
    layer = model.get_layer("sae_conv")
    for k in (3, 4):
        np.testing.assert_array_equal(layer.kernels[k].numpy(), kernels[k][0])
        np.testing.assert_array_equal(layer.biases[k].numpy(), kernels[k][1])
    assert not np.allclose(np.asarray(model(x)), before)
    assert not layer.trainable_weights  # still frozen


def test_assign_kernels_errors_name_the_problem():
    config = Config()
    config.model.lstm_units = 4
    config.sae.kernel_sizes = [3, 4]
    config.sae.hidden_units = 8
    model = build_model(config, 3, D)
    good = {3: (np.zeros((3, D, 8)), np.zeros(8)), 4: (np.zeros((4, D, 8)), np.zeros(8))}
    with pytest.raises(SerKerasError, match="sizes"):
        assign_kernels(model, {3: good[3]})
    with pytest.raises(SerKerasError, match="shape"):
        assign_kernels(model, {**good, 4: (np.zeros((4, D, 7)), np.zeros(7))})
    config.model.frontend = "dense"
    with pytest.raises(SerKerasError, match="no SparseAEConv"):
        assign_kernels(build_model(config, 3, D), good)


def test_bad_inputs_raise_one_line_errors():
    sae = tiny_config().sae
    patches = np.ones((10, 3 * D), np.float32)
    patches[0, 0] = np.nan
    with pytest.raises(SerKerasError, match="NaN"):
        train_sparse_autoencoder(patches, 3, sae, seed=0)
    with pytest.raises(SerKerasError, match=r"\(n >= 2, 3\*D\)"):
        train_sparse_autoencoder(np.ones((10, 7), np.float32), 3, sae, seed=0)
    with pytest.raises(SerKerasError, match="sae.sparsity"):
        tiny_config(sparsity=1.5).validate()
    with pytest.raises(SerKerasError, match="no training features"):
        pretrain_kernels([], tiny_config(), seed=0)


# -- real CASIA spectrogram patches ---------------------------------------------------------


def casia_dir() -> pathlib.Path:
    """$SER_KERAS_CASIA, else CASIA under the shared corpora ($SER_KERAS_CORPORA, as every
    real-corpus test), else skip."""
    env = os.environ.get("SER_KERAS_CASIA")
    if not env:
        return corpus_dir("casia")
    if not pathlib.Path(env).is_dir():
        pytest.skip(f"CASIA corpus not found at {env} (SER_KERAS_CASIA)")
    return pathlib.Path(env)


def casia_pca_spectrograms(n_files=60, seed=0):
    """Normalised, PCA-60 log spectrograms of a seeded sample of CASIA utterances."""
    from ser_keras.audio import load_audio
    from ser_keras.features.pca import FramePCA
    from ser_keras.features import frontend_ops

    files = sorted(casia_dir().glob("*/*/*.wav"))
    assert files, "no .wav files under the CASIA directory"
    picked = [files[i] for i in np.random.default_rng(seed).choice(len(files), min(n_files, len(files)), replace=False)]
    features = Config().features
    params = frontend_ops.spectrogram_params(features, 16000)
    specs = [frontend_ops.raw_features(load_audio(path, 16000), params) for path in picked]
    frames = np.concatenate(specs)
    mean, std = frames.mean(axis=0), frames.std(axis=0) + 1e-3
    specs = [(s - mean) / std for s in specs]
    pca = FramePCA(n_components=60, seed=seed).fit(specs)
    return [pca.transform(s).astype(np.float32) for s in specs]


def check_casia_sae(config):
    features = casia_pca_spectrograms()
    start = time.perf_counter()
    kernels = pretrain_kernels(features, config, seed=0)
    seconds = time.perf_counter() - start
    rho = config.sae.sparsity
    for k, (kernel, bias) in kernels.items():
        h = kernels.history[k]
        assert kernel.shape == (k, 60, config.sae.hidden_units)
        assert h["reconstruction_after"] < 0.8 * h["reconstruction_before"], h
        assert h["reconstruction_after"] < 0.8 * h["target_variance"], h
        assert abs(h["mean_activation"] - rho) < 0.2 * rho, h
        assert 0.5 * rho < h["min_unit_activation"] and h["max_unit_activation"] < 2.0 * rho, h
    return kernels, seconds


@pytest.mark.corpus
def test_sae_on_casia_spectrogram_patches():
    config = Config()
    config.sae.patches_per_size = 5000  # the paper's 180 kernels, fewer patches: a fast default test
    # Long enough to converge on its own: the shipped 8 epochs stop early on purpose, since
    # exp3-exp5 fine-tune the kernels afterwards; this checks the auto-encoder itself.
    config.sae.epochs = 15
    kernels, _ = check_casia_sae(config)
    assert sorted(kernels) == [3, 6, 10] and all(v[0].shape[-1] == 60 for v in kernels.values())


@pytest.mark.corpus
@pytest.mark.slow
def test_sae_on_casia_at_full_scale():
    config = Config()
    config.sae.patches_per_size, config.sae.epochs = 20000, 15  # 20k patches per kernel size, to convergence
    _, seconds = check_casia_sae(config)
    assert seconds < 120
