"""Helpers for the receiver tests: sample CDRs and events, signing, and real servers on loopback.

`ThreadedReceiver` runs the app under uvicorn in a thread of the test process (fast, for
request-level tests); `ReceiverProcess` runs `cdr-pipeline receiver` as a separate process, which
the load and kill tests need (a real server that can be SIGKILLed).
"""

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from cdr_pipeline.config import Settings
from cdr_pipeline.receiver import auth
from cdr_pipeline.receiver.app import create_app
from cdr_pipeline.receiver.server import uvicorn_config

SECRET = "whsec-test-3b9d0c7e15"
TOKEN = "push-token-test-8c41aa"
WEBHOOK_URL = "/callr/webhook"
PUSH_URL = "/callr/push"


def sample_cdr(
    callid: int | str, started: str = "2026-11-02T10:15:00+01:00", **fields: Any
) -> dict:
    """A complete, valid Callr CDR as a webhook carries it (JSON types, not all strings)."""
    cdr = {
        "billingCredit": "0",
        "billingDebit": "12.75",
        "billingDestinationLabel": "France - Mobile",
        "billingPaymentType": "postpaid",
        "callee": "+33612345678",
        "callerName": "ACME",
        "callerNumber": "+33199001234",
        "callerRestricted": False,
        "callid": callid,
        "direction": "inbound",
        "durationAnswered": 55,
        "durationBilled": 60,
        "durationTotal": 62,
        "started": started,
        "answered": started,
        "ended": started,
        "hangupCause": 16,
        "hangupSource": "caller",
        "hangupTech": "SIP 200",
        "scenarioName": "Support",
        "scenarioSid": "scn0001",
        "scenarioTypeName": "Actions",
        "scenarioTypeVersion": "1.0",
        "status": "answered",
    }
    cdr.update(fields)
    return cdr


def webhook_event(cdr: dict, *, event_id: str | None = None, event_type: str | None = None) -> dict:
    """A webhook event envelope around `cdr` (type from its direction unless given)."""
    event: dict[str, Any] = {"type": event_type or f"v2.call.{cdr['direction']}.ended"}
    if event_id:
        event["id"] = event_id
    event["data"] = cdr
    return event


def encode(document: Any) -> bytes:
    return json.dumps(document).encode()


def signed_headers(
    body: bytes, *, secret: str = SECRET, algorithm: str = "sha256", event_id: str | None = None
) -> dict[str, str]:
    """JSON content type and a valid signature in Callr's documented format (the default)."""
    headers = {
        "content-type": "application/json",
        "x-callr-hmacsignature": auth.sign(secret.encode(), body, algorithm=algorithm),
    }
    if event_id:
        headers["x-callr-eventid"] = event_id
    return headers


def timestamped_headers(
    body: bytes, *, secret: str = SECRET, timestamp: int | None = None, stamp: bool = True
) -> dict[str, str]:
    """A valid signature in the `timestamped` format (with the current time unless given)."""
    headers = {"content-type": "application/json"}
    ts = (int(time.time()) if timestamp is None else timestamp) if stamp else None
    if ts is not None:
        headers["x-callr-timestamp"] = str(ts)
    headers["x-callr-signature"] = auth.sign(secret.encode(), body, ts, form="hex")
    return headers


def bearer_headers(token: str = TOKEN) -> dict[str, str]:
    return {"content-type": "application/json", "authorization": f"Bearer {token}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def settings_for(data_dir: Path, **env: str) -> Settings:
    return Settings.from_env({"CDR_DATA_DIR": str(data_dir), **env})


class ThreadedReceiver:
    """The receiver app under uvicorn (the server's own configuration) in a daemon thread."""

    def __init__(self, settings: Settings, credentials: auth.Credentials) -> None:
        self.port = free_port()
        self.app = create_app(settings, credentials)
        config = uvicorn_config(
            self.app, settings, host="127.0.0.1", port=self.port, log_level="warning"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "ThreadedReceiver":
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the receiver did not start within 10 s")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=15)


def receiver_command(port: int, host: str = "127.0.0.1") -> list[str]:
    """`cdr-pipeline receiver` from this virtualenv (the real console script)."""
    script = Path(sys.executable).parent / "cdr-pipeline"
    args = ["receiver", "--host", host, "--port", str(port)]
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-c", "import sys; from cdr_pipeline.cli import main; "
            "sys.exit(main(sys.argv[1:]))", *args]  # fmt: skip


class ReceiverProcess:
    """`cdr-pipeline receiver` in its own process, waited for until `/healthz` answers."""

    def __init__(
        self,
        data_dir: Path,
        log_path: Path,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        preexec_fn: Callable[[], None] | None = None,
        **env: str,
    ):
        self.port = port or free_port()
        self.host = host
        self.preexec_fn = preexec_fn
        self.data_dir = data_dir
        self.log_path = log_path
        self.env = {
            **os.environ,
            "CDR_DATA_DIR": str(data_dir),
            "CDR_WEBHOOK_SECRET": SECRET,
            "CDR_PUSH_TOKEN": TOKEN,
            **env,
        }
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> "ReceiverProcess":
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            receiver_command(self.port, self.host),
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=self.preexec_fn,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"receiver exited with {self.process.returncode}: "
                    + self.log_path.read_text(errors="replace")[-2000:]
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200:
                    return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"receiver did not answer /healthz within {timeout_s} s")

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, nothing is flushed by the process."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> "ReceiverProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def landed(data_dir: Path) -> Iterator[list[tuple]]:
    """Rows of the landing store (seq, source, event_type, event_id, callid), for assertions."""
    import sqlite3

    from cdr_pipeline.landing import landing_path

    path = landing_path(data_dir)
    if not path.exists():
        yield []
        return
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        yield con.execute(
            "SELECT seq, source, event_type, event_id, callid FROM events ORDER BY seq"
        ).fetchall()
    finally:
        con.close()


