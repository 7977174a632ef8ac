"""Ablation benchmark: each lever of the shipped default on and off, validation and test UA.

    python bench/ablation.py --corpus emodb --data-dir ../shared/corpora/emodb
    python bench/ablation.py --corpus casia --data-dir ../shared/corpora/casia --levers default,no_statistics

Every lever is a named set of ``--set`` overrides applied to one experiment (default: the shipped
default experiment) under one protocol (default ``loso``); each runs as a normal ``fit`` run
directory under ``--out`` (default ``runs/ablation_<corpus>``; re-running resumes or re-reads it)
and the table gives WA/UA on the test folds, the mean validation UA (held-out training speakers:
what a lever is chosen on), the served single-recording UA and the time. ``--lever NAME=KEY=VALUE``
(repeatable, several overrides joined by ``;``) adds a lever of your own. This prints figures; it
is not a test.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from accuracy import print_table, run_rows  # noqa: E402

# Each lever of the shipped default, turned off (or, for a lever it does not use, on).
LEVERS = {
    "default": [],
    "no_statistics": ["model.statistics_units=0"],
    "no_pitch": ["features.pitch_channels=false"],
    "pitch": ["features.pitch_channels=true"],
    "no_warp": ["features.warp_factors=[]"],
    "no_refit": ["train.refit=false"],
    "refit": ["train.refit=true"],
    "no_ema": ["train.ema_momentum=null"],
    "ema": ["train.ema_momentum=0.95"],
    "no_test_warps": ["features.test_warp_factors=[]"],
    "test_warps": ["features.test_warp_factors=[0.9,1.1]"],
    "no_functionals": ["model.functionals_weights=[]"],
    "equal_weights": ["model.functionals_weights=[0.5]"],
}
# Levers measured and not adopted (SpecAugment masks, tempo and noise versions, speaker adversary,
# mixup, a statistics head, percentile and voiced statistics) left the code; docs/ gives their
# figures and the last commit that had them.


def main(argv=None) -> int:
    from ser_keras.config import DEFAULT_EXPERIMENT

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--data-dir", help="corpus directory (default: $SER_KERAS_<CORPUS>)")
    parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT)
    parser.add_argument("--protocol", default="loso")
    parser.add_argument("--levers", default="default,no_statistics,no_warp",
                        help=f"comma list of lever names ({', '.join(LEVERS)} and any --lever)")
    parser.add_argument("--lever", action="append", default=[], metavar="NAME=KEY=VALUE[;KEY=VALUE]",
                        help="a lever of your own")
    parser.add_argument("--out", help="where the run directories go (default runs/ablation_<corpus>)")
    parser.add_argument("--jobs", type=int, default=None, help="folds trained at once (default: one per core)")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch progress")
    args = parser.parse_args(argv)

    from ser_keras.errors import SerKerasError
    from ser_keras.training.parallel import cpu_count

    levers = dict(LEVERS)
    for text in args.lever:
        name, _, settings = text.partition("=")
        if not name or not settings:
            parser.error(f"--lever {text!r}: expected NAME=KEY=VALUE[;KEY=VALUE]")
        levers[name] = [s for s in settings.split(";") if s]
    out = pathlib.Path(args.out or f"runs/ablation_{args.corpus}")
    jobs = args.jobs or cpu_count()
    rows = []
    try:
        for name in [n.strip() for n in args.levers.split(",") if n.strip()]:
            if name not in levers:
                parser.error(f"unknown lever {name!r}: choose from {', '.join(levers)}")
            rows += run_rows(args.corpus, args.data_dir, args.experiment, args.protocol, levers[name],
                             out / f"{args.experiment}_{args.protocol}_{name}", jobs, args.quiet, name=name)
    except SerKerasError as exc:
        print(f"bench/ablation.py: error: {exc}", file=sys.stderr)
        return 2
    print_table(rows, f"ablation: {args.experiment} on {args.corpus}, {args.protocol}, {jobs} fold(s) at once")
    return 0


if __name__ == "__main__":
    sys.exit(main())
