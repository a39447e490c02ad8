"""The HTTP side of the fake API: one request in, one answer (or injected fault) out."""

import dataclasses
import datetime as dt
import gzip
import json
import logging
import socket
import sys
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import parse_qs, urlsplit

from cdr_pipeline.callr.client import EXPORT_PATH
from cdr_pipeline.callr.simulator.cache import cached_export
from cdr_pipeline.callr.simulator.exports import check_direction, generate_export
from cdr_pipeline.callr.simulator.faults import Fault

if TYPE_CHECKING:
    from cdr_pipeline.callr.simulator.server import SimulatorServer

logger = logging.getLogger(__package__)  # the simulator logs under one name


@dataclasses.dataclass
class ServedRequest:
    """What the simulator saw and did for one request (never the key).

    Attributes:
        method: HTTP method.
        path: URL path.
        query: Query parameters (last value of each).
        status: Status sent, None if the connection was dropped before answering.
        content_encoding: `gzip` when the body was gzip-encoded, else None.
        body_bytes: Body bytes written on the wire (may be fewer than announced).
        fault: The injected fault's kind that shaped this answer, if any.
        arrived_s: `time.monotonic()` when the request was read.
        finished_s: `time.monotonic()` just before the last bytes of the answer were written
            (set before the client can see the answer complete; None if never answered).
    """

    method: str
    path: str
    query: dict[str, str]
    status: int | None = None
    content_encoding: str | None = None
    body_bytes: int = 0
    fault: str | None = None
    arrived_s: float = dataclasses.field(default_factory=time.monotonic)
    finished_s: float | None = None


class ExportRequest(NamedTuple):
    """The window and direction an export request asks for."""

    start: dt.datetime
    end: dt.datetime
    direction: str


def export_params(query: dict[str, str]) -> ExportRequest:
    """direction, from and to of an export request, or ValueError saying what is wrong."""
    direction = query.get("direction", "")
    check_direction(direction)
    bounds = []
    for name in ("from", "to"):
        text = query.get(name, "")
        try:
            moment = dt.datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{name} must be an ISO8601 instant, got {text!r}") from None
        bounds.append(moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC))
    if not bounds[0] < bounds[1]:
        raise ValueError(f"from ({query['from']}) must be before to ({query['to']})")
    return ExportRequest(bounds[0], bounds[1], direction)


def _accepts_gzip(header: str) -> bool:
    for item in header.split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() == "gzip":
            q = params.strip()
            return not (q.startswith("q=") and float(q[2:] or 0) == 0)
    return False


class QuietServer(ThreadingHTTPServer):
    """A client hanging up early (curl | head, a timed-out test client) is routine here."""

    simulator: "SimulatorServer"  # the simulator whose requests this server answers

    def handle_error(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: tuple
    ) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):
            logger.debug("client %s hung up: %s", client_address, error)
            return
        super().handle_error(request, client_address)


