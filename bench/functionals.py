"""In-graph wide functionals (features.functionals) + classifiers, on the openSMILE baseline's folds.

    python bench/functionals.py --corpus emodb --data-dir ../shared/corpora/emodb
    python bench/functionals.py --corpus casia --data-dir ../shared/corpora/casia --classifiers rbf
    python bench/functionals.py --corpus emodb --data-dir ../shared/corpora/emodb --ablation
    python bench/functionals.py --corpus emodb --data-dir ../shared/corpora/emodb --features ComParE

Extracts ``features.functionals.extract_functionals`` for every recording once (cached under
``--out``), then scores it on exactly the folds ``evaluation.baseline`` scores openSMILE on (exp1's
run of the protocol: each fold's training + validation part trains, its test part is scored),
under two normalisations:

- ``spk``: every speaker z-normalised by all of their own utterances (``models.functionals.speaker_znorm``);
- ``raw``: standardisation over the training part only (what one served recording can use).

Classifiers: ``rbf`` is the exp1 SVM (``models.build_svm``, exactly as the baseline scores
openSMILE); ``linear`` a linear SVM and ``logreg`` an L2 logistic regression, each standardised
on the training part, with C chosen by UA over an inner leave-one-speaker-out of the training
speakers (``--inner-folds k``: k groups of training speakers instead, cheaper). ``--features
eGeMAPS|ComParE`` scores openSMILE's functionals (cached by the baseline or extracted in a
TensorFlow-free process) with the same classifiers instead. ``--ablation`` scores the RBF SVM
(spk) with each descriptor group left out (``--set`` narrows its C grid). Prints figures; not a test.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time
import warnings

import numpy as np

LINEAR_C = (1e-5, 1e-4, 1e-3, 1e-2)
GROUPS = {  # descriptor group -> name prefixes of its contours (deltas included)
    "energy/loudness": ("log_rms", "loudness"),
    "mel bands": ("mel",),
    "MFCC": ("mfcc",),
    "spectral shape": ("flux", "centroid", "variance", "skewness", "kurtosis", "entropy", "flatness", "slope",
                       "rolloff", "alpha_ratio", "hammarberg", "band", "zcr"),
    "F0/HNR/voicing": ("f0_semitones", "hnr", "voiced_"),
    "jitter/shimmer": ("jitter", "shimmer"),
    "formants": ("f1", "f2", "f3", "bw1", "bw2", "bw3"),
}


def setup(corpus: str, data_dir, overrides=(), protocol: str = "loso"):
    """(config, manifest, folds, labels) exactly as ``evaluation.baseline.run_config_baseline``."""
    from ser_keras.config import load_config
    from ser_keras.corpora import label_order, run_manifest
    from ser_keras.data.splits import make_folds, select_folds

    settings = [f"train.protocol={protocol}", *overrides] + ([f"runtime.data_dir={data_dir}"] if data_dir else [])
    config = load_config(experiment="exp1", corpus=corpus, overrides=settings)
    manifest = run_manifest(config)
    folds = select_folds(make_folds(manifest, config.train.protocol, config.train.folds, config.train.seed,
                                    config.train.validation_fraction, config.train.validation_split),
                         config.runtime.fold)
    return config, manifest, folds, label_order(manifest, config.data)


def extract(manifest, cache: pathlib.Path):
    """(features [utterances, n], names) of ``extract_functionals``, cached in ``cache``."""
    paths = [str(p) for p in manifest["path"]]
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as data:
            if list(data["paths"]) == paths:
                return data["features"], list(data["names"])
    from ser_keras.audio import load_audio
    from ser_keras.features.functionals import FEATURE_NAMES, extract_functionals

    started, rows, audio_s = time.time(), [], 0.0
    for i, path in enumerate(paths):
        waveform = load_audio(path)
        audio_s += len(waveform) / 16000.0
        rows.append(extract_functionals(waveform).numpy())
        if (i + 1) % 100 == 0:
            print(f"  {i + 1}/{len(paths)} extracted ({time.time() - started:.0f} s)", flush=True)
    features = np.stack(rows).astype(np.float32)
    wall = time.time() - started
    print(f"extracted {features.shape} in {wall:.0f} s ({audio_s / wall:.0f}x real time, one process)", flush=True)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, paths=np.array(paths), features=features, names=np.array(FEATURE_NAMES))
    return features, list(FEATURE_NAMES)


def _linear(kind: str, c: float, seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    model = (LinearSVC(C=c, dual=True, max_iter=5000, random_state=seed) if kind == "linear"
             else LogisticRegression(C=c, max_iter=2000))
    return Pipeline([("scaler", StandardScaler()), ("clf", model)])


def _ua(y_true, y_pred) -> float:
    from sklearn.metrics import balanced_accuracy_score

    return float(balanced_accuracy_score(y_true, y_pred))


def fit_predict(kind: str, config, x_train, y_train, s_train, x_test, inner_folds: int = 0, c_grid=LINEAR_C):
    """Predictions of classifier ``kind`` trained on (x_train, y_train); linear C (from ``c_grid``)
    chosen by UA over an inner split of the speakers ``s_train``: leave one speaker out, or with
    ``inner_folds`` > 0 that many groups of speakers (sorted, dealt round-robin); returns
    (predictions, chosen C or None)."""
    if kind == "rbf":
        from ser_keras.models import build_svm

        model = build_svm(config)
        model.fit(x_train, y_train)
        return model.predict(x_test), None
    speakers = np.unique(s_train)
    groups = ([speakers[i::inner_folds] for i in range(inner_folds)] if 0 < inner_folds < len(speakers)
              else [[speaker] for speaker in speakers])
    scores = []
    for c in c_grid:
        predicted = np.empty_like(y_train)
        for group in groups:
            held = np.isin(s_train, group)
            model = _linear(kind, c, config.train.seed).fit(x_train[~held], y_train[~held])
            predicted[held] = model.predict(x_train[held])
        scores.append(_ua(y_train, predicted))
    c = c_grid[int(np.argmax(scores))]
    return _linear(kind, c, config.train.seed).fit(x_train, y_train).predict(x_test), c


def score(x, kind: str, normalisation: str, config, manifest, folds, labels, inner_folds: int = 0,
          c_grid=LINEAR_C) -> dict:
    from ser_keras.models.functionals import speaker_znorm
    from ser_keras.metrics import summarize

    index = {label: i for i, label in enumerate(labels)}
    y = manifest["label"].map(index).to_numpy()
    speakers = manifest["speaker"].astype(str).to_numpy()
    x = speaker_znorm(x, speakers) if normalisation == "spk" else x
    predicted, chosen = np.full(len(y), -1), []
    started = time.time()
    for fold in folds:
        train = np.concatenate([fold.train, fold.validation])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            predicted[fold.test], c = fit_predict(kind, config, x[train], y[train], speakers[train], x[fold.test],
                                                  inner_folds, c_grid)
        chosen.append(c)
    tested = predicted >= 0
    summary = summarize(y[tested], predicted[tested], labels)
    return {"wa": summary["wa"], "ua": summary["ua"], "s": time.time() - started,
            "c": None if chosen[0] is None else sorted(set(chosen))}


def opensmile_features(manifest, name: str, out: pathlib.Path) -> np.ndarray:
    from ser_keras.evaluation.baseline import extract_opensmile

    return extract_opensmile(manifest, name, out / f"opensmile_{name}.npz", progress=False)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default=None, help="cache directory (default runs/bench_functionals_<corpus>)")
    parser.add_argument("--features", default="ingraph", choices=("ingraph", "eGeMAPS", "ComParE"))
    parser.add_argument("--classifiers", default="rbf,linear,logreg")
    parser.add_argument("--normalisations", default="spk,raw")
    parser.add_argument("--inner-folds", type=int, default=0,
                        help="linear C chosen on this many groups of training speakers (default: one per speaker)")
    parser.add_argument("--linear-c", default=",".join(str(c) for c in LINEAR_C), help="C grid of linear/logreg")
    parser.add_argument("--ablation", action="store_true", help="RBF SVM (spk) with each group left out")
    parser.add_argument("--extract-only", action="store_true")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for exp1 (e.g. a smaller model.svm_c_grid for --ablation)")
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out or f"runs/bench_functionals_{args.corpus}")

    config, manifest, folds, labels = setup(args.corpus, args.data_dir, args.overrides)
    if args.features == "ingraph":
        x, names = extract(manifest, out / "ingraph_functionals.npz")
    else:
        x, names = opensmile_features(manifest, args.features, out), None
    print(f"{args.corpus}: {len(manifest)} utterances, {len(folds)} folds, {x.shape[1]} features "
          f"({args.features})", flush=True)
    if args.extract_only:
        return 0
    if args.ablation:
        if names is None:
            parser.error("--ablation needs the in-graph features")
        rows = [("all groups", x)]
        for group, prefixes in GROUPS.items():
            keep = np.array([not n.startswith(prefixes) for n in names])
            rows.append((f"without {group}", x[:, keep]))
        print(f"| {args.corpus} RBF SVM, spk | features | WA % | UA % |")
        for label, subset in rows:
            result = score(subset, "rbf", "spk", config, manifest, folds, labels)
            print(f"| {label} | {subset.shape[1]} | {100 * result['wa']:.2f} | {100 * result['ua']:.2f} |",
                  flush=True)
        return 0
    print(f"| {args.corpus} | features | classifier | norm | WA % | UA % | C chosen | s |")
    for kind in args.classifiers.split(","):
        for normalisation in args.normalisations.split(","):
            result = score(x, kind, normalisation, config, manifest, folds, labels, args.inner_folds,
                           [float(c) for c in args.linear_c.split(",")])
            print(f"| {args.corpus} | {args.features} | {kind} | {normalisation} | {100 * result['wa']:.2f} | "
                  f"{100 * result['ua']:.2f} | {result['c'] or '-'} | {result['s']:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
