"""The architecture's rules, checked: the layers' import contracts catch a violation, and no
module grows past the size that reads well without saying why."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

from cdr_pipeline_tests.support import paths

PACKAGE = paths.PROJECT_ROOT / "cdr_pipeline"
MAX_MODULE_LINES = 400
# A longer module states why on a line of its docstring that starts with this.
LONG_MODULE_REASON = "Longer than 400 lines:"


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
