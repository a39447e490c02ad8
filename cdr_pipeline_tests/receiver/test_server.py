"""The receiver's server under slow and oversized requests, over raw TCP to the real CLI process.

Regression: connections that sent nothing, half a request line, slow headers or a body shorter
than its Content-Length stayed open for ever, and a 20 MB header was parsed.
"""

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from cdr_pipeline_tests.support.receiver import (
    WEBHOOK_URL,
    ReceiverProcess,
    encode,
    landed,
    sample_cdr,
    signed_headers,
    webhook_event,
)

TIMEOUT_S = 1  # CDR_RECEIVER_REQUEST_TIMEOUT_S for these tests
WAIT_S = 8  # how long a test waits for the server to end a connection (timeout + slack)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReceiverProcess]:
    data_dir = tmp_path_factory.mktemp("server")
    process = ReceiverProcess(
        data_dir,
        data_dir / "receiver.log",
        CDR_RECEIVER_REQUEST_TIMEOUT_S=str(TIMEOUT_S),
        CDR_RECEIVER_MAX_HEADER_BYTES="8192",
    )
    with process:
        yield process


def _connect(server: ReceiverProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=WAIT_S)
    return sock


def _read_until_closed(sock: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took.

    Raises `TimeoutError` if the connection is still open after WAIT_S.
    """
    started = time.monotonic()
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        received += chunk
    return received, time.monotonic() - started


def _request_head(content_length: int, extra: str = "") -> bytes:
    return (
        f"POST {WEBHOOK_URL} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {content_length}\r\n{extra}\r\n"
    ).encode()


@pytest.mark.parametrize(
    "sent",
    [b"", b"POST /callr/web", b"POST /callr/webhook HTTP/1.1\r\nHost: x\r\n"],
    ids=["nothing", "half-request-line", "unfinished-headers"],
)
def test_a_stalled_request_head_is_closed(server: ReceiverProcess, sent: bytes):
    with _connect(server) as sock:
        sock.sendall(sent)
        answer, waited = _read_until_closed(sock)
    assert waited < WAIT_S
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer[:200]


def test_headers_dripped_slowly_are_cut_off(server: ReceiverProcess):
    # A header line every 0.2 s never finishes the head: the deadline is for the whole head.
    with _connect(server) as sock:
        sock.sendall(b"POST /callr/webhook HTTP/1.1\r\n")
        stop = threading.Event()

        def drip() -> None:
            for i in range(int(WAIT_S / 0.2)):
                if stop.wait(0.2):
                    return
                try:
                    sock.sendall(f"X-Drip-{i}: 1\r\n".encode())
                except OSError:
                    return

        dripper = threading.Thread(target=drip, daemon=True)
        dripper.start()
        answer, waited = _read_until_closed(sock)
        stop.set()
        dripper.join()
    assert waited < WAIT_S
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408")


def test_a_body_shorter_than_its_content_length_gets_408(server: ReceiverProcess):
    body = encode(webhook_event(sample_cdr(1)))
    with _connect(server) as sock:
        sock.sendall(_request_head(len(body) + 100) + body)
        answer, waited = _read_until_closed(sock)
    assert waited < WAIT_S
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"body" in answer


def test_an_oversized_header_is_refused_without_being_parsed(server: ReceiverProcess):
    with _connect(server) as sock:
        head = _request_head(2, "X-Big: " + "a" * 1_000_000 + "\r\n")
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(head + b"{}")  # the server may close before reading it all
        answer, waited = _read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert waited < WAIT_S


def test_slow_sockets_do_not_starve_real_senders(server: ReceiverProcess):
    slow: list[socket.socket] = []
    body = encode(webhook_event(sample_cdr(9)))
    try:
        for i in range(200):  # 200 stalled connections of four kinds
            sock = _connect(server)
            sock.sendall(
                [b"", b"POST /cal", _request_head(10), _request_head(len(body) + 5) + body][i % 4]
            )
            slow.append(sock)
        with landed(server.data_dir) as before:
            count_before = len(before)
        with httpx.Client(base_url=server.base_url, timeout=WAIT_S) as client:
            statuses = []
            for i in range(50):
                event = encode(webhook_event(sample_cdr(70_000 + i), event_id=f"starve-{i}"))
                response = client.post(WEBHOOK_URL, content=event, headers=signed_headers(event))
                statuses.append(response.status_code)
        assert statuses == [200] * 50
        with landed(server.data_dir) as after:
            assert len(after) == count_before + 50
        # ...and the server ended every stalled connection on its own.
        for sock in slow:
            _read_until_closed(sock)
    finally:
        for sock in slow:
            sock.close()