# --- load generation ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """One request of a load run: HTTP status (None on a transport error), latency, seq."""

    index: int
    status: int | None
    latency_s: float
    seq: int | None = None
    error: str | None = None

    @property
    def acknowledged(self) -> bool:
        return self.status == 200


def signed_webhook(callid: int, *, started: str = "2026-11-02T10:15:00+01:00") -> bytes:
    """A webhook event body for a new call (unique event id)."""
    return encode(webhook_event(sample_cdr(callid, started=started), event_id=f"evt-{callid}"))


def send_events(
    base_url: str,
    bodies: Sequence[bytes],
    *,
    concurrency: int = 50,
    timeout_s: float = 120.0,
    held_from: int | None = None,
    release: threading.Event | None = None,
) -> list[Outcome]:
    """POST every body (signed) from `concurrency` concurrent clients; bounded by `timeout_s`.

    Each client is a thread with its own keep-alive `httpx.Client` (an `AsyncClient` costs
    about 5x more CPU per request here, and the client, not the receiver, became the limit).
    With `held_from` and `release`, bodies from that index on wait until `release` is set, so a
    test can act (e.g. kill the server) while the load is provably unfinished.
    """
    deadline = time.monotonic() + timeout_s
    pending: queue.SimpleQueue[int] = queue.SimpleQueue()
    for index in range(len(bodies)):
        pending.put(index)
    outcomes: list[Outcome] = []

    def client() -> None:
        with httpx.Client(base_url=base_url, timeout=30) as http:
            while time.monotonic() < deadline:
                try:
                    index = pending.get_nowait()
                except queue.Empty:
                    return
                if held_from is not None and release is not None and index >= held_from:
                    release.wait(max(0.0, deadline - time.monotonic()))
                body = bodies[index]
                started = time.perf_counter()
                try:
                    response = http.post(WEBHOOK_URL, content=body, headers=signed_headers(body))
                except httpx.HTTPError as error:
                    elapsed = time.perf_counter() - started
                    outcomes.append(Outcome(index, None, elapsed, error=type(error).__name__))
                    continue
                elapsed = time.perf_counter() - started
                seq = response.json().get("seq") if response.status_code == 200 else None
                outcomes.append(Outcome(index, response.status_code, elapsed, seq))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()) + 30)
    return list(outcomes)


def latency_summary(outcomes: Sequence[Outcome], wall_s: float) -> dict[str, float]:
    """p50 / p99 / max latency (ms) of acknowledged requests, and throughput."""
    latencies = sorted(o.latency_s for o in outcomes if o.acknowledged)
    if not latencies:
        return {"acknowledged": 0}

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 1)

    return {
        "requests": len(outcomes),
        "acknowledged": len(latencies),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": round(latencies[-1] * 1000, 1),
        "wall_s": round(wall_s, 2),
        "events_per_s": round(len(latencies) / wall_s, 1),
    }


# --- Dagster: the sensor and the run it requests -------------------------------------------------


@dataclass
class SensorOutcome:
    """One sensor tick and the runs it requested (executed in process)."""

    cursor: str | None
    skip_message: str | None
    run_ids: list[str]
    success: bool


def sensor_tick(defs: Any, instance: Any, cursor: str | None = None) -> SensorOutcome:
    """Evaluate `realtime_events_sensor` once, and execute every run it requests."""
    import dagster as dg

    from cdr_pipeline.defs.realtime import REALTIME_JOB, REALTIME_SENSOR

    sensor = defs.resolve_sensor_def(REALTIME_SENSOR)
    with dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs) as context:
        result = sensor.evaluate_tick(context)
    run_ids, success = [], True
    job = defs.resolve_job_def(REALTIME_JOB)
    for request in result.run_requests or []:
        run = job.execute_in_process(instance=instance, tags=request.tags, raise_on_error=False)
        run_ids.append(run.run_id)
        success = success and run.success
    return SensorOutcome(result.cursor, result.skip_message, run_ids, success)
