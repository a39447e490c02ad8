"""The Callr CDR export client: request, stream to disk atomically, retry, classify errors.

`CallrExportClient.fetch_export` asks `POST {base}/v2.0/calls/export` for one direction and one
half-open window and lands the CSV (decoded if it travelled gzip-encoded) at `dest`, byte for
byte as the server meant it; `fetch_exports` does that for both directions at once, the second
request starting once the first has been accepted:

- The body is streamed to a hidden temp file next to `dest` (`cdr_pipeline.durable`), checked
  against the announced Content-Length, and only then renamed over `dest`: a failed download
  never leaves a file that could be taken for a whole export.
- Transient failures are retried as `retry` decides; when the budget is spent,
  `CallrUnavailableError`. Other errors fail at once (`CallrAuthError`, `CallrRequestError`)
  with a message saying what to fix, and never the key (`credentials`).
"""

import datetime as dt
import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import httpx

from cdr_pipeline import durable
from cdr_pipeline.callr.credentials import (
    auth_headers,
    checked_api_key,
    checked_base_url,
    scrub,
)

# The errors and RetryPolicy are re-exported (`X as X`): callers import them from here too.
from cdr_pipeline.callr.errors import CallrAuthError as CallrAuthError
from cdr_pipeline.callr.errors import CallrError as CallrError
from cdr_pipeline.callr.errors import CallrRequestError as CallrRequestError
from cdr_pipeline.callr.errors import CallrUnavailableError as CallrUnavailableError
from cdr_pipeline.callr.responses import decoded_body, server_message
from cdr_pipeline.callr.retry import (
    DEFAULT_RETRY_POLICY,
    Transient,
    backoff_s,
    give_up_reason,
    is_transient_status,
    retry_after_s,
)
from cdr_pipeline.callr.retry import RetryPolicy as RetryPolicy
from cdr_pipeline.config import DEFAULT_BASE_URL, DEFAULT_CALLR_TIMEOUT_S
from cdr_pipeline.schema import DIRECTIONS

logger = logging.getLogger(__name__)

EXPORT_PATH = "/v2.0/calls/export"


@dataclass(frozen=True)
class ExportDownload:
    """One landed export file.

    Attributes:
        path: Where the CSV is (decoded, exactly the server's body).
        direction: `inbound` or `outbound`.
        bytes: Size of the file.
        sha256: Hex SHA-256 of the file.
        duration_s: Wall time of the whole fetch, retries and waits included.
        attempts: Requests made; retries = attempts - 1.
    """

    path: Path
    direction: str
    bytes: int
    sha256: str
    duration_s: float
    attempts: int

    @property
    def retries(self) -> int:
        """Requests made beyond the first."""
        return self.attempts - 1


