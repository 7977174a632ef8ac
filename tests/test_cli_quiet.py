"""The command line prints TensorFlow's, absl's and oneDNN's own log lines only when asked to
(``--verbose``, or the user's own TF_CPP_MIN_LOG_LEVEL); the package's own messages always."""

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import tone, write_wav

# C++ log lines ("I0000 00:00:17... cpu_feature_guard.cc:227] ...", "E0000 ... oneDNN supports
# DT_BOOL ..."), absl's note before its first line, Python's "WARNING:tensorflow:..." lines.
TF_LOG = re.compile(r"^([IWEF]\d{4} \d\d:\d\d:\d\d|WARNING: All log messages before absl::InitializeLog"
                    r"|(WARNING|INFO|ERROR):(tensorflow|absl):)|oneDNN|cpu_feature_guard", re.M)


def _run(args, **env_extra) -> subprocess.CompletedProcess:
    """``python -m ser_keras.cli ARGS`` with the user's environment minus what the test session
    sets for itself (conftest sets TF_CPP_MIN_LOG_LEVEL)."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "SER_KERAS_VERBOSE")}
    env.update(env_extra)
    return subprocess.run([sys.executable, "-m", "ser_keras.cli", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def _tf_lines(stderr: str) -> list:
    return [line for line in stderr.splitlines() if TF_LOG.search(line)]


def test_verbose_goes_before_or_after_the_command():
    from ser_keras.cli import build_parser

    parser = build_parser()
    assert not parser.parse_args(["info", "--corpus", "demo"]).verbose
    assert parser.parse_args(["--verbose", "info", "--corpus", "demo"]).verbose
    assert parser.parse_args(["info", "--corpus", "demo", "--verbose"]).verbose


def test_info_prints_no_tensorflow_line():
    result = _run(["info", "--corpus", "demo"])
    assert result.returncode == 0, result.stderr
    assert "utterances" in result.stdout
    assert result.stderr == ""


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    folder = tmp_path_factory.mktemp("quiet_cli")
    good = write_wav(folder / "voice.wav", tone(1.0))
    bad = folder / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot audio at all")
    return good, bad


@pytest.mark.slow
def test_predict_is_quiet_unless_asked(tiny_run, exported, audio):
    """Without --verbose: the labels, the package's line about the broken file, and no log line
    of TensorFlow's; with --verbose or TF_CPP_MIN_LOG_LEVEL=0: TensorFlow's log lines (those this
    machine's TensorFlow prints at all: measured first, with nothing of ser_keras around it)."""
    export = exported(tiny_run("exp4"))
    good, bad = audio
    args = ["predict", str(export), str(good), str(bad)]

    quiet = _run(args)
    assert quiet.returncode == 0, quiet.stderr
    assert "voice.wav" in quiet.stdout
    assert "broken.wav" in quiet.stderr  # what concerns the user is said, in the package's words
    assert _tf_lines(quiet.stderr) == [], quiet.stderr

    bare = subprocess.run([sys.executable, "-c", "import tensorflow as tf; print(float(tf.constant(1.0) + 1))"],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0"})
    if not _tf_lines(bare.stderr):
        pytest.skip("this machine's TensorFlow prints no log line at start-up, so there is nothing to show")
    for verbose in (_run([*args, "--verbose"]), _run(args, TF_CPP_MIN_LOG_LEVEL="0")):
        assert verbose.returncode == 0, verbose.stderr
        assert _tf_lines(verbose.stderr), verbose.stderr
        assert "broken.wav" in verbose.stderr
