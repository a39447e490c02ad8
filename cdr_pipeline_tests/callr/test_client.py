"""The Callr export client against the simulator, over real HTTP on loopback (no mocks)."""

import datetime as dt
import gzip
import hashlib
import http.server
import logging
import socket
import threading
import time
import traceback
from pathlib import Path

import pytest

from cdr_pipeline.callr.client import (
    CallrAuthError,
    CallrExportClient,
    CallrRequestError,
    CallrUnavailableError,
    RetryPolicy,
)
from cdr_pipeline.callr.simulator import Fault, SimulatorServer, generate_export

START = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
END = START + dt.timedelta(days=1)
FAST = RetryPolicy(max_attempts=4, base_delay_s=0.01, max_delay_s=0.05, max_total_s=20.0)
LEAKY_KEY = "callr-live-7Qz9XkLm2PwR4tYv"  # a wrong key that must never show up anywhere


def make_client(sim: SimulatorServer, **kwargs: object) -> CallrExportClient:
    options: dict = {"retry": FAST, "timeout_s": 5.0} | kwargs
    key = options.pop("api_key", sim.api_key)
    base_url = options.pop("base_url", sim.base_url)
    return CallrExportClient(base_url, key, **options)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def both_directions(folder: Path) -> dict[str, Path]:
    """`fetch_exports` destinations: inbound first, as the pipeline asks."""
    return {"inbound": folder / "in.csv", "outbound": folder / "out.csv"}


def expected_body(direction: str = "outbound") -> bytes:
    return generate_export(START, END, direction)


def test_fetch_lands_the_decoded_body_via_gzip(simulator: SimulatorServer, tmp_path: Path):
    dest = tmp_path / "raw" / "outbound.csv"
    with make_client(simulator) as client:
        download = client.fetch_export("outbound", START, END, dest)

    body = expected_body()
    served = simulator.requests[-1]
    assert served.content_encoding == "gzip"
    assert 0 < served.body_bytes < len(body)  # compressed on the wire
    assert dest.read_bytes() == body
    assert download.path == dest
    assert download.bytes == len(body)
    assert download.sha256 == hashlib.sha256(body).hexdigest()
    assert (download.attempts, download.retries, download.direction) == (1, 0, "outbound")
    assert served.query == {
        "direction": "outbound",
        "from": "2026-11-02T00:00:00Z",
        "to": "2026-11-03T00:00:00Z",
    }
    assert leftovers(dest.parent) == ["outbound.csv"]


def test_fetch_without_gzip_and_with_basic_auth(tmp_path: Path):
    with (
        SimulatorServer(api_key="basic-key-1234", compress=False) as sim,
        make_client(sim, account_sid="ACsid42") as client,
    ):
        download = client.fetch_export("inbound", START, END, tmp_path / "in.csv")
        assert sim.requests[-1].content_encoding is None
    assert download.path.read_bytes() == expected_body("inbound")


def test_fetch_replaces_an_existing_file(simulator: SimulatorServer, tmp_path: Path):
    dest = tmp_path / "outbound.csv"
    dest.write_bytes(b"stale")
    with make_client(simulator) as client:
        client.fetch_export("outbound", START, END, dest)
    assert dest.read_bytes() == expected_body()
    assert leftovers(tmp_path) == ["outbound.csv"]


def test_fetch_exports_overlaps_the_directions_once_the_first_is_accepted(
    simulator: SimulatorServer, tmp_path: Path
):
    simulator.inject(Fault.slow_body(1.0))  # the first answer's body takes a second
    dests = both_directions(tmp_path)
    with make_client(simulator) as client:
        downloads = client.fetch_exports(dests, START, END)

    assert [d.direction for d in downloads] == ["inbound", "outbound"]
    for download in downloads:
        assert download.path == dests[download.direction]
        assert download.path.read_bytes() == expected_body(download.direction)
    first, second = simulator.requests
    assert (first.query["direction"], first.fault) == ("inbound", "slow_body")
    assert first.finished_s is not None
    assert second.arrived_s < first.finished_s  # asked while the first body was still coming
    assert leftovers(tmp_path) == ["in.csv", "out.csv"]


def test_fetch_exports_with_a_rejected_key_sends_one_request(
    simulator: SimulatorServer, tmp_path: Path
):
    dests = both_directions(tmp_path)
    with (
        make_client(simulator, api_key=LEAKY_KEY) as client,
        pytest.raises(CallrAuthError, match="HTTP 401") as caught,
    ):
        client.fetch_exports(dests, START, END)
    assert LEAKY_KEY not in str(caught.value)
    assert [r.status for r in simulator.requests] == [401]
    assert leftovers(tmp_path) == []


