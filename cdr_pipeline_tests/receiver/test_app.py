"""The receiver over real HTTP (uvicorn on loopback): envelopes, bad input, duplicates, landing."""

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cdr_pipeline.callr import events
from cdr_pipeline.landing import LandingStore, landing_path
from cdr_pipeline.receiver import auth
from cdr_pipeline_tests.support import paths
from cdr_pipeline_tests.support.receiver import (
    PUSH_URL,
    SECRET,
    WEBHOOK_URL,
    ThreadedReceiver,
    bearer_headers,
    encode,
    landed,
    sample_cdr,
    settings_for,
    signed_headers,
    webhook_event,
)


def _post_webhook(
    server: ThreadedReceiver, body: bytes, headers: dict | None = None
) -> httpx.Response:
    return httpx.post(
        server.base_url + WEBHOOK_URL,
        content=body,
        headers=headers or signed_headers(body),
        timeout=10,
    )


def _counters(server: ThreadedReceiver) -> dict[str, int]:
    return httpx.get(server.base_url + "/healthz", timeout=5).json()["counters"]


@pytest.mark.parametrize(
    ("document", "path"),
    [
        (webhook_event(sample_cdr(11)), "data"),
        ({"event": "v2.call.inbound.ended", "payload": sample_cdr(11)}, "payload"),
        ({"type": "v2.call.inbound.ended", "data": {"cdr": sample_cdr(11)}}, "data.cdr"),
        ({"eventType": "V2.CALL.INBOUND.ENDED", "payload": {"cdr": sample_cdr(11)}}, "payload.cdr"),
        ({"cdr": sample_cdr(11), "dtmf": "1"}, "cdr"),
        (sample_cdr(11), ""),
        ({"type": "v2.call.inbound.ended", **sample_cdr(11)}, ""),
        ({"call_id": "11", "Started": "2026-11-02T10:00:00Z", "direction": "inbound"}, ""),
    ],
    ids=["data", "payload", "data.cdr", "payload.cdr", "cdr", "bare", "typed-bare", "snake"],
)
def test_envelopes_accepted_on_webhook(
    receiver: ThreadedReceiver, tmp_path: Path, document: dict, path: str
):
    body = encode(document)
    response = _post_webhook(receiver, body)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "stored"
    with LandingStore(landing_path(tmp_path), read_only=True) as store:
        (event,) = store.read_after(0, limit=10)
    assert event.cdr_path == path
    assert event.callid == "11"
    assert event.body == body.decode()  # landed byte for byte
    assert events.cdr_value(events.cdr_at(json.loads(event.body), path), "callid") in (
        11,
        "11",
    )


def test_push_envelopes_and_numbers_as_written(receiver: ThreadedReceiver, tmp_path: Path):
    # A 19-digit callid and a money amount written as a JSON number survive as written.
    body = (
        b'{"cdr": {"callid": 9007199254740993123, "billingDebit": 12.50, "direction": "inbound"}}'
    )
    response = httpx.post(
        receiver.base_url + PUSH_URL, content=body, headers=bearer_headers(), timeout=10
    )
    assert response.status_code == 200, response.text
    with LandingStore(landing_path(tmp_path), read_only=True) as store:
        (event,) = store.read_after(0, limit=10)
    assert (event.source, event.callid, event.event_type) == ("push", "9007199254740993123", None)
    assert event.body == body.decode()
    cdr = events.cdr_at(events.parse_json(event.body.encode(), max_depth=16), "cdr")
    assert cdr["billingDebit"] == "12.50" and isinstance(cdr["billingDebit"], events.JsonNumber)


@pytest.mark.parametrize(
    ("body", "content_type", "status", "reason"),
    [
        (b'{"type": "v2.call.inbound.ended", "data": {', "application/json", 400, "not valid JSON"),
        (b'{"cdr": {"callid": NaN}}', "application/json", 400, "NaN is not valid JSON"),
        (b"", "application/json", 400, "not valid JSON"),
        (encode(sample_cdr(1)), "text/plain", 415, "must be application/json"),
        (encode(sample_cdr(1)), "application/x-www-form-urlencoded", 415, "application/json"),
        (encode(sample_cdr(1)), None, 415, "missing Content-Type"),
        (encode(sample_cdr(1)), "application/json; charset=latin-1", 415, "charset must be utf-8"),
        (b"[" * 40 + b"]" * 40, "application/json", 400, "nested deeper than 16"),
        (b'{"a":' * 5000 + b"1" + b"}" * 5000, "application/json", 400, "nested deeper than 16"),
        (b'{"cdr": {"callerName": "Ren\xe9"}}', "application/json", 400, "not valid UTF-8"),
        (b"[1, 2]", "application/json", 422, "expected a JSON object, got a JSON array"),
        (b'"callid"', "application/json", 422, "got a JSON string"),
        (b'{"hello": "world"}', "application/json", 422, "no CDR found"),
        (b'{"data": {"hello": "world"}}', "application/json", 422, "has no Callr CDR field"),
    ],
    ids=[
        "truncated-json", "nan", "empty", "text-plain", "form", "no-content-type", "latin1",
        "deep-array", "deep-object", "non-utf8", "array", "string", "no-cdr", "empty-data",
    ],
)  # fmt: skip
def test_bad_input_gets_4xx_with_reason_and_nothing_is_stored(
    receiver: ThreadedReceiver,
    tmp_path: Path,
    body: bytes,
    content_type: str | None,
    status: int,
    reason: str,
):
    headers = signed_headers(body)
    if content_type is None:
        del headers["content-type"]
    else:
        headers["content-type"] = content_type
    response = _post_webhook(receiver, body, headers)
    assert response.status_code == status, response.text
    assert reason in response.json()["reason"]
    with landed(tmp_path) as rows:
        assert rows == []


