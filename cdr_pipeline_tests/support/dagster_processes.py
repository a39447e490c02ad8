"""Real Dagster processes for end-to-end tests, on loopback.

`DagsterProcess` runs one Dagster process tree in its own session (so the whole tree can be
stopped at once). `DagsterDev` starts `dagster dev` (or another webserver launcher, such as
`cdr-pipeline dagster webserver`) against the project's `workspace.yaml`, with a temporary
`DAGSTER_HOME`, and talks to it through the GraphQL API the UI uses. Every wait is bounded.
"""

import contextlib
import datetime as dt
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from cdr_pipeline.callr.simulator import SimulatorServer
from cdr_pipeline_tests.support.paths import PROJECT_ROOT

WORKSPACE_YAML = PROJECT_ROOT / "workspace.yaml"
DAGSTER_YAML = PROJECT_ROOT / "dagster.yaml"

# A non-interactive parent (CI, a backgrounded shell) may start us with SIGINT ignored; an
# ignored SIGINT survives exec, and `dagster dev` maps SIGTERM onto SIGINT's handler, so it
# would ignore both. This launcher restores the default handlers, then becomes `dagster dev`.
_LAUNCHER = (
    "import os, signal, sys; "
    "signal.signal(signal.SIGINT, signal.SIG_DFL); signal.signal(signal.SIGTERM, signal.SIG_DFL); "
    "os.execv(sys.executable, [sys.executable, '-m', 'dagster', 'dev', *sys.argv[1:]])"
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def simulator_env(simulator: SimulatorServer, data_dir: Path, start: dt.date) -> dict[str, str]:
    """The pipeline's settings for Dagster processes: the simulator's API, `data_dir`, UTC."""
    return {
        "CALLR_BASE_URL": simulator.base_url,
        "CALLR_API_KEY": simulator.api_key,
        "CDR_DATA_DIR": str(data_dir),
        "CDR_START_DATE": start.isoformat(),
        "CDR_TIMEZONE": "UTC",
    }


def make_dagster_home(path: Path) -> Path:
    """A fresh DAGSTER_HOME holding a copy of the project's dagster.yaml."""
    path.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(DAGSTER_YAML, path / "dagster.yaml")
    return path


class DagsterProcess:
    """A Dagster process tree (`dagster dev`, a webserver, a daemon) in its own process session.

    The project's settings come from `env` only, never from the developer's shell.
    """

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path, cwd: Path) -> None:
        self.argv, self.cwd, self.log_path = argv, cwd, log_path
        inherited = {
            k: v for k, v in os.environ.items() if not k.startswith(("CDR_", "CALLR_", "DAGSTER_"))
        }
        self._env = {**inherited, **env}
        self._process: subprocess.Popen | None = None
        self._log = None

    def start(self) -> "DagsterProcess":
        """Start the process, its output going to `log_path`."""
        self._log = self.log_path.open("wb")
        self._process = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            env=self._env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        return self

    def exited(self) -> bool:
        """Whether the process has ended."""
        return self._process is not None and self._process.poll() is not None

    def log_text(self) -> str:
        """What the processes printed so far."""
        if self._log is not None:
            self._log.flush()
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """Ask the process to shut down (SIGTERM), then kill whatever is left of its session.

        Returns the process's exit status, or None if it had to be killed.
        """
        process, status = self._process, None
        if process is None:
            return None
        try:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    status = process.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    status = None
            else:
                status = process.returncode
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # stragglers: code server, run workers
            if process.poll() is None:
                process.wait(timeout=10)
            if self._log is not None:
                self._log.close()
            self._process = None
        return status

    def __enter__(self) -> "DagsterProcess":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class DagsterDev(DagsterProcess):
    """A webserver on a free loopback port, answering GraphQL: `dagster dev` (webserver, daemon,
    code server) by default, or what `launcher` starts given `-w`, `--host` and `--port`."""

    def __init__(
        self,
        home: Path,
        env: dict[str, str],
        log_path: Path,
        launcher: list[str] | None = None,
    ) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [*(launcher or [sys.executable, "-c", _LAUNCHER]), "-w", str(WORKSPACE_YAML)]
        argv += ["--host", "127.0.0.1", "--port", str(self.port)]
        super().__init__(argv, {**env, "DAGSTER_HOME": str(home)}, log_path, cwd=home)

    def start(self, ready_timeout_s: float = 120.0) -> "DagsterDev":
        """Start the processes and wait until the code location answers GraphQL."""
        super().start()
        self._wait_for_location(ready_timeout_s)
        return self

    def _wait_for_location(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        query = "{ workspaceOrError { ... on Workspace { locationEntries { name "
        query += "locationOrLoadError { __typename ... on PythonError { message } } } } } }"
        last = None
        while time.monotonic() < deadline:
            if self.exited():
                raise RuntimeError(f"{self.argv[:5]} exited early: {self.log_text()[-3000:]}")
            try:
                data = self.graphql(query, timeout_s=10)
                entries = data["workspaceOrError"]["locationEntries"]
                last = entries
                loaded = [e for e in entries if e["locationOrLoadError"]]
                if loaded and all(
                    e["locationOrLoadError"]["__typename"] == "RepositoryLocation" for e in loaded
                ):
                    return
                errors = [
                    e
                    for e in loaded
                    if e["locationOrLoadError"]["__typename"] != "RepositoryLocation"
                ]
                if errors:
                    raise RuntimeError(f"code location failed to load: {errors}")
            except (httpx.HTTPError, KeyError, TypeError):
                pass
            time.sleep(0.5)
        raise TimeoutError(
            f"the webserver is not ready after {timeout_s} s ({last}): {self.log_text()[-3000:]}"
        )

    def graphql(
        self, query: str, variables: dict[str, Any] | None = None, timeout_s: float = 30.0
    ) -> dict[str, Any]:
        """POST a GraphQL query to the webserver; the `data` of the answer (errors raise)."""
        response = httpx.post(
            f"{self.url}/graphql",
            json={"query": query, "variables": variables or {}},
            timeout=timeout_s,
        )
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise RuntimeError(f"GraphQL errors: {body['errors']}")
        return body["data"]