def test_fetch_exports_when_the_first_is_unavailable_never_asks_for_the_second(
    simulator: SimulatorServer, tmp_path: Path
):
    simulator.inject(*[Fault.status(503)] * FAST.max_attempts)
    dests = both_directions(tmp_path)
    with make_client(simulator) as client, pytest.raises(CallrUnavailableError):
        client.fetch_exports(dests, START, END)
    assert {r.query["direction"] for r in simulator.requests} == {"inbound"}
    assert len(simulator.requests) == FAST.max_attempts
    assert leftovers(tmp_path) == []


def test_fetch_exports_when_the_second_fails_keeps_the_first_and_raises(
    simulator: SimulatorServer, tmp_path: Path
):
    # The first answer is slow, so the second direction's attempts take the 503s.
    simulator.inject(Fault.slow_body(0.5), *[Fault.status(503)] * FAST.max_attempts)
    dests = both_directions(tmp_path)
    with make_client(simulator) as client, pytest.raises(CallrUnavailableError, match="outbound"):
        client.fetch_exports(dests, START, END)
    assert (tmp_path / "in.csv").read_bytes() == expected_body("inbound")
    assert leftovers(tmp_path) == ["in.csv"]  # no partial file of the failed one


def test_429_with_retry_after_seconds_is_honoured(simulator: SimulatorServer, tmp_path: Path):
    simulator.inject(Fault.status(429, retry_after="1"))
    began = time.monotonic()
    with make_client(simulator) as client:
        download = client.fetch_export("outbound", START, END, tmp_path / "out.csv")
    assert time.monotonic() - began >= 0.95
    assert download.attempts == 2
    assert download.path.read_bytes() == expected_body()


def test_429_with_retry_after_http_date_is_honoured(simulator: SimulatorServer, tmp_path: Path):
    # HTTP-dates have whole seconds: "now + 2 s" written down is 1 to 2 s away.
    simulator.inject(
        Fault.status(429, retry_after_http_date=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2))
    )
    began = time.monotonic()
    with make_client(simulator) as client:
        download = client.fetch_export("outbound", START, END, tmp_path / "out.csv")
    assert time.monotonic() - began >= 0.9
    assert download.attempts == 2
    assert download.path.read_bytes() == expected_body()


def test_retry_after_beyond_the_budget_gives_up_at_once(simulator: SimulatorServer, tmp_path: Path):
    simulator.inject(Fault.status(429, retry_after="3600"))
    policy = RetryPolicy(max_attempts=5, base_delay_s=0.01, max_total_s=10.0)
    began = time.monotonic()
    with (
        make_client(simulator, retry=policy) as client,
        pytest.raises(CallrUnavailableError) as err,
    ):
        client.fetch_export("outbound", START, END, tmp_path / "out.csv")
    assert time.monotonic() - began < 5
    assert simulator.request_count == 1
    assert err.value.attempts == 1
    assert "Retry-After" in str(err.value) and "HTTP 429" in str(err.value)
    assert leftovers(tmp_path) == []


def test_503_then_success_logs_one_line_per_retry(
    simulator: SimulatorServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    simulator.inject(Fault.status(503), Fault.status(502))
    with (
        caplog.at_level(logging.WARNING, logger="cdr_pipeline.callr.client"),
        make_client(simulator) as client,
    ):
        download = client.fetch_export("outbound", START, END, tmp_path / "out.csv")
    assert download.attempts == 3
    assert download.path.read_bytes() == expected_body()
    retries = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
    assert len(retries) == 2
    assert "attempt 1/4" in retries[0] and "HTTP 503" in retries[0]
    assert "attempt 2/4" in retries[1] and "HTTP 502" in retries[1]


@pytest.mark.parametrize("compress", [True, False], ids=["gzip", "identity"])
def test_truncated_body_is_retried(tmp_path: Path, compress: bool):
    with SimulatorServer(compress=compress) as sim, make_client(sim) as client:
        sim.inject(Fault.truncate(0.5), Fault.truncate(0.0), Fault.drop())
        download = client.fetch_export("outbound", START, END, tmp_path / "out.csv")
        assert [r.fault for r in sim.requests] == ["truncate", "truncate", "drop", None]
        assert sim.requests[0].body_bytes < sim.requests[-1].body_bytes
    assert download.attempts == 4
    assert download.path.read_bytes() == expected_body()
    assert leftovers(tmp_path) == ["out.csv"]


def test_corrupt_gzip_body_is_retried(simulator: SimulatorServer, tmp_path: Path):
    simulator.inject(Fault.corrupt())
    with make_client(simulator) as client:
        download = client.fetch_export("outbound", START, END, tmp_path / "out.csv")
    assert [(r.fault, r.content_encoding) for r in simulator.requests] == [
        ("corrupt", "gzip"),
        (None, "gzip"),
    ]
    assert download.attempts == 2
    assert download.path.read_bytes() == expected_body()
    assert leftovers(tmp_path) == ["out.csv"]


def test_corrupt_gzip_every_time_fails_clearly(simulator: SimulatorServer, tmp_path: Path):
    simulator.inject(*[Fault.corrupt()] * FAST.max_attempts)
    with make_client(simulator) as client, pytest.raises(CallrUnavailableError) as caught:
        client.fetch_export("outbound", START, END, tmp_path / "out.csv")
    assert "undecodable body (gzip" in str(caught.value)
    assert leftovers(tmp_path) == []


def test_concatenated_gzip_members_are_all_decoded(tmp_path: Path):
    # RFC 1952 allows several members in one gzip stream; some servers emit one per chunk.
    body = expected_body()
    middle = len(body) // 2
    encoded = gzip.compress(body[:middle]) + gzip.compress(body[middle:])

    class OneExport(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_response(200)
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(encoded)))
            self.end_headers()
            self.wfile.write(encoded)

        def log_message(self, *args: object) -> None:
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), OneExport) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base_url = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            with CallrExportClient(base_url, "any-key", retry=FAST) as client:
                download = client.fetch_export("outbound", START, END, tmp_path / "out.csv")
        finally:
            server.shutdown()
    assert download.path.read_bytes() == body


