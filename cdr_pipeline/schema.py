"""The one schema definition: CDR source fields, the warehouse's tables, their columns and types.

The normaliser, the DuckDB DDL, the Dagster column schema, the docs and the tests all read the
tables below, so a table or a column is added or renamed here and nowhere else.
"""

from dataclasses import dataclass

import polars as pl

MONEY_PRECISION = 18
MONEY_SCALE = 6


@dataclass(frozen=True)
class Column:
    """One column of a warehouse table."""

    name: str
    polars_type: pl.DataType
    duckdb_type: str
    description: str
    source_field: str | None = None  # the Callr CDR field (CSV header / JSON key); None = derived
    nullable: bool = True
    primary_key: bool = False

    @property
    def duckdb_ddl(self) -> str:
        if self.primary_key:
            return f"{self.name} {self.duckdb_type} PRIMARY KEY"
        return f"{self.name} {self.duckdb_type}{'' if self.nullable else ' NOT NULL'}"


CALLS_TABLE = "calls"
REJECTS_TABLE = "call_rejects"
Q850_TABLE = "q850_causes"
LOADS_TABLE = "partition_loads"  # one row per daily partition loaded: when, and what it held
REALTIME_WATERMARK_TABLE = "realtime_watermark"
REALTIME_SEEN_TABLE = "realtime_calls_seen"

_TS = pl.Datetime("us", "UTC")
_MONEY = pl.Decimal(MONEY_PRECISION, MONEY_SCALE)
_MONEY_SQL = f"DECIMAL({MONEY_PRECISION},{MONEY_SCALE})"

CALL_COLUMNS: tuple[Column, ...] = (
    Column("call_id", pl.Int64(), "BIGINT", "Callr `callid`, exact int64", "callid", False),
    Column("call_date", pl.Date(), "DATE", "date of `started_at` in CDR_TIMEZONE", None, False),
    Column("direction", pl.String(), "VARCHAR", "`inbound` or `outbound`", "direction", False),
    Column("status", pl.String(), "VARCHAR", "call status, lower case", "status"),
    Column(
        "caller_number",
        pl.String(),
        "VARCHAR",
        "caller number; null when empty (CLIR)",
        "callerNumber",
    ),
    Column("caller_name", pl.String(), "VARCHAR", "caller name", "callerName"),
    Column(
        "caller_restricted",
        pl.Boolean(),
        "BOOLEAN",
        "caller identity restricted (CLIR)",
        "callerRestricted",
    ),
    Column("callee", pl.String(), "VARCHAR", "callee phone number", "callee"),
    Column(
        "caller_country_code",
        pl.String(),
        "VARCHAR",
        "pseudonymise mode: E.164 country code of the caller (e.g. `33`)",
    ),
    Column(
        "caller_number_type",
        pl.String(),
        "VARCHAR",
        "pseudonymise mode: `mobile` / `fixed` / `toll_free` / … of the caller",
    ),
    Column(
        "callee_country_code",
        pl.String(),
        "VARCHAR",
        "pseudonymise mode: E.164 country code of the callee",
    ),
    Column("callee_number_type", pl.String(), "VARCHAR", "pseudonymise mode: type of the callee"),
    Column("started_at", _TS, "TIMESTAMPTZ", "start instant (UTC)", "started", False),
    Column("answered_at", _TS, "TIMESTAMPTZ", "answer instant; null if never answered", "answered"),
    Column("ended_at", _TS, "TIMESTAMPTZ", "end instant", "ended"),
    Column("duration_total_s", pl.Int32(), "INTEGER", "total seconds (>= 0)", "durationTotal"),
    Column(
        "duration_answered_s", pl.Int32(), "INTEGER", "answered seconds (>= 0)", "durationAnswered"
    ),
    Column("duration_billed_s", pl.Int32(), "INTEGER", "billed seconds (>= 0)", "durationBilled"),
    Column(
        "billing_debit",
        _MONEY,
        _MONEY_SQL,
        "debit in currency units (cents / 100, exact)",
        "billingDebit",
    ),
    Column(
        "billing_credit",
        _MONEY,
        _MONEY_SQL,
        "credit in currency units (cents / 100, exact)",
        "billingCredit",
    ),
    Column(
        "billing_destination_label",
        pl.String(),
        "VARCHAR",
        "billed destination label",
        "billingDestinationLabel",
    ),
    Column(
        "billing_payment_type",
        pl.String(),
        "VARCHAR",
        "`prepaid` / `postpaid`, lower case",
        "billingPaymentType",
    ),
    Column("hangup_cause", pl.Int16(), "SMALLINT", "ITU-T Q.850 cause code", "hangupCause"),
    Column("hangup_cause_name", pl.String(), "VARCHAR", "Q.850 name; unknown codes say so"),
    Column("hangup_cause_class", pl.String(), "VARCHAR", "Q.850 class from the class bits"),
    Column(
        "hangup_source",
        pl.String(),
        "VARCHAR",
        "`caller`, `callee` or `system`, lower case",
        "hangupSource",
    ),
    Column(
        "hangup_tech",
        pl.String(),
        "VARCHAR",
        "technology-specific cause (e.g. SIP status)",
        "hangupTech",
    ),
    Column("scenario_name", pl.String(), "VARCHAR", "scenario name", "scenarioName"),
    Column("scenario_sid", pl.String(), "VARCHAR", "scenario id", "scenarioSid"),
    Column(
        "scenario_type_name",
        pl.String(),
        "VARCHAR",
        "scenario type (e.g. `Actions`)",
        "scenarioTypeName",
    ),
    Column(
        "scenario_type_version",
        pl.String(),
        "VARCHAR",
        "scenario type version",
        "scenarioTypeVersion",
    ),
    Column(
        "source",
        pl.String(),
        "VARCHAR",
        "how the row arrived: `export` (daily export, wins) / `webhook` / `push`",
        None,
        False,
    ),
)

