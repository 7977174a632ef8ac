"""The field's standard classical baseline: openSMILE functionals + SVM, and ours beside it.

eGeMAPS (v02, 88 functionals) and ComParE 2016 (6373 functionals) from the optional
``opensmile`` package (``pip install 'ser_keras[opensmile]'``), and the package's own wide
functionals in TensorFlow ops (``features.functionals``, what exp5's functionals classifier
reads; "in-graph"), each scored twice on the same folds as the deep models:

- ``raw``: standardisation on the training fold (inside the SVM pipeline) only;
- ``speaker``: first every speaker's features are z-normalised with the mean/std of all of that
  speaker's utterances (no labels; a test speaker with its own utterances), the usual
  per-speaker normalisation of the literature.

The classifier is the exp1 SVM (``models.build_svm``: StandardScaler + RBF SVC, C and gamma
grid-searched on the training part). Features are cached in the output directory.

openSMILE's native library crashes (``malloc(): invalid size``) when it is loaded into a process
that has already loaded TensorFlow's, as ``reproduce`` has by the time it gets here; the
extraction then runs in a fresh process that imports this module (TensorFlow-free at import)
and openSMILE only.
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import multiprocessing
import pathlib
import sys
import time
import typing
import warnings

import numpy as np
import pandas as pd

from ser_keras.corpora import label_order, run_manifest
from ser_keras.data.splits import make_folds, select_folds
from ser_keras.errors import SerKerasError
from ser_keras.metrics import summarize

FEATURE_SETS = {"eGeMAPS": "eGeMAPSv02", "ComParE": "ComParE_2016"}


def opensmile_available() -> bool:
    # Found, not imported: importing it is harmless, loading its library after TensorFlow's is not.
    return "opensmile" in sys.modules or importlib.util.find_spec("opensmile") is not None


def extract_opensmile(manifest: pd.DataFrame, feature_set: str, cache_path: pathlib.Path,
                      progress: bool = False) -> np.ndarray:
    """(utterances, features) functionals of `feature_set` ("eGeMAPS" or "ComParE"), cached."""
    cache_path = pathlib.Path(cache_path)
    paths = [str(p) for p in manifest["path"]]
    if cache_path.is_file():
        with np.load(cache_path, allow_pickle=False) as data:
            if list(data["paths"]) == paths:
                return data["features"]
    rows = _extract_rows(paths, feature_set, progress)
    features = np.nan_to_num(np.stack(rows), nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache_path, paths=np.array(paths), features=features)
    return features


def _extract_rows(paths: list, feature_set: str, progress: bool) -> list:
    """`_functionals` here, or in a fresh process once TensorFlow is loaded (module docstring)."""
    if "tensorflow" not in sys.modules:
        return _functionals(paths, feature_set, progress)
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_functionals, paths, feature_set, progress).result()


def _functionals(paths: list, feature_set: str, progress: bool) -> list:
    """One row of `feature_set` functionals per file, in this process."""
    import opensmile
    from tqdm.auto import tqdm

    smile = opensmile.Smile(
        feature_set=getattr(opensmile.FeatureSet, FEATURE_SETS[feature_set]),
        feature_level=opensmile.FeatureLevel.Functionals,
    )
    rows = []
    for path in tqdm(paths, desc=f"openSMILE {feature_set}", disable=not progress, leave=False):
        try:
            frame = smile.process_file(path)
        except Exception as exc:  # openSMILE raises plain RuntimeErrors on unreadable audio
            raise SerKerasError(f"{path}: openSMILE could not extract {feature_set} from it ({exc})") from exc
        rows.append(np.asarray(frame.to_numpy(), dtype=np.float64).reshape(-1))
    return rows


def run_config_baseline(config, out_dir: pathlib.Path, progress: bool = False) -> list:
    """`run_baseline` on the corpus, protocol and folds that `fit` makes of `config` (its
    data, train.protocol/folds/seed/validation settings and runtime.fold)."""
    manifest = run_manifest(config)
    folds = select_folds(make_folds(manifest, config.train.protocol, config.train.folds, config.train.seed,
                                    config.train.validation_fraction, config.train.validation_split),
                         config.runtime.fold)
    return run_baseline(config, manifest, folds, label_order(manifest, config.data), out_dir, progress)


def run_baseline(config, manifest: pd.DataFrame, folds, labels: typing.Sequence[str], out_dir: pathlib.Path,
                 progress: bool = False) -> list:
    """Score in-graph/eGeMAPS/ComParE x raw/speaker-normalised on `folds`; one dict per variant."""
    # These import TensorFlow (see the module docstring).
    from ser_keras.features.extract import extract_wide_functionals
    from ser_keras.models import build_svm
    from ser_keras.models.functionals import speaker_znorm

    out_dir = pathlib.Path(out_dir)
    index = {label: i for i, label in enumerate(labels)}
    y = manifest["label"].map(index).to_numpy()
    speakers = manifest["speaker"].astype(str).to_numpy()
    rows = []
    for name in ("in-graph", *FEATURE_SETS):
        started = time.time()
        if name == "in-graph":
            features = np.nan_to_num(extract_wide_functionals(config, manifest, progress)[0])
        else:
            features = extract_opensmile(manifest, name, out_dir / f"opensmile_{name}.npz", progress)
        extraction_s = time.time() - started
        for variant in ("raw", "speaker"):
            started = time.time()
            x = speaker_znorm(features, speakers) if variant == "speaker" else features
            predicted = np.full(len(y), -1)
            for fold in folds:
                train = np.concatenate([fold.train, fold.validation])
                model = build_svm(config)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model.fit(x[train], y[train])
                predicted[fold.test] = model.predict(x[fold.test])
            tested = predicted >= 0
            summary = summarize(y[tested], predicted[tested], labels)
            rows.append({"name": f"{'ser_keras' if name == 'in-graph' else 'openSMILE'} {name} + SVM",
                         "feature_set": name, "normalisation": variant,
                         "wa": summary["wa"], "ua": summary["ua"], "n": summary["n"], "n_folds": len(folds),
                         "n_features": int(features.shape[1]),
                         "wall_time_s": round(time.time() - started + extraction_s, 1)})
            if progress:
                print(f"baseline {name} ({variant}): WA {100 * summary['wa']:.2f} %  UA {100 * summary['ua']:.2f} %")
    return rows
