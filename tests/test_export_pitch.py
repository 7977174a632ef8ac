"""The pitch channels in the export graph (``features.pitch.tf_pitch_channels``, the one
implementation extraction runs too): padded batches, the valid frames, the gain, XLA, and a
hand-made pitch run (``--set features.pitch_channels=true``, untrained model, random
statistics, block-diagonal PCA as ``FramePCA(passthrough=2)`` writes it) exported, whose
SavedModel ``serve`` equals the in-process predict path (``FoldModel``).
"""

import numpy as np
import pytest

from ser_keras.config import FeatureConfig
from ser_keras.features import frontend_ops as fe
from ser_keras.features.channels import PITCH_CHANNELS, unvoiced_log_f0
from ser_keras.features.level import level_normalize
from ser_keras.features.pitch import tf_pitch_channels, yin_geometry
from ser_keras.features.spectrogram import log_spectrogram
from tests.conftest import LABELS, SHARED_CORPORA, corpus_dir, tone

RATE = 16000
LOG_F0_ATOL = 1e-3
MIN_AGREEMENT = 0.995
MAX_DP = 1e-5
# Against pYIN (librosa.pyin, 60-500 Hz, a frame grid shifted to ours; test_features checks the
# same tracker on its own grid): F0 within PYIN_RTOL on at least PYIN_WITHIN of the frames both
# call voiced; at least PYIN_RECALL of pYIN's voiced frames voiced here and at least
# PYIN_PRECISION of the frames voiced here voiced for pYIN. The full-band tracker (chosen over
# the one on a low-passed, decimated signal by validation UA: it voices fewer noisy frames)
# agrees a little less often on this grid than on test_features' (>= 0.96 there) and calls
# fewer frames voiced (EMO-DB: 70 % of pYIN's voiced frames; 95 % of its own are pYIN's too).
PYIN_RTOL = 0.05
PYIN_WITHIN = 0.95
PYIN_RECALL = 0.65
PYIN_PRECISION = 0.90
PYIN_FILES = 8


def _config(**kwargs):
    return FeatureConfig(pitch_channels=True, **kwargs)


def _params(config=None):
    return fe.params_from_arrays(config or _config(), {}, sample_rate=RATE)


def _synthetic() -> np.ndarray:
    """Voiced harmonics with a vibrato, silence, a lower voice: every branch of the contour
    (held start, interpolation across a gap, held end)."""
    return np.concatenate([np.zeros(2000, np.float32), tone(1.2, freq=220.0), np.zeros(6000, np.float32),
                           tone(0.8, freq=130.0, seed=1), np.zeros(1500, np.float32)])