CALL_SCHEMA: dict[str, pl.DataType] = {c.name: c.polars_type for c in CALL_COLUMNS}

# Columns only the warehouse table has: lineage the idempotent load needs (see `warehouse`).
WAREHOUSE_COLUMNS: tuple[Column, ...] = (
    Column(
        "load_partition",
        pl.Date(),
        "DATE",
        "the daily partition whose load wrote this row (lineage)",
        None,
        False,
    ),
)

# Callr CDR fields, as the contract names them (CSV header names = JSON keys).
SOURCE_FIELDS: tuple[str, ...] = (
    "billingCredit", "billingDebit", "billingDestinationLabel", "billingPaymentType", "callee",
    "callerName", "callerNumber", "callerRestricted", "callid", "direction", "durationAnswered",
    "durationBilled", "durationTotal", "started", "answered", "ended", "hangupCause",
    "hangupSource", "hangupTech", "scenarioName", "scenarioSid", "scenarioTypeName",
    "scenarioTypeVersion", "status",
)  # fmt: skip

# Fields without which a row cannot be typed at all (webhook/push payloads may omit the rest).
ROW_KEY_FIELDS: tuple[str, ...] = ("callid", "direction", "started")

DIRECTIONS: tuple[str, ...] = ("inbound", "outbound")
CALL_SOURCES: tuple[str, ...] = ("export", "webhook", "push")

REJECT_COLUMNS: tuple[Column, ...] = (
    Column("call_date", pl.Date(), "DATE", "the partition (day) the row came with", None, False),
    Column("direction", pl.String(), "VARCHAR", "the export's direction", None, False),
    Column(
        "source_row", pl.Int64(), "BIGINT", "1-based data row number in the raw file", None, False
    ),
    Column(
        "raw", pl.String(), "VARCHAR", "the original row, as JSON of header -> text", None, False
    ),
    Column(
        "reason", pl.String(), "VARCHAR", "why it was rejected, naming field and value", None, False
    ),
    Column("source", pl.String(), "VARCHAR", "`export` / `webhook` / `push`", None, False),
)
REJECT_SCHEMA: dict[str, pl.DataType] = {c.name: c.polars_type for c in REJECT_COLUMNS}


Q850_COLUMNS: tuple[Column, ...] = (
    Column("cause_code", pl.Int16(), "SMALLINT", "ITU-T Q.850 cause value", None, False, True),
    Column("cause_name", pl.String(), "VARCHAR", "the standard's name", None, False),
    Column("cause_class", pl.String(), "VARCHAR", "the class, from the class bits", None, False),
)
Q850_SCHEMA: dict[str, pl.DataType] = {c.name: c.polars_type for c in Q850_COLUMNS}

LOAD_COLUMNS: tuple[Column, ...] = (
    Column("partition", pl.Date(), "DATE", "the daily partition loaded", None, False, True),
    Column("loaded_at", _TS, "TIMESTAMPTZ", "when its last load committed", None, False),
    Column("incoming_calls", pl.Int64(), "BIGINT", "calls its Parquet held", None, False),
    Column("calls_written", pl.Int64(), "BIGINT", "of those, rows that won", None, False),
    Column("rejects", pl.Int64(), "BIGINT", "rejected rows", None, False),
)

# Real-time bookkeeping: per landing store, the highest event `seq` loaded; and every call a
# real-time delivery typed (the export may replace its row in `calls` later).
REALTIME_WATERMARK_COLUMNS: tuple[Column, ...] = (
    Column("landing_store_id", pl.String(), "VARCHAR", "landing store", None, False, True),
    Column("through_seq", pl.Int64(), "BIGINT", "highest event seq loaded", None, False),
    Column("loaded_at", _TS, "TIMESTAMPTZ", "when it was loaded", None, False),
)
REALTIME_SEEN_COLUMNS: tuple[Column, ...] = (
    Column("call_id", pl.Int64(), "BIGINT", "Callr `callid`", None, False, True),
    Column("call_date", pl.Date(), "DATE", "the call's day", None, False),
    Column("direction", pl.String(), "VARCHAR", "`inbound` or `outbound`", None, False),
    Column("source", pl.String(), "VARCHAR", "`webhook` / `push`", None, False),
    Column("first_loaded_at", _TS, "TIMESTAMPTZ", "first real-time load", None, False),
    Column("last_loaded_at", _TS, "TIMESTAMPTZ", "latest real-time load", None, False),
)

# Every warehouse table this module defines, by name (the KPI marts are defined in `marts`).
TABLE_COLUMNS: dict[str, tuple[Column, ...]] = {
    CALLS_TABLE: CALL_COLUMNS + WAREHOUSE_COLUMNS,
    REJECTS_TABLE: REJECT_COLUMNS,
    Q850_TABLE: Q850_COLUMNS,
    LOADS_TABLE: LOAD_COLUMNS,
    REALTIME_WATERMARK_TABLE: REALTIME_WATERMARK_COLUMNS,
    REALTIME_SEEN_TABLE: REALTIME_SEEN_COLUMNS,
}


def ddl(table: str, columns: tuple[Column, ...] | None = None) -> str:
    """`CREATE TABLE IF NOT EXISTS` for one of the tables above (its columns by default)."""
    body = ",\n    ".join(c.duckdb_ddl for c in columns or TABLE_COLUMNS[table])
    return f"CREATE TABLE IF NOT EXISTS {table} (\n    {body}\n)"
