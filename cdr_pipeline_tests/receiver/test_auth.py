"""Receiver authentication: HMAC signatures in Callr's documented format and the timestamped one
(valid, wrong, missing, replayed, altered), bearer tokens, which endpoint each opens, and
secrets that never leak."""

import base64
import hashlib
import hmac
import time
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdr_pipeline.config import ConfigError
from cdr_pipeline.receiver import auth
from cdr_pipeline_tests.support.receiver import (
    PUSH_URL,
    SECRET,
    TOKEN,
    WEBHOOK_URL,
    ThreadedReceiver,
    bearer_headers,
    encode,
    landed,
    sample_cdr,
    settings_for,
    signed_headers,
    timestamped_headers,
    webhook_event,
)

CALLR = auth.AuthPolicy()  # the default: X-CALLR-HmacSignature, base64 HMAC-SHA256, no timestamp
POLICY = auth.AuthPolicy("X-Callr-Signature", "X-Callr-Timestamp", tolerance_s=300)
BODY = encode(webhook_event(sample_cdr(1001), event_id="evt-1"))
NOW = 1_790_000_000


class _Ci(dict):
    """A case-insensitive header mapping, like Starlette's `Headers`."""

    def get(self, key, default=None):  # type: ignore[override]
        return super().get(key.lower(), default)


def _verify(headers: dict[str, str], body: bytes = BODY, **kw) -> None:
    auth.verify_signature(SECRET.encode(), body, _Ci(headers), POLICY, now=NOW, **kw)


def _verify_callr(headers: dict[str, str], policy: auth.AuthPolicy = CALLR) -> None:
    auth.verify_signature(SECRET.encode(), BODY, _Ci(headers), policy)


@pytest.mark.parametrize("algorithm", ["sha256", "md5", "sha1", "sha384", "sha512"])
def test_callr_format_is_a_base64_hmac_of_the_raw_body(algorithm: str):
    policy = auth.AuthPolicy(algorithm=algorithm)
    digest = hmac.new(SECRET.encode(), BODY, algorithm).digest()
    _verify_callr({"x-callr-hmacsignature": base64.b64encode(digest).decode()}, policy)
    other = "sha512" if algorithm == "sha256" else "sha256"
    wrong = base64.b64encode(hmac.new(SECRET.encode(), BODY, other).digest()).decode()
    with pytest.raises(auth.AuthError, match=f"HMAC-{algorithm.upper()} of the raw body"):
        _verify_callr({"x-callr-hmacsignature": wrong}, policy)


def test_callr_format_has_no_timestamp():
    # Callr sends none: a timestamp header is not part of the message, however old.
    signature = auth.sign(SECRET.encode(), BODY)
    _verify_callr({"x-callr-hmacsignature": signature, "x-callr-timestamp": "1"})
    with pytest.raises(auth.AuthError, match="missing signature header X-CALLR-HmacSignature"):
        _verify_callr({"x-callr-signature": signature})


def test_valid_signature_in_hex_prefixed_bare_and_base64_forms():
    digest = hmac.new(SECRET.encode(), BODY, hashlib.sha256).digest()
    for value in (
        f"sha256={digest.hex()}",
        digest.hex(),
        digest.hex().upper(),
        base64.b64encode(digest).decode(),
        f"sha256=00{digest.hex()[2:]}, sha256={digest.hex()}",  # rotation: one of several
    ):
        _verify({"x-callr-signature": value})


def test_valid_signature_with_timestamp_inside_tolerance():
    for ts in (NOW, NOW - 299, NOW + 299):
        signature = auth.sign(SECRET.encode(), BODY, ts)
        _verify({"x-callr-signature": signature, "x-callr-timestamp": str(ts)})


def test_wrong_secret_is_refused():
    with pytest.raises(auth.AuthError, match="bad signature"):
        _verify({"x-callr-signature": auth.sign(b"another-secret", BODY)})


def test_missing_signature_is_refused():
    with pytest.raises(auth.AuthError, match="missing signature header X-Callr-Signature"):
        _verify({})


def test_garbage_signature_is_refused():
    for value in ("", "sha256=", "sha256=zz", "not base64 !", "c2hvcnQ="):
        with pytest.raises(auth.AuthError):
            _verify({"x-callr-signature": value})


def test_body_altered_after_signing_is_refused():
    signature = auth.sign(SECRET.encode(), BODY)
    altered = BODY.replace(b'"12.75"', b'"0.01"')
    assert altered != BODY
    with pytest.raises(auth.AuthError, match="bad signature"):
        _verify({"x-callr-signature": signature}, body=altered)


