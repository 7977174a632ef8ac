"""Spectrogram and LLD front end on synthetic audio (fast, no corpus needed)."""

import numpy as np
import pytest
from scipy.signal import lfilter

from ser_keras.config import FeatureConfig
from ser_keras.errors import SerKerasError
from ser_keras.features import frontend_ops, llds, spectrogram

SR = 16000


def _spec(waveform, config):
    """The raw log spectrogram of one waveform, by the one front end."""
    return frontend_ops.raw_features(waveform, frontend_ops.spectrogram_params(config, SR))


def _llds(waveform, config):
    return frontend_ops.raw_features(waveform, frontend_ops.params_for(config, SR, "lld"))


@pytest.fixture
def config():
    return FeatureConfig()


def tone(freq, seconds=1.0, sr=SR, amplitude=0.5):
    t = np.arange(int(seconds * sr)) / sr
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def harmonic(f0, seconds=1.0, sr=SR, n_harmonics=8):
    t = np.arange(int(seconds * sr)) / sr
    x = sum(np.sin(2 * np.pi * f0 * k * t + k) / k for k in range(1, n_harmonics + 1))
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def vowel(f0=120.0, formants=((700, 80), (1220, 90), (2600, 120)), seconds=1.0, sr=SR):
    """Glottal pulse train through three resonators: a crude /a/."""
    pulses = np.zeros(int(seconds * sr))
    pulses[:: int(round(sr / f0))] = 1.0
    y = lfilter([1.0], [1.0, -0.95], pulses)  # spectral tilt of the glottal source
    for freq, bandwidth in formants:
        r = np.exp(-np.pi * bandwidth / sr)
        y = lfilter([1.0 - r], [1.0, -2.0 * r * np.cos(2 * np.pi * freq / sr), r * r], y)
    return (0.5 * y / np.abs(y).max()).astype(np.float32)


# ----------------------------------------------------------------------------- framing


@pytest.mark.parametrize(
    "n_samples, expected",
    [(0, 1), (1, 1), (100, 1), (319, 1), (320, 1), (479, 1), (480, 2),
     (16000, 99), (32000, 199), (16159, 99), (16160, 100)],
)
def test_frame_count_known_durations(config, n_samples, expected):
    assert spectrogram.frame_count(n_samples, config, SR) == expected
    x = np.zeros(n_samples, np.float32)
    assert _spec(x, config).shape == (expected, 256)
    assert _llds(x, config).shape[0] == expected


def test_frame_params_follow_sample_rate(config):
    assert spectrogram.frame_params(config, 16000) == (320, 160)
    assert spectrogram.frame_params(config, 8000) == (160, 80)
    assert spectrogram.frame_count(22050, config, 22050) == 1 + (22050 - 441) // 220


# -------------------------------------------------------------------------- spectrogram


@pytest.mark.parametrize("freq", [1000.0, 2500.0, 437.5])
def test_pure_tone_peaks_at_its_bin(config, freq):
    spec = _spec(tone(freq), config)
    assert spec.dtype == np.float32 and spec.shape == (99, 256)
    bin_hz = SR / config.n_fft  # 31.25 Hz
    assert np.all(spec.argmax(axis=1) == int(round(freq / bin_hz)))


def test_spectrogram_matches_the_contract_definition(config):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(5000).astype(np.float32) * 0.1
    frame, hop = 320, 160
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(frame) / frame)  # periodic Hann
    rows = []
    for start in range(0, len(x) - frame + 1, hop):
        power = np.abs(np.fft.rfft(x[start:start + frame] * window, n=512)) ** 2
        rows.append(np.log(power[:256] + 1e-10))
    np.testing.assert_allclose(_spec(x, config), np.array(rows), rtol=1e-4, atol=1e-3)


def _librosa_log_power(x, config):
    """The reference: librosa's STFT of the same definition. librosa centres the 320-sample
    Hann window in each 512-sample frame, so the waveform is shifted by (512 - 320) / 2 to put
    its frame i on samples [i * hop, i * hop + 320)."""
    import librosa

    shift = (config.n_fft - 320) // 2
    stft = librosa.stft(np.pad(x, (shift, shift)), n_fft=config.n_fft, hop_length=160, win_length=320,
                        window="hann", center=False)
    return np.log(np.abs(stft[:config.n_bins].T) ** 2 + config.log_floor)


def test_spectrogram_matches_librosa(config):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(8000).astype(np.float32) * 0.1
    np.testing.assert_allclose(_spec(x, config), _librosa_log_power(x, config), rtol=1e-4, atol=2e-3)


