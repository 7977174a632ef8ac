"""Experiment 1: LLD functionals -> standardisation -> RBF SVM, C (and gamma) grid-searched."""

from __future__ import annotations

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
