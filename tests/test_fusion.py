"""The functionals classifier fused with the network (training.functionals, models.functionals).

The end-to-end checks - a default demo fit writes the classifier, its export serves the fused
probabilities that fit reports (serve and serve_speaker), predict --same-speaker agrees - are in
tests/test_export_parity.py (the default experiment is the fused one) and below on the run.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ser_keras.errors import SerKerasError
from ser_keras.models.functionals import FunctionalsClassifier, FunctionalsHead, speaker_znorm, znorm_statistics
from ser_keras.rundir import load_run_config
from ser_keras.training.functionals import choose_weight, fit_head


def _separable(n_per_class=30, classes=3, dim=40, seed=0):
    """Functionals whose first `classes` dimensions name the class, on different scales."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), n_per_class)
    x = rng.normal(0, 1, (len(y), dim)) * rng.uniform(0.1, 50, dim)
    x[np.arange(len(y)), y] += 4 * np.std(x[:, :classes], axis=0)[y]
    return x.astype(np.float32), y


def test_fit_head_learns_and_its_folded_map_is_the_svm_with_temperature():
    from sklearn.svm import LinearSVC

    x, y = _separable()
    order = np.random.default_rng(1).permutation(len(y))
    train, validation, test = order[:50], order[50:70], order[70:]
    head, summary, val_p = fit_head(x, y, 4, train, validation, [1e-3, 1e-2, 1e-1], seed=0)
    assert summary["c"] in (1e-3, 1e-2, 1e-1) and summary["val_ua"] >= 0.9 and summary["temperature"] > 0
    assert val_p.shape == (20, 4) and np.allclose(val_p.sum(axis=1), 1.0, atol=1e-6)
    p = head.probabilities(x[test])
    assert p.shape == (len(test), 4) and np.allclose(p.sum(axis=1), 1.0, atol=1e-5)
    assert np.mean(p.argmax(axis=1) == y[test]) >= 0.9
    assert p[:, 3].max() < 1e-6  # a class the training data never had never wins
    # The same map, spelled out: standardise over training + validation, the SVM, the temperature.
    fitted = np.concatenate([train, validation])
    mean, scale = x[fitted].mean(axis=0), x[fitted].std(axis=0)
    svm = LinearSVC(C=summary["c"], dual=True, max_iter=5000, random_state=0).fit((x[fitted] - mean) / scale, y[fitted])
    logits = summary["temperature"] * svm.decision_function((x[test] - mean) / scale)
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(p[:, :3], expected, atol=1e-3)


def test_fit_head_without_validation_takes_the_middle_c_and_temperature_one():
    x, y = _separable(seed=2)
    head, summary, val_p = fit_head(x, y, 3, np.arange(len(y)), np.array([], np.int64), [1e-3, 1e-2, 1e-1], seed=0)
    assert summary == {"c": 1e-2, "temperature": 1.0, "val_ua": None} and val_p is None


def test_fit_head_refuses_a_single_emotion():
    x, y = _separable()
    with pytest.raises(SerKerasError, match="at least two emotions"):
        fit_head(x, np.zeros_like(y), 3, np.arange(len(y)), np.array([], np.int64), [1e-2], seed=0)


def test_choose_weight_takes_the_best_fusion_and_ties_to_the_middle():
    y = np.array([0, 1, 2, 0])
    network = np.eye(3)[[0, 1, 0, 0]] * 0.6 + 0.1  # wrong on the third
    functionals = np.eye(3)[[0, 1, 2, 1]] * 0.6 + 0.1  # wrong on the fourth
    weight, scores = choose_weight([0.25, 0.5, 0.75], network, functionals, y)
    assert set(scores) == {"0.25", "0.5", "0.75"} and scores[str(weight)] == max(scores.values())
    same = np.eye(3)[y] * 0.6 + 0.1
    assert choose_weight([0.25, 0.5, 0.75], same, same, y)[0] == 0.5  # all tie
    assert choose_weight([0.25, 0.75], None, same, y) == (0.75, {})  # nothing to choose on
    assert choose_weight([0.3], network, functionals, y) == (0.3, {})
    # The same UA from other recalls (1, 1, 1, 3 of 7 against 3, 1, 1, 1 of 7: their float means
    # differ in the last bit) is a tie, which goes to the middle.
    y = np.repeat(np.arange(4), 7)
    by_network, by_functionals = _predicting(y, [3, 1, 1, 1]), _predicting(y, [1, 1, 1, 3])
    network, functionals = 0.9 * by_network + 0.1 * by_functionals, 0.7 * by_functionals + 0.3 * by_network
    weight, scores = choose_weight([0.5, 0.75], network, functionals, y)
    assert weight == 0.5 and scores["0.5"] == scores["0.75"]


