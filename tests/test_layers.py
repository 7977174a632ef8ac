"""Custom layers: the harness (config, shapes, masking, .keras, fit) and NumPy references."""

import math

import numpy as np
import pytest

from ser_keras.layers import AttentionPooling, BlockPooling, SparseAEConv, StatisticsPooling  # noqa: E402
from ser_keras.layers.block_pooling import num_blocks  # noqa: E402
from tests.layer_harness import run_layer_test  # noqa: E402

D = 5
LENGTHS = (23, 13, 2)  # 13 frames: 7 windows of 2, a case where padding could add a block


def padded_batch(lengths=LENGTHS, dim=D, seed=0):
    """Zero-padded (batch, frames, dim) features and their (batch, frames) mask."""
    rng = np.random.default_rng(seed)
    frames = max(lengths)
    x = np.zeros((len(lengths), frames, dim), np.float32)
    mask = np.zeros((len(lengths), frames), bool)
    for i, n in enumerate(lengths):
        x[i, :n] = rng.normal(size=(n, dim)) + 0.5
        mask[i, :n] = True
    return x, mask


# -- harness -----------------------------------------------------------------------------


@pytest.mark.parametrize("fine_tune", [False, True])
def test_sparse_ae_conv_harness(fine_tune):
    x, mask = padded_batch()
    run_layer_test(
        SparseAEConv,
        {"kernel_sizes": [3, 6], "units": 4, "fine_tune": fine_tune},
        x,
        mask=mask,
        expected_mask=lambda m: m,
        expected_output_shape=(3, 23, 8),
        expected_num_trainable_weights=4 if fine_tune else 0,
        expected_num_non_trainable_weights=0 if fine_tune else 4,
    )


@pytest.mark.parametrize("pool_window,block_windows,block_stride", [(2, 3, 2), (3, 2, 2)])
def test_block_pooling_harness(pool_window, block_windows, block_stride):
    x, mask = padded_batch()
    layer = BlockPooling(pool_window, block_windows, block_stride)
    windows = math.ceil(23 / pool_window)
    blocks = num_blocks(windows, block_windows, block_stride)

    def expected_mask(m):
        return np.asarray(layer.compute_mask(x, m))  # checked against NumPy in its own test

    run_layer_test(
        BlockPooling,
        {"pool_window": pool_window, "block_windows": block_windows, "block_stride": block_stride},
        x,
        mask=mask,
        expected_mask=expected_mask,
        expected_output_shape=(3, blocks, 2 * D),
        expected_num_trainable_weights=0,
        expected_num_non_trainable_weights=0,
        run_training_check=True,
    )


@pytest.mark.parametrize("return_attention", [False, True])
def test_attention_pooling_harness(return_attention):
    x, mask = padded_batch()
    shapes = [(3, D), (3, 23)] if return_attention else (3, D)
    run_layer_test(
        AttentionPooling,
        {"return_attention": return_attention},
        x,
        mask=mask,
        expected_mask=lambda m: [None, None] if return_attention else None,
        expected_output_shape=shapes,
        expected_num_trainable_weights=1,
        expected_num_non_trainable_weights=0,
    )


@pytest.mark.parametrize("deltas, statistics", [(False, 2), (True, 4)])
def test_statistics_pooling_harness(deltas, statistics):
    x, mask = padded_batch()
    run_layer_test(
        StatisticsPooling,
        {"deltas": deltas},
        x,
        mask=mask,
        expected_mask=lambda m: None,
        expected_output_shape=(3, D * statistics),
        expected_num_trainable_weights=0,
        expected_num_non_trainable_weights=0,
    )


# -- NumPy references ----------------------------------------------------------------------


def test_statistics_pooling_matches_numpy():
    x, mask = padded_batch()
    out = np.asarray(StatisticsPooling(deltas=True)(x, mask=mask))
    for i, n in enumerate(LENGTHS):
        valid = x[i, :n].astype(np.float64)
        steps = np.diff(valid, axis=0)
        spread = lambda v: np.sqrt(v.var(0) + 1e-6)  # noqa: E731 - the layer's epsilon
        expected = np.concatenate([valid.mean(0), spread(valid), np.abs(steps).mean(0), spread(steps)])
        np.testing.assert_allclose(out[i], expected, rtol=2e-4, atol=2e-4)
    # No valid frame: zeros, not NaN.
    empty = np.asarray(StatisticsPooling()(x[:1], mask=np.zeros_like(mask[:1])))
    assert np.all(empty == 0.0)