@pytest.mark.corpus
def test_spectrogram_matches_librosa_on_real_speech(config):
    """Real speech (resampled EMO-DB, quiet band edges): every cell above -60 dB re full scale
    within 1e-3 of librosa (float32 FFTs on both sides; cells near the floor are rounding)."""
    from ser_keras.audio import load_audio
    from tests.conftest import corpus_dir

    x = load_audio(sorted((corpus_dir("emodb") / "wav").glob("*.wav"))[7], SR)
    ours, reference = _spec(x, config), _librosa_log_power(x, config)
    assert ours.shape == reference.shape
    loud = reference > np.log(1e-6)
    assert loud.mean() > 0.3
    assert np.abs(ours - reference)[loud].max() < 1e-3


def test_silence_gives_the_log_floor(config):
    spec = _spec(np.zeros(1000, np.float32), config)
    np.testing.assert_allclose(spec, np.log(1e-10), rtol=1e-6)


def test_fft_shorter_than_frame_is_a_config_error():
    with pytest.raises(SerKerasError, match="features.n_fft"):
        _spec(np.zeros(1000, np.float32), FeatureConfig(n_fft=256))
    with pytest.raises(SerKerasError, match="features.n_bins"):
        _spec(np.zeros(1000, np.float32), FeatureConfig(n_bins=300))


# --------------------------------------------------------------------------------- LLDs


def test_lld_names_and_shape(config):
    names = llds.lld_names(config)
    assert names[:7] == ["f0", "voicing", "f1", "f2", "f3", "log_energy", "zcr"]
    assert len(names) == 7 + 13
    out = _llds(harmonic(200), config)
    assert out.shape == (99, 20) and out.dtype == np.float32


@pytest.mark.parametrize("f0", [70.0, 110.0, 220.0, 330.0, 450.0])
def test_f0_of_a_harmonic_tone(config, f0):
    out = _llds(harmonic(f0), config)
    voiced = out[:, 1] > 0
    assert voiced.mean() > 0.9
    assert abs(np.median(out[voiced, 0]) - f0) / f0 < 0.02
    assert np.all(np.abs(out[voiced, 0] - f0) / f0 < 0.05)
    assert np.all(out[~voiced, 0] == 0)


def test_f0_respects_the_configured_range():
    out = _llds(harmonic(110.0), FeatureConfig(f0_min_hz=150.0, f0_max_hz=400.0))
    f0 = out[out[:, 1] > 0, 0]
    assert np.all((f0 == 0) | ((f0 >= 150.0) & (f0 <= 400.0)))


def test_noise_and_silence_are_unvoiced(config):
    rng = np.random.default_rng(0)
    noise = (0.1 * rng.standard_normal(SR)).astype(np.float32)
    out = _llds(noise, config)
    assert out[:, 1].mean() < 0.05
    assert out[:, 6].mean() > 0.4  # white noise crosses zero about every other sample
    silent = _llds(np.zeros(SR, np.float32), config)
    assert np.all(silent[:, 1] == 0) and np.all(silent[:, 0] == 0) and np.all(silent[:, 2:5] == 0)
    quiet = _llds((1e-5 * rng.standard_normal(SR)).astype(np.float32), config)
    assert np.all(quiet[:, 1] == 0)


@pytest.mark.parametrize("n_samples", [0, 1, 50, 319, 321, 700])
def test_no_nan_on_silence_or_very_short_input(n_samples):
    cfg = FeatureConfig()
    for x in (np.zeros(n_samples, np.float32), np.full(n_samples, 0.3, np.float32)):
        out = _llds(x, cfg)
        assert np.all(np.isfinite(out))
        assert np.all(np.isfinite(llds.functionals(out, cfg)))


def test_formants_of_a_synthetic_vowel(config):
    out = _llds(vowel(), config)
    voiced = out[:, 1] > 0
    assert voiced.mean() > 0.9
    assert abs(np.median(out[voiced, 0]) - 120.0) / 120.0 < 0.03
    medians = np.median(out[voiced, 2:5], axis=0)
    for measured, target in zip(medians, (700.0, 1220.0, 2600.0)):
        assert abs(measured - target) / target < 0.1, (medians, target)
    assert np.all(np.diff(out[voiced, 2:5], axis=1) > 0)  # F1 < F2 < F3


def test_energy_and_zero_crossings(config):
    x = np.full(SR // 10, 0.5, np.float32)
    out = _llds(x, config)
    np.testing.assert_allclose(out[:, 5], np.log(320 * 0.25 + 1e-10), rtol=1e-5)
    assert np.all(out[:, 6] == 0)
    alternating = np.tile(np.array([0.5, -0.5], np.float32), SR // 20)
    assert np.allclose(_llds(alternating, config)[:, 6], 1.0)


def test_mel_filterbank_equals_librosa():
    import librosa
    for sr, n_fft, n_mels in ((16000, 512, 26), (16000, 512, 40), (22050, 1024, 64)):
        ours = llds.mel_filterbank(sr, n_fft, n_mels)
        theirs = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels)
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-7)


