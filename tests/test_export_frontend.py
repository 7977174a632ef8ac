"""The TensorFlow front end is the twin of the NumPy feature pipeline."""

import numpy as np
import pytest

from tests.conftest import corpus_dir
from ser_keras.config import FeatureConfig
from ser_keras.errors import SerKerasError
from ser_keras.export import frontend as fe
from ser_keras.features.augment import warp_frequency
from ser_keras.features.spectrogram import frame_count, log_spectrogram

# float32 FFTs on both sides (scipy.fft / tf.signal.rfft) differ by rounding only; in the log
# domain that is ~1e-6 relative to the frame's loudest bin, more only in the quietest bins
# (where log(power) is dominated by rounding of a near-zero power). After normalisation and PCA
# (a weighted average over 256 bins) the difference is below 1e-4 relative to the feature scale.
SPEC_ATOL = 2e-3
FEATURE_RTOL = 1e-4


def _params(seed=0, config=None, k=60):
    config = config or FeatureConfig()
    rng = np.random.default_rng(seed)
    d = config.n_bins
    stats = dict(norm_mean=rng.normal(-8, 2, d), norm_std=rng.uniform(1, 3, d),
                 pca_mean=rng.normal(0, 0.1, d),
                 pca_components=np.linalg.qr(rng.normal(size=(d, d)))[0][:, :k])
    return fe.params_from_arrays(config, stats, sample_rate=16000)


def _numpy_features(waveform, params, config=None):
    return fe.apply_stats_numpy(log_spectrogram(waveform, config or FeatureConfig(), params.sample_rate), params)


def _tf_features(waveform, params):
    return fe.tf_frontend(np.asarray(waveform, np.float32)[None], params).numpy()[0]