def test_replay_outside_tolerance_is_refused():
    old = NOW - 301
    signature = auth.sign(SECRET.encode(), BODY, old)
    with pytest.raises(auth.AuthError, match="301 s old, outside the 300 s tolerance"):
        _verify({"x-callr-signature": signature, "x-callr-timestamp": str(old)})
    future = NOW + 3600
    signature = auth.sign(SECRET.encode(), BODY, future)
    with pytest.raises(auth.AuthError, match="in the future"):
        _verify({"x-callr-signature": signature, "x-callr-timestamp": str(future)})


def test_timestamp_is_part_of_the_signed_message():
    # A signature made with one timestamp does not verify with the timestamp changed (to pass
    # the tolerance window), nor with the timestamp header removed.
    signature = auth.sign(SECRET.encode(), BODY, NOW - 1000)
    with pytest.raises(auth.AuthError, match="bad signature"):
        _verify({"x-callr-signature": signature, "x-callr-timestamp": str(NOW)})
    with pytest.raises(auth.AuthError, match="bad signature"):
        _verify({"x-callr-signature": signature})


def test_required_timestamp_and_malformed_timestamp():
    policy = auth.AuthPolicy("X-Callr-Signature", "X-Callr-Timestamp", 300, require_timestamp=True)
    with pytest.raises(auth.AuthError, match="missing timestamp header"):
        auth.verify_signature(
            SECRET.encode(),
            BODY,
            _Ci({"x-callr-signature": auth.sign(SECRET.encode(), BODY)}),
            policy,
            now=NOW,
        )
    with pytest.raises(auth.AuthError, match="must be Unix seconds"):
        _verify({"x-callr-signature": "sha256=00", "x-callr-timestamp": "yesterday"})


def test_configurable_header_names():
    policy = auth.AuthPolicy("X-Hub-Signature-256", "X-Hub-Time", 60)
    ts = NOW
    headers = _Ci(
        {"x-hub-signature-256": auth.sign(SECRET.encode(), BODY, ts), "x-hub-time": str(ts)}
    )
    auth.verify_signature(SECRET.encode(), BODY, headers, policy, now=NOW)


def test_bearer_token():
    auth.verify_bearer(TOKEN.encode(), _Ci({"authorization": f"Bearer {TOKEN}"}))
    auth.verify_bearer(TOKEN.encode(), _Ci({"authorization": f"bearer  {TOKEN} "}))
    for value, reason in (
        (None, "missing Authorization"),
        (f"Basic {TOKEN}", "must be `Bearer <token>`"),
        ("Bearer ", "must be `Bearer <token>`"),
        (f"Bearer {TOKEN}x", "bad bearer token"),
    ):
        headers = _Ci({} if value is None else {"authorization": value})
        with pytest.raises(auth.AuthError, match=reason):
            auth.verify_bearer(TOKEN.encode(), headers)


def test_each_endpoint_opens_with_its_own_credential_only():
    both = auth.Credentials(SECRET.encode(), TOKEN.encode())
    signed = _Ci({"x-callr-hmacsignature": auth.sign(SECRET.encode(), BODY)})
    bearer = _Ci({"authorization": f"Bearer {TOKEN}"})
    assert auth.authenticate("webhook", BODY, signed, both, CALLR) == "signature"
    assert auth.authenticate("push", BODY, bearer, both, CALLR) == "bearer"
    # A signature covers the body, not the endpoint: it does not open /callr/push.
    with pytest.raises(auth.AuthError, match="missing Authorization"):
        auth.authenticate("push", BODY, signed, both, CALLR)
    with pytest.raises(auth.AuthError):  # the push token does not open the webhook endpoint
        auth.authenticate("webhook", BODY, bearer, both, CALLR)
    token_only = auth.Credentials(None, TOKEN.encode())
    with pytest.raises(auth.AuthError, match="webhooks are refused: CDR_WEBHOOK_SECRET is not"):
        auth.authenticate("webhook", BODY, _Ci({}), token_only, CALLR)
    secret_only = auth.Credentials(SECRET.encode(), None)
    with pytest.raises(auth.AuthError, match="pushes are refused: CDR_PUSH_TOKEN is not set"):
        auth.authenticate("push", BODY, bearer, secret_only, CALLR)
    assert auth.authenticate("push", BODY, _Ci({}), auth.Credentials(), CALLR) == "open"


def test_credentials_never_show_secrets():
    credentials = auth.Credentials.from_env({"CDR_WEBHOOK_SECRET": SECRET, "CDR_PUSH_TOKEN": TOKEN})
    for text in (repr(credentials), str(credentials)):
        assert SECRET not in text and TOKEN not in text
    assert auth.Credentials.from_env({"CDR_WEBHOOK_SECRET": ""}).webhook_secret is None


