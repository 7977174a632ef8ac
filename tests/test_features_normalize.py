"""Neutral-speech normalisation and frame PCA: statistics come from the training fold only."""

import numpy as np
import pytest

from ser_keras.config import Config
from ser_keras.errors import SerKerasError
from ser_keras.features.normalize import FeatureNormalizer
from ser_keras.features.pca import FramePCA

D = 5


def corpus(seed=0):
    """Train speakers A, B (neutral + angry), test speaker C; each speaker has its own offset."""
    rng = np.random.default_rng(seed)
    offsets = {"A": 1.0, "B": -2.0, "C": 5.0}
    features, labels, speakers = [], [], []
    for speaker, offset in offsets.items():
        for i in range(6):
            label = "neutral" if i % 2 == 0 else "angry"
            shift = offset + (3.0 if label == "angry" else 0.0)
            features.append(rng.normal(shift, 1.0 + 0.5 * (speaker == "B"), size=(30 + i, D)))
            labels.append(label)
            speakers.append(speaker)
    return features, np.array(labels), np.array(speakers)


def split(features, labels, speakers, test_speaker="C"):
    train = [i for i, s in enumerate(speakers) if s != test_speaker]
    test = [i for i, s in enumerate(speakers) if s == test_speaker]
    pick = lambda idx: ([features[i] for i in idx], labels[idx], speakers[idx])  # noqa: E731
    return pick(train), pick(test)


def stats(arrays):
    frames = np.concatenate(arrays)
    return frames.mean(axis=0), frames.std(axis=0)


def test_speaker_stats_come_from_that_speakers_neutral_training_frames():
    (train_x, train_y, train_s), _ = split(*corpus())
    norm = FeatureNormalizer("neutral_speaker", "speaker_all", "neutral").fit(train_x, train_y, train_s)
    for speaker in ("A", "B"):
        neutral = [x for x, y, s in zip(train_x, train_y, train_s) if s == speaker and y == "neutral"]
        mean, std = stats(neutral)
        np.testing.assert_allclose(norm.speaker_stats_[speaker][0], mean)
        np.testing.assert_allclose(norm.speaker_stats_[speaker][1], std)
        out = norm.transform(neutral, [speaker] * len(neutral))
        np.testing.assert_allclose(np.concatenate(out).mean(axis=0), 0.0, atol=1e-5)
        np.testing.assert_allclose(np.concatenate(out).std(axis=0), 1.0, atol=1e-5)
    pooled = [x for x, y in zip(train_x, train_y) if y == "neutral"]
    np.testing.assert_allclose(norm.global_mean_, stats(pooled)[0])
    np.testing.assert_allclose(norm.global_std_, stats(pooled)[1])
    assert norm.reference_ == "neutral"
    assert "C" not in norm.speaker_stats_


def test_test_fold_data_never_moves_the_fitted_statistics():
    """Would fail if test utterances (or emotional training frames) leaked into the fit."""
    (train_x, train_y, train_s), (test_x, test_y, test_s) = split(*corpus())
    norm = FeatureNormalizer("neutral_speaker", "speaker_all", "neutral").fit(train_x, train_y, train_s)
    fitted = norm.to_arrays()
    huge = [x + 1e6 for x in test_x]
    train_out = norm.transform(train_x, train_s)
    # Transform train and (shifted) test utterances together, as a careless caller might.
    both = norm.transform(train_x + huge, list(train_s) + list(test_s))
    for key, value in norm.to_arrays().items():
        np.testing.assert_array_equal(value, fitted[key])
    for a, b in zip(train_out, both[: len(train_x)]):
        np.testing.assert_array_equal(a, b)  # training speakers are unaffected by test data
    assert np.abs(np.concatenate(norm.transform(train_x, train_s))).max() < 50
    # The angry training frames do not count either.
    shifted = [x + 1e6 if y == "angry" else x for x, y in zip(train_x, train_y)]
    again = FeatureNormalizer("neutral_speaker", "speaker_all", "neutral").fit(shifted, train_y, train_s)
    np.testing.assert_allclose(again.global_mean_, norm.global_mean_)


