"""The Keras the suite runs on is inside the range setup.cfg declares, so the declared upper bound
is one the suite has passed on (resume relies on how Keras' fit loop drives callbacks)."""

import configparser
import pathlib

import keras
from packaging.requirements import Requirement  # a dependency of pytest
from packaging.version import Version

ROOT = pathlib.Path(__file__).resolve().parents[1]


def declared(name: str) -> Requirement:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    for line in parser["options"]["install_requires"].splitlines():
        line = line.split("#", 1)[0].strip()
        if line and Requirement(line).name == name:
            return Requirement(line)
    raise AssertionError(f"setup.cfg declares no {name} requirement")


def test_keras_has_an_upper_bound_and_the_installed_keras_is_inside_it():
    requirement = declared("keras")
    assert any(spec.operator in ("<", "<=", "==", "~=") for spec in requirement.specifier), \
        f"setup.cfg: {requirement} has no upper bound"
    assert requirement.specifier.contains(Version(keras.__version__), prereleases=True), \
        f"installed keras {keras.__version__} is outside setup.cfg's {requirement}"
