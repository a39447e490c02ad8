"""Measure the real-time receiver: N signed webhook events from C concurrent clients, on loopback.

    uv run python benchmarks/receiver_load.py --events 10000 --clients 50

Starts `cdr-pipeline receiver` in its own process on a free port with a temporary data
directory, sends the events (one keep-alive httpx client per thread), prints acknowledged
count, latency percentiles and throughput, and the server's CPU time. Measures, never asserts.
"""

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from cdr_pipeline_tests.receiver_fixtures import (
    ReceiverProcess,
    latency_summary,
    send_events,
    signed_webhook,
)

FIRST_CALLID = 9_007_199_254_900_000_000


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=50)
    args = parser.parse_args()
    bodies = [signed_webhook(FIRST_CALLID + i) for i in range(args.events)]
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        with ReceiverProcess(data_dir, data_dir / "receiver.log") as server:
            assert server.process is not None
            cpu_before = _cpu_seconds(server.process.pid)
            started = time.perf_counter()
            outcomes = send_events(server.base_url, bodies, concurrency=args.clients)
            wall = time.perf_counter() - started
            server_cpu = _cpu_seconds(server.process.pid) - cpu_before
    summary = latency_summary(outcomes, wall)
    summary |= {
        "clients": args.clients,
        "server_cpu_s": round(server_cpu, 2),
        "server_cpu_ms_per_event": round(1000 * server_cpu / max(1, len(outcomes)), 3),
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
