"""KPI marts: DuckDB tables materialised per day from `calls` (docs/analytics.md).

`definitions` says what each mart holds and how a day of it is computed; `refresh` keeps the
tables equal to that, recomputing only the days a load changed.
"""

from cdr_pipeline.marts.definitions import (
    DEFINITION_VERSION,
    MART_COLUMNS,
    MART_DESCRIPTIONS,
    MART_TABLES,
    mart_select,
)
from cdr_pipeline.marts.refresh import (
    CALL_END,
    PENDING_TABLE,
    REBUILD_HINT,
    SETTINGS_TABLE,
    MartSettings,
    MartSettingsError,
    check_settings,
    ensure_marts,
    mark_pending,
    mart_rows,
    mart_settings,
    note_span,
    pending_days,
    rebuild_marts,
    refresh_pending,
    span_days,
)

__all__ = [
    "CALL_END",
    "DEFINITION_VERSION",
    "MART_COLUMNS",
    "MART_DESCRIPTIONS",
    "MART_TABLES",
    "PENDING_TABLE",
    "REBUILD_HINT",
    "SETTINGS_TABLE",
    "MartSettings",
    "MartSettingsError",
    "check_settings",
    "ensure_marts",
    "mark_pending",
    "mart_rows",
    "mart_select",
    "mart_settings",
    "note_span",
    "pending_days",
    "rebuild_marts",
    "refresh_pending",
    "span_days",
]
