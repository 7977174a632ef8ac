"""model.tflite in every export: conversion, the LiteRT runner, parity with the SavedModel, predict."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed (pip install -e '.[litert]')")

import tensorflow as tf  # noqa: E402

from ser_keras.errors import SerKerasError  # noqa: E402
from ser_keras.inference import predict  # noqa: E402
from ser_keras.inference.litert_runner import LiteRTModel  # noqa: E402
from tests.conftest import LABELS, REPO_ROOT, tone, write_wav  # noqa: E402


@pytest.fixture(scope="module")
def tiny_export(tiny_run, exported):
    return exported(tiny_run("exp4"), litert=True)


def _signals(demo_files):
    import soundfile

    waves = [soundfile.read(str(path), dtype="float32")[0] for path in demo_files[:6]]
    return waves + [tone(0.3, seed=1), tone(2.4, seed=2), np.zeros(8000, np.float32)]


def test_export_writes_a_litert_model_with_the_serve_signature(trained_export):
    """The shipped default's export (network and functionals SVM) holds model.tflite."""
    meta = json.loads((trained_export / "export.json").read_text())
    assert meta["litert"]["file"] == "model.tflite" and meta["litert"]["quantize"] == "none"
    path = trained_export / "model.tflite"
    assert path.stat().st_size == meta["litert"]["bytes"] <= 5 * 1024 * 1024
    model = LiteRTModel(trained_export)
    assert model.labels == list(LABELS) and model.sample_rate == 16000
    assert list(model.runner.get_input_details()) == ["waveform"]
    assert set(model.runner.get_output_details()) == {"probabilities", "attention", "speech"}
    # Builtin operators only: the plain wheel's interpreter ran it above; no Flex op is listed.
    names = [op["op_name"] for op in model.interpreter._get_ops_details()]
    assert not any(name.startswith("Flex") or name == "CUSTOM" for name in names), set(names)
    # One recording traces without a loop or branch over batch rows (the front end and the
    # functionals as straight-line ops, which LiteRT plans once per length): the only loops are
    # the four directions of the default's two BLSTM layers.
    assert "IF" not in names and names.count("WHILE") == 4, [n for n in names if n in ("IF", "WHILE")]


def test_litert_matches_the_savedmodel_of_a_trained_default_model(trained_export, demo_files):
    """The shipped experiment (exp5: pitch channels, level normalisation, three test-time views,
    the functionals classifier fused with the network) in both runtimes."""
    meta = json.loads((trained_export / "export.json").read_text())
    assert meta["functionals"] and meta["litert"]["functionals"] is True
    loaded = tf.saved_model.load(str(trained_export))
    model = LiteRTModel(trained_export / "model.tflite")
    for waveform in _signals(demo_files):
        out = model.serve(waveform)
        ref = loaded.serve(waveform[None])
        np.testing.assert_allclose(out["probabilities"], ref["probabilities"].numpy()[0], atol=1e-4)
        np.testing.assert_allclose(out["attention"], ref["attention"].numpy()[0], atol=1e-4)
        assert out["speech"] == bool(ref["speech"].numpy()[0])


@pytest.mark.slow
def test_the_conversion_itself_is_exact(trained_demo_run, trained_export, demo_files):
    """LiteRT against the frozen, float32 TensorFlow graph it was converted from: what is left
    of any difference to the SavedModel is float32 arithmetic in the front end (a diagnostic of
    the test above, which holds LiteRT to the SavedModel; it traces the whole graph again)."""
    from ser_keras.inference.fold import load_fold
    from ser_keras.export.graph import ServingGraph
    from ser_keras.export.litert import rewritten_function

    graph = ServingGraph(load_fold(trained_demo_run), fused=False)
    function, names = rewritten_function(graph.serve, tf.TensorSpec([1, None], tf.float32, name="waveform"))
    model = LiteRTModel(trained_export)
    for waveform in _signals(demo_files)[:4]:
        ref = dict(zip(names, function(tf.constant(waveform[None]))))
        out = model.serve(waveform)
        np.testing.assert_allclose(out["probabilities"], ref["probabilities"].numpy()[0], atol=1e-5)


def test_predict_on_the_tflite_gives_the_savedmodel_answers(trained_export, export_root):
    folder = export_root / "litert_predict"
    write_wav(folder / "short.wav", tone(1.3, seed=21))
    write_wav(folder / "long.wav", np.concatenate([tone(6.0, seed=22), tone(5.0, freq=160, seed=23)]))
    saved = predict.predict_files(predict.load_predictor(trained_export), [folder])
    lite = predict.predict_files(predict.load_predictor(trained_export / "model.tflite"), [folder])
    by_runtime = predict.predict_files(predict.load_predictor(trained_export, runtime="litert"), [folder])
    assert not saved["errors"] and not lite["errors"]
    for a, b, c in zip(saved["results"], lite["results"], by_runtime["results"]):
        assert a["path"] == b["path"] and a["label"] == b["label"] and b == c
        np.testing.assert_allclose(list(a["probabilities"].values()), list(b["probabilities"].values()), atol=1e-4)
        assert len(a["windows"]) == len(b["windows"])
        np.testing.assert_allclose(a["attention"]["weights"], b["attention"]["weights"], atol=1e-4)
    assert len(lite["results"][0]["windows"]) > 1  # long.wav: the sliding windows ran


