"""Shared test fixtures and helpers.

Tests never write into the user's ~/.cache: the whole test run uses one temporary cache
(features, generated demo corpus), shared by its xdist workers (the cache's writes are atomic,
as for ``fit --jobs``), so the demo corpus is generated and its features extracted once.
Real-corpus tests call ``corpus_dir(name)``, which skips with a reason when
../shared/corpora is absent (a user's machine will not have it).

The export, serving and predict tests share runs and exports: ``tiny_run(experiment)`` writes
a run directory by hand (``models.build_model`` + a ``frontend.npz`` of random statistics) in
about a second; ``trained_demo_run`` is a real run of the default experiment on the demo corpus
(one fold, one epoch, small SAE), and ``trained_export`` its export; ``exported(run_dir)``
exports a run. All of them are built once for all xdist workers (``build_once``, under
``shared_root``); a test's own files go to its worker's ``export_root`` or ``tmp_path``. The
costliest (the trained default, its export, the parity predictions, a LOSO run: ``PREBUILT``)
are started in a background process as soon as the first worker has collected the tests, so
that no worker sits idle on ``build_once``'s lock while another builds them.
"""

import contextlib
import importlib
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest
import soundfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_CORPORA = pathlib.Path(
    os.environ.get("SER_KERAS_CORPORA", REPO_ROOT.parent / "shared" / "corpora")
)


def corpus_dir(name: str) -> pathlib.Path:
    """../shared/corpora/<name>, or skip the calling test with the reason."""
    path = SHARED_CORPORA / name
    if not path.is_dir():
        pytest.skip(f"real corpus '{name}' not found at {path} (set SER_KERAS_CORPORA to run this test)")
    return path


def _run_root(basetemp) -> pathlib.Path:
    """Where what every xdist worker of this test run shares lives: beside the workers' own
    basetemps (pytest removes it with them); without xdist, the session's basetemp."""
    return pathlib.Path(basetemp).parent if os.environ.get("PYTEST_XDIST_WORKER") else pathlib.Path(basetemp)


def _shared_dir(basetemp) -> pathlib.Path:
    return _run_root(pathlib.Path(basetemp).resolve()) / "shared"


def pytest_configure(config):
    """Point SER_KERAS_CACHE at the test run's cache before any test imports the package."""
    basetemp = config.option.basetemp  # an xdist worker's is given; pytest's own is made later
    if os.environ.get("PYTEST_XDIST_WORKER") and basetemp:
        cache = _run_root(basetemp) / "ser_keras_cache"
        cache.mkdir(parents=True, exist_ok=True)
    else:
        cache = pathlib.Path(tempfile.mkdtemp(prefix="ser_keras_test_cache_"))
    os.environ["SER_KERAS_CACHE"] = str(cache)


@pytest.fixture(scope="session")
def session_cache() -> pathlib.Path:
    """The temporary cache directory shared by the whole test run."""
    return pathlib.Path(os.environ["SER_KERAS_CACHE"])


# -- runs and exports shared by the export, serving and predict tests ------------------------

LABELS = ("angry", "happy", "neutral", "sad")

# Tiny-model overrides: fast to train and to export, same architecture family.
TRAIN_OVERRIDES = [
    "train.protocol=random", "train.folds=4", "runtime.fold=0", "train.epochs=1",
    "sae.epochs=1", "sae.patches_per_size=300", "train.batch_size=16",
]


def tiny_export_config(experiment: str = "exp4", level: bool = False):
    """The shipped config of `experiment` on the demo corpus, with small recurrent layers for
    exp2/exp3; `level`: with ``features.level_normalization``."""
    from ser_keras.config import load_config

    overrides = ["features.level_normalization=true"] if level else []
    if experiment in ("exp3", "exp2"):
        overrides += ["model.lstm_units=8"]
    if experiment == "exp2":
        overrides += ["model.dense_units=16"]
    return load_config(experiment=experiment, corpus="demo", overrides=overrides)


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


@pytest.fixture(scope="session")
def export_root(tmp_path_factory) -> pathlib.Path:
    """Where the session's shared runs and exports live (pytest removes it with its basetemp)."""
    return tmp_path_factory.mktemp("export_tests")


@pytest.fixture(scope="session")
def tiny_run(shared_root):
    """``tiny_run(experiment="exp4", seed=0, level=False) -> run directory``: a hand-made run
    (untrained model, random normalisation/PCA statistics), made once per test run."""
    made = {}

    def make(experiment: str = "exp4", seed: int = 0, level: bool = False) -> pathlib.Path:
        key = (experiment, seed, level)
        if key not in made:
            name = f"tiny_{experiment}_{seed}" + ("_level" if level else "")
            made[key] = build_once(shared_root, name, lambda run_dir: _write_tiny_run(run_dir, experiment, seed, level))
        return made[key]

    return make


def _write_tiny_run(run_dir: pathlib.Path, experiment: str, seed: int, level: bool) -> None:
    from ser_keras.rundir import save_run_config
    from ser_keras.models import build_model

    config = tiny_export_config(experiment, level)
    fold_dir = run_dir / "folds" / "fold_0"
    fold_dir.mkdir(parents=True)
    save_run_config(config, run_dir, LABELS)
    if experiment == "exp1":
        return
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
    build_model(config, len(LABELS), k).save(fold_dir / "model.keras")


