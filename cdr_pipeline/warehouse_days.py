"""A range of days into the DuckDB tables and marts, and what the load step reports of it.

The Dagster step `warehouse_tables` calls `load_warehouse_days` once per run (no Dagster here).
"""

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import duckdb
import polars as pl

from cdr_pipeline import days as day_loads
from cdr_pipeline import marts, q850, queries, warehouse


@dataclass(frozen=True)
class WarehouseLoad:
    """What loading a range of days did, and the mart rows of the days it changed."""

    result: day_loads.LoadResult
    shown_days: list[dt.date]  # the range's days and those whose marts the loads refreshed
    mart_counts: dict[str, dict[dt.date, int]]  # rows per day of each mart, for `shown_days`
    kpis: pl.DataFrame  # daily_kpis of `shown_days`


def load_warehouse_days(
    con: duckdb.DuckDBPyConnection,
    lake: warehouse.Lake,
    days: Sequence[dt.date],
    *,
    settings: marts.MartSettings,
    load_calls: bool = True,
    refresh: bool = True,
    first_day_kept: dt.date | None = None,
    on_q850_replaced: Callable[[int], None] = lambda rows: None,
) -> WarehouseLoad:
    """Load `days` (`days.load_days`), refresh their marts, and read back their mart rows.

    The Q.850 reference table is created or corrected first when a release changed it, so a
    first load needs no run of its own; `on_q850_replaced` is then told how many rows it holds.
    """
    if not warehouse.q850_is_current(con):
        on_q850_replaced(warehouse.replace_q850(con, q850.q850_frame()))
    result = day_loads.load_days(
        con,
        lake,
        days,
        settings=settings,
        load_calls=load_calls,
        refresh=refresh,
        first_day_kept=first_day_kept,
    )
    shown = sorted({*days, *result.refreshed_days})
    return WarehouseLoad(
        result=result,
        shown_days=shown,
        mart_counts=queries.mart_day_counts(con, shown[0], shown[-1]),
        kpis=queries.daily_kpis(con, shown[0], shown[-1]),
    )