def test_mfcc_level_only_moves_the_zeroth_coefficient(config):
    noise = (0.1 * np.random.default_rng(3).standard_normal(SR)).astype(np.float32)
    quiet = _llds(noise * 0.1, config)
    loud = _llds(noise, config)
    # x10 in amplitude = +log(100) in every log-mel band = +log(100) * sqrt(n_mels) in c0 (ortho DCT)
    np.testing.assert_allclose(loud[:, 7] - quiet[:, 7], np.log(100.0) * np.sqrt(26), rtol=1e-3)
    np.testing.assert_allclose(loud[:, 8:20], quiet[:, 8:20], atol=1e-3)


# -------------------------------------------------------------------------- functionals


def test_functional_names_match_the_vector(config):
    names = llds.functional_names(config)
    assert len(names) == 20 * len(llds.STATS)
    assert names[0] == "f0_mean" and "mfcc_12_slope" in names
    vector = llds.functionals(_llds(harmonic(200), config), config)
    assert vector.shape == (len(names),) and vector.dtype == np.float32


def _hand_made(config, n=40):
    out = np.zeros((n, len(llds.lld_names(config))), np.float32)
    voiced = np.arange(n) % 2 == 0
    out[voiced, 0] = np.linspace(180.0, 220.0, voiced.sum())
    out[voiced, 1] = 1.0
    out[voiced, 2] = 500.0
    out[:, 5] = 2.0 * np.arange(n) - 3.0  # log energy: a ramp of slope 2 per frame
    return out


def test_f0_functionals_use_voiced_frames_only(config):
    values = dict(zip(llds.functional_names(config), llds.functionals(_hand_made(config), config)))
    assert values["f0_mean"] == pytest.approx(200.0)
    assert values["f0_min"] == pytest.approx(180.0) and values["f0_max"] == pytest.approx(220.0)
    assert values["f0_range"] == pytest.approx(40.0)
    assert values["f0_p50"] == pytest.approx(200.0)
    assert values["f0_slope"] == pytest.approx(40.0 / 38.0, rel=1e-4)  # per frame, 19 steps of 2 frames
    assert values["f1_mean"] == pytest.approx(500.0) and values["f1_std"] == 0.0
    assert values["f2_mean"] == 0.0  # never found -> defined zeros
    assert values["voicing_mean"] == pytest.approx(0.5)
    assert values["log_energy_slope"] == pytest.approx(2.0)
    assert values["log_energy_skewness"] == pytest.approx(0.0, abs=1e-6)
    assert values["log_energy_kurtosis"] == pytest.approx(-1.2, abs=0.01)  # uniform


def test_functionals_without_voiced_frames_are_zero(config):
    unvoiced = _hand_made(config)
    unvoiced[:, 0:2] = 0.0
    values = dict(zip(llds.functional_names(config), llds.functionals(unvoiced, config)))
    assert all(values[f"f0_{stat}"] == 0.0 for stat in llds.STATS)
    one_frame = llds.functionals(unvoiced[:1], config)
    assert np.all(np.isfinite(one_frame))


def test_functionals_reject_a_mismatched_layout(config):
    with pytest.raises(ValueError, match="llds must be"):
        llds.functionals(np.zeros((10, 5)), config)


# ------------------------------------------------------------------------- real corpora


@pytest.mark.corpus
@pytest.mark.parametrize("corpus, speaker, low, high", [
    ("emodb", "03", 80, 200), ("emodb", "08", 150, 320),
    ("casia", "wangzhe", 80, 220), ("casia", "liuchanhg", 160, 380),
])
def test_real_speech_f0_and_formants_are_plausible(corpus, speaker, low, high):
    from tests.conftest import corpus_dir
    from ser_keras.audio import load_audio

    root = corpus_dir(corpus)
    pattern = f"wav/{speaker}*N*.wav" if corpus == "emodb" else f"{speaker}/neutral/*.wav"
    paths = sorted(root.glob(pattern))[:4]
    assert paths
    config = FeatureConfig()
    frames = np.concatenate([_llds(load_audio(p, SR), config) for p in paths])
    assert np.all(np.isfinite(frames))
    voiced = frames[:, 1] > 0
    assert 0.2 < voiced.mean() < 0.9
    assert low < np.median(frames[voiced, 0]) < high  # neutral speaking F0 of that speaker's sex
    f1, f2, f3 = (np.median(frames[voiced & (frames[:, i] > 0), i]) for i in (2, 3, 4))
    assert 200 < f1 < 1000 and 900 < f2 < 2600 and 2000 < f3 < 4000
