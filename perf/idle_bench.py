"""Idle CPU of real daemons: what an N = 4 cluster costs when nobody submits anything.

Starts N = 4 daemons (``LocalCluster``, the e2e tests' harness), orders ``--updates``
client-signed updates at every replica (so every sub-protocol has run and the
cluster is in the state it is left in after load), waits ``--settle`` seconds,
then measures over ``--idle`` seconds the CPU each process kind of each replica
used (``prime.proc.cpuacct``: ``utime + stime`` from /proc/PID/stat, and the exact
schedstat run time, summed over threads), and the peer frames each net process
read meanwhile (its stats lines). Then it submits again, one update at a time at
every replica, and reports how fast the first and the rest are ordered: idling
must not slow the return to work.

    .venv/bin/python perf/idle_bench.py [--idle 30] [--settle 5] [--workers 1] [--updates 200]

Writes perf/results/idle_bench.json. CPU figures are percent of one core. The
bound the e2e test holds (tests/e2e/test_idle.py, docs/design.md section 10):
under ``IDLE_CPU_PCT_MAX`` per replica, summed over its processes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prime.proc.localcluster import LocalCluster  # noqa: E402

STATS_INTERVAL_MS = 1000  # conf/def.toml's default ([logging] stats_interval_ms)


def _peer_in(c: LocalCluster, i: int) -> tuple[float, int]:
    """(when, peer frames read so far) from replica ``i``'s newest net stats line."""
    line = c.stats(i, "net")
    return float(line.get("t", 0.0)), int(line.get("counts", {}).get("peer_in", 0))


def _rate(a: tuple[float, int], b: tuple[float, int]) -> float | None:
    return round((b[1] - a[1]) / (b[0] - a[0]), 2) if b[0] > a[0] else None


def run(args: argparse.Namespace) -> dict[str, Any]:
    c = LocalCluster(workers=args.workers, settings={"logging": {"stats_interval_ms": args.stats_interval_ms}})
    try:
        c.start_all()
        ids = list(range(1, c.n + 1))
        loads = [c.load(i, inflight=8, count=args.updates, duration=60, linger=0.5, grace=30) for i in ids]
        warm = [c.result(e, 120) for e in loads]
        assert all(r["own_delivered"] == args.updates for r in warm), [r["own_delivered"] for r in warm]
        time.sleep(args.settle)
        frames0 = {i: _peer_in(c, i) for i in ids}
        t0 = time.monotonic()
        cpu = c.measure_cpu(args.idle, ids)
        wall = time.monotonic() - t0
        after_s = 2.5 * args.stats_interval_ms / 1000  # a stats line written after the window
        time.sleep(after_s)
        frames1 = {i: _peer_in(c, i) for i in ids}
        resume = [c.load(i, inflight=1, count=args.resume_updates, duration=60, linger=0.5, grace=30,
                         extra=["--latencies"]) for i in ids]
        back = [c.result(e, 120) for e in resume]
        lat = sorted(x for r in back for x in r["latencies_ms"])
        first = [r["latencies_ms"][0] for r in back if r["latencies_ms"]]
        pct = {i: {kind: {k: round(100 * v / wall, 3) for k, v in figs.items()} for kind, figs in per.items()}
               for i, per in cpu.items()}
        kinds = sorted({k for per in pct.values() for k in per if k != "total"})
        return {
            "n": c.n,
            "workers": args.workers,
            "stats_interval_ms": args.stats_interval_ms,
            "warm_updates_per_replica": args.updates,
            "settle_s": args.settle,
            "idle_window_s": round(wall, 2),
            "cpu_pct_by_replica": {str(i): per for i, per in pct.items()},
            # per kind: the mean over replicas of that kind's share of a core (run_s, exact)
            "cpu_pct_mean_by_kind": {k: round(statistics.mean(pct[i].get(k, {}).get("run_s", 0.0) for i in ids), 3)
                                     for k in kinds},
            "cpu_pct_replica_total_max": {
                "run_s": max(pct[i]["total"]["run_s"] for i in ids),
                "cpu_ticks_s": max(pct[i]["total"]["cpu_ticks_s"] for i in ids),
            },
            "peer_frames_in_per_s_by_replica": {str(i): _rate(frames0[i], frames1[i]) for i in ids},
            "resume_updates_per_replica": args.resume_updates,
            "resume_first_latency_ms": [round(x, 2) for x in first],
            "resume_p50_ms": round(statistics.median(lat), 2) if lat else None,
            "resume_max_ms": round(lat[-1], 2) if lat else None,
            "resume_all_delivered": all(r["own_delivered"] == args.resume_updates for r in back),
        }
    finally:
        c.close()
        c.remove()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of the idle window")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds between the last update and the window")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--updates", type=int, default=200, help="updates ordered at each replica before idling")
    parser.add_argument("--stats-interval-ms", type=int, default=STATS_INTERVAL_MS,
                        help="[logging] stats_interval_ms of the daemons (0: no stats lines, no frame counts)")
    parser.add_argument("--resume-updates", type=int, default=20, help="updates at each replica after the window")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "idle_bench.json"))
    args = parser.parse_args()
    load0 = os.getloadavg()[0]
    result = run(args)
    result["cpus"] = os.cpu_count()
    result["load_avg_1m_before"] = round(load0, 2)
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
