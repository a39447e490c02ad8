"""The Callr simulator: deterministic, realistic, varied exports and a faithful HTTP surface."""

import base64
import datetime as dt
import gzip
import http.client
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import polars as pl
import pytest

from cdr_pipeline.callr.simulator import (
    BOOLEAN_STYLES,
    CALLID_BASE,
    EXPORT_PATH,
    EXTRA_COLUMNS,
    Fault,
    SimulatorServer,
    cached_export,
    dialect_for,
    expected_call_ids,
    generate_export,
    simulate_export,
)
from cdr_pipeline.schema import SOURCE_FIELDS

DAY = dt.date(2026, 11, 2)
TWO_53 = 2**53
BOOLEAN_WORDS = {
    w.lower() for style in BOOLEAN_STYLES if style != "mixed" for w in style.split("/")
}


def window(day: dt.date = DAY, days: int = 1) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    return start, start + dt.timedelta(days=days)


def key(header: str) -> str:
    """A header name folded so camelCase, snake_case and any letter case compare equal."""
    return header.replace("_", "").lower()


CANONICAL = {key(f): f for f in (*SOURCE_FIELDS, *EXTRA_COLUMNS)}


def read_export(body: bytes) -> pl.DataFrame:
    """The export as all-text columns named by the canonical field names (extras kept)."""
    frame = pl.read_csv(io.BytesIO(body), infer_schema=False)
    return frame.rename({c: CANONICAL.get(key(c), c) for c in frame.columns})


def test_same_request_same_bytes():
    start, end = window()
    assert generate_export(start, end, "outbound") == generate_export(start, end, "outbound")
    assert generate_export(start, end, "inbound", seed=7) == generate_export(
        start, end, "inbound", seed=7
    )


def test_days_directions_and_seeds_differ():
    start, end = window()
    bodies = {
        generate_export(start, end, "outbound"),
        generate_export(start, end, "inbound"),
        generate_export(*window(DAY + dt.timedelta(days=1)), "outbound"),
        generate_export(start, end, "outbound", seed=1),
    }
    assert len(bodies) == 4


def test_canonical_format_matches_the_sample_shape():
    start, end = window()
    body = generate_export(start, end, "outbound", variety=False)
    header, first = body.decode().split("\n")[:2]
    assert header == ",".join(SOURCE_FIELDS)
    assert not body.startswith(b"\xef\xbb\xbf") and b"\r\n" not in body
    assert ",outbound," in first


@pytest.mark.parametrize("offset", range(0, 28, 3))
def test_every_dialect_parses_to_the_24_fields(offset: int):
    start, end = window(DAY + dt.timedelta(days=offset))
    for direction in ("inbound", "outbound"):
        export = simulate_export(start, end, direction)
        frame = read_export(export.body)
        assert set(frame.columns) == set(SOURCE_FIELDS) | set(export.dialect.extra_columns)
        assert frame.height == export.rows
        assert export.body.startswith(b"\xef\xbb\xbf") == export.dialect.bom
        assert (b"\r\n" in export.body) == export.dialect.crlf
        spellings = {v.lower() for v in frame["callerRestricted"].drop_nulls().unique()}
        assert spellings <= BOOLEAN_WORDS
        assert frame.height - frame.unique().height == export.duplicate_rows  # still exact
        # The typed values do not depend on the dialect: the valid rows are the truth's rows.
        valid = (
            frame.filter(pl.col("callid").is_in(export.calls["callid"].implode()))
            .select(SOURCE_FIELDS)
            .unique(keep="last", maintain_order=True, subset="callid")
        )
        assert valid.height == export.calls.height


def test_variety_covers_the_contract_dialects():
    dialects = [
        dialect_for(window(DAY + dt.timedelta(days=i))[0], direction)
        for i in range(60)
        for direction in ("inbound", "outbound")
    ]
    assert {d.header_style for d in dialects} == {"camel", "snake", "lower", "upper_snake"}
    assert any(d.bom for d in dialects) and any(d.crlf for d in dialects)
    assert any(d.quote_all for d in dialects) and any(d.extra_columns for d in dialects)
    assert any(d.columns[: len(SOURCE_FIELDS)] != SOURCE_FIELDS for d in dialects)
    assert {d.booleans for d in dialects} == set(BOOLEAN_STYLES)
    assert not any(
        dialect_for(window(DAY + dt.timedelta(days=i))[0], "inbound", variety=False).bom
        for i in range(20)
    )


