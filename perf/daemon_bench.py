"""Real daemons on loopback: throughput, latency and CPU per process kind.

N = 4 daemons (``bin/prime``) and one closed-loop load generator per replica
(``python -m prime.app.load``: client-signed 300-byte updates), for each
``workers`` setting and each in-flight count. Throughput is the sum over the
four clients of their own updates delivered per second; latency is submit to
delivery at the client's own replica (p50/p99 over all four clients); CPU is
each process's user+system seconds (its last stats line, written at shutdown),
summed per process kind over the four replicas, per 1000 updates and as a
share of one core over the run.

    .venv/bin/python perf/daemon_bench.py [--duration 8] [--workers 0 1 2] [--inflight 1 64]

Writes perf/results/daemon_bench.json. The machine's load average is recorded:
the figures are only comparable on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prime.proc.localcluster import LocalCluster  # noqa: E402


def _kind(proc: str) -> str:
    return "worker" if proc.startswith("worker") else proc


def run_one(workers: int, inflight: int, duration: float, payload: int) -> dict[str, Any]:
    c = LocalCluster(workers=workers)
    try:
        c.start_all()
        t0 = time.monotonic()
        loads = [c.load(i, inflight=inflight, duration=duration, linger=0.5, grace=30, payload=payload,
                        extra=["--latencies"]) for i in range(1, 5)]
        results = [c.result(e, duration + 90) for e in loads]
        wall = time.monotonic() - t0
        for i in range(1, 5):
            c.stop(i)
        lat = sorted(x for r in results for x in r["latencies_ms"])
        delivered = sum(r["own_delivered"] for r in results)
        elapsed = max(r["elapsed_s"] for r in results)
        cpu: dict[str, float] = defaultdict(float)
        views = []
        for i in range(1, 5):
            seen: dict[str, float] = {}
            for line in c.log(i).splitlines():
                if line.startswith("stats "):
                    d = json.loads(line[6:])
                    seen[d["proc"]] = d["cpu_s"]
                    if d["proc"] == "engine":
                        views.append(d["view"])
            for proc, s in seen.items():
                cpu[_kind(proc)] += s
        return {
            "workers": workers,
            "inflight_per_client": inflight,
            "clients": 4,
            "payload_bytes": payload,
            "updates": delivered,
            "elapsed_s": round(elapsed, 2),
            "throughput_ups": round(delivered / elapsed, 1),
            "p50_ms": round(statistics.median(lat), 2) if lat else None,
            "p99_ms": round(lat[int(0.99 * (len(lat) - 1))], 2) if lat else None,
            "final_view_max": max(views) if views else None,
            "cpu_s_by_kind": {k: round(v, 2) for k, v in sorted(cpu.items())},
            "cpu_ms_per_update_by_kind": {k: round(1000 * v / delivered, 3) for k, v in sorted(cpu.items())} if delivered else {},
            "cpu_cores_by_kind": {k: round(v / wall, 2) for k, v in sorted(cpu.items())},
        }
    finally:
        c.close()
        c.remove()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--inflight", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--payload-bytes", type=int, default=300)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "daemon_bench.json"))
    args = parser.parse_args()
    runs = []
    for workers in args.workers:
        for inflight in args.inflight:
            load0 = os.getloadavg()[0]
            r = run_one(workers, inflight, args.duration, args.payload_bytes)
            r["load_avg_1m_before"] = round(load0, 2)
            print(json.dumps(r), flush=True)
            runs.append(r)
    out = {"n": 4, "cpus": os.cpu_count(), "duration_s": args.duration, "runs": runs}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
