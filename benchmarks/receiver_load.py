"""Measure the real-time receiver: N signed webhook events from C concurrent clients, on loopback.

    uv run python benchmarks/receiver_load.py --events 10000 --clients 50
    uv run python benchmarks/receiver_load.py --events 10000 --clients 50 --stalled 400

Starts `cdr-pipeline receiver` in its own process on a free port with a temporary data
directory, sends the events (one keep-alive httpx client per thread), prints acknowledged
count, latency percentiles and throughput, and the server's CPU time. With `--stalled S`, S
connections that never finish their request (nothing sent, half a request line, unfinished
headers, a short body: a quarter each) are opened before the load and kept open during it, to
show what they cost real senders, and how many the server has closed by the end
(CDR_RECEIVER_REQUEST_TIMEOUT_S). `--repeat R` runs it R times and adds the medians. Measures,
never asserts.
"""

import argparse
import json
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

from cdr_pipeline_tests.support.receiver import (
    ReceiverProcess,
    latency_summary,
    send_events,
    signed_webhook,
)

FIRST_CALLID = 9_007_199_254_900_000_000
_STALLS = (
    b"",
    b"POST /callr/web",
    b"POST /callr/webhook HTTP/1.1\r\nHost: x\r\n",
    b"POST /callr/webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Content-Length: 1000\r\n\r\n{",
)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _open_stalled(port: int, count: int) -> list[socket.socket]:
    sockets = []
    for i in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(_STALLS[i % len(_STALLS)])
        sock.setblocking(False)
        sockets.append(sock)
    return sockets


def _closed_by_server(sock: socket.socket) -> bool:
    try:
        while sock.recv(65536):
            pass
    except BlockingIOError:
        return False  # still open, nothing (more) to read
    except OSError:
        return True
    return True


def run_once(events: int, clients: int, stalled: int, timeout_s: int) -> dict:
    bodies = [signed_webhook(FIRST_CALLID + i) for i in range(events)]
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        env = {"CDR_RECEIVER_REQUEST_TIMEOUT_S": str(timeout_s)}
        with ReceiverProcess(data_dir, data_dir / "receiver.log", **env) as server:
            assert server.process is not None
            slow = _open_stalled(server.port, stalled)
            cpu_before = _cpu_seconds(server.process.pid)
            started = time.perf_counter()
            outcomes = send_events(server.base_url, bodies, concurrency=clients)
            wall = time.perf_counter() - started
            server_cpu = _cpu_seconds(server.process.pid) - cpu_before
            closed = sum(_closed_by_server(s) for s in slow)
            for sock in slow:
                sock.close()
    summary = latency_summary(outcomes, wall)
    summary |= {
        "clients": clients,
        "server_cpu_s": round(server_cpu, 2),
        "server_cpu_ms_per_event": round(1000 * server_cpu / max(1, len(outcomes)), 3),
    }
    if stalled:
        summary |= {"stalled_connections": stalled, "stalled_closed_by_server": closed}
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--stalled", type=int, default=0, help="stalled connections to hold open")
    parser.add_argument("--request-timeout", type=int, default=10, help="seconds (server setting)")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    runs = [
        run_once(args.events, args.clients, args.stalled, args.request_timeout)
        for _ in range(args.repeat)
    ]
    for run in runs:
        print(json.dumps(run))
    if len(runs) > 1:
        numeric = [k for k, v in runs[0].items() if isinstance(v, (int, float))]
        medians = {k: statistics.median(r[k] for r in runs) for k in numeric}
        print("median:", json.dumps(medians))
    print("load average:", os.getloadavg())


if __name__ == "__main__":
    main()
