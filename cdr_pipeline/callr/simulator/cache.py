"""Export bodies kept as files, so a large export is generated once and streamed afterwards."""

import dataclasses
import datetime as dt
import gzip
from pathlib import Path
from typing import Any

from cdr_pipeline import durable
from cdr_pipeline.callr.simulator.calls import SimulationOptions, window_us
from cdr_pipeline.callr.simulator.draws import seed_of
from cdr_pipeline.callr.simulator.exports import check_direction, generate_export


def cached_export(
    cache_dir: Path,
    window_start: dt.datetime,
    window_end: dt.datetime,
    direction: str,
    *,
    gzip_encoded: bool = False,
    **options: Any,
) -> Path:
    """The export body as a file under `cache_dir`, generated on first use and reused after.

    The file name is derived from the window, the direction and every SimulationOptions field,
    so a cached body is exactly `generate_export(...)` for those arguments. Files are written
    atomically (`cdr_pipeline.durable`), so concurrent users (threads or processes) never see
    half a file.

    Args:
        cache_dir: Where the bodies are kept (created if missing).
        window_start: See `simulate_export`.
        window_end: See `simulate_export`.
        direction: See `simulate_export`.
        gzip_encoded: Return the gzip-encoded body (level 1, as the server sends it) instead.
        **options: SimulationOptions fields.

    Returns:
        The path of the plain CSV body, or of its `.gz` encoding.
    """
    settings = SimulationOptions(**options)
    start_us, end_us = window_us(window_start, window_end)
    check_direction(direction)
    key = seed_of(start_us, end_us, direction, *dataclasses.astuple(settings))
    plain = Path(cache_dir) / f"export-{direction}-{key:016x}.csv"
    if not plain.exists():
        body = generate_export(window_start, window_end, direction, **dataclasses.asdict(settings))
        durable.write_bytes(plain, body)
    if not gzip_encoded:
        return plain
    packed = plain.with_name(plain.name + ".gz")
    if not packed.exists():
        with (
            durable.writing(packed) as out,
            plain.open("rb") as source,
            gzip.GzipFile(filename="", mode="wb", fileobj=out, compresslevel=1, mtime=0) as z,
        ):
            while chunk := source.read(1 << 20):
                z.write(chunk)
    return packed
