"""Injected misbehaviours of the fake API: error statuses, slow or broken answers, a bad key."""

import datetime as dt
from dataclasses import dataclass
from email.utils import format_datetime


@dataclass(frozen=True)
class Fault:
    """One injected misbehaviour, consumed by the next request (see SimulatorServer.inject).

    Build them with the class methods: `Fault.status(429, retry_after="1")`, `Fault.slow(2.0)`,
    `Fault.slow_body(1.0)`, `Fault.truncate(0.5)`, `Fault.corrupt()`, `Fault.drop()`,
    `Fault.bad_key()`.
    """

    kind: str
    code: int = 0
    retry_after: str | None = None
    body: str | None = None
    seconds: float = 0.0
    fraction: float = 1.0

    @classmethod
    def status(
        cls,
        code: int,
        *,
        retry_after: str | None = None,
        retry_after_http_date: dt.datetime | None = None,
        body: str | None = None,
    ) -> "Fault":
        """Answer with HTTP `code` (and a JSON error body unless `body` is given).

        Args:
            code: The HTTP status, e.g. 429 or 503.
            retry_after: A `Retry-After` header value as sent, e.g. `"1"`.
            retry_after_http_date: A `Retry-After` header in HTTP-date form, from this instant.
            body: The response body text instead of the default JSON error.
        """
        if retry_after_http_date is not None:
            retry_after = format_datetime(retry_after_http_date.astimezone(dt.UTC), usegmt=True)
        return cls("status", code=code, retry_after=retry_after, body=body)

    @classmethod
    def slow(cls, seconds: float) -> "Fault":
        """Wait `seconds` before answering normally (to exceed a client's read timeout)."""
        return cls("slow", seconds=seconds)

    @classmethod
    def slow_body(cls, seconds: float) -> "Fault":
        """Answer at once, but spread the body over `seconds` (a slow link)."""
        return cls("slow_body", seconds=seconds)

    @classmethod
    def corrupt(cls) -> "Fault":
        """Send the whole body with 16 bytes in its middle inverted (a broken gzip stream)."""
        return cls("corrupt")

    @classmethod
    def truncate(cls, fraction: float = 0.5) -> "Fault":
        """Announce the full Content-Length, send only `fraction` of the body, then close."""
        if not 0 <= fraction < 1:
            raise ValueError("fraction must be in [0, 1)")
        return cls("truncate", fraction=fraction)

    @classmethod
    def drop(cls) -> "Fault":
        """Close the connection without answering."""
        return cls("drop")

    @classmethod
    def bad_key(cls) -> "Fault":
        """Answer 401 as if the key were wrong."""
        return cls("bad_key")
