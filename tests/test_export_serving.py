"""export_run: the SavedModel's endpoints, labels, metadata, input checks, exp1/exp2/exp3."""

import json
import os
import pathlib
import shutil
import stat
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from ser_keras.errors import SerKerasError
from ser_keras.export import graph as serving_graph
from ser_keras.export import serving
from ser_keras.inference.fold import attention_steps, load_fold
from tests.conftest import LABELS, tone

SAVED_MODEL_CLI = pathlib.Path(sys.executable).parent / "saved_model_cli"


@pytest.fixture(scope="module")
def exp4_export(tiny_run, exported):
    return exported(tiny_run("exp4"))


@pytest.fixture(scope="module")
def exp4_loaded(exp4_export):
    return tf.saved_model.load(str(exp4_export))


def _in_process(run_dir, waveform):
    bundle = load_fold(run_dir)
    return bundle.score(bundle.features(waveform)[None])


def test_export_directory_layout(exp4_export):
    names = {p.name for p in exp4_export.iterdir()}
    assert {"saved_model.pb", "variables", "assets", "model.keras", "export.json", "frontend.npz",
            "config.yaml"} <= names
    assert (exp4_export / "assets" / "labels.txt").read_text().split() == list(LABELS)
    meta = json.loads((exp4_export / "export.json").read_text())
    assert meta["labels"] == list(LABELS)
    assert meta["sample_rate"] == 16000
    assert meta["experiment"] == "exp4" and meta["fold"] == "fold_0"
    assert meta["input"] == "waveform" and meta["attention"] == "learned"
    assert meta["attention_step_s"] == pytest.approx(0.15) and meta["attention_span_s"] == pytest.approx(0.30)
    assert "protocol" in meta
    # The SavedModel's files; model.tflite has its own size check (tests/test_export_litert.py).
    size = sum(p.stat().st_size for p in exp4_export.rglob("*") if p.is_file() and p.name != "model.tflite")
    assert size <= 5 * 1024 * 1024


def test_labels_and_metadata_endpoints(exp4_loaded, exp4_export):
    out = exp4_loaded.labels()
    assert [s.decode() for s in out["labels"].numpy()] == list(LABELS)
    labels_file = pathlib.Path(out["labels_file"].numpy().decode())
    assert labels_file.parent == exp4_export / "assets"
    assert labels_file.read_text().split() == list(LABELS)
    meta = exp4_loaded.signatures["metadata"]()
    assert int(meta["sample_rate"]) == 16000
    assert float(meta["attention_step_s"]) == pytest.approx(0.15)
    assert set(exp4_loaded.signatures) >= {"serve", "serve_lengths", "labels", "metadata", "serving_default"}


def test_serve_matches_in_process_model(exp4_loaded, tiny_run):
    run_dir = tiny_run("exp4")
    for seconds in (0.5, 1.7):
        waveform = tone(seconds, seed=int(seconds * 10))
        out = exp4_loaded.serve(waveform[None])
        probs, alpha = _in_process(run_dir, waveform)
        np.testing.assert_allclose(out["probabilities"].numpy(), probs, atol=1e-5)
        np.testing.assert_allclose(out["attention"].numpy(), alpha, atol=1e-5)
        assert out["probabilities"].shape == (1, len(LABELS))
        assert np.isclose(out["probabilities"].numpy().sum(), 1.0, atol=1e-5)
        assert np.isclose(out["attention"].numpy().sum(), 1.0, atol=1e-5)


def test_serve_defined_for_short_silent_and_batched_input(exp4_loaded, tiny_run):
    config = load_fold(tiny_run("exp4")).config
    for waveform in (np.zeros((2, 16000), np.float32), np.zeros((1, 10), np.float32),
                     np.zeros((1, 0), np.float32)):
        out = exp4_loaded.serve(waveform)
        probs = out["probabilities"].numpy()
        assert probs.shape == (waveform.shape[0], len(LABELS)) and np.all(np.isfinite(probs))
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
        n_frames = 1 + (max(waveform.shape[1], 320) - 320) // 160
        assert out["attention"].shape == (waveform.shape[0], attention_steps(n_frames, config))
    # A recording shorter than one frame is the same as that recording zero-padded to one frame.
    short = tone(0.01)
    padded = np.pad(short, (0, 320 - len(short)))
    np.testing.assert_allclose(exp4_loaded.serve(short[None])["probabilities"].numpy(),
                               exp4_loaded.serve(padded[None])["probabilities"].numpy(), atol=1e-6)


