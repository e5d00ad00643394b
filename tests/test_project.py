"""The repository's shape: the design card's layout, lint, and the two README commands."""

import subprocess
import sys
from pathlib import Path

from prioritymax.settings import REPO_ROOT


def test_layout_of_the_design_card():
    for folder in ("dashboard", "orchestration", "api", "ml", "client", "pmx", "prioritymax", "notebooks",
                   "tests", "bench", "docs"):
        assert (REPO_ROOT / folder).is_dir(), folder
    for name in ("workspace.yaml", "pyproject.toml", "Makefile", ".ci/run"):
        assert (REPO_ROOT / name).is_file(), name


def test_ruff_is_clean():
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", str(REPO_ROOT)],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_imports_point_down_the_layers():
    """docs/architecture.md's layers, as .importlinter writes them: a module importing from a layer
    above its own fails here, and in `make lint`."""
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint_imports), "--no-cache"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "Contracts: 2 kept, 0 broken" in result.stdout


def test_readme_opens_with_the_two_commands():
    readme = (REPO_ROOT / "README.md").read_text()
    first_block = readme.split("```")[1]
    commands = [line.strip() for line in first_block.splitlines()[1:] if line.strip()]
    assert commands == ["make up", "make test"]
    assert (REPO_ROOT / ".ci" / "run").read_text().strip().endswith("make test")