def test_open_endpoints_only_on_loopback_without_a_proxy():
    auth.require_credentials("127.0.0.1", auth.Credentials(), behind_proxy=False)
    auth.require_credentials("::1", auth.Credentials(), behind_proxy=False)
    # One credential: its endpoint checks it, the other endpoint is closed.
    auth.require_credentials("0.0.0.0", auth.Credentials(SECRET.encode()), behind_proxy=False)
    auth.require_credentials("0.0.0.0", auth.Credentials(None, TOKEN.encode()), behind_proxy=True)
    with pytest.raises(ConfigError, match=r"refusing to listen on 0\.0\.0\.0"):
        auth.require_credentials("0.0.0.0", auth.Credentials(), behind_proxy=False)
    with pytest.raises(ConfigError, match="behind a proxy"):
        auth.require_credentials("127.0.0.1", auth.Credentials(), behind_proxy=True)


# --- over HTTP: 401 and nothing written ------------------------------------------------------


def _post(server: ThreadedReceiver, path: str, body: bytes, headers: dict) -> httpx.Response:
    return httpx.post(server.base_url + path, content=body, headers=headers, timeout=10)


def test_http_valid_signature_is_stored(receiver: ThreadedReceiver, tmp_path: Path):
    response = _post(receiver, WEBHOOK_URL, BODY, signed_headers(BODY))
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "stored"
    with landed(tmp_path) as rows:
        assert [(r[1], r[3], r[4]) for r in rows] == [("webhook", "evt-1", "1001")]


@pytest.mark.parametrize(
    "case",
    ["missing", "wrong_secret", "wrong_header", "altered_body", "bearer_on_webhook", "bad_bearer"],
)
def test_http_unauthenticated_requests_get_401_and_nothing_is_written(
    receiver: ThreadedReceiver, tmp_path: Path, case: str
):
    body, path = BODY, WEBHOOK_URL
    if case == "missing":
        headers = {"content-type": "application/json"}
    elif case == "wrong_secret":
        headers = signed_headers(BODY, secret="not-the-secret")
    elif case == "wrong_header":  # the timestamped format's header, not the configured one
        headers = timestamped_headers(BODY)
    elif case == "altered_body":
        headers = signed_headers(BODY)
        body = BODY.replace(b"1001", b"1002")
    elif case == "bearer_on_webhook":
        headers = bearer_headers()
    else:
        path, headers = PUSH_URL, bearer_headers("wrong-token")
    response = _post(receiver, path, body, headers)
    assert response.status_code == 401, response.text
    reason = response.json()["reason"]
    assert SECRET not in reason and TOKEN not in reason
    with landed(tmp_path) as rows:
        assert rows == []


def test_http_push_with_bearer_token(receiver: ThreadedReceiver, tmp_path: Path):
    body = encode({"cdr": sample_cdr(2002)})
    response = _post(receiver, PUSH_URL, body, bearer_headers())
    assert response.status_code == 200 and response.json()["status"] == "stored"
    with landed(tmp_path) as rows:
        assert [(r[1], r[4]) for r in rows] == [("push", "2002")]


def test_http_callr_delivery_redelivery_and_replay(receiver: ThreadedReceiver, tmp_path: Path):
    # Callr's documented envelope and headers; its retry (`try` 1) and a replay hours later are
    # the same event id: stored once.
    event = {
        "event_id": "942214623559669723oDAOsQafV6EJlx",
        "event_at": "2026-11-02T09:16:02.340Z",
        "hook_hash": None,
        "try": 0,
        "type": "call.inbound_hangup",
        "data": sample_cdr(3003),
    }
    body = encode(event)
    first = _post(receiver, WEBHOOK_URL, body, signed_headers(body, event_id=event["event_id"]))
    assert first.status_code == 200 and first.json()["status"] == "stored", first.text
    retry = encode({**event, "try": 1})
    again = _post(receiver, WEBHOOK_URL, retry, signed_headers(retry))
    assert again.json() == {"status": "duplicate", "seq": first.json()["seq"]}
    assert _post(receiver, WEBHOOK_URL, body, signed_headers(body)).json()["status"] == "duplicate"
    with landed(tmp_path) as rows:
        assert [(r[2], r[3], r[4]) for r in rows] == [
            ("call.inbound_hangup", event["event_id"], "3003")
        ]


def test_http_timestamped_format(tmp_path: Path):
    settings = settings_for(tmp_path, CDR_WEBHOOK_FORMAT="timestamped")
    credentials = auth.Credentials(SECRET.encode(), TOKEN.encode())
    with ThreadedReceiver(settings, credentials) as server:
        stored = _post(server, WEBHOOK_URL, BODY, timestamped_headers(BODY))
        stale = timestamped_headers(BODY, timestamp=int(time.time()) - 3600)
        replayed = _post(server, WEBHOOK_URL, BODY, stale)
        callr_style = _post(server, WEBHOOK_URL, BODY, signed_headers(BODY))
    assert stored.status_code == 200, stored.text
    assert replayed.status_code == 401 and "outside the 300 s tolerance" in replayed.text
    assert callr_style.status_code == 401 and "X-Callr-Signature" in callr_style.text
    with landed(tmp_path) as rows:
        assert len(rows) == 1