def test_serve_very_long_input(exp4_loaded, tiny_run):
    """A 60 s recording in one call: one attention step per 0.15 s, weights sum to 1."""
    out = exp4_loaded.serve(tone(60.0)[None])
    assert out["attention"].shape == (1, attention_steps(5999, load_fold(tiny_run("exp4")).config))
    assert np.isclose(out["attention"].numpy().sum(), 1.0, atol=1e-4)
    assert np.isclose(out["probabilities"].numpy().sum(), 1.0, atol=1e-5)


def test_serve_lengths_equals_serve_per_row(exp4_loaded):
    a, b = tone(1.0, seed=1), tone(0.6, seed=2)
    batch = np.zeros((2, len(a)), np.float32)
    batch[0], batch[1, : len(b)] = a, b
    out = exp4_loaded.serve_lengths(batch, np.array([len(a), len(b)], np.int32))
    for row, waveform in enumerate((a, b)):
        alone = exp4_loaded.serve(waveform[None])
        np.testing.assert_allclose(out["probabilities"].numpy()[row], alone["probabilities"].numpy()[0], atol=1e-5)
        steps = alone["attention"].shape[1]
        np.testing.assert_allclose(out["attention"].numpy()[row, :steps], alone["attention"].numpy()[0], atol=1e-5)
        assert np.all(out["attention"].numpy()[row, steps:] == 0)


