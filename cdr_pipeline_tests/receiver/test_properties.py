"""Properties of the receiver over real HTTP: any request gets 2xx or 4xx (never 5xx while the
store can be written), a refused request writes nothing, and only an endpoint's own credential
opens it."""

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from cdr_pipeline.landing import LandingStore, landing_path
from cdr_pipeline.receiver import auth
from cdr_pipeline.schema import SOURCE_FIELDS
from cdr_pipeline_tests.support.receiver import (
    PUSH_URL,
    SECRET,
    TOKEN,
    WEBHOOK_URL,
    ThreadedReceiver,
    sample_cdr,
    settings_for,
)

REFUSALS = {400, 401, 408, 413, 415, 422}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ThreadedReceiver, Path]]:
    data_dir = tmp_path_factory.mktemp("properties")
    credentials = auth.Credentials(SECRET.encode(), TOKEN.encode())
    settings_ = settings_for(data_dir, CDR_RECEIVER_MAX_BODY_BYTES="4096")
    with ThreadedReceiver(settings_, credentials) as receiver:
        yield receiver, data_dir


@pytest.fixture(scope="module")
def client(server: tuple[ThreadedReceiver, Path]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server[0].base_url, timeout=30) as http:
        yield http


def _landed(data_dir: Path) -> int:
    path = landing_path(data_dir)
    if not path.exists():
        return 0
    with LandingStore(path, read_only=True) as store:
        return store.count()


_JSON = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=8)
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=12,
)
_TYPES = st.sampled_from(
    [
        "v2.call.inbound.ended",
        "v2.call.outbound.ended",
        "V2.CALL.INBOUND.STARTED",
        "call.inbound_hangup",
        "call.outbound_start",
        "sms.mo",
        "",
    ]
)
_CDR = st.one_of(
    st.builds(sample_cdr, st.one_of(st.integers(), st.text(max_size=6))),
    st.dictionaries(st.sampled_from(SOURCE_FIELDS), _JSON, max_size=5),
    _JSON,
)
_ENVELOPE = st.fixed_dictionaries(
    {},
    optional={
        "type": st.one_of(_TYPES, _JSON),
        "event": _TYPES,
        "event_id": st.one_of(st.text(max_size=10), _JSON),
        "id": st.one_of(st.text(max_size=10), st.integers()),
        "try": st.integers(0, 3),
        "data": _CDR,
        "payload": _CDR,
        "cdr": _CDR,
    },
)


def _with_lone_surrogate(body: bytes) -> bytes:
    """The body with its first JSON string's first character escaped as a lone surrogate."""
    return re.sub(rb'"', rb'"\\udc80', body, count=1)


_ENCODED_ENVELOPE = _ENVELOPE.map(lambda d: json.dumps(d).encode())
_DELIVERY = st.builds(  # a well-formed event or push, often a redelivery of an earlier one
    lambda callid, event_type, key: json.dumps(
        {"type": event_type, "event_id": f"e{callid}", key: sample_cdr(callid)}
    ).encode(),
    st.integers(0, 20),
    _TYPES,
    st.sampled_from(["data", "payload", "cdr"]),
)
_BODY = st.one_of(
    _DELIVERY,
    _DELIVERY,
    _ENCODED_ENVELOPE,
    _ENCODED_ENVELOPE.map(_with_lone_surrogate),
    _JSON.map(lambda d: json.dumps(d).encode()),
    st.binary(max_size=300),
    st.sampled_from([b"{" * 5000, b'{"cdr": {"callid": 1, "callerName": "' + b"x" * 5000 + b'"}}']),
)
_CONTENT_TYPES = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "application/cloudevents+json",
        "application/json; charset=latin-1",
        "text/plain",
        None,
    ]
)
_AUTH = st.sampled_from(
    ["both", "both", "signature", "bearer", "none", "wrong_secret", "garbage", "wrong_token"]
)
_HEADER_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40).map(
    str.strip
)


def _headers(body: bytes, mode: str, content_type: str | None, noise: str) -> dict[str, str]:
    headers = {"x-callr-timestamp": noise, "x-callr-eventid": noise}
    if content_type:
        headers["content-type"] = content_type
    if mode in ("signature", "both"):
        headers["x-callr-hmacsignature"] = auth.sign(SECRET.encode(), body)
    if mode in ("bearer", "both"):
        headers["authorization"] = f"Bearer {TOKEN}"
    if mode == "wrong_secret":
        headers["x-callr-hmacsignature"] = auth.sign(b"not-the-secret", body)
    elif mode == "garbage":
        headers["x-callr-hmacsignature"] = noise
        headers["authorization"] = noise
    elif mode == "wrong_token":
        headers["authorization"] = f"Bearer {noise}x"
    return headers


@settings(max_examples=300, deadline=None)
@given(
    body=_BODY,
    endpoint=st.sampled_from([WEBHOOK_URL, PUSH_URL]),
    mode=_AUTH,
    content_type=_CONTENT_TYPES,
    noise=_HEADER_TEXT,
)
def test_any_request_gets_2xx_or_4xx_and_a_refused_one_writes_nothing(
    server: tuple[ThreadedReceiver, Path],
    client: httpx.Client,
    body: bytes,
    endpoint: str,
    mode: str,
    content_type: str | None,
    noise: str,
):
    _, data_dir = server
    before = _landed(data_dir)
    response = client.post(
        endpoint, content=body, headers=_headers(body, mode, content_type, noise)
    )
    after = _landed(data_dir)
    document = response.json()  # every answer is JSON
    event(f"{response.status_code} {document['status']}")
    authenticated = mode in (
        ("signature", "both") if endpoint == WEBHOOK_URL else ("bearer", "both")
    )
    if len(body) > 4096:
        assert response.status_code == 413
    elif not authenticated:
        assert response.status_code == 401, response.text
    else:
        assert response.status_code != 401, response.text
    assert response.status_code == 200 or response.status_code in REFUSALS, response.text
    if response.status_code == 200 and document["status"] == "stored":
        assert after == before + 1
    else:
        assert after == before, response.text
        assert response.status_code != 200 or document["status"] in ("duplicate", "ignored")
