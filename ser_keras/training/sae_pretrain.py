"""Sparse auto-encoder pre-training of the SAE-CNN kernels (eq. 1-3 of the paper).

One auto-encoder per kernel size k (`config.sae.kernel_sizes`, the paper's 3, 6, 10) is
trained on flattened `k x D` patches cut from random positions of a random third of the
training utterances (`ser_keras.data.pipeline.sample_patches`). Its encoder becomes a group
of `config.sae.hidden_units` convolution kernels of `layers.SparseAEConv`.

The auto-encoder (eq. 1-3)::

    h     = sigmoid(W1 x' + b1)                    encoder (eq. 1), H hidden units
    x_hat = sigmoid(W2 h + b2)                     decoder, same form
    loss  = mean_patches ||x_hat - t||^2           reconstruction (eq. 2)
          + mu * sum_j KL(rho || rho_hat_j)        sparsity (eq. 3), rho_hat_j = batch mean of h_j
          + weight_decay / 2 * (||W1||^2 + ||W2||^2)

trained with `keras.optimizers.Adam` on mini-batches (`config.sae`: sparsity rho, sparsity_weight mu,
weight_decay, epochs, batch_size, learning_rate). W1, W2 start U(+-sqrt(6 / (n + H + 1)))
(UFLDL), b1 at logit(rho) so the units start near the target activation, b2 at the logit
of the mean target.

Input scaling and how it is folded into the kernels
---------------------------------------------------
Both affines below are fitted per feature dimension d on the patches (statistics pooled
over the k frames of a patch, so all frames of a kernel treat a feature alike).

* Target (what the sigmoid decoder must reproduce): UFLDL style, mean +- `clip_std`
  standard deviations are mapped onto [0.1, 0.9] and values beyond are clipped,
  `t = clip(0.5 + 0.4 * (x - mean_d) / (clip_std * std_d), 0.1, 0.9)`.
* Encoder input: the standardised patch, `x' = (x - mean_d) / std_d` (zero mean, unit
  variance: better conditioned for Adam than the [0.1, 0.9] values), *not clipped*.

Because the encoder input is an exact affine function `x' = a * x + c` of the raw
features, it folds exactly into the convolution that `SparseAEConv` applies to the unscaled
features::

    W1 x' + b1 = (W1 diag(a)) x + (W1 c + b1)
    kernel[i, d, j] = W1[i*D + d, j] * a_d,   bias[j] = b1[j] + sum_{i,d} W1[i*D + d, j] * c_d

so `sigmoid(conv(kernel, x) + bias)` at a frame equals the trained encoder's hidden
activations on the patch around it (`SAEResult.encode`): nothing is lost or approximated at
inference. (The clip, which is not affine, is applied to the decoder targets only; it
touches the ~0.3% of values beyond 3 std.)

A patch row is the frame-major flattening of a `(k, D)` slice, `x[t:t+k].reshape(-1)`
(as `ser_keras.data.pipeline.sample_patches` returns them).
"""

from __future__ import annotations

import dataclasses
import logging
import time
import typing

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from ser_keras.data.pipeline import sample_patches
from ser_keras.errors import SerKerasError
from ser_keras.layers import SparseAEConv

logger = logging.getLogger(__name__)

TARGET_LOW = 0.1
TARGET_HIGH = 0.9


def kl_sparsity_penalty(activations, rho: float):
    """sum_j KL(rho || rho_hat_j) with rho_hat_j the mean of hidden unit j over axis 0 (eq. 3).

    Works on NumPy arrays and on backend tensors (keras.ops). rho_hat is clipped to
    [1e-7, 1 - 1e-7] so a dead or saturated unit gives a large but finite penalty.
    """
    rho_hat = ops.clip(ops.mean(activations, axis=0), 1e-7, 1.0 - 1e-7)
    kl = rho * ops.log(rho / rho_hat) + (1.0 - rho) * ops.log((1.0 - rho) / (1.0 - rho_hat))
    return ops.sum(kl)


