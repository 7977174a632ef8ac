"""Shared, once-per-session helpers of the export and predict tests (no tests here).

``tiny_run(experiment)`` writes a run directory by hand (``models.build_model`` + a
``frontend.npz`` of random statistics) in about a second; ``trained_demo_run()`` trains a
real run of the default experiment with ``evaluation.fit.fit`` on the demo corpus (one fold, one epoch, small
SAE) once per test session; ``exported(run_dir, jit)`` exports a run once. Results are
cached at module level, so every test module that imports these shares them.
"""

from __future__ import annotations

import atexit
import pathlib
import shutil
import tempfile

import numpy as np
import soundfile

_ROOT = pathlib.Path(tempfile.mkdtemp(prefix="ser_keras_export_tests_"))
atexit.register(shutil.rmtree, _ROOT, ignore_errors=True)
_CACHE: dict = {}

LABELS = ("angry", "happy", "neutral", "sad")

# Tiny-model overrides: fast to train and to export, same architecture family.
TRAIN_OVERRIDES = [
    "train.protocol=random", "train.folds=4", "train.fold=0", "train.epochs=1",
    "sae.epochs=1", "sae.patches_per_size=300", "train.batch_size=16",
]


def root() -> pathlib.Path:
    return _ROOT


def tiny_config(experiment: str = "exp4", level: bool = False):
    from ser_keras.config import load_config

    overrides = ["features.level_normalization=true"] if level else []
    if experiment in ("exp3", "exp2"):
        overrides += ["model.lstm_units=8"]
    if experiment == "exp2":
        overrides += ["model.dense_units=16"]
    return load_config(experiment=experiment, corpus="demo", overrides=overrides)


def tiny_run(experiment: str = "exp4", seed: int = 0, level: bool = False) -> pathlib.Path:
    """A hand-made run directory: untrained model, random normalisation/PCA statistics;
    `level`: with ``features.level_normalization``."""
    key = ("tiny", experiment, seed, level)
    if key in _CACHE:
        return _CACHE[key]
    from ser_keras.config import save_run_config

    config = tiny_config(experiment, level)
    run_dir = _ROOT / (f"tiny_{experiment}_{seed}" + ("_level" if level else ""))
    fold_dir = run_dir / "folds" / "fold_0"
    fold_dir.mkdir(parents=True)
    save_run_config(config, run_dir, LABELS)
    if experiment == "exp1":
        _CACHE[key] = run_dir
        return run_dir
    from ser_keras.models import build_model

    rng = np.random.default_rng(seed)
    if experiment == "exp2":
        from ser_keras.features.llds import lld_names

        dim = len(lld_names(config.features))
        stats = dict(norm_mean=rng.normal(0, 1, dim), norm_std=rng.uniform(0.5, 2, dim),
                     pca_mean=np.zeros(dim, np.float32), pca_components=np.eye(dim, dtype=np.float32))
        k = dim
    else:
        dim, k = config.features.n_bins, config.features.pca_components
        stats = dict(norm_mean=rng.normal(-8, 2, dim), norm_std=rng.uniform(1, 3, dim),
                     pca_mean=rng.normal(0, 0.1, dim),
                     pca_components=np.linalg.qr(rng.normal(size=(dim, dim)))[0][:, :k])
    stats = {name: np.asarray(value, np.float32) for name, value in stats.items()}
    stats["sample_rate"] = np.array(config.data.sample_rate)
    np.savez(fold_dir / "frontend.npz", **stats)
    model = build_model(config, len(LABELS), k)
    model.save(fold_dir / "model.keras")
    _CACHE[key] = run_dir
    return run_dir


def trained_demo_run() -> pathlib.Path:
    """A real run of the default experiment (the shipped model) on the demo corpus
    (evaluation.fit.fit, one fold, one epoch)."""
    if "trained" in _CACHE:
        return _CACHE["trained"]
    from ser_keras.config import DEFAULT_EXPERIMENT, load_config
    from ser_keras.evaluation.fit import fit

    config = load_config(experiment=DEFAULT_EXPERIMENT, corpus="demo", overrides=TRAIN_OVERRIDES)
    run_dir = _ROOT / f"demo_{DEFAULT_EXPERIMENT}"
    fit(config, run_dir, progress=False)
    _CACHE["trained"] = run_dir
    return run_dir


def demo_files() -> list:
    """The demo corpus's audio files (generated once per session in the test cache)."""
    from ser_keras.config import load_config
    from ser_keras.corpora import load_manifest

    config = load_config(experiment="exp4", corpus="demo")
    manifest = load_manifest("demo", None, config.data)
    return [pathlib.Path(p) for p in manifest["path"]]


def exported(run_dir: pathlib.Path, jit_compile: bool = False, fused_lstm: bool = True) -> pathlib.Path:
    """The export of `run_dir` (default: the shipped settings), made once per session."""
    key = ("export", str(run_dir), jit_compile, fused_lstm)
    if key not in _CACHE:
        from ser_keras.export.serving import export_run

        kind = "xla" if jit_compile else ("fused" if fused_lstm else "keras")
        out = _ROOT / f"export_{run_dir.name}_{kind}"
        _CACHE[key] = export_run(run_dir, out, jit_compile=jit_compile, fused_lstm=fused_lstm)
    return _CACHE[key]


def write_wav(path: pathlib.Path, waveform: np.ndarray, sample_rate: int = 16000, **kwargs) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), waveform, sample_rate, **kwargs)
    return path


def tone(seconds: float, sample_rate: int = 16000, freq: float = 220.0, seed: int = 0) -> np.ndarray:
    """A voiced-ish test signal: harmonics with a slow vibrato plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    f = freq * (1 + 0.05 * np.sin(2 * np.pi * 3 * t))
    phase = 2 * np.pi * np.cumsum(f) / sample_rate
    x = sum(np.sin(h * phase) / h for h in range(1, 6)) * (0.5 + 0.5 * np.sin(2 * np.pi * 0.7 * t) ** 2)
    return (0.2 * x + 0.01 * rng.normal(size=t.shape)).astype(np.float32)