class CallrExportClient:
    """Downloads Callr CDR exports to disk (see the module docstring for the guarantees).

    Use as a context manager, or call `close()`:

        with CallrExportClient("https://api.callr.com", key) as client:
            client.fetch_export("outbound", start, end, Path("raw/outbound.csv"))
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        retry: RetryPolicy = DEFAULT_RETRY_POLICY,
        timeout_s: float = DEFAULT_CALLR_TIMEOUT_S,
        account_sid: str | None = None,
    ) -> None:
        """Create a client.

        Args:
            base_url: The API root (CALLR_BASE_URL), e.g. `https://api.callr.com`.
            api_key: The API key (CALLR_API_KEY); sent as `x-api-key`, or as the HTTP Basic
                password when `account_sid` is given.
            retry: The retry policy.
            timeout_s: Connect, read and write timeout of each request, in seconds.
            account_sid: Callr account SID, to authenticate with HTTP Basic instead.

        Raises:
            CallrAuthError: The key is empty or cannot be sent in an HTTP header.
            CallrRequestError: base_url is not an http(s) URL, or carries credentials.
        """
        key = checked_api_key(api_key)
        self._api_key = key
        self._account_sid = account_sid or None
        self._base_url = checked_base_url(base_url)
        self._url = self._base_url + EXPORT_PATH
        self._retry = retry
        self._jitter = random.Random()
        self._auth_headers, self._secrets = auth_headers(key, self._account_sid)
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout_s),
            follow_redirects=False,
            headers={
                "Accept": "text/csv",
                "Accept-Encoding": "gzip",
                "User-Agent": "cdr-pipeline (httpx)",
            },
        )

    def __repr__(self) -> str:
        auth = "basic" if self._account_sid else "x-api-key"
        return f"CallrExportClient(base_url={self._base_url!r}, auth={auth!r}, api_key='***')"

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("CallrExportClient holds the API key and cannot be pickled")

    def __enter__(self) -> "CallrExportClient":
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def fetch_exports(
        self, dests: dict[str, Path], start: dt.datetime, end: dt.datetime
    ) -> list[ExportDownload]:
        """Download several directions' exports of [start, end) concurrently, each atomically.

        The first direction's request goes alone; the others start once it has been answered
        with a 2xx status. So a bad key or URL still costs one request and one error, and the
        downloads overlap: decoding gzip, hashing and writing release the GIL, so two exports
        land in about the time of one on two cores. Each download retries on its own.

        Args:
            dests: direction -> the file to create or replace, in request order.
            start: See `fetch_export`.
            end: See `fetch_export`.

        Returns:
            The downloads, in the order of `dests`.

        Raises:
            Whatever `fetch_export` raises; the first failure, after every started download has
            finished (a failed one leaves its file untouched).
        """
        if not dests:
            return []
        (first, first_dest), *others = dests.items()
        answered = threading.Event()
        with ThreadPoolExecutor(len(dests), thread_name_prefix="callr-export") as pool:
            leading = pool.submit(
                self.fetch_export, first, start, end, first_dest, on_accepted=answered.set
            )
            leading.add_done_callback(lambda _: answered.set())
            answered.wait()
            if leading.done():
                leading.result()  # raises the first request's error; nothing else was asked
            following = [pool.submit(self.fetch_export, d, start, end, p) for d, p in others]
            wait([leading, *following])
        return [future.result() for future in (leading, *following)]

    def fetch_export(
        self,
        direction: str,
        start: dt.datetime,
        end: dt.datetime,
        dest: Path,
        *,
        on_accepted: Callable[[], None] | None = None,
    ) -> ExportDownload:
        """Download the `direction` export of [start, end) to `dest`, atomically.

        Args:
            direction: `inbound` or `outbound`.
            start: Tz-aware start of the window (sent as UTC `from`).
            end: Tz-aware end of the window, excluded (sent as UTC `to`).
            dest: The file to create or replace; its folder is created if needed.
            on_accepted: Called when a response arrives with a 2xx status, before its body is
                read (again if that attempt fails and a retry is answered 2xx too).

        Returns:
            What was landed, with its size, hash, duration and attempts.

        Raises:
            ValueError: Bad direction, naive datetimes or an empty window.
            CallrAuthError: The key was rejected (401) or not allowed (403).
            CallrRequestError: The request was refused (400), the URL is wrong (404), ...
            CallrUnavailableError: Retries exhausted; `dest` is untouched.
        """
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        for name, moment in (("start", start), ("end", end)):
            if moment.tzinfo is None or moment.utcoffset() is None:
                raise ValueError(f"{name} must be a timezone-aware datetime, got {moment!r}")
        if not start < end:
            raise ValueError(f"start {start.isoformat()} must be before end {end.isoformat()}")
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        params = {"direction": direction, "from": _iso_utc(start), "to": _iso_utc(end)}
        what = f"Callr {direction} export {params['from']}..{params['to']}"
        policy = self._retry
        began = time.monotonic()
        deadline = began + policy.max_total_s
        attempt = 0
        while True:
            attempt += 1
            try:
                size, digest = self._download(params, dest, on_accepted)
            except Transient as failure:
                last = failure
            else:
                elapsed = time.monotonic() - began
                logger.info(
                    "%s: %d bytes in %.2f s (%d attempt%s)",
                    what,
                    size,
                    elapsed,
                    attempt,
                    "" if attempt == 1 else "s",
                )
                return ExportDownload(dest, direction, size, digest, elapsed, attempt)

            delay = backoff_s(policy, attempt, last, self._jitter)
            reason = give_up_reason(policy, attempt, last, delay, deadline - time.monotonic())
            if reason is not None:
                break
            logger.warning(
                "%s: attempt %d/%d failed (%s); retrying in %.2f s",
                what,
                attempt,
                policy.max_attempts,
                last.cause,
                delay,
            )
            time.sleep(delay)

        elapsed = time.monotonic() - began
        if last.status is None:
            advice = f"check that CALLR_BASE_URL ({self._base_url}) is reachable, or retry later"
        else:
            advice = f"the Callr API at {self._base_url} is unavailable or overloaded: retry later"
        raise CallrUnavailableError(
            f"{what} failed after {attempt} attempt{'' if attempt == 1 else 's'} in "
            f"{elapsed:.1f} s (last: {last.cause}); {reason}. {advice}",
            attempts=attempt,
            last_cause=last.cause,
            status=last.status,
        )

    # --- one attempt --------------------------------------------------------------------------

    def _download(
        self, params: dict[str, str], dest: Path, on_accepted: Callable[[], None] | None
    ) -> tuple[int, str]:
        """One request; the file's size and sha256, or Transient / CallrError."""
        try:
            with self._http.stream(
                "POST", self._url, params=params, headers=self._auth_headers
            ) as response:
                self._check_status(response, params)
                if on_accepted is not None:
                    on_accepted()
                return self._save(response, dest)
        except httpx.TimeoutException as exc:
            raise Transient(f"timed out ({type(exc).__name__})") from None
        except httpx.RemoteProtocolError as exc:
            raise Transient(f"connection dropped or body truncated ({self._scrub(exc)})") from None
        except httpx.NetworkError as exc:
            raise Transient(
                f"connection error ({type(exc).__name__}: {self._scrub(exc)})"
            ) from None
        except httpx.DecodingError as exc:
            raise Transient(f"undecodable body ({self._scrub(exc)})") from None
        except (httpx.UnsupportedProtocol, httpx.LocalProtocolError, httpx.InvalidURL) as exc:
            raise CallrRequestError(
                f"cannot send the export request to {self._base_url} ({self._scrub(exc)}): "
                f"check CALLR_BASE_URL, or unset it to use {DEFAULT_BASE_URL}"
            ) from None
        except httpx.TransportError as exc:  # e.g. a proxy failing: transient as far as we know
            raise Transient(f"transport error ({type(exc).__name__}: {self._scrub(exc)})") from None

    def _check_status(self, response: httpx.Response, params: dict[str, str]) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        phrase = f"HTTP {status} {response.reason_phrase}".rstrip()
        message = server_message(response, self._scrub)
        said = f"; the server said: {message}" if message else ""
        if is_transient_status(status):
            wait_s = retry_after_s(response.headers.get("retry-after"))
            raise Transient(phrase, status=status, retry_after_s=wait_s)
        if status == 401:
            how = "account SID and key (HTTP Basic)" if self._account_sid else "key"
            hint = (
                f"check the {how}"
                if self._base_url == DEFAULT_BASE_URL
                else f"check the {how}, or unset CALLR_BASE_URL ({self._base_url}) "
                f"to use {DEFAULT_BASE_URL}"
            )
            raise CallrAuthError(
                f"CALLR_API_KEY was rejected by the Callr API (HTTP 401): {hint}", status=status
            )
        if status == 403:
            raise CallrAuthError(
                "CALLR_API_KEY was refused by the Callr API (HTTP 403): the key is valid but "
                f"not allowed to export CDRs; grant it that right in the Callr customer portal "
                f"or use another key{said}",
                status=status,
            )
        request = f"POST {self._url}?direction={params['direction']}&from={params['from']}"
        request += f"&to={params['to']}"
        if status == 400:
            raise CallrRequestError(
                f"the Callr API refused the export request (HTTP 400){said}. "
                f"The request was {request}",
                status=status,
            )
        if status == 404:
            raise CallrRequestError(
                f"the Callr API has no export endpoint at {self._url} (HTTP 404): "
                f"CALLR_BASE_URL ({self._base_url}) is probably wrong; unset it to use "
                f"{DEFAULT_BASE_URL}",
                status=status,
            )
        if 300 <= status < 400:
            location = self._scrub(response.headers.get("location", "?"))
            raise CallrRequestError(
                f"the Callr API at {self._base_url} redirects the export to {location} "
                f"({phrase}): set CALLR_BASE_URL to the API's current address",
                status=status,
            )
        raise CallrRequestError(
            f"the Callr API answered {phrase} to {request}{said}: check CALLR_BASE_URL",
            status=status,
        )

    def _save(self, response: httpx.Response, dest: Path) -> tuple[int, str]:
        """Stream the body to a temp file beside dest, check it is whole, rename it over dest."""
        digest = hashlib.sha256()
        size = 0
        with durable.writing(dest) as out:
            for chunk in decoded_body(response):
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
            announced = response.headers.get("content-length", "")
            received = response.num_bytes_downloaded
            if announced.isdigit() and received != int(announced):
                raise Transient(f"truncated body ({received} of {announced} bytes)")
        return size, digest.hexdigest()

    def _scrub(self, text: object) -> str:
        """`text` with every form of the key replaced by ***."""
        return scrub(text, self._secrets)


def _iso_utc(moment: dt.datetime) -> str:
    """`2026-11-02T00:00:00Z` (microseconds kept when present)."""
    return moment.astimezone(dt.UTC).replace(tzinfo=None).isoformat() + "Z"
