"""Normalisation benchmark: what speaker context at test time is worth to a trained model.

    python bench/normalisation.py --corpus demo
    python bench/normalisation.py --corpus emodb --data-dir ../shared/corpora/emodb --folds 0,1,2,3,4

Trains (or reuses) the folds of one ``fit`` run directory (default ``runs/bench_norm_<corpus>_
<experiment>_<protocol>``; ``--folds`` picks fold indices, default all) and scores each fold's
test part with the SAME trained model, the test utterances normalised in different ways:

(a) ``speaker``: each test speaker by the mean/std of all of their test utterances' frames —
    what ``fit`` does (``features.normalization=speaker``; ``FeatureNormalizer`` speaker_all)
    and the export's ``serve_speaker`` / ``predict --same-speaker``;
(b) ``pooled``: the pooled statistics of the training fold (``global_mean_``/``global_std_``),
    a single recording without speaker context — what the export's ``serve`` does and ``fit``
    reports as ``serving_wa``/``serving_ua``;
(c) ``utterance``: each utterance by its own mean/std (per-utterance CMVN), the other option
    for a single recording;
(d) ``enrol k``: each test speaker by the statistics of k of their utterances drawn at random
    (enrolment); only the speaker's OTHER utterances are scored. Repeated over ``--draws``
    seeded draws; the table gives the mean (and the spread) over draws. A speaker with no more
    than k utterances is left out of that row.

WA/UA are pooled over the selected folds (all test utterances of all folds in one confusion
matrix), like ``results.json["pooled"]``. Row (a) must equal the run's own pooled figure
(checked and printed). The PCA, model and everything else are the fold's, unchanged.
This prints figures; it is not a test.
"""

from __future__ import annotations

import argparse
import copy
import json
import pathlib
import sys
import time

import numpy as np


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="demo")
    parser.add_argument("--data-dir", help="corpus directory")
    parser.add_argument("--experiment", default="exp4")
    parser.add_argument("--protocol", default="loso")
    parser.add_argument("--folds", help="comma list of 0-based fold indices (default: all)")
    parser.add_argument("--out", help="run directory (default runs/bench_norm_<corpus>_<experiment>_<protocol>)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--ks", default="1,3,10", help="enrolment sizes")
    parser.add_argument("--draws", type=int, default=5, help="random enrolment draws per k")
    parser.add_argument("--quiet", action="store_true", help="no training progress")
    parser.add_argument("--json", help="also write the table as JSON to this file")
    args = parser.parse_args(argv)

    from ser_keras.config import load_config
    from ser_keras.corpora import label_order, run_manifest
    from ser_keras.data.splits import make_folds, select_folds
    from ser_keras.errors import SerKerasError
    from ser_keras.evaluation.fit import fit

    overrides = [f"train.protocol={args.protocol}"] + list(args.overrides)
    if args.data_dir:
        overrides.insert(0, f"runtime.data_dir={args.data_dir}")
    config = load_config(experiment=args.experiment, corpus=args.corpus, overrides=overrides)
    if config.model.classifier == "svm":
        print("exp1 (functionals, one vector per utterance) has no frames to normalise per utterance",
              file=sys.stderr)
        return 2
    out = pathlib.Path(args.out or f"runs/bench_norm_{args.corpus}_{args.experiment}_{args.protocol}")
    manifest = run_manifest(config)
    labels = label_order(manifest, config.data)
    folds = make_folds(manifest, config.train.protocol, config.train.folds, config.train.seed,
                       config.train.validation_fraction)
    indices = range(len(folds)) if not args.folds else [int(i) for i in args.folds.split(",")]
    started = time.time()
    try:
        for index in indices:
            fold_config = copy.deepcopy(config)
            fold_config.runtime.fold = index
            fit(fold_config, out, progress=not args.quiet)
    except SerKerasError as exc:
        print(f"bench/normalisation.py: error: {exc}", file=sys.stderr)
        return 2
    train_s = time.time() - started

    table, fit_check = condition_rows(config, out, manifest, labels, folds, indices, ks=[int(k) for k in
                                      args.ks.split(",") if k.strip()], draws=args.draws)

    fold_names = ", ".join(select_folds(folds, i)[0].name for i in indices)
    print(f"\n{config.model.experiment} on {config.data.corpus}, {config.train.protocol}, folds: {fold_names}")
    print(f"run directory {out} (training/loading {train_s:.0f} s); row (a) agrees with fit's "
          "predictions.csv per fold: " + ", ".join(f"{100 * a:.1f} %" for a in fit_check))
    width = max(len(row["condition"]) for row in table)
    print(f"{'test-time normalisation':<{width}}  {'WA %':>12}  {'UA %':>12}  {'n':>5}")
    for row in table:
        spread = row["wa_sd"] > 0 or row["ua_sd"] > 0
        wa = f"{100 * row['wa']:.1f}" + (f" ±{100 * row['wa_sd']:.1f}" if spread else "")
        ua = f"{100 * row['ua']:.1f}" + (f" ±{100 * row['ua_sd']:.1f}" if spread else "")
        print(f"{row['condition']:<{width}}  {wa:>12}  {ua:>12}  {row['n']:>5}")
    if args.draws > 1 and any(row["wa_sd"] for row in table):
        print(f"(d): mean ± sd over {args.draws} draws; only the speakers' non-enrolment utterances are scored")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(
            {"corpus": config.data.corpus, "experiment": config.model.experiment,
             "protocol": config.train.protocol, "folds": fold_names, "rows": table}, indent=2))
    return 0


