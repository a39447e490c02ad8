"""Which Callr field a CSV header name or a JSON key names: one rule for exports and real time.

Names are compared after lower-casing and dropping `_`, `-`, whitespace and a stray BOM, so
`callerNumber`, `caller_number` and `CALLER-NUMBER` are one field (docs/normalization.md).
"""

import re

from cdr_pipeline.schema import SOURCE_FIELDS

_IGNORED = re.compile(r"[\s_\-\ufeff]")


def field_key(name: str) -> str:
    """`name` as it is compared with the Callr fields: case, `_`, `-` and spaces ignored."""
    return _IGNORED.sub("", name).lower()


_FIELD_BY_KEY: dict[str, str] = {field_key(f): f for f in SOURCE_FIELDS}


def source_field(name: str) -> str | None:
    """The Callr field (as spelt in `SOURCE_FIELDS`) that `name` stands for, or None."""
    return _FIELD_BY_KEY.get(field_key(name))
