"""The linter configured in setup.cfg (flake8) runs clean on the package, the benchmarks and the tests."""

import pathlib
import subprocess
import sys


def test_flake8_is_clean():
    root = pathlib.Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-m", "flake8", "ser_keras", "bench", "tests"],
                            cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, f"flake8 reported:\n{result.stdout}{result.stderr}"
