"""tf.data pipelines: padded utterance batches for the models, random patches for the SAE.

``make_dataset`` turns a list of (frames, D) feature arrays (already normalised / PCA'd) and
integer labels into batches ``(x (batch, T, D) float32, y (batch,) int32)``:

- **zero padding** to the longest utterance of the batch: the models derive their mask with
  ``keras.layers.Masking(0.0)`` (a frame is padding iff all its values are 0). So that a real
  frame is never mistaken for padding, any all-zero real frame gets ``ZERO_FRAME_EPSILON`` in
  its first channel (e.g. a frame exactly at the PCA mean). Input noise, if any, must be added
  after the mask is taken (the model's ``GaussianNoise`` layer after ``Masking``).
- ``max_frames``: utterances longer than this are centre-cropped (deterministic).
- training: shuffled with ``seed`` (reshuffled every epoch, the same sequence of epochs for the
  same seed); evaluation keeps the input order (predictions line up with the manifest).
- ``variants``: training only: the feature list holds ``variants`` blocks of the same
  utterances (the originals, then each augmented version, e.g. frequency-warped), and every
  epoch shows each utterance once, as one of its versions drawn at random (seeded, a fresh draw
  every epoch), so augmentation adds variety without adding steps per epoch.
- ``epochs``: training only: the dataset is those epochs back to back, each epoch's order
  (shuffle and version draws) a pure function of (seed, epoch) — so a run resumed at epoch k
  (``range(k, n)``) sees exactly the batches an uninterrupted one sees from epoch k on. Pass
  ``steps_per_epoch=epoch_steps(...)`` to ``fit`` (the dataset is not one epoch long).
- ``prefetch`` last.

The arrays are concatenated into one tensor and each element is a slice of it, so the dataset
holds one copy of the features and the graph stays small.

``sample_patches`` / ``patch_dataset`` give the sparse auto-encoder its training data: random
``kernel_size x D`` patches from a seeded random ``subset_fraction`` (a third, as in the paper)
of the training utterances, flattened row-major to ``kernel_size * D`` (time-major: entry
``t * D + d``, so a learned weight vector reshapes to a ``(kernel_size, D)`` conv kernel).
"""

from __future__ import annotations

import typing

import numpy as np
import tensorflow as tf

from ser_keras.errors import SerKerasError

ZERO_FRAME_EPSILON = 1e-6