@pytest.mark.parametrize("algorithm", ["md5", "sha512"])
def test_http_hmac_algorithm_setting(tmp_path: Path, algorithm: str):
    settings = settings_for(tmp_path, CDR_WEBHOOK_HMAC_ALGORITHM=algorithm.upper())
    credentials = auth.Credentials(SECRET.encode(), TOKEN.encode())
    with ThreadedReceiver(settings, credentials) as server:
        right = _post(server, WEBHOOK_URL, BODY, signed_headers(BODY, algorithm=algorithm))
        sha256 = _post(server, WEBHOOK_URL, BODY, signed_headers(BODY))
    assert right.status_code == 200, right.text
    assert sha256.status_code == 401


# --- properties --------------------------------------------------------------------------------

_NO_COMMA = st.text(st.characters(blacklist_characters=","), max_size=90)


@settings(max_examples=400, deadline=None)
@given(
    body=st.binary(max_size=300),
    algorithm=st.sampled_from(["md5", "sha1", "sha256", "sha384", "sha512"]),
    genuine=st.booleans(),
    form=st.sampled_from(["base64", "hex", "upper-hex"]),
    others=st.lists(_NO_COMMA, max_size=3),
    timestamp=st.one_of(
        st.none(),
        st.text(max_size=30),
        st.integers(-(10**30), 10**30),
        st.integers(NOW - 400, NOW + 400),
    ),
    timestamped=st.booleans(),
)
def test_a_signature_is_accepted_exactly_when_it_proves_the_secret(
    body: bytes,
    algorithm: str,
    genuine: bool,
    form: str,
    others: list[str],
    timestamp: object,
    timestamped: bool,
):
    policy = auth.AuthPolicy(
        "X-Sig", "X-Ts" if timestamped else None, tolerance_s=300, algorithm=algorithm
    )
    text = None if timestamp is None else str(timestamp)
    prefix, stamp_ok = b"", True
    if timestamped and text:  # an empty header counts as absent
        t = text.strip()
        stamp_ok = t.isascii() and t.isdigit() and len(t) <= 12 and abs(int(t) - NOW) <= 300
        prefix = f"{int(t)}.".encode() if stamp_ok else b""
    digest = hmac.new(SECRET.encode(), prefix + body, algorithm)
    candidate = {
        "base64": base64.b64encode(digest.digest()).decode(),
        "hex": f"{algorithm}={digest.hexdigest()}",
        "upper-hex": digest.hexdigest().upper(),
    }[form]
    headers = _Ci({"x-sig": ",".join([*others, candidate] if genuine else others)})
    if text is not None:
        headers["x-ts"] = text
    try:
        auth.verify_signature(SECRET.encode(), body, headers, policy, now=NOW)
        accepted = True
    except auth.AuthError:  # the only way to refuse: no other exception, whatever the input
        accepted = False
    assert accepted == (genuine and stamp_ok)


def test_webhook_settings(tmp_path: Path):
    callr = auth.AuthPolicy.from_settings(settings_for(tmp_path))
    assert (callr.signature_header, callr.timestamp_header, callr.algorithm) == (
        "X-CALLR-HmacSignature",
        None,
        "sha256",
    )
    stamped = auth.AuthPolicy.from_settings(
        settings_for(
            tmp_path, CDR_WEBHOOK_FORMAT="timestamped", CDR_WEBHOOK_HMAC_ALGORITHM="SHA-512"
        )
    )
    assert (stamped.signature_header, stamped.timestamp_header, stamped.algorithm) == (
        "X-Callr-Signature",
        "X-Callr-Timestamp",
        "sha512",
    )
    no_stamp = settings_for(
        tmp_path, CDR_WEBHOOK_FORMAT="timestamped", CDR_WEBHOOK_TIMESTAMP_HEADER=""
    )
    assert auth.AuthPolicy.from_settings(no_stamp).timestamp_header is None
    for env, message in (
        ({"CDR_WEBHOOK_FORMAT": "stripe"}, "CDR_WEBHOOK_FORMAT must be one of callr, timestamped"),
        ({"CDR_WEBHOOK_HMAC_ALGORITHM": "crc32"}, "CDR_WEBHOOK_HMAC_ALGORITHM must be one of"),
        ({"CDR_RECEIVER_REQUEST_TIMEOUT_S": "0"}, "at least 1 second"),
    ):
        with pytest.raises(ConfigError, match=message):
            settings_for(tmp_path, **env)
    with pytest.raises(ConfigError, match="CDR_WEBHOOK_REQUIRE_TIMESTAMP=true needs a timestamp"):
        auth.AuthPolicy.from_settings(settings_for(tmp_path, CDR_WEBHOOK_REQUIRE_TIMESTAMP="true"))