def condition_rows(config, out, manifest, labels, folds, indices, ks=(1, 3, 10), draws=5) -> tuple:
    """(table rows, per-fold agreement of row (a) with fit's predictions.csv) of the finished
    folds `indices` of run `out`: the conditions (a)-(d) of the module docstring. Each row:
    condition, wa, ua, wa_sd, ua_sd, n. Shared with bench/serving.py."""
    import keras

    import ser_keras.layers  # noqa: F401 - registers the custom layers for load_model
    from ser_keras.data.pipeline import make_dataset
    from ser_keras.data.splits import select_folds
    from ser_keras.features.extract import extract_for_model
    from ser_keras.features.frontend import FittedFrontEnd, uses_pca
    from ser_keras.features.normalize import frame_stats, normalize_with
    from ser_keras.metrics import summarize
    from ser_keras.models.predictor import make_predictor, predict_views
    from ser_keras.rundir import RunDir

    ks = list(ks)
    features, _ = extract_for_model(config, manifest, progress=False)
    label_index = {label: i for i, label in enumerate(labels)}
    y_all = manifest["label"].map(label_index).to_numpy()
    speakers_all = manifest["speaker"].astype(str).to_numpy()
    floor = float(config.features.norm_std_floor)
    truth = {"speaker": [], "pooled": [], "utterance": []}
    predicted = {name: [] for name in truth}
    enrol = {(k, d): ([], []) for k in ks for d in range(draws)}
    fit_check = []
    for index in indices:
        fold = select_folds(folds, index)[0]
        fold_dir = RunDir(out).fold(fold.name)
        frontend = FittedFrontEnd.load(fold_dir, pca=uses_pca(config))
        normalizer = frontend.normalizer
        model = keras.saving.load_model(fold_dir.keras_model, compile=False)
        predict = make_predictor(model)
        test = np.array([i for i in fold.test if features[i] is not None])
        raw = [features[i] for i in test]
        speakers = speakers_all[test]

        def score(normalised):
            # Scored as fit scores: averaged over the test-time views (features.test_warp_factors).
            views = frontend.project_views(normalised, config.features)
            return predict_views(predict, [make_dataset(view, None, int(config.train.batch_size), training=False,
                                                        seed=0) for view in views]).argmax(axis=1)

        conditions = {
            "speaker": normalizer.transform(raw, list(speakers)),
            "pooled": normalizer.transform(raw, None),
            "utterance": normalize_with(raw, None, floor),
        }
        for name, normalised in conditions.items():
            predicted[name].append(score(normalised))
            truth[name].append(y_all[test])
        saved = _read_predictions(fold_dir, labels)
        fit_check.append(np.mean(saved == predicted["speaker"][-1]))
        for k in ks:
            for draw in range(draws):
                rng = np.random.default_rng([int(config.train.seed), index, k, draw])
                rows, stats = [], []
                for speaker in sorted(set(speakers)):
                    own = np.flatnonzero(speakers == speaker)
                    if len(own) <= k:
                        continue
                    chosen = rng.choice(own, size=k, replace=False)
                    mean_std = frame_stats([raw[i] for i in chosen], floor)
                    for i in own:
                        if i not in chosen:
                            rows.append(i)
                            stats.append(mean_std)
                if not rows:
                    continue
                normalised = [normalize_with([raw[i]], s)[0] for i, s in zip(rows, stats)]
                enrol[k, draw][0].append(y_all[test[rows]])
                enrol[k, draw][1].append(score(normalised))

    table = []
    descriptions = {
        "speaker": "(a) speaker: own stats over all test utterances (fit)",
        "pooled": "(b) pooled training-fold stats (single recording: serve)",
        "utterance": "(c) per-utterance stats (single recording)",
    }
    for name, description in descriptions.items():
        summary = summarize(np.concatenate(truth[name]), np.concatenate(predicted[name]), labels)
        table.append({"condition": description, "wa": summary["wa"], "ua": summary["ua"],
                      "wa_sd": 0.0, "ua_sd": 0.0, "n": summary["n"]})
    for k in ks:
        scores = []
        for draw in range(draws):
            y_true, y_pred = enrol[k, draw]
            if y_true:
                summary = summarize(np.concatenate(y_true), np.concatenate(y_pred), labels)
                scores.append((summary["wa"], summary["ua"], summary["n"]))
        if scores:
            wa, ua, n = (np.array(column) for column in zip(*scores))
            table.append({"condition": f"(d) enrol k={k}: stats of {k} random utterance(s) of the speaker",
                          "wa": float(wa.mean()), "ua": float(ua.mean()), "wa_sd": float(wa.std()),
                          "ua_sd": float(ua.std()), "n": int(round(n.mean()))})

    return table, fit_check


def _read_predictions(fold_dir, labels) -> np.ndarray:
    import pandas as pd

    frame = pd.read_csv(fold_dir.predictions)
    index = {label: i for i, label in enumerate(labels)}
    return frame["predicted"].map(index).to_numpy()


if __name__ == "__main__":
    sys.exit(main())
