"""Frequency-warping augmentation (features/augment.py) and its use by `fit`."""

import numpy as np
import pytest

from ser_keras.errors import SerKerasError
from ser_keras.features.augment import (add_noise, change_tempo, check_factors, noisy_speaker, warp_frequency,
                                        warp_matrix, warped_speaker, warped_views)


def test_warping_moves_a_spectral_peak_by_the_factor():
    bins = np.arange(256)
    frames = np.stack([np.exp(-0.5 * ((bins - 60) / 2.0) ** 2)] * 3).astype(np.float32)
    assert int(warp_frequency(frames, 1.2)[0].argmax()) == 72
    assert int(warp_frequency(frames, 0.8)[0].argmax()) == 48
    warped = warp_frequency(frames, 1.1)
    assert warped.shape == frames.shape and warped.dtype == np.float32
    # Shrinking reads beyond the top bin: it repeats the top bin instead of inventing energy.
    ramp = np.tile(bins.astype(np.float32), (2, 1))
    assert warp_frequency(ramp, 0.5)[0, -1] == 255.0


def test_factors_are_checked_and_name_their_pseudo_speaker():
    assert check_factors([0.9, "1.1"]) == [0.9, 1.1] and check_factors(None) == []
    for bad in ([1.0], [0.2], [3]):
        with pytest.raises(SerKerasError, match="features.warp_factors"):
            check_factors(bad)
    assert warped_speaker("03", 0.9) == "03@warp0.9"


def test_the_warp_is_a_matrix_and_views_warp_the_bins_only():
    rng = np.random.default_rng(0)
    frames = rng.normal(size=(7, 256)).astype(np.float32)
    for factor in (0.5, 0.9, 1.1, 2.0):
        np.testing.assert_allclose(frames @ warp_matrix(256, factor), warp_frequency(frames, factor), atol=1e-5)
    with_pitch = np.concatenate([frames, rng.normal(size=(7, 2)).astype(np.float32)], axis=1)
    views = warped_views(with_pitch, 256, [warp_matrix(256, 0.9), warp_matrix(256, 1.1)])
    assert len(views) == 3 and views[0] is with_pitch
    for view, factor in zip(views[1:], (0.9, 1.1)):
        assert view.shape == with_pitch.shape and view.dtype == np.float32
        np.testing.assert_allclose(view[:, :256], warp_frequency(frames, factor), atol=1e-5)
        np.testing.assert_array_equal(view[:, 256:], with_pitch[:, 256:])


def test_tempo_change_resamples_the_frames_in_time():
    """Played 1.25 times as fast: 4/5 of the frames, a ramp in time stays a ramp over the same
    range (every channel alike); slower: more frames; never fewer than one."""
    ramp = np.tile(np.arange(100, dtype=np.float32)[:, None], (1, 3))
    fast, slow = change_tempo(ramp, 1.25), change_tempo(ramp, 0.8)
    assert fast.shape == (80, 3) and slow.shape == (125, 3) and fast.dtype == np.float32
    np.testing.assert_allclose(fast[:, 0], np.arange(80) * 1.25, atol=1e-5)
    np.testing.assert_array_equal(fast[:, 0], fast[:, 2])
    assert slow[-1, 0] == 99.0 and slow[1, 0] == np.float32(0.8)
    assert change_tempo(ramp[:1], 1.5).shape == (1, 3)


def test_noise_fills_the_quiet_cells_at_the_snr_and_leaves_the_loud_ones():
    """White noise at 20 dB below the level reference: loud cells (0 = the reference) barely
    move, silent cells come up to a noise floor whose mean power is the reference minus 20 dB;
    the same seed gives the same noise, another seed other noise."""
    from ser_keras.features.level import level_reference

    x = np.full((400, 64), -60.0, np.float32)  # near silence...
    x[:, 10] = 0.0  # ...and one loud harmonic in every frame
    reference = level_reference(x)
    noisy = add_noise(x, 20.0, seed=[0, 1])
    assert noisy.shape == x.shape and noisy.dtype == np.float32
    assert np.all(noisy >= x - 1e-5)  # power only adds
    assert np.abs(noisy[:, 10] - x[:, 10]).max() < 0.2
    quiet = np.exp(noisy[:, 20:].astype(np.float64))
    np.testing.assert_allclose(10 * np.log10(quiet.mean()), 10 * np.log10(np.exp(reference)) - 20.0, atol=0.2)
    np.testing.assert_array_equal(noisy, add_noise(x, 20.0, seed=[0, 1]))
    assert not np.array_equal(noisy, add_noise(x, 20.0, seed=[0, 2]))
    assert noisy_speaker("03", 20.0) == "03@snr20"


