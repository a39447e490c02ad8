"""The API key and base URL, checked before any request, and the headers that carry the key.

The key never appears in an exception, a log line, a repr or a file: `scrub` removes every form
of it (as sent, URL-quoted, inside HTTP Basic) from any text shown to the user.
"""

import base64
from urllib.parse import quote, urlsplit

from cdr_pipeline.callr.errors import CallrAuthError, CallrRequestError
from cdr_pipeline.config import DEFAULT_BASE_URL


def checked_api_key(api_key: str) -> str:
    """CALLR_API_KEY without surrounding blanks, or CallrAuthError if unset or unsendable."""
    key = (api_key or "").strip()
    if not key:
        raise CallrAuthError(
            "CALLR_API_KEY is not set: set it to your Callr API key "
            "(or run `cdr-pipeline demo` to use the built-in simulator)"
        )
    if not key.isascii() or not key.isprintable() or " " in key:
        raise CallrAuthError(
            "CALLR_API_KEY contains spaces, line breaks or non-ASCII characters, which an "
            "HTTP header cannot carry: copy the key again from the Callr customer portal"
        )
    return key


def checked_base_url(base_url: str) -> str:
    """CALLR_BASE_URL without a trailing slash, or CallrRequestError if it is not usable."""
    parts = urlsplit((base_url or "").strip())
    if parts.username is not None or parts.password is not None:
        raise CallrRequestError(
            "CALLR_BASE_URL must not contain credentials: put the key in CALLR_API_KEY"
        )
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CallrRequestError(
            f"CALLR_BASE_URL must be an http(s) URL such as {DEFAULT_BASE_URL}, got {base_url!r}"
        )
    return f"{parts.scheme}://{parts.netloc}{parts.path}".rstrip("/")


def auth_headers(key: str, account_sid: str | None) -> tuple[dict[str, str], tuple[str, ...]]:
    """The headers carrying `key` (`x-api-key`, or HTTP Basic with the account SID), and every
    form of the key that `scrub` must remove."""
    if account_sid is None:
        headers = {"x-api-key": key}
        basic = None
    else:
        basic = base64.b64encode(f"{account_sid}:{key}".encode()).decode()
        headers = {"Authorization": f"Basic {basic}"}
    return headers, tuple(s for s in (key, quote(key, safe=""), basic) if s)


def scrub(text: object, secrets: tuple[str, ...]) -> str:
    """`text` with every one of `secrets` replaced by ***."""
    result = str(text)
    for secret in secrets:
        result = result.replace(secret, "***")
    return result