def test_slow_answer_times_out_then_succeeds(simulator: SimulatorServer, tmp_path: Path):
    simulator.inject(Fault.slow(1.5))
    with make_client(simulator, timeout_s=0.3) as client:
        download = client.fetch_export("outbound", START, END, tmp_path / "out.csv")
    assert download.attempts == 2
    assert download.path.read_bytes() == expected_body()


def test_exhausted_retries_leave_no_file(simulator: SimulatorServer, tmp_path: Path):
    simulator.inject(Fault.status(503), Fault.truncate(0.3), Fault.status(503), Fault.drop())
    dest = tmp_path / "day" / "outbound.csv"
    with make_client(simulator) as client, pytest.raises(CallrUnavailableError) as err:
        client.fetch_export("outbound", START, END, dest)
    assert simulator.request_count == 4
    assert err.value.attempts == 4
    assert "4 attempts" in str(err.value)
    assert "connection dropped" in err.value.last_cause
    assert leftovers(dest.parent) == []


def test_failed_fetch_keeps_the_previous_file(simulator: SimulatorServer, tmp_path: Path):
    dest = tmp_path / "outbound.csv"
    dest.write_bytes(b"yesterday's complete export\n")
    simulator.inject(*[Fault.truncate(0.9)] * FAST.max_attempts)
    with make_client(simulator) as client, pytest.raises(CallrUnavailableError):
        client.fetch_export("outbound", START, END, dest)
    assert dest.read_bytes() == b"yesterday's complete export\n"
    assert leftovers(tmp_path) == ["outbound.csv"]


def test_total_time_budget_bounds_retries(simulator: SimulatorServer, tmp_path: Path):
    simulator.inject(*[Fault.status(503)] * 50)
    policy = RetryPolicy(max_attempts=50, base_delay_s=0.2, max_delay_s=0.2, max_total_s=0.5)
    began = time.monotonic()
    with (
        make_client(simulator, retry=policy) as client,
        pytest.raises(CallrUnavailableError) as err,
    ):
        client.fetch_export("outbound", START, END, tmp_path / "out.csv")
    assert time.monotonic() - began < 2
    assert 1 <= err.value.attempts < 50
    assert "retry budget" in str(err.value)


