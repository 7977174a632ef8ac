"""Ensemble benchmark: what averaging the probabilities of several finished runs would give.

    python bench/ensemble.py runs/emodb_seed0/exp5_loso runs/emodb_seed1/exp5_loso

Takes finished ``fit`` run directories of one corpus, protocol and label set (typically the same
config with different ``train.seed``), matches their test predictions (``predictions.csv``) by
file, averages the class probabilities, and prints WA/UA of every run and of the average,
pooled over all test utterances. Runs of different seeds may hold out different validation
speakers, so this estimates what an ensemble of independently trained models gives; it trains
nothing. It prints figures; it is not a test.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="finished fit run directories (results.json, predictions.csv)")
    args = parser.parse_args(argv)
    if len(args.runs) < 2:
        parser.error("give at least two runs")
    try:
        table = ensemble_rows([pathlib.Path(run) for run in args.runs])
    except ValueError as exc:
        print(f"bench/ensemble.py: error: {exc}", file=sys.stderr)
        return 2
    width = max(len(row["run"]) for row in table)
    print(f"{'run':<{width}}  {'WA %':>6}  {'UA %':>6}  {'n':>5}")
    for row in table:
        print(f"{row['run']:<{width}}  {100 * row['wa']:6.1f}  {100 * row['ua']:6.1f}  {row['n']:>5}")
    singles = table[:-1]
    print(f"mean of the single runs: WA {100 * np.mean([r['wa'] for r in singles]):.1f}  "
          f"UA {100 * np.mean([r['ua'] for r in singles]):.1f}")
    return 0


def ensemble_rows(runs: list) -> list:
    """One row (run, wa, ua, n) per run, then the average of their probabilities."""
    import pandas as pd

    from ser_keras.metrics import summarize

    frames, labels, key = [], None, None
    for run in runs:
        results_path, predictions_path = run / "results.json", run / "predictions.csv"
        for path in (results_path, predictions_path):
            if not path.is_file():
                raise ValueError(f"{path}: not found (is {run} a finished fit run?)")
        results = json.loads(results_path.read_text())
        run_key = (results.get("corpus"), results.get("protocol"))
        run_labels = list(results["labels"])
        if labels is None:
            labels, key = run_labels, run_key
        elif run_labels != labels or run_key != key:
            raise ValueError(f"{run}: corpus/protocol {run_key} and labels differ from {runs[0]}'s {key}")
        frame = pd.read_csv(predictions_path).set_index("path")
        if frames and set(frame.index) != set(frames[0].index):
            raise ValueError(f"{run}: its test files differ from {runs[0]}'s")
        frames.append(frame)
    columns = [f"p_{label}" for label in labels]
    index = {label: i for i, label in enumerate(labels)}
    paths = frames[0].index
    y_true = frames[0].loc[paths, "label"].map(index).to_numpy()
    probabilities = [frame.loc[paths, columns].to_numpy(np.float64) for frame in frames]
    rows = []
    for run, p in zip(runs, probabilities):
        rows.append({"run": str(run), **_scores(summarize(y_true, p.argmax(axis=1), labels))})
    average = np.mean(probabilities, axis=0)
    rows.append({"run": f"average of the {len(runs)} runs",
                 **_scores(summarize(y_true, average.argmax(axis=1), labels))})
    return rows


def _scores(summary: dict) -> dict:
    return {"wa": summary["wa"], "ua": summary["ua"], "n": summary["n"]}


if __name__ == "__main__":
    sys.exit(main())
