"""The run directory of ``ser-keras fit``: every file name and path of a run, in one place.

A run directory holds::

    config.yaml              the resolved config, the label order, the package version
                             (``save_run_config`` / ``load_run_config``)
    folds.json               the protocol and, per fold, its test utterances (corpus-relative)
    results.json             per-fold and pooled WA/UA (evaluation.results)
    predictions.csv          the folds' test predictions, pooled
    serving_predictions.csv  the same, each recording served alone (speaker-normalised models)
    confusion_matrix.png     the pooled confusion matrix
    estimate.json            protocol "all": the figure of a run that estimates the model
    tensorboard/<corpus>/<fold>/
    folds/<fold>/            a ``FoldDir`` (its checkpoint/: a ``CheckpointDir``)

and an export directory a copy of one fold's ``model.keras`` and fitted front end, plus
``export.json``. ``RunDir`` and ``FoldDir`` name these paths; nobody else spells them. The
writers here are atomic (a temporary file renamed over the target), so a run killed mid-write
never leaves half a file that a resumed run would read.
"""

from __future__ import annotations

import json
import os
import pathlib
import typing

import yaml

from ser_keras import __version__
from ser_keras.config import SVM, Config, config_from_dict
from ser_keras.config_yaml import load_yaml
from ser_keras.errors import SerKerasError

CONFIG_FILE = "config.yaml"
FOLDS_FILE = "folds.json"
RESULTS_FILE = "results.json"
PREDICTIONS_FILE = "predictions.csv"
SERVING_PREDICTIONS_FILE = "serving_predictions.csv"
CONFUSION_FILE = "confusion_matrix.png"
ESTIMATE_FILE = "estimate.json"
FOLD_RESULT_FILE = "result.json"
KERAS_MODEL_FILE = "model.keras"
SVM_MODEL_FILE = "model.joblib"
# The fitted front end (features.frontend.FittedFrontEnd): the arrays serving bakes in, and the
# normaliser's per-speaker statistics.
FRONTEND_FILE = "frontend.npz"
NORMALIZER_FILE = "normalizer.npz"
EXPORT_FILE = "export.json"
SAVED_MODEL_FILE = "saved_model.pb"
# A fold's checkpoint/ (training.callbacks): the early-stopping state and best weights, and in
# backup/ the epoch checkpoints.
EARLY_STOPPING_FILE = "early_stopping.json"
BEST_WEIGHTS_FILE = "best.weights.npz"
LATEST_CHECKPOINT_FILE = "latest.npz"
PREVIOUS_CHECKPOINT_FILE = "previous.npz"


def atomic_write_text(path, text: str) -> None:
    """Write `text` to `path` through a temporary file renamed over it."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def atomic_write_json(path, payload, indent: int = 1) -> None:
    atomic_write_text(path, json.dumps(payload, indent=indent))


def read_json(path) -> typing.Optional[dict]:
    """The JSON object at `path`, or None when it is missing or unreadable."""
    try:
        return json.loads(pathlib.Path(path).read_text())
    except (OSError, ValueError):
        return None


def save_run_config(config: Config, run_dir, labels: typing.Sequence[str]) -> pathlib.Path:
    """Write the resolved config, the label order and the package version into the run's
    config.yaml (the run directory is made if needed)."""
    path = RunDir(run_dir).config
    payload = {"ser_keras_version": __version__, "labels": list(labels), "config": config.to_dict()}
    atomic_write_text(path, yaml.safe_dump(payload, sort_keys=False))
    return path


def load_run_config(run_dir) -> tuple:
    """(Config, labels) saved by `save_run_config`. A key the current Config does not have (a
    run written by a version with a setting since removed) is an error naming the file and key:
    such a run cannot be repeated, or its model rebuilt, by this code."""
    path = RunDir(run_dir).config
    data = load_yaml(path)
    if "config" not in data or "labels" not in data:
        raise SerKerasError(f"{path}: not a ser_keras run config (missing 'config' or 'labels')")
    try:
        config = config_from_dict(data["config"], str(path))
    except SerKerasError as exc:
        raise SerKerasError(f"{exc} (the run was written by ser_keras {data.get('ser_keras_version', '?')}; "
                            f"this is {__version__})") from None
    return config, list(data["labels"])


def common_root(paths) -> str:
    """The longest common folder of `paths` ('' if none): ``folds.json`` stores paths relative
    to it, so a run names its utterances independently of where the corpus lives."""
    try:
        return os.path.commonpath(list(paths)) if len(paths) else ""
    except ValueError:
        return ""


def relative_path(path: str, root: str) -> str:
    return os.path.relpath(path, root) if root else path


class _Directory:
    """A folder of known files (``path``), usable where a path is (``os.fspath``, ``/``)."""

    def __init__(self, path):
        self.path = pathlib.Path(path)

    def __fspath__(self) -> str:
        return str(self.path)

    def __truediv__(self, other) -> pathlib.Path:
        return self.path / other


class CheckpointDir(_Directory):
    """``checkpoint/`` of a fold (or of its ``refit/``): what resuming its training reads."""

    early_stopping = property(lambda self: self.path / EARLY_STOPPING_FILE)
    best_weights = property(lambda self: self.path / BEST_WEIGHTS_FILE)
    # The epoch checkpoints (latest and previous), training.callbacks.EpochCheckpoint.
    backup = property(lambda self: self.path / "backup")


class FoldDir(_Directory):
    """``folds/<fold>/`` of a run: what one fold writes."""

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def run_dir(self) -> "RunDir":
        return RunDir(self.path.parent.parent)

    keras_model = property(lambda self: self.path / KERAS_MODEL_FILE)
    svm_model = property(lambda self: self.path / SVM_MODEL_FILE)
    frontend = property(lambda self: self.path / FRONTEND_FILE)
    normalizer = property(lambda self: self.path / NORMALIZER_FILE)
    sae_kernels = property(lambda self: self.path / "sae_kernels.npz")
    functionals = property(lambda self: self.path / "functionals.npz")
    predictions = property(lambda self: self.path / PREDICTIONS_FILE)
    serving_predictions = property(lambda self: self.path / SERVING_PREDICTIONS_FILE)
    result = property(lambda self: self.path / FOLD_RESULT_FILE)
    history = property(lambda self: self.path / "history.csv")
    elapsed = property(lambda self: self.path / "elapsed.json")
    checkpoint = property(lambda self: self.path / "checkpoint")
    refit = property(lambda self: self.path / "refit")

    def model(self, classifier: str) -> pathlib.Path:
        """The saved model of a ``model.classifier`` ("svm" or "network")."""
        return self.svm_model if classifier == SVM else self.keras_model

    def done(self) -> bool:
        """A fold is done once its result.json (written last, atomically) exists."""
        return self.result.is_file()

    def read_result(self) -> dict:
        """The fold's result.json ({} when it is missing or unreadable)."""
        return read_json(self.result) or {}