def _signals():
    rng = np.random.default_rng(1)
    t = np.arange(16000) / 16000
    yield "noise", (0.1 * rng.normal(size=16000)).astype(np.float32)
    yield "tone", (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    yield "silence", np.zeros(8000, np.float32)
    yield "shorter than a frame", (0.1 * rng.normal(size=100)).astype(np.float32)
    yield "exactly one frame", (0.1 * rng.normal(size=320)).astype(np.float32)
    yield "one frame and a bit", (0.1 * rng.normal(size=479)).astype(np.float32)
    yield "int16-like quiet speech", (np.round(rng.normal(size=12345) * 30) / 32768).astype(np.float32)


@pytest.mark.parametrize("name,waveform", list(_signals()), ids=[n for n, _ in _signals()])
def test_tf_log_spectrogram_matches_numpy(name, waveform):
    params = _params()
    config = FeatureConfig()
    expected = log_spectrogram(waveform, config, 16000)
    got = fe.tf_log_spectrogram(waveform[None], params).numpy()[0]
    assert got.shape == expected.shape == (frame_count(len(waveform), config, 16000), config.n_bins)
    np.testing.assert_allclose(got, expected, atol=SPEC_ATOL, rtol=0)
    # Typical bins agree far better than the worst one.
    assert np.median(np.abs(got - expected)) < 1e-5


@pytest.mark.parametrize("name,waveform", list(_signals()), ids=[n for n, _ in _signals()])
def test_tf_frontend_matches_numpy_pipeline(name, waveform):
    params = _params()
    expected = _numpy_features(waveform, params)
    got = _tf_features(waveform, params)
    assert got.shape == expected.shape
    scale = max(1.0, float(np.abs(expected).max()))
    assert np.abs(got - expected).max() <= FEATURE_RTOL * scale


def test_test_time_views_sit_side_by_side_and_match_numpy():
    """With test_warp_factors the front end gives every view's k features side by side: the
    plain view first (what it gives without views), then the normalised bins warped before
    the PCA; NumPy and TensorFlow agree on all of them, with pooled or given statistics."""
    config = FeatureConfig(test_warp_factors=[0.9, 1.1])
    plain, params = _params(), _params(config=config)
    assert params.n_views == 3 and params.output_dim == plain.output_dim == 60
    waveform = (0.1 * np.random.default_rng(3).normal(size=8000)).astype(np.float32)
    raw = log_spectrogram(waveform, config, 16000)
    expected = fe.apply_stats_numpy(raw, params)
    assert expected.shape == (raw.shape[0], 3 * 60)
    np.testing.assert_array_equal(fe.split_views(expected, 3)[0], fe.apply_stats_numpy(raw, plain))
    normalised = (raw - plain.norm_mean) / plain.norm_std
    for view, factor in zip(fe.split_views(expected, 3)[1:], (0.9, 1.1)):
        warped = (warp_frequency(normalised, factor) - plain.pca_mean) @ plain.pca_components
        np.testing.assert_allclose(view, warped, atol=1e-3)
    got = _tf_features(waveform, params)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= FEATURE_RTOL * max(1.0, float(np.abs(expected).max()))
    stats = (raw.mean(axis=0), raw.std(axis=0) + 0.5)
    given = fe.tf_frontend(waveform[None], params, stats=stats).numpy()[0]
    expected = fe.apply_stats_numpy(raw, params, stats)
    assert np.abs(given - expected).max() <= FEATURE_RTOL * max(1.0, float(np.abs(expected).max()))


def test_tf_frontend_matches_numpy_on_demo_corpus(demo_files):
    from ser_keras.audio import load_audio

    params = _params(seed=3)
    worst = 0.0
    for path in demo_files[::24]:
        waveform = load_audio(path, 16000)
        expected = _numpy_features(waveform, params)
        got = _tf_features(waveform, params)
        worst = max(worst, np.abs(got - expected).max() / max(1.0, np.abs(expected).max()))
    assert worst <= FEATURE_RTOL


@pytest.mark.corpus
def test_tf_frontend_matches_numpy_on_real_speech():
    from ser_keras.audio import load_audio

    root = corpus_dir("casia")
    files = sorted(root.rglob("*.wav"))[::100]
    assert files
    params = _params(seed=4)
    for path in files:
        waveform = load_audio(path, 16000)
        expected = _numpy_features(waveform, params)
        got = _tf_features(waveform, params)
        assert np.abs(got - expected).max() <= FEATURE_RTOL * max(1.0, np.abs(expected).max()), path


def test_batch_rows_are_independent():
    params = _params()
    rng = np.random.default_rng(2)
    batch = (0.1 * rng.normal(size=(3, 4000))).astype(np.float32)
    together = fe.tf_frontend(batch, params).numpy()
    for row in range(3):
        np.testing.assert_allclose(together[row], _tf_features(batch[row], params), atol=1e-5)


def test_other_sample_rate_grid():
    """At 8 kHz the frame is 160 samples and the hop 80 — both sides round the same way."""
    config = FeatureConfig(n_fft=256, n_bins=128)
    rng = np.random.default_rng(5)
    stats = dict(norm_mean=np.zeros(128), norm_std=np.ones(128))
    params = fe.params_from_arrays(config, stats, sample_rate=8000)
    assert (params.frame, params.hop) == (160, 80)
    waveform = (0.1 * rng.normal(size=3000)).astype(np.float32)
    expected = log_spectrogram(waveform, config, 8000)
    got = fe.tf_frontend(waveform[None], params).numpy()[0]
    np.testing.assert_allclose(got, expected, atol=SPEC_ATOL)


def test_frame_counts_match_numpy():
    params = _params()
    lengths = np.array([0, 1, 319, 320, 321, 479, 480, 16000, 16001])
    got = fe.tf_frame_counts(lengths, params).numpy()
    expected = [frame_count(n, FeatureConfig(), 16000) for n in lengths]
    assert got.tolist() == expected
    assert [params.frame_count(n) for n in lengths] == expected


def test_identity_pca_is_skipped():
    config = FeatureConfig()
    d = 20
    params = fe.params_from_arrays(config, dict(norm_mean=np.zeros(d), norm_std=np.ones(d),
                                                pca_mean=np.zeros(d), pca_components=np.eye(d)),
                                   sample_rate=16000, kind="lld")
    assert params.pca_components is None and params.output_dim == d


@pytest.mark.parametrize("stats,message", [
    (dict(norm_mean=np.zeros(10), norm_std=np.ones(10)), "norm_mean"),
    (dict(norm_mean=np.zeros(256)), "both 'norm_mean' and 'norm_std'"),
    (dict(norm_mean=np.zeros(256), norm_std=np.zeros(256)), "zero or negative"),
    (dict(pca_mean=np.zeros(256), pca_components=np.zeros((10, 5))), "pca_components"),
])
def test_bad_statistics_are_one_line_errors(stats, message):
    with pytest.raises(SerKerasError, match=message) as info:
        fe.params_from_arrays(FeatureConfig(), stats, sample_rate=16000)
    assert "\n" not in str(info.value)


def test_missing_frontend_npz_names_the_file(tmp_path):
    from ser_keras.features.frontend import FittedFrontEnd
    from ser_keras.rundir import FoldDir

    with pytest.raises(SerKerasError, match="frontend.npz: front-end statistics not found"):
        FittedFrontEnd.read_serving_arrays(FoldDir(tmp_path))


# ------------------------------------------------------------------ statistics from frames


def test_given_statistics_match_numpy_per_row_or_shared():
    """stats=(mean, std): [D] for every row (a speaker's) or [batch, D] (one per row)."""
    params = _params()
    rng = np.random.default_rng(7)
    batch = (0.2 * rng.normal(size=(2, 4000))).astype(np.float32)
    raws = [log_spectrogram(row, FeatureConfig(), 16000) for row in batch]
    shared = (raws[0].mean(axis=0), raws[0].std(axis=0) + 0.5)
    per_row = (np.stack([r.mean(axis=0) for r in raws]), np.stack([r.std(axis=0) + 0.5 for r in raws]))
    for stats, pick in ((shared, lambda s, i: s), (per_row, lambda s, i: s[i])):
        for per_row_loop in (False, True):
            got = fe.tf_frontend(batch, params, per_row=per_row_loop, stats=stats).numpy()
            for i, raw in enumerate(raws):
                expected = fe.apply_stats_numpy(raw, params, (pick(stats[0], i), pick(stats[1], i)))
                assert np.abs(got[i] - expected).max() <= FEATURE_RTOL * max(1.0, np.abs(expected).max())


def test_tf_moments_and_stats_match_numpy():
    import tensorflow as tf

    from ser_keras.features.normalize import frame_stats

    rng = np.random.default_rng(3)
    raw = rng.normal(-5, 2, size=(2, 30, 7)).astype(np.float32)
    raw[1, :, 0] = 4.0  # a constant dimension: its std is floored
    n_frames = tf.constant([30, 12])
    count, total, squares = fe.tf_frame_moments(raw, n_frames)
    mean, std = fe.tf_mean_std(count, total, squares, 1e-3)
    for row, n in enumerate((30, 12)):
        ref = frame_stats([raw[row, :n]], 1e-3)
        np.testing.assert_allclose(mean.numpy()[row], ref[0], rtol=1e-10)
        np.testing.assert_allclose(std.numpy()[row], ref[1], rtol=1e-9)
    both = fe.tf_mean_std(tf.reduce_sum(count), tf.reduce_sum(total, 0), tf.reduce_sum(squares, 0), 1e-3)
    ref = frame_stats([raw[0], raw[1, :12]], 1e-3)
    np.testing.assert_allclose(both[0].numpy(), ref[0], rtol=1e-10)
    np.testing.assert_allclose(both[1].numpy(), ref[1], rtol=1e-9)
    assert std.numpy()[1, 0] == 1e-3


# ---------------------------------------------------------------------- level and speech


def _level_params(**changes):
    import dataclasses

    return dataclasses.replace(_params(config=FeatureConfig(level_normalization=True)), **changes)


def test_level_reference_numpy_and_tf_agree_and_move_by_the_log_gain(demo_files):
    import tensorflow as tf

    from ser_keras.features.level import level_normalize, level_reference, top_count

    rng = np.random.default_rng(5)
    raw = rng.normal(-6, 3, size=(2, 37, 11)).astype(np.float32)
    n_frames = np.array([37, 9])
    got = fe.tf_level_normalize(tf.constant(raw), tf.constant(n_frames)).numpy()
    for row, n in enumerate(n_frames):
        # Padded frames do not enter the reference, and the reference is the loudest fifth's.
        reference = level_reference(raw[row, :n])
        x = raw[row, :n].astype(np.float64)
        loudest = np.sort(np.log(np.exp(x).mean(axis=1)))[::-1][:top_count(n)]
        assert reference == pytest.approx(loudest.mean(), abs=1e-12) and top_count(n) == -(-n // 5)
        np.testing.assert_allclose(got[row, :n], level_normalize(raw[row, :n]), atol=1e-6)
    # Shift-equivariant: a constant added to every bin moves the reference by exactly it.
    for shift in (-4.6, 0.3, 7.0):
        assert level_reference(raw[0] + shift) - level_reference(raw[0]) == pytest.approx(shift, abs=1e-5)
        shifted = fe.tf_level_normalize(tf.constant(raw + np.float32(shift)), tf.constant(n_frames)).numpy()
        np.testing.assert_allclose(shifted, got, atol=1e-5)
    # A gain g on speech adds 2 ln g to the log power: the reference moves by 2 ln g.
    speech = _real_or_demo_speech(demo_files)
    config = FeatureConfig()
    base = level_reference(log_spectrogram(speech, config, 16000))
    for gain in (0.5, 0.1, 0.05):
        moved = level_reference(log_spectrogram(speech * np.float32(gain), config, 16000)) - base
        assert moved == pytest.approx(2 * np.log(gain), abs=1e-3)


def test_relative_level_floor_makes_the_features_gain_invariant(demo_files):
    """Without the relative floor the cells a low gain pushes to the absolute log floor keep
    the features moving with the gain (by up to 2 ln(1/g)); with it every cell stays within a
    few hundredths of the gain-1 value down to gain 0.05, and the TF twin agrees."""
    import tensorflow as tf

    from ser_keras.features.level import level_normalize, relative_floor

    speech, config = _real_or_demo_speech(demo_files), FeatureConfig()
    raw = {gain: log_spectrogram(speech * np.float32(gain), config, 16000) for gain in (1.0, 0.5, 0.1, 0.05)}
    without = level_normalize(raw[1.0])
    assert np.abs(level_normalize(raw[0.05]) - without).max() > 1.0
    base = level_normalize(raw[1.0], 60.0)
    assert base.min() == pytest.approx(relative_floor(60.0)) and (base > base.min()).mean() > 0.5
    for gain in (0.5, 0.1, 0.05):
        assert np.abs(level_normalize(raw[gain], 60.0) - base).max() < 0.05, gain
    n = raw[0.1].shape[0]
    got = fe.tf_level_normalize(tf.constant(raw[0.1][None]), tf.constant([n]), 60.0).numpy()[0]
    np.testing.assert_allclose(got, level_normalize(raw[0.1], 60.0), atol=1e-5)


def _real_or_demo_speech(demo_files):
    from ser_keras.audio import load_audio
    from tests.conftest import SHARED_CORPORA

    files = sorted((SHARED_CORPORA / "emodb").rglob("*.wav"))[:1]
    if not files:
        files = demo_files[:1]
    return load_audio(files[0], 16000)


def test_level_normalised_tf_frontend_matches_numpy_padded_rows():
    """A zero-padded batch with valid frame counts (as serve_lengths builds it) gives each row
    what the NumPy front end gives the unpadded recording, level reference included."""
    from ser_keras.features.level import level_normalize

    params = _level_params()
    rng = np.random.default_rng(2)
    rows = [(0.1 * rng.normal(size=n) * np.linspace(0.1, 1, n)).astype(np.float32) for n in (9000, 4100)]
    batch = np.zeros((2, 9000), np.float32)
    batch[1, :4100] = rows[1]
    batch[0] = rows[0]
    n_frames = np.array([params.frame_count(len(r)) for r in rows], np.int32)
    for per_row in (False, True):
        got = fe.tf_frontend(batch, params, per_row=per_row, n_frames=n_frames).numpy()
        for i, row in enumerate(rows):
            expected = fe.apply_stats_numpy(level_normalize(log_spectrogram(row, FeatureConfig(), 16000)), params)
            valid = got[i, :n_frames[i]]
            assert np.abs(valid - expected).max() <= FEATURE_RTOL * max(1.0, np.abs(expected).max())


def test_speech_flags_numpy_and_tf_agree(demo_files):
    from ser_keras.features.level import has_speech

    config = FeatureConfig()
    params = _params(config=config)
    rng = np.random.default_rng(4)
    speech = _real_or_demo_speech(demo_files)[:32000]
    cases = {
        "speech": (speech, True),
        "speech x0.05": (speech * np.float32(0.05), True),
        "digital silence": (np.zeros(32000, np.float32), False),
        "white noise 1e-3": (rng.normal(0, 1e-3, 32000).astype(np.float32), False),
        "loud white noise": (rng.normal(0, 0.1, 32000).astype(np.float32), False),
        "too short": (speech[:800], False),
        "empty": (np.zeros(0, np.float32), False),
    }
    width = 32000
    batch = np.zeros((len(cases), width), np.float32)
    lengths = np.zeros(len(cases), np.int32)
    for i, (waveform, _) in enumerate(cases.values()):
        batch[i, :len(waveform)], lengths[i] = waveform, len(waveform)
    got = fe.tf_speech_flags(batch, lengths, params).numpy()
    for i, (name, (waveform, expected)) in enumerate(cases.items()):
        assert has_speech(waveform, config, 16000) is expected, name
        assert bool(got[i]) is expected, name
