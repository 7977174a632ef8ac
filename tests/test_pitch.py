"""Pitch channels (features/pitch.py, channels.py): log F0 contour and voicing beside the
spectrogram. Their F0 is checked against pYIN on real speech in test_features.py (the LLDs'
F0 column is the same tracker) and in test_export_pitch.py on a shifted grid."""

import numpy as np
import pytest

from ser_keras.config import Config, FeatureConfig
from ser_keras.features import cache as cache_lib
from ser_keras.features.frontend import FittedFrontEnd
from ser_keras.features.pca import FramePCA
from ser_keras.features import frontend_ops
from ser_keras.features.channels import PITCH_CHANNELS, map_spectral, pitch_channel_count, unvoiced_log_f0
from ser_keras.features.spectrogram import frame_count
from tests.test_features import SR, harmonic


def pitch_channels(waveform, config, sample_rate=SR):
    return frontend_ops.pitch_track(waveform, frontend_ops.params_for(config, sample_rate))


def glide(start_hz, end_hz, seconds=0.6, sr=SR):
    """A harmonic tone whose F0 moves linearly from start_hz to end_hz."""
    t = np.arange(int(seconds * sr)) / sr
    phase = 2 * np.pi * np.cumsum(np.linspace(start_hz, end_hz, t.size)) / sr
    x = sum(np.sin(k * phase + k) / k for k in range(1, 9))
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def test_channels_follow_the_tone_on_the_spectrogram_grid():
    config = FeatureConfig()
    silence = np.zeros(int(0.3 * SR), np.float32)
    waveform = np.concatenate([silence, harmonic(150.0, 0.5), silence, harmonic(250.0, 0.5), silence])
    channels = pitch_channels(waveform, config, SR)
    assert channels.shape == (frame_count(len(waveform), config, SR), len(PITCH_CHANNELS))
    assert channels.dtype == np.float32
    f0, voiced = np.exp(channels[:, 0]), channels[:, 1] > 0
    assert set(np.unique(channels[:, 1])) == {0.0, 1.0}
    first, second = slice(35, 75), slice(115, 155)  # well inside each tone (10 ms hop)
    assert voiced[first].all() and voiced[second].all()
    assert np.allclose(f0[first], 150.0, rtol=0.02) and np.allclose(f0[second], 250.0, rtol=0.02)
    assert not voiced[:25].any() and not voiced[-25:].any()
    # Unvoiced stretches: held before the first and after the last voiced frame, and between
    # the tones a straight line in log F0 from 150 to 250 Hz (no drop to zero).
    assert np.allclose(f0[:25], f0[np.flatnonzero(voiced)[0]])
    assert np.allclose(f0[-25:], f0[np.flatnonzero(voiced)[-1]])
    gap = np.log(f0[85:105])
    assert np.all(np.diff(gap) > 0) and np.allclose(np.diff(gap, 2), 0.0, atol=1e-5)


def test_channels_do_not_depend_on_the_gain():
    config = FeatureConfig()
    waveform = np.concatenate([glide(120.0, 220.0), np.zeros(SR // 4, np.float32), glide(200.0, 140.0)])
    reference = pitch_channels(waveform, config, SR)
    for gain in (0.5, 0.1, 0.05):
        assert np.allclose(pitch_channels(gain * waveform, config, SR), reference, atol=1e-5), gain


def test_silence_and_short_input_are_unvoiced_and_defined():
    config = FeatureConfig()
    for waveform in (np.zeros(SR, np.float32), np.zeros(10, np.float32)):
        channels = pitch_channels(waveform, config, SR)
        assert np.all(channels[:, 1] == 0) and np.all(np.isfinite(channels))
        assert np.allclose(channels[:, 0], unvoiced_log_f0(config))


def test_pca_passes_the_pitch_channels_through():
    rng = np.random.default_rng(0)
    utterances = [rng.normal(size=(50, 12)).astype(np.float32) for _ in range(6)]
    pca = FramePCA(n_components=4, passthrough=2).fit(utterances)
    assert pca.components_.shape == (12, 6)
    plain = FramePCA(n_components=4).fit([u[:, :10] for u in utterances])
    assert np.array_equal(pca.components_[:10, :4], plain.components_)
    assert np.array_equal(pca.components_[10:, 4:], np.eye(2)) and not pca.components_[10:, :4].any()
    assert not pca.components_[:10, 4:].any() and not pca.mean_[10:].any()
    out = pca.transform(utterances[0])
    assert np.allclose(out[:, 4:], utterances[0][:, 10:])
    assert np.allclose(out[:, :4], plain.transform(utterances[0][:, :10]))


def test_front_end_normalises_pitch_per_speaker_and_warps_only_the_bins():
    config = Config()
    config.features.pitch_channels = True
    config.features.pca_components = 5
    config.features.warp_factors = [0.9]
    rng = np.random.default_rng(1)
    bins = config.features.n_bins
    features = [np.concatenate([rng.normal(size=(40, bins)), rng.normal(5.0, 0.2, size=(40, 1)),
                                rng.integers(0, 2, size=(40, 1))], axis=1).astype(np.float32) for _ in range(4)]
    speakers = ["a", "a", "b", "b"]
    front_end = FittedFrontEnd.fit(config, features, [0, 1, 0, 1], speakers)
    out = front_end.transform(features, speakers)
    assert out[0].shape == (40, 5 + pitch_channel_count(config.features))
    for speaker in ("a", "b"):  # each speaker's log F0 column standardised over their frames
        frames = np.concatenate([x for x, s in zip(out, speakers) if s == speaker])
        assert abs(frames[:, 5].mean()) < 1e-4 and frames[:, 5].std() == pytest.approx(1.0, abs=1e-3)
    warped = front_end.transform_warped(features, speakers, config.features)
    assert np.allclose(warped[0][:, 5:], out[0][:, 5:], atol=1e-5)  # a warped copy keeps its pitch
    assert not np.allclose(warped[0][:, :5], out[0][:, :5])
    zeroed = map_spectral(lambda x: x * 0, features[0], config.features)
    assert not zeroed[:, :bins].any() and np.array_equal(zeroed[:, bins:], features[0][:, bins:])


def test_pitch_channels_keep_the_spectrogram_cache_key():
    config = FeatureConfig()
    key = cache_lib.shaping_fields(config, "spectrogram")
    config.pitch_channels = True
    assert cache_lib.shaping_fields(config, "spectrogram") == key
    assert "f0_min_hz" in cache_lib.shaping_fields(config, "pitch")
    assert "n_bins" not in cache_lib.shaping_fields(config, "pitch")
