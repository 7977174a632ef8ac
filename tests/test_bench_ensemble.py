"""bench/ensemble.py: the average of several runs' test probabilities, matched by file."""

import json
import pathlib

import pandas as pd
import pytest

from tests.bench_module import load_bench


def _ensemble():
    return load_bench("ensemble")


def _run(directory: pathlib.Path, rows, corpus="demo", labels=("angry", "sad")):
    directory.mkdir(parents=True)
    (directory / "results.json").write_text(json.dumps({"corpus": corpus, "protocol": "loso", "labels": list(labels)}))
    frame = pd.DataFrame([{"fold": "f", "path": path, "speaker": "s", "label": label, "predicted": "",
                           **{f"p_{name}": p for name, p in zip(labels, probabilities)}}
                          for path, label, probabilities in rows])
    frame.to_csv(directory / "predictions.csv", index=False)
    return directory


def test_the_average_is_taken_per_file_whatever_the_row_order(tmp_path):
    # Run a gets file 1 wrong, run b file 2; on average both are right (file order differs).
    a = _run(tmp_path / "a", [("1.wav", "angry", (0.4, 0.6)), ("2.wav", "sad", (0.1, 0.9))])
    b = _run(tmp_path / "b", [("2.wav", "sad", (0.7, 0.3)), ("1.wav", "angry", (0.95, 0.05))])
    rows = _ensemble().ensemble_rows([a, b])
    assert [row["ua"] for row in rows] == [0.5, 0.5, 1.0]
    assert rows[-1]["run"] == "average of the 2 runs" and rows[-1]["n"] == 2


def test_runs_that_do_not_match_are_refused_with_the_reason(tmp_path):
    a = _run(tmp_path / "a", [("1.wav", "angry", (0.4, 0.6))])
    other_corpus = _run(tmp_path / "b", [("1.wav", "angry", (0.4, 0.6))], corpus="emodb")
    other_files = _run(tmp_path / "c", [("9.wav", "angry", (0.4, 0.6))])
    ensemble = _ensemble()
    with pytest.raises(ValueError, match="corpus/protocol"):
        ensemble.ensemble_rows([a, other_corpus])
    with pytest.raises(ValueError, match="test files differ"):
        ensemble.ensemble_rows([a, other_files])
    with pytest.raises(ValueError, match="not found"):
        ensemble.ensemble_rows([a, tmp_path / "missing"])