@pytest.fixture(scope="session")
def shared_root(tmp_path_factory) -> pathlib.Path:
    """A directory that every xdist worker of this test run shares (beside the workers' own
    basetemps; pytest removes it with them): what is costly to build is built there once."""
    root = _shared_dir(tmp_path_factory.getbasetemp())
    root.mkdir(exist_ok=True)
    return root


@contextlib.contextmanager
def _exclusive(lock_file: pathlib.Path):
    """Hold an exclusive lock on `lock_file` (one process of the test run at a time)."""
    import fcntl

    with open(lock_file, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_once(root: pathlib.Path, name: str, build) -> pathlib.Path:
    """``root / name``, made by ``build(path)`` by the first worker that asks; the others wait
    for it and reuse it (a build that failed part-way is started afresh by the next asker)."""
    target, done = root / name, root / f"{name}.done"
    with _exclusive(root / f"{name}.lock"):
        if not done.exists():
            shutil.rmtree(target, ignore_errors=True)
            build(target)
            done.touch()
    return target


def build_trained_run(root: pathlib.Path) -> pathlib.Path:
    """A real run of the default experiment (the shipped model) on the demo corpus
    (evaluation.fit.fit, one fold, one epoch)."""
    from ser_keras.config import DEFAULT_EXPERIMENT, load_config
    from ser_keras.evaluation.fit import fit

    def train(run_dir):
        config = load_config(experiment=DEFAULT_EXPERIMENT, corpus="demo", overrides=TRAIN_OVERRIDES)
        fit(config, run_dir, progress=False)

    return build_once(root, f"demo_{DEFAULT_EXPERIMENT}", train)


def build_trained_export(root: pathlib.Path) -> pathlib.Path:
    """The export of ``build_trained_run`` (SavedModel and model.tflite)."""
    from ser_keras.export.serving import export_run

    run_dir = build_trained_run(root)
    return build_once(root, "export_trained_demo", lambda out: export_run(run_dir, out))


@pytest.fixture(scope="session")
def trained_demo_run(shared_root) -> pathlib.Path:
    """``build_trained_run``, trained once per test run for all workers."""
    return build_trained_run(shared_root)


@pytest.fixture(scope="session")
def trained_export(shared_root, trained_demo_run) -> pathlib.Path:
    """``build_trained_export``, made once per test run for all workers."""
    return build_trained_export(shared_root)


# -- the costliest shared builds, started in the background ----------------------------------

# fixture -> the builder that makes what it returns (builders named "module:function", each
# taking the shared root; a builder builds what it needs first).
PREBUILT = {
    "trained_export": "tests.conftest:build_trained_export",
    "parity": "tests.test_export_parity:build_parity",
    "loso_run": "tests.test_export_parity:build_loso_run",
}


def pytest_collection_modifyitems(session, config, items):
    """On the first xdist worker, once the tests are collected: build what they will ask for
    of ``PREBUILT`` in a process of its own (its log: ``prebuild.log`` in the shared root)."""
    if os.environ.get("PYTEST_XDIST_WORKER") != "gw0" or not config.option.basetemp:
        return
    wanted = {name for item in items for name in getattr(item, "fixturenames", ())}
    builders = [builder for fixture, builder in PREBUILT.items() if fixture in wanted]
    if builders:
        root = _shared_dir(config.option.basetemp)
        root.mkdir(parents=True, exist_ok=True)
        with open(root / "prebuild.log", "w") as log:
            config.prebuild = subprocess.Popen([sys.executable, __file__, str(root), *builders],
                                               cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)


def pytest_sessionfinish(session, exitstatus):
    """The background build ends with the session: it is awaited (the other worker may still
    wait on it), or stopped when the session was interrupted."""
    process = getattr(session.config, "prebuild", None)
    if process is not None:
        if exitstatus == pytest.ExitCode.INTERRUPTED:
            process.kill()
        process.wait()


def _prebuild(root: pathlib.Path, builders) -> None:
    for builder in builders:
        module, function = builder.split(":")
        getattr(importlib.import_module(module), function)(root)


@pytest.fixture(scope="session")
def demo_files() -> list:
    """The demo corpus's audio files (generated once per session in the test cache)."""
    from ser_keras.config import load_config
    from ser_keras.corpora import load_manifest

    config = load_config(experiment="exp4", corpus="demo")
    return [pathlib.Path(p) for p in load_manifest("demo", None, config.data)["path"]]


@pytest.fixture(scope="session")
def exported(shared_root):
    """``exported(run_dir, jit_compile=False, litert=False) -> export directory``: the export of a
    run that every worker shares (``tiny_run``; the SavedModel, and model.tflite with `litert`),
    made once per test run."""
    made = {}

    def export(run_dir: pathlib.Path, jit_compile: bool = False, litert: bool = False) -> pathlib.Path:
        assert run_dir.parent == shared_root, f"{run_dir}: not a shared run (tiny_run)"
        key = (str(run_dir), jit_compile, litert)
        if key not in made:
            from ser_keras.export.serving import export_run

            name = f"export_{run_dir.name}_{'xla' if jit_compile else 'graph'}" + ("_litert" if litert else "")
            made[key] = build_once(shared_root, name,
                                   lambda out: export_run(run_dir, out, jit_compile=jit_compile, litert=litert))
        return made[key]

    return export


if __name__ == "__main__":  # the background build (pytest_collection_modifyitems)
    sys.path.insert(0, str(REPO_ROOT))
    _prebuild(pathlib.Path(sys.argv[1]), sys.argv[2:])