def test_wrong_dtype_or_rank_is_rejected(exp4_loaded):
    with pytest.raises(TypeError, match=r"float32"):
        exp4_loaded.serve(tf.zeros((1, 16000), tf.int32))
    # NumPy integers are cast by TensorFlow's argument binding; int16 PCM is then caught by range.
    pcm = (tone(0.5) * 32767).astype(np.int16)
    with pytest.raises(tf.errors.InvalidArgumentError, match="integer PCM"):
        exp4_loaded.serve(pcm[None])
    with pytest.raises(TypeError, match=r"shape=\(None, None\)"):
        exp4_loaded.serve(np.zeros((16000,), np.float32))
    with pytest.raises(TypeError, match=r"shape=\(None, None\)"):
        exp4_loaded.serve(np.zeros((1, 2, 16000), np.float32))
    # Signature callers bypass the TensorSpec check; the graph's own assertion names the input.
    serve = exp4_loaded.signatures["serve"]
    with pytest.raises(tf.errors.InvalidArgumentError, match="input waveform must be a rank-2 float32 tensor"):
        serve(waveform=tf.zeros((16000,)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="float"):
        serve(waveform=tf.zeros((1, 16000), tf.int32))


@pytest.mark.slow
def test_xla_export_agrees_and_buckets(tiny_run, exported):
    """The optional XLA export (jit_compile=True): same numbers; lengths in one bucket share
    one compilation."""
    run_dir = tiny_run("exp4")
    plain = tf.saved_model.load(str(exported(run_dir)))
    xla = tf.saved_model.load(str(exported(run_dir, jit_compile=True)))
    batch = np.stack([tone(1.0, seed=s) for s in range(3)])
    lengths = np.array([16000, 9000, 200], np.int32)
    a, b = xla.serve_lengths(batch, lengths), plain.serve_lengths(batch, lengths)
    np.testing.assert_allclose(a["probabilities"].numpy(), b["probabilities"].numpy(), atol=1e-5)
    np.testing.assert_allclose(a["attention"].numpy(), b["attention"].numpy(), atol=1e-5)
    # 1.0 s and 1.05 s fall in the same bucket (112 frames).
    c = xla.serve(tone(1.05, seed=9)[None])
    d = plain.serve(tone(1.05, seed=9)[None])
    np.testing.assert_allclose(c["probabilities"].numpy(), d["probabilities"].numpy(), atol=1e-5)
    meta = json.loads((exported(run_dir, jit_compile=True) / "export.json").read_text())
    assert meta["jit_compile"] is True


def test_bucket_grid():
    assert serving_graph.bucket_frames(1) == 16 and serving_graph.bucket_frames(99) == 112
    assert serving_graph.bucket_frames(999) == 1024 and serving_graph.bucket_frames(5999) == 6144
    grid = serving_graph.frame_buckets(100000)
    assert np.all(np.diff(grid) > 0) and np.all(grid[1:] / grid[:-1] <= 1.25 + 1e-9)
    assert [serving_graph.bucket_batch(b) for b in (1, 3, 17, 32, 33, 70)] == [1, 4, 32, 32, 64, 96]


@pytest.mark.slow
def test_exp3_attention_is_uniform(tiny_run, exported):
    run_dir = tiny_run("exp3")
    loaded = tf.saved_model.load(str(exported(run_dir)))
    waveform = tone(1.3)
    out = loaded.serve(waveform[None])
    alpha = out["attention"].numpy()[0]
    np.testing.assert_allclose(alpha, 1.0 / len(alpha), atol=1e-7)
    probs, _ = _in_process(run_dir, waveform)
    np.testing.assert_allclose(out["probabilities"].numpy(), probs, atol=1e-5)
    meta = json.loads((exported(run_dir) / "export.json").read_text())
    assert meta["attention"] == "uniform"


@pytest.mark.slow
def test_exp2_endpoint_takes_the_waveform(tiny_run, exported):
    """exp2 serves from a raw waveform like exp3-5: its LLDs are computed in the graph, by the
    ops feature extraction runs, and the export equals the in-process model."""
    run_dir = tiny_run("exp2")
    export_dir = exported(run_dir)
    loaded = tf.saved_model.load(str(export_dir))
    meta = json.loads((export_dir / "export.json").read_text())
    assert meta["input"] == "waveform" and meta["features"] == "lld" and len(meta["lld_names"]) == 20
    spec = loaded.signatures["serve"].structured_input_signature[1]
    assert list(spec) == ["waveform"] and spec["waveform"].shape.as_list() == [None, None]
    bundle = load_fold(run_dir)
    waveform = tone(0.8)
    out = loaded.serve(waveform[None])
    probs, _ = bundle.score(bundle.features(waveform)[None])
    np.testing.assert_allclose(out["probabilities"].numpy(), probs, atol=1e-5)
    assert int(out["speech"].numpy()[0]) == 1
    assert out["attention"].shape == (1, bundle.params.frame_count(len(waveform)))
    # Padded rows: each row as alone.
    batch = np.stack([waveform, np.pad(waveform[:6000], (0, len(waveform) - 6000))])
    padded = loaded.serve_lengths(batch, np.array([len(waveform), 6000], np.int32))
    alone = loaded.serve(waveform[None, :6000])
    np.testing.assert_allclose(padded["probabilities"].numpy()[1], alone["probabilities"].numpy()[0], atol=1e-5)


def test_exp1_cannot_be_exported(tmp_path, tiny_run):
    with pytest.raises(SerKerasError, match="export is not available for exp1") as info:
        serving.export_run(tiny_run("exp1"), tmp_path / "out")
    assert "\n" not in str(info.value)


def test_export_refuses_to_overwrite_a_foreign_directory(tmp_path, tiny_run):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(SerKerasError, match="not a ser_keras export"):
        serving.export_run(tiny_run("exp4"), tmp_path)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_export_fold_selection_errors(tiny_run, export_root):
    with pytest.raises(SerKerasError, match="out of range"):
        serving.export_run(tiny_run("exp4"), export_root / "never", fold=5)
    with pytest.raises(SerKerasError, match="no trained fold 'nope'"):
        serving.export_run(tiny_run("exp4"), export_root / "never", fold="nope")


def test_saved_model_cli_show_and_run(exp4_export, tmp_path):
    assert SAVED_MODEL_CLI.is_file(), f"saved_model_cli not next to {sys.executable}"
    show = subprocess.run([str(SAVED_MODEL_CLI), "show", "--all", "--dir", str(exp4_export)],
                          capture_output=True, text=True, timeout=300)
    assert show.returncode == 0, show.stderr[-2000:]
    assert "signature_def['serve']" in show.stdout and "inputs['waveform']" in show.stdout
    # TF 2.21's saved_model_cli evaluates --input_exprs as Python *literals* only
    # (ast.literal_eval), so 'waveform=np.zeros((1,16000),np.float32)' is refused there with
    # "is not a valid python literal"; the same 1-second zero waveform is given as a literal.
    # (--inputs waveform=zeros.npy is the other way.)
    literal = "waveform=[[" + ",".join(["0.0"] * 16000) + "]]"
    for args in (["--input_exprs", literal],):
        run = subprocess.run([str(SAVED_MODEL_CLI), "run", "--dir", str(exp4_export), "--tag_set", "serve",
                              "--signature_def", "serve", *args], capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-2000:]
        text = run.stdout.split("Result for output key probabilities:")[1]
        values = [float(v) for v in text.replace("[", " ").replace("]", " ").split()[: len(LABELS)]]
        assert len(values) == len(LABELS) and abs(sum(values) - 1.0) < 1e-5


@pytest.mark.slow
def test_cli_export_command(tmp_path, tiny_run):
    from ser_keras.cli import main

    out = tmp_path / "cli_export"
    previous = os.umask(0o022)
    try:
        assert main(["export", str(tiny_run("exp4")), "--out", str(out)]) == 0
    finally:
        os.umask(previous)
    assert (out / "saved_model.pb").is_file()
    # Readable by others, as anything made under a 022 umask (mkdtemp alone would give 0700).
    modes = {p.relative_to(out): stat.S_IMODE(p.stat().st_mode) for p in [out, *out.rglob("*")]}
    assert {m for p, m in modes.items() if (out / p).is_dir()} == {0o755}, modes
    assert {m for p, m in modes.items() if (out / p).is_file()} == {0o644}, modes
    # Exporting again replaces the earlier export (and nothing else).
    (out / "stale.txt").write_text("old")
    assert main(["export", str(tiny_run("exp4")), "--out", str(out), "--fold", "0"]) == 0
    assert not (out / "stale.txt").exists() and (out / "saved_model.pb").is_file()
    assert main(["export", str(tiny_run("exp1")), "--out", str(tmp_path / "x")]) == 2


def test_bench_inference_prints_the_table(exp4_export, capsys):
    import importlib.util

    path = pathlib.Path(__file__).resolve().parents[1] / "bench" / "inference.py"
    spec = importlib.util.spec_from_file_location("bench_inference", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--model", str(exp4_export), "--seconds", "1,10", "--batches", "1,2",
                       "--repeats", "1", "--min-time", "0"]) == 0
    out = capsys.readouterr().out
    assert "x real-time" in out and "peak RSS" in out and "MB on disk" in out
    assert "target >= 500x real-time on a 10 s clip at batch 1" in out
    assert len([line for line in out.splitlines() if line.strip().endswith("MB") and "s " in line]) >= 4
    assert bench.main(["--model", str(exp4_export / "variables")]) == 2


