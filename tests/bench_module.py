"""Load a script of bench/ as a module (bench/ is not a package), for the tests of its functions."""

import importlib.util
import pathlib

BENCH_DIR = pathlib.Path(__file__).resolve().parents[1] / "bench"


def load_bench(name: str):
    """bench/<name>.py, imported fresh."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
