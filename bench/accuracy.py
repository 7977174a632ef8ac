"""Accuracy benchmark: experiments under named protocols on a real corpus.

    python bench/accuracy.py --corpus emodb --data-dir ../shared/corpora/emodb
    python bench/accuracy.py --corpus casia --data-dir ../shared/corpora/casia \
        --protocols loso --experiments exp4

Runs every (experiment, protocol) pair as a normal ``fit`` run directory under ``--out``
(default ``runs/bench_<corpus>``; re-running resumes / reuses finished runs) and prints one
table: WA and UA of the test folds (pooled), the mean validation UA of the folds (held-out
training speakers or utterances: what settings are chosen on), the served single-recording UA
where the run reports one, and the time; for a run that fuses the network with the functionals
classifier (exp5) also a row for each of the two alone ("... network", "... functionals"), with
their own validation UA. By default the shipped default experiment runs beside
the paper's exp1 (the SVM baseline) and exp4 (its headline model). ``random`` is the seeded
stratified 10-fold split (``train.folds``). Extra ``--set key=value`` overrides apply to every
run. Folds train ``--jobs`` at a time (default: one per CPU core; ``runtime.jobs``). With
``--baseline`` the field's reference runs too, on the same folds: openSMILE eGeMAPS and ComParE
functionals + the exp1 SVM, each with the training fold's standardisation only ("raw") and with
every speaker's features z-normalised by that speaker's own utterances ("spk"); it needs the
optional ``opensmile`` package. This prints figures; it is not a test.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import numpy as np


def run_rows(corpus: str, data_dir, experiment: str, protocol: str, overrides, run_dir: pathlib.Path,
             jobs: int, quiet: bool, name: str = None) -> list:
    """Fit (or resume / re-read) one run and return its table rows (with its components')."""
    from ser_keras.config import load_config
    from ser_keras.data.splits import describe_protocol
    from ser_keras.evaluation.fit import fit

    settings = [f"train.protocol={protocol}", f"runtime.jobs={jobs}", *overrides]
    if data_dir:
        settings.insert(0, f"runtime.data_dir={data_dir}")
    config = load_config(experiment=experiment, corpus=corpus, overrides=settings)
    started = time.time()
    results = fit(config, run_dir, progress=not quiet)
    serving = results.get("serving") or {}
    validation = _validation(results["folds"], "fused")
    row = {
        "name": name or experiment,
        "experiment": experiment,
        "protocol": describe_protocol(protocol, config.train.folds),
        "wa": results["pooled"]["wa"],
        "ua": results["pooled"]["ua"],
        "val_ua": _mean(validation),
        "serving_ua": serving.get("ua"),
        "folds": f"{len(results['folds'])}/{results['n_folds']}",
        "fold_s": results.get("wall_time_s", 0.0),
        "wall_s": time.time() - started,
    }
    print(f"{row['name']:12s} {row['protocol']:40s} WA {100 * row['wa']:6.2f}  UA {100 * row['ua']:6.2f}  "
          f"({row['wall_s']:.0f} s wall)", flush=True)
    rows = [row]
    for component, figures in (results.get("components") or {}).items():
        alone = (serving.get("components") or {}).get(component, {})
        rows.append({**row, "name": f"{row['name']} {component}", "wa": figures["wa"], "ua": figures["ua"],
                     "val_ua": _mean(_validation(results["folds"], component)), "serving_ua": alone.get("ua")})
    return rows


def _validation(folds: list, which: str) -> list:
    """Per fold, the validation UA of the kept network, of the functionals classifier (speaker
    condition) or, for a fused run, of the fusion with the chosen weight (else the network's)."""
    values = []
    for fold in folds:
        chosen = (fold.get("functionals") or {}).get("speaker") or {}
        if which == "functionals":
            value = chosen.get("val_ua")
        elif which == "fused" and chosen.get("fused_val_ua"):
            value = chosen["fused_val_ua"].get(str(chosen["weight"]))
        else:
            value = fold.get("best_val_ua", fold.get("val_ua"))
        if value is not None:
            values.append(value)
    return values


def _mean(values: list):
    return float(np.mean(values)) if values else None


def baseline_rows(corpus: str, data_dir, protocol: str, overrides, out_dir: pathlib.Path) -> list:
    """The openSMILE + SVM rows (evaluation.baseline) on the folds exp1's run of `protocol` uses."""
    from ser_keras.config import load_config
    from ser_keras.data.splits import describe_protocol
    from ser_keras.evaluation.baseline import run_config_baseline

    settings = [f"train.protocol={protocol}", *overrides] + ([f"runtime.data_dir={data_dir}"] if data_dir else [])
    config = load_config(experiment="exp1", corpus=corpus, overrides=settings)
    rows = []
    for result in run_config_baseline(config, out_dir):
        name = f"{result['feature_set']} {'spk' if result['normalisation'] == 'speaker' else 'raw'}"
        rows.append({"name": name, "experiment": result["name"],
                     "protocol": describe_protocol(protocol, config.train.folds), "wa": result["wa"],
                     "ua": result["ua"], "val_ua": None, "serving_ua": None,
                     "folds": f"{result['n_folds']}/{result['n_folds']}", "fold_s": result["wall_time_s"],
                     "wall_s": result["wall_time_s"]})
        print(f"{name:12s} {rows[-1]['protocol']:40s} WA {100 * result['wa']:6.2f}  UA {100 * result['ua']:6.2f}",
              flush=True)
    return rows


def _percent(value) -> str:
    return "     -" if value is None else f"{100 * value:6.2f}"


def print_table(rows, title: str) -> None:
    print()
    print(title)
    header = (f"| {'run':12} | {'protocol':40} | {'WA %':>6} | {'UA %':>6} | {'val UA':>6} | {'serve UA':>8} "
              f"| {'folds':>5} | {'fold s':>7} | {'wall s':>7} |")
    print(header)
    print("|" + "|".join("-" * (len(part)) for part in header.split("|")[1:-1]) + "|")
    for row in rows:
        print(f"| {row['name']:12} | {row['protocol']:40} | {_percent(row['wa'])} | {_percent(row['ua'])} | "
              f"{_percent(row['val_ua'])} | {_percent(row['serving_ua']):>8} | {row['folds']:>5} | "
              f"{row['fold_s']:7.0f} | {row['wall_s']:7.0f} |")
    print("val UA: mean over the folds of the validation UA (held-out training speakers or utterances, never "
          "the test fold) at the epoch kept; serve UA: each test recording scored alone, as the export's serve "
          "does; fold s: the folds' time summed; wall s: this call (folds overlap with --jobs > 1; a finished "
          "run is only re-read).")


def main(argv=None) -> int:
    from ser_keras.config import DEFAULT_EXPERIMENT

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--data-dir", help="corpus directory (default: $SER_KERAS_<CORPUS>)")
    parser.add_argument("--protocols", default="loso,random", help="comma list of loso, session, random")
    parser.add_argument("--experiments", default=",".join(dict.fromkeys(["exp1", "exp4", DEFAULT_EXPERIMENT])),
                        help="comma list of experiments (default: exp1, exp4 and the default experiment)")
    parser.add_argument("--out", help="where the run directories go (default runs/bench_<corpus>)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--jobs", type=int, default=None,
                        help="folds trained at once, one process each (default: one per CPU core)")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch progress")
    parser.add_argument("--json", help="also write the table as JSON to this file")
    parser.add_argument("--baseline", action="store_true",
                        help="also openSMILE eGeMAPS / ComParE + SVM on the same folds (needs the opensmile package)")
    args = parser.parse_args(argv)

    from ser_keras.errors import SerKerasError
    from ser_keras.evaluation.baseline import opensmile_available
    from ser_keras.training.parallel import cpu_count

    if args.baseline and not opensmile_available():
        parser.error("--baseline needs the optional opensmile package: pip install 'ser_keras[opensmile]'")

    out = pathlib.Path(args.out or f"runs/bench_{args.corpus}")
    jobs = args.jobs or cpu_count()
    protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    experiments = [e.strip() for e in args.experiments.split(",") if e.strip()]
    rows = []
    try:
        for protocol in protocols:
            for experiment in experiments:
                rows += run_rows(args.corpus, args.data_dir, experiment, protocol, args.overrides,
                                 out / f"{experiment}_{protocol}", jobs, args.quiet)
            if args.baseline:
                rows += baseline_rows(args.corpus, args.data_dir, protocol, args.overrides,
                                      out / f"baseline_{protocol}")
    except SerKerasError as exc:
        print(f"bench/accuracy.py: error: {exc}", file=sys.stderr)
        return 2
    print_table(rows, f"corpus {args.corpus}, {jobs} fold(s) at once"
                + (f"  ({' '.join('--set ' + o for o in args.overrides)})" if args.overrides else ""))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
