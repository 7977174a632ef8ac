"""`fit --jobs N`: folds trained in worker processes (training/parallel.py)."""

import os
import re

import pandas as pd
import pytest

from ser_keras.errors import SerKerasError
from tests.test_training import tiny_config


@pytest.mark.slow
def test_folds_train_in_worker_processes_and_repeat_exactly(tmp_path, capfd):
    from ser_keras.evaluation.fit import fit

    config = tiny_config("exp4", "train.protocol=random", "train.folds=2", "train.epochs=2", "runtime.jobs=2")
    first = fit(config, tmp_path / "a", progress=True)
    out = capfd.readouterr().out
    assert "training 2 folds, 2 at once" in out
    # Each fold ran in a worker process of its own, not in this one.
    pids = set(re.findall(r"\(\d of 2, process (\d+)\)", out))
    assert len(pids) == 2 and str(os.getpid()) not in pids
    names = [fold["name"] for fold in first["folds"]]
    assert names == ["random-1of2", "random-2of2"] and first["complete"]
    for name in names:  # per-epoch lines name their fold, as Keras' progress bar cannot
        assert re.search(rf"demo exp4 {name}: epoch 2/2  loss \d\.\d{{4}}  val WA [\d.]+ %  val UA [\d.]+ %", out)
        assert list(pd.read_csv(tmp_path / "a" / "folds" / name / "history.csv")["epoch"]) == [0, 1]
    assert (tmp_path / "a" / "predictions.csv").is_file() and (tmp_path / "a" / "confusion_matrix.png").is_file()

    # jobs only changes how the work is spread: a run directory resumes under another --jobs.
    one_at_a_time = tiny_config("exp4", "train.protocol=random", "train.folds=2", "train.epochs=2")
    rerun = fit(one_at_a_time, tmp_path / "a", progress=False)
    assert rerun["pooled"]["confusion"] == first["pooled"]["confusion"]

    # --jobs 1 against --jobs 2: the workers run TensorFlow with fewer threads, which changes
    # floating-point summation order only, so the same labels and probabilities equal to
    # rounding accumulated over the epochs. 1e-4 is docs/configuration.md's claim for EMO-DB LOSO (40
    # epochs of a bigger model); here they measured 1e-6, the CSV's last digit.
    alone = fit(one_at_a_time, tmp_path / "c", progress=False)
    assert alone["config_hash"] == first["config_hash"]
    jobs2, jobs1 = (pd.read_csv(tmp_path / d / "predictions.csv") for d in ("a", "c"))
    assert list(jobs1["path"]) == list(jobs2["path"]) and list(jobs1["predicted"]) == list(jobs2["predicted"])
    columns = [c for c in jobs1.columns if c.startswith("p_")]
    difference = float((jobs1[columns] - jobs2[columns]).abs().to_numpy().max())
    assert difference <= 1e-4, difference


@pytest.mark.parametrize("overrides, message", [
    (["runtime.jobs=0"], r"^runtime\.jobs: must be >= 1, got 0$"),
    (["runtime.jobs=2", "runtime.strategy=mirrored"],
     r"^runtime\.jobs: 2 folds at once needs runtime\.strategy default"),
])
def test_bad_jobs_settings_are_refused_in_one_line(overrides, message):
    with pytest.raises(SerKerasError, match=message) as info:
        tiny_config("exp4", *overrides)
    assert "\n" not in str(info.value)


def test_a_failing_fold_stops_the_run_with_its_error(tmp_path):
    """A fold that fails in a worker fails `fit` with the worker's one-line error, as it would
    in one process: here the first LOSO fold's test speaker has only corrupt files."""
    from ser_keras.config import DataConfig
    from ser_keras.corpora import load_manifest
    from ser_keras.evaluation.fit import fit

    demo = load_manifest("demo", None, DataConfig(corpus="demo"))
    broken = []
    for label in sorted(demo["label"].unique()):
        path = tmp_path / f"aaa_{label}.wav"
        path.write_bytes(f"not audio at all ({label})".encode())  # distinct: equal bytes are duplicates
        broken.append({"path": str(path), "label": label, "speaker": "aaa"})
    manifest = pd.concat([pd.DataFrame(broken), demo[["path", "label", "speaker"]]], ignore_index=True)
    manifest.to_csv(tmp_path / "manifest.csv", index=False)
    config = tiny_config("exp1", "runtime.jobs=2", f"runtime.data_dir={tmp_path / 'manifest.csv'}", corpus="csv")
    with pytest.raises(SerKerasError, match=r"^fold speaker-aaa: no usable training or test utterances") as info:
        fit(config, tmp_path / "run", progress=False)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "run" / "results.json").exists()


def _exited(pid: int) -> bool:
    """Whether process `pid` has ended (gone, or a zombie nobody has reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads process states from /proc (Linux)")
def test_workers_stop_when_fit_is_killed(tmp_path):
    """`fit --jobs 2` killed outright (SIGKILL: no chance to stop its workers) leaves no worker
    training on: each notices that its parent is gone and exits within seconds."""
    import subprocess
    import sys
    import time

    argv = [sys.executable, "-m", "ser_keras.cli", "fit", "--corpus", "demo", "--experiment", "exp4",
            "--protocol", "random", "--jobs", "2", "--run-dir", str(tmp_path / "run"),
            "--set", "train.folds=2", "--set", "train.epochs=200", "--set", "train.patience=200",
            "--set", "sae.epochs=1", "--set", "sae.patches_per_size=256", "--set", "model.lstm_units=4"]
    fit = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    workers, seen = set(), []
    try:
        deadline = time.time() + 300
        while len(workers) < 2 and time.time() < deadline:
            line = fit.stdout.readline()
            if not line:
                break
            seen.append(line)
            workers.update(int(pid) for pid in re.findall(r"process (\d+)\)", line))
        assert len(workers) == 2, "".join(seen[-20:])
        fit.kill()
        fit.wait()
        deadline = time.time() + 30
        while not all(_exited(pid) for pid in workers) and time.time() < deadline:
            time.sleep(0.5)
        assert all(_exited(pid) for pid in workers), "a fold worker outlived fit"
    finally:
        if fit.poll() is None:
            fit.kill()
        for pid in workers:
            if not _exited(pid):
                os.kill(pid, 9)
