"""The notebooks run end to end, headless, on the demo corpus (issue #7).

Each notebook is executed with nbclient in a fresh temporary working directory, with the test
session's SER_KERAS_CACHE (tests/conftest.py), so the generated demo corpus and feature cache
are shared with the other tests and nothing outside the temporary directories is written.
A cell that raises fails the test with the cell's source and error; every cell has a timeout.

The kernel is ``python3`` from a kernelspec written into a temporary directory whose argv is
this interpreter (``sys.executable -m ipykernel_launcher``): a ``python3`` kernelspec found on
the machine could point at another Python without ser_keras. The test adds two cells: a first
one that checks the kernel really runs this interpreter, a last one that reports the kernel's
CPU time (printed with the wall time under ``pytest -s``: the notebooks must stay a few minutes
on a 2-core machine).

The committed notebooks carry no outputs (checked here too); execution happens on a copy.
"""

import json
import os
import pathlib
import sys
import time

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError

from tests.test_reproduce import check_report

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO_ROOT / "notebooks"
QUICKSTART = NOTEBOOKS / "01_quickstart.ipynb"
REPRODUCE = NOTEBOOKS / "02_reproduce_the_paper.ipynb"
CELL_TIMEOUT_S = 420
KERNEL_NAME = "python3"
# Notebook 02 reads these; the test runs the defaults (demo corpus, tiny settings).
NOTEBOOK_ENV = ("SER_KERAS_NB_CORPUS", "SER_KERAS_NB_DATA_DIR", "SER_KERAS_NB_PROTOCOL",
                "SER_KERAS_NB_FULL", "SER_KERAS_NB_OUT")


def _kernel_manager(spec_root: pathlib.Path) -> AsyncKernelManager:
    """A manager for kernel 'python3' = this interpreter, from a kernelspec in `spec_root`."""
    spec_dir = spec_root / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (ser_keras tests)",
        "language": "python",
    }))
    specs = KernelSpecManager(kernel_dirs=[str(spec_root / "kernels")])
    return AsyncKernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=specs)


def _outputs_text(cell) -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream":
            parts.append(output.get("text", ""))
        elif output.get("output_type") in ("execute_result", "display_data"):
            parts.append(output.get("data", {}).get("text/plain", ""))
    return "".join(parts)


def run_notebook(path: pathlib.Path, tmp_path: pathlib.Path) -> tuple:
    """Execute a copy of `path` in `tmp_path/work`; returns (executed notebook, work dir, timing)."""
    nb = nbformat.read(path, as_version=4)
    probe = nbformat.v4.new_code_cell("import sys\nprint(sys.executable)")
    probe["id"] = "test-kernel-probe"
    nb.cells.insert(0, probe)
    # Last: the kernel's CPU seconds, its own and its finished subprocesses' (`ser-keras predict`).
    cpu = nbformat.v4.new_code_cell(
        "import resource\n"
        "print(sum(u.ru_utime + u.ru_stime for u in "
        "(resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))))")
    cpu["id"] = "test-kernel-cpu"
    nb.cells.append(cpu)
    work = tmp_path / "work"
    work.mkdir()
    client = NotebookClient(
        nb,
        km=_kernel_manager(tmp_path / "kernelspec"),
        kernel_name=KERNEL_NAME,
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(work)}},
    )
    started = time.time()
    try:
        client.execute()
    except CellTimeoutError as exc:
        pytest.fail(f"{path.name}: a cell ran longer than {CELL_TIMEOUT_S} s\n{str(exc)[:3000]}")
    except CellExecutionError as exc:
        pytest.fail(f"{path.name}: a cell failed\n{str(exc)[-6000:]}")
    timing = f"{time.time() - started:.0f} s wall, {float(_outputs_text(nb.cells[-1])):.0f} s CPU"
    assert _outputs_text(nb.cells[0]).strip() == sys.executable, "the kernel runs another interpreter"
    return nb, work, timing


@pytest.fixture
def notebook_env(monkeypatch):
    """The notebooks' own settings unset (defaults), the session cache kept, quiet TF."""
    for name in NOTEBOOK_ENV:
        monkeypatch.delenv(name, raising=False)
    assert os.environ.get("SER_KERAS_CACHE"), "tests/conftest.py sets SER_KERAS_CACHE"
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")


@pytest.mark.parametrize("path", [QUICKSTART, REPRODUCE], ids=lambda p: p.stem)
def test_committed_notebooks_have_no_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == KERNEL_NAME
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code, f"{path.name} has no code cells"
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, \
            f"{path.name}: commit the notebook cleared (cell starting {cell.source[:60]!r})"
    # Every code cell is preceded by a markdown cell saying why.
    for before, cell in zip(nb.cells, nb.cells[1:]):
        if cell.cell_type == "code":
            assert before.cell_type == "markdown", f"{path.name}: code cell without a why: {cell.source[:60]!r}"


@pytest.mark.slow
def test_quickstart_notebook_runs(tmp_path, notebook_env):
    nb, work, timing = run_notebook(QUICKSTART, tmp_path)
    run_dir = work / "runs" / "quickstart_exp4"
    export_dir = work / "runs" / "quickstart_exp4_export"
    results = json.loads((run_dir / "results.json").read_text())
    assert results["experiment"] == "exp4" and results["corpus"] == "demo" and len(results["folds"]) == 1
    assert list((run_dir / "tensorboard" / "demo").glob("*/events.out.tfevents.*"))
    assert (export_dir / "saved_model.pb").is_file() and (run_dir / "predict_plot.png").is_file()
    images = sum(1 for cell in nb.cells for output in cell.get("outputs", [])
                 if "image/png" in output.get("data", {}))
    assert images >= 3, "confusion matrix, attention plot and predict --plot should be shown"
    print(f"01_quickstart.ipynb ran in {timing}")


@pytest.mark.slow
def test_reproduce_notebook_runs(tmp_path, notebook_env):
    nb, work, timing = run_notebook(REPRODUCE, tmp_path)
    reports = list((work / "runs").glob("*/report.md"))
    assert len(reports) == 1, reports
    # The notebook's default is `reproduce` on the demo corpus with tiny models: its report is
    # the one the reproduce tests check.
    check_report(reports[0].parent)
    text = "\n".join(_outputs_text(cell) for cell in nb.cells)
    assert "leave-one-speaker-out" in text
    images = sum(1 for cell in nb.cells for output in cell.get("outputs", [])
                 if "image/png" in output.get("data", {}))
    assert images >= 2, "Fig. 3 and Fig. 4 analogues should be shown"
    print(f"02_reproduce_the_paper.ipynb ran in {timing}")
