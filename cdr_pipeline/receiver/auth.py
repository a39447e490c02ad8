"""Who may post to the receiver: an HMAC of the raw body for webhooks, a bearer token for pushes.

Webhooks (`POST /callr/webhook`) carry an HMAC of the raw request body keyed with the shared
secret `CDR_WEBHOOK_SECRET`. By default this is Callr's documented format: the signature in
`X-CALLR-HmacSignature`, base64, HMAC-SHA256 (`CDR_WEBHOOK_HMAC_ALGORITHM` picks the algorithm
chosen when subscribing: md5, sha1, sha256, sha384, sha512), no timestamp; a replayed delivery
is harmless because landing drops a known event id. `CDR_WEBHOOK_FORMAT=timestamped` selects the
other format: the signature in `X-Callr-Signature` and the signing time (Unix seconds) in
`X-Callr-Timestamp`; the signed message is then `<timestamp>.<raw body>` and the timestamp must
lie within `CDR_WEBHOOK_TOLERANCE_S` of the receiver's clock. Either way the digest may be
written in base64 or hex, with or without an `<algorithm>=` prefix, several comma-separated
(one must match: a sender rolling its secret).

Actions pushes (`POST /callr/push`) come from a `fetch@v2` action, which sets its own headers
but cannot compute an HMAC: they authenticate with `Authorization: Bearer <CDR_PUSH_TOKEN>`, and
only so. A webhook signature does not open the push endpoint: it covers the body, not the
endpoint, so a signed webhook replayed there would otherwise be taken as a push.

An endpoint whose credential is not set is closed (401), unless no credential is set at all:
then both are open, which `require_credentials` allows only on loopback, without a proxy.

Secrets are read from the environment here and nowhere else; `Credentials` never shows them,
comparisons are constant-time (`hmac.compare_digest`), and no message names a secret or an
expected signature. docs/realtime.md has the threat model.
"""

import base64
import binascii
import hashlib
import hmac
import ipaddress
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from cdr_pipeline.config import WEBHOOK_FORMATS, ConfigError, Settings

SECRET_ENV = "CDR_WEBHOOK_SECRET"
TOKEN_ENV = "CDR_PUSH_TOKEN"
# Unix seconds, ASCII digits only: `int()` alone would take `١٢٣`, `1_000`, or 400 digits that
# overflow the float clock arithmetic.
_UNIX_SECONDS = re.compile(r"[0-9]{1,12}", re.ASCII)
_MAX_CANDIDATES = 16  # signatures compared per request (a sender rolling its secret sends two)


@dataclass(frozen=True)
class Credentials:
    """The shared secrets the receiver checks requests against (never shown in repr)."""

    webhook_secret: bytes | None = field(default=None, repr=False)
    push_token: bytes | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Credentials":
        """`CDR_WEBHOOK_SECRET` and `CDR_PUSH_TOKEN`; unset or empty means not configured."""
        env = os.environ if env is None else env
        secret = env.get(SECRET_ENV) or None
        token = env.get(TOKEN_ENV) or None
        return cls(
            webhook_secret=secret.encode() if secret else None,
            push_token=token.encode() if token else None,
        )

    @property
    def open(self) -> bool:
        """No credential at all: every endpoint accepts every request (trials on loopback)."""
        return self.webhook_secret is None and self.push_token is None

    def __repr__(self) -> str:
        return (
            f"Credentials(webhook_secret={'***' if self.webhook_secret else None}, "
            f"push_token={'***' if self.push_token else None})"
        )


@dataclass(frozen=True)
class AuthPolicy:
    """How webhook signatures are written: header names, algorithm, replay window."""

    signature_header: str = WEBHOOK_FORMATS["callr"][0]
    timestamp_header: str | None = None
    tolerance_s: int = 300
    require_timestamp: bool = False
    algorithm: str = "sha256"

    @classmethod
    def from_settings(cls, settings: Settings) -> "AuthPolicy":
        if settings.webhook_require_timestamp and not settings.webhook_timestamp_header:
            raise ConfigError(
                "CDR_WEBHOOK_REQUIRE_TIMESTAMP=true needs a timestamp header: set "
                "CDR_WEBHOOK_FORMAT=timestamped or CDR_WEBHOOK_TIMESTAMP_HEADER"
            )
        return cls(
            signature_header=settings.webhook_signature_header,
            timestamp_header=settings.webhook_timestamp_header,
            tolerance_s=settings.webhook_tolerance_s,
            require_timestamp=settings.webhook_require_timestamp,
            algorithm=settings.webhook_hmac_algorithm,
        )

    def describe(self) -> str:
        """What a signed request carries, for the start-up log and refusals."""
        stamp = f", signed with `<{self.timestamp_header}>.<body>`" if self.timestamp_header else ""
        return f"HMAC-{self.algorithm.upper()} of the raw body in {self.signature_header}{stamp}"


class AuthError(Exception):
    """The request is not authenticated; the message says why (never a secret)."""


def sign(
    secret: bytes,
    body: bytes,
    timestamp: int | str | None = None,
    *,
    algorithm: str = "sha256",
    form: str = "base64",
) -> str:
    """The signature header value a sender computes for `body`: base64 (Callr's form) or
    `<algorithm>=<hex>`; over `<timestamp>.<body>` when a timestamp is given."""
    message = body if timestamp is None else f"{timestamp}.".encode() + body
    digest = hmac.new(secret, message, algorithm).digest()
    if form == "hex":
        return f"{algorithm}={digest.hex()}"
    return base64.b64encode(digest).decode()