# ------------------------------------------------------------------ normalisation and speakers


def _padded(waveforms):
    batch = np.zeros((len(waveforms), max(len(w) for w in waveforms)), np.float32)
    for row, waveform in enumerate(waveforms):
        batch[row, : len(waveform)] = waveform
    return batch, np.array([len(w) for w in waveforms], np.int32)


def test_export_json_names_the_normalisation(exp4_export, exp4_loaded):
    meta = json.loads((exp4_export / "export.json").read_text())
    assert meta["normalization"] == "speaker"  # experiments/exp4.yaml
    assert meta["serve_without_speaker"] == "pooled"  # single recordings: pooled training statistics
    assert meta["norm_std_floor"] == pytest.approx(1e-3) and meta["feature_dim"] == 256
    assert {"serve_speaker", "speaker_statistics", "serve_with_statistics"} <= set(meta["endpoints"])
    assert {"serve_speaker", "speaker_statistics", "serve_with_statistics"} <= set(exp4_loaded.signatures)


def test_serve_speaker_normalises_all_rows_with_the_speakers_statistics(exp4_loaded, tiny_run):
    """One speaker's recordings of different lengths in a padded batch: the statistics are those
    of all of their valid frames (features.normalize.frame_stats, as fit's "speaker" mode), and
    every row is scored with them. A row without speech (the 50 ms one: shorter than
    features.speech_min_ms) is left out of the statistics and gets uniform probabilities."""
    from ser_keras.features.normalize import frame_stats

    bundle = load_fold(tiny_run("exp4"))
    waveforms = [tone(s, seed=i, freq=f) for i, (s, f) in enumerate([(0.7, 180), (1.6, 260), (0.05, 300)])]
    speech = waveforms[:2]
    batch, lengths = _padded(waveforms)
    stats = frame_stats([bundle.raw_features(w) for w in speech], bundle.config.features.norm_std_floor)
    out = exp4_loaded.serve_speaker(batch, lengths)
    assert out["speech"].numpy().tolist() == [1, 1, 0]
    for row, waveform in enumerate(waveforms):
        probs, alpha = bundle.score(bundle.features(waveform, stats)[None])
        if row < 2:
            np.testing.assert_allclose(out["probabilities"].numpy()[row], probs[0], atol=1e-5)
        else:
            np.testing.assert_allclose(out["probabilities"].numpy()[row], 1 / len(LABELS), atol=1e-6)
        np.testing.assert_allclose(out["attention"].numpy()[row, : alpha.shape[1]], alpha[0], atol=1e-5)
    got = exp4_loaded.speaker_statistics(batch, lengths)
    assert got["speech"].numpy().tolist() == [1, 1, 0]
    np.testing.assert_allclose(got["mean"].numpy(), stats[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["std"].numpy(), stats[1], rtol=1e-5, atol=1e-5)
    assert float(got["frames"]) == sum(bundle.raw_features(w).shape[0] for w in speech)
    # Statistics given explicitly (enrolment) give what serve_speaker gives.
    given = exp4_loaded.serve_with_statistics(batch, lengths, got["mean"], got["std"])
    np.testing.assert_allclose(given["probabilities"].numpy(), out["probabilities"].numpy(), atol=1e-5)
    # Moments of separate calls add up to those of one call.
    parts = [exp4_loaded.speaker_statistics(w[None], np.array([len(w)], np.int32)) for w in waveforms]
    assert sum(float(p["frames"]) for p in parts) == float(got["frames"])
    np.testing.assert_allclose(sum(p["sum"].numpy() for p in parts), got["sum"].numpy(), rtol=1e-9)


def test_serve_with_statistics_checks_its_inputs(exp4_loaded):
    waveform = tone(0.5)[None]
    lengths = np.array([waveform.shape[1]], np.int32)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError, TypeError)):
        exp4_loaded.serve_with_statistics(waveform, lengths, np.zeros(10, np.float32), np.ones(10, np.float32))
    with pytest.raises(tf.errors.InvalidArgumentError, match="std must be positive"):
        exp4_loaded.signatures["serve_with_statistics"](
            waveform=tf.constant(waveform), lengths=tf.constant(lengths),
            mean=tf.zeros([256]), std=tf.zeros([256]))


