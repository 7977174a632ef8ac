"""Accuracy benchmark: the paper's experiments under named protocols on a real corpus.

    python bench/accuracy.py --corpus emodb --data-dir ../shared/corpora/emodb
    python bench/accuracy.py --corpus casia --data-dir ../shared/corpora/casia \
        --protocols loso --experiments exp4

Runs every (experiment, protocol) pair as a normal ``fit`` run directory under ``--out``
(default ``runs/bench_<corpus>``; re-running resumes / reuses finished runs) and prints one
table of WA, UA (pooled over the test folds) and wall time. ``random`` is the seeded
stratified 10-fold split (``train.folds``). Extra ``--set key=value`` overrides apply to every
run. Folds train ``--jobs`` at a time (default: one per CPU core; ``train.jobs``). The table
gives both the folds' summed time and this call's wall-clock time. This prints figures; it is
not a test.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--data-dir", help="corpus directory (default: $SER_KERAS_<CORPUS>)")
    parser.add_argument("--protocols", default="loso,random", help="comma list of loso, session, random")
    parser.add_argument("--experiments", default="exp1,exp2,exp3,exp4", help="comma list of exp1..exp4")
    parser.add_argument("--out", help="where the run directories go (default runs/bench_<corpus>)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--jobs", type=int, default=None,
                        help="folds trained at once, one process each (default: one per CPU core)")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch progress")
    parser.add_argument("--json", help="also write the table as JSON to this file")
    args = parser.parse_args(argv)

    from ser_keras.config import load_config
    from ser_keras.data.splits import describe_protocol
    from ser_keras.errors import SerKerasError
    from ser_keras.training.parallel import cpu_count
    from ser_keras.training.run import fit

    out = pathlib.Path(args.out or f"runs/bench_{args.corpus}")
    jobs = args.jobs or cpu_count()
    protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    experiments = [e.strip() for e in args.experiments.split(",") if e.strip()]
    rows = []
    try:
        for protocol in protocols:
            for experiment in experiments:
                overrides = [f"train.protocol={protocol}", f"train.jobs={jobs}"]
                overrides += list(args.overrides)
                if args.data_dir:
                    overrides.insert(0, f"data.data_dir={args.data_dir}")
                config = load_config(experiment=experiment, corpus=args.corpus, overrides=overrides)
                started = time.time()
                results = fit(config, out / f"{experiment}_{protocol}", progress=not args.quiet)
                rows.append({
                    "experiment": experiment,
                    "protocol": describe_protocol(protocol, config.train.folds),
                    "wa": results["pooled"]["wa"],
                    "ua": results["pooled"]["ua"],
                    "folds": f"{len(results['folds'])}/{results['n_folds']}",
                    "fold_s": results.get("wall_time_s", 0.0),
                    "wall_s": time.time() - started,
                })
                print(f"{experiment:5s} {rows[-1]['protocol']:48s} WA {100 * rows[-1]['wa']:6.2f}  "
                      f"UA {100 * rows[-1]['ua']:6.2f}  ({rows[-1]['wall_s']:.0f} s wall)", flush=True)
    except SerKerasError as exc:
        print(f"bench/accuracy.py: error: {exc}", file=sys.stderr)
        return 2

    print()
    print(f"corpus {args.corpus}, {jobs} fold(s) at once"
          + (f"  ({' '.join('--set ' + o for o in args.overrides)})" if args.overrides else ""))
    header = (f"| {'experiment':10} | {'protocol':48} | {'WA %':>6} | {'UA %':>6} | {'folds':>5} | {'fold s':>7} "
              f"| {'wall s':>7} |")
    print(header)
    print("|" + "|".join("-" * (len(part)) for part in header.split("|")[1:-1]) + "|")
    for row in rows:
        print(f"| {row['experiment']:10} | {row['protocol']:48} | {100 * row['wa']:6.2f} | {100 * row['ua']:6.2f} | "
              f"{row['folds']:>5} | {row['fold_s']:7.0f} | {row['wall_s']:7.0f} |")
    print("fold s: the folds' training and testing time summed (over every invocation of a resumed run); "
          "wall s: this call, start to end (folds overlap with --jobs > 1; a finished run is only re-read).")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