@dataclasses.dataclass
class SAEResult:
    """One trained sparse auto-encoder and how its input was scaled.

    Attributes:
        kernel_size: k, frames per patch.
        input_dim: D, feature dimension per frame.
        encoder_weights: `(k*D, H)`, acting on standardised patches (`x' @ W1 + b1`).
        encoder_bias: `(H,)`.
        decoder_weights: `(H, k*D)`.
        decoder_bias: `(k*D,)`.
        scale, offset: `(k*D,)`, the encoder-input affine `x' = x * scale + offset`.
        history: `loss` per epoch, `reconstruction_before/after` (per-value MSE of the
            decoder on the scaled, clipped targets, over all patches), `target_variance`
            (the MSE of always predicting the mean, for scale), `mean_activation` (mean
            over units of rho_hat_j on all patches) and its `min/max` over units,
            `sparsity` (rho), `n_patches`, `seconds`.
    """

    kernel_size: int
    input_dim: int
    encoder_weights: np.ndarray
    encoder_bias: np.ndarray
    decoder_weights: np.ndarray
    decoder_bias: np.ndarray
    scale: np.ndarray
    offset: np.ndarray
    history: dict

    def encode(self, patches: np.ndarray) -> np.ndarray:
        """Hidden activations `(n, H)` for raw (unscaled) patches `(n, k*D)`."""
        scaled = np.asarray(patches, np.float64) * self.scale + self.offset
        return _sigmoid(scaled @ self.encoder_weights + self.encoder_bias)

    def conv_kernel(self) -> tuple:
        """`(kernel (k, D, H), bias (H,))` with the input affine folded in (float32)."""
        k, d = self.kernel_size, self.input_dim
        kernel = (self.encoder_weights * self.scale[:, None]).reshape(k, d, -1)
        bias = self.encoder_bias + self.offset @ self.encoder_weights
        return kernel.astype(np.float32), bias.astype(np.float32)


class PretrainedKernels(dict):
    """`{kernel_size: (kernel (k, D, H), bias (H,))}`, plus `.results` `{k: SAEResult}`."""

    def __init__(self, results: typing.Mapping[int, SAEResult]):
        super().__init__({k: r.conv_kernel() for k, r in results.items()})
        self.results = dict(results)

    @property
    def history(self) -> dict:
        """`{k: SAEResult.history}`."""
        return {k: r.history for k, r in self.results.items()}


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free logistic