def test_unseen_speaker_fallbacks():
    (train_x, train_y, train_s), (test_x, _, test_s) = split(*corpus())
    own = FeatureNormalizer("neutral_speaker", "speaker_all", "neutral").fit(train_x, train_y, train_s)
    out = np.concatenate(own.transform(test_x, test_s))
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-5)  # C's own (all-frame) stats
    np.testing.assert_allclose(out.std(axis=0), 1.0, atol=1e-5)
    # speaker_all uses only that speaker's frames, not the other utterances in the call.
    mixed = own.transform(train_x + test_x, list(train_s) + list(test_s))
    np.testing.assert_allclose(np.concatenate(mixed[len(train_x):]), out, rtol=1e-6)

    pooled = FeatureNormalizer("neutral_speaker", "global", "neutral").fit(train_x, train_y, train_s)
    out = pooled.transform(test_x, test_s)
    for x, y in zip(test_x, out):
        np.testing.assert_allclose(y, (x - pooled.global_mean_) / pooled.global_std_, rtol=1e-5)
    # No speakers given (serving): pooled statistics.
    np.testing.assert_allclose(own.transform(test_x[:1])[0], (test_x[0] - own.global_mean_) / own.global_std_,
                               rtol=1e-5)


def test_neutral_global_and_none_modes():
    (train_x, train_y, train_s), (test_x, _, test_s) = split(*corpus())
    norm = FeatureNormalizer("neutral_global", "speaker_all", "neutral").fit(train_x, train_y, train_s)
    assert norm.speaker_stats_ == {}
    for x, y in zip(train_x, norm.transform(train_x, train_s)):
        np.testing.assert_allclose(y, (x - norm.global_mean_) / norm.global_std_, rtol=1e-5)
    none = FeatureNormalizer("none").fit(train_x, train_y, train_s)
    out = none.transform(test_x, test_s)
    assert out[0].dtype == np.float32 and out[0] is not test_x[0]
    np.testing.assert_allclose(out[0], test_x[0], rtol=1e-6)


def test_training_fold_without_neutral_uses_all_frames():
    (train_x, train_y, train_s), _ = split(*corpus())
    labels = np.where(train_y == "neutral", "calm", train_y)
    norm = FeatureNormalizer("neutral_speaker", "speaker_all", "neutral").fit(train_x, labels, train_s)
    assert norm.reference_ == "all"
    np.testing.assert_allclose(norm.global_mean_, stats(train_x)[0])
    a_frames = [x for x, s in zip(train_x, train_s) if s == "A"]
    np.testing.assert_allclose(norm.speaker_stats_["A"][0], stats(a_frames)[0])


def test_std_is_floored():
    x = [np.ones((20, 3)), np.ones((10, 3))]
    norm = FeatureNormalizer("neutral_global", std_floor=1e-3).fit(x, ["neutral", "neutral"], ["s", "s"])
    assert np.all(norm.global_std_ == 1e-3)
    out = norm.transform([np.full((4, 3), 1.0 + 1e-6)])
    assert np.all(np.isfinite(out[0])) and np.allclose(out[0], 1e-3)


def test_save_and_load_arrays(tmp_path):
    (train_x, train_y, train_s), (test_x, _, test_s) = split(*corpus())
    norm = FeatureNormalizer("neutral_speaker", "global", "neutral").fit(train_x, train_y, train_s)
    np.savez(tmp_path / "norm.npz", **norm.to_arrays())
    with np.load(tmp_path / "norm.npz", allow_pickle=False) as arrays:
        loaded = FeatureNormalizer.from_arrays(dict(arrays))
    assert (loaded.mode, loaded.fallback, loaded.reference_) == ("neutral_speaker", "global", "neutral")
    for a, b in zip(norm.transform(train_x + test_x, list(train_s) + list(test_s)),
                    loaded.transform(train_x + test_x, list(train_s) + list(test_s))):
        np.testing.assert_array_equal(a, b)


def test_from_config_and_bad_settings():
    config = Config()
    config.features.normalization = "neutral_global"
    config.data.neutral_label = "N"
    norm = FeatureNormalizer.from_config(config)
    assert (norm.mode, norm.neutral_label, norm.std_floor) == ("neutral_global", "N", config.features.norm_std_floor)
    with pytest.raises(SerKerasError, match="features.normalization"):
        FeatureNormalizer("per_utterance")
    with pytest.raises(SerKerasError, match="features.speaker_fallback"):
        FeatureNormalizer("neutral_speaker", "nearest")
    with pytest.raises(SerKerasError, match="before fit"):
        FeatureNormalizer().transform([np.zeros((2, 2))], ["a"])


# ---------------------------------------------------------------------------------- PCA


def correlated(n, seed, offset=0.0, dim=8):
    rng = np.random.default_rng(seed)
    mixing = np.random.default_rng(99).normal(size=(dim, dim))
    return (rng.normal(size=(n, dim)) * np.linspace(3, 0.1, dim)) @ mixing + offset


