"""Raw Callr CSV exports -> typed `calls` rows and `call_rejects` rows, with polars.

Polars lazy queries that the streaming engine runs (`scan_csv` -> typed and validated columns
-> dedup -> `sink_parquet`), with no Python code per row and bounded memory on big days.
`normalize_exports` plans, `write_normalized` runs and writes Parquet, `normalize_frames` runs
`write_normalized` and reads its files back (tests, small inputs). The rules (what each field
becomes, reject reasons, duplicates, limits) are specified in docs/normalization.md.

Modules: `header` (which column is which field), `rules` (one typing rule per kind of field),
`scan` (reading one file, or some of its records), `dedup`, `plan`, `stages` (the streaming
run), `summary` (the written `calls` files' footers).
"""

from cdr_pipeline.normalize.dedup import with_derived as _with_derived  # noqa: F401 (tests)
from cdr_pipeline.normalize.header import (
    DuplicateColumnsError,
    ExportHeaderError,
    HeaderMapping,
    MissingColumnsError,
    count_csv_rows,
    header_mapping,
)
from cdr_pipeline.normalize.plan import (
    NormalizedExport,
    normalize_exports,
    resolve_naive_timezone,
)
from cdr_pipeline.normalize.scan import ExportFile
from cdr_pipeline.normalize.stages import (
    NormalizedFrames,
    NormalizeStats,
    normalize_frames,
    write_normalized,
)

__all__ = [
    "DuplicateColumnsError",
    "ExportFile",
    "ExportHeaderError",
    "HeaderMapping",
    "MissingColumnsError",
    "NormalizeStats",
    "NormalizedExport",
    "NormalizedFrames",
    "count_csv_rows",
    "header_mapping",
    "normalize_exports",
    "normalize_frames",
    "resolve_naive_timezone",
    "write_normalized",
]