def test_connection_refused_is_retried_then_unavailable(tmp_path: Path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    policy = RetryPolicy(max_attempts=2, base_delay_s=0.01)
    with (
        CallrExportClient(f"http://127.0.0.1:{port}", "k-123456", retry=policy) as client,
        pytest.raises(CallrUnavailableError) as err,
    ):
        client.fetch_export("outbound", START, END, tmp_path / "out.csv")
    assert err.value.attempts == 2
    assert "connection error" in str(err.value)


def test_rejected_key_fails_at_once_and_never_leaks(
    simulator: SimulatorServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)  # every logger, httpx and httpcore included
    client = make_client(simulator, api_key=LEAKY_KEY)
    with client, pytest.raises(CallrAuthError) as err:
        client.fetch_export("outbound", START, END, tmp_path / "out.csv")

    assert simulator.request_count == 1
    assert err.value.status == 401
    message = str(err.value)
    assert "CALLR_API_KEY" in message and "HTTP 401" in message and "CALLR_BASE_URL" in message
    everything = [
        message,
        repr(err.value),
        "".join(traceback.format_exception(err.value)),
        repr(client),
        str(client),
        caplog.text,
        repr(simulator.requests),
    ]
    assert caplog.records  # httpx did log the request
    assert all(LEAKY_KEY not in text for text in everything)
    assert leftovers(tmp_path) == []
    assert not any(LEAKY_KEY.encode() in p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())


def test_rejected_basic_auth_and_forced_401(simulator: SimulatorServer, tmp_path: Path):
    with make_client(simulator, api_key=LEAKY_KEY, account_sid="ACsid42") as client:
        with pytest.raises(CallrAuthError, match="HTTP Basic") as err:
            client.fetch_export("outbound", START, END, tmp_path / "out.csv")
        assert LEAKY_KEY not in str(err.value)
    simulator.inject(Fault.bad_key())
    with make_client(simulator) as client, pytest.raises(CallrAuthError, match="CALLR_API_KEY"):
        client.fetch_export("outbound", START, END, tmp_path / "out.csv")
    assert simulator.request_count == 2


def test_403_fails_at_once(simulator: SimulatorServer, tmp_path: Path):
    simulator.inject(Fault.status(403, body="CDR export not enabled for this key"))
    with make_client(simulator) as client, pytest.raises(CallrAuthError) as err:
        client.fetch_export("outbound", START, END, tmp_path / "out.csv")
    assert simulator.request_count == 1
    assert "HTTP 403" in str(err.value) and "CDR export not enabled" in str(err.value)


def test_400_shows_the_server_message_without_the_key(simulator: SimulatorServer, tmp_path: Path):
    echo = f"invalid request (api key {simulator.api_key}): " + "x" * 1000
    simulator.inject(Fault.status(400, body=echo))
    with make_client(simulator) as client, pytest.raises(CallrRequestError) as err:
        client.fetch_export("outbound", START, END, tmp_path / "out.csv")
    message = str(err.value)
    assert simulator.request_count == 1
    assert "refused the export request (HTTP 400)" in message
    assert "invalid request (api key ***)" in message
    assert simulator.api_key not in message
    assert len(message) < 700  # the server's text is truncated


def test_400_from_the_simulator_itself(simulator: SimulatorServer, tmp_path: Path):
    # The simulator numbers calls until 2149: later windows are refused like a bad request.
    start = dt.datetime(2200, 1, 1, tzinfo=dt.UTC)
    with make_client(simulator) as client, pytest.raises(CallrRequestError) as err:
        client.fetch_export("inbound", start, start + dt.timedelta(days=1), tmp_path / "x.csv")
    assert simulator.request_count == 1
    assert "HTTP 400" in str(err.value) and "2149" in str(err.value)


def test_404_blames_the_base_url(simulator: SimulatorServer, tmp_path: Path):
    with (
        make_client(simulator, base_url=simulator.base_url + "/api") as client,
        pytest.raises(CallrRequestError) as err,
    ):
        client.fetch_export("outbound", START, END, tmp_path / "out.csv")
    assert simulator.request_count == 1
    assert err.value.status == 404
    assert "CALLR_BASE_URL" in str(err.value) and "probably wrong" in str(err.value)


@pytest.mark.parametrize(
    ("direction", "start", "end", "match"),
    [
        ("sideways", START, END, "direction"),
        ("inbound", START.replace(tzinfo=None), END, "timezone-aware"),
        ("inbound", END, START, "before"),
        ("inbound", START, START, "before"),
    ],
)
def test_bad_arguments_fail_before_any_request(
    simulator: SimulatorServer, tmp_path: Path, direction, start, end, match
):
    with make_client(simulator) as client, pytest.raises(ValueError, match=match):
        client.fetch_export(direction, start, end, tmp_path / "out.csv")
    assert simulator.request_count == 0


def test_bad_settings_are_named():
    with pytest.raises(CallrAuthError, match="CALLR_API_KEY is not set"):
        CallrExportClient("https://api.callr.com", "")
    with pytest.raises(CallrAuthError, match="CALLR_API_KEY contains") as err:
        CallrExportClient("https://api.callr.com", "secret key")
    assert "secret key" not in str(err.value)
    with pytest.raises(CallrRequestError, match="CALLR_BASE_URL must be an http"):
        CallrExportClient("api.callr.com", "k-123456")
    with pytest.raises(CallrRequestError, match="must not contain credentials") as err:
        CallrExportClient("https://user:hunter2@api.callr.com", "k-123456")
    assert "hunter2" not in str(err.value)


def test_fetch_window_with_offset_is_sent_in_utc(simulator: SimulatorServer, tmp_path: Path):
    paris = dt.timezone(dt.timedelta(hours=1))
    start = dt.datetime(2026, 11, 2, tzinfo=paris)
    with make_client(simulator) as client:
        download = client.fetch_export(
            "inbound", start, start + dt.timedelta(days=1), tmp_path / "p.csv"
        )
    assert simulator.requests[-1].query["from"] == "2026-11-01T23:00:00Z"
    assert download.path.read_bytes() == generate_export(
        start, start + dt.timedelta(days=1), "inbound"
    )
