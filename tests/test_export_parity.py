"""Parity of a trained, exported model with the in-process pipeline, served without ser_keras.

A real run of the shipped default (``evaluation.fit.fit`` of the default experiment on the demo
corpus: one fold, one epoch) is exported;
a fresh Python process that imports only TensorFlow and NumPy loads the SavedModel and scores
the utterances; ``predict_files`` scores the same utterances in-process from the run
directory. Asserted: the same label on every utterance and max |dp| < 1e-6, what the README
says. Both run the same front-end ops (``features.frontend_ops``); what is left is float32
rounding (batching, summation order). fit's CSV
files hold probabilities rounded to 6 decimals (up to 5e-7 more), so against them 2e-6
(measured 5.0e-7 and 5.3e-7).

Both uses of a speaker-normalised model are checked: single recordings (``serve`` vs
``predict``), and all recordings of one speaker (``serve_speaker`` on a padded batch per demo
speaker vs ``predict --same-speaker``). And the figures ``fit`` reports are what the export
gives: its ``serving`` figure (single recordings) is ``serve`` on the test fold, and, under
leave-one-speaker-out, its protocol figure is ``serve_speaker`` on the test speaker.
"""

import json
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from ser_keras.audio import load_audio
from ser_keras.config import DEFAULT_EXPERIMENT
from ser_keras.inference.predict import predict_files
from tests.conftest import (SHARED_CORPORA, TRAIN_OVERRIDES, build_once, build_trained_export, build_trained_run,
                            corpus_dir)

# The functionals classifier's dot products over 3111 functionals are summed in another order by
# NumPy (in-process) than by TensorFlow (the graph): about 1e-6 of the fused probabilities.
MAX_DP = 5e-6
MIN_AGREEMENT = 1.0
# fit's predictions.csv / serving_predictions.csv: rounded to 6 decimals, so MAX_DP + 5e-7, with room.
FIT_MAX_DP = 6e-6

# Runs in a process that never imports ser_keras: TensorFlow and NumPy only.
SERVE_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf

    export_dir, inputs, output = sys.argv[1:4]
    groups = json.load(open(sys.argv[4])) if len(sys.argv) > 4 else []  # rows of one speaker each
    model = tf.saved_model.load(export_dir)
    labels = [s.decode() for s in model.labels()["labels"].numpy()]
    rate = int(model.signatures["metadata"]()["sample_rate"])
    out = {"labels": labels, "sample_rate": rate, "probabilities": [], "attention": [], "speaker": {}}
    with np.load(inputs) as waveforms:
        for key in sorted(waveforms.files, key=int):
            result = model.serve(waveforms[key][None])
            out["probabilities"].append(result["probabilities"].numpy()[0].tolist())
            out["attention"].append(result["attention"].numpy()[0].tolist())
        for group in groups:  # one zero-padded batch per speaker, with the valid lengths
            rows = [waveforms[str(i)] for i in group]
            batch = np.zeros((len(rows), max(len(r) for r in rows)), np.float32)
            for j, row in enumerate(rows):
                batch[j, :len(row)] = row
            lengths = np.array([len(r) for r in rows], np.int32)
            result = model.serve_speaker(batch, lengths)["probabilities"].numpy()
            for j, i in enumerate(group):
                out["speaker"][str(i)] = result[j].tolist()
    # Input that holds nothing to score.
    rng = np.random.default_rng(0)
    cases = {"empty": np.zeros((1, 0), np.float32), "silence": np.zeros((1, 32000), np.float32),
             "low_noise": rng.normal(0, 1e-3, (1, 32000)).astype(np.float32),
             "nan": np.full((1, 16000), np.nan, np.float32)}
    out["nothing_to_score"] = {}
    for name, waveform in cases.items():
        try:
            result = model.serve(tf.constant(waveform))
            out["nothing_to_score"][name] = {"speech": result["speech"].numpy().tolist(),
                                             "probabilities": result["probabilities"].numpy()[0].tolist()}
        except Exception as exc:
            out["nothing_to_score"][name] = {"error": f"{type(exc).__name__}: {exc}"}
    out["ser_keras_imported"] = any(name.split(".")[0] == "ser_keras" for name in sys.modules)
    with open(output, "w") as f:
        json.dump(out, f)
""")


@pytest.fixture(scope="module")
def trained(trained_demo_run, trained_export):
    return trained_demo_run, trained_export


@pytest.fixture(scope="module")
def test_fold_files(trained) -> list:
    return _test_fold_files(trained[0])


def _test_fold_files(run_dir) -> list:
    """The demo files of the trained run's test fold (the files its serving figure scores)."""
    import pandas as pd

    fold = json.loads((run_dir / "results.json").read_text())["folds"][0]["name"]
    return list(pd.read_csv(run_dir / "folds" / fold / "serving_predictions.csv")["path"])