def _predicting(y, correct_per_class):
    """One-hot predictions right on the first `correct_per_class[k]` rows of class k, and the
    next class on the others."""
    predicted = [k if list(y[:i]).count(k) < correct_per_class[k] else (k + 1) % 4 for i, k in enumerate(y)]
    return np.eye(4)[predicted]


def test_classifier_round_trip_and_fusion(tmp_path):
    rng = np.random.default_rng(0)
    heads = {c: FunctionalsHead(rng.normal(size=(5, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32), w)
             for c, w in (("speaker", 0.25), ("pooled", 0.75))}
    heads["pooled"].support = rng.normal(size=(6, 5)).astype(np.float32)  # an RBF head: its basis
    heads["pooled"].mean, heads["pooled"].scale = np.zeros(5, np.float32), np.full(5, 2.0, np.float32)
    heads["pooled"].gamma, heads["pooled"].kernel = 0.1, rng.normal(size=(6, 3)).astype(np.float32)
    path = tmp_path / "functionals.npz"
    FunctionalsClassifier(heads).save(path)
    loaded = FunctionalsClassifier.load(path)
    assert (loaded.heads["speaker"].weight, loaded.heads["pooled"].weight) == (0.25, 0.75)
    assert loaded.heads["speaker"].support is None and loaded.heads["pooled"].gamma == 0.1
    x = rng.normal(size=(4, 5))
    for condition in ("speaker", "pooled"):
        np.testing.assert_array_equal(loaded.heads[condition].probabilities(x), heads[condition].probabilities(x))
    basis = np.exp(-0.1 * ((x[:, None, :] / 2.0 - heads["pooled"].support[None]) ** 2).sum(axis=2))
    logits = basis @ heads["pooled"].kernel + heads["pooled"].bias
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(loaded.heads["pooled"].probabilities(x), expected, atol=1e-6)
    network, functionals = np.full((4, 3), 1 / 3), loaded.heads["speaker"].probabilities(x)
    np.testing.assert_allclose(loaded.fuse(network, functionals, "speaker"), 0.75 * network + 0.25 * functionals,
                               atol=1e-7)
    (tmp_path / "bad.npz").write_bytes(b"not an npz")
    with pytest.raises(SerKerasError, match="bad.npz: not a functionals classifier"):
        FunctionalsClassifier.load(tmp_path / "bad.npz")


def test_speaker_znorm_uses_each_speakers_own_statistics():
    x = np.array([[1.0, 5.0], [3.0, 5.0], [10.0, 0.0], [30.0, 2.0]])
    out = speaker_znorm(x, ["a", "a", "b", "b"])
    np.testing.assert_allclose(out, [[-1, 0], [1, 0], [-1, -1], [1, 1]], atol=1e-6)  # a's constant column: 0
    mean, std = znorm_statistics(x[:2])
    np.testing.assert_allclose(mean, [2.0, 5.0]) and np.testing.assert_allclose(std, [1.0, 1.0])


def test_a_default_fit_reports_the_network_the_functionals_and_their_fusion(trained_demo_run):
    results = json.loads((trained_demo_run / "results.json").read_text())
    labels = results["labels"]
    assert set(results["components"]) == {"network", "functionals"}
    assert set(results["serving"]["components"]) == {"network", "functionals"}
    fold = results["folds"][0]
    classifier = FunctionalsClassifier.load(trained_demo_run / "folds" / fold["name"] / "functionals.npz")
    weights = load_run_config(trained_demo_run)[0].model.functionals_weights
    for condition in ("speaker", "pooled"):
        chosen = fold["functionals"][condition]
        assert chosen["weight"] in weights and chosen["val_ua"] is not None
        assert chosen["fused_val_ua"][str(chosen["weight"])] == max(chosen["fused_val_ua"].values())
        assert classifier.heads[condition].weight == chosen["weight"]
    fold_dir = trained_demo_run / "folds" / fold["name"]
    frame = pd.read_csv(fold_dir / "predictions.csv")
    assert {"network_predicted", "functionals_predicted"} <= set(frame.columns)
    assert frame["predicted"].tolist() == [labels[i] for i in frame[[f"p_{c}" for c in labels]].to_numpy().argmax(1)]
