"""The CLI as users run it: a fresh process, without the caller's CDR_/CALLR_ settings."""

import os
import subprocess
import sys
from pathlib import Path


def cdr_pipeline(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CDR_", "CALLR_"))}
    clean.pop("DAGSTER_HOME", None)
    return subprocess.run(
        [sys.executable, "-m", "cdr_pipeline.cli", *args],
        cwd=cwd,
        env=clean | env,
        capture_output=True,
        text=True,
        timeout=300,
    )