def _parity_files(demo_files) -> dict:
    """tag -> audio files: the demo files given, and the real corpora that are present."""
    sets = {"demo": demo_files}
    for corpus, step in (("casia", 48), ("emodb", 20)):
        path = SHARED_CORPORA / corpus
        if path.is_dir():
            sets[corpus] = sorted(path.rglob("*.wav"))[::step]
    return sets


@pytest.fixture(scope="module")
def parity(shared_root):
    """``build_parity``, computed once for all xdist workers of the test run (its tests may run
    on both)."""
    return pickle.loads(build_parity(shared_root).read_bytes())


def build_parity(root):
    """``_parity`` of the trained run's test fold, pickled."""
    trained = build_trained_run(root), build_trained_export(root)

    def compute(path):
        path.write_bytes(pickle.dumps(_parity(trained, _test_fold_files(trained[0]), root)))

    return build_once(root, "parity.pickle", compute)


def _parity(trained, demo_files, export_root) -> dict:
    """Per set: in-process predict from the run dir, and the export served by a fresh process
    that never imports ser_keras (one process for all sets: TensorFlow starts once)."""
    run_dir, export_dir = trained
    reports, waveforms, owners = {}, [], []
    for tag, files in _parity_files(demo_files).items():
        report = predict_files(run_dir, files)
        assert not report["errors"], report["errors"][:3]
        reports[tag] = report
        for result in report["results"]:
            waveforms.append(load_audio(result["path"], report["sample_rate"]))
            owners.append(tag)
    # The demo's speakers: one serve_speaker batch each, and predict --same-speaker per speaker.
    demo_paths = [r["path"] for r in reports["demo"]["results"]]
    speakers = _demo_speakers(run_dir, demo_paths)
    groups = [[i for i, s in enumerate(speakers) if s == speaker] for speaker in sorted(set(speakers))]
    same_speaker = {}
    for group in groups:
        report = predict_files(run_dir, [demo_paths[i] for i in group], same_speaker=True)
        assert not report["errors"] and report["normalization"] == "speaker"
        same_speaker.update({i: r for i, r in zip(group, report["results"])})
    served = _serve_in_fresh_process(export_root, export_dir, waveforms, "all", groups)
    owners = np.array(owners)
    out = {}
    for tag, report in reports.items():
        rows = np.flatnonzero(owners == tag)
        out[tag] = {
            "report": report,
            "probabilities": np.array([served["probabilities"][i] for i in rows]),
            "attention": [served["attention"][i] for i in rows],
            "labels": served["labels"], "sample_rate": served["sample_rate"],
            "ser_keras_imported": served["ser_keras_imported"],
        }
    out["nothing_to_score"] = served["nothing_to_score"]
    order = sorted(same_speaker)
    out["demo"]["same_speaker"] = {
        "report": {**reports["demo"], "results": [same_speaker[i] for i in order]},
        "probabilities": np.array([served["speaker"][str(i)] for i in order]),
    }
    return out


def _demo_speakers(run_dir, paths) -> list:
    """The speaker of each demo file (the speaker column of the run's manifest)."""
    from ser_keras.corpora import run_manifest
    from ser_keras.rundir import load_run_config

    manifest = run_manifest(load_run_config(run_dir)[0])
    speaker = dict(zip(manifest["path"].astype(str), manifest["speaker"].astype(str)))
    return [speaker[str(p)] for p in paths]


