"""The lake on S3 (`CDR_LAKE_URL=s3://bucket/prefix`) against moto's S3 server on loopback.

Real HTTP to a real S3 API (signatures and keys checked by moto's IAM where the test says so),
real Parquet, a real DuckDB file and real Dagster runs; the folder lake of the same days
(`loaded_lake`) is the reference the S3 run must match.
"""

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest

from cdr_pipeline import days, warehouse
from cdr_pipeline.callr.client import CallrExportClient
from cdr_pipeline.callr.simulator import SimulatorServer, simulate_export
from cdr_pipeline.config import ConfigError, Settings, check_lake_url, day_window
from cdr_pipeline.defs import runner
from cdr_pipeline.defs.definitions import build_definitions
from cdr_pipeline.lakestore import LakeError
from cdr_pipeline.schema import DIRECTIONS
from cdr_pipeline_tests.conftest import LAKE_DAYS, SIMULATOR_KEY
from cdr_pipeline_tests.support.cli import cdr_pipeline
from cdr_pipeline_tests.support.dagster_processes import free_port
from cdr_pipeline_tests.support.s3_server import BUCKET, FlakyProxy, S3Server, running_s3
from cdr_pipeline_tests.support.warehouse import checksums
from cdr_pipeline_tests.warehouse import test_warehouse as folder_cases

PREFIX = "team/cdr"
LAKE_URL = f"s3://{BUCKET}/{PREFIX}"
TOTALS_SQL = "SELECT count(*), sum(billing_debit), count(DISTINCT call_date) FROM calls"


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with running_s3() as server:
        yield server


def use_s3(monkeypatch: pytest.MonkeyPatch, s3: S3Server, **overrides: str) -> None:
    """The standard AWS variables, as a user sets them, for this test only."""
    for name, value in s3.env(**overrides).items():
        monkeypatch.setenv(name, value)


def s3_settings(tmp_path: Path, base_url: str, lake_url: str = LAKE_URL) -> Settings:
    return Settings.from_env(
        {
            "CDR_DATA_DIR": str(tmp_path / "data"),
            "CDR_START_DATE": "2026-10-01",
            "CALLR_BASE_URL": base_url,
            "CDR_LAKE_URL": lake_url,
        }
    )


