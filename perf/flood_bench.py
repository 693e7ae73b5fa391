"""A Byzantine replica floods valid messages at full speed (issue 14, item 1).

N = 4 real daemons; replicas 1..3 run, and this script plays replica 4 with its
real keys (signing and CURVE link keys): it pre-signs a pool of distinct, validly
signed PO-Requests (each carrying a daemon-originated no-op update) and
reconciliation messages, then sends them round and round to replicas 1..3 as fast
as the sockets take them. Same run, two phases with the same closed-loop load on
replicas 1..3: without the flood, then with it. Reported per phase: the clients'
throughput and latency, view changes, the leader's turnaround (TAT) as replica 2
measures it against its suspicion bound, and the flooder's frames sent and the
inbound counters of the replicas (served per class, refused per class).

    .venv/bin/python perf/flood_bench.py [--duration 10] [--inflight 16] [--pool 3000]
                                         [--nice 10] [--sndhwm 16]

The flood is gapped from its first frame by default (``--sndhwm 16``: the flooder skips
a frame for a target whose short send queue is full, so each target holds a different
part of replica 4's PO sequence; with ZeroMQ's default 1,000 the first thousand frames
reach every target alike). ``--nice`` runs the clients and the flooder at that lower
CPU priority (they stand for other machines).

Writes perf/results/flood_bench.json.
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

from prime.proc.localcluster import Flooder, LocalCluster, flood_pool  # noqa: E402

FLOODER = 4


def phase(c: LocalCluster, inflight: int, duration: float, nice: int) -> dict[str, Any]:
    before = {i: c.stats(i, "engine") for i in (1, 2, 3)}
    loads = [c.load(i, inflight=inflight, duration=duration, linger=0.5, grace=30, extra=["--latencies"],
                    nice=nice) for i in (1, 2, 3)]
    tats = []
    t_end = time.monotonic() + duration
    while time.monotonic() < t_end:
        time.sleep(0.5)
        e = c.stats(2, "engine")
        tats.append((e.get("tat_leader_us"), e.get("tat_bound_us")))
    results = [c.result(x, duration + 90) for x in loads]
    after = {i: c.stats(i, "engine") for i in (1, 2, 3)}
    lat = sorted(x for r in results for x in r["latencies_ms"])
    delivered = sum(r["own_delivered"] for r in results)
    elapsed = max(r["elapsed_s"] for r in results)
    return {
        "throughput_ups": round(delivered / elapsed, 1),
        "p50_ms": round(statistics.median(lat), 2) if lat else None,
        "p99_ms": round(lat[int(0.99 * (len(lat) - 1))], 2) if lat else None,
        "view_changes": after[1].get("view", 0) - before[1].get("view", 0),
        "suspicions_at_2": after[2].get("suspicions", 0) - before[2].get("suspicions", 0),
        "suspicions": {i: after[i].get("suspicions", 0) - before[i].get("suspicions", 0) for i in (1, 2, 3)},
        # per replica: [replica 4's requests held beyond the first one missing, its ARU]
        "flooder_gapped": {i: after[i].get("po_gapped", {}).get(str(FLOODER)) for i in (1, 2, 3)},
        "tat_leader_max_ms": max((t / 1000 for t, _ in tats if t is not None), default=None),
        "tat_bound_min_ms": min((b / 1000 for _, b in tats if b is not None), default=None),
        "inbound_at_1": {k: v for k, v in c.stats(1, "net").get("traffic", {}).items() if k.startswith(("in:", "drop:in"))},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--inflight", type=int, default=16)
    parser.add_argument("--pool", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=0.0,
                        help="flood frames per second to each replica (0: as fast as possible)")
    parser.add_argument("--nice", type=int, default=10, help="CPU niceness of the clients and the flooder")
    parser.add_argument("--sndhwm", type=int, default=16, help="the flooder's send queue per target, frames")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "flood_bench.json"))
    args = parser.parse_args()
    c = LocalCluster(workers=1)
    out: dict[str, Any] = {"n": 4, "running": [1, 2, 3], "flooder": FLOODER, "cpus": os.cpu_count(),
                           "flood_rate_per_target": args.rate or "unlimited",
                           "nice": args.nice, "flooder_sndhwm": args.sndhwm,
                           "load_avg_1m_before": round(os.getloadavg()[0], 2)}
    flood = None
    try:
        pool = flood_pool(c.keys, FLOODER, args.pool)
        c.start_all([1, 2, 3])
        time.sleep(3)
        out["fault_free"] = phase(c, args.inflight, args.duration, args.nice)
        print(json.dumps({"fault_free": out["fault_free"]}), flush=True)
        flood = Flooder(c, FLOODER, (1, 2, 3), pool, args.rate, nice=args.nice, sndhwm=args.sndhwm)
        flood.start()
        time.sleep(1)
        out["flooding"] = phase(c, args.inflight, args.duration, args.nice)
        out["flooding"]["flooder_frames_sent"] = flood.sent
        out["flooding"]["flooder_would_block"] = flood.full
        print(json.dumps({"flooding": out["flooding"]}), flush=True)
        out["ratio"] = round(out["flooding"]["throughput_ups"] / out["fault_free"]["throughput_ups"], 3)
    finally:
        if flood is not None:
            flood.close()
        out["left_behind"] = c.close()
        c.remove()
    out["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps({"ratio": out.get("ratio")}))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