def _prepare(features: typing.Sequence[np.ndarray], max_frames: typing.Optional[int]) -> tuple:
    """(values (total, D) float32, starts (N,), lengths (N,)) after cropping and the zero guard."""
    arrays = [np.asarray(x, dtype=np.float32) for x in features]
    if not arrays:
        raise SerKerasError("make_dataset: no utterances")
    if any(a.ndim != 2 for a in arrays):
        raise ValueError("make_dataset: every feature array must be (frames, D)")
    dims = {a.shape[1] for a in arrays}
    if len(dims) != 1:
        raise ValueError(f"make_dataset: feature arrays disagree on D: {sorted(dims)}")
    if any(a.shape[0] == 0 for a in arrays):
        raise ValueError("make_dataset: an utterance has no frames")
    if max_frames is not None:
        if int(max_frames) < 1:
            raise SerKerasError(f"features.max_frames: must be >= 1 or null, got {max_frames}")
        arrays = [_centre_crop(a, int(max_frames)) for a in arrays]
    lengths = np.array([a.shape[0] for a in arrays], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    values = np.concatenate(arrays, axis=0)
    zero = ~values.any(axis=1)
    values[zero, 0] = ZERO_FRAME_EPSILON
    return values, starts, lengths


def _centre_crop(x: np.ndarray, max_frames: int) -> np.ndarray:
    if x.shape[0] <= max_frames:
        return x
    start = (x.shape[0] - max_frames) // 2
    return x[start:start + max_frames]


def make_dataset(
    features: typing.Sequence[np.ndarray],
    labels: typing.Optional[typing.Sequence[int]],
    batch_size: int,
    training: bool,
    seed: int,
    shuffle: typing.Optional[bool] = None,
    max_frames: typing.Optional[int] = None,
    variants: int = 1,
    epochs: typing.Optional[typing.Sequence[int]] = None,
) -> tf.data.Dataset:
    """Padded batches of utterances.

    Args:
        features: (frames, D) arrays, one per utterance.
        labels: integer class ids, one per utterance, or None for inputs only.
        batch_size: utterances per batch (the paper updates every 10 sequences).
        training: shuffle (unless `shuffle` says otherwise).
        seed: the shuffle seed (config.train.seed).
        shuffle: None -> `training`.
        max_frames: centre-crop longer utterances to this many frames (None keeps all).
        variants: `features` is this many consecutive blocks of ``len(labels)`` utterances
            (block 0 the originals, the others versions of them with the same labels); each
            epoch draws one version per utterance. Needs labels and `training`.
        epochs: training only: the epoch indices (e.g. ``range(start, stop)``) this dataset
            covers, back to back; each epoch's shuffle and draws depend on (seed, epoch) only.
            None: one pass is one epoch, reshuffled (a seeded stream) on every pass.

    Returns:
        tf.data.Dataset of ``(x, y)`` (or ``x`` when labels is None) with x
        ``(batch, frames, D)`` float32 zero-padded and y ``(batch,)`` int32.
    """
    if int(batch_size) < 1:
        raise SerKerasError(f"batch_size: must be >= 1, got {batch_size}")
    shuffle = training if shuffle is None else shuffle
    values, starts, lengths = _prepare(features, max_frames)
    dim = values.shape[1]
    table = tf.constant(values)
    variants = int(variants)
    if variants < 1 or len(starts) % variants or (variants > 1 and (labels is None or not training)):
        raise ValueError(f"make_dataset: {len(starts)} utterances cannot form {variants} labelled training variants")
    count = len(starts) // variants
    if labels is not None:
        labels = np.asarray(labels)
        if labels.ndim != 1 or labels.shape[0] != count:
            raise ValueError(f"make_dataset: {count} utterances but labels of shape {labels.shape}")
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError("make_dataset: labels must be integer class ids (see corpora.label_order)")
        dataset = tf.data.Dataset.from_tensor_slices((np.arange(count), labels.astype(np.int32)))
    else:
        dataset = tf.data.Dataset.from_tensor_slices(np.arange(count))

    starts, lengths = tf.constant(starts), tf.constant(lengths)

    def take(index, *rest):
        x = table[starts[index]:starts[index] + lengths[index]]
        return (x, rest[0]) if rest else x

    x_shape = tf.TensorShape([None, dim])
    padded_shapes = (x_shape, tf.TensorShape([])) if labels is not None else x_shape
    padding_values = (tf.constant(0.0), tf.constant(0, tf.int32)) if labels is not None else tf.constant(0.0)

    def batch(dataset):
        dataset = dataset.map(take, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return dataset.padded_batch(int(batch_size), padded_shapes=padded_shapes, padding_values=padding_values)

    if epochs is not None:
        if not training or labels is None:
            raise ValueError("make_dataset: epochs= needs labelled training data")
        label_table = tf.constant(labels.astype(np.int32))

        def one_epoch(epoch):
            # Stateless: the same (seed, epoch) gives the same order and draws in any process.
            order = tf.range(count, dtype=tf.int64)
            if shuffle:
                order = tf.random.experimental.stateless_shuffle(order, seed=tf.stack([int(seed), epoch]))
            chosen = order
            if variants > 1:  # a seed of its own for the draws: (seed, -1 - epoch) never meets a shuffle seed
                draws = tf.random.stateless_uniform([count], seed=tf.stack([int(seed), -1 - epoch]),
                                                    minval=0, maxval=variants, dtype=tf.int64)
                chosen = order + count * draws
            return batch(tf.data.Dataset.from_tensor_slices((chosen, tf.gather(label_table, order))))

        dataset = tf.data.Dataset.from_tensor_slices(np.asarray(list(epochs), np.int64)).flat_map(one_epoch)
        return dataset.prefetch(tf.data.AUTOTUNE)

    if shuffle:
        dataset = dataset.shuffle(count, seed=int(seed), reshuffle_each_iteration=True)
    if variants > 1:  # one version per utterance, drawn afresh each epoch, the same draws per seed
        draws = tf.data.Dataset.random(seed=int(seed) + 1, rerandomize_each_iteration=True)
        dataset = tf.data.Dataset.zip(dataset, draws).map(
            lambda pair, draw: (pair[0] + count * tf.cast(draw % variants, tf.int64), pair[1]))
    dataset = batch(dataset)
    return dataset.prefetch(tf.data.AUTOTUNE)


def epoch_steps(n_utterances: int, batch_size: int) -> int:
    """Batches in one epoch of ``make_dataset(..., epochs=...)``."""
    return -(-int(n_utterances) // int(batch_size))


# ------------------------------------------------------------------------------- patches


def sample_patches(features: typing.Sequence[np.ndarray], kernel_size: int, n: int,
                   subset_fraction: float, seed: int) -> np.ndarray:
    """`n` random (kernel_size, D) patches, flattened to float32 (n, kernel_size * D).

    The utterances are a seeded random `subset_fraction` of `features` (at least one; the same
    subset for every kernel size with the same seed). Patch positions are uniform over all
    positions in the subset where a whole patch fits; utterances shorter than `kernel_size`
    are skipped (if none of the subset is long enough, every utterance is used).
    """
    kernel_size, n = int(kernel_size), int(n)
    if kernel_size < 1:
        raise SerKerasError(f"sae.kernel_sizes: kernel size must be >= 1, got {kernel_size}")
    if n < 1:
        raise SerKerasError(f"sae.patches_per_size: must be >= 1, got {n}")
    if not 0.0 < float(subset_fraction) <= 1.0:
        raise SerKerasError(f"sae.subset_fraction: must be in (0, 1], got {subset_fraction}")
    arrays = [np.asarray(x, dtype=np.float32) for x in features]
    if not arrays:
        raise SerKerasError("sample_patches: no training utterances")
    count = max(1, int(round(float(subset_fraction) * len(arrays))))
    subset = np.sort(np.random.default_rng([int(seed), 0]).choice(len(arrays), size=count, replace=False))
    chosen = [i for i in subset if arrays[i].shape[0] >= kernel_size]
    if not chosen:
        chosen = [i for i in range(len(arrays)) if arrays[i].shape[0] >= kernel_size]
    if not chosen:
        longest = max(a.shape[0] for a in arrays)
        raise SerKerasError(
            f"sae.kernel_sizes: kernel size {kernel_size} exceeds the longest utterance ({longest} frames)")
    pieces = [arrays[i] for i in chosen]
    positions = np.array([p.shape[0] - kernel_size + 1 for p in pieces], dtype=np.int64)
    frame_starts = np.concatenate([[0], np.cumsum([p.shape[0] for p in pieces])[:-1]])
    position_starts = np.concatenate([[0], np.cumsum(positions)[:-1]])
    rng = np.random.default_rng([int(seed), 1, kernel_size])
    picks = rng.integers(0, int(positions.sum()), size=n)
    owner = np.searchsorted(position_starts, picks, side="right") - 1
    first = frame_starts[owner] + (picks - position_starts[owner])
    flat = np.concatenate(pieces, axis=0)
    patches = flat[first[:, None] + np.arange(kernel_size)[None, :]]  # (n, k, D)
    return patches.reshape(n, kernel_size * flat.shape[1])


def patch_dataset(features: typing.Sequence[np.ndarray], kernel_size: int, n: int, subset_fraction: float,
                  seed: int, batch_size: int = 256, shuffle: bool = True, autoencoder: bool = True) -> tf.data.Dataset:
    """`sample_patches` as a batched tf.data.Dataset of ``(x, x)`` (``x`` if not autoencoder),
    x ``(batch, kernel_size * D)`` float32, shuffled every epoch with `seed`."""
    patches = sample_patches(features, kernel_size, n, subset_fraction, seed)
    dataset = tf.data.Dataset.from_tensor_slices(patches)
    if shuffle:
        dataset = dataset.shuffle(len(patches), seed=int(seed), reshuffle_each_iteration=True)
    dataset = dataset.batch(int(batch_size))
    if autoencoder:
        dataset = dataset.map(lambda x: (x, x), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)