def test_serve_speaker_is_serve_lengths_for_a_model_trained_without_speaker_statistics(tmp_path, tiny_run):
    """neutral_global: the model never saw speaker statistics, so serve_speaker is serve_lengths."""
    from ser_keras.rundir import load_run_config, save_run_config

    run_dir = tmp_path / "global"
    shutil.copytree(tiny_run("exp4"), run_dir)
    config, labels = load_run_config(run_dir)
    config.features.normalization = "neutral_global"
    save_run_config(config, run_dir, labels)
    graph = serving_graph.ServingGraph(load_fold(run_dir))
    batch, lengths = _padded([tone(0.6, seed=1), tone(1.1, seed=2)])
    speaker = graph.serve_speaker(tf.constant(batch), tf.constant(lengths))["probabilities"].numpy()
    alone = graph.serve_lengths(tf.constant(batch), tf.constant(lengths))["probabilities"].numpy()
    np.testing.assert_allclose(speaker, alone, atol=1e-6)
    meta = serving._export_metadata(load_fold(run_dir), False)
    assert meta["serve_without_speaker"] == "pooled" and meta["normalization"] == "neutral_global"


@pytest.mark.slow
def test_export_does_not_log_assets_written(tmp_path, tiny_run):
    """The SavedModel writer's INFO line ("Assets written to: ...") stays out of the user's log."""
    import logging

    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    logger = tf.get_logger()
    handler, level = Keep(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        serving.export_run(tiny_run("exp2"), tmp_path / "quiet")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert not [r for r in records if "Assets written" in r], records
    assert logger.level == level


def test_level_normalised_export_ignores_gain_and_flags_no_speech(tiny_run, exported):
    """A level-normalised export: probabilities at gains 0.5, 0.1 and 0.05 within 0.05 of gain 1;
    silence, low white noise, an empty and a too-short waveform: speech 0, uniform
    probabilities; NaN and Inf: an error that names them (not "integer PCM")."""
    loaded = tf.saved_model.load(str(exported(tiny_run("exp4", level=True))))
    speech = tone(1.5, seed=12) * np.linspace(0.2, 1.0, 24000, dtype=np.float32)
    reference = loaded.serve(speech[None])
    assert int(reference["speech"][0]) == 1
    for gain in (0.5, 0.1, 0.05):
        out = loaded.serve((speech * np.float32(gain))[None])
        assert int(out["speech"][0]) == 1
        assert np.abs(out["probabilities"].numpy() - reference["probabilities"].numpy()).max() <= 0.05
    rng = np.random.default_rng(0)
    for waveform in (np.zeros(32000, np.float32), rng.normal(0, 1e-3, 32000).astype(np.float32),
                     np.zeros(0, np.float32), speech[:800]):
        out = loaded.serve(waveform[None])
        assert int(out["speech"][0]) == 0
        np.testing.assert_allclose(out["probabilities"].numpy(), 1 / len(LABELS), atol=1e-6)
    for bad in (np.nan, np.inf):
        waveform = speech.copy()
        waveform[10] = bad
        with pytest.raises(tf.errors.InvalidArgumentError, match="NaN or Inf") as caught:
            loaded.serve(waveform[None])
        assert "integer PCM" not in str(caught.value)