class RunDir(_Directory):
    """A run directory written by ``ser-keras fit`` (see the module docstring)."""

    config = property(lambda self: self.path / CONFIG_FILE)
    folds_file = property(lambda self: self.path / FOLDS_FILE)
    results = property(lambda self: self.path / RESULTS_FILE)
    predictions = property(lambda self: self.path / PREDICTIONS_FILE)
    serving_predictions = property(lambda self: self.path / SERVING_PREDICTIONS_FILE)
    confusion_png = property(lambda self: self.path / CONFUSION_FILE)
    estimate = property(lambda self: self.path / ESTIMATE_FILE)
    folds_dir = property(lambda self: self.path / "folds")

    def fold(self, name: str) -> FoldDir:
        return FoldDir(self.folds_dir / name)

    def tensorboard(self, corpus: str, fold: str, refit: bool = False) -> pathlib.Path:
        """TensorBoard logs of a fold (``refit``: of its refit phase, a subfolder)."""
        return self.path / "tensorboard" / corpus / fold / ("refit" if refit else "")

    def cross_corpus(self, corpus: str) -> pathlib.Path:
        return self.path / "cross_corpus" / corpus

    def is_run(self) -> bool:
        """config.yaml and folds/: what ``predict`` takes for a run directory."""
        return self.config.is_file() and self.folds_dir.is_dir()

    # ------------------------------------------------------------------------- folds.json

    def read_folds(self) -> list:
        """The folds of folds.json (dicts with name, test_paths, ...); raises SerKerasError
        naming the file when it is missing or unreadable."""
        data = read_json(self.folds_file)
        if data is None:
            raise SerKerasError(f"{self.folds_file}: missing; the run directory is incomplete")
        if not isinstance(data, dict) or not isinstance(data.get("folds"), list):
            raise SerKerasError(f"{self.folds_file}: not a folds file (no 'folds' list)")
        return data["folds"]

    def fold_names(self) -> list:
        """Every fold name of the run's protocol, in protocol order (folds.json)."""
        return [str(f["name"]) for f in self.read_folds()]

    def protocol_fold_names(self) -> list:
        """The protocol's fold names from folds.json, else from results.json, else []."""
        for path in (self.folds_file, self.results):
            data = read_json(path)
            folds = data.get("folds") if isinstance(data, dict) else None
            if isinstance(folds, dict):
                return [str(key) for key in folds]
            if isinstance(folds, list):
                names = [str(f.get("name")) if isinstance(f, dict) else str(f) for f in folds]
                if names:
                    return names
        return []

    def fold_entry(self, name: str) -> typing.Optional[dict]:
        """folds.json's entry of fold `name`, or None (no such fold, or no readable file)."""
        data = read_json(self.folds_file)
        try:
            return next((f for f in data["folds"] if f.get("name") == name), None)
        except (TypeError, KeyError, AttributeError):
            return None

    def check_folds(self, payload: dict) -> None:
        """Write folds.json, or check that the one there is `payload`, so a resumed run never
        mixes folds drawn from a different manifest."""
        path = self.folds_file
        if path.is_file():
            old = read_json(path)
            if old is not None and old != payload:
                raise SerKerasError(
                    f"{path}: the folds of this run differ from the corpus as scanned now "
                    "(files added or removed?); use another --run-dir"
                )
            if old is not None:
                return
        atomic_write_json(path, payload)