def test_oversize_body_gets_413(receiver: ThreadedReceiver, tmp_path: Path):
    cdr = sample_cdr(1, callerName="x" * 70_000)
    body = encode(webhook_event(cdr))
    response = _post_webhook(receiver, body)
    assert response.status_code == 413
    assert "larger than 65536 bytes" in response.json()["reason"]

    # Without Content-Length (chunked), the limit holds while streaming.
    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 8192):
            yield body[start : start + 8192]

    response = httpx.post(
        receiver.base_url + WEBHOOK_URL,
        content=chunks(),
        headers=signed_headers(body),
        timeout=10,
    )
    assert response.status_code == 413
    with landed(tmp_path) as rows:
        assert rows == []


def test_started_and_unknown_event_types_are_acknowledged_counted_not_stored(
    receiver: ThreadedReceiver, tmp_path: Path
):
    for event_type in ("v2.call.inbound.started", "v2.call.outbound.started", "v2.sms.mo"):
        body = encode(webhook_event(sample_cdr(5), event_type=event_type))
        response = _post_webhook(receiver, body)
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "ignored"
        assert event_type in response.json()["reason"]
    counters = _counters(receiver)
    assert counters["webhook_ignored"] == 3
    assert counters["ignored_type:v2.sms.mo"] == 1
    with landed(tmp_path) as rows:
        assert rows == []


def test_redeliveries_are_stored_once(receiver: ThreadedReceiver, tmp_path: Path):
    with_id = encode(webhook_event(sample_cdr(7), event_id="evt-7"))
    first = _post_webhook(receiver, with_id).json()
    again = _post_webhook(receiver, with_id).json()  # a retry: same event id
    assert first["status"] == "stored"
    assert again == {"status": "duplicate", "seq": first["seq"]}

    no_id = encode({"cdr": sample_cdr(8)})
    pushed = httpx.post(receiver.base_url + PUSH_URL, content=no_id, headers=bearer_headers())
    repushed = httpx.post(receiver.base_url + PUSH_URL, content=no_id, headers=bearer_headers())
    assert repushed.json() == {"status": "duplicate", "seq": pushed.json()["seq"]}

    # Same call, new content (e.g. billing finalised): a new version, stored.
    updated = encode({"cdr": sample_cdr(8, billingDebit="13.00")})
    newer = httpx.post(receiver.base_url + PUSH_URL, content=updated, headers=bearer_headers())
    assert newer.json()["status"] == "stored"
    with landed(tmp_path) as rows:
        assert [(r[1], r[4]) for r in rows] == [("webhook", "7"), ("push", "8"), ("push", "8")]
    counters = _counters(receiver)
    assert counters["webhook_duplicate"] == 1 and counters["push_duplicate"] == 1


def test_cdr_with_bad_fields_is_landed_for_the_loader_to_reject(
    receiver: ThreadedReceiver, tmp_path: Path
):
    body = encode(webhook_event(sample_cdr("12.0", started="yesterday", durationTotal=-4)))
    assert _post_webhook(receiver, body).json()["status"] == "stored"
    with landed(tmp_path) as rows:
        assert [r[4] for r in rows] == ["12.0"]


def test_wrong_method_and_path(receiver: ThreadedReceiver):
    assert httpx.get(receiver.base_url + WEBHOOK_URL).status_code == 405
    assert httpx.post(receiver.base_url + "/other", content=b"{}").status_code == 404


def test_open_receiver_without_credentials(tmp_path: Path):
    with ThreadedReceiver(settings_for(tmp_path), auth.Credentials()) as server:
        body = encode(sample_cdr(3))
        response = httpx.post(
            server.base_url + WEBHOOK_URL,
            content=body,
            headers={"content-type": "application/json"},
        )
        assert response.json()["status"] == "stored"


def test_limits_from_settings(tmp_path: Path):
    settings = settings_for(
        tmp_path, CDR_RECEIVER_MAX_BODY_BYTES="200", CDR_RECEIVER_MAX_JSON_DEPTH="2"
    )
    with ThreadedReceiver(settings, auth.Credentials()) as server:
        headers = {"content-type": "application/json"}
        nested = encode({"data": {"cdr": {"callid": 1}}})
        response = httpx.post(server.base_url + WEBHOOK_URL, content=nested, headers=headers)
        assert response.status_code == 400 and "deeper than 2" in response.json()["reason"]
        big = encode({"callid": 1, "callerName": "x" * 300})
        response = httpx.post(server.base_url + WEBHOOK_URL, content=big, headers=headers)
        assert response.status_code == 413


def test_the_documented_signing_recipe_and_sample_are_accepted(
    receiver: ThreadedReceiver, tmp_path: Path
):
    # docs/realtime.md signs samples/callr_webhook_event.json with openssl, as Callr signs.
    project = paths.PROJECT_ROOT
    doc = (project / "docs" / "realtime.md").read_text()
    (recipe,) = [line for line in doc.splitlines() if line.startswith("sig=$(openssl")]
    done = subprocess.run(
        ["bash", "-c", f'{recipe}\nprintf %s "$sig"'],
        cwd=project,
        env={"CDR_WEBHOOK_SECRET": SECRET, "PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        check=True,
    )
    body = (project / "samples" / "callr_webhook_event.json").read_bytes()
    headers = {"content-type": "application/json", "x-callr-hmacsignature": done.stdout}
    response = _post_webhook(receiver, body, headers)
    assert response.status_code == 200 and response.json()["status"] == "stored", response.text
    with landed(tmp_path) as rows:
        assert [(r[2], r[4]) for r in rows] == [("v2.call.inbound.ended", "9007199254740993001")]
