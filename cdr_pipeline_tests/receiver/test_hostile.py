"""Hostile and careless senders cost one request, never the receiver: regression tests.

Each test names the bug it pins. All of them talk HTTP (or raw TCP) to a real server on
127.0.0.1 and read the real landing store.
"""

import concurrent.futures
import time
from pathlib import Path

import httpx
import pytest

from cdr_pipeline.receiver import auth
from cdr_pipeline_tests.support.receiver import (
    PUSH_URL,
    SECRET,
    TOKEN,
    WEBHOOK_URL,
    ReceiverProcess,
    ThreadedReceiver,
    bearer_headers,
    encode,
    landed,
    sample_cdr,
    settings_for,
    signed_headers,
    webhook_event,
)


def _post(server, path: str, body: bytes, headers: dict, **kw) -> httpx.Response:
    return httpx.post(server.base_url + path, content=body, headers=headers, timeout=30, **kw)


# --- 1. a timestamp header of 400 digits raised OverflowError: 500 before any credential check --


@pytest.mark.parametrize(
    "env",
    [
        {"CDR_WEBHOOK_FORMAT": "timestamped"},
        {"CDR_WEBHOOK_TIMESTAMP_HEADER": "X-Callr-Timestamp"},
    ],
    ids=["timestamped-format", "callr-format-with-timestamp-header"],
)
@pytest.mark.parametrize("timestamp", ["1" + "0" * 400, "-" + "9" * 30, "1e400", "١٢٣"])
def test_unparsable_timestamp_is_401_not_500(tmp_path: Path, env: dict, timestamp: str):
    credentials = auth.Credentials(SECRET.encode(), TOKEN.encode())
    body = encode(webhook_event(sample_cdr(1)))
    with ThreadedReceiver(settings_for(tmp_path, **env), credentials) as server:
        headers = {
            "content-type": "application/json",
            "x-callr-timestamp": timestamp.encode(),  # UTF-8 on the wire
            "x-callr-signature": "sha256=" + "0" * 64,
            "x-callr-hmacsignature": "AAAA",
        }
        response = _post(server, WEBHOOK_URL, body, headers)
    assert response.status_code == 401, response.text
    assert "Unix seconds" in response.json()["reason"]
    with landed(tmp_path) as rows:
        assert rows == []


# --- 2. lone surrogates: 500 (content key), 503 for ever and for the whole group (SQLite) -------


def _with_lone_surrogate(where: str, callid: int) -> bytes:
    event = webhook_event(sample_cdr(callid), event_id=f"evt-{callid}")
    marker = "SURROGATE"
    if where == "cdr-value-without-id":
        del event["id"]
        event["data"]["callerName"] = marker
    elif where == "event-id":
        event["id"] = marker
    elif where == "callid":
        event["data"]["callid"] = marker
    else:
        event["data"]["started"] = marker
    return encode(event).replace(marker.encode(), b"\\ud800")


@pytest.mark.parametrize("where", ["cdr-value-without-id", "event-id", "callid", "started"])
def test_lone_surrogate_is_400_and_nothing_is_stored(
    receiver: ThreadedReceiver, tmp_path: Path, where: str
):
    body = _with_lone_surrogate(where, 1)
    response = _post(receiver, WEBHOOK_URL, body, signed_headers(body))
    assert response.status_code == 400, response.text
    assert "lone surrogate" in response.json()["reason"]
    with landed(tmp_path) as rows:
        assert rows == []
    # The writer is healthy: the next valid event is stored.
    good = encode(webhook_event(sample_cdr(2), event_id="evt-2"))
    assert _post(receiver, WEBHOOK_URL, good, signed_headers(good)).json()["status"] == "stored"


def test_lone_surrogates_do_not_fail_valid_events_committed_beside_them(
    receiver: ThreadedReceiver, tmp_path: Path
):
    # Before: 20 such requests made 548 of 1,980 concurrent valid events get 503.
    bad = [_with_lone_surrogate("event-id", 10_000 + i) for i in range(20)]
    good = [encode(webhook_event(sample_cdr(i), event_id=f"evt-{i}")) for i in range(400)]
    bodies = [*good[:200], *bad, *good[200:]]
    with (
        httpx.Client(base_url=receiver.base_url, timeout=60) as client,
        concurrent.futures.ThreadPoolExecutor(40) as pool,
    ):
        statuses = list(
            pool.map(lambda b: client.post(WEBHOOK_URL, content=b, headers=signed_headers(b))
                     .status_code, bodies)
        )  # fmt: skip
    assert statuses.count(200) == len(good)
    assert statuses.count(400) == len(bad)
    with landed(tmp_path) as rows:
        assert len(rows) == len(good)


# --- 3. a token-only configuration left /callr/webhook open, even on 0.0.0.0 -----------------


def test_token_only_configuration_does_not_open_the_webhook(tmp_path: Path):
    # The real CLI on all interfaces, with only CDR_PUSH_TOKEN set.
    server = ReceiverProcess(
        tmp_path, tmp_path / "receiver.log", host="0.0.0.0", CDR_WEBHOOK_SECRET=""
    )
    with server:
        body = encode(webhook_event(sample_cdr(3)))
        unsigned = _post(server, WEBHOOK_URL, body, {"content-type": "application/json"})
        bearer = _post(server, WEBHOOK_URL, body, bearer_headers())
        pushed = _post(server, PUSH_URL, encode({"cdr": sample_cdr(4)}), bearer_headers())
    assert unsigned.status_code == 401, unsigned.text
    assert "CDR_WEBHOOK_SECRET" in unsigned.json()["reason"]
    assert bearer.status_code == 401
    assert pushed.status_code == 200  # the push endpoint works with its token
    with landed(tmp_path) as rows:
        assert [r[1] for r in rows] == ["push"]