def test_noisy_versions_are_normalised_as_speakers_of_their_own():
    """features.noise_snr_db adds one block of training versions per SNR after the warped and
    tempo ones: each utterance with noise at that SNR, normalised with the statistics of its
    (speaker, snr) pseudo-speaker; the pitch channels are the clean recording's."""
    from ser_keras.config import load_config
    from ser_keras.features.frontend import FittedFrontEnd

    rng = np.random.default_rng(0)
    features = [rng.normal(-5, 2, size=(int(n), 256)).astype(np.float32) for n in rng.integers(40, 80, 8)]
    speakers, labels = ["a", "b"] * 4, ["x", "y"] * 4
    config = load_config(experiment="exp4", overrides=["features.warp_factors=[]", "features.pca_components=8",
                                                       "features.noise_snr_db=[10,30]", "train.seed=3"])
    frontend = FittedFrontEnd.fit(config, features, labels, speakers)
    versions = frontend.transform_versions(features, speakers, config)
    assert len(versions) == 2 * len(features)
    for block, snr in enumerate((10, 30)):
        noisy = [add_noise(x, snr, [3, snr * 100 + 10_000, i]) for i, x in enumerate(features)]
        expected = frontend.transform(noisy, [noisy_speaker(s, snr) for s in speakers])
        for got, want in zip(versions[block * len(features):(block + 1) * len(features)], expected):
            np.testing.assert_allclose(got, want, atol=1e-4)
    assert all(np.array_equal(a, b) for a, b in zip(versions, frontend.transform_versions(features, speakers, config)))
    for bad in ("features.noise_snr_db=[80]", "features.noise_snr_db=[-20]"):
        with pytest.raises(SerKerasError, match="features.noise_snr_db"):
            load_config(experiment="exp4", overrides=[bad])
    with pytest.raises(SerKerasError, match="features.noise_snr_db"):
        load_config(experiment="exp2", overrides=["features.noise_snr_db=[20]"])


def test_tempo_versions_follow_the_warped_ones(tmp_path):
    """features.tempo_factors adds one block of training versions per factor after the warped
    ones: each utterance resampled in time, normalised with its own speaker's statistics."""
    from ser_keras.config import load_config
    from ser_keras.features.frontend import FittedFrontEnd

    rng = np.random.default_rng(0)
    features = [rng.normal(-5, 2, size=(int(n), 256)).astype(np.float32) for n in rng.integers(40, 80, 8)]
    speakers, labels = ["a", "b"] * 4, ["x", "y"] * 4
    config = load_config(experiment="exp4", overrides=["features.warp_factors=[0.9]", "features.pca_components=8",
                                                       "features.tempo_factors=[0.8,1.25]"])
    frontend = FittedFrontEnd.fit(config, features, labels, speakers)
    versions = frontend.transform_versions(features, speakers, config)
    assert len(versions) == 3 * len(features)
    tempo = versions[len(features):]
    expected = frontend.transform([change_tempo(x, 0.8) for x in features] + [change_tempo(x, 1.25) for x in features],
                                  speakers * 2)
    for got, want, x in zip(tempo, expected, features * 2):
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert [len(v) for v in tempo] == [round(len(x) / 0.8) for x in features] + [round(len(x) / 1.25) for x in features]
    with pytest.raises(SerKerasError, match="features.tempo_factors"):
        load_config(experiment="exp4", overrides=["features.tempo_factors=[1.0]"])


