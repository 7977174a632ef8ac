"""`reproduce` writes report.md with all four experiments, the figures, the LSTM/BLSTM
comparison and the context sweep (``check_report``: run on the demo corpus, tiny models, first
fold, by notebook 02's test in tests/test_notebooks.py, so the suite runs it once); the openSMILE
baseline runs when the package is importable and is reported as skipped otherwise."""

import importlib.util
import subprocess
import sys
import textwrap
import types

import numpy as np
import pandas as pd
import pytest

from tests.conftest import tone, write_wav
from tests.test_training import TINY


def check_report(out, protocol_name: str = "leave-one-speaker-out") -> str:
    """What every `reproduce` report must hold (out: its output directory); returns its text.
    tests/test_notebooks.py runs `reproduce` on the demo corpus (tiny models, first fold) through
    notebook 02 and checks its report with this."""
    from ser_keras.rundir import load_run_config
    from ser_keras.evaluation.reproduce import describe_model

    text = (out / "report.md").read_text()
    for experiment in ("exp1", "exp2", "exp3", "exp4"):
        assert f"| {experiment} |" in text
    assert protocol_name in text and "UA %" in text and "WA %" in text
    assert "Fig. 4" in text and "without numbers" in text
    assert "(`model.bidirectional=false`)" in text
    assert "UAR vs context frames" in text
    # The baseline's rows where the opensmile package is installed, else the note that it was skipped.
    if importlib.util.find_spec("opensmile") is None:
        assert "openSMILE baseline skipped" in text
    else:
        assert "| baseline | openSMILE eGeMAPS + SVM, speaker normalisation" in text
        assert "| baseline | openSMILE ComParE + SVM, raw normalisation" in text
    for figure in ("fig4_experiments.png", "fig3_confusion_exp4.png", "context_sweep.png"):
        assert (out / figure).read_bytes()[:4] == b"\x89PNG"
        assert f"({figure})" in text
    for run in ("exp1", "exp2", "exp3", "exp4", "exp4-lstm"):
        assert (out / run / "results.json").is_file()
    # The model column describes the model each run trained, not the shipped YAML's (exp4.yaml:
    # 2 layers of 64) nor the paper's (2 x 30).
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in text.splitlines()
            if line.startswith("| exp")}
    for experiment in ("exp1", "exp2", "exp3", "exp4"):
        assert rows[experiment] == describe_model(load_run_config(out / experiment)[0])
    assert "2x30" not in text and "2x64" not in text
    lstm = describe_model(load_run_config(out / "exp4-lstm")[0])
    assert lstm == rows["exp4"].replace("BLSTM", "LSTM")
    assert f"| {lstm} (`model.bidirectional=false`) |" in text
    return text


def test_model_descriptions_follow_the_shipped_configs():
    from ser_keras.config import load_config
    from ser_keras.evaluation.reproduce import describe_model

    assert describe_model(load_config("exp4", corpus="demo")) == \
        "PCA spectrogram -> SAE-CNN -> BLSTM 2x64 -> attention pooling"  # exp4.yaml: 2 layers of 64
    assert describe_model(load_config("exp4", corpus="demo", overrides=["model.lstm_units=30"])).endswith(
        "BLSTM 2x30 -> attention pooling")
    assert describe_model(load_config("exp1", corpus="demo")) == "LLD functionals + RBF SVM"


def _fake_opensmile():
    """A stand-in for the `opensmile` package: deterministic 'functionals' per file."""
    module = types.ModuleType("opensmile")
    module.FeatureSet = types.SimpleNamespace(eGeMAPSv02="eGeMAPSv02", ComParE_2016="ComParE_2016")
    module.FeatureLevel = types.SimpleNamespace(Functionals="Functionals")

    class Smile:
        def __init__(self, feature_set, feature_level):
            self.size = 88 if feature_set == "eGeMAPSv02" else 130

        def process_file(self, path):
            import soundfile

            audio, _ = soundfile.read(path, dtype="float32")
            spectrum = np.abs(np.fft.rfft(audio, 2 * self.size))[: self.size]
            return pd.DataFrame([np.log(spectrum + 1e-6)])

    module.Smile = Smile
    return module


def test_opensmile_baseline_runs_on_the_same_folds(tmp_path, monkeypatch):
    from ser_keras.config import load_config
    from ser_keras.corpora import label_order, load_manifest
    from ser_keras.data.splits import make_folds
    from ser_keras.evaluation import baseline
    from ser_keras.evaluation.baseline import opensmile_available, run_baseline

    monkeypatch.setitem(sys.modules, "opensmile", _fake_opensmile())
    # The fake lives in this process only, so no fresh process may extract (that choice is
    # test_opensmile_extracts_after_tensorflow's).
    monkeypatch.setattr(baseline, "_extract_rows", baseline._functionals)
    assert opensmile_available()
    config = load_config("exp1", corpus="demo", overrides=["model.svm_c_grid=[1.0]"])
    manifest = load_manifest("demo", None, config.data)
    folds = make_folds(manifest, "loso", seed=0, validation_fraction=0.15)
    rows = run_baseline(config, manifest, folds, label_order(manifest), tmp_path)
    assert [(r["name"], r["normalisation"]) for r in rows] == [
        ("ser_keras in-graph + SVM", "raw"), ("ser_keras in-graph + SVM", "speaker"),
        ("openSMILE eGeMAPS + SVM", "raw"), ("openSMILE eGeMAPS + SVM", "speaker"),
        ("openSMILE ComParE + SVM", "raw"), ("openSMILE ComParE + SVM", "speaker")]
    assert all(r["n"] == len(manifest) and 0 <= r["ua"] <= 1 for r in rows)
    assert (tmp_path / "opensmile_eGeMAPS.npz").is_file()


def test_baseline_module_does_not_load_tensorflow():
    """The fresh process that extracts openSMILE functionals imports this module: it must not
    load TensorFlow's library before openSMILE's (which crashes in malloc)."""
    code = "import sys, ser_keras.evaluation.baseline; print('tensorflow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "False", result.stderr[-2000:]


def test_opensmile_extracts_after_tensorflow(tmp_path):
    """`reproduce` loads TensorFlow before its baseline; real openSMILE must still extract."""
    if importlib.util.find_spec("opensmile") is None:
        pytest.skip("the optional opensmile package is not installed")
    paths = [str(write_wav(tmp_path / f"{i}.wav", tone(1.0, seed=i))) for i in range(2)]
    code = textwrap.dedent(f"""
        import tensorflow, pandas as pd
        from ser_keras.evaluation.baseline import extract_opensmile
        features = extract_opensmile(pd.DataFrame({{"path": {paths!r}}}), "eGeMAPS", {str(tmp_path / "f.npz")!r})
        print(features.shape)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "(2, 88)"


@pytest.mark.slow
def test_full_reproduce_on_demo(tmp_path):
    """Every fold, the default sweep: minutes, opt in with -m slow."""
    from ser_keras.evaluation.reproduce import reproduce

    report = reproduce("demo", None, "loso", tmp_path / "out", overrides=TINY, progress=False)
    assert "Not every fold was run" not in report.read_text()