def _speech(name: str) -> np.ndarray:
    from ser_keras.audio import load_audio

    if name == "synthetic":
        return _synthetic()
    files = sorted(corpus_dir(name).rglob("*.wav"))
    assert files, name
    return load_audio(files[len(files) // 3], RATE)


def _tf_channels(waveform, params) -> np.ndarray:
    frames = params.frame_count(len(waveform))
    return tf_pitch_channels(np.asarray(waveform, np.float32)[None], [frames], params).numpy()[0]


def _agreement(got, expected) -> tuple:
    """(fraction of frames with log F0 within LOG_F0_ATOL, fraction with equal voicing)."""
    assert got.shape == expected.shape
    return (float(np.mean(np.abs(got[:, 0] - expected[:, 0]) <= LOG_F0_ATOL)),
            float(np.mean(got[:, 1] == expected[:, 1])))


def _pyin_agreement(corpus: str) -> dict:
    import librosa

    from ser_keras.audio import load_audio

    files = sorted(corpus_dir(corpus).rglob("*.wav"))
    params = _params()
    counts = dict(close=0, both=0, reference=0, ours=0)
    for path in files[len(files) // (2 * PYIN_FILES)::len(files) // PYIN_FILES][:PYIN_FILES]:
        waveform = load_audio(path, RATE)
        channels = _tf_channels(waveform, params)
        reference, reference_voiced, _ = librosa.pyin(waveform, fmin=60.0, fmax=500.0, sr=RATE, frame_length=1024,
                                                      hop_length=params.hop, center=True)
        # pYIN's frame j is centred on sample j * hop, ours i on i * hop + frame / 2 = (i + 1) * hop.
        n = min(len(channels), len(reference) - 1)
        f0, voiced = np.exp(channels[:n, 0]), channels[:n, 1] > 0
        reference, reference_voiced = reference[1:n + 1], reference_voiced[1:n + 1]
        both = voiced & reference_voiced
        counts["close"] += int(np.sum(np.abs(f0[both] / reference[both] - 1.0) <= PYIN_RTOL))
        counts["both"] += int(both.sum())
        counts["reference"] += int(reference_voiced.sum())
        counts["ours"] += int(voiced.sum())
    return counts


@pytest.mark.corpus
@pytest.mark.parametrize("corpus", ["emodb", "casia"])
def test_f0_agrees_with_pyin_on_real_speech(corpus):
    counts = _pyin_agreement(corpus)
    assert counts["both"] > 300, counts
    assert counts["close"] / counts["both"] >= PYIN_WITHIN, counts
    assert counts["both"] / counts["reference"] >= PYIN_RECALL, counts
    assert counts["both"] / counts["ours"] >= PYIN_PRECISION, counts


def test_tracker_runs_in_float32_with_litert_ops():
    """At 16 kHz, 60-500 Hz: lags 32 .. 267 of the full-band signal, a window of 4 hops (2.4
    periods of 60 Hz), a power-of-two FFT; nothing in the graph is float64 or complex
    arithmetic, and no inverse FFT (LiteRT's builtin ops have none of them)."""
    import tensorflow as tf

    params = _params()
    geometry = yin_geometry(params)
    assert (geometry["tau_min"], geometry["tau_max"], geometry["blocks"]) == (32, 267, 4)
    assert geometry["n_fft"] & (geometry["n_fft"] - 1) == 0 and geometry["n_fft"] >= geometry["seg_blocks"] * 160
    graph = tf.function(lambda x, n: tf_pitch_channels(x, n, params)).get_concrete_function(
        tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([None], tf.int32)).graph
    dtypes = {t.dtype for op in graph.get_operations() for t in op.outputs}
    assert tf.float64 not in dtypes and tf.complex128 not in dtypes
    types = {op.type for op in graph.get_operations()}
    assert not types & {"IRFFT", "Conj", "Complex", "ComplexAbs"}, types
    complex_users = {consumer.type for op in graph.get_operations() for t in op.outputs if t.dtype == tf.complex64
                     for consumer in t.consumers()}
    assert complex_users <= {"Real", "Imag"}, complex_users


def test_tf_pitch_channels_of_silence_and_short_input():
    """No voiced frame: the range's midpoint everywhere; shorter than one frame: one frame."""
    config = _config()
    params = _params(config)
    for waveform in (np.zeros(4000, np.float32), 0.1 * tone(0.005)):
        got = _tf_channels(waveform, params)
        assert got.shape == (params.frame_count(len(waveform)), 2)
        np.testing.assert_allclose(got[:, 0], unvoiced_log_f0(config), atol=1e-6)
        assert not got[:, 1].any()


def test_batch_of_padded_rows_equals_row_by_row():
    """Zero-padded rows with their valid frame counts give exactly what each row gives alone."""
    params = _params()
    rows = [_synthetic(), tone(0.6, freq=180.0, seed=3)]
    batch = np.zeros((2, len(rows[0])), np.float32)
    batch[0] = rows[0]
    batch[1, :len(rows[1])] = rows[1]
    n_frames = np.array([params.frame_count(len(r)) for r in rows], np.int32)
    together = tf_pitch_channels(batch, n_frames, params).numpy()
    for i, row in enumerate(rows):
        np.testing.assert_array_equal(together[i, :n_frames[i]], _tf_channels(row, params))


def test_frames_past_n_frames_do_not_count():
    """A loud voice in the frames past ``n_frames`` (out of reach of every valid frame's YIN
    segment) neither raises the voicing gate nor bends the contour of the valid frames: they
    are what the valid part alone gives, and what ``pitch_channels`` gives it."""
    params = _params()
    quiet = 0.02 * tone(0.6, freq=180.0, seed=3)
    loud = tone(0.5, freq=300.0, seed=4)
    row = np.concatenate([quiet, np.zeros(2000, np.float32), loud])
    n = params.frame_count(len(quiet))
    got = tf_pitch_channels(row[None], [n], params).numpy()[0, :n]
    np.testing.assert_array_equal(got, _tf_channels(quiet, params))
    assert got[:, 1].mean() > 0.5


@pytest.mark.parametrize("name", ["synthetic", "emodb"])
def test_pitch_channels_ignore_gain(name):
    waveform = _speech(name)
    params = _params()
    base = _tf_channels(waveform, params)
    quiet = _tf_channels(0.05 * waveform, params)
    f0_agree, voicing_agree = _agreement(quiet, base)
    assert f0_agree >= MIN_AGREEMENT and voicing_agree >= MIN_AGREEMENT, (f0_agree, voicing_agree)


def test_raw_features_append_pitch_after_level_normalisation():
    """``tf_raw_features`` (batch and per-row paths) of a pitch run: the level-normalised bins,
    then the two channels."""
    config = _config(level_normalization=True, level_floor_db=60.0)
    params = _params(config)
    assert params.pitch_channels and params.input_dim == config.n_bins + 2
    waveform = _synthetic()
    n = params.frame_count(len(waveform))
    expected = np.concatenate([level_normalize(log_spectrogram(waveform[None], params), [n], 60.0).numpy()[0],
                               _tf_channels(waveform, params)], axis=1)
    batch = np.stack([waveform, np.roll(waveform, 4000)])
    paths = [fe.tf_raw_features(batch, params, per_row=per_row).numpy()[0] for per_row in (False, True)]
    for got in paths:
        np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_array_equal(fe.raw_features(waveform, params), paths[1])


def test_params_need_pitch_wide_statistics():
    config = _config()
    rng = np.random.default_rng(0)
    wide = config.n_bins + 2
    params = fe.params_from_arrays(config, dict(norm_mean=rng.normal(size=wide), norm_std=np.ones(wide)),
                                   sample_rate=RATE)
    assert params.input_dim == wide
    with pytest.raises(Exception, match=rf"expected \({wide},\)"):
        fe.params_from_arrays(config, dict(norm_mean=np.zeros(config.n_bins), norm_std=np.ones(config.n_bins)),
                              sample_rate=RATE)
    # LLD models have no pitch columns of this kind, whatever the flag says.
    assert not fe.params_from_arrays(config, {}, sample_rate=RATE, kind="lld").pitch_channels


# -- end to end: a pitch run, exported, served ------------------------------------------------


def _write_pitch_run(root):
    """A run directory as ``fit --set features.pitch_channels=true`` leaves one, by hand: the
    untrained exp4 model and random statistics over n_bins + 2 columns; the PCA block-diagonal
    with an identity for the pitch columns (``FramePCA(passthrough=2)``)."""
    from ser_keras.config import load_config
    from ser_keras.rundir import save_run_config
    from ser_keras.models import build_model

    config = load_config(experiment="exp4", corpus="demo", overrides=["features.pitch_channels=true",
                                                                      "features.level_normalization=true"])
    run_dir = root / "tiny_exp4_pitch"
    fold_dir = run_dir / "folds" / "fold_0"
    fold_dir.mkdir(parents=True)
    save_run_config(config, run_dir, LABELS)
    rng = np.random.default_rng(5)
    bins, k, p = config.features.n_bins, config.features.pca_components, len(PITCH_CHANNELS)
    components = np.zeros((bins + p, k + p))
    components[:bins, :k] = np.linalg.qr(rng.normal(size=(bins, bins)))[0][:, :k]
    components[bins:, k:] = np.eye(p)
    stats = dict(norm_mean=np.concatenate([rng.normal(0, 2, bins), [5.2, 0.4]]),
                 norm_std=np.concatenate([rng.uniform(1, 3, bins), [0.3, 0.5]]),
                 pca_mean=np.concatenate([rng.normal(0, 0.1, bins), np.zeros(p)]), pca_components=components)
    stats = {name: np.asarray(value, np.float32) for name, value in stats.items()}
    np.savez(fold_dir / "frontend.npz", sample_rate=np.array(config.data.sample_rate), **stats)
    build_model(config, len(LABELS), k + p).save(fold_dir / "model.keras")
    return run_dir


@pytest.fixture(scope="module")
def pitch_export(tmp_path_factory):
    from ser_keras.export.serving import export_run

    root = tmp_path_factory.mktemp("pitch_export")
    run_dir = _write_pitch_run(root)
    return run_dir, export_run(run_dir, root / "export", litert=False)  # LiteRT: test_export_litert


def _parity_waveforms() -> list:
    from ser_keras.audio import load_audio

    waveforms = [_synthetic(), 0.3 * tone(0.9, freq=160.0, seed=7)]
    for corpus in ("emodb", "casia"):
        files = sorted((SHARED_CORPORA / corpus).rglob("*.wav"))
        if files:
            waveforms.append(load_audio(files[len(files) // 2], RATE))
    return waveforms


def test_exported_pitch_model_matches_in_process_predict(pitch_export):
    import json

    import tensorflow as tf

    from ser_keras.inference.fold import load_fold

    run_dir, export_dir = pitch_export
    meta = json.loads((export_dir / "export.json").read_text())
    bundle = load_fold(run_dir)
    assert meta["feature_dim"] == bundle.config.features.n_bins + 2
    assert meta["pitch_channels"] == list(PITCH_CHANNELS)
    assert "litert" not in meta and not (export_dir / "model.tflite").exists()  # export_run(litert=False)
    loaded = tf.saved_model.load(str(export_dir))
    waveforms = _parity_waveforms()
    worst = 0.0
    for waveform in waveforms:
        expected, _ = bundle.score(bundle.features(waveform)[None])
        got = loaded.serve(waveform[None].astype(np.float32))
        assert int(got["speech"].numpy()[0]) == 1
        worst = max(worst, float(np.abs(got["probabilities"].numpy() - expected).max()))
    assert worst <= MAX_DP, worst

    # A speaker's statistics over a padded batch: the moments of the in-process pitch features.
    rows = waveforms[:2]
    batch = np.zeros((2, max(len(r) for r in rows)), np.float32)
    for i, row in enumerate(rows):
        batch[i, :len(row)] = row
    served = loaded.speaker_statistics(batch, np.array([len(r) for r in rows], np.int32))
    raw = np.concatenate([bundle.raw_features(r) for r in rows]).astype(np.float64)
    assert float(served["frames"]) == raw.shape[0]
    np.testing.assert_allclose(served["mean"].numpy()[-2:], raw[:, -2:].mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(served["std"].numpy()[-2:], raw[:, -2:].std(axis=0), rtol=1e-4)


def test_xla_compiles_the_pitch_channels():
    """``export_run(jit_compile=True)``: XLA compiles them in seconds (static shapes; a
    data-dependent ``tf.where`` took minutes for a few seconds of audio) to the same values."""
    import tensorflow as tf

    params = _params()
    waveform = _synthetic()
    compiled = tf.function(lambda x, n: tf_pitch_channels(x, n, params), jit_compile=True)
    got = compiled(waveform[None], tf.constant([params.frame_count(len(waveform))])).numpy()[0]
    assert _agreement(got, _tf_channels(waveform, params)) == (1.0, 1.0)
