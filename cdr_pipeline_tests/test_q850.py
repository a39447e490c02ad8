"""Tests for the ITU-T Q.850 cause table."""

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from cdr_pipeline.q850 import (
    Q850_CAUSES,
    UNKNOWN_CAUSE_NAME,
    UNKNOWN_CLASS,
    cause_class,
    cause_class_expr,
    cause_name,
    q850_frame,
    with_cause_columns,
)

# Every cause value Table 1/Q.850 (05/1998, as amended) defines, written out independently.
DEFINED_CODES = (
    *(1, 2, 3, 4, 5, 6, 7, 8, 9, 14),
    *range(16, 32),
    *(34, 38, 39, 40, 41, 42, 43, 44, 46, 47),
    *(49, 50, 53, 55, 57, 58, 62, 63),
    *(65, 66, 69, 70, 79),
    *(81, 82, 83, 84, 85, 86, 87, 88, 90, 91, 95),
    *(96, 97, 98, 99, 100, 101, 102, 103, 110, 111),
    127,
)


def test_every_defined_code_and_nothing_else() -> None:
    assert sorted(Q850_CAUSES) == sorted(DEFINED_CODES)


@pytest.mark.parametrize(
    ("code", "name"),
    [
        (1, "Unallocated (unassigned) number"),
        (16, "Normal call clearing"),
        (17, "User busy"),
        (19, "No answer from user (user alerted)"),
        (24, "Call rejected due to feature at the destination"),
        (31, "Normal, unspecified"),
        (34, "No circuit/channel available"),
        (39, "Permanent frame mode connection out of service"),
        (40, "Permanent frame mode connection operational"),
        (53, "Outgoing calls barred within CUG"),
        (55, "Incoming calls barred within CUG"),
        (62, "Inconsistency in designated outgoing access information and subscriber class"),
        (127, "Interworking, unspecified"),
    ],
)
def test_standard_names(code: int, name: str) -> None:
    assert cause_name(code) == name


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (0, "normal event"),
        (16, "normal event"),
        (31, "normal event"),
        (32, "resource unavailable"),
        (47, "resource unavailable"),
        (48, "service or option not available"),
        (63, "service or option not available"),
        (64, "service or option not implemented"),
        (79, "service or option not implemented"),
        (80, "invalid message"),
        (95, "invalid message"),
        (96, "protocol error"),
        (111, "protocol error"),
        (112, "interworking"),
        (127, "interworking"),
        (128, UNKNOWN_CLASS),
        (999, UNKNOWN_CLASS),
        (-1, UNKNOWN_CLASS),
    ],
)
def test_class_from_class_bits(code: int, expected: str) -> None:
    assert cause_class(code) == expected


def test_undefined_codes_say_so() -> None:
    assert cause_name(0) == UNKNOWN_CAUSE_NAME
    assert cause_name(54) == UNKNOWN_CAUSE_NAME
    assert cause_name(999) == UNKNOWN_CAUSE_NAME
    assert "unknown" in UNKNOWN_CAUSE_NAME.lower()


def test_q850_frame() -> None:
    frame = q850_frame()
    assert frame.schema == pl.Schema(
        {"cause_code": pl.Int16(), "cause_name": pl.String(), "cause_class": pl.String()}
    )
    assert frame["cause_code"].to_list() == sorted(DEFINED_CODES)
    assert frame["cause_code"].is_unique().all()
    assert frame.filter(pl.col("cause_code") == 17).row(0) == (17, "User busy", "normal event")
    assert frame.filter(pl.col("cause_code") == 102).row(0) == (
        102,
        "Recovery on timer expiry",
        "protocol error",
    )


def test_class_expr_matches_python() -> None:
    codes = [None, -32768, -1, 0, 15, 16, 31, 32, 63, 64, 95, 111, 112, 127, 128, 32767]
    frame = pl.DataFrame({"code": codes}, schema={"code": pl.Int16}).select(
        cause_class_expr(pl.col("code"))
    )
    assert frame.to_series().to_list() == [None if c is None else cause_class(c) for c in codes]


def test_with_cause_columns_keeps_order_and_unknowns() -> None:
    frame = pl.LazyFrame({"code": [17, None, 999, 0, -1, 16]}, schema={"code": pl.Int16})
    result = with_cause_columns(frame, "code", "name", "class").collect(engine="streaming")
    expected = pl.DataFrame(
        {
            "code": [17, None, 999, 0, -1, 16],
            "name": [
                "User busy",
                None,
                UNKNOWN_CAUSE_NAME,
                UNKNOWN_CAUSE_NAME,
                UNKNOWN_CAUSE_NAME,
                "Normal call clearing",
            ],
            "class": [
                "normal event",
                None,
                UNKNOWN_CLASS,
                "normal event",
                UNKNOWN_CLASS,
                "normal event",
            ],
        },
        schema={"code": pl.Int16, "name": pl.String, "class": pl.String},
    )
    assert_frame_equal(result, expected)
