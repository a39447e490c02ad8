"""The receiver's HTTP server: uvicorn with a deadline and a size limit on every request head.

uvicorn (0.54, httptools) has a keep-alive timeout for idle connections between requests, but
nothing for a connection that sends nothing, half a request line or its headers one byte at a
time, and httptools buffers a header of any size. `GuardedHttpToolsProtocol` adds both, in the
protocol, before a request reaches the app:

- the head (request line and headers) must arrive within `CDR_RECEIVER_REQUEST_TIMEOUT_S` of
  the connection (first request) or of its first byte (later requests on a kept-alive
  connection): otherwise 408 (or a plain close if nothing came) and the connection is closed;
- a head larger than `CDR_RECEIVER_MAX_HEADER_BYTES` gets 431 and the connection is closed,
  having buffered at most one read (256 KiB) beyond the limit.

The body has its own deadline, in the app (`app._read_body`). So a stalled connection holds a
socket for a bounded time, and a bounded number of them cannot starve real senders.

uvicorn's access log is kept, without query strings: a token put in a URL stays out of logs.
"""

import json
import logging
from typing import Any

import uvicorn
from starlette.applications import Starlette
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from cdr_pipeline.config import Settings
from cdr_pipeline.receiver import auth
from cdr_pipeline.receiver.app import create_app

log = logging.getLogger(__name__)

_REASONS = {408: "Request Timeout", 431: "Request Header Fields Too Large"}


class _HeadTooLarge(Exception):
    pass


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline and a size limit for each request head."""

    head_timeout_s: float = 10.0
    max_head_bytes: int = 16 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0  # as received, while the head is incomplete
        self._parsed_head_bytes = 0  # request target and header lines, as parsed
        self._head_too_large = False
        self._head_timer: Any = None

    # A request head starts when the connection opens, and after each response.
    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm_head_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._in_head, self._head_bytes, self._parsed_head_bytes = True, 0, 0

    def data_received(self, data: bytes) -> None:
        if self._in_head and self._head_timer is None:
            self._arm_head_timer()  # the first byte of a request on a kept-alive connection
        super().data_received(data)
        if self._in_head and not self._head_too_large and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                self._refuse(431, "request head too large")

    def on_url(self, url: bytes) -> None:
        self._count_parsed(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_parsed(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._cancel_head_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        # uvicorn answers a parser error with 400; a head over the limit is a 431.
        if self._head_too_large:
            self._refuse(431, "request head too large")
        else:
            super().send_400_response(msg)

    def _count_parsed(self, size: int) -> None:
        self._parsed_head_bytes += size
        if self._parsed_head_bytes > self.max_head_bytes:
            self._head_too_large = True
            raise _HeadTooLarge  # stops the parser; uvicorn then calls send_400_response

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._in_head or self.transport.is_closing():
            return
        if self._head_bytes == 0:
            self.transport.close()  # not a byte of a request: nothing to answer
        else:
            self._refuse(408, "request head not received in time")

    def _refuse(self, status: int, what: str) -> None:
        self._head_too_large = self._head_too_large or status == 431
        limit = (
            f"{self.head_timeout_s:g} s (CDR_RECEIVER_REQUEST_TIMEOUT_S)"
            if status == 408
            else f"{self.max_head_bytes} bytes (CDR_RECEIVER_MAX_HEADER_BYTES)"
        )
        reason = f"{what}: the limit is {limit}"
        peer = self.client[0] if self.client else "?"
        log.warning("receiver: connection from %s closed with %d: %s", peer, status, reason)
        body = json.dumps({"status": "refused", "reason": reason}).encode()
        head = [f"HTTP/1.1 {status} {_REASONS[status]}".encode()]
        head += [name + b": " + value for name, value in self.server_state.default_headers]
        head += [
            b"content-type: application/json",
            b"content-length: " + str(len(body)).encode(),
            b"connection: close",
        ]
        self.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        self.transport.close()


def guarded_protocol(settings: Settings) -> type[GuardedHttpToolsProtocol]:
    """`GuardedHttpToolsProtocol` with the limits of `settings`."""
    return type(
        "GuardedHttpToolsProtocol",
        (GuardedHttpToolsProtocol,),
        {
            "head_timeout_s": float(settings.receiver_request_timeout_s),
            "max_head_bytes": settings.receiver_max_header_bytes,
        },
    )


class _NoQueryStrings(logging.Filter):
    """Drops the query string from uvicorn's access log lines (`client - "METHOD path" status`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            path, query, _ = args[2].partition("?")
            if query:
                record.args = (*args[:2], f"{path}?<query not logged>", *args[3:])
        return True


def keep_query_strings_out_of_logs() -> None:
    """Install the filter on uvicorn's access logger (once)."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, _NoQueryStrings) for f in access.filters):
        access.addFilter(_NoQueryStrings())


def uvicorn_config(
    app: Starlette,
    settings: Settings,
    *,
    host: str,
    port: int,
    forwarded_allow_ips: str | None = None,
    log_level: str = "info",
    **overrides: Any,
) -> uvicorn.Config:
    """The uvicorn configuration the receiver runs with (the tests run the same one)."""
    keep_query_strings_out_of_logs()
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": log_level,
        "http": guarded_protocol(settings),
        "proxy_headers": forwarded_allow_ips is not None,
        "forwarded_allow_ips": forwarded_allow_ips,
        "server_header": False,
        "timeout_graceful_shutdown": 10,
        "lifespan": "on",
        "log_config": None,  # keep the CLI's logging: one format for uvicorn and the receiver
        **overrides,
    }
    return uvicorn.Config(app, **options)


def serve(
    settings: Settings,
    host: str,
    port: int,
    *,
    forwarded_allow_ips: str | None = None,
    log_level: str = "info",
) -> None:
    """Run the receiver with uvicorn until interrupted (one process: one landing writer)."""
    credentials = auth.Credentials.from_env()
    auth.require_credentials(host, credentials, behind_proxy=forwarded_allow_ips is not None)
    # A server's start-up line and refusals belong in its log, however quiet the CLI is.
    logging.getLogger("cdr_pipeline.receiver").setLevel(logging.INFO)
    app = create_app(settings, credentials)
    config = uvicorn_config(
        app,
        settings,
        host=host,
        port=port,
        forwarded_allow_ips=forwarded_allow_ips,
        log_level=log_level,
    )
    uvicorn.Server(config).run()
