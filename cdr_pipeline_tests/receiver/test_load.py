"""The receiver under load and faults, over real HTTP on loopback, with a real server process.

Bounded and self-stopping: fixed event counts, a deadline on every phase, the server stopped
(or killed) by the test. The figures are printed and written to
`test-artifacts/receiver_load.json`; docs/realtime.md quotes them.
"""

import json
import sqlite3
import threading
import time
from pathlib import Path

import dagster as dg

from cdr_pipeline import warehouse
from cdr_pipeline.config import Settings
from cdr_pipeline.defs.definitions import build_definitions
from cdr_pipeline.landing import landing_path
from cdr_pipeline_tests.support import paths
from cdr_pipeline_tests.support.receiver import (
    ReceiverProcess,
    latency_summary,
    send_events,
    sensor_tick,
    signed_webhook,
)

ARTIFACTS = paths.ARTIFACTS
FIRST_CALLID = 9_007_199_254_800_000_000  # above 2**53: a float anywhere would show


def _record(name: str, figures: dict) -> None:
    print(f"\n{name}: {json.dumps(figures)}")
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "receiver_load.json"
    existing = json.loads(path.read_text()) if path.exists() else {}
    existing[name] = figures
    path.write_text(json.dumps(existing, indent=2, sort_keys=True) + "\n")


def _landed_callids(data_dir: Path) -> list[int]:
    con = sqlite3.connect(f"file:{landing_path(data_dir)}?mode=ro", uri=True)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return [int(r[0]) for r in con.execute("SELECT callid FROM events ORDER BY seq")]
    finally:
        con.close()


def _warehouse_callids(settings: Settings) -> set[int]:
    with warehouse.connect(settings.warehouse, read_only=True) as con:
        rows = con.execute("SELECT call_id FROM calls WHERE source = 'webhook'").fetchall()
    return {r[0] for r in rows}


def _load_with_sensor(settings: Settings, instance: dg.DagsterInstance) -> float:
    started = time.perf_counter()
    tick = sensor_tick(build_definitions(settings), instance)
    assert tick.success and len(tick.run_ids) == 1
    return time.perf_counter() - started


def test_10000_signed_events_from_50_clients_all_reach_calls(
    tmp_path: Path, instance: dg.DagsterInstance
):
    count, clients = 10_000, 50
    bodies = [signed_webhook(FIRST_CALLID + i) for i in range(count)]
    with ReceiverProcess(tmp_path, tmp_path / "receiver.log") as server:
        started = time.perf_counter()
        outcomes = send_events(server.base_url, bodies, concurrency=clients, timeout_s=120)
        wall = time.perf_counter() - started
    acknowledged = [o for o in outcomes if o.acknowledged]
    assert len(outcomes) == count, "the load did not finish within its deadline"
    assert len(acknowledged) == count, {o.status for o in outcomes if not o.acknowledged}

    settings = Settings.from_env({"CDR_DATA_DIR": str(tmp_path)})
    load_s = _load_with_sensor(settings, instance)
    expected = {FIRST_CALLID + o.index for o in acknowledged}
    assert _warehouse_callids(settings) == expected
    _record(
        "load_10000_events_50_clients",
        {**latency_summary(outcomes, wall), "clients": clients, "sensor_run_s": round(load_s, 2)},
    )


def test_sigkill_mid_load_loses_no_acknowledged_event(tmp_path: Path, instance: dg.DagsterInstance):
    count, clients, kill_after, held_from = 4_000, 50, 1_500, 3_000
    bodies = [signed_webhook(FIRST_CALLID + i) for i in range(count)]
    server = ReceiverProcess(tmp_path, tmp_path / "receiver.log").start()
    outcomes: list = []
    # Events from `held_from` on are sent only after the kill: however fast this machine is,
    # the load is unfinished when the server dies (the first ones may be in flight then).
    killed = threading.Event()
    sender = threading.Thread(
        target=lambda: outcomes.extend(
            send_events(
                server.base_url,
                bodies,
                concurrency=clients,
                timeout_s=60,
                held_from=held_from,
                release=killed,
            )
        )
    )
    try:
        sender.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # kill once enough events have landed
            if landing_path(tmp_path).exists() and len(_landed_callids(tmp_path)) >= kill_after:
                break
            time.sleep(0.02)
        server.kill()
        killed.set()
        killed_at = len(_landed_callids(tmp_path))
        sender.join(timeout=90)
        assert not sender.is_alive()
    finally:
        killed.set()
        server.kill()
    first_acks = {o.index for o in outcomes if o.acknowledged}
    failed = [o.index for o in outcomes if not o.acknowledged]
    assert 0 < len(first_acks) < count and failed, "the kill did not land mid-load"

    # Every acknowledged event survived the SIGKILL.
    landed = set(_landed_callids(tmp_path))
    assert {FIRST_CALLID + i for i in first_acks} <= landed

    # Restart on the same store; the senders retry what was not acknowledged (as Callr does).
    with ReceiverProcess(tmp_path, tmp_path / "receiver.log", port=server.port) as restarted:
        retried = send_events(
            restarted.base_url, [bodies[i] for i in failed], concurrency=clients, timeout_s=60
        )
    assert all(o.acknowledged for o in retried)
    landed_list = _landed_callids(tmp_path)
    assert len(landed_list) == len(set(landed_list)) == count  # each event once

    settings = Settings.from_env({"CDR_DATA_DIR": str(tmp_path)})
    _load_with_sensor(settings, instance)
    assert _warehouse_callids(settings) == {FIRST_CALLID + i for i in range(count)}
    _record(
        "sigkill_mid_load",
        {
            "events": count,
            "clients": clients,
            "landed_when_killed": killed_at,
            "acknowledged_before_kill": len(first_acks),
            "landed_but_unacknowledged": len(landed - {FIRST_CALLID + i for i in first_acks}),
            "failed_and_retried": len(failed),
            "acknowledged_lost": 0,
            "duplicates_after_retry": 0,
        },
    )