def test_mixed_booleans_mix_spellings_within_one_file():
    day = next(
        DAY + dt.timedelta(days=i)
        for i in range(60)
        if dialect_for(window(DAY + dt.timedelta(days=i))[0], "inbound").booleans == "mixed"
    )
    frame = read_export(generate_export(*window(day), "inbound"))
    spellings = set(frame["callerRestricted"])
    assert {"true", "false"} < {v.lower() for v in spellings}
    assert len(spellings) >= 8


def test_calls_are_realistic_and_consistent():
    start, end = window()
    for direction in ("inbound", "outbound"):
        calls = simulate_export(start, end, direction).calls
        assert 300 <= calls.height <= 1000
        typed = calls.with_columns(
            pl.col("durationTotal", "durationAnswered", "durationBilled", "hangupCause").cast(
                pl.Int64
            ),
            pl.col("started", "answered", "ended")
            .replace("", None)
            .str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%#z", time_zone="UTC", strict=True),
        )
        answered = typed.filter(pl.col("status") == "answered")
        others = typed.filter(pl.col("status") != "answered")
        assert 0.45 < answered.height / typed.height < 0.8
        assert set(typed["status"]) == {"answered", "busy", "failed", "canceled", "unallocated"}
        assert (answered["hangupCause"] == 16).all()
        assert answered["answered"].null_count() == 0
        assert (answered["durationAnswered"] > 0).all()
        assert (answered["durationBilled"] >= answered["durationAnswered"]).all()
        assert (others["answered"].is_null()).all()
        assert (others["durationAnswered"] == 0).all() and (others["durationBilled"] == 0).all()
        assert (others["billingDebit"] == "0").all() and (others["billingCredit"] == "0").all()
        assert set(typed.filter(pl.col("status") == "busy")["hangupCause"]) == {17}
        assert set(typed.filter(pl.col("status") == "unallocated")["hangupCause"]) <= {1, 3}
        assert (typed["durationTotal"] >= typed["durationAnswered"]).all()
        elapsed = (typed["ended"] - typed["started"]).dt.total_seconds()
        assert (elapsed == typed["durationTotal"]).all()
        assert set(typed["hangupSource"]) <= {"caller", "callee", "system"}
        assert typed["hangupTech"].str.starts_with("SIP ").all()
        money = pl.concat([typed["billingDebit"], typed["billingCredit"]])
        assert money.str.contains(r"^\d+(\.\d{1,4})?$").all()
        assert money.str.contains(r"\.\d{3,4}$").any()  # fractional cents do occur
        restricted = typed.filter(pl.col("callerRestricted") == "true")
        assert (restricted["callerNumber"] == "").all()
        assert set(typed["billingPaymentType"]) == {"prepaid", "postpaid"}
        assert typed["started"].is_sorted()
    inbound = simulate_export(start, end, "inbound").calls
    assert (inbound["callerRestricted"] == "true").any()
    assert (inbound["billingCredit"] != "0").any() and (inbound["billingDebit"] != "0").any()
    texts = "\n".join(inbound["callerName"].unique().to_list())
    assert "Zoë Ørsted" in texts and "株式会社" in texts and '"Pat"' in texts
    numbers = pl.concat([inbound["callerNumber"], inbound["callee"]])
    assert numbers.str.starts_with("+33").any() and numbers.str.starts_with("0").any()
    stamps = pl.concat([inbound["started"], inbound["ended"]])
    for pattern in (r"Z$", r"\+01:00$", r"\.\d{3}(Z|[+-])", r"\.\d{6}(Z|[+-])"):
        assert stamps.str.contains(pattern).any(), pattern


def test_callids_are_exact_int64_above_2_53_and_unique():
    ids: list[int] = []
    for offset in range(3):
        start, end = window(DAY + dt.timedelta(days=offset))
        for direction in ("inbound", "outbound"):
            export = simulate_export(start, end, direction, overlap=False)
            day_ids = [int(i) for i in export.calls["callid"]]
            assert len(day_ids) == len(set(day_ids))
            ids += day_ids
    assert len(ids) == len(set(ids))
    assert min(ids) > TWO_53 and min(ids) >= CALLID_BASE and max(ids) < 2**63
    assert any(float(i) != i for i in ids)  # a float on the way would change them
    # The CSV text is the exact integer.
    start, end = window()
    frame = read_export(generate_export(start, end, "outbound", defects=False))
    assert {int(i) for i in frame["callid"]} == expected_call_ids(start, end, "outbound")


