"""WA / UA / confusion matrices against hand-computed values, and the Fig. 3-style PNG."""

import numpy as np

from ser_keras import metrics
from ser_keras.evaluation.plots import save_confusion_png


def test_wa_ua_and_confusion_by_hand():
    y_true = [0, 0, 0, 0, 1, 1, 2, 2, 2, 2]
    y_pred = [0, 0, 0, 1, 1, 0, 2, 2, 1, 0]
    cm = metrics.confusion_matrix(y_true, y_pred, 3)
    np.testing.assert_array_equal(cm, [[3, 1, 0], [1, 1, 0], [1, 1, 2]])
    assert metrics.weighted_accuracy(cm) == 0.6
    assert abs(metrics.unweighted_accuracy(cm) - (0.75 + 0.5 + 0.5) / 3) < 1e-12
    np.testing.assert_allclose(metrics.row_normalized(cm)[0], [75, 25, 0])
    summary = metrics.summarize(y_true, y_pred, ["a", "b", "c"])
    assert summary["n_per_class"] == {"a": 4, "b": 2, "c": 4}
    assert summary["confusion"] == cm.tolist()
    assert summary["confusion_percent"][1] == [50.0, 50.0, 0.0]


def test_ua_ignores_classes_absent_from_the_truth():
    cm = metrics.confusion_matrix([0, 0, 1], [0, 2, 1], 3)
    assert abs(metrics.unweighted_accuracy(cm) - 0.75) < 1e-12
    assert np.isnan(metrics.per_class_recall(cm)[2])
    assert np.all(metrics.row_normalized(cm)[2] == 0)


def test_sklearn_agrees():
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 5, 200)
    y_pred = np.where(rng.random(200) < 0.6, y_true, rng.integers(0, 5, 200))
    cm = metrics.confusion_matrix(y_true, y_pred, 5)
    assert abs(metrics.weighted_accuracy(cm) - accuracy_score(y_true, y_pred)) < 1e-12
    assert abs(metrics.unweighted_accuracy(cm) - balanced_accuracy_score(y_true, y_pred)) < 1e-12


def test_confusion_png(tmp_path):
    cm = np.array([[8, 2], [1, 9]])
    path = save_confusion_png(cm, ["angry", "neutral"], tmp_path / "cm.png", 0.85, 0.85, "leave-one-speaker-out")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_confusion_image_cells_follow_the_row_percentages():
    """The TensorBoard raster: one cell per (true, predicted) pair, darker where the row % is
    higher, the 100 % diagonal cell darkest; a larger matrix gives a larger image."""
    from ser_keras.training.confusion_image import CELL, confusion_image

    cm = np.array([[10, 0, 0], [5, 5, 0], [0, 2, 8]])
    image = confusion_image(cm, ["angry", "happy", "sad"], "title — line one\nline two")
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    # Find the grid: the darkest blue (the colour map's top) is the 100 % cell (row 0, column 0).
    from matplotlib import colormaps

    top_colour = (np.asarray(colormaps["Blues"](1.0))[:3] * 255).astype(np.uint8)
    brightness = image.astype(int).sum(axis=2)
    cells = {}
    ys, xs = np.nonzero(np.all(image == top_colour, axis=2))
    top, left = ys.min(), xs.min()
    for i in range(3):
        for j in range(3):
            # sample near the cell's corner, away from its centred number
            cells[i, j] = brightness[top + i * CELL + 3, left + j * CELL + 3]
    assert cells[0, 0] < cells[2, 2] < cells[1, 0] < cells[2, 1] < cells[0, 1]
    assert cells[1, 0] == cells[1, 1]  # 50 % and 50 %
    bigger = confusion_image(np.eye(6, dtype=int), [f"class{k}" for k in range(6)])
    assert bigger.shape[0] > image.shape[0] and bigger.shape[1] > image.shape[1]
