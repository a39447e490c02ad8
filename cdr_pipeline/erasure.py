"""Erasure of one phone number from every copy the pipeline keeps (README "Privacy").

`erase_number` first puts the number on the erasure list (so a load from then on drops its
calls: a re-load or backfill never brings them back), then removes the calls and rejects that
carry it, as caller or callee, from:

1. the raw exports (`raw/<day>/<direction>.csv`: its rows removed, the file rewritten);
2. the Parquet lake (`calls` and `call_rejects` files rewritten without those rows);
3. DuckDB: `calls`, `call_rejects`, `realtime_calls_seen`, and the marts of the days those calls
   touched (recomputed); the file is then rewritten whole, because DuckDB leaves deleted values
   in its free blocks;
4. the real-time landing store (its events deleted, the freed pages zeroed);
5. the analysts' snapshot beside the warehouse, taken again if there is one.

Reports and Dagster's storage hold no number (reports show aggregates; the typed preview
leaves the personal columns out), so nothing is changed there. A number is matched in any
spelling (`number_key`): in clear mode the stored values, in pseudonymise mode their token. The
audit entry (`privacy/erasure-audit.jsonl`) records when and what changed where, with the
number's salted hash, never the number.
"""

import datetime as dt
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import polars as pl

from cdr_pipeline import durable, marts, merge, privacy, warehouse
from cdr_pipeline.db import count, transaction
from cdr_pipeline.landing import LandingStore
from cdr_pipeline.raw_erasure import remove_raw_rows
from cdr_pipeline.schema import CALLS_TABLE, REALTIME_SEEN_TABLE, REJECTS_TABLE

_PHONE = re.compile(r"\+?[0-9]{3,15}")


@dataclass
class ErasureReport:
    """What an erasure changed, place by place (rows, events or files)."""

    number_hash: str  # the first 16 hex digits of the salted hash on the erasure list
    changes: dict[str, int] = field(default_factory=dict)

    def lines(self) -> list[str]:
        return [f"{place}: {n}" for place, n in self.changes.items()]


@dataclass(frozen=True)
class _Targets:
    """The stored forms of the erased number: its key (clear) and its token (pseudonymise)."""

    values: frozenset[str]

    def match(self, value: object) -> bool:
        return isinstance(value, str) and privacy.number_key(value) in self.values

    def in_json(self, text: str) -> bool:
        """Whether a reject's raw JSON (or a landed body) holds the number anywhere."""
        try:
            document = json.loads(text)
        except ValueError:
            return any(v in privacy.number_key(text) for v in self.values)
        return any(self.match(v) for v in _strings(document))


def _strings(document: object) -> Iterator[str]:
    if isinstance(document, dict):
        for value in document.values():
            yield from _strings(value)
    elif isinstance(document, list):
        for value in document:
            yield from _strings(value)
    elif isinstance(document, str):
        yield document


def check_number(number: str) -> str:
    """The number's key, or an ErasureError saying what a number looks like."""
    key = privacy.number_key(number.strip())
    if not _PHONE.fullmatch(key):
        raise privacy.ErasureError(
            "--number must be a phone number as Callr writes it, such as +33612345678 "
            "(3 to 15 digits, an optional leading +; spaces, dots and dashes are ignored)"
        )
    return key


def erase_number(
    number: str,
    *,
    lake: warehouse.Lake,
    warehouse_path: Path,
    landing_file: Path,
    key: str | None,
    settings: marts.MartSettings,
    lock_wait_s: float = 600.0,
) -> ErasureReport:
    """Erase `number` from every copy (see the module docstring); what changed where."""
    number_key = check_number(number)
    lake.require_folder("an erasure")
    digest = privacy.add_to_erasure_list(lake.data_dir, number_key)
    values = {number_key} | ({privacy.token(key.encode(), number_key)} if key else set())
    targets = _Targets(frozenset(values))
    report = ErasureReport(number_hash=digest[:16])
    report.changes["raw export rows"] = _erase_raw(lake, targets)
    report.changes["parquet calls"], report.changes["parquet rejects"] = _erase_parquet(
        lake, targets
    )
    if warehouse_path.exists():
        with warehouse.connect(warehouse_path, lock_wait_s=lock_wait_s) as con:
            report.changes |= _erase_duckdb(con, targets, settings)
        warehouse.compact(warehouse_path, lock_wait_s=lock_wait_s)
    report.changes["real-time landed events"] = _erase_landing(landing_file, targets)
    snapshot = warehouse.snapshot_path(warehouse_path)
    if snapshot.exists():
        warehouse.snapshot(warehouse_path, snapshot)
        report.changes["snapshot retaken"] = 1
    privacy.append_audit(
        lake.data_dir,
        {
            "erased_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "number_hash": report.number_hash,
            "changes": report.changes,
        },
    )
    return report