def local_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.mark.slow
def test_backfill_on_s3_puts_the_lake_in_the_bucket_and_loads_the_same_warehouse(
    tmp_path: Path, s3: S3Server, simulator: SimulatorServer, loaded_lake: Settings
) -> None:
    # The README's commands ("The lake on S3"), as a user runs them.
    env = s3.env() | {
        "CDR_LAKE_URL": LAKE_URL,
        "CALLR_BASE_URL": simulator.base_url,
        "CALLR_API_KEY": SIMULATOR_KEY,
        "CDR_START_DATE": "2026-10-01",
    }
    first, last = LAKE_DAYS[0].isoformat(), LAKE_DAYS[-1].isoformat()
    with s3.checking_credentials():
        backfill = cdr_pipeline("backfill", "--start", first, "--end", last, cwd=tmp_path, **env)
    assert backfill.returncode == 0, backfill.stdout + backfill.stderr
    settings = Settings.from_env({"CDR_DATA_DIR": str(tmp_path / "data")})

    keys = s3.keys(f"{PREFIX}/")
    assert [k for k in keys if k.startswith(f"{PREFIX}/raw/")] == sorted(
        f"{PREFIX}/raw/{day}/{direction}.csv" for day in LAKE_DAYS for direction in DIRECTIONS
    )
    for day in LAKE_DAYS:
        assert f"{PREFIX}/parquet/calls/call_date={day}/part-{day}.parquet" in keys
        assert f"{PREFIX}/parquet/call_rejects/call_date={day}/part-{day}.parquet" in keys
        start, end = day_window(day, "UTC")
        for direction in DIRECTIONS:
            raw = s3.read(f"{PREFIX}/raw/{day}/{direction}.csv")
            assert raw == simulate_export(start, end, direction).body
    # Each later day's export carries calls of the day before: two files in that folder.
    assert f"{PREFIX}/parquet/calls/call_date={LAKE_DAYS[0]}/part-{LAKE_DAYS[1]}.parquet" in keys
    assert not [k for k in keys if k.startswith(f"{PREFIX}/staging/")]
    # Nothing of the lake on local disk (scratch folders are emptied).
    for folder in ("raw", "parquet", "staging"):
        assert local_files(settings.data_dir / folder) == []

    reference = checksums(loaded_lake)
    assert checksums(settings) == reference
    again = cdr_pipeline("backfill", "--start", first, "--end", first, cwd=tmp_path, **env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert checksums(settings) == reference  # a re-load changes nothing

    snapshot = cdr_pipeline("snapshot", cwd=tmp_path, **env)
    assert snapshot.returncode == 0, snapshot.stdout + snapshot.stderr
    with (
        duckdb.connect(
            str(tmp_path / "data" / "warehouse-snapshot.duckdb"), read_only=True
        ) as copy,
        duckdb.connect(str(loaded_lake.warehouse), read_only=True) as folder_lake,
    ):
        totals = copy.execute(TOTALS_SQL).fetchone()
        assert totals == folder_lake.execute(TOTALS_SQL).fetchone()
        assert totals[0] > 0

    # The key is in no output, log, run record (the Dagster home is under data/) or file.
    secret = s3.secret_access_key
    for result in (backfill, again, snapshot):
        assert secret not in result.stdout + result.stderr
    for path in local_files(tmp_path):
        assert secret.encode() not in path.read_bytes(), path


def land_one_day(tmp_path: Path, simulator: SimulatorServer, lake_url: str) -> None:
    lake = warehouse.Lake(tmp_path / "data", lake_url)
    with CallrExportClient(simulator.base_url, SIMULATOR_KEY) as client:
        days.land_days([LAKE_DAYS[0]], lake, "UTC", client=client)


@pytest.mark.parametrize(
    ("fault", "names"),
    [
        ("unreachable", ["AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL", "did not answer"]),
        ("wrong secret", ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "rejected"]),
        ("unknown key", ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "rejected"]),
        ("missing bucket", ["the bucket does not exist"]),
    ],
)
def test_an_unusable_lake_fails_at_once_naming_the_url_and_the_variable(
    tmp_path: Path,
    s3: S3Server,
    simulator: SimulatorServer,
    monkeypatch: pytest.MonkeyPatch,
    fault: str,
    names: list[str],
) -> None:
    wrong = "wrong-secret-5d41402abc4b2a76b9719d911017c592"
    overrides = {
        "unreachable": {"endpoint": f"http://127.0.0.1:{free_port()}"},
        "wrong secret": {"AWS_SECRET_ACCESS_KEY": wrong},
        "unknown key": {
            "AWS_ACCESS_KEY_ID": "AKIAWRONGWRONGWRONG1",
            "AWS_SECRET_ACCESS_KEY": wrong,
        },
    }.get(fault, {})
    use_s3(monkeypatch, s3, **overrides)
    lake_url = f"s3://no-such-bucket/{PREFIX}" if fault == "missing bucket" else LAKE_URL
    before = s3.keys("")
    with s3.checking_credentials(), pytest.raises(LakeError) as caught:
        land_one_day(tmp_path, simulator, lake_url)
    message = str(caught.value)
    assert f"the lake {lake_url} (CDR_LAKE_URL)" in message
    for name in names:
        assert name in message
    assert wrong not in message and s3.secret_access_key not in message
    assert simulator.request_count == 0  # checked before any export was fetched
    assert s3.keys("") == before  # no day, not even a part of one
    assert local_files(tmp_path / "data") == []