def _serve_in_fresh_process(export_root, export_dir, waveforms, tag, groups=()):
    """serve on every waveform, and serve_speaker on each group of waveform indices."""
    inputs = export_root / f"parity_{tag}.npz"
    output = export_root / f"parity_{tag}.json"
    groups_file = export_root / f"parity_{tag}_groups.json"
    groups_file.write_text(json.dumps([list(map(int, g)) for g in groups]))
    np.savez(inputs, **{str(i): w for i, w in enumerate(waveforms)})
    script = export_root / "serve_without_ser_keras.py"
    script.write_text(SERVE_SCRIPT)
    # -I: isolated mode, so neither the working directory nor PYTHONPATH can put the source
    # tree on sys.path; the script imports tensorflow and numpy only.
    done = subprocess.run([sys.executable, "-I", str(script), str(export_dir), str(inputs), str(output),
                           str(groups_file)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(output.read_text())


def _check_parity(entry, tag):
    report = entry["report"]
    assert entry["ser_keras_imported"] is False
    assert entry["labels"] == report["labels"] and entry["sample_rate"] == report["sample_rate"]
    in_process = np.array([list(r["probabilities"].values()) for r in report["results"]])
    exported_p = entry["probabilities"]
    assert in_process.shape == exported_p.shape
    agreement = float(np.mean(in_process.argmax(1) == exported_p.argmax(1)))
    max_dp = float(np.abs(in_process - exported_p).max())
    print(f"parity {tag}: {len(in_process)} utterances, argmax agreement {agreement:.4f}, max |dp| {max_dp:.2e}")
    assert max_dp < MAX_DP, f"{tag}: max |dp| = {max_dp:.2e}"
    assert agreement >= MIN_AGREEMENT, f"{tag}: argmax agreement {agreement:.3f}"
    for result, alpha in zip(report["results"], entry["attention"]):
        if len(result["windows"]) == 1:  # single window: the timeline is the model's alpha
            np.testing.assert_allclose(result["attention"]["weights"], alpha, atol=1e-4)
    return agreement, max_dp


def test_export_parity_on_demo_corpus(parity, test_fold_files):
    agreement, max_dp = _check_parity(parity["demo"], "demo")
    assert len(parity["demo"]["report"]["results"]) == len(test_fold_files) >= 40
    assert agreement == 1.0


@pytest.mark.corpus
@pytest.mark.parametrize("corpus", ["casia", "emodb"])
def test_export_parity_on_real_speech(parity, corpus):
    """Real utterances (CASIA 16 kHz; the EMO-DB copy is 22.05 kHz, resampled by load_audio
    before the endpoint, which takes the configured rate)."""
    corpus_dir(corpus)  # skips with the reason when the corpus is absent
    assert len(parity[corpus]["report"]["results"]) >= 25  # every 48th CASIA, every 20th EMO-DB file
    _check_parity(parity[corpus], corpus)


def test_export_of_trained_run_metadata(trained):
    run_dir, export_dir = trained
    meta = json.loads((export_dir / "export.json").read_text())
    assert meta["experiment"] == DEFAULT_EXPERIMENT and meta["protocol"] == "random" and meta["corpus"] == "demo"
    assert meta["fold"] == "random-1of4"
    assert (export_dir / "model.keras").is_file()
    results = json.loads((run_dir / "results.json").read_text())
    assert meta["labels"] == results["labels"]


def test_export_keras_model_holds_the_weights_without_optimizer_state(trained):
    """The export's model.keras is the fold's model with the same weights, saved without the
    optimizer's slots and moving average that the trained fold's own file keeps."""
    import io
    import zipfile

    import h5py
    import keras

    def groups(path):
        with zipfile.ZipFile(path) as archive:
            return set(h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r").keys())

    run_dir, export_dir = trained
    fold_file = next((run_dir / "folds").glob("*/model.keras"))
    assert "optimizer" in groups(fold_file) and "optimizer" not in groups(export_dir / "model.keras")
    assert (export_dir / "model.keras").stat().st_size < fold_file.stat().st_size / 2
    exported = keras.saving.load_model(export_dir / "model.keras", compile=False)
    original = keras.saving.load_model(fold_file, compile=False)
    for a, b in zip(exported.get_weights(), original.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_serve_speaker_parity_with_same_speaker_predict(parity, test_fold_files):
    """All recordings of one speaker: the export's serve_speaker (one padded batch per demo
    speaker, fresh TF-only process) vs in-process ``predict --same-speaker``."""
    entry = parity["demo"]["same_speaker"]
    report = entry["report"]
    assert len(report["results"]) == len(test_fold_files)
    in_process = np.array([list(r["probabilities"].values()) for r in report["results"]])
    agreement = float(np.mean(in_process.argmax(1) == entry["probabilities"].argmax(1)))
    max_dp = float(np.abs(in_process - entry["probabilities"]).max())
    print(f"serve_speaker parity demo: argmax agreement {agreement:.4f}, max |dp| {max_dp:.2e}")
    assert max_dp < MAX_DP and agreement >= MIN_AGREEMENT
    # The speaker's statistics, not each recording's own: a different input than serve's.
    assert np.abs(in_process - parity["demo"]["probabilities"]).max() > 1e-4


def test_fit_serving_figure_is_what_serve_gives(trained, parity):
    """results.json["serving"] and serving_predictions.csv (fit: each test utterance on its own)
    are what the export's serve endpoint gives for the same test files."""
    import pandas as pd

    from ser_keras.metrics import summarize

    run_dir, _ = trained
    results = json.loads((run_dir / "results.json").read_text())
    serving, labels = results["serving"], results["labels"]
    fold = results["folds"][0]
    assert {"serving_wa", "serving_ua", "serving_normalization"} <= set(fold)
    frame = pd.read_csv(run_dir / "folds" / fold["name"] / "serving_predictions.csv")
    served = dict(zip((r["path"] for r in parity["demo"]["report"]["results"]), parity["demo"]["probabilities"]))
    fit_p = frame[[f"p_{label}" for label in labels]].to_numpy()
    export_p = np.array([served[p] for p in frame["path"]])
    print(f"fit serving vs serve: max |dp| {np.abs(fit_p - export_p).max():.2e}")
    assert np.abs(fit_p - export_p).max() <= FIT_MAX_DP
    assert np.mean(fit_p.argmax(1) == export_p.argmax(1)) >= MIN_AGREEMENT
    y_true = frame["label"].map({label: i for i, label in enumerate(labels)}).to_numpy()
    summary = summarize(y_true, export_p.argmax(1), labels)
    assert summary["wa"] == pytest.approx(serving["wa"], abs=1.5 / len(frame))
    assert fold["serving_wa"] == pytest.approx(serving["wa"])  # one fold: pooled = the fold's


@pytest.fixture(scope="module")
def loso_run(shared_root):
    run_dir = build_loso_run(shared_root)
    return run_dir / "run", run_dir / "export"


def build_loso_run(root):
    """exp4 on the demo corpus under leave-one-speaker-out (first fold, one epoch) in
    ``run``, exported to ``export``."""
    from ser_keras.config import load_config
    from ser_keras.export.serving import export_run
    from ser_keras.evaluation.fit import fit

    def build(out):
        overrides = [o for o in TRAIN_OVERRIDES if not o.startswith(("train.protocol", "train.folds"))]
        config = load_config(experiment="exp4", corpus="demo", overrides=["train.protocol=loso", *overrides])
        fit(config, out / "run", progress=False)
        export_run(out / "run", out / "export", litert=False)

    return build_once(root, "demo_exp4_loso", build)


def test_fit_protocol_figure_is_what_serve_speaker_gives(loso_run):
    """Under LOSO, fit normalises the test speaker by all of their test utterances: serve_speaker
    on those utterances gives fit's test predictions (predictions.csv), so the protocol figure is
    what a user with the speaker's recordings gets from the export."""
    import pandas as pd
    import tensorflow as tf

    run_dir, export_dir = loso_run
    results = json.loads((run_dir / "results.json").read_text())
    labels = results["labels"]
    frame = pd.read_csv(run_dir / "predictions.csv")
    assert frame["speaker"].nunique() == 1
    waveforms = [load_audio(p, 16000) for p in frame["path"]]
    batch = np.zeros((len(waveforms), max(len(w) for w in waveforms)), np.float32)
    for row, waveform in enumerate(waveforms):
        batch[row, : len(waveform)] = waveform
    lengths = np.array([len(w) for w in waveforms], np.int32)
    loaded = tf.saved_model.load(str(export_dir))
    export_p = loaded.serve_speaker(batch, lengths)["probabilities"].numpy()
    fit_p = frame[[f"p_{label}" for label in labels]].to_numpy()
    print(f"fit protocol vs serve_speaker: max |dp| {np.abs(fit_p - export_p).max():.2e}")
    assert np.abs(fit_p - export_p).max() <= FIT_MAX_DP
    assert np.mean(fit_p.argmax(1) == export_p.argmax(1)) >= MIN_AGREEMENT
    assert results["serving"]["normalization"] == "pooled"


def test_bench_normalisation_prints_the_table(loso_run, capsys):
    """bench/normalisation.py on the trained LOSO fold (reused, not retrained): row (a) is fit's."""
    import importlib.util
    import pathlib

    run_dir, _ = loso_run
    path = pathlib.Path(__file__).resolve().parents[1] / "bench" / "normalisation.py"
    spec = importlib.util.spec_from_file_location("bench_normalisation", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    overrides = [o for o in TRAIN_OVERRIDES if not o.startswith(("train.protocol", "train.folds", "runtime.fold"))]
    argv = ["--corpus", "demo", "--folds", "0", "--out", str(run_dir), "--quiet", "--ks", "1,3", "--draws", "2"]
    assert bench.main(argv + [x for o in overrides for x in ("--set", o)]) == 0
    out = capsys.readouterr().out
    assert "agrees with fit's predictions.csv per fold: 100.0 %" in out
    for row in ("(a) speaker", "(b) pooled", "(c) per-utterance", "(d) enrol k=1", "(d) enrol k=3"):
        assert row in out


def test_export_scores_no_emotion_where_there_is_nothing_to_score(parity):
    """In the process without ser_keras (SERVE_SCRIPT): an empty waveform [1, 0], digital silence
    and 2 s of low-level white noise come back with speech 0 and uniform probabilities; NaN
    input is an error that names it (not a guess at integer PCM)."""
    out = parity["nothing_to_score"]
    assert parity["demo"]["ser_keras_imported"] is False
    for name in ("empty", "silence", "low_noise"):
        assert out[name].get("speech") == [0], (name, out[name])
        classes = len(out[name]["probabilities"])
        np.testing.assert_allclose(out[name]["probabilities"], 1 / classes, atol=1e-6)
    assert "NaN or Inf" in out["nan"].get("error", "") and "integer PCM" not in out["nan"]["error"]
