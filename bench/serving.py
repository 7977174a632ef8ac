"""Serving benchmark: what a finished run's model gives in the ways it can be served.

    python bench/serving.py --run runs/demo_exp4_loso
    python bench/serving.py --run runs/emodb_exp4_loso --ks 1,3,10 --gains 1,0.5,0.1,0.05

For a finished ``fit`` run with a test protocol (loso, session, random; its finished folds, or
``--folds``), prints one table, WA/UA pooled over the test utterances of those folds:

- the protocol figure: ``results.json["pooled"]`` (each test speaker normalised by all of their
  speech: ``serve_speaker``, ``predict --same-speaker``);
- single recordings: each test file alone, normalised as the export's ``serve`` does (the
  pooled training statistics; ``results.json["serving"]`` when fit reported it);
- enrolment with k recordings (``speaker_statistics`` + ``serve_with_statistics``): the
  statistics of k random recordings of the speaker, the others scored (mean over ``--draws``);
  these three rows come from ``bench/normalisation.py``'s ``condition_rows``;
- a gain sweep: every test file scaled by each gain and scored alone in-process as
  ``serve`` (level normalisation when the run has it, pooled statistics, PCA, the speech flag:
  a file without speech gets uniform probabilities): UA, the share of files flagged as speech,
  and the largest |p(gain) - p(1)| over files and classes.

It prints figures; it is not a test.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="a finished fit run directory (loso, session or random)")
    parser.add_argument("--folds", help="comma list of 0-based fold indices (default: every finished fold)")
    parser.add_argument("--ks", default="1,3,10", help="enrolment sizes")
    parser.add_argument("--draws", type=int, default=5, help="random enrolment draws per k")
    parser.add_argument("--gains", default="1,0.5,0.1,0.05", help="gains of the sweep (1 is the reference)")
    parser.add_argument("--json", help="also write the table as JSON to this file")
    args = parser.parse_args(argv)

    from ser_keras.rundir import load_run_config
    from ser_keras.corpora import run_manifest
    from ser_keras.data.splits import make_folds
    from ser_keras.errors import SerKerasError
    from ser_keras.rundir import RunDir

    run_dir = pathlib.Path(args.run)
    try:
        config, labels = load_run_config(run_dir)
        if config.train.protocol == "all":
            raise SerKerasError(f"{run_dir}: a protocol 'all' run has no test part to measure; give a loso, "
                                "session or random run of its config")
        if config.model.classifier == "svm":
            raise SerKerasError(f"{run_dir}: exp1 (an SVM on functionals) is not served")
        results_path = run_dir / "results.json"
        if not results_path.is_file():
            raise SerKerasError(f"{results_path}: missing; run 'ser-keras fit' on it first")
        results = json.loads(results_path.read_text())
        manifest = run_manifest(config)
        manifest = manifest[manifest["label"].isin(labels)].reset_index(drop=True)
        folds = make_folds(manifest, config.train.protocol, config.train.folds, config.train.seed,
                           config.train.validation_fraction, config.train.validation_split)
        if args.folds:
            indices = [int(i) for i in args.folds.split(",")]
        else:
            indices = [i for i, f in enumerate(folds) if RunDir(run_dir).fold(f.name).done()]
        if not indices:
            raise SerKerasError(f"{run_dir}: no finished fold")
        for i in indices:
            if not RunDir(run_dir).fold(folds[i].name).done():
                raise SerKerasError(f"{run_dir}: fold {folds[i].name} is not finished")
    except SerKerasError as exc:
        print(f"bench/serving.py: error: {exc}", file=sys.stderr)
        return 2

    from normalisation import condition_rows

    ks = [int(k) for k in args.ks.split(",") if k.strip()]
    gains = [float(g) for g in args.gains.split(",") if g.strip()]
    if 1.0 not in gains:
        gains.insert(0, 1.0)
    conditions, _ = condition_rows(config, run_dir, manifest, labels, folds, indices, ks, args.draws)
    pooled = results.get("pooled") or {}
    complete = len(indices) == len(folds)
    table = [{"condition": "protocol figure (results.json pooled: speaker statistics, serve_speaker)"
                           + ("" if complete else f" [all {len(folds)} folds' figure]"),
              "wa": pooled.get("wa"), "ua": pooled.get("ua"), "n": pooled.get("n")}]
    by_name = {row["condition"][:3]: row for row in conditions}
    table.append({**by_name["(b)"], "condition": "single recording (pooled statistics: serve)"})
    for row in conditions:
        if row["condition"].startswith("(d)"):
            k = row["condition"].split("k=")[1].split(":")[0]
            table.append({**row, "condition": f"enrolment with k={k} recordings (serve_with_statistics)"})
    sweep = gain_sweep(run_dir, config, labels, manifest, folds, indices, gains)
    for gain, row in sweep.items():
        table.append({"condition": f"gain {gain:g}, single recording (serve): speech {100 * row['speech']:.0f} %, "
                                   f"max |dp| vs gain 1 {row['max_dp']:.3f}",
                      "wa": row["wa"], "ua": row["ua"], "n": row["n"], "max_dp": row["max_dp"],
                      "speech": row["speech"]})

    names = ", ".join(folds[i].name for i in indices)
    print(f"\n{config.model.experiment} on {config.data.corpus}, {results.get('protocol_name', config.train.protocol)}"
          f"; level_normalization {config.features.level_normalization}; folds: {names}")
    width = max(len(row["condition"]) for row in table)
    print(f"{'how it is served':<{width}}  {'WA %':>12}  {'UA %':>12}  {'n':>5}")
    for row in table:
        spread = row.get("wa_sd", 0) > 0 or row.get("ua_sd", 0) > 0
        wa = "-" if row["wa"] is None else f"{100 * row['wa']:.1f}" + (f" ±{100 * row['wa_sd']:.1f}" if spread else "")
        ua = "-" if row["ua"] is None else f"{100 * row['ua']:.1f}" + (f" ±{100 * row['ua_sd']:.1f}" if spread else "")
        print(f"{row['condition']:<{width}}  {wa:>12}  {ua:>12}  {row['n'] or 0:>5}")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(
            {"run": str(run_dir), "corpus": config.data.corpus, "protocol": config.train.protocol,
             "folds": names, "level_normalization": config.features.level_normalization, "rows": table}, indent=2))
    return 0


def gain_sweep(run_dir, config, labels, manifest, folds, indices, gains) -> dict:
    """gain -> {wa, ua, n, speech (share flagged), max_dp (vs gain 1)} over the test files of
    the folds, each file scaled and scored alone as the export's serve scores it."""
    from ser_keras.audio import load_audio
    from ser_keras.data.pipeline import make_dataset
    from ser_keras.features.frontend_ops import has_speech, split_views
    from ser_keras.inference.fold import load_fold
    from ser_keras.metrics import summarize
    from ser_keras.models.predictor import make_predictor, predict_views

    label_index = {label: i for i, label in enumerate(labels)}
    truth, probabilities, flags = [], {g: [] for g in gains}, {g: [] for g in gains}
    for index in indices:
        fold = folds[index]
        bundle = load_fold(run_dir, fold.name)
        predict = make_predictor(bundle.model)
        waveforms = [load_audio(path, bundle.sample_rate) for path in manifest["path"].iloc[fold.test]]
        truth.append(manifest["label"].iloc[fold.test].map(label_index).to_numpy())
        for gain in gains:
            scaled = [w * np.float32(gain) for w in waveforms]
            # Every test-time view of the features (side by side in bundle.features' output), scored
            # and averaged as serve does.
            x = [bundle.features(w) for w in scaled]
            views = [make_dataset(list(view), None, int(config.train.batch_size), training=False, seed=0)
                     for view in zip(*(split_views(f, bundle.params.n_views) for f in x))]
            p = predict_views(predict, views)
            speech = np.array([has_speech(w, bundle.params) for w in scaled])
            p[~speech] = 1.0 / len(labels)  # as serve answers a recording without speech
            probabilities[gain].append(p)
            flags[gain].append(speech)
    y = np.concatenate(truth)
    reference = np.concatenate(probabilities[1.0])
    out = {}
    for gain in gains:
        p = np.concatenate(probabilities[gain])
        summary = summarize(y, p.argmax(axis=1), labels)
        out[gain] = {"wa": summary["wa"], "ua": summary["ua"], "n": summary["n"],
                     "speech": float(np.concatenate(flags[gain]).mean()),
                     "max_dp": float(np.abs(p - reference).max())}
    return out


if __name__ == "__main__":
    sys.exit(main())