# --- 4. a signature was not bound to its endpoint: a signed webhook replayed to /callr/push ----


@pytest.mark.parametrize("event_type", ["v2.call.inbound.started", "v2.call.inbound.ended"])
def test_signed_webhook_replayed_to_push_is_refused(
    receiver: ThreadedReceiver, tmp_path: Path, event_type: str
):
    body = encode(webhook_event(sample_cdr(5), event_id="evt-5", event_type=event_type))
    headers = signed_headers(body)
    first = _post(receiver, WEBHOOK_URL, body, headers)
    assert first.status_code == 200
    replayed = _post(receiver, PUSH_URL, body, headers)
    assert replayed.status_code == 401, replayed.text
    with landed(tmp_path) as rows:
        assert [r[1] for r in rows] == (["webhook"] if event_type.endswith("ended") else [])


# --- 6. /healthz, the real disk error, counters that grow for ever, tokens in the access log ---


def test_healthz_follows_the_store_and_the_writer_recovers(receiver: ThreadedReceiver):
    # Before: /healthz answered 200 "ok" while nothing could be stored.
    con = receiver.app.state.writer._store._con
    body = encode(webhook_event(sample_cdr(9), event_id="evt-9"))
    con.execute("PRAGMA query_only = 1")  # SQLite refuses every write: nothing can be stored
    refused = _post(receiver, WEBHOOK_URL, body, signed_headers(body))
    health = httpx.get(receiver.base_url + "/healthz")
    assert (refused.status_code, refused.headers["retry-after"]) == (503, "5")
    assert health.status_code == 503
    assert "readonly" in health.json()["reason"]
    con.execute("PRAGMA query_only = 0")
    assert _post(receiver, WEBHOOK_URL, body, signed_headers(body)).json()["status"] == "stored"
    assert httpx.get(receiver.base_url + "/healthz").json()["status"] == "ok"


def test_ignored_event_types_do_not_grow_counters_for_ever(receiver: ThreadedReceiver):
    # Before: each new type became a counter (5,000 requests with 10 KB types: a 50 MB /healthz).
    with httpx.Client(base_url=receiver.base_url, timeout=30) as client:
        for i in range(300):
            body = encode(webhook_event(sample_cdr(6), event_type=f"v2.x.{i}." + "t" * 2_000))
            response = client.post(WEBHOOK_URL, content=body, headers=signed_headers(body))
            assert response.status_code == 200
            assert len(response.content) < 1_000  # the answer does not echo a 2 KB type
        health = client.get("/healthz")
    assert len(health.content) < 4_000
    counters = health.json()["counters"]
    assert counters["webhook_ignored"] == 300
    assert sum(v for k, v in counters.items() if k.startswith("ignored_type:")) == 300


def test_token_in_query_string_is_not_written_to_the_access_log(tmp_path: Path):
    secret_in_url = "query-token-7d1e0c55"
    log = tmp_path / "receiver.log"
    with ReceiverProcess(tmp_path, log) as server:
        body = encode({"cdr": sample_cdr(7)})
        response = _post(server, PUSH_URL + f"?token={secret_in_url}&x=1", body, bearer_headers())
        assert response.status_code == 200
        refused = _post(server, PUSH_URL + f"?token={secret_in_url}", body, {})
        assert refused.status_code == 401
    text = log.read_text()
    assert f"{PUSH_URL}" in text  # the access log is on, and names the path
    assert secret_in_url not in text
    assert TOKEN not in text and SECRET not in text


def _fill_the_disk(limit_bytes: int):
    """A `preexec_fn` limiting the size of any file the receiver writes: a full disk, for it."""
    import resource
    import signal

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return limit


def test_full_disk_answers_503_healthz_says_so_and_the_log_names_the_error(tmp_path: Path):
    log = tmp_path / "receiver.log"
    server = ReceiverProcess(tmp_path, log, preexec_fn=_fill_the_disk(256 * 1024))
    statuses = []
    with server:
        assert httpx.get(server.base_url + "/healthz").status_code == 200
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            for i in range(200):
                body = encode(webhook_event(sample_cdr(i, callerName="x" * 4000), event_id=f"e{i}"))
                response = client.post(WEBHOOK_URL, content=body, headers=signed_headers(body))
                statuses.append(response.status_code)
                if response.status_code == 503:
                    assert response.headers["retry-after"]
                    break
            health = client.get("/healthz")
    assert statuses[-1] == 503 and set(statuses[:-1]) <= {200}, statuses
    assert health.status_code == 503, health.text
    assert health.json()["status"] == "failing"
    text = log.read_text()
    assert "disk I/O error" in text or "disk is full" in text  # SQLite's words for EFBIG
    assert "cannot rollback" not in text
    with landed(tmp_path) as rows:  # every acknowledged event is there
        assert len(rows) == statuses.count(200)


def test_healthz_is_503_when_the_store_cannot_be_written(tmp_path: Path):
    # An idle receiver whose disk filled up: /healthz must not answer "ok".
    log = tmp_path / "receiver.log"
    server = ReceiverProcess(tmp_path, log, preexec_fn=_fill_the_disk(64 * 1024))
    with server, httpx.Client(base_url=server.base_url, timeout=30) as client:
        for i in range(40):  # fill it
            body = encode(webhook_event(sample_cdr(i, callerName="y" * 4000), event_id=f"f{i}"))
            if (
                client.post(WEBHOOK_URL, content=body, headers=signed_headers(body)).status_code
                == 503
            ):
                break
        time.sleep(1.2)  # the last write outcome is older than the probe interval
        health = client.get("/healthz")
    assert health.status_code == 503, health.text
