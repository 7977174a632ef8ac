"""bench/accuracy.py --baseline: the in-graph and openSMILE functionals + SVM rows on the folds exp1's
run uses."""

import sys

from tests.bench_module import load_bench
from tests.test_reproduce import _fake_opensmile


def test_baseline_rows_name_each_feature_set_and_normalisation(tmp_path, monkeypatch):
    from ser_keras.evaluation import baseline

    monkeypatch.setitem(sys.modules, "opensmile", _fake_opensmile())
    monkeypatch.setattr(baseline, "_extract_rows", baseline._functionals)  # the fake lives in this process
    rows = load_bench("accuracy").baseline_rows("demo", None, "loso", ["model.svm_c_grid=[1.0]"], tmp_path)
    assert [row["name"] for row in rows] == ["in-graph raw", "in-graph spk", "eGeMAPS raw", "eGeMAPS spk",
                                             "ComParE raw", "ComParE spk"]
    assert all(row["protocol"] == "leave-one-speaker-out" and row["folds"] == "4/4" for row in rows)
    assert all(0 <= row["ua"] <= 1 and row["val_ua"] is None for row in rows)
    assert (tmp_path / "opensmile_ComParE.npz").is_file()
