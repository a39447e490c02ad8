"""Reading Callr's answers: the export body as the server meant it, and its error text."""

import json
from collections.abc import Callable, Iterator

import httpx
from isal import isal_zlib

from cdr_pipeline.callr.retry import Transient

_CHUNK_BYTES = 1 << 20
_GZIP_WBITS = 16 + 15  # a gzip wrapper around a deflate stream with a 32 KiB window
_SERVER_TEXT_LIMIT = 300  # characters of a server's error message shown to the user
_ERROR_BODY_LIMIT = 16_384  # bytes of an error body read at most


def decoded_body(response: httpx.Response) -> Iterator[bytes]:
    """The body's bytes as the server meant them: gzip decoded with ISA-L, else by httpx.

    ISA-L inflates about 3x faster than zlib (docs/performance.md), and inflating is most of a
    download's CPU. Concatenated gzip members are decoded in turn.

    Raises:
        Transient: the gzip stream is corrupt or ends early.
    """
    if response.headers.get("content-encoding", "").strip().lower() != "gzip":
        yield from response.iter_bytes(_CHUNK_BYTES)
        return
    inflater = isal_zlib.decompressobj(_GZIP_WBITS)
    try:
        for chunk in response.iter_raw():
            while chunk:
                if inflater.eof:  # another gzip member follows
                    inflater = isal_zlib.decompressobj(_GZIP_WBITS)
                yield inflater.decompress(chunk)
                chunk = inflater.unused_data if inflater.eof else b""
        yield inflater.flush()
    except isal_zlib.error as exc:  # type: ignore[misc]  # isal's stub types `error` as an instance
        raise Transient(f"undecodable body (gzip: {exc})") from None
    if not inflater.eof:
        raise Transient("truncated body (the gzip stream ends early)")


def server_message(response: httpx.Response, scrub: Callable[[object], str]) -> str:
    """The server's error text (its JSON `message` if any), short and passed through `scrub`
    (which removes the key)."""
    raw = b""
    try:
        for chunk in response.iter_bytes():
            raw += chunk
            if len(raw) >= _ERROR_BODY_LIMIT:
                break
    except httpx.HTTPError:
        pass
    text = raw.decode("utf-8", errors="replace").strip()
    try:
        payload = json.loads(text)
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        error = payload.get("error", payload.get("data", payload))
        found = error.get("message") if isinstance(error, dict) else error
        if isinstance(found, str) and found:
            text = found
    text = " ".join(scrub(text).split())
    if len(text) > _SERVER_TEXT_LIMIT:
        text = text[: _SERVER_TEXT_LIMIT - 1] + "…"
    return text
