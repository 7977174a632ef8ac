"""Experiment 1: LLD functionals -> standardisation -> RBF SVM, C (and gamma) grid-searched."""

from __future__ import annotations

import numpy as np

from ser_keras.config import Config


def _gammas(values) -> list:
    """'scale' / 'auto' stay strings; numbers (YAML may hand '1e-3' over as a string) become
    floats (`Config.validate()` has checked them)."""
    return [value if value in ("scale", "auto") else float(value) for value in values]


def build_svm(config: Config):
    """An unfitted sklearn estimator for exp1.

    `GridSearchCV(Pipeline([StandardScaler, SVC(kernel="rbf")]))` over
    `config.model.svm_c_grid` x `config.model.svm_gamma_grid`, with a stratified, shuffled
    `svm_cv_folds`-fold inner split seeded by `config.train.seed`, scored by
    `svm_scoring`, refit on all training data. The scaler is inside the pipeline, so each
    inner fold is standardised on its own training part only.
    """
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    m = config.model
    c_grid = [float(c) for c in m.svm_c_grid]
    gammas = _gammas(m.svm_gamma_grid)
    pipeline = Pipeline(
        [
            ("scaler", StandardScaler()),
            ("svc", SVC(kernel="rbf", random_state=config.train.seed)),
        ]
    )
    return GridSearchCV(
        pipeline,
        param_grid={"svc__C": c_grid, "svc__gamma": gammas},
        scoring=m.svm_scoring,
        cv=StratifiedKFold(n_splits=m.svm_cv_folds, shuffle=True, random_state=config.train.seed),
        n_jobs=config.runtime.svm_jobs,
        refit=True,
    )


def svm_scores(model, x: np.ndarray, n_classes: int) -> np.ndarray:
    """Class scores of a fitted SVM model (``build_svm``) as a (n, n_classes) distribution.

    ``predict_proba`` where the SVC was fitted with probability=True; otherwise a softmax of the
    one-vs-rest decision function (whose argmax is the SVM's decision), not calibrated.
    """
    classes = np.asarray(getattr(model, "classes_", np.arange(n_classes)))
    if hasattr(model, "predict_proba"):
        try:
            raw = model.predict_proba(x)
        except AttributeError:
            raw = None
    else:
        raw = None
    if raw is None:
        decision = np.asarray(model.decision_function(x), dtype=np.float64)
        if decision.ndim == 1:  # two classes
            decision = np.stack([-decision, decision], axis=1)
        decision = decision - decision.max(axis=1, keepdims=True)
        raw = np.exp(decision * 4.0)
        raw /= raw.sum(axis=1, keepdims=True)
    out = np.zeros((len(x), n_classes))
    out[:, classes.astype(int)] = raw
    return out
