"""What the real-time path keeps of a landed event's body, by privacy mode (README "Privacy").

In pseudonymise mode a reject's `raw` and, once loaded, the landing store's copy of a body
are the body with the CDR's numbers replaced by their tokens and the caller's name removed; a
body that cannot be read is withheld whole. An event whose caller or callee is on the erasure
list is deleted from the landing store once loaded (`cdr_pipeline.realtime`).
"""

import json
from typing import Any

from cdr_pipeline import normalize, privacy


def _parsed_cdr(body: str, cdr_path: str) -> tuple[Any, dict, dict[str, str]] | None:
    """The body, its CDR object (at `cdr_path`, as the landing store records it) and the CDR's
    keys -> Callr fields; None if unreadable."""
    try:
        document = json.loads(body)
        cdr = document
        for key in filter(None, cdr_path.split(".")):  # the receiver's `envelope.cdr_at`
            cdr = cdr[key]
        mapping, _ = normalize.header_mapping(list(cdr))
    except (ValueError, normalize.ExportHeaderError, KeyError, TypeError, AttributeError):
        return None
    return document, cdr, mapping


def of_erased_number(body: str, cdr_path: str, rules: privacy.Privacy) -> bool:
    """Whether the CDR of a landed body has an erased number as caller or callee."""
    parsed = _parsed_cdr(body, cdr_path)
    return parsed is not None and any(
        field_name in privacy.NUMBER_FIELDS.values()
        and parsed[1][name] not in (None, "")
        and rules.is_erased_number(str(parsed[1][name]))
        for name, field_name in parsed[2].items()
    )


WITHHELD_BODY = '{"withheld": "a body that cannot be read is not kept in pseudonymise mode"}'


def shown_body(body: str, cdr_path: str, rules: privacy.Privacy) -> str:
    """The body as a reject or the landing store may keep it: as received in clear mode; in
    pseudonymise mode with the CDR's numbers replaced by their tokens, the caller's name and
    the values of keys that are no Callr field removed (a body that cannot be read is withheld
    whole)."""
    if rules.key is None:
        return body
    parsed = _parsed_cdr(body, cdr_path)
    if parsed is None:
        return WITHHELD_BODY
    document, cdr, mapping = parsed
    for name in list(cdr):
        field_name = mapping.get(name)
        if field_name is None or field_name == privacy.NAME_FIELD:  # unknown keys withheld too
            cdr[name] = None
        elif field_name in privacy.NUMBER_FIELDS.values() and cdr[name] not in (None, ""):
            cdr[name] = privacy.token(rules.key, str(cdr[name]))
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"))