def test_statistics_pooling_without_valid_frames_pools_zeros_with_finite_gradients():
    import tensorflow as tf

    x, mask = padded_batch()
    mask[2] = False  # no valid frame at all
    inputs = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        out = StatisticsPooling(deltas=True)(inputs, mask=mask)
    gradient = tape.gradient(out, inputs).numpy()
    assert np.all(out.numpy()[2] == 0.0)
    assert np.all(np.isfinite(gradient))
    assert np.all(gradient[1, LENGTHS[1]:] == 0.0)  # padding gets no gradient


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def numpy_same_conv(x, kernel, bias):
    """'same' 1-D cross-correlation: left (k-1)//2, right k//2 zero frames."""
    k = kernel.shape[0]
    padded = np.pad(x, (((k - 1) // 2, k // 2), (0, 0)))
    out = np.stack([np.einsum("kd,kdh->h", padded[t : t + k], kernel) for t in range(len(x))])
    return out + bias


def test_sparse_ae_conv_matches_numpy_convolution():
    x, mask = padded_batch()
    rng = np.random.default_rng(3)
    layer = SparseAEConv(kernel_sizes=[3, 6, 1], units=4)
    layer.build(x.shape)
    weights = {}
    for k in (3, 6, 1):
        weights[k] = (rng.normal(size=(k, D, 4)).astype(np.float32), rng.normal(size=4).astype(np.float32))
        layer.kernels[k].assign(weights[k][0])
        layer.biases[k].assign(weights[k][1])
    out = np.asarray(layer(x, mask=mask))
    for i, n in enumerate(LENGTHS):
        want = np.concatenate([sigmoid(numpy_same_conv(x[i, :n], *weights[k])) for k in (3, 6, 1)], axis=-1)
        np.testing.assert_allclose(out[i, :n], want, rtol=1e-5, atol=1e-6)
        assert np.all(out[i, n:] == 0)


def numpy_block_pooling(x, n, pool, block, stride):
    """Block statistics of one utterance's first n frames, by the paper's recipe."""
    frames = x[:n]
    windows = np.stack([frames[w * pool : (w + 1) * pool].mean(axis=0) for w in range(math.ceil(n / pool))])
    out = []
    j = 0
    while True:
        chunk = windows[j * stride : j * stride + block]
        out.append(np.concatenate([chunk.mean(axis=0), chunk.var(axis=0)]))
        if j * stride + block >= len(windows):
            break
        j += 1
    return np.stack(out)


@pytest.mark.parametrize("pool,block,stride", [(3, 10, 5), (2, 3, 2), (1, 4, 4), (4, 2, 1)])
def test_block_pooling_matches_numpy(pool, block, stride):
    x, mask = padded_batch(lengths=(97, 40, 31, 5, 1), dim=3, seed=1)
    layer = BlockPooling(pool, block, stride)
    out = np.asarray(layer(x, mask=mask))
    block_mask = np.asarray(layer.compute_mask(x, mask))
    assert out.shape == (5, num_blocks(math.ceil(97 / pool), block, stride), 6)
    for i, n in enumerate((97, 40, 31, 5, 1)):
        want = numpy_block_pooling(x[i], n, pool, block, stride)
        np.testing.assert_allclose(out[i, : len(want)], want, rtol=1e-5, atol=1e-6)
        assert block_mask[i].tolist() == [True] * len(want) + [False] * (out.shape[1] - len(want))
        assert np.all(out[i, len(want) :] == 0)


def test_block_pooling_without_mask_and_short_input():
    x = np.random.default_rng(0).normal(size=(2, 7, 3)).astype(np.float32)
    out = np.asarray(BlockPooling(3, 10, 5)(x))
    assert out.shape == (2, 1, 6)  # shorter than one block: still one block
    np.testing.assert_allclose(out[0], numpy_block_pooling(x[0], 7, 3, 10, 5), rtol=1e-5, atol=1e-6)


def numpy_attention(h, theta, n):
    scores = h[:n] @ theta
    alpha = np.exp(scores - scores.max())
    alpha /= alpha.sum()
    return alpha @ h[:n], alpha


def test_attention_pooling_matches_numpy_and_ignores_padding():
    x, mask = padded_batch()
    layer = AttentionPooling(return_attention=True)
    layer.build(x.shape)
    theta = np.random.default_rng(5).normal(size=D).astype(np.float32)
    layer.theta.assign(theta)
    # Padding that would dominate an unmasked softmax must still get exactly zero weight.
    x_loud = np.where(mask[..., None], x, 100.0).astype(np.float32)
    y, alpha = (np.asarray(t) for t in layer(x_loud, mask=mask))
    for i, n in enumerate(LENGTHS):
        want_y, want_alpha = numpy_attention(x[i], theta, n)
        np.testing.assert_allclose(y[i], want_y, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(alpha[i, :n], want_alpha, rtol=1e-5, atol=1e-7)
        assert np.all(alpha[i, n:] == 0.0)
        assert alpha[i].sum() == pytest.approx(1.0, abs=1e-6)


def test_attention_pooling_without_mask_and_float16():
    x = np.random.default_rng(0).normal(size=(2, 4, 3)).astype(np.float32)
    layer = AttentionPooling(return_attention=True)
    y, alpha = layer(x)
    np.testing.assert_allclose(np.asarray(alpha).sum(axis=1), 1.0, rtol=1e-6)
    half = AttentionPooling(return_attention=True, dtype="float16")
    mask = np.array([[True, True, False, False], [True, True, True, True]])
    y16, alpha16 = half(x.astype("float16"), mask=mask)
    alpha16 = np.asarray(alpha16, np.float32)
    assert np.all(np.isfinite(alpha16)) and np.all(alpha16[0, 2:] == 0)
    np.testing.assert_allclose(alpha16.sum(axis=1), 1.0, atol=2e-3)


def test_theta_initialised_uniform_within_scale():
    layer = AttentionPooling()
    layer.build((None, None, 400))
    theta = layer.theta.numpy()
    assert np.all(np.abs(theta) <= 0.1) and theta.std() > 0.03


# -- argument validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: SparseAEConv(kernel_sizes=[], units=4),
        lambda: SparseAEConv(kernel_sizes=[3, 3], units=4),
        lambda: SparseAEConv(kernel_sizes=[0], units=4),
        lambda: SparseAEConv(kernel_sizes=[3], units=0),
        lambda: BlockPooling(pool_window=0),
        lambda: BlockPooling(block_windows=2, block_stride=3),
        lambda: BlockPooling(pool_window=1.5),
        lambda: StatisticsPooling(epsilon=0.0),
    ],
)
def test_invalid_arguments_raise_value_error_quoting_the_value(make):
    with pytest.raises(ValueError, match="received"):
        make()


def test_sparse_ae_conv_needs_known_channels():
    with pytest.raises(ValueError, match="channels"):
        SparseAEConv([3], 2).build((None, None, None))