def test_a_network_only_litert_model_of_a_fused_export_is_refused(trained_export, export_root):
    """An export written before model.tflite held the functionals classifier: its answers would
    differ from the SavedModel's, so predict says to export again instead of serving them."""
    old = export_root / "litert_network_only"
    old.mkdir(exist_ok=True)
    meta = json.loads((trained_export / "export.json").read_text())
    meta["litert"]["functionals"] = False
    (old / "export.json").write_text(json.dumps(meta))
    (old / "model.tflite").write_bytes((trained_export / "model.tflite").read_bytes())
    with pytest.raises(SerKerasError, match="holds the network only.*export the run again"):
        predict.load_predictor(old / "model.tflite")


def test_predict_cli_runtime_litert_and_its_limits(trained_export, export_root, capsys):
    from ser_keras.cli import main

    path = write_wav(export_root / "litert_cli" / "one.wav", tone(1.0, seed=31))
    assert main(["predict", str(trained_export), str(path), "--runtime", "litert", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"].endswith("model.tflite") and len(report["results"]) == 1
    with pytest.raises(SerKerasError, match="only the serve endpoint"):
        predict.predict_files(predict.load_predictor(trained_export, runtime="litert"), [path], same_speaker=True)
    with pytest.raises(SerKerasError, match="no such LiteRT model"):
        LiteRTModel(export_root / "nowhere.tflite")


@pytest.mark.slow
@pytest.mark.parametrize("quantize", ["float16", "int8"])
def test_quantized_litert_models_are_smaller_and_close(tiny_run, tiny_export, export_root, quantize):
    from ser_keras.export.serving import export_run

    out = export_run(tiny_run("exp4"), export_root / f"export_litert_{quantize}", quantize=quantize)
    meta = json.loads((out / "export.json").read_text())
    assert meta["litert"]["quantize"] == quantize
    assert (out / "model.tflite").stat().st_size < 0.6 * (tiny_export / "model.tflite").stat().st_size
    full, small = LiteRTModel(tiny_export), LiteRTModel(out)
    for seconds in (0.8, 2.5):
        waveform = tone(seconds, seed=int(10 * seconds))
        a, b = full.serve(waveform), small.serve(waveform)
        assert np.isclose(b["probabilities"].sum(), 1.0, atol=1e-4)
        np.testing.assert_allclose(b["probabilities"], a["probabilities"], atol=0.05)


def test_int8_is_refused_for_a_fused_default(trained_demo_run, export_root):
    from ser_keras.export.graph import ServingGraph
    from ser_keras.export.litert import write_litert
    from ser_keras.inference.fold import load_fold

    with pytest.raises(SerKerasError, match="quantize int8: .*functionals"):
        write_litert(ServingGraph(load_fold(trained_demo_run), fused=False), export_root, quantize="int8")


@pytest.mark.slow
def test_float16_rounds_only_the_network_of_a_fused_default(trained_demo_run, trained_export, export_root,
                                                            demo_files):
    """float16 halves the network's weights; the front end and the functionals classifier keep
    float32 (the support vectors are float16 values in both): the answers barely move."""
    from ser_keras.export.graph import ServingGraph
    from ser_keras.export.litert import write_litert
    from ser_keras.inference.fold import load_fold

    out = export_root / "litert_float16_default"
    out.mkdir(exist_ok=True)
    meta = write_litert(ServingGraph(load_fold(trained_demo_run), fused=False), out, quantize="float16")
    assert meta["bytes"] < (trained_export / "model.tflite").stat().st_size
    full, small = LiteRTModel(trained_export / "model.tflite"), LiteRTModel(out / "model.tflite")
    for waveform in _signals(demo_files)[:4]:
        np.testing.assert_allclose(small.serve(waveform)["probabilities"], full.serve(waveform)["probabilities"],
                                   atol=1e-3)


def test_quantize_choice_is_checked():
    from ser_keras.export.litert import write_litert

    with pytest.raises(SerKerasError, match="quantize: expected one of none, float16, int8, got 'int4'"):
        write_litert(None, ".", quantize="int4")


def test_the_runner_imports_without_tensorflow():
    code = ("import sys; import ser_keras.inference.litert_runner; "
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'; print('ok')")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_the_runtime_is_quiet_where_tensorflow_would_be(trained_export):
    """LiteRT's own "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." follows TensorFlow's
    log level, which the command line sets (quiet unless --verbose): none with INFO hidden."""
    code = ("import numpy as np; from ser_keras.inference.litert_runner import LiteRTModel; "
            f"LiteRTModel({str(trained_export)!r}).serve(np.zeros(16000, np.float32)); print('ok')")

    def stderr_at(level):
        done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=120, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": level})
        assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
        return done.stderr

    loud = stderr_at("0")
    if "TensorFlow Lite" not in loud:
        pytest.skip("this LiteRT prints nothing when it starts, so there is nothing to hide")
    assert stderr_at("3") == ""
