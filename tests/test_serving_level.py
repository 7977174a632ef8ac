"""Serving is honest about level and silence (issue #16): a model trained with
``features.level_normalization`` gives the same probabilities at any gain in [0.05, 1], and
recordings without speech come back with ``speech`` 0 and uniform probabilities — checked on the
export in a process that never imports ser_keras, and on ``predict`` with the run directory.

Slow (one demo fit and export: about a minute of CPU, more on a busy machine);
tests/test_export_serving.py checks the same on a hand-made (untrained) level-normalised export
in the default suite."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from ser_keras.audio import load_audio
from ser_keras.cli import main
from tests.conftest import LABELS, SHARED_CORPORA, TRAIN_OVERRIDES, write_wav

pytestmark = pytest.mark.slow

GAINS = (1.0, 0.5, 0.1, 0.05)
MAX_GAIN_DP = 0.05

# TensorFlow and NumPy only: every waveform through serve, errors kept as text.
PLAIN_TF = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf

    export_dir, inputs, output = sys.argv[1:4]
    model = tf.saved_model.load(export_dir)
    out = {"serve": {}}
    with np.load(inputs) as waveforms:
        for key in waveforms.files:
            try:
                result = model.serve(waveforms[key].reshape(1, -1).astype(np.float32))
                out["serve"][key] = {"probabilities": result["probabilities"].numpy()[0].tolist(),
                                     "speech": int(result["speech"].numpy()[0])}
            except Exception as exc:
                out["serve"][key] = {"error": f"{type(exc).__name__}: {exc}"}
        speech, silence = waveforms["speech_1"], np.zeros(8000, np.float32)
        batch = np.zeros((2, len(speech)), np.float32)
        batch[0], batch[1, :len(silence)] = speech, silence
        lengths = np.array([len(speech), len(silence)], np.int32)
        out["serve_lengths_speech"] = model.serve_lengths(batch, lengths)["speech"].numpy().tolist()
        out["serve_speaker_speech"] = model.serve_speaker(batch, lengths)["speech"].numpy().tolist()
    meta = model.signatures["metadata"]()
    out["metadata"] = {key: (value.numpy().tolist() if value.dtype != tf.string
                             else [s.decode() for s in np.atleast_1d(value.numpy())])
                       for key, value in meta.items()}
    out["ser_keras_imported"] = any(name.split(".")[0] == "ser_keras" for name in sys.modules)
    with open(output, "w") as f:
        json.dump(out, f)
""")


@pytest.fixture(scope="module")
def level_run(export_root):
    """A real demo run of the shipped default (one fold, one epoch; its level normalisation and
    relative floor as shipped), exported."""
    from ser_keras.config import DEFAULT_EXPERIMENT, load_config
    from ser_keras.export.serving import export_run
    from ser_keras.evaluation.fit import fit

    config = load_config(experiment=DEFAULT_EXPERIMENT, corpus="demo",
                         overrides=TRAIN_OVERRIDES + ["features.warp_factors=[]"])
    assert config.features.level_normalization and config.features.level_floor_db is not None
    run_dir = export_root / "demo_default_level"
    fit(config, run_dir, progress=False)
    return run_dir, export_run(run_dir, export_root / "export_demo_default_level")


def _speech_files(demo_files) -> list:
    files = list(demo_files[::97])  # two demo utterances
    files += sorted((SHARED_CORPORA / "emodb").rglob("*.wav"))[:1]  # real speech, when present
    return files


def _waveforms(demo_files) -> dict:
    rng = np.random.default_rng(0)
    out = {}
    for i, path in enumerate(_speech_files(demo_files)):
        speech = load_audio(path, 16000)
        for gain in GAINS:
            out[f"speech_{i}_{gain:g}"] = (speech * np.float32(gain)).astype(np.float32)
    out["speech_1"] = out["speech_0_1"]
    out["silence"] = np.zeros(32000, np.float32)
    out["noise"] = rng.normal(0, 1e-3, 32000).astype(np.float32)
    out["empty"] = np.zeros(0, np.float32)
    out["too_short"] = out["speech_0_1"][:800]  # 50 ms
    out["nan"] = out["speech_0_1"].copy()
    out["nan"][100] = np.nan
    out["inf"] = out["speech_0_1"].copy()
    out["inf"][5] = np.inf
    return out


@pytest.fixture(scope="module")
def served(level_run, export_root, demo_files):
    _, export_dir = level_run
    inputs, output, script = (export_root / name for name in ("level_inputs.npz", "level_out.json", "plain_tf.py"))
    np.savez(inputs, **_waveforms(demo_files))
    script.write_text(PLAIN_TF)
    # -I: isolated mode, so the source tree cannot be on sys.path.
    done = subprocess.run([sys.executable, "-I", str(script), str(export_dir), str(inputs), str(output)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(output.read_text())
    assert out["ser_keras_imported"] is False
    return out


def test_served_probabilities_do_not_depend_on_the_gain(served, demo_files):
    for i, _ in enumerate(_speech_files(demo_files)):
        reference = np.array(served["serve"][f"speech_{i}_1"]["probabilities"])
        for gain in GAINS:
            entry = served["serve"][f"speech_{i}_{gain:g}"]
            assert entry["speech"] == 1, (i, gain)
            dp = np.abs(np.array(entry["probabilities"]) - reference).max()
            assert dp <= MAX_GAIN_DP, f"file {i}, gain {gain}: max |dp| {dp:.3f}"


def test_no_speech_gets_speech_0_and_no_confident_emotion(served):
    for name in ("silence", "noise", "empty", "too_short"):
        entry = served["serve"][name]
        assert entry["speech"] == 0, name
        np.testing.assert_allclose(entry["probabilities"], 1 / len(LABELS), atol=1e-6)
    assert served["serve_lengths_speech"] == [1, 0]
    assert served["serve_speaker_speech"] == [1, 0]


def test_nan_and_inf_are_named_not_taken_for_integer_pcm(served):
    for name in ("nan", "inf"):
        error = served["serve"][name].get("error", "")
        assert "NaN or Inf" in error and "integer PCM" not in error, error[:300]


def test_metadata_says_level_normalised(served):
    meta = served["metadata"]
    assert meta["level_normalization"] is True and meta["corpus"] == ["demo"]
    assert meta["n_training_utterances"] > 0 and len(meta["training_speakers"]) == 4


def test_predict_run_directory_matches_the_export_and_flags_speech(level_run, served, tmp_path, capsys, demo_files):
    """The NumPy path (predict with the run directory): the export's numbers (|dp| <= 1e-4,
    same label) at every gain, and "speech" false for silence and noise."""
    run_dir, _ = level_run
    waveforms = _waveforms(demo_files)
    names = [f"speech_0_{gain:g}" for gain in GAINS] + ["silence", "noise"]
    paths = [write_wav(tmp_path / f"{name}.wav", waveforms[name], subtype="FLOAT") for name in names]
    assert main(["predict", str(run_dir), *map(str, paths), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    results = {r["path"].rsplit("/", 1)[-1][:-4]: r for r in report["results"]}
    for name in names:
        speech = name.startswith("speech")
        assert results[name]["speech"] is speech, name
        got = np.array(list(results[name]["probabilities"].values()))
        expected = np.array(served["serve"][name]["probabilities"])
        assert np.abs(got - expected).max() <= 1e-4, name
        if speech:
            assert results[name]["label"] == report["labels"][int(np.argmax(expected))]
        else:
            assert results[name]["label"] is None
    assert main(["predict", str(run_dir), str(paths[-2])]) == 0
    assert "no speech" in capsys.readouterr().out
