"""tf.data pipeline: padded batches, masking, determinism, resumable epochs; SAE patch stream."""

import numpy as np
import pytest

import keras  # a required dependency: a broken install fails, never skips

from ser_keras.data.pipeline import ZERO_FRAME_EPSILON, make_dataset, patch_dataset, sample_patches  # noqa: E402
from ser_keras.errors import SerKerasError  # noqa: E402

D = 4


def utterances(n=12, seed=0, lo=5, hi=40):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(lo, hi, size=n)
    return [rng.normal(size=(int(t), D)).astype(np.float32) + 1.0 for t in lengths], np.arange(n) % 3


def batches(dataset):
    return [tuple(np.asarray(part) for part in item) if isinstance(item, tuple) else np.asarray(item)
            for item in dataset]


def test_padded_batches_keep_order_for_evaluation():
    features, labels = utterances()
    out = batches(make_dataset(features, labels, batch_size=5, training=False, seed=0))
    assert [len(y) for _, y in out] == [5, 5, 2]
    row = 0
    for x, y in out:
        assert x.dtype == np.float32 and y.dtype == np.int32
        assert x.shape[1] == max(len(f) for f in features[row:row + len(y)])
        for i in range(len(y)):
            n = len(features[row + i])
            np.testing.assert_array_equal(x[i, :n], features[row + i])
            assert np.all(x[i, n:] == 0.0)  # zero padding
            assert y[i] == labels[row + i]
        row += len(y)


def test_masking_sees_exactly_the_real_frames():
    features, labels = utterances(n=6)
    features[2][3] = 0.0  # a real frame that happens to be all zeros
    x, _ = next(iter(make_dataset(features, labels, batch_size=6, training=False, seed=0)))
    mask = keras.layers.Masking(0.0).compute_mask(x).numpy()
    lengths = [len(f) for f in features]
    np.testing.assert_array_equal(mask.sum(axis=1), lengths)
    assert x.numpy()[2, 3, 0] == np.float32(ZERO_FRAME_EPSILON)
    assert features[2][3, 0] == 0.0  # the caller's array is untouched


def test_training_shuffle_is_seeded_and_reshuffles_each_epoch():
    features, labels = utterances(n=20)
    ids = [np.full((len(f), D), i + 1, np.float32) for i, f in enumerate(features)]

    def order(dataset):
        return [int(x[i, 0, 0]) - 1 for x, _ in dataset for i in range(x.shape[0])]

    a = make_dataset(ids, labels, batch_size=4, training=True, seed=3)
    b = make_dataset(ids, labels, batch_size=4, training=True, seed=3)
    c = make_dataset(ids, labels, batch_size=4, training=True, seed=4)
    first, second = order(a), order(a)
    assert sorted(first) == list(range(20))
    assert first == order(b) and second == order(b)  # same seed, same epochs
    assert first != second  # a new order every epoch
    assert first != order(c)
    assert order(make_dataset(ids, labels, 4, training=True, seed=3, shuffle=False)) == list(range(20))


def test_variants_show_each_utterance_once_per_epoch_as_a_drawn_version():
    """Three versions of 20 utterances: every epoch has each utterance exactly once, with its
    label, as one of its versions; the draws change between epochs and repeat for the seed."""
    _, labels = utterances(n=20)
    versions = [[np.full((3, D), 100 * v + i, np.float32) for i in range(20)] for v in range(3)]
    features = versions[0] + versions[1] + versions[2]

    def epoch(dataset):
        seen = [(int(x[i, 0, 0]), int(y[i])) for x, y in dataset for i in range(x.shape[0])]
        assert sorted(value % 100 for value, _ in seen) == list(range(20))
        assert all(label == labels[value % 100] for value, label in seen)
        return [value // 100 for value, _ in sorted(seen, key=lambda item: item[0] % 100)]  # by utterance

    a = make_dataset(features, labels, batch_size=4, training=True, seed=3, variants=3)
    first, second = epoch(a), epoch(a)
    assert set(first) == {0, 1, 2} and first != second
    b = make_dataset(features, labels, batch_size=4, training=True, seed=3, variants=3)
    assert (epoch(b), epoch(b)) == (first, second)
    with pytest.raises(ValueError, match="variants"):
        make_dataset(features[:59], labels, batch_size=4, training=True, seed=3, variants=3)
    with pytest.raises(ValueError, match="variants"):
        make_dataset(features, None, batch_size=4, training=False, seed=3, variants=3)


def test_max_frames_centre_crop():
    features = [np.arange(100 * D, dtype=np.float32).reshape(100, D) + 1, np.ones((10, D), np.float32)]
    x, _ = next(iter(make_dataset(features, [0, 1], 2, training=False, seed=0, max_frames=30)))
    assert x.shape == (2, 30, D)
    np.testing.assert_array_equal(x.numpy()[0], features[0][35:65])
    np.testing.assert_array_equal(x.numpy()[1, :10], features[1])


def test_inputs_only_and_bad_inputs():
    features, _ = utterances(n=3)
    x = next(iter(make_dataset(features, None, 3, training=False, seed=0)))
    assert x.shape[0] == 3
    with pytest.raises(ValueError, match="integer class ids"):
        make_dataset(features, ["a", "b", "c"], 3, training=False, seed=0)
    with pytest.raises(ValueError, match="labels"):
        make_dataset(features, [0, 1], 3, training=False, seed=0)
    with pytest.raises(SerKerasError):
        make_dataset([], [], 3, training=False, seed=0)


def test_dataset_trains_a_masked_model():
    features, labels = utterances(n=8)
    inputs = keras.Input((None, D), name="features")
    h = keras.layers.Masking(0.0)(inputs)
    h = keras.layers.LSTM(3)(h)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(h))
    model.compile("adam", "sparse_categorical_crossentropy")
    history = model.fit(make_dataset(features, labels, 4, training=True, seed=0), epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][0])


