"""A command run as a process, as a user runs it: wall time and the peak RSS of what it ran.

Linux keeps a process's peak RSS (`ru_maxrss`) across `execve`: a command forked from a
benchmark that holds 4 GB (it has just grown a warehouse, or runs a simulator) reports at least
4 GB, whatever the command uses itself. So the command is started by a small launcher (an
interpreter that imports only `subprocess`, ~15 MB), and the launcher's `wait4` gives the peak
of the command and of the descendants it waited for. The launcher's own start (~20 ms) is in the
wall time.
"""

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

_LAUNCHER = (
    "import os, subprocess, sys\n"
    "child = subprocess.Popen(sys.argv[2:])\n"
    "_, status, usage = os.wait4(child.pid, 0)\n"
    "open(sys.argv[1], 'w').write(str(usage.ru_maxrss * 1024))\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


@dataclass(frozen=True)
class Measured:
    """How a command ran: wall seconds, peak RSS in bytes, exit code."""

    seconds: float
    peak_rss_bytes: int
    returncode: int


def run_measured(
    command: list[str],
    env: dict[str, str],
    cwd: Path | None = None,
    stdout: IO | int | None = None,
) -> Measured:
    """Run `command` to its end (output to `stdout`, stderr with it); how it ran."""
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as peak:
        started = time.perf_counter()
        finished = subprocess.run(
            [sys.executable, "-c", _LAUNCHER, peak.name, *command],
            env=env,
            cwd=cwd,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            check=False,
        )
        seconds = time.perf_counter() - started
        text = Path(peak.name).read_text()
    return Measured(seconds, int(text) if text else 0, finished.returncode)


def run_checked(
    command: list[str], env: dict[str, str], cwd: Path | None = None
) -> tuple[Measured, str]:
    """`run_measured` with the output captured: how it ran and what it printed; a RuntimeError
    with the output's end if it failed."""
    with tempfile.TemporaryFile() as log:
        measured = run_measured(command, env, cwd, log)
        log.seek(0)
        output = log.read().decode(errors="replace")
    if measured.returncode != 0:
        raise RuntimeError(f"{command} failed ({measured.returncode}):\n{output[-3000:]}")
    return measured, output


if __name__ == "__main__":  # a check of the launcher: `python benchmarks/measure.py`
    big = b"x" * (1 << 30)  # this process now holds 1 GiB; the measured child does not
    small = run_measured([sys.executable, "-c", "pass"], dict(os.environ))
    print(f"child peak RSS {small.peak_rss_bytes / (1 << 20):.0f} MB (parent holds 1 GiB)")
