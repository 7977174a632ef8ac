"""The front end's ops (``features.frontend_ops``): normalisation, views and PCA as defined,
padded batches, frame geometry, statistics from frames, the level reference and the speech
flag. (References: the spectrogram against librosa and F0 against pYIN in test_features.py;
extraction's cached features against the export graph in test_one_front_end.py.)"""

import numpy as np
import pytest

from ser_keras.config import FeatureConfig
from ser_keras.errors import SerKerasError
from ser_keras.features import frontend_ops as fe
from ser_keras.features.augment import warp_frequency
from ser_keras.features.level import level_normalize, level_reference, relative_floor, top_count
from ser_keras.features.spectrogram import frame_count

FEATURE_RTOL = 1e-5


def _params(seed=0, config=None, k=60):
    config = config or FeatureConfig()
    rng = np.random.default_rng(seed)
    d = config.n_bins
    stats = dict(norm_mean=rng.normal(-8, 2, d), norm_std=rng.uniform(1, 3, d),
                 pca_mean=rng.normal(0, 0.1, d),
                 pca_components=np.linalg.qr(rng.normal(size=(d, d)))[0][:, :k])
    return fe.params_from_arrays(config, stats, sample_rate=16000)


def _spec(waveform, config=None, rate=16000):
    return fe.raw_features(waveform, fe.spectrogram_params(config or FeatureConfig(), rate))


def _defined(raw, params, stats=None):
    """Steps 3-4 of the front end written out (the definition): standardise, then project."""
    mean, std = stats if stats is not None else (params.norm_mean, params.norm_std)
    x = (np.asarray(raw, np.float64) - mean) / std
    return (x - params.pca_mean) @ params.pca_components


def _tf_features(waveform, params):
    return fe.tf_frontend(np.asarray(waveform, np.float32)[None], params).numpy()[0]


def _close(got, expected):
    assert np.abs(got - expected).max() <= FEATURE_RTOL * max(1.0, np.abs(expected).max())


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
def test_frontend_is_the_raw_features_normalised_and_projected(name, waveform):
    params = _params()
    raw = _spec(waveform)
    assert raw.shape == (frame_count(len(waveform), FeatureConfig(), 16000), 256)
    got = _tf_features(waveform, params)
    assert got.shape == (raw.shape[0], 60)
    _close(got, _defined(raw, params))


def test_test_time_views_sit_side_by_side():
    """With test_warp_factors the front end gives every view's k features side by side: the
    plain view first (what it gives without views), then the normalised bins warped before
    the PCA, with pooled or given statistics; the fitted front end's views are the same."""
    config = FeatureConfig(test_warp_factors=[0.9, 1.1])
    plain, params = _params(), _params(config=config)
    assert params.n_views == 3 and params.output_dim == plain.output_dim == 60
    waveform = (0.1 * np.random.default_rng(3).normal(size=8000)).astype(np.float32)
    raw = _spec(waveform, config)
    got = _tf_features(waveform, params)
    assert got.shape == (raw.shape[0], 3 * 60)
    views = fe.split_views(got, 3)
    _close(views[0], _tf_features(waveform, plain))
    normalised = (raw - plain.norm_mean) / plain.norm_std
    for view, factor in zip(views[1:], (0.9, 1.1)):
        warped = (warp_frequency(normalised, factor) - plain.pca_mean) @ plain.pca_components
        np.testing.assert_allclose(view, warped, atol=1e-3)  # warp_matrix vs interpolation: rounding
    stats = (raw.mean(axis=0), raw.std(axis=0) + 0.5)
    given = fe.split_views(fe.tf_frontend(waveform[None], params, stats=stats).numpy()[0], 3)
    _close(given[0], _defined(raw, plain, stats))


def test_batch_rows_are_independent():
    params = _params()
    rng = np.random.default_rng(2)
    batch = (0.1 * rng.normal(size=(3, 4000))).astype(np.float32)
    together = fe.tf_frontend(batch, params).numpy()
    for row in range(3):
        np.testing.assert_allclose(together[row], _tf_features(batch[row], params), atol=1e-5)


