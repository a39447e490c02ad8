"""Days and ranges of consecutive days."""

import datetime as dt
from collections.abc import Iterable


def days_between(first: dt.date, last: dt.date) -> list[dt.date]:
    """Every day from `first` to `last`, inclusive."""
    return [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]


def consecutive_ranges(days: Iterable[dt.date], max_days: int) -> list[tuple[dt.date, dt.date]]:
    """Days, sorted and deduplicated, as inclusive ranges of consecutive days, each at most
    `max_days` long."""
    ranges: list[tuple[dt.date, dt.date]] = []
    for day in sorted(set(days)):
        if (
            ranges
            and day - ranges[-1][1] == dt.timedelta(days=1)
            and (day - ranges[-1][0]).days < max_days
        ):
            ranges[-1] = (ranges[-1][0], day)
        else:
            ranges.append((day, day))
    return ranges
