"""The header and records of a raw export file: which column is which Callr field, and how
many data records the file holds (docs/normalization.md, "Reading")."""

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import polars as pl

from cdr_pipeline.field_names import source_field


class ExportHeaderError(ValueError):
    """The header of an export file cannot be mapped onto the Callr CDR fields."""


class MissingColumnsError(ExportHeaderError):
    """A required Callr field has no column in an export file; the message names both."""


class DuplicateColumnsError(ExportHeaderError):
    """Two columns of an export file map to the same Callr field (e.g. `callId` and `call_id`)."""


class HeaderMapping(NamedTuple):
    """The header of an export mapped onto the Callr fields.

    Attributes:
        fields: raw header name -> canonical Callr field, for the names that are Callr fields.
        unknown: the other header names, in file order.
    """

    fields: dict[str, str]
    unknown: tuple[str, ...]


def header_mapping(header: Sequence[str], *, file: Path | None = None) -> HeaderMapping:
    """Map the header names of an export onto the Callr CDR fields (`field_names.field_key`).

    Args:
        header: the header row, as written in the file.
        file: the file it comes from, named in errors.

    Raises:
        DuplicateColumnsError: two columns map to the same field.
    """
    mapping: dict[str, str] = {}
    header_of_field: dict[str, str] = {}
    unknown: list[str] = []
    for name in header:
        field = source_field(name)
        if field is None:
            unknown.append(name)
        elif field in header_of_field:
            where = f"{file}: " if file else ""
            raise DuplicateColumnsError(
                f"{where}columns {header_of_field[field]!r} and {name!r} both map to the "
                f"Callr field {field!r}; keep one of them"
            )
        else:
            header_of_field[field] = name
            mapping[name] = field
    return HeaderMapping(mapping, tuple(unknown))


def is_blank(path: Path) -> bool:
    """True when the file holds nothing but an optional BOM and whitespace."""
    with path.open("rb") as f:
        chunk = f.read(1 << 16)
        if chunk.startswith(b"\xef\xbb\xbf"):
            chunk = chunk[3:]
        while chunk:
            if not chunk.isspace():
                return False
            chunk = f.read(1 << 16)
    return True


def read_header(path: Path) -> list[str] | None:
    """The header record of an export, or None when the file is blank (a day without calls)."""
    if is_blank(path):
        return None
    with path.open(encoding="utf-8-sig", errors="replace", newline="") as f:
        return next(csv.reader(f), [])


def count_csv_rows(path: Path) -> int:
    """Count the data records of a raw CSV export, independently of the normalisation query.

    Uses polars' quote-aware row counter: a newline inside a quoted field does not end a
    record, a blank line is a record (an empty row, which the normaliser rejects), the header
    is not counted.

    Args:
        path: the raw CSV file.

    Returns:
        The number of data records; 0 for a 0-byte, blank or header-only file.
    """
    if is_blank(path):
        return 0
    return (
        pl.scan_csv(path, has_header=True, infer_schema=False, encoding="utf8-lossy")
        .select(pl.len())
        .collect()
        .item()
    )
