"""The architecture's rules, checked: the layers' import contracts catch a violation, and no
module grows past the size that reads well without saying why."""

import ast
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from cdr_pipeline_tests.support import paths

PACKAGE = paths.PROJECT_ROOT / "cdr_pipeline"
MAX_MODULE_LINES = 400
# A longer module states why on a line of its docstring that starts with this.
LONG_MODULE_REASON = "Longer than 400 lines:"


SHELLS = {"cdr_pipeline.defs", "cdr_pipeline.cli", "cdr_pipeline.receiver"}


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """`lint-imports` with the project's contracts, on the package copy under `root`."""
    return subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_layer_violation_fails_the_import_contracts(tmp_path: Path) -> None:
    """A core module that imports Dagster breaks the first contract (as CI's `lint-imports`
    would report it); the unchanged copy keeps every contract."""
    shutil.copytree(
        PACKAGE, tmp_path / "cdr_pipeline", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(paths.PROJECT_ROOT / "pyproject.toml", tmp_path)
    clean = lint_imports(tmp_path)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "BROKEN" not in clean.stdout

    core_module = tmp_path / "cdr_pipeline" / "db.py"
    core_module.write_text(core_module.read_text() + "\nimport dagster  # a layer violation\n")
    broken = lint_imports(tmp_path)
    assert broken.returncode != 0
    assert "The core never imports the Dagster shell, the CLI or Dagster BROKEN" in broken.stdout
    assert "cdr_pipeline.db -> dagster" in broken.stdout


def test_long_modules_state_their_reason() -> None:
    too_long = []
    for module in sorted(PACKAGE.rglob("*.py")):
        text = module.read_text()
        if text.count("\n") <= MAX_MODULE_LINES:
            continue
        docstring = ast.get_docstring(ast.parse(text)) or ""
        if not any(line.startswith(LONG_MODULE_REASON) for line in docstring.splitlines()):
            too_long.append(f"{module.relative_to(paths.PROJECT_ROOT)}: {text.count(chr(10))}")
    assert too_long == [], f"modules over {MAX_MODULE_LINES} lines without a stated reason"


def test_every_module_is_in_a_layer() -> None:
    """A new top-level module is either core (listed in both core contracts, so the contracts
    cover it) or one of the shells: none escapes the import checks by being forgotten."""
    contracts = tomllib.loads((paths.PROJECT_ROOT / "pyproject.toml").read_text())["tool"][
        "importlinter"
    ]["contracts"]
    core_lists = [set(c["source_modules"]) for c in contracts if c["name"].startswith("The core")]
    modules = {
        f"cdr_pipeline.{p.stem if p.is_file() else p.name}"
        for p in PACKAGE.iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()
    }
    assert len(core_lists) == 2
    for core in core_lists:
        assert core == modules - SHELLS
