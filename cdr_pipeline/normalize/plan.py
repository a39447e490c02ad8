"""Planning a partition's normalisation: each export file's header read and mapped, nothing
computed yet (docs/normalization.md)."""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date

from cdr_pipeline import privacy as privacy_rules
from cdr_pipeline.config import check_timezone, naive_timezone
from cdr_pipeline.normalize.header import MissingColumnsError, header_mapping, read_header
from cdr_pipeline.normalize.scan import ExportFile, FileScan
from cdr_pipeline.schema import SOURCE_FIELDS


@dataclass(frozen=True)
class NormalizedExport:
    """The planned normalisation of one partition's export files.

    `write_normalized` runs it in four streaming stages; `normalize_frames` is the same run,
    read back into memory.

    Attributes:
        scans: how to read and type each non-blank file, in file order.
        unknown_columns: header names that are no Callr field, in order of first appearance.
        files: the export files, for counting their raw records.
        partition_date: the partition; the `call_date` of rejects.
        source: the `source` column value.
        privacy: the pseudonymisation key and the erasure list applied.
    """

    scans: tuple[FileScan, ...]
    unknown_columns: tuple[str, ...]
    files: tuple[ExportFile, ...]
    partition_date: date
    source: str
    privacy: privacy_rules.Privacy = privacy_rules.CLEAR


def normalize_exports(
    files: Sequence[ExportFile],
    *,
    partition_date: date,
    timezone: str,
    source: str = "export",
    required_fields: Iterable[str] = SOURCE_FIELDS,
    naive_timezone: str | None = None,
    privacy: privacy_rules.Privacy = privacy_rules.CLEAR,
) -> NormalizedExport:
    """Plan the normalisation of one partition's export files (nothing is computed yet).

    Reads only each file's header, to map its columns and fail fast on a bad header.

    Args:
        files: the raw export files, in order; later files win duplicate `callid`s.
        partition_date: the day being normalised; the `call_date` of rejects.
        timezone: IANA time zone of `call_date` (CDR_TIMEZONE).
        source: the `source` column value (`export`, `webhook`, `push`).
        required_fields: Callr fields every file must have a column for.
        naive_timezone: IANA time zone of timestamps without an offset; None reads
            CDR_NAIVE_TIMEZONE (default UTC).
        privacy: pseudonymise the numbers (and rejects' raw JSON) with its key, drop the rows
            of numbers on its erasure list (see `cdr_pipeline.privacy`).

    Returns:
        The plan; run it with `write_normalized` or `normalize_frames`.

    Raises:
        MissingColumnsError: a file lacks a required column.
        DuplicateColumnsError: two columns of a file map to the same field.
        ConfigError: `timezone` or `naive_timezone` is not an IANA time zone.
    """
    check_timezone(timezone)
    naive_zone = resolve_naive_timezone(naive_timezone)
    required = tuple(required_fields)
    unknown: dict[str, None] = {}
    scans: list[FileScan] = []
    for index, export in enumerate(files):
        header = read_header(export.path)
        if header is None:  # blank file: a day without calls
            continue
        mapping, extra = header_mapping(header, file=export.path)
        missing = [f for f in required if f not in mapping.values()]
        if missing:
            raise MissingColumnsError(
                f"{export.path}: missing required column(s) {', '.join(missing)} "
                f"(header: {', '.join(header) or 'empty'})"
            )
        unknown.update(dict.fromkeys(extra))
        scans.append(FileScan(index, export, tuple(header), mapping, timezone, naive_zone, privacy))
    return NormalizedExport(
        scans=tuple(scans),
        unknown_columns=tuple(unknown),
        files=tuple(files),
        partition_date=partition_date,
        source=source,
        privacy=privacy,
    )


def resolve_naive_timezone(name: str | None) -> str:
    """`name` checked, or CDR_NAIVE_TIMEZONE when None (callers that cannot pass settings)."""
    return naive_timezone() if name is None else naive_timezone({"CDR_NAIVE_TIMEZONE": name})
