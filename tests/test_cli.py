"""The command line as a user meets it: help, info, one-line errors."""

import json
import subprocess
import sys

import pytest

from ser_keras import cli
from tests.conftest import corpus_dir

SUBCOMMANDS = ("info", "fit", "evaluate", "predict", "export", "reproduce")


def run_cli(*argv):
    """Run the real console entry point in a subprocess (no shared state, real exit code)."""
    return subprocess.run([sys.executable, "-m", "ser_keras.cli", *argv],
                          capture_output=True, text=True, timeout=300)


def test_help_lists_the_six_subcommands():
    result = run_cli("--help")
    assert result.returncode == 0
    for name in SUBCOMMANDS:
        assert name in result.stdout


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_every_subcommand_has_a_real_help(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([name, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert f"ser-keras {name}" in text
    assert len(text.splitlines()) > 5


def test_missing_data_dir_is_one_line_without_traceback():
    result = run_cli("info", "--corpus", "casia", "--data-dir", "/nonexistent")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "/nonexistent" in lines[0] and "Traceback" not in result.stderr


def test_missing_data_dir_without_flag_names_the_environment_variable(monkeypatch, capsys):
    monkeypatch.delenv("SER_KERAS_EMODB", raising=False)
    assert cli.main(["info", "--corpus", "emodb"]) == cli.EXIT_USER_ERROR
    assert "SER_KERAS_EMODB" in capsys.readouterr().err


def test_unknown_config_key_names_key_and_file(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  experiment: exp4\n  lstm_unitz: 3\n")
    code = cli.main(["fit", "--corpus", "demo", "--config", str(bad), "--run-dir", str(tmp_path / "r")])
    assert code == cli.EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert "model.lstm_unitz" in err and str(bad) in err


def test_info_demo_json_is_repeatable():
    first = run_cli("info", "--corpus", "demo", "--json")
    second = run_cli("info", "--corpus", "demo", "--json")
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    summary = json.loads(first.stdout)
    for key in ("utterances", "speakers", "labels", "duration_s"):
        assert key in summary
    assert summary["speakers"] >= 4 and len(summary["labels"]) >= 4


@pytest.mark.corpus
def test_info_on_real_casia():
    summary = json.loads(run_cli("info", "--corpus", "casia", "--data-dir", str(corpus_dir("casia")), "--json").stdout)
    assert summary["utterances"] == 1200 and summary["speakers"] == 4
    assert summary["labels"] == {k: 200 for k in ("angry", "fear", "happy", "neutral", "sad", "surprise")}


@pytest.mark.corpus
def test_info_on_real_emodb():
    summary = json.loads(run_cli("info", "--corpus", "emodb", "--data-dir", str(corpus_dir("emodb")), "--json").stdout)
    assert summary["utterances"] == 535 and summary["speakers"] == 10 and len(summary["labels"]) == 7


@pytest.mark.parametrize("command", ["fit", "reproduce"])
def test_jobs_flag_becomes_runtime_jobs(command, monkeypatch, tmp_path):
    """`--jobs N` reaches the config as runtime.jobs (fit) or as an override of every run (reproduce)."""
    from ser_keras.evaluation import fit as fit_module
    from ser_keras.evaluation import reproduce

    seen = {}
    monkeypatch.setattr(fit_module, "fit",
                        lambda config, run_dir, progress: seen.setdefault("jobs", config.runtime.jobs)
                        and {"pooled": {"wa": 0.5, "ua": 0.5}})
    monkeypatch.setattr(reproduce, "reproduce",
                        lambda *args, overrides, **kwargs: seen.setdefault("overrides", overrides) and tmp_path)
    assert cli.main([command, "--corpus", "demo", "--jobs", "3", "--out" if command == "reproduce" else "--run-dir",
                     str(tmp_path / "out")]) == 0
    assert seen == ({"jobs": 3} if command == "fit" else {"overrides": ["runtime.jobs=3"]})


def test_export_writes_model_tflite_unless_told_not_to():
    from ser_keras.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["export", "RUN", "--out", "OUT"]).litert is True
    assert parser.parse_args(["export", "RUN", "--out", "OUT", "--no-litert"]).litert is False