class Handler(BaseHTTPRequestHandler):
    """One HTTP/1.1 connection to the simulator."""

    protocol_version = "HTTP/1.1"
    server_version = "CallrSimulator/1.0"
    server: QuietServer

    def do_POST(self) -> None:
        self._handle()

    do_GET = do_PUT = do_DELETE = do_PATCH = do_POST

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("simulator %s: %s", self.address_string(), format % args)

    def _handle(self) -> None:
        sim = self.server.simulator
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        query = {k: ("***" if v == sim.api_key else v) for k, v in query.items()}
        record = ServedRequest(self.command, url.path, query)
        length = self.headers.get("content-length", "0")
        if length.isdigit() and int(length):
            self.rfile.read(int(length))
        if "transfer-encoding" in self.headers or not length.isdigit():
            self.close_connection = True  # a body we do not parse: do not reuse the connection
        fault = sim._arrive(record)
        record.fault = fault.kind if fault else None
        try:
            self._answer(sim, record, fault, url.path)
        except (ConnectionError, TimeoutError):
            self.close_connection = True  # the client went away (e.g. after its timeout)

    def _answer(
        self, sim: "SimulatorServer", record: ServedRequest, fault: Fault | None, path: str
    ) -> None:
        if fault is not None and self._answered_by_fault(record, fault):
            return
        if self._refused(sim, record, fault, path):
            return
        self._send_export(sim, record, fault)

    def _answered_by_fault(self, record: ServedRequest, fault: Fault) -> bool:
        """Apply a fault that acts before the request is read; whether it answered."""
        if fault.kind == "slow":
            time.sleep(fault.seconds)
        if fault.kind == "drop":
            self.close_connection = True
            return True
        if fault.kind == "status":
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            if fault.body is not None:
                self._send(record, fault.code, fault.body.encode(), "text/plain", headers)
            else:
                self._error(record, fault.code, HTTPStatus(fault.code).phrase, headers)
            return True
        return False

    def _refused(
        self, sim: "SimulatorServer", record: ServedRequest, fault: Fault | None, path: str
    ) -> bool:
        """Answer a wrong endpoint, method or key with its error; whether it did."""
        if path.rstrip("/") != EXPORT_PATH:
            self._error(record, 404, f"no such endpoint: {path}")
        elif self.command != "POST":
            self._error(record, 405, "use POST", {"Allow": "POST"})
        elif (fault is not None and fault.kind == "bad_key") or not sim._authorized(self.headers):
            self._error(record, 401, "invalid or missing API key", {"WWW-Authenticate": "Basic"})
        else:
            return False
        return True

    def _send_export(
        self, sim: "SimulatorServer", record: ServedRequest, fault: Fault | None
    ) -> None:
        """Send the export the query asks for, with a body fault applied if one is set."""
        kind = fault.kind if fault is not None else None
        gzip_encoded = sim.compress and _accepts_gzip(self.headers.get("accept-encoding", ""))
        try:
            request = export_params(record.query)
            body = _export_body(sim, request, gzip_encoded)
        except ValueError as exc:
            self._error(record, 400, str(exc))
            return
        headers = {"Content-Disposition": f'attachment; filename="calls-{request.direction}.csv"'}
        if gzip_encoded:
            headers["Content-Encoding"] = "gzip"
        size = len(body) if isinstance(body, bytes) else body.stat().st_size
        sent = size
        if fault is not None and kind == "truncate":
            sent = int(size * fault.fraction)
            self.close_connection = True
        if kind == "corrupt":
            body = _corrupted(body)
        pace_s = fault.seconds if fault is not None and kind == "slow_body" else 0.0
        self._send(record, 200, body, "text/csv; charset=utf-8", headers, sent=sent, pace_s=pace_s)

    def _error(
        self, record: ServedRequest, code: int, message: str, headers: dict[str, str] | None = None
    ) -> None:
        body = json.dumps({"error": {"code": code, "message": message}}).encode()
        self._send(record, code, body, "application/json", headers or {})

    def _send(
        self,
        record: ServedRequest,
        code: int,
        body: bytes | Path,
        content_type: str,
        headers: dict[str, str],
        sent: int | None = None,
        pace_s: float = 0.0,
    ) -> None:
        """Answer with `body` (bytes, or a file streamed from disk), sending `sent` bytes of it.

        With `pace_s`, the body goes in 20 pieces spread over that many seconds.
        """
        size = len(body) if isinstance(body, bytes) else body.stat().st_size
        sent = size if sent is None else sent
        record.status = code
        record.content_encoding = headers.get("Content-Encoding")
        record.body_bytes = sent
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(size))
        for name, value in headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if pace_s > 0:
            data = body[:sent] if isinstance(body, bytes) else body.read_bytes()[:sent]
            piece = max(1, -(-len(data) // 20))
            for offset in range(0, len(data), piece):
                if offset:
                    time.sleep(pace_s / 20)
                if offset + piece >= len(data):
                    record.finished_s = time.monotonic()
                self.wfile.write(data[offset : offset + piece])
                self.wfile.flush()
        elif isinstance(body, bytes):
            record.finished_s = time.monotonic()
            self.wfile.write(body[:sent])
        else:
            self.wfile.flush()
            record.finished_s = time.monotonic()
            with body.open("rb") as source:
                self.connection.sendfile(source, 0, sent)
        self.wfile.flush()


def _export_body(
    sim: "SimulatorServer", request: ExportRequest, gzip_encoded: bool
) -> bytes | Path:
    """The export's body: generated (bytes), or from the simulator's cache (a file)."""
    options = dataclasses.asdict(sim.options)
    start, end, direction = request
    if sim.cache_dir is None:
        body = generate_export(start, end, direction, **options)
        return gzip.compress(body, compresslevel=1, mtime=0) if gzip_encoded else body
    with sim._cache_lock:
        return cached_export(
            sim.cache_dir, start, end, direction, gzip_encoded=gzip_encoded, **options
        )


def _corrupted(body: bytes | Path) -> bytes:
    """The body with 16 bytes in its middle inverted (a gzip stream no longer decodes)."""
    data = bytearray(body if isinstance(body, bytes) else body.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 16] = bytes(b ^ 0xFF for b in data[middle : middle + 16])
    return bytes(data)