def test_overlap_carries_midnight_calls_into_the_next_day():
    day1, day2 = window(DAY), window(DAY + dt.timedelta(days=1))
    for direction in ("inbound", "outbound"):
        first = simulate_export(*day1, direction)
        second = simulate_export(*day2, direction)
        assert second.carried_over_ids  # some calls cross midnight
        assert second.carried_over_ids <= first.call_ids
        # The carried-over rows are identical in both exports (only the dialect differs).
        both = sorted(second.carried_over_ids)
        rows = [
            export.calls.filter(pl.col("callid").cast(pl.Int64).is_in(both)).sort("callid")
            for export in (first, second)
        ]
        assert rows[0].equals(rows[1])
        # Without overlap the days partition the calls.
        plain1 = expected_call_ids(*day1, direction, overlap=False)
        plain2 = expected_call_ids(*day2, direction, overlap=False)
        assert not plain1 & plain2
        assert plain1 | plain2 == (first.call_ids | second.call_ids) - first.carried_over_ids


def test_a_two_day_window_holds_both_days():
    start, end = window(DAY, days=2)
    both = expected_call_ids(start, end, "outbound")
    assert both == expected_call_ids(*window(DAY), "outbound") | expected_call_ids(
        *window(DAY + dt.timedelta(days=1)), "outbound"
    )


def test_defects_duplicates_and_conflicts_reconcile():
    start, end = window()
    export = simulate_export(start, end, "inbound")
    frame = read_export(export.body)
    assert (export.defect_rows, export.duplicate_rows, export.conflict_rows) == (4, 2, 1)
    assert frame.height == export.rows == len(export.call_ids) + 4 + 2 + 1
    assert frame.height - frame.unique().height == export.duplicate_rows
    ids = frame["callid"].cast(pl.Int64, strict=False)
    valid = ids.is_in(list(export.call_ids)).fill_null(False)
    defects = frame.filter(~valid)
    assert defects.height == export.defect_rows
    assert defects["callid"].str.contains("e+", literal=True).sum() == 1
    assert defects["durationTotal"].str.starts_with("-").sum() == 1
    assert defects["billingDebit"].str.contains(r"\.\d{5}$").sum() == 1
    assert defects["started"].str.contains("T25:").sum() == 1
    # The conflicting version comes first: the last occurrence is the final call.
    conflicted = frame.filter(valid).unique().group_by("callid").len().filter(pl.col("len") > 1)
    assert conflicted.height == 1
    versions = frame.filter(pl.col("callid") == conflicted["callid"][0])
    assert versions["status"][0] == "ringing" and versions["status"][-1] != "ringing"
    clean = simulate_export(start, end, "inbound", defects=False)
    assert clean.rows == len(clean.call_ids) == len(export.call_ids)


def test_an_empty_day_is_a_header_only_file():
    start, end = window()
    export = simulate_export(start, end, "outbound", calls_per_day=0, variety=False)
    assert export.body == (",".join(SOURCE_FIELDS) + "\n").encode()
    assert export.rows == 0 and not export.call_ids


def test_large_generation_is_vectorised():
    start, end = window()
    export = simulate_export(start, end, "outbound", calls_per_day=200_000, overlap=False)
    assert len(export.call_ids) == 200_000
    assert export.rows == 200_000 + export.defect_rows + export.duplicate_rows + 1
    assert read_export(export.body).height == export.rows


def test_naive_or_empty_windows_are_refused():
    start, end = window()
    with pytest.raises(ValueError, match="timezone-aware"):
        generate_export(start.replace(tzinfo=None), end, "inbound")
    with pytest.raises(ValueError, match="before"):
        generate_export(end, start, "inbound")
    with pytest.raises(ValueError, match="direction"):
        generate_export(start, end, "both")


# --- the HTTP surface, spoken to with the standard library ----------------------------------


def post(
    sim: SimulatorServer, path: str, headers: dict[str, str] | None = None, method: str = "POST"
) -> tuple[int, dict[str, str], bytes]:
    host, port = sim.base_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


QUERY = f"{EXPORT_PATH}?direction=outbound&from=2026-11-02T00:00:00Z&to=2026-11-03T00:00:00Z"