def test_fit_scores_every_test_time_view(tmp_path):
    """With test-time views the fold's test and validation probabilities are the mean of the
    model's probabilities on each view (plain, then warped after normalisation), and
    ``evaluate``'s re-prediction of a fold gives the same."""
    import keras

    from ser_keras.data.pipeline import make_dataset
    from ser_keras.evaluation.evaluate import predict_with_fold
    from ser_keras.evaluation.fit import fit
    from ser_keras.features.extract import extract_for_model
    from ser_keras.features.frontend import FittedFrontEnd
    from ser_keras.corpora import run_manifest
    from ser_keras.rundir import RunDir
    from tests.test_training import tiny_config

    config = tiny_config("exp4", "train.fold=0", "features.test_warp_factors=[0.9,1.1]")
    result = fit(config, tmp_path, progress=False)
    fold = result["folds"][0]
    fold_dir = RunDir(tmp_path).fold(fold["name"])
    saved = np.loadtxt(fold_dir.predictions, delimiter=",", skiprows=1, usecols=range(5, 5 + len(result["labels"])))
    manifest = run_manifest(config)
    features, _ = extract_for_model(config, manifest, progress=False)
    test = manifest.index[manifest["speaker"].astype(str) == fold["name"].split("-", 1)[1]].to_numpy()
    raw = [features[i] for i in test]
    speakers = manifest["speaker"].iloc[test].tolist()
    frontend = FittedFrontEnd.load(fold_dir, pca=True)
    views = frontend.transform_views(raw, speakers, config.features)
    assert len(views) == 3 and all(len(view) == len(test) for view in views)
    # The views come from one product with every view's warp and PCA folded in (as the export
    # graph computes them): the plain one equals transform's up to float32 rounding.
    np.testing.assert_allclose(views[0][0], frontend.transform(raw, speakers)[0], atol=1e-5)
    assert not np.allclose(views[1][0], views[0][0])
    model = keras.saving.load_model(fold_dir.keras_model, compile=False)
    each = [model.predict(make_dataset(view, None, 16, training=False, seed=0), verbose=0) for view in views]
    np.testing.assert_allclose(saved, np.mean(each, axis=0), atol=2e-6)
    assert not np.allclose(saved, each[0], atol=1e-3)  # the views do change the scores
    np.testing.assert_allclose(predict_with_fold(fold_dir, config, raw, speakers), saved, atol=2e-6)


def test_fit_trains_on_the_warped_copies_too(tmp_path, monkeypatch):
    """With two factors every training utterance is seen three times per epoch ("copies") or
    once, as a drawn version ("draw"); the test fold is not warped (its prediction count is
    unchanged)."""
    import keras

    from ser_keras.training import callbacks as callbacks_module
    from ser_keras.evaluation.fit import fit
    from tests.test_training import tiny_config

    steps = []
    original = callbacks_module.training_callbacks

    class CountSteps(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            steps.append(int(self.model.optimizer.iterations.numpy()))

    monkeypatch.setattr(callbacks_module, "training_callbacks",
                        lambda *args, **kwargs: original(*args, **kwargs) + [CountSteps()])
    plain = fit(tiny_config("exp4", "train.fold=0", "features.warp_factors=[]"), tmp_path / "plain",
                progress=False)
    warp = ("train.fold=0", "features.warp_factors=[0.9,1.1]")
    warped = fit(tiny_config("exp4", *warp, "features.warp_mode=copies"), tmp_path / "warped", progress=False)
    drawn = fit(tiny_config("exp4", *warp, "features.warp_mode=draw"), tmp_path / "drawn", progress=False)
    fold, fold_warped, fold_drawn = plain["folds"][0], warped["folds"][0], drawn["folds"][0]
    assert fold_warped["n_train_versions"] == 2 * fold["n_train"] and "n_train_versions" not in fold
    assert fold_warped["n"] == fold["n"] == fold_drawn["n"]
    batch = 16  # TINY's train.batch_size, one epoch
    # "draw" keeps the plain number of steps: one version of each utterance per epoch
    assert steps == [-(-fold["n_train"] // batch), -(-3 * fold["n_train"] // batch), -(-fold["n_train"] // batch)]
    assert fold_drawn["n_train_versions"] == fold_warped["n_train_versions"]
    # the drawn versions are not just the originals: the trained model differs
    assert (tmp_path / "drawn" / "predictions.csv").read_text() != (tmp_path / "plain" / "predictions.csv").read_text()
    # features.pooled_version: one more block, each utterance normalised as a served recording
    pooled = fit(tiny_config("exp4", "train.fold=0", "features.warp_factors=[]", "features.pooled_version=true"),
                 tmp_path / "pooled", progress=False)
    assert pooled["folds"][0]["n_train_versions"] == fold["n_train"]
    assert steps[-1] == -(-fold["n_train"] // batch)
    assert (tmp_path / "pooled" / "predictions.csv").read_text() != (tmp_path / "plain" / "predictions.csv").read_text()
