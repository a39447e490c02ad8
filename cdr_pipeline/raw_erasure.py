"""Raw exports rewritten without some rows: the rows of an erased number (README "Privacy").

Kept apart from `cdr_pipeline.erasure`, which also reaches the real-time landing store, so that
the loader (`cdr_pipeline.days`) can use it without depending on the receiver.
"""

import csv
import io
from collections.abc import Callable
from pathlib import Path

from cdr_pipeline import durable, normalize, privacy


def remove_raw_rows(path: Path, match: Callable[[str], bool]) -> int:
    """Rewrite a raw export without the rows whose caller or callee `match`es; rows removed.

    The other rows are written back as the csv module quotes them (RFC 4180, the file's line
    ending and BOM kept): the same fields, not always the same bytes."""
    raw = path.read_bytes()
    text = raw.decode("utf-8-sig", errors="surrogateescape")
    records = list(csv.reader(io.StringIO(text, newline="")))
    if not records:
        return 0
    mapping, _ = normalize.header_mapping(records[0], file=path)
    numbers = privacy.NUMBER_FIELDS.values()
    columns = [i for i, name in enumerate(records[0]) if mapping.get(name) in numbers]
    kept = [r for r in records[1:] if not any(i < len(r) and match(r[i]) for i in columns)]
    if len(kept) == len(records) - 1:
        return 0
    out = io.StringIO(newline="")
    csv.writer(out, lineterminator="\r\n" if "\r\n" in text else "\n").writerows(
        [records[0], *kept]
    )
    content = ("\ufeff" if raw.startswith(b"\xef\xbb\xbf") else "") + out.getvalue()
    durable.write_bytes(path, content.encode("utf-8", errors="surrogateescape"))
    return len(records) - 1 - len(kept)
