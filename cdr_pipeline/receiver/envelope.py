"""Request bodies -> the Callr CDR they carry: the parsing is Callr's format, re-exported here.

The envelopes and their strict parsing live in `cdr_pipeline.callr.events` (the receiver, the
real-time loader and the tests share them); the HTTP side of a refusal is `PayloadError.status`.
"""

from cdr_pipeline.callr.events import (
    ENDED_EVENT_TYPES,
    Delivery,
    JsonNumber,
    PayloadError,
    cdr_at,
    cdr_value,
    direction_of,
    parse_json,
    read_delivery,
)

__all__ = [
    "ENDED_EVENT_TYPES",
    "Delivery",
    "JsonNumber",
    "PayloadError",
    "cdr_at",
    "cdr_value",
    "direction_of",
    "parse_json",
    "read_delivery",
]
