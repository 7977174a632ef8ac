"""The package's import graph flows one way.

Every ``ser_keras`` module is parsed (its AST, function-local imports included) and its imports
of other ``ser_keras`` modules become edges. The graph must have no cycle, and no module may
import one on a higher floor of

    foundation -> corpora -> features -> data -> layers -> models -> training -> evaluation
    -> inference -> export -> cli

(foundation: the package root and its plain modules: errors, config, config_checks, config_yaml, audio,
metrics, rundir).
"""

import ast
import os
import pathlib
import subprocess
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "ser_keras"
FLOORS = ["foundation", "corpora", "features", "data", "layers", "models", "training", "evaluation",
          "inference", "export", "cli"]
FOUNDATION = {"ser_keras", "ser_keras.errors", "ser_keras.config", "ser_keras.audio", "ser_keras.metrics",
              "ser_keras.rundir", "ser_keras.config_yaml", "ser_keras.config_checks"}


def _modules() -> dict:
    """{dotted module name: path} of every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _resolve(name: str, modules: dict):
    """The module `name` denotes, or its nearest enclosing module of the package."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict:
    """{module: {modules it imports}} over the ``ser_keras`` modules."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        targets = set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                targets.add(base)
                targets.update(f"{base}.{a.name}" for a in node.names)
        resolved = {_resolve(t, modules) for t in targets if t.split(".")[0] == "ser_keras"}
        # `from ser_keras.x import name` also names the package ser_keras.x itself; a module's
        # own package (an __init__ it sits in) is not an import of a higher floor.
        graph[name] = {t for t in resolved if t and t != name}
    return graph


def floor(module: str) -> int:
    if module in FOUNDATION:
        return 0
    top = module.split(".")[1]
    if top not in FLOORS:
        raise AssertionError(f"{module}: on no floor; add it to FOUNDATION or a floor package")
    return FLOORS.index(top)


def _cycle(graph: dict):
    """One import cycle as a list of modules, or None."""
    state = {}

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state:
                found = visit(target, stack)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node, [])
            if found:
                return found
    return None


def _without_package_inits(graph: dict) -> dict:
    """The graph with the edge from a package's modules to the package itself dropped (Python
    runs ``pkg/__init__`` before ``pkg.mod`` anyway: that is not a cycle of the design)."""
    return {name: {t for t in targets if not name.startswith(t + ".")} for name, targets in graph.items()}


def test_every_module_is_on_a_floor():
    for name in import_graph():
        floor(name)


def test_the_import_graph_has_no_cycle():
    cycle = _cycle(_without_package_inits(import_graph()))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_module_imports_a_higher_floor():
    upward = [f"{name} ({FLOORS[floor(name)]}) imports {target} ({FLOORS[floor(target)]})"
              for name, targets in sorted(import_graph().items()) for target in sorted(targets)
              if floor(target) > floor(name)]
    assert not upward, "\n".join(upward)


def test_the_graph_sees_function_local_and_relative_imports(tmp_path):
    """The parser counts an import inside a function as an edge (what let circles load before)."""
    source = "def f():\n    from ser_keras.evaluation import results\n"
    tree = ast.parse(source)
    names = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert names == ["ser_keras.evaluation"]
    assert _cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]


# Each module imported first of the package: every ser_keras module is dropped from sys.modules
# before the next, so an import circle shows as it would in a fresh interpreter (one process:
# TensorFlow is imported once).
IMPORT_EACH_FIRST = """
import importlib, sys
for module in sys.argv[1:]:
    for name in [n for n in sys.modules if n.split(".")[0] == "ser_keras"]:
        del sys.modules[name]
    try:
        importlib.import_module(module)
    except Exception as exc:
        raise SystemExit(f"{module}: {type(exc).__name__}: {exc}")
"""


def test_the_cli_imports_in_a_fresh_interpreter():
    """``python -c "import ser_keras.cli"`` and every subcommand's library module load on their
    own, without another module imported first to break a circle."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(PACKAGE.parent)}
    modules = ("ser_keras.cli", "ser_keras.training.run", "ser_keras.inference.predict")
    done = subprocess.run([sys.executable, "-c", IMPORT_EACH_FIRST, *modules], capture_output=True, text=True,
                          env=env)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("name", ["frontend.npz"])
def test_a_run_file_name_is_spelled_in_one_module(name):
    holders = sorted(str(p.relative_to(PACKAGE.parent)) for p in PACKAGE.rglob("*.py") if name in p.read_text())
    assert holders == ["ser_keras/rundir.py"], holders


def test_no_code_branches_on_an_experiment_name():
    """The code branches on config fields; an experiment's name only picks a YAML."""
    holders = sorted(str(p.relative_to(PACKAGE.parent)) for p in PACKAGE.rglob("*.py") if '== "exp' in p.read_text())
    assert holders == [], holders
