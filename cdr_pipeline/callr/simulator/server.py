"""The fake Callr export API on a loopback port: `SimulatorServer` in tests, `serve` for the CLI.

With a `cache_dir`, each export body is generated once, kept as a file (`cached_export`) and
streamed from disk afterwards, so a benchmark can time the transfer of a multi-million-row
export without timing its generation.
"""

import base64
import binascii
import datetime as dt
import hmac
import logging
import signal
import threading
from collections import deque
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cdr_pipeline.callr.client import EXPORT_PATH
from cdr_pipeline.callr.simulator.calls import SimulationOptions
from cdr_pipeline.callr.simulator.faults import Fault
from cdr_pipeline.callr.simulator.handler import (
    Handler,
    QuietServer,
    ServedRequest,
    export_params,
)

logger = logging.getLogger(__package__)  # the simulator logs under one name

DEFAULT_API_KEY = "sim-key"


class SimulatorServer:
    """The fake Callr export API on a loopback port, in a daemon thread.

    Use as a context manager (or `start()` / `stop()`):

        with SimulatorServer(api_key="sim-key", calls_per_day=500) as sim:
            client = CallrExportClient(sim.base_url, sim.api_key)

    Attributes:
        api_key: The key it accepts, as `x-api-key` or as the HTTP Basic password (with any
            non-empty user, the account SID).
        options: The SimulationOptions its exports are generated with.
        compress: Whether it gzip-encodes exports for clients that accept it.
        cache_dir: Where export bodies are cached as files (`cached_export`); None generates
            every answer afresh.
        requests: ServedRequest of every request, in arrival order.
    """

    def __init__(
        self,
        api_key: str = DEFAULT_API_KEY,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        compress: bool = True,
        cache_dir: Path | None = None,
        **options: Any,
    ) -> None:
        """Prepare (not start) a simulator.

        Args:
            api_key: The key to accept.
            host: Interface to bind; keep loopback.
            port: TCP port; 0 picks a free one.
            compress: gzip-encode exports for clients that send `Accept-Encoding: gzip`.
            cache_dir: Generate each export body once into this folder and stream it from
                there afterwards (for large exports and benchmarks); None = generate per request.
            **options: SimulationOptions fields (calls_per_day, variety, overlap, defects, seed).
        """
        if not api_key:
            raise ValueError("the simulator needs a non-empty api_key")
        self.api_key = api_key
        self.options = SimulationOptions(**options)
        self.compress = compress
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.requests: list[ServedRequest] = []
        self._host, self._port = host, port
        self._lock = threading.Lock()
        self._cache_lock = threading.Lock()
        self._faults: deque[Fault] = deque()
        self._failing_days: dict[dt.date, int] = {}
        self._count = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        where = self.base_url if self._httpd else "not started"
        return f"SimulatorServer({where}, api_key='***', options={self.options})"

    @property
    def base_url(self) -> str:
        """`http://host:port` of the running server (what CALLR_BASE_URL should be)."""
        if self._httpd is None:
            raise RuntimeError("the simulator is not started")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def request_count(self) -> int:
        """Requests received so far (any path, any outcome)."""
        with self._lock:
            return self._count

    def inject(self, *faults: Fault) -> None:
        """Queue faults; each following request consumes one, in order."""
        with self._lock:
            self._faults.extend(faults)

    def fail_days(self, *days: dt.date, status: int = 503) -> None:
        """Answer `status` to every export request whose window starts on one of `days` (UTC),
        until `heal_days`: a day the API keeps failing, whatever the retries."""
        with self._lock:
            self._failing_days.update(dict.fromkeys(days, status))

    def heal_days(self) -> None:
        """Stop failing the days `fail_days` named."""
        with self._lock:
            self._failing_days.clear()

    @property
    def pending_faults(self) -> int:
        """Injected faults not consumed yet."""
        with self._lock:
            return len(self._faults)

    def start(self) -> "SimulatorServer":
        """Bind the port and serve in a daemon thread."""
        if self._httpd is not None:
            return self
        httpd = QuietServer((self._host, self._port), Handler)
        httpd.daemon_threads = True
        httpd.simulator = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"callr-simulator-{httpd.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the port."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> "SimulatorServer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # called by the handler threads
    def _arrive(self, record: ServedRequest) -> Fault | None:
        with self._lock:
            self._count += 1
            self.requests.append(record)
            if self._failing_days:
                try:
                    day = export_params(record.query).start.astimezone(dt.UTC).date()
                except ValueError:
                    day = None
                if day in self._failing_days:
                    return Fault.status(self._failing_days[day], body=f"{day} is unavailable")
            return self._faults.popleft() if self._faults else None

    def _authorized(self, headers: Any) -> bool:
        expected = self.api_key.encode()
        given = headers.get("x-api-key")
        if given is not None:
            return hmac.compare_digest(given.encode(), expected)
        scheme, _, token = (headers.get("authorization") or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(token, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return bool(user) and hmac.compare_digest(password.encode(), expected)


def serve(host: str, port: int, api_key: str, **options: Any) -> None:
    """Serve the simulator until Ctrl-C or SIGTERM (for `cdr-pipeline simulator --port N`).

    Args:
        host: Interface to bind (keep loopback).
        port: TCP port; 0 picks a free one (logged).
        api_key: The key clients must send.
        **options: SimulationOptions fields.
    """
    stop = threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with SimulatorServer(api_key, host, port, **options) as sim:
        logger.info(
            "Callr simulator serving %s%s; point CALLR_BASE_URL at %s (Ctrl-C to stop)",
            sim.base_url,
            EXPORT_PATH,
            sim.base_url,
        )
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
    logger.info("Callr simulator stopped")
