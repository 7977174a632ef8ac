"""Frequency-warping augmentation (features/augment.py) and its use by `fit`."""

import numpy as np
import pytest

from ser_keras.errors import SerKerasError
from ser_keras.features.augment import check_factors, warp_frequency, warp_matrix, warped_speaker


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


def test_the_warp_is_a_matrix():
    rng = np.random.default_rng(0)
    frames = rng.normal(size=(7, 256)).astype(np.float32)
    for factor in (0.5, 0.9, 1.1, 2.0):
        np.testing.assert_allclose(frames @ warp_matrix(256, factor), warp_frequency(frames, factor), atol=1e-5)


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

    config = tiny_config("exp4", "runtime.fold=0", "features.test_warp_factors=[0.9,1.1]")
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
    """With two factors every training utterance is seen once per epoch, as itself or one of its
    two warped versions drawn at random; the test fold is not warped (its prediction count is
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
    plain = fit(tiny_config("exp4", "runtime.fold=0", "features.warp_factors=[]"), tmp_path / "plain",
                progress=False)
    drawn = fit(tiny_config("exp4", "runtime.fold=0", "features.warp_factors=[0.9,1.1]"), tmp_path / "drawn",
                progress=False)
    fold, fold_drawn = plain["folds"][0], drawn["folds"][0]
    assert fold_drawn["n_train_versions"] == 2 * fold["n_train"] and "n_train_versions" not in fold
    assert fold_drawn["n"] == fold["n"]
    batch = 16  # TINY's train.batch_size, one epoch
    # the plain number of steps: one version of each utterance per epoch
    assert steps == [-(-fold["n_train"] // batch)] * 2
    # the drawn versions are not just the originals: the trained model differs
    assert (tmp_path / "drawn" / "predictions.csv").read_text() != (tmp_path / "plain" / "predictions.csv").read_text()