# ------------------------------------------------------------------------------ patches


def id_utterances(n=30, dim=6, seed=0):
    """Frame t of utterance u holds u * 1000 + t in every channel: patches reveal their source."""
    rng = np.random.default_rng(seed)
    out = []
    for u in range(n):
        t = int(rng.integers(4, 40))
        out.append(np.repeat((u * 1000 + np.arange(t, dtype=np.float32))[:, None], dim, axis=1))
    return out


@pytest.mark.parametrize("k", [3, 6, 10])
def test_patch_shapes_and_contents(k):
    features = id_utterances()
    patches = sample_patches(features, kernel_size=k, n=500, subset_fraction=1 / 3, seed=0)
    assert patches.shape == (500, k * 6) and patches.dtype == np.float32
    cube = patches.reshape(500, k, 6)
    assert np.all(cube == cube[:, :, :1])  # time-major flattening: row t holds frame t
    source = (cube[:, 0, 0] // 1000).astype(int)
    start = cube[:, 0, 0] - source * 1000
    np.testing.assert_array_equal(cube[:, :, 0], (source * 1000 + start)[:, None] + np.arange(k))  # contiguous
    for s, first in zip(source, start):
        assert first + k <= len(features[s])  # a whole patch inside its utterance
    assert len(set(source)) <= 10  # a third of 30 utterances


def test_patches_are_reproducible_and_share_the_subset_across_sizes():
    features = id_utterances()
    a = sample_patches(features, 6, 300, 1 / 3, seed=5)
    np.testing.assert_array_equal(a, sample_patches(features, 6, 300, 1 / 3, seed=5))
    assert not np.array_equal(a, sample_patches(features, 6, 300, 1 / 3, seed=6))
    used = {k: set((sample_patches(features, k, 2000, 1 / 3, seed=5)[:, 0] // 1000).astype(int)) for k in (3, 6)}
    assert used[3] >= used[6] or used[6] >= used[3]
    subset = np.sort(np.random.default_rng([5, 0]).choice(30, 10, replace=False))
    assert used[3] <= set(subset.tolist())


def test_short_utterances_and_errors():
    features = [np.ones((2, 3), np.float32), np.ones((12, 3), np.float32)]
    assert sample_patches(features, 10, 5, 0.5, seed=0).shape == (5, 30)
    with pytest.raises(SerKerasError, match="exceeds the longest"):
        sample_patches(features, 20, 5, 1.0, seed=0)
    with pytest.raises(SerKerasError, match="subset_fraction"):
        sample_patches(features, 3, 5, 0.0, seed=0)


def test_patch_dataset():
    features = id_utterances()
    dataset = patch_dataset(features, 3, n=100, subset_fraction=1 / 3, seed=0, batch_size=32)
    items = list(dataset)
    assert [x.shape[0] for x, _ in items] == [32, 32, 32, 4]
    x, target = items[0]
    assert x.shape == (32, 18)
    np.testing.assert_array_equal(x.numpy(), target.numpy())
    again = [x.numpy() for x, _ in patch_dataset(features, 3, 100, 1 / 3, seed=0, batch_size=32)]
    for a, b in zip(again, items):
        np.testing.assert_array_equal(a, b[0].numpy())
    plain = next(iter(patch_dataset(features, 3, 100, 1 / 3, seed=0, batch_size=8, autoencoder=False)))
    assert plain.shape == (8, 18)
