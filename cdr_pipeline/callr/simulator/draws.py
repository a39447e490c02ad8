"""Seeded, vectorised random draws as polars expressions (no global random state)."""

import hashlib
import random
from collections.abc import Sequence
from typing import Any

import polars as pl
import pyarrow as pa


def seed_of(*parts: object) -> int:
    """A 64-bit seed (or cache key) derived from `parts`, the same on every run and platform."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def uniforms(rng: random.Random, n: int) -> pl.Series:
    """n floats uniform in [0, 1), drawn from rng's stream (53 bits each)."""
    if n == 0:
        return pl.Series(values=[], dtype=pl.Float64)
    raw = pa.Array.from_buffers(pa.uint64(), n, [None, pa.py_buffer(rng.randbytes(8 * n))])
    words = pl.Series(pl.from_arrow(raw))
    return (words // 2048).cast(pl.Float64) / float(1 << 53)


def choice(u: pl.Expr, weights: Sequence[float]) -> pl.Expr:
    """Index drawn with `weights`, from a uniform column `u` (inverse CDF)."""
    total = float(sum(weights))
    index = pl.lit(0, dtype=pl.Int64)
    running = 0.0
    for weight in weights[:-1]:
        running += weight
        index = index + (u >= running / total).cast(pl.Int64)
    return index


def pick(index: pl.Expr, values: Sequence[Any], dtype: pl.DataType) -> pl.Expr:
    """values[index], vectorised."""
    return index.replace_strict(list(range(len(values))), list(values), return_dtype=dtype)


def floor(u: pl.Expr, span: int | pl.Expr) -> pl.Expr:
    """An integer uniform in [0, span) from a uniform column."""
    return (u * span).floor().cast(pl.Int64)


def cents_text(e4: pl.Expr) -> pl.Expr:
    """An amount in 1/10000 cent, as cents text: `318`, `12.75`, `0.3333`."""
    whole = (e4 // 10_000).cast(pl.String)
    fraction = (e4 % 10_000).cast(pl.String).str.zfill(4).str.strip_chars_end("0")
    return (
        pl.when(e4 % 10_000 == 0)
        .then(whole)
        .otherwise(pl.concat_str([whole, pl.lit("."), fraction]))
    )
