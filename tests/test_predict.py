"""predict: files and folders, bad input, sliding windows, JSON, plots, the CLI."""

import json
import pathlib

import numpy as np
import pytest

from ser_keras.cli import main
from ser_keras.errors import SerKerasError
from ser_keras.inference import predict
from tests.conftest import LABELS, tone, write_wav


@pytest.fixture(scope="module")
def run_predictor(tiny_run):
    return predict.load_predictor(tiny_run("exp4"))


@pytest.fixture(scope="module")
def export_predictor(tiny_run, exported):
    return predict.load_predictor(exported(tiny_run("exp4")))


@pytest.fixture(scope="module")
def mixed_folder(export_root):
    """Good and bad files, nested. Returns (folder, good names, bad names)."""
    folder = export_root / "mixed_inputs"
    if folder.exists():
        return folder, *_mixed_names()
    base = tone(1.2, seed=3)
    write_wav(folder / "good_16k.wav", base)
    write_wav(folder / "nested" / "deeper" / "good_pcm24.wav", tone(0.9, seed=4), subtype="PCM_24")
    write_wav(folder / "float32.wav", tone(1.0, seed=5), subtype="FLOAT")
    stereo = np.stack([base, 0.5 * base], axis=1)
    write_wav(folder / "stereo.wav", stereo)
    for rate in (8000, 22050, 48000, 96000):
        write_wav(folder / "rates" / f"tone_{rate}.wav", tone(1.0, sample_rate=rate, seed=6), sample_rate=rate)
    write_wav(folder / "aiff_named.wav", tone(1.0, seed=7), format="AIFF")
    write_wav(folder / "real.flac", tone(0.7, seed=8), format="FLAC")
    write_wav(folder / "silent.wav", np.zeros(16000, np.float32))
    write_wav(folder / "very_short.wav", tone(0.005, seed=9))  # 80 samples < one 320-sample frame
    write_wav(folder / "long.wav", np.concatenate([tone(5.5, seed=10), tone(5.5, freq=150, seed=11)]))
    (folder / "empty.wav").write_bytes(b"")
    (folder / "nested" / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00\xff" * 40)
    (folder / "text_named.wav").write_text("this is not audio\n")
    nan = tone(0.5)
    nan[100] = np.nan
    write_wav(folder / "nan.wav", nan, subtype="FLOAT")
    (folder / "notes.txt").write_text("not audio, and not an audio suffix: skipped in directories")
    return folder, *_mixed_names()


def _mixed_names():
    good = ["good_16k.wav", "good_pcm24.wav", "float32.wav", "stereo.wav", "tone_8000.wav", "tone_22050.wav",
            "tone_48000.wav", "tone_96000.wav", "aiff_named.wav", "real.flac", "silent.wav",
            "very_short.wav", "long.wav"]
    bad = ["empty.wav", "corrupt.wav", "text_named.wav", "nan.wav"]
    return good, bad


def _by_name(report):
    return {pathlib.Path(r["path"]).name: r for r in report["results"]}


def test_folder_with_good_and_bad_files(run_predictor, mixed_folder):
    folder, good, bad = mixed_folder
    report = predict.predict_files(run_predictor, [folder])
    results = _by_name(report)
    assert sorted(results) == sorted(good)
    errors = {pathlib.Path(e["path"]).name: e["error"] for e in report["errors"]}
    assert sorted(errors) == sorted(bad)
    for name, message in errors.items():
        assert name in message and "\n" not in message
    assert "empty file" in errors["empty.wav"]
    assert "NaN" in errors["nan.wav"]
    no_speech = {"silent.wav", "very_short.wav"}
    for name, result in results.items():
        assert result["speech"] is (name not in no_speech), name
        assert (result["label"] in LABELS) if result["speech"] else result["label"] is None
        assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert sum(result["attention"]["weights"]) == pytest.approx(1.0, abs=1e-4)
    for name in no_speech:  # no confident emotion: uniform probabilities
        assert list(results[name]["probabilities"].values()) == pytest.approx([1 / len(LABELS)] * len(LABELS))
    assert results["silent.wav"]["warnings"] == ["silent (all samples are zero)",
                                                 "no speech: probabilities are uniform"]
    assert "zero-padded to one frame" in results["very_short.wav"]["warnings"][0]
    assert results["very_short.wav"]["duration_s"] == pytest.approx(0.005, abs=1e-4)
    for rate in (8000, 22050, 48000, 96000):
        assert results[f"tone_{rate}.wav"]["duration_s"] == pytest.approx(1.0, abs=1e-3)


def test_stereo_is_scored_as_its_mono_mix(run_predictor, tmp_path):
    base = tone(1.2, seed=3)
    write_wav(tmp_path / "stereo.wav", np.stack([base, 0.5 * base], axis=1), subtype="FLOAT")
    write_wav(tmp_path / "mono.wav", 0.75 * base, subtype="FLOAT")
    results = _by_name(predict.predict_files(run_predictor, [tmp_path]))
    for label in LABELS:
        assert results["stereo.wav"]["probabilities"][label] == pytest.approx(
            results["mono.wav"]["probabilities"][label], abs=1e-5)


def test_long_recording_is_scored_in_windows(run_predictor, mixed_folder):
    folder, _, _ = mixed_folder
    result = predict.predict_files(run_predictor, [folder / "long.wav"])["results"][0]
    windows = result["windows"]
    # 11 s = 1099 frames, windows of 800 frames every 390 frames (half a window in whole
    # 15-frame attention steps): starts 0 and 3.9 s, the second one ending at the end.
    assert [w["start_s"] for w in windows] == [0.0, 3.9]
    assert windows[0]["end_s"] == pytest.approx(8.01, abs=1e-3) and windows[-1]["end_s"] == pytest.approx(11.0)
    lengths = np.array([800, 1099 - 390])
    pooled = sum(n * np.array(list(w["probabilities"].values())) for n, w in zip(lengths, windows)) / lengths.sum()
    np.testing.assert_allclose(list(result["probabilities"].values()), pooled, atol=2e-6)
    att = result["attention"]
    assert att["step_s"] == pytest.approx(0.15) and att["span_s"] == pytest.approx(0.31)
    assert len(att["start_s"]) == len(att["weights"])
    assert att["start_s"][-1] < 11.0 <= att["start_s"][-1] + att["span_s"] + 0.15
    # window_frames=None scores it in one piece.
    whole = predict.predict_files(run_predictor, [folder / "long.wav"], window_frames=None)["results"][0]
    assert len(whole["windows"]) == 1 and whole["windows"][0]["end_s"] == pytest.approx(11.0)


def test_very_long_recording_run_and_export_agree(run_predictor, export_predictor):
    """Three minutes: 46 windows, scored in batches of equal-length windows."""
    waveform = np.concatenate([tone(30.0, freq=120 + 20 * i, seed=i) for i in range(6)])
    a = predict.score_waveform(run_predictor, waveform)
    b = predict.score_waveform(export_predictor, waveform)
    assert len(a["windows"]) == len(b["windows"]) == len(predict.window_starts(17999, 800, 15))
    np.testing.assert_allclose(list(a["probabilities"].values()), list(b["probabilities"].values()), atol=1e-5)
    np.testing.assert_allclose(a["attention"]["weights"], b["attention"]["weights"], atol=1e-6)
    assert a["duration_s"] == pytest.approx(180.0)
    assert a["attention"]["start_s"][-1] <= 180.0


def test_a_file_that_breaks_scoring_does_not_lose_the_others(run_predictor, tmp_path, monkeypatch):
    good = write_wav(tmp_path / "a_good.wav", tone(0.5))
    bad = write_wav(tmp_path / "b_bad.wav", tone(0.6))
    real = predict.score_waveform

    def flaky(predictor, waveform, *args, **kwargs):
        if len(waveform) == 9600:
            raise FloatingPointError("simulated failure inside scoring")
        return real(predictor, waveform, *args, **kwargs)

    monkeypatch.setattr(predict, "score_waveform", flaky)
    report = predict.predict_files(run_predictor, [tmp_path])
    assert [r["path"] for r in report["results"]] == [str(good)]
    assert report["errors"] == [{"path": str(bad), "error": f"{bad}: cannot be scored "
                                 "(FloatingPointError: simulated failure inside scoring)"}]


def test_window_grid():
    assert predict.window_starts(100, 800, 15) == [(0, 100)]
    assert predict.window_starts(800, 800, 15) == [(0, 800)]
    assert predict.window_starts(801, 800, 15) == [(0, 800), (390, 411)]
    starts = predict.window_starts(10000, 800, 15)
    assert all(s % 15 == 0 for s, _ in starts)
    assert starts[-1][0] + starts[-1][1] == 10000 and starts[-1][1] >= 400
    assert predict.window_starts(5000, None, 15) == [(0, 5000)]


def test_single_window_attention_is_the_models_alpha(run_predictor):
    waveform = tone(1.5, seed=12)
    result = predict.score_waveform(run_predictor, waveform)
    bundle = run_predictor.bundle
    _, alpha = bundle.score(bundle.features(waveform)[None])
    np.testing.assert_allclose(result["attention"]["weights"], alpha[0], atol=2e-6)


def test_run_and_export_give_the_same_results(run_predictor, export_predictor, mixed_folder):
    folder, _, _ = mixed_folder
    a = predict.predict_files(run_predictor, [folder])
    b = predict.predict_files(export_predictor, [folder])
    assert [r["path"] for r in a["results"]] == [r["path"] for r in b["results"]]
    assert [e["path"] for e in a["errors"]] == [e["path"] for e in b["errors"]]
    for x, y in zip(a["results"], b["results"]):
        assert x["label"] == y["label"]
        np.testing.assert_allclose(list(x["probabilities"].values()), list(y["probabilities"].values()), atol=1e-5)
        np.testing.assert_allclose(x["attention"]["weights"], y["attention"]["weights"], atol=1e-5)
        assert [w["label"] for w in x["windows"]] == [w["label"] for w in y["windows"]]


def test_cli_predict_reports_every_good_file_and_names_every_bad_one(mixed_folder, capsys, tiny_run):
    folder, good, bad = mixed_folder
    code = main(["predict", str(tiny_run("exp4")), str(folder), str(folder / "missing.wav")])
    out, err = capsys.readouterr()
    assert code == 0
    lines = [line for line in out.splitlines() if not line.startswith(" ")]
    assert sorted(pathlib.Path(line.split("\t")[0]).name for line in lines) == sorted(good)
    for name in bad + ["missing.wav"]:
        assert name in err
    assert "scored 13 file(s), 5 could not be used" in err


def test_cli_predict_json(mixed_folder, capsys, tiny_run, exported):
    folder, good, bad = mixed_folder
    code = main(["predict", str(exported(tiny_run("exp4"))), str(folder / "good_16k.wav"),
                 str(folder / "empty.wav"), "--json"])
    out, err = capsys.readouterr()
    assert code == 0
    report = json.loads(out)
    assert report["labels"] == list(LABELS) and report["sample_rate"] == 16000
    assert [pathlib.Path(r["path"]).name for r in report["results"]] == ["good_16k.wav"]
    assert [pathlib.Path(e["path"]).name for e in report["errors"]] == ["empty.wav"]
    assert set(report["results"][0]) >= {"label", "probabilities", "duration_s", "windows", "attention", "warnings"}


def test_cli_predict_exit_code_when_nothing_could_be_scored(mixed_folder, capsys, tiny_run):
    folder, _, _ = mixed_folder
    code = main(["predict", str(tiny_run("exp4")), str(folder / "empty.wav"), str(folder / "nested" / "corrupt.wav")])
    out, err = capsys.readouterr()
    # README: errors the user can fix exit with status 2; every input being bad is one.
    assert code == 2 and out == ""
    assert "empty.wav" in err and "corrupt.wav" in err
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "0 when at least one file was scored" in help_text and "2 when none could be scored" in help_text


def test_cli_predict_model_errors_are_one_line(tmp_path, capsys, tiny_run, exported):
    assert main(["predict", str(tmp_path / "nope"), str(tmp_path)]) == 2
    assert "no such model directory" in capsys.readouterr().err
    assert main(["predict", str(exported(tiny_run("exp4"))), str(tmp_path), "--fold", "1"]) == 2
    assert "--fold selects a fold of a run directory" in capsys.readouterr().err
    assert main(["predict", str(tmp_path), str(tmp_path)]) == 2
    assert "neither a run directory" in capsys.readouterr().err


def test_empty_directory_is_reported(run_predictor, tmp_path):
    (tmp_path / "readme.txt").write_text("no audio here")
    report = predict.predict_files(run_predictor, [tmp_path])
    assert report["results"] == [] and "no audio files" in report["errors"][0]["error"]


def test_plot_png(mixed_folder, tmp_path, capsys, tiny_run):
    folder, _, _ = mixed_folder
    out_png = tmp_path / "long.png"
    assert main(["predict", str(tiny_run("exp4")), str(folder / "long.wav"), "--plot", str(out_png)]) == 0
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plots = tmp_path / "plots"
    assert main(["predict", str(tiny_run("exp4")), str(folder / "good_16k.wav"), str(folder / "very_short.wav"),
                 "--plot", str(plots)]) == 0
    assert sorted(p.name for p in plots.iterdir()) == ["good_16k.png", "very_short.png"]
    capsys.readouterr()


@pytest.mark.slow
def test_exp2_run_and_export_predict(tiny_run, exported, export_root):
    run_dir = tiny_run("exp2")
    waveform = tone(1.1, seed=13)
    path = write_wav(export_root / "exp2_input" / "a.wav", waveform)
    a = predict.predict_files(run_dir, [path])["results"][0]
    b = predict.predict_files(exported(run_dir), [path])["results"][0]
    np.testing.assert_allclose(list(a["probabilities"].values()), list(b["probabilities"].values()), atol=1e-5)
    assert len(a["attention"]["weights"]) == 1 + (len(waveform) - 320) // 160  # one step per frame
    assert a["attention"]["step_s"] == pytest.approx(0.01)


def test_load_predictor_rejects_exp1(tiny_run):
    with pytest.raises(SerKerasError, match="exp1"):
        predict.load_predictor(tiny_run("exp1"))


# ------------------------------------------------------------------ --same-speaker


def test_same_speaker_run_and_export_agree(run_predictor, export_predictor, mixed_folder):
    """--same-speaker: every file normalised with the statistics of all of the files (including
    the long one, scored in windows that share them); in-process and export agree."""
    folder, _, _ = mixed_folder
    files = [folder / "good_16k.wav", folder / "float32.wav", folder / "long.wav", folder / "empty.wav"]
    a = predict.predict_files(run_predictor, files, same_speaker=True)
    b = predict.predict_files(export_predictor, files, same_speaker=True)
    assert a["normalization"] == b["normalization"] == "speaker"
    assert [pathlib.Path(e["path"]).name for e in a["errors"]] == ["empty.wav"]
    assert [r["path"] for r in a["results"]] == [r["path"] for r in b["results"]] and len(a["results"]) == 3
    for x, y in zip(a["results"], b["results"]):
        assert x["label"] == y["label"]
        np.testing.assert_allclose(list(x["probabilities"].values()), list(y["probabilities"].values()), atol=1e-5)
        np.testing.assert_allclose(x["attention"]["weights"], y["attention"]["weights"], atol=1e-5)
    # The speaker's statistics, not each file's own: the results differ from the default.
    alone = predict.predict_files(run_predictor, files[:1])
    assert alone["normalization"] == run_predictor.normalization
    assert not np.allclose(list(alone["results"][0]["probabilities"].values()),
                           list(a["results"][0]["probabilities"].values()), atol=1e-4)


def test_same_speaker_is_the_speaker_normalised_model_input(run_predictor, mixed_folder):
    from ser_keras.audio import load_audio
    from ser_keras.features.normalize import frame_stats

    folder, _, _ = mixed_folder
    files = [folder / "good_16k.wav", folder / "float32.wav"]
    bundle = run_predictor.bundle
    waveforms = [load_audio(f, 16000) for f in files]
    stats = frame_stats([bundle.raw_features(w) for w in waveforms], bundle.config.features.norm_std_floor)
    report = predict.predict_files(run_predictor, files, same_speaker=True)
    for waveform, result in zip(waveforms, report["results"]):
        probs, _ = bundle.score(bundle.features(waveform, stats)[None])
        np.testing.assert_allclose(list(result["probabilities"].values()), probs[0], atol=2e-6)


def test_cli_predict_same_speaker(mixed_folder, capsys, tiny_run, exported):
    folder, _, _ = mixed_folder
    args = ["predict", str(exported(tiny_run("exp4"))), str(folder / "good_16k.wav"), str(folder / "float32.wav"),
            "--json"]
    assert main(args + ["--same-speaker"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["normalization"] == "speaker" and len(report["results"]) == 2
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["normalization"] == "pooled"


def test_same_speaker_needs_a_current_export(tmp_path, mixed_folder, tiny_run, exported):
    """An export without the speaker endpoints (format 1) refuses --same-speaker in one line."""
    folder, _, _ = mixed_folder
    predictor = predict.load_predictor(exported(tiny_run("exp4")))

    class Old:  # a loaded SavedModel with serve only
        serve = predictor.loaded.serve

    predictor.loaded, predictor.meta = Old(), {**predictor.meta, "format_version": 1}
    with pytest.raises(SerKerasError, match="no 'speaker_statistics' endpoint.*export the run again"):
        predict.predict_files(predictor, [folder / "good_16k.wav"], same_speaker=True)


def test_plots_leave_the_matplotlib_backend_alone(tmp_path):
    """fit's confusion matrix and predict --plot draw without pyplot: a notebook's backend stays."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import matplotlib
        matplotlib.use("template")
        import numpy as np
        from ser_keras.evaluation.plots import save_confusion_png
        from ser_keras.inference.plot import plot_result
        save_confusion_png(np.eye(2), ["a", "b"], r"{tmp_path / 'cm.png'}", 1.0, 1.0, "x")
        result = {{"path": r"{write_wav(tmp_path / 'a.wav', tone(0.5))}", "duration_s": 0.5, "label": "a",
                  "probabilities": {{"a": 0.9, "b": 0.1}}, "windows": [],
                  "attention": {{"start_s": [0.0], "span_s": 0.3, "weights": [1.0]}}}}
        plot_result(result, r"{tmp_path / 'p.png'}", 16000)
        print(matplotlib.get_backend())
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "template"
    assert (tmp_path / "cm.png").read_bytes()[:4] == (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_an_export_that_takes_lld_frames_is_refused_in_one_line(tmp_path):
    """exp2 exports made before format 4 took LLD frames; predict asks for a new export."""
    (tmp_path / "saved_model.pb").write_bytes(b"")
    (tmp_path / "export.json").write_text(json.dumps({"format": "ser_keras-savedmodel", "format_version": 3,
                                                      "input": "lld"}))
    with pytest.raises(SerKerasError, match="takes 'lld' input, not a waveform .* export the run again") as info:
        predict.load_predictor(tmp_path)
    assert "\n" not in str(info.value)