def test_http_requires_the_key(simulator: SimulatorServer):
    status, headers, body = post(simulator, QUERY)
    assert status == 401
    assert headers["content-type"] == "application/json"
    assert "API key" in json.loads(body)["error"]["message"]
    status, _, _ = post(simulator, QUERY, {"x-api-key": "wrong"})
    assert status == 401
    assert simulator.api_key not in repr(simulator) + repr(simulator.requests)


def test_http_serves_the_export(simulator: SimulatorServer):
    status, headers, body = post(simulator, QUERY, {"x-api-key": simulator.api_key})
    assert status == 200
    assert headers["content-type"] == "text/csv; charset=utf-8"
    assert int(headers["content-length"]) == len(body)
    assert body == generate_export(*window(), "outbound")
    basic = base64.b64encode(f"ACsid:{simulator.api_key}".encode()).decode()
    status, headers, zipped = post(
        simulator, QUERY, {"Authorization": f"Basic {basic}", "Accept-Encoding": "gzip"}
    )
    assert status == 200 and headers["content-encoding"] == "gzip"
    assert gzip.decompress(zipped) == body


@pytest.mark.parametrize(
    ("path", "method", "status", "says"),
    [
        (QUERY.replace("outbound", "sideways"), "POST", 400, "direction"),
        (QUERY.replace("2026-11-02T00:00:00Z", "yesterday"), "POST", 400, "from"),
        (QUERY.replace("2026-11-03", "2026-11-01"), "POST", 400, "before"),
        ("/v1.0/calls/export", "POST", 404, "no such endpoint"),
        (QUERY, "GET", 405, "POST"),
    ],
)
def test_http_errors(simulator: SimulatorServer, path: str, method: str, status: int, says: str):
    got, _, body = post(simulator, path, {"x-api-key": simulator.api_key}, method)
    assert got == status
    assert says in json.loads(body)["error"]["message"]


def test_faults_are_consumed_one_per_request(simulator: SimulatorServer):
    auth = {"x-api-key": simulator.api_key}
    simulator.inject(Fault.status(429, retry_after="7"), Fault.bad_key())
    status, headers, _ = post(simulator, QUERY, auth)
    assert (status, headers["retry-after"]) == (429, "7")
    assert post(simulator, QUERY, auth)[0] == 401
    assert post(simulator, QUERY, auth)[0] == 200
    assert simulator.pending_faults == 0
    assert simulator.request_count == 3
    assert [r.status for r in simulator.requests] == [429, 401, 200]


def test_cache_dir_serves_the_same_bytes_from_disk(tmp_path):
    options = {"calls_per_day": 300, "seed": 3}
    expected = generate_export(*window(), "outbound", **options)
    cached = cached_export(tmp_path, *window(), "outbound", **options)
    assert cached.read_bytes() == expected
    packed = cached_export(tmp_path, *window(), "outbound", gzip_encoded=True, **options)
    assert gzip.decompress(packed.read_bytes()) == expected
    assert cached_export(tmp_path, *window(), "outbound", **options) == cached  # reused
    assert cached_export(tmp_path, *window(), "inbound", **options) != cached
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind

    with SimulatorServer(cache_dir=tmp_path, **options) as sim:
        auth = {"x-api-key": sim.api_key}
        status, headers, body = post(sim, QUERY, auth)
        assert (status, int(headers["content-length"]), body) == (200, len(expected), expected)
        status, headers, zipped = post(sim, QUERY, {**auth, "Accept-Encoding": "gzip"})
        assert headers["content-encoding"] == "gzip" and gzip.decompress(zipped) == expected
        sim.inject(Fault.truncate(0.5))
        assert sim.requests[-1].body_bytes == len(zipped)
        with pytest.raises(http.client.IncompleteRead):
            post(sim, QUERY, auth)
        assert sim.requests[-1].body_bytes == len(expected) // 2


def test_serve_runs_until_sigterm():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code = (
        "import logging; logging.basicConfig(level=logging.INFO);"
        "from cdr_pipeline.callr.simulator import serve;"
        f"serve('127.0.0.1', {port}, 'cli-key', calls_per_day=50)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stderr=subprocess.PIPE, env=os.environ | {"PYTHONPATH": "."}
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the simulator did not start"
                assert proc.poll() is None, "the simulator exited"
                time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    log = stderr.decode()
    assert re.search(rf"http://127\.0\.0\.1:{port}", log)
    assert "cli-key" not in log
