"""Frequency-warping augmentation (features/augment.py) and its use by `fit`."""

import numpy as np
import pytest

from ser_keras.errors import SerKerasError
from ser_keras.features.augment import check_factors, warp_frequency, warped_speaker


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
