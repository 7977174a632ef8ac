"""features.functionals / features.descriptors: the in-graph wide functionals on synthetic audio."""

import math

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from ser_keras.features import descriptors  # noqa: E402
from ser_keras.features.functionals import (FEATURE_NAMES, FUNCTIONALS, extract_functionals,  # noqa: E402
                                            functionals)

SR = descriptors.SAMPLE_RATE


def _features(waveform) -> dict:
    values = extract_functionals(np.asarray(waveform, np.float32)).numpy()
    assert values.shape == (len(FEATURE_NAMES),) and values.dtype == np.float32
    return dict(zip(FEATURE_NAMES, values))


def _sine(hz: float, seconds: float = 1.0, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def test_names_are_unique_and_cover_every_group():
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES) > 3000
    for contour in ("mfcc14", "mel25", "rolloff90", "hammarberg", "f0_semitones", "hnr", "jitter", "shimmer",
                    "f3", "zcr_de", "f0_semitones_de"):
        assert all(f"{contour}_{f}" in FEATURE_NAMES for f in FUNCTIONALS), contour
    assert FEATURE_NAMES[-3:] == ["voiced_share", "voiced_segment_rate", "voiced_segment_length"]


@pytest.mark.parametrize("hz", [110.0, 220.0, 330.0])
def test_sine_gives_its_f0_and_centroid(hz):
    features = _features(_sine(hz))
    assert features["f0_semitones_p50"] == pytest.approx(12 * math.log2(hz / 27.5), abs=0.1)
    assert features["voiced_share"] > 0.9
    assert features["centroid_p50"] == pytest.approx(hz / 1000.0, abs=0.03)  # kHz
    assert features["rolloff50_p50"] == pytest.approx(hz / 1000.0, abs=0.04)
    assert features["hnr_p50"] > 20.0  # a pure tone is periodic
    assert features["jitter_p50"] < 1e-3


def test_noise_is_unvoiced_and_its_loud_half_has_more_energy():
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(SR).astype(np.float32)
    features = _features(np.concatenate([0.01 * noise, 0.1 * noise]))
    assert features["voiced_share"] < 0.2
    assert features["log_rms_p80"] - features["log_rms_p20"] == pytest.approx(20.0, abs=0.5)
    assert features["centroid_mean"] > 3.0  # white noise: centroid near 4 kHz


def test_a_gain_does_not_move_the_functionals():
    """The waveform is taken relative to its loudest frames first, as the network's front end
    does, so a single served recording scores the same at any gain."""
    rng = np.random.default_rng(1)
    waveform = _sine(180.0, 2.0) * np.linspace(0.2, 1.0, 2 * SR, dtype=np.float32) \
        + 0.003 * rng.standard_normal(2 * SR).astype(np.float32)
    reference = np.array(list(_features(waveform).values()))
    for gain in (0.5, 0.05):
        values = np.array(list(_features(gain * waveform).values()))
        assert np.abs(values - reference).max() <= 1e-3 * (1.0 + np.abs(reference).max()), gain


def test_one_graph_for_every_length_and_finite_values_on_degenerate_input():
    _features(np.zeros(100, np.float32))
    traced = extract_functionals.experimental_get_tracing_count()  # other tests' graphs trace it too
    for n in (0, 1, 160, 399, 400, 401, 8000, 23456):
        for waveform in (np.zeros(n, np.float32), 0.1 * np.random.default_rng(n).standard_normal(n)):
            values = np.array(list(_features(waveform).values()))
            assert np.all(np.isfinite(values)), n
    silence = _features(np.zeros(SR, np.float32))
    assert silence["voiced_share"] == 0.0 and silence["f0_semitones_mean"] == 0.0
    assert extract_functionals.experimental_get_tracing_count() == traced


def test_functionals_match_numpy_on_masked_frames():
    rng = np.random.default_rng(1)
    values = rng.standard_normal((50, 2)).astype(np.float32)
    mask = rng.random(50) > 0.3
    masks = np.stack([np.ones(50, bool), mask], axis=1)  # a mask per column
    both = functionals(tf.constant(values), tf.constant(masks)).numpy().reshape(2, -1)
    out = dict(zip(FUNCTIONALS, both[1]))
    assert both[0][0] == pytest.approx(values[:, 0].mean(), abs=1e-5)
    kept = values[mask, 1]
    assert out["mean"] == pytest.approx(kept.mean(), abs=1e-5)
    assert out["std"] == pytest.approx(kept.std(), abs=1e-4)
    assert out["p50"] == pytest.approx(np.sort(kept)[int(round(0.5 * (len(kept) - 1)))], abs=1e-6)
    t = np.flatnonzero(mask) / 100.0
    assert out["slope"] == pytest.approx(np.polyfit(t, kept, 1)[0], rel=1e-3)
    assert out["up50"] == pytest.approx(np.mean(kept > out["p1"] + 0.5 * (out["p99"] - out["p1"])), abs=1e-6)
    empty = functionals(tf.constant(values), tf.zeros([50, 2], tf.bool)).numpy()
    assert np.all(empty == 0.0)


def test_formants_of_a_two_resonance_signal():
    # An impulse train at 100 Hz through resonances at 500 and 1500 Hz: F1, F2 near them.
    from scipy.signal import lfilter

    source = np.zeros(SR)
    source[::160] = 1.0
    signal = source
    for hz, bw in ((500.0, 80.0), (1500.0, 100.0), (2500.0, 120.0)):
        r = math.exp(-math.pi * bw / SR)
        signal = lfilter([1.0], [1.0, -2 * r * math.cos(2 * math.pi * hz / SR), r * r], signal)
    features = _features(0.3 * signal / np.abs(signal).max())
    assert features["f1_p50"] == pytest.approx(500.0, abs=60.0)
    assert features["f2_p50"] == pytest.approx(1500.0, abs=100.0)
    assert features["f3_p50"] == pytest.approx(2500.0, abs=150.0)
    # Bandwidths of the right order (80-120 Hz resonances; the harmonics and the other poles move
    # the envelope's minima a little).
    for k in (1, 2, 3):
        assert 30.0 < features[f"bw{k}_p50"] < 250.0