def _decode_signature(value: str, algorithm: str) -> bytes | None:
    """The digest bytes of one header value (base64, hex, `<algorithm>=` prefixed), or None."""
    value = value.strip()
    prefix = f"{algorithm}="
    if value[: len(prefix)].lower() == prefix:
        value = value[len(prefix) :]
    size = hashlib.new(algorithm).digest_size
    if len(value) == 2 * size:
        try:
            return bytes.fromhex(value)
        except ValueError:
            pass
    try:
        digest = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return digest if len(digest) == size else None


def _signed_message(
    body: bytes, headers: Mapping[str, str], policy: AuthPolicy, now: float | None
) -> bytes:
    """The bytes the signature covers: the body, or `<timestamp>.<body>` (checked for age)."""
    name = policy.timestamp_header
    raw = headers.get(name) if name else None
    if not raw:
        if policy.require_timestamp:
            raise AuthError(f"missing timestamp header {name}")
        return body
    text = raw.strip()
    if not _UNIX_SECONDS.fullmatch(text):
        raise AuthError(f"{name} must be Unix seconds (up to 12 digits), got {raw[:40]!r}")
    timestamp = int(text)
    skew = (time.time() if now is None else now) - timestamp
    if abs(skew) > policy.tolerance_s:
        raise AuthError(
            f"{name} is {abs(skew):.0f} s {'old' if skew > 0 else 'in the future'}, outside "
            f"the {policy.tolerance_s} s tolerance (a replay, or a clock out of sync)"
        )
    return f"{timestamp}.".encode() + body


def verify_signature(
    secret: bytes,
    body: bytes,
    headers: Mapping[str, str],
    policy: AuthPolicy,
    *,
    now: float | None = None,
) -> None:
    """Check the HMAC signature of `body`; raise `AuthError` saying what is wrong.

    `headers` is looked up by the configured names (pass a case-insensitive mapping, such as
    Starlette's `Headers`). Every candidate signature is compared in constant time.
    """
    raw_signature = headers.get(policy.signature_header)
    if not raw_signature:
        raise AuthError(f"missing signature header {policy.signature_header}")
    message = _signed_message(body, headers, policy, now)
    expected = hmac.new(secret, message, policy.algorithm).digest()
    matched = False
    for candidate in raw_signature.split(",")[:_MAX_CANDIDATES]:
        digest = _decode_signature(candidate, policy.algorithm)
        # Compare every candidate, even after a match: the time taken says nothing.
        if digest is not None and hmac.compare_digest(digest, expected):
            matched = True
    if not matched:
        raise AuthError(
            f"bad signature in {policy.signature_header}: {policy.describe()} "
            "(base64 or hex) does not match"
        )


def verify_bearer(token: bytes, headers: Mapping[str, str]) -> None:
    """Check `Authorization: Bearer <token>` in constant time; raise `AuthError` if wrong."""
    value = headers.get("authorization")
    if not value:
        raise AuthError(f"missing Authorization: Bearer <{TOKEN_ENV}> header")
    scheme, _, presented = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise AuthError("Authorization header must be `Bearer <token>`")
    if not hmac.compare_digest(presented.strip().encode(), token):
        raise AuthError("bad bearer token")


def authenticate(
    source: str,
    body: bytes,
    headers: Mapping[str, str],
    credentials: Credentials,
    policy: AuthPolicy,
    *,
    now: float | None = None,
) -> str:
    """Authenticate a request to the `webhook` or `push` endpoint.

    Returns:
        How it was authenticated: `signature`, `bearer` or `open` (no credential at all).

    Raises:
        AuthError: the endpoint's credential is not set while another is, or the request does
            not prove it.
    """
    if credentials.open:
        return "open"
    if source == "webhook":
        if credentials.webhook_secret is None:
            raise AuthError(f"webhooks are refused: {SECRET_ENV} is not set on this receiver")
        verify_signature(credentials.webhook_secret, body, headers, policy, now=now)
        return "signature"
    if credentials.push_token is None:
        raise AuthError(f"pushes are refused: {TOKEN_ENV} is not set on this receiver")
    verify_bearer(credentials.push_token, headers)
    return "bearer"


def endpoint_auth(source: str, credentials: Credentials, policy: AuthPolicy) -> str:
    """How the `source` endpoint authenticates, for the start-up log (never the secret)."""
    if credentials.open:
        return "OPEN (no credential set)"
    if source == "webhook":
        return policy.describe() if credentials.webhook_secret else f"CLOSED ({SECRET_ENV} unset)"
    return "bearer token" if credentials.push_token else f"CLOSED ({TOKEN_ENV} unset)"


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or `localhost`) only listens on the loopback interface."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_credentials(host: str, credentials: Credentials, *, behind_proxy: bool) -> None:
    """Refuse to serve open endpoints anywhere but a loopback address without a proxy."""
    if not credentials.open:
        return  # each endpoint checks its credential, or is closed
    where = (
        f"on {host}"
        if not is_loopback(host)
        else "behind a proxy (--forwarded-allow-ips)"
        if behind_proxy
        else None
    )
    if where:
        raise ConfigError(
            f"refusing to listen {where} without authentication: set {SECRET_ENV} (webhook HMAC "
            f"secret) and/or {TOKEN_ENV} (bearer token for Actions pushes), or listen on "
            "127.0.0.1 for a trial"
        )
