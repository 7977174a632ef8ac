"""Every README code block that uses the demo corpus runs as written.

Blocks are read from the README's ```bash fences and run in README order, each as one bash
script (``set -e``), all in one scratch directory, so the tour's ``fit`` produces the run
that its ``export`` and ``predict`` use. The install-and-run line at the top creates a fresh
virtual environment; here the package is already installed (CI's ``.ci/run`` checks the
install), so the install part is dropped and ``.venv/bin/`` resolves to this interpreter's
environment, which is first on PATH. The blocks train and export for minutes: `-m slow`.
"""

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

from ser_keras.config import DEFAULT_EXPERIMENT

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def bash_blocks(text: str) -> list:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def demo_scripts() -> list:
    """The README's bash blocks that touch the demo corpus, ready to run here."""
    scripts = []
    for block in bash_blocks(README.read_text()):
        if "demo" not in block or "pytest" in block:
            continue
        lines = []
        for line in block.splitlines():
            if "pip install" in line:
                line = line.split("&&")[-1].strip()  # keep what follows the install
            lines.append(line.replace(".venv/bin/", ""))
        scripts.append("set -euo pipefail\n" + "\n".join(lines))
    return scripts


def test_readme_opens_with_the_two_entry_lines():
    blocks = bash_blocks(README.read_text())
    assert "pip install" in blocks[0] and "ser-keras fit --corpus demo" in blocks[0]
    assert "pip install" in blocks[1] and "pytest" in blocks[1]


def test_ci_runs_the_readme_test_line():
    ci = (README.parent / ".ci" / "run").read_text()
    assert "README.md" in ci and "pytest" in ci


@pytest.mark.slow
def test_readme_demo_blocks_run_as_written(tmp_path):
    scripts = demo_scripts()
    assert len(scripts) >= 2, "the README shows no demo tour"
    bin_dir = pathlib.Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", MPLBACKEND="Agg")
    for script in scripts:
        result = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                                text=True, timeout=1200)
        assert result.returncode == 0, f"README block failed:\n{script}\n---\n{result.stderr[-3000:]}"
    # The tour's model must have learned: 4 balanced classes, chance is 0.25 (README: 0.792).
    results = json.loads((tmp_path / "runs" / f"demo_{DEFAULT_EXPERIMENT}_loso" / "results.json").read_text())
    assert results["complete"] and results["pooled"]["ua"] >= 0.50, results["pooled"]["ua"]


def test_readme_is_short_and_its_links_resolve():
    """The README stays a user's page (at most 250 lines); what it moved to docs/ must be there."""
    text = README.read_text()
    assert len(text.splitlines()) <= 250, len(text.splitlines())
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    assert any(t.startswith("docs/") for t in targets), "the README links no docs/ page"
    for doc in [README] + sorted((README.parent / "docs").glob("*.md")):
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", doc.read_text()):
            assert (doc.parent / target).is_file(), f"{doc.name} links {target}, which does not exist"