def test_pca_is_fitted_on_training_frames_only():
    train = [correlated(50, i) for i in range(8)]
    test = [correlated(50, 100 + i, offset=1e4) for i in range(3)]
    pca = FramePCA(3, seed=0).fit(train)
    np.testing.assert_allclose(pca.mean_, np.concatenate(train).mean(axis=0), rtol=1e-5, atol=1e-5)
    before = (pca.mean_.copy(), pca.components_.copy())
    projected = pca.transform(test)
    np.testing.assert_array_equal(pca.mean_, before[0])
    np.testing.assert_array_equal(pca.components_, before[1])
    assert len(projected) == 3 and projected[0].shape == (50, 3) and projected[0].dtype == np.float32


def test_pca_matches_sklearn_up_to_sign():
    import sklearn.decomposition as sklearn_decomposition
    frames = correlated(400, 1)
    ours = FramePCA(4, seed=0).fit([frames[:150], frames[150:]])
    theirs = sklearn_decomposition.PCA(4).fit(frames)
    for k in range(4):
        cosine = abs(np.dot(ours.components_[:, k], theirs.components_[k]))
        assert cosine == pytest.approx(1.0, abs=1e-4)
    np.testing.assert_allclose(ours.explained_variance_, theirs.explained_variance_, rtol=1e-4)
    y = ours.transform(frames)
    np.testing.assert_allclose(y, (frames - ours.mean_) @ ours.components_, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ours.components_.T @ ours.components_, np.eye(4), atol=1e-5)
    assert np.all(np.diff(ours.explained_variance_) <= 0)


def test_pca_subsample_is_seeded():
    frames = [correlated(300, i) for i in range(5)]
    a = FramePCA(3, seed=7, max_frames=500).fit(frames)
    b = FramePCA(3, seed=7, max_frames=500).fit(frames)
    c = FramePCA(3, seed=8, max_frames=500).fit(frames)
    full = FramePCA(3, seed=7).fit(frames)
    np.testing.assert_array_equal(a.components_, b.components_)
    assert not np.array_equal(a.mean_, c.mean_)
    for k in range(2):  # the subsample still finds the dominant directions
        assert abs(np.dot(a.components_[:, k], full.components_[:, k])) > 0.99


def test_pca_round_trip_and_errors():
    frames = [correlated(40, i) for i in range(3)]
    pca = FramePCA(2, seed=0).fit(frames)
    loaded = FramePCA.from_arrays(pca.to_arrays())
    np.testing.assert_array_equal(loaded.transform(frames[0]), pca.transform(frames[0]))
    with pytest.raises(SerKerasError, match="features.pca_components"):
        FramePCA(9).fit(frames)
    with pytest.raises(SerKerasError, match="before fit"):
        FramePCA(2).transform(frames[0])
    config = Config()
    assert FramePCA.from_config(config).n_components == 60


def test_speaker_mode_uses_all_of_each_speakers_frames_and_no_labels():
    """Mode ``speaker`` (what every shipped experiment uses): a training speaker by the mean/std
    of ALL of their training frames, an unseen speaker by all of their frames in the call, the
    pooled statistics over all training frames; labels play no part."""
    (train_x, train_y, train_s), (test_x, _, test_s) = split(*corpus())
    norm = FeatureNormalizer("speaker", "speaker_all", "neutral").fit(train_x, train_y, train_s)
    for speaker in ("A", "B"):
        mine = [x for x, s in zip(train_x, train_s) if s == speaker]
        np.testing.assert_allclose(norm.speaker_stats_[speaker][0], stats(mine)[0])
        np.testing.assert_allclose(norm.speaker_stats_[speaker][1], stats(mine)[1])
    np.testing.assert_allclose(norm.global_mean_, stats(train_x)[0])
    np.testing.assert_allclose(norm.global_std_, stats(train_x)[1])
    assert "C" not in norm.speaker_stats_
    out = np.concatenate(norm.transform(test_x, list(test_s)))  # C by C's own frames
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=0), 1.0, atol=1e-4)
    relabelled = FeatureNormalizer("speaker", "speaker_all", "neutral").fit(train_x, np.array(["x"] * len(train_y)),
                                                                            train_s)
    for key, value in norm.to_arrays().items():
        if key.startswith(("speaker", "global")):
            np.testing.assert_array_equal(value, relabelled.to_arrays()[key])


def test_speaker_mode_a_huge_test_utterance_moves_no_training_statistic():
    (train_x, train_y, train_s), (test_x, _, test_s) = split(*corpus())
    norm = FeatureNormalizer("speaker", "speaker_all", "neutral").fit(train_x, train_y, train_s)
    fitted = norm.to_arrays()
    train_out = norm.transform(train_x, list(train_s))
    both = norm.transform(train_x + [test_x[0] + 1e6] + test_x[1:], list(train_s) + list(test_s))
    for key, value in norm.to_arrays().items():
        np.testing.assert_array_equal(value, fitted[key])
    for a, b in zip(train_out, both[: len(train_x)]):
        np.testing.assert_array_equal(a, b)