def fit_scaling(patches: np.ndarray, kernel_size: int, clip_std: float) -> tuple:
    """Per-feature-dimension affines fitted on the patches, each as `(k*D,)` vectors.

    Returns `(scale, offset, target_scale, target_offset)`: the encoder input
    `x * scale + offset` is the standardised patch (zero mean, unit variance per feature
    dimension); the decoder target `clip(x * target_scale + target_offset, 0.1, 0.9)` maps
    mean +- clip_std std onto [0.1, 0.9]. Statistics are pooled over the k frames of a
    patch, so every frame of a kernel treats a feature dimension alike.
    """
    n, width = patches.shape
    frames = patches.reshape(n * kernel_size, width // kernel_size).astype(np.float64)
    mean = frames.mean(axis=0)
    std = frames.std(axis=0)
    std = np.where(std > 1e-8 * max(1.0, float(np.abs(mean).max())), std, 1.0)
    scale = 1.0 / std
    offset = -mean / std
    half_range = (TARGET_HIGH - TARGET_LOW) / 2.0
    target_scale = half_range / (clip_std * std)
    target_offset = (TARGET_LOW + TARGET_HIGH) / 2.0 - target_scale * mean
    return tuple(np.tile(v, kernel_size) for v in (scale, offset, target_scale, target_offset))


def train_sparse_autoencoder(patches: np.ndarray, kernel_size: int, sae_config, seed: int) -> SAEResult:
    """Train one sparse auto-encoder on raw patches `(n, k*D)`; see the module docstring."""
    patches = np.asarray(patches, dtype=np.float32)
    if patches.ndim != 2 or patches.shape[0] < 2 or patches.shape[1] % kernel_size:
        raise SerKerasError(
            f"SAE pre-training (kernel {kernel_size}): expected patches (n >= 2, {kernel_size}*D), "
            f"got shape {patches.shape}"
        )
    if not np.all(np.isfinite(patches)):
        raise SerKerasError(f"SAE pre-training (kernel {kernel_size}): patches contain NaN or inf")
    cfg = sae_config  # its values are checked by Config.validate()
    start = time.perf_counter()
    n, width = patches.shape
    hidden = cfg.hidden_units
    rho, mu, decay = float(cfg.sparsity), float(cfg.sparsity_weight), float(cfg.weight_decay)

    scale, offset, target_scale, target_offset = fit_scaling(patches, kernel_size, cfg.clip_std)
    inputs = (patches * scale + offset).astype(np.float32)
    targets = np.clip(patches * target_scale + target_offset, TARGET_LOW, TARGET_HIGH).astype(np.float32)

    rng = np.random.default_rng(seed)
    limit = np.sqrt(6.0 / (width + hidden + 1))  # UFLDL initialisation
    w1 = rng.uniform(-limit, limit, (width, hidden)).astype(np.float32)
    # Hidden units start near the target activation rho, so the sparsity term does not
    # dominate (and saturate the units) at the start.
    b1 = np.full(hidden, np.log(rho / (1 - rho)), np.float32)
    w2 = rng.uniform(-limit, limit, (hidden, width)).astype(np.float32)
    # The decoder starts at the mean target, so training does not spend its first epochs
    # learning the mean.
    mean_target = np.clip(targets.mean(axis=0), 1e-3, 1 - 1e-3)
    b2 = np.log(mean_target / (1 - mean_target)).astype(np.float32)
    trainer = _trainer(width, hidden)
    trainer.reset((w1, b1, w2, b2), cfg.learning_rate)
    hyper = tf.constant([rho, mu, decay], tf.float32)
    x_all, t_all = tf.constant(inputs), tf.constant(targets)

    history = {"loss": []}
    before = float(trainer.evaluate(x_all, t_all)[0])
    batch = min(cfg.batch_size, n)
    for _ in range(cfg.epochs):
        # Whole batches only: a tiny last batch would give a noisy rho_hat.
        steps = n // batch
        batches = rng.permutation(n).astype(np.int32)[: steps * batch].reshape(steps, batch)
        history["loss"].append(float(trainer.train_epoch(x_all, t_all, tf.constant(batches), hyper)))

    after, activation = trainer.evaluate(x_all, t_all)
    w1, b1, w2, b2 = (w.numpy() for w in trainer.weights)
    activation = activation.numpy()
    history.update(
        reconstruction_before=before,
        reconstruction_after=float(after),
        target_variance=float(np.mean(np.var(targets, axis=0))),
        mean_activation=float(activation.mean()),
        min_unit_activation=float(activation.min()),
        max_unit_activation=float(activation.max()),
        sparsity=rho,
        n_patches=int(n),
        seconds=time.perf_counter() - start,
    )
    result = SAEResult(
        kernel_size=kernel_size,
        input_dim=width // kernel_size,
        encoder_weights=w1.astype(np.float64),
        encoder_bias=b1.astype(np.float64),
        decoder_weights=w2.astype(np.float64),
        decoder_bias=b2.astype(np.float64),
        scale=scale,
        offset=offset,
        history=history,
    )
    return result


_TRAINERS: dict = {}


def _trainer(width: int, hidden: int) -> "_AutoEncoderTrainer":
    """The process' trainer for auto-encoders of this shape (one per kernel size in practice),
    reused by every fold: its graph is traced once, never once per auto-encoder."""
    if (width, hidden) not in _TRAINERS:
        _TRAINERS[width, hidden] = _AutoEncoderTrainer(width, hidden)
    return _TRAINERS[width, hidden]


class _AutoEncoderTrainer:
    """The weights of one auto-encoder shape (`w1, b1, w2, b2` as Keras variables),
    `keras.optimizers.Adam` over them, and two tf.functions on them:

    ``train_epoch(x, t, batches, hyper) -> mean loss`` runs one Adam step per row of
    ``batches`` (row indices into ``x`` / ``t``) inside the graph: one call per epoch, because a
    Python call per step cost several times the step's arithmetic. ``hyper`` is
    ``(rho, mu, weight_decay)``, a tensor, so another config does not retrace.
    ``evaluate(x, t) -> (per-value reconstruction MSE, per-unit mean activation)``.

    ``reset(initial weights, learning_rate)`` starts a new auto-encoder: the weights take their
    initial values, Adam its initial state (zero moments, step 0) and the learning rate.
    """

    def __init__(self, width: int, hidden: int):
        shapes = {"w1": (width, hidden), "b1": (hidden,), "w2": (hidden, width), "b2": (width,)}
        self.weights = [keras.Variable(np.zeros(shape, np.float32), name=name) for name, shape in shapes.items()]
        self.optimizer = keras.optimizers.Adam()
        self.optimizer.build(self.weights)
        self._initial_state = [v.numpy() for v in self.optimizer.variables]
        self.train_epoch = tf.function(self._train_epoch, reduce_retracing=True)
        self.evaluate = tf.function(self._evaluate, reduce_retracing=True)

    def reset(self, weights: typing.Sequence[np.ndarray], learning_rate: float) -> None:
        for variable, value in zip(self.weights, weights):
            variable.assign(value)
        for variable, value in zip(self.optimizer.variables, self._initial_state):
            variable.assign(value)
        self.optimizer.learning_rate = learning_rate

    def _forward(self, x):
        w1, b1, w2, b2 = self.weights
        h = tf.sigmoid(x @ w1 + b1)
        return h, tf.sigmoid(h @ w2 + b2)

    def _loss(self, x, t, hyper):
        rho, mu, decay = tf.unstack(hyper)
        h, x_hat = self._forward(x)
        reconstruction = tf.reduce_mean(tf.reduce_sum(tf.square(x_hat - t), axis=1))
        w1, _, w2, _ = self.weights
        weight_decay = 0.5 * decay * (tf.reduce_sum(tf.square(w1)) + tf.reduce_sum(tf.square(w2)))
        return reconstruction + mu * kl_sparsity_penalty(h, rho) + weight_decay

    def _train_epoch(self, x, t, batches, hyper):
        total = tf.constant(0.0)
        for index in batches:  # autograph: a tf.while_loop over the rows
            with tf.GradientTape() as tape:
                loss = self._loss(tf.gather(x, index), tf.gather(t, index), hyper)
            self.optimizer.apply(tape.gradient(loss, self.weights), self.weights)
            total += loss
        return total / tf.cast(tf.maximum(tf.shape(batches)[0], 1), tf.float32)

    def _evaluate(self, x, t):
        h, x_hat = self._forward(x)
        return tf.reduce_mean(tf.square(x_hat - t)), tf.reduce_mean(h, axis=0)


def pretrain_kernels(
    features_list: typing.Sequence[np.ndarray],
    config,
    seed: int,
    patch_sampler: typing.Optional[typing.Callable] = None,
    progress: bool = False,
) -> PretrainedKernels:
    """Learn the SparseAEConv kernels from training-fold features.

    Args:
        features_list: per-utterance `(frames, D)` arrays of the training fold (the
            normalised PCA spectrogram for exp3/exp4).
        config: the run `Config`; `config.sae` is read.
        seed: seeds the patch sampling (same subset of utterances for every kernel size)
            and each auto-encoder's initialisation and shuffling.
        patch_sampler: `f(features, kernel_size, n, subset_fraction, seed) -> (n, k*D)`;
            default `ser_keras.data.pipeline.sample_patches`.
        progress: print one line per kernel size.

    Returns:
        `PretrainedKernels`: a dict `{k: (kernel (k, D, H) float32, bias (H,) float32)}` in
        the order of `config.sae.kernel_sizes`, with `.results[k]` (`SAEResult`) and
        `.history[k]` (reconstruction error before/after, mean activation, seconds, ...).
    """
    features_list = [f for f in features_list if f is not None]
    if not features_list:
        raise SerKerasError("SAE pre-training: no training features")
    dims = {np.shape(f)[-1] for f in features_list}
    if len(dims) != 1 or any(np.ndim(f) != 2 for f in features_list):
        raise SerKerasError(f"SAE pre-training: features must be (frames, D) with one D, got D in {sorted(dims)}")
    patch_sampler = patch_sampler or sample_patches
    sae = config.sae
    results = {}
    for k in sae.kernel_sizes:
        patches = np.asarray(
            patch_sampler(
                features_list,
                kernel_size=k,
                n=sae.patches_per_size,
                subset_fraction=sae.subset_fraction,
                seed=seed,
            )
        )
        result = train_sparse_autoencoder(patches, k, sae, seed=seed * 1000 + k)
        results[k] = result
        h = result.history
        message = (
            f"SAE k={k}: {h['n_patches']} patches, reconstruction MSE {h['reconstruction_before']:.4f}"
            f" -> {h['reconstruction_after']:.4f} (target variance {h['target_variance']:.4f}),"
            f" mean activation {h['mean_activation']:.3f} (rho {h['sparsity']}), {h['seconds']:.1f}s"
        )
        logger.info(message)
        if progress:
            print(message, flush=True)
    return PretrainedKernels(results)


def _sae_conv_layers(model) -> list:
    found, stack = [], [model]
    while stack:
        layer = stack.pop()
        if isinstance(layer, SparseAEConv):
            found.append(layer)
        stack.extend(getattr(layer, "layers", []) or [])
    return found


def assign_kernels(model, kernels: typing.Mapping[int, tuple]) -> None:
    """Copy pre-trained `{k: (kernel, bias)}` into the model's built `SparseAEConv` layer(s)."""
    layers = _sae_conv_layers(model)
    if not layers:
        raise SerKerasError(f"assign_kernels: model '{model.name}' has no SparseAEConv layer")
    for layer in layers:
        if not layer.built:
            raise SerKerasError(f"assign_kernels: layer '{layer.name}' is not built yet")
        if sorted(int(k) for k in kernels) != sorted(layer.kernel_sizes):
            raise SerKerasError(
                f"assign_kernels: kernels for sizes {sorted(kernels)} do not match layer "
                f"'{layer.name}' sizes {layer.kernel_sizes} (sae.kernel_sizes)"
            )
        for k in layer.kernel_sizes:
            kernel, bias = kernels[k]
            kernel, bias = np.asarray(kernel), np.asarray(bias)
            expected = tuple(layer.kernels[k].shape)
            if kernel.shape != expected or bias.shape != (expected[-1],):
                raise SerKerasError(
                    f"assign_kernels: kernel {k} has shape {kernel.shape}/{bias.shape}, layer "
                    f"'{layer.name}' expects {expected}/({expected[-1]},) (input_dim, sae.hidden_units)"
                )
            layer.kernels[k].assign(kernel.astype(layer.kernels[k].dtype))
            layer.biases[k].assign(bias.astype(layer.biases[k].dtype))