def test_a_wrong_key_fails_the_dagster_run_with_the_fix_and_no_secret(
    tmp_path: Path,
    s3: S3Server,
    simulator: SimulatorServer,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wrong = "wrong-secret-7215ee9c7d9dc229d2921a40e899ec5f"
    use_s3(monkeypatch, s3, AWS_SECRET_ACCESS_KEY=wrong)
    monkeypatch.setenv("CALLR_API_KEY", SIMULATOR_KEY)
    defs = build_definitions(s3_settings(tmp_path, simulator.base_url))
    with s3.checking_credentials():
        (outcome,) = runner.run_ranges(defs, LAKE_DAYS[:2], instance, days_per_run=2)
    assert not outcome.success and outcome.failed_days == {}  # the lake, not a day
    assert f"the lake {LAKE_URL} (CDR_LAKE_URL)" in outcome.error
    assert "AWS_SECRET_ACCESS_KEY" in outcome.error
    logs = "\n".join(str(e) for e in instance.all_logs(outcome.run_id))
    assert "AWS_SECRET_ACCESS_KEY" in logs
    assert wrong not in logs and wrong not in outcome.error
    assert simulator.request_count == 0


def stage_day(folder: Path, calls: int) -> tuple[list[Path], Path]:
    """A partition's staged files, as `type_day` leaves them: calls of two call dates."""
    staged = []
    for call_date in ("2026-11-01", "2026-11-02"):
        path = folder / f"call_date={call_date}" / "0.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pl.DataFrame({"call_id": list(range(calls))}).write_parquet(path)
        staged.append(path)
    rejects = folder / "rejects.parquet"
    pl.DataFrame({"reason": ["bad"] * calls}).write_parquet(rejects)
    return staged, rejects


DAY = dt.date(2026, 11, 2)


def test_slow_down_and_server_errors_are_retried_with_backoff(
    tmp_path: Path, s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    failed: set[tuple[str, str]] = set()

    def first_attempts(method: str, path: str, _count: int) -> bool:
        """The first try of every write and read answers 503 SlowDown."""
        if method in ("PUT", "GET") and (method, path) not in failed:
            failed.add((method, path))
            return True
        return False

    prefix = f"{PREFIX}/retries"
    lake = warehouse.Lake(tmp_path / "data", f"s3://{BUCKET}/{prefix}")
    with FlakyProxy(s3.port, first_attempts) as proxy:
        use_s3(monkeypatch, s3, endpoint=proxy.endpoint)
        published = warehouse.publish_partition(lake, DAY, *stage_day(tmp_path / "s", 7))
        rows = [lake.store.parquet_rows(key) for key in published]
    assert rows == [7, 7]
    refused = [(method, path) for method, path, status in proxy.requests if status == 503]
    assert len(refused) >= 6  # 3 uploads, 3 copies, the footer reads: each refused once
    for attempt in refused:  # and then tried again, successfully
        later = [s for m, p, s in proxy.requests if (m, p) == attempt][1:]
        assert later and all(200 <= status < 300 for status in later)
    rejects = f"{prefix}/{lake.rejects_key(DAY)}"
    assert s3.keys(f"{prefix}/") == sorted([*(f"{prefix}/{key}" for key in published), rejects])


def test_a_publish_that_fails_midway_leaves_the_previous_day_whole(
    tmp_path: Path, s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = f"{PREFIX}/midway"
    lake_url = f"s3://{BUCKET}/{prefix}"
    use_s3(monkeypatch, s3)
    warehouse.publish_partition(
        warehouse.Lake(tmp_path, lake_url), DAY, *stage_day(tmp_path / "v1", 3)
    )
    before = {key: s3.read(key) for key in s3.keys(f"{prefix}/")}

    def rejects_upload(method: str, path: str, _count: int) -> bool:
        """The last file's upload is refused: the day's calls files are already up."""
        return method == "PUT" and "/staging/" in path and "call_rejects" in path

    with FlakyProxy(s3.port, rejects_upload, status=403) as proxy:
        use_s3(monkeypatch, s3, endpoint=proxy.endpoint)
        with pytest.raises(LakeError, match="CDR_LAKE_URL"):
            lake = warehouse.Lake(tmp_path, lake_url)  # reads the variables when first used
            warehouse.publish_partition(lake, DAY, *stage_day(tmp_path / "v2", 5))
    assert any(status == 403 for _m, _p, status in proxy.requests)
    assert {key: s3.read(key) for key in s3.keys(f"{prefix}/")} == before  # temp keys removed


@pytest.mark.parametrize(
    "case",
    [
        folder_cases.test_call_in_two_exports_is_stored_once_in_any_order,
        folder_cases.test_rerun_replaces_what_the_partition_loaded_before,
        folder_cases.test_removed_call_is_restored_from_another_partition,
    ],
    ids=lambda case: case.__name__.removeprefix("test_"),
)
def test_the_loader_does_on_s3_what_it_does_on_a_folder(
    tmp_path: Path, s3: S3Server, monkeypatch: pytest.MonkeyPatch, case: Callable
) -> None:
    """test_warehouse's cases (a call in two days' exports, a re-run, a restore from another
    day's files), with the lake on S3: publishes, listings and downloads through the S3 API."""
    use_s3(monkeypatch, s3)
    prefix = f"{PREFIX}/loader/{case.__name__}"
    case(warehouse.Lake(tmp_path / "data", f"s3://{BUCKET}/{prefix}"), tmp_path)
    assert any(key.startswith(f"{prefix}/parquet/calls/") for key in s3.keys(f"{prefix}/"))
    assert local_files(tmp_path / "data") == []  # downloads are scratch, removed after


@pytest.mark.parametrize(
    "url",
    ["gs://bucket/cdr", "s3://AKIAX:hunter2secret@bucket/cdr", "s3://bucket/cdr?region=x", "s3://"],
)
def test_a_lake_url_that_is_not_a_folder_or_s3_is_refused_without_echoing_secrets(
    url: str,
) -> None:
    with pytest.raises(ConfigError, match="CDR_LAKE_URL") as caught:
        check_lake_url(url)
    assert "hunter2secret" not in str(caught.value)


def test_a_folder_lake_url_is_the_lake(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {"CDR_DATA_DIR": str(tmp_path / "data"), "CDR_LAKE_URL": str(tmp_path / "lake")}
    )
    lake = warehouse.Lake(settings.data_dir, settings.lake_url)
    assert lake.raw_file(DAY, "inbound") == tmp_path / "lake" / "raw" / str(DAY) / "inbound.csv"
    assert lake.staging_dir == tmp_path / "lake" / "staging"  # a publish stays a rename
    assert Settings.from_env({"CDR_DATA_DIR": str(tmp_path)}).lake_url == str(tmp_path)


def test_erasure_and_retention_refuse_an_s3_lake_before_changing_anything(
    tmp_path: Path, s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cdr_pipeline import erasure, marts, privacy, retention

    use_s3(monkeypatch, s3)
    data = tmp_path / "data"
    lake = warehouse.Lake(data, LAKE_URL)
    with pytest.raises(LakeError, match=r"folder lake only.*\(CDR_LAKE_URL\)"):
        erasure.erase_number(
            "+33612345678",
            lake=lake,
            warehouse_path=data / "warehouse.duckdb",
            landing_file=data / "landing.sqlite",
            key=None,
            settings=marts.MartSettings(),
        )
    assert not privacy.privacy_dir(data).exists()  # not even on the erasure list
    with pytest.raises(LakeError, match="raw retention works on a folder lake only"):
        retention.apply_raw_retention(
            lake, data / "landing.sqlite", retention_days=30, timezone="UTC", today=LAKE_DAYS[0]
        )
    with duckdb.connect() as con, pytest.raises(LakeError, match="calls retention"):
        retention.apply_calls_retention(con, lake, LAKE_DAYS[0])
