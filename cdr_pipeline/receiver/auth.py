"""Who may post to the receiver: HMAC-SHA256 signatures of the raw body, and a bearer token.

Webhooks (`POST /callr/webhook`) carry an HMAC-SHA256 of the raw request body, keyed with the
shared secret `CDR_WEBHOOK_SECRET`, in the signature header (`X-Callr-Signature` unless
`CDR_WEBHOOK_SIGNATURE_HEADER` names another). The value is the digest in hex (optionally
prefixed `sha256=`, as GitHub and many providers write it) or in base64.

Replays: when the request also carries the timestamp header (`X-Callr-Timestamp`, or
`CDR_WEBHOOK_TIMESTAMP_HEADER`), holding Unix seconds, the signed message is
`<timestamp>.<raw body>` and the timestamp must lie within `CDR_WEBHOOK_TOLERANCE_S` (default
300 s) of the receiver's clock. `CDR_WEBHOOK_REQUIRE_TIMESTAMP=true` refuses requests without
one. A replay inside the window is harmless: landing deduplicates events (see `landing`).

Actions pushes (`POST /callr/push`) come from a `fetch@v2` action, which sets its own headers
but cannot compute an HMAC: they authenticate with `Authorization: Bearer <CDR_PUSH_TOKEN>`, or
with a webhook signature.

With no secret (and, for pushes, no token) configured, an endpoint is open: fine on loopback for
a trial, refused elsewhere by `cdr-pipeline receiver` (see `require_credentials_off_loopback`).

Secrets are read from the environment here and nowhere else; `Credentials` never shows them,
comparisons are constant-time (`hmac.compare_digest`), and no message names a secret or an
expected signature.
"""

import base64
import binascii
import hashlib
import hmac
import ipaddress
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from cdr_pipeline.config import ConfigError, Settings

SECRET_ENV = "CDR_WEBHOOK_SECRET"
TOKEN_ENV = "CDR_PUSH_TOKEN"
_DIGEST_BYTES = hashlib.sha256().digest_size


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

    def __repr__(self) -> str:
        return (
            f"Credentials(webhook_secret={'***' if self.webhook_secret else None}, "
            f"push_token={'***' if self.push_token else None})"
        )


@dataclass(frozen=True)
class AuthPolicy:
    """Header names and the replay window, from `Settings`."""

    signature_header: str
    timestamp_header: str
    tolerance_s: int
    require_timestamp: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> "AuthPolicy":
        return cls(
            signature_header=settings.webhook_signature_header,
            timestamp_header=settings.webhook_timestamp_header,
            tolerance_s=settings.webhook_tolerance_s,
            require_timestamp=settings.webhook_require_timestamp,
        )


class AuthError(Exception):
    """The request is not authenticated; the message says why (never a secret)."""


def sign(secret: bytes, body: bytes, timestamp: int | str | None = None) -> str:
    """The signature header value for `body`: `sha256=<hex>` (over `<timestamp>.<body>` when
    a timestamp is given). What a sender computes; the tests and the docs use it."""
    message = body if timestamp is None else f"{timestamp}.".encode() + body
    return "sha256=" + hmac.new(secret, message, hashlib.sha256).hexdigest()


def _decode_signature(value: str) -> bytes | None:
    """The digest bytes of a header value (`sha256=<hex>`, `<hex>` or base64), or None."""
    value = value.strip()
    if value[:7].lower() == "sha256=":
        value = value[7:]
    if len(value) == 2 * _DIGEST_BYTES:
        try:
            return bytes.fromhex(value)
        except ValueError:
            pass
    try:
        digest = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return digest if len(digest) == _DIGEST_BYTES else None


def verify_signature(
    secret: bytes,
    body: bytes,
    headers: Mapping[str, str],
    policy: AuthPolicy,
    *,
    now: float | None = None,
) -> None:
    """Check the HMAC-SHA256 signature of `body`; raise `AuthError` saying what is wrong.

    `headers` is looked up by the configured names (pass a case-insensitive mapping, such as
    Starlette's `Headers`). Every candidate signature (the header may hold several, comma
    separated, e.g. while a secret is being rotated at the sender) is compared in constant time.
    """
    raw_signature = headers.get(policy.signature_header)
    if not raw_signature:
        raise AuthError(f"missing signature header {policy.signature_header}")
    raw_timestamp = headers.get(policy.timestamp_header)
    message = body
    if raw_timestamp:
        try:
            timestamp = int(raw_timestamp.strip())
        except ValueError:
            raise AuthError(
                f"{policy.timestamp_header} must be Unix seconds, got {raw_timestamp[:40]!r}"
            ) from None
        skew = (time.time() if now is None else now) - timestamp
        if abs(skew) > policy.tolerance_s:
            raise AuthError(
                f"{policy.timestamp_header} is {abs(skew):.0f} s "
                f"{'old' if skew > 0 else 'in the future'}, outside the {policy.tolerance_s} s "
                "tolerance (a replay, or a clock out of sync)"
            )
        message = f"{timestamp}.".encode() + body
    elif policy.require_timestamp:
        raise AuthError(f"missing timestamp header {policy.timestamp_header}")
    expected = hmac.new(secret, message, hashlib.sha256).digest()
    matched = False
    for candidate in raw_signature.split(","):
        digest = _decode_signature(candidate)
        # Compare every candidate, even after a match: the time taken says nothing.
        if digest is not None and hmac.compare_digest(digest, expected):
            matched = True
    if not matched:
        raise AuthError(
            f"bad signature in {policy.signature_header}: HMAC-SHA256 of the raw body "
            "(hex, `sha256=<hex>` or base64) does not match"
        )


def verify_bearer(token: bytes, headers: Mapping[str, str]) -> None:
    """Check `Authorization: Bearer <token>` in constant time; raise `AuthError` if wrong."""
    value = headers.get("authorization")
    if not value:
        raise AuthError("missing Authorization: Bearer <CDR_PUSH_TOKEN> header")
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
        How it was authenticated: `signature`, `bearer` or `open` (nothing configured).

    Raises:
        AuthError: a credential is configured and the request does not prove it.
    """
    secret = credentials.webhook_secret
    token = credentials.push_token if source == "push" else None
    if secret is None and token is None:
        return "open"
    if token is not None and headers.get("authorization"):
        verify_bearer(token, headers)
        return "bearer"
    if secret is not None:
        verify_signature(secret, body, headers, policy, now=now)
        return "signature"
    verify_bearer(token, headers)  # type: ignore[arg-type]  # token is set here
    return "bearer"


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or `localhost`) only listens on the loopback interface."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_credentials_off_loopback(host: str, credentials: Credentials) -> None:
    """Refuse to serve an unauthenticated receiver on a non-loopback address."""
    unauthenticated = credentials.webhook_secret is None and credentials.push_token is None
    if unauthenticated and not is_loopback(host):
        raise ConfigError(
            f"refusing to listen on {host} without authentication: set {SECRET_ENV} (webhook "
            f"HMAC secret) and/or {TOKEN_ENV} (bearer token for Actions pushes), or listen on "
            "127.0.0.1"
        )
