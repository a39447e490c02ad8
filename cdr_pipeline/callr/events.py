"""The events Callr sends: the envelopes around a CDR, parsed strictly (JSON, depth, Unicode).

Three envelopes carry a CDR (the object an export row is, JSON keys = CSV header names): a
webhook event (`data` / `payload`), an Actions `fetch@v2` push (`{"cdr": {...}}`) and a bare
CDR. Numbers stay as written (`JsonNumber`). Which event types carry a final CDR, where the type
and id are read, and what is refused: docs/realtime.md, "Envelopes accepted".
"""

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cdr_pipeline.field_names import field_key, source_field
from cdr_pipeline.schema import DIRECTIONS

# Event types carrying a final CDR: Callr's v2 names and the older ones (docs.callr.com/webhooks).
ENDED_EVENT_TYPES: frozenset[str] = frozenset(
    [*(f"v2.call.{d}.ended" for d in DIRECTIONS), *(f"call.{d}_hangup" for d in DIRECTIONS)]
)
_TYPE_DIRECTION = re.compile(r"(?:v2\.)?call\.(inbound|outbound)[._][a-z]+")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_TYPE_KEYS = ("type", "event", "event_type", "eventType")
_ID_KEYS = ("id", "event_id", "eventId")
_CDR_KEYS = ("data", "payload", "cdr")


class PayloadError(ValueError):
    """The body cannot be taken as a CDR delivery; `status` is the HTTP code a receiver answers."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class JsonNumber(str):
    """A JSON number, kept as the text it was written as."""

    __slots__ = ()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(body: bytes, *, max_depth: int) -> Any:
    """Decode a UTF-8 JSON body, numbers kept as written, nesting at most `max_depth` deep.

    Raises:
        PayloadError: 400, naming what is wrong (encoding, syntax with position, depth).
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        bad = body[error.start : error.start + 1]
        raise PayloadError(400, f"body is not valid UTF-8 (byte {error.start}: {bad!r})") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        document = json.loads(
            text, parse_float=JsonNumber, parse_int=JsonNumber, parse_constant=_reject_constant
        )
    except RecursionError:
        raise PayloadError(400, f"JSON nested deeper than {max_depth} levels") from None
    except json.JSONDecodeError as error:
        raise PayloadError(
            400, f"body is not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})"
        ) from None
    except ValueError as error:
        raise PayloadError(400, f"body is not valid JSON: {error}") from None
    # Lone surrogates can only come from `\\uD8xx`-`\\uDFxx` escapes in the (valid UTF-8) text.
    surrogates = "\\u" in text and re.search(r"\\u[dD][89a-fA-F]", text) is not None
    _check_tree(document, max_depth, surrogates=surrogates)
    return document


def _check_tree(document: Any, max_depth: int, *, surrogates: bool) -> None:
    """Refuse (400) nesting deeper than `max_depth` and, if `surrogates`, strings holding a lone
    surrogate; without recursion (a scalar is depth 0, `{}` is 1)."""
    stack: list[tuple[Any, int, str]] = [(document, 1, "")]
    while stack:
        value, level, path = stack.pop()
        if isinstance(value, dict):
            items: Iterable[tuple[Any, Any]] = value.items()
        elif isinstance(value, list):
            items = enumerate(value)
        else:
            if surrogates and isinstance(value, str) and _LONE_SURROGATE.search(value):
                _refuse_surrogate(value, path)
            continue
        if level > max_depth:
            raise PayloadError(400, f"JSON nested deeper than {max_depth} levels")
        for key, child in items:
            if surrogates and isinstance(key, str) and _LONE_SURROGATE.search(key):
                _refuse_surrogate(key, path)
            # Paths are only spelled out when a surrogate may need naming.
            stack.append((child, level + 1, f"{path}.{key}".lstrip(".") if surrogates else ""))