def test_other_sample_rate_grid():
    """At 8 kHz the frame is 160 samples and the hop 80."""
    config = FeatureConfig(n_fft=256, n_bins=128)
    rng = np.random.default_rng(5)
    params = fe.params_from_arrays(config, dict(norm_mean=np.zeros(128), norm_std=np.ones(128)), sample_rate=8000)
    assert (params.frame, params.hop) == (160, 80)
    waveform = (0.1 * rng.normal(size=3000)).astype(np.float32)
    got = fe.tf_frontend(waveform[None], params).numpy()[0]
    assert got.shape == (1 + (3000 - 160) // 80, 128)
    np.testing.assert_allclose(got, _spec(waveform, config, 8000), atol=1e-6)


def test_frame_counts():
    params = _params()
    lengths = np.array([0, 1, 319, 320, 321, 479, 480, 16000, 16001])
    from ser_keras.features.level import frame_counts

    got = frame_counts(lengths, params).numpy()
    expected = [frame_count(n, FeatureConfig(), 16000) for n in lengths]
    assert got.tolist() == expected == [1, 1, 1, 1, 1, 1, 2, 99, 99]
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


def test_moments_and_stats_equal_the_fitted_statistics():
    """The graph's speaker statistics are the formula the normaliser is fitted with
    (``features.normalize.frame_stats``)."""
    import tensorflow as tf

    from ser_keras.features.normalize import frame_stats

    rng = np.random.default_rng(3)
    raw = rng.normal(-5, 2, size=(2, 30, 7)).astype(np.float32)
    raw[1, :, 0] = 4.0  # a constant dimension: its std is floored
    n_frames = tf.constant([30, 12])
    count, total, squares = fe.frame_moments(raw, n_frames)
    mean, std = fe.mean_std(count, total, squares, 1e-3)
    for row, n in enumerate((30, 12)):
        ref = frame_stats([raw[row, :n]], 1e-3)
        np.testing.assert_allclose(mean.numpy()[row], ref[0], rtol=1e-10)
        np.testing.assert_allclose(std.numpy()[row], ref[1], rtol=1e-9)
    both = fe.mean_std(tf.reduce_sum(count), tf.reduce_sum(total, 0), tf.reduce_sum(squares, 0), 1e-3)
    ref = frame_stats([raw[0], raw[1, :12]], 1e-3)
    np.testing.assert_allclose(both[0].numpy(), ref[0], rtol=1e-10)
    np.testing.assert_allclose(both[1].numpy(), ref[1], rtol=1e-9)
    assert std.numpy()[1, 0] == 1e-3


def test_given_statistics_per_row_or_shared():
    """stats=(mean, std): [D] for every row (a speaker's) or [batch, D] (one per row)."""
    params = _params()
    rng = np.random.default_rng(7)
    batch = (0.2 * rng.normal(size=(2, 4000))).astype(np.float32)
    raws = [_spec(row) for row in batch]
    shared = (raws[0].mean(axis=0), raws[0].std(axis=0) + 0.5)
    per_row = (np.stack([r.mean(axis=0) for r in raws]), np.stack([r.std(axis=0) + 0.5 for r in raws]))
    for stats, pick in ((shared, lambda s, i: s), (per_row, lambda s, i: s[i])):
        for per_row_loop in (False, True):
            got = fe.tf_frontend(batch, params, per_row=per_row_loop, stats=stats).numpy()
            for i, raw in enumerate(raws):
                _close(got[i], _defined(raw, params, (pick(stats[0], i), pick(stats[1], i))))


# ---------------------------------------------------------------------- level and speech


def _real_or_demo_speech(demo_files):
    from ser_keras.audio import load_audio
    from tests.conftest import SHARED_CORPORA

    files = sorted((SHARED_CORPORA / "emodb").rglob("*.wav"))[:1]
    if not files:
        files = demo_files[:1]
    return load_audio(files[0], 16000)


def test_level_reference_is_the_loudest_fifth_and_moves_by_the_log_gain(demo_files):
    import tensorflow as tf

    rng = np.random.default_rng(5)
    raw = rng.normal(-6, 3, size=(2, 37, 11)).astype(np.float32)
    n_frames = np.array([37, 9])
    got = level_normalize(tf.constant(raw), tf.constant(n_frames)).numpy()
    for row, n in enumerate(n_frames):
        # Padded frames do not enter the reference, and the reference is the loudest fifth's.
        x = raw[row, :n].astype(np.float64)
        loudest = np.sort(np.log(np.exp(x).mean(axis=1)))[::-1][:top_count(int(n))]
        # (float32, as the serving graph and LiteRT compute it)
        assert level_reference(raw[row, :n]) == pytest.approx(loudest.mean(), abs=1e-5)
        assert top_count(int(n)) == -(-n // 5)
        np.testing.assert_allclose(got[row, :n], raw[row, :n] - loudest.mean(), atol=1e-5)
    # Shift-equivariant: a constant added to every bin moves the reference by exactly it.
    for shift in (-4.6, 0.3, 7.0):
        assert level_reference(raw[0] + shift) - level_reference(raw[0]) == pytest.approx(shift, abs=1e-5)
        shifted = level_normalize(tf.constant(raw + np.float32(shift)), tf.constant(n_frames)).numpy()
        np.testing.assert_allclose(shifted, got, atol=1e-5)
    # A gain g on speech adds 2 ln g to the log power: the reference moves by 2 ln g.
    speech = _real_or_demo_speech(demo_files)
    base = level_reference(_spec(speech))
    for gain in (0.5, 0.1, 0.05):
        moved = level_reference(_spec(speech * np.float32(gain))) - base
        assert moved == pytest.approx(2 * np.log(gain), abs=1e-3)


def _normalized(raw, floor_db=None):
    return level_normalize(raw[None], [raw.shape[0]], floor_db).numpy()[0]


def test_relative_level_floor_makes_the_features_gain_invariant(demo_files):
    """Without the relative floor the cells a low gain pushes to the absolute log floor keep
    the features moving with the gain (by up to 2 ln(1/g)); with it every cell stays within a
    few hundredths of the gain-1 value down to gain 0.05."""
    speech = _real_or_demo_speech(demo_files)
    raw = {gain: _spec(speech * np.float32(gain)) for gain in (1.0, 0.5, 0.1, 0.05)}
    without = _normalized(raw[1.0])
    assert np.abs(_normalized(raw[0.05]) - without).max() > 1.0
    base = _normalized(raw[1.0], 60.0)
    assert base.min() == pytest.approx(relative_floor(60.0)) and (base > base.min()).mean() > 0.5
    for gain in (0.5, 0.1, 0.05):
        assert np.abs(_normalized(raw[gain], 60.0) - base).max() < 0.05, gain


def test_level_normalised_frontend_of_padded_rows_is_each_row_alone():
    """A zero-padded batch with valid frame counts (as serve_lengths builds it) gives each row
    what the front end gives the unpadded recording, level reference included."""
    params = _params(config=FeatureConfig(level_normalization=True))
    assert params.level_normalization
    rng = np.random.default_rng(2)
    rows = [(0.1 * rng.normal(size=n) * np.linspace(0.1, 1, n)).astype(np.float32) for n in (9000, 4100)]
    batch = np.zeros((2, 9000), np.float32)
    batch[1, :4100] = rows[1]
    batch[0] = rows[0]
    n_frames = np.array([params.frame_count(len(r)) for r in rows], np.int32)
    for per_row in (False, True):
        got = fe.tf_frontend(batch, params, per_row=per_row, n_frames=n_frames).numpy()
        for i, row in enumerate(rows):
            expected = _defined(_normalized(_spec(row)), params)
            _close(got[i, :n_frames[i]], expected)


def test_speech_flags(demo_files):
    from ser_keras.features.level import speech_flags

    params = _params()
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
    got = speech_flags(batch, lengths, params).numpy()
    for i, (name, (waveform, expected)) in enumerate(cases.items()):
        assert fe.has_speech(waveform, params) is expected, name  # one recording alone
        assert bool(got[i]) is expected, name


def test_serving_front_end_has_no_float64():
    """The pooled-statistics front end and the speech flags (what ``serve`` runs, and LiteRT
    converts) hold no float64 tensor, constants included."""
    import tensorflow as tf

    from ser_keras.features.level import speech_flags

    config = FeatureConfig(pitch_channels=True, level_normalization=True, level_floor_db=60.0)
    dim, rng = config.n_bins + 2, np.random.default_rng(0)
    params = fe.params_from_arrays(config, dict(norm_mean=rng.normal(size=dim), norm_std=np.ones(dim),
                                                pca_mean=np.zeros(dim), pca_components=rng.normal(size=(dim, 40))),
                                   sample_rate=16000)
    graph = tf.function(lambda x, n: (fe.tf_frontend(x, params, per_row=False, n_frames=n),
                                      speech_flags(x, n * params.hop, params))).get_concrete_function(
        tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([None], tf.int32)).graph
    wide = [op.name for op in graph.get_operations() if any(t.dtype == tf.float64 for t in op.outputs)]
    assert not wide, wide
