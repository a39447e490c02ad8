"""Runs over a range of days: their tags, and what to run again when some days of one failed."""

import datetime as dt
from collections.abc import Iterable, Mapping

import dagster as dg

from cdr_pipeline.dayranges import consecutive_ranges, days_between

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
PARTITION_TAG = "dagster/partition"
FAILED_DAYS_KEY = "failed_days"  # metadata of a step failure: the days, comma-separated


def range_tags(first: dt.date, last: dt.date) -> dict[str, str]:
    """Tags that make a run materialise every day from `first` to `last`."""
    return {RANGE_START_TAG: first.isoformat(), RANGE_END_TAG: last.isoformat()}


def run_days(run: dg.DagsterRun) -> list[dt.date]:
    """The days a run materialised (its range, or its single partition)."""
    tags = run.tags
    if RANGE_START_TAG in tags and RANGE_END_TAG in tags:
        return days_between(
            dt.date.fromisoformat(tags[RANGE_START_TAG]), dt.date.fromisoformat(tags[RANGE_END_TAG])
        )
    if PARTITION_TAG in tags:
        return [dt.date.fromisoformat(tags[PARTITION_TAG])]
    return []


def without(
    days: Iterable[dt.date], failed: Iterable[dt.date], size: int
) -> list[tuple[dt.date, dt.date]]:
    """The ranges that run `days` again, leaving out the `failed` ones."""
    return consecutive_ranges(set(days) - set(failed), size)


def failed_days(metadata: Mapping[str, object]) -> list[dt.date]:
    """The days a step failure named (its `failed_days` metadata), if any."""
    value = metadata.get(FAILED_DAYS_KEY)
    text = getattr(value, "value", value) or ""
    return [dt.date.fromisoformat(d) for d in str(text).split(",") if d.strip()]