def _refuse_surrogate(text: str, path: str) -> None:
    found = _LONE_SURROGATE.search(text)
    code = ord(found.group()) if found else 0
    where = f"at `{path[:80]}`" if path else "in the body"
    raise PayloadError(
        400,
        f"a JSON string {where} holds a lone surrogate (\\u{code:04x}), which is not Unicode "
        "text: send UTF-8, or escape characters as surrogate pairs",
    )


def cdr_value(cdr: dict[str, Any], fieldname: str) -> Any:
    """The value of a Callr field in a CDR object, whatever the key's spelling (None if absent)."""
    if fieldname in cdr:
        return cdr[fieldname]
    wanted = field_key(fieldname)
    for key, value in cdr.items():
        if field_key(key) == wanted:
            return value
    return None


def _looks_like_cdr(value: Any) -> bool:
    return isinstance(value, dict) and any(source_field(k) is not None for k in value)


@dataclass(frozen=True)
class Delivery:
    """What one request delivers.

    Attributes:
        event_type: the event type as sent (None for pushes and bare CDRs).
        event_id: the event id, when the envelope has one (used to drop redeliveries).
        cdr_path: where the CDR sits in the body: `""` (bare), `cdr`, `data`, `data.cdr`...
        cdr: the CDR object (None when the event type carries no final CDR).
    """

    event_type: str | None
    event_id: str | None
    cdr_path: str
    cdr: dict[str, Any] | None

    @property
    def stores_call(self) -> bool:
        return self.cdr is not None


def _text(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def read_delivery(document: Any, *, source: str) -> Delivery:
    """Find the CDR in a parsed body (envelopes: docs/realtime.md, "Envelopes accepted").

    Args:
        document: the parsed JSON body.
        source: `webhook` or `push`; only webhooks are filtered by event type.

    Raises:
        PayloadError: 422 when the body is not an object or holds no CDR.
    """
    if not isinstance(document, dict):
        raise PayloadError(422, f"expected a JSON object, got a JSON {_kind(document)}")
    event_type = next((t for k in _TYPE_KEYS if (t := _text(document.get(k)))), None)
    event_id = next((i for k in _ID_KEYS if (i := _text(document.get(k)))), None)
    if source == "webhook" and event_type is not None:
        if event_type.lower() not in ENDED_EVENT_TYPES:
            return Delivery(event_type, event_id, "", None)
    elif source == "push":
        event_type = None
    for key in _CDR_KEYS:
        inner = document.get(key)
        if not isinstance(inner, dict):
            continue
        if isinstance(inner.get("cdr"), dict):
            return _delivery(event_type, event_id, f"{key}.cdr", inner["cdr"])
        return _delivery(event_type, event_id, key, inner)
    if _looks_like_cdr(document):
        # A bare CDR: any `id`/`type` key belongs to the call, not to an envelope.
        return Delivery(event_type if source == "webhook" else None, None, "", document)
    raise PayloadError(
        422,
        "no CDR found: expected an event with the CDR under `data` or `payload`, "
        '`{"cdr": {...}}`, or a bare CDR object (with `callid`, `started`, ...)',
    )


def _delivery(
    event_type: str | None, event_id: str | None, path: str, cdr: dict[str, Any]
) -> Delivery:
    if not _looks_like_cdr(cdr):
        raise PayloadError(
            422, f"the object under `{path}` has no Callr CDR field (callid, started, ...)"
        )
    return Delivery(event_type, event_id, path, cdr)


def cdr_at(document: Any, path: str) -> Any:
    """The object at a `cdr_path` in a parsed body (`""` is the body itself)."""
    for key in filter(None, path.split(".")):
        document = document[key]
    return document


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, JsonNumber):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    return "null" if value is None else type(value).__name__


def direction_of(event_type: str | None) -> str | None:
    """`inbound` / `outbound` from a `v2.call.<direction>.<phase>` or `call.<direction>_<phase>`
    event type, else None."""
    if event_type and (found := _TYPE_DIRECTION.fullmatch(event_type.lower())):
        return found.group(1)
    return None