def _erase_raw(lake: warehouse.Lake, targets: _Targets) -> int:
    """Remove the number's rows from every raw export; rows removed."""
    return sum(
        remove_raw_rows(path, targets.match) for path in sorted(lake.raw_dir.glob("*/*.csv"))
    )


def _erase_parquet(lake: warehouse.Lake, targets: _Targets) -> tuple[int, int]:
    """Rewrite the lake's files without the number's calls and rejects; rows removed."""
    number_hit = pl.any_horizontal(
        privacy.number_key_expr(pl.col(c)).is_in(list(targets.values)).fill_null(False)
        for c in privacy.NUMBER_FIELDS
    )

    def calls_hit(frame: pl.DataFrame) -> pl.Series:
        return frame.select(number_hit).to_series()

    def rejects_hit(frame: pl.DataFrame) -> pl.Series:  # few rows: their JSON read in Python
        return pl.Series(
            [targets.in_json(raw) for raw in frame.get_column("raw")], dtype=pl.Boolean
        )

    removed = [0, 0]
    for index, (folder, hit) in enumerate(
        ((lake.calls_dir, calls_hit), (lake.rejects_dir, rejects_hit))
    ):
        for path in sorted(folder.glob("call_date=*/*.parquet")):
            frame = pl.read_parquet(path, hive_partitioning=False)
            matched = hit(frame)
            if not matched.any():
                continue
            with durable.writing(path) as out:
                frame.filter(~matched).write_parquet(out, compression="zstd")
            removed[index] += int(matched.sum())
    return removed[0], removed[1]


def _erase_duckdb(
    con: duckdb.DuckDBPyConnection, targets: _Targets, settings: marts.MartSettings
) -> dict[str, int]:
    """Delete the number's calls and rejects, then recompute the marts of their days."""
    warehouse.ensure_schema(con)
    stored = sorted(targets.values)
    key_sql = "regexp_replace(regexp_replace({c}, '[\\s().-]', '', 'g'), '^00', '+')"
    where = " OR ".join(
        f"list_contains(?, {key_sql.format(c=f'c.{c}')})" for c in privacy.NUMBER_FIELDS
    )
    params = [stored] * len(privacy.NUMBER_FIELDS)
    rejects = [
        rowid
        for rowid, raw in con.execute(f"SELECT rowid, raw FROM {REJECTS_TABLE}").fetchall()
        if targets.in_json(raw)
    ]
    with transaction(con, "erased_calls"):
        con.execute(
            f"CREATE TEMP TABLE erased_calls AS SELECT c.call_id, c.call_date, "
            f"{merge.end_day('c', settings.timezone)} AS end_day "
            f"FROM {CALLS_TABLE} c WHERE {where}",
            params,
        )
        marts.mark_pending(con, merge.spanned_days("SELECT call_date, end_day FROM erased_calls"))
        calls = count(
            con, f"DELETE FROM {CALLS_TABLE} WHERE call_id IN (SELECT call_id FROM erased_calls)"
        )
        seen = 0
        if warehouse.table_exists(con, REALTIME_SEEN_TABLE):
            seen = count(
                con,
                f"DELETE FROM {REALTIME_SEEN_TABLE} "
                "WHERE call_id IN (SELECT call_id FROM erased_calls)",
            )
        if rejects:
            con.execute(f"DELETE FROM {REJECTS_TABLE} WHERE list_contains(?, rowid)", [rejects])
    days = marts.refresh_pending(con, settings)
    return {
        "duckdb calls": int(calls),
        "duckdb call_rejects": len(rejects),
        "duckdb realtime_calls_seen": int(seen),
        "mart days recomputed": len(days),
    }


def _erase_landing(landing_file: Path, targets: _Targets) -> int:
    """Delete the landed events that carry the number; events deleted."""
    if not landing_file.exists():
        return 0
    with LandingStore(landing_file) as store:
        hits = [seq for seq, body in store.events_where("true") if targets.in_json(body)]
        if not hits:
            store.purge_freed_pages()
            return 0
        return len(store.delete_events(f"seq IN ({', '.join('?' * len(hits))})", hits))


def _request_path(data_dir: Path, request_id: str) -> Path:
    if not re.fullmatch(r"[0-9a-f]{32}", request_id):
        raise privacy.ErasureError(f"erasure request ids are 32 hex digits, got {request_id!r}")
    return privacy.privacy_dir(data_dir) / "requests" / request_id


def write_request(data_dir: Path, number: str) -> str:
    """Hand a number to the erasure job through a file (mode 0600) rather than run config,
    which Dagster keeps: the request's id, for the job's config."""
    request_id = uuid.uuid4().hex
    privacy.write_private(_request_path(data_dir, request_id), check_number(number).encode())
    return request_id


def take_request(data_dir: Path, request_id: str) -> str:
    """The number of an erasure request; the request file is deleted."""
    path = _request_path(data_dir, request_id)
    if not path.exists():
        raise privacy.ErasureError(f"no erasure request {request_id} under {path.parent}")
    number = path.read_text()
    path.unlink()
    return number
