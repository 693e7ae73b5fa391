"""The transport's cost and behaviour on real daemons (issue 14).

Three experiments, each N = 4 ``bin/prime`` daemons with one closed-loop load
generator per replica (client-signed 300-byte updates, ``workers = 1``):

* ``curve``: throughput, latency and net-process CPU with ``link_security =
  "curve"`` and ``"none"``, alternated ``--repeats`` times in the same invocation so
  both see the same machine load; the cost is the ratio of the medians.
* ``wan``: four emulated sites 10 to 50 ms apart (``[[links]]``, 1 ms jitter):
  throughput, latency, view changes.
* ``throttle``: ``throttle_outgoing`` on with small per-class rates; each class's
  outgoing rate measured from replica 1's net stats over the middle of the run.

    .venv/bin/python perf/transport_bench.py [--duration 8] [--repeats 3] [--only curve wan throttle]

Writes perf/results/transport_bench.json. The machine's load average is recorded:
on a shared machine the absolute figures move, the on/off ratio less so.
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

SITES_MS = {(1, 2): 10.0, (1, 3): 20.0, (1, 4): 30.0, (2, 3): 40.0, (2, 4): 50.0, (3, 4): 25.0}


def _net_cpu(c: LocalCluster) -> float:
    return sum(c.stats(i, "net").get("cpu_s", 0.0) for i in range(1, 5))


def run_load(c: LocalCluster, inflight: int, duration: float, sample: Any = None) -> dict[str, Any]:
    c.start_all()
    loads = [c.load(i, inflight=inflight, duration=duration, linger=0.5, grace=30, extra=["--latencies"])
             for i in range(1, 5)]
    sampled = sample(c) if sample else None
    results = [c.result(e, duration + 90) for e in loads]
    for i in range(1, 5):
        c.stop(i)
    lat = sorted(x for r in results for x in r["latencies_ms"])
    delivered = sum(r["own_delivered"] for r in results)
    elapsed = max(r["elapsed_s"] for r in results)
    out = {
        "updates": delivered,
        "elapsed_s": round(elapsed, 2),
        "throughput_ups": round(delivered / elapsed, 1),
        "p50_ms": round(statistics.median(lat), 2) if lat else None,
        "p99_ms": round(lat[int(0.99 * (len(lat) - 1))], 2) if lat else None,
        "final_views": [c.stats(i, "engine").get("view") for i in range(1, 5)],
        "net_cpu_s": round(_net_cpu(c), 2),
        "net_cpu_ms_per_update": round(1000 * _net_cpu(c) / delivered, 3) if delivered else None,
    }
    if sampled is not None:
        out.update(sampled)
    return out


def curve(duration: float, repeats: int, inflight: int) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {"curve": [], "none": []}
    for _ in range(repeats):
        for mode in ("curve", "none"):
            c = LocalCluster(workers=1, settings={"networking": {"link_security": mode}})
            try:
                r = run_load(c, inflight, duration)
            finally:
                c.close()
                c.remove()
            r["load_avg_1m"] = round(os.getloadavg()[0], 2)
            print(json.dumps({"curve": mode, **r}), flush=True)
            runs[mode].append(r)
    med = {m: statistics.median(r["throughput_ups"] for r in rs) for m, rs in runs.items()}
    cpu = {m: statistics.median(r["net_cpu_ms_per_update"] or 0 for r in rs) for m, rs in runs.items()}
    return {
        "inflight_per_client": inflight,
        "runs": runs,
        "median_throughput_ups": med,
        "throughput_ratio_curve_over_none": round(med["curve"] / med["none"], 3) if med["none"] else None,
        "median_net_cpu_ms_per_update": cpu,
    }


def wan(duration: float, inflight: int) -> dict[str, Any]:
    c = LocalCluster(workers=1)
    with open(c.conf, "a") as conf:
        for (a, b), d in SITES_MS.items():
            conf.write(f"[[links]]\na = {a}\nb = {b}\ndelay_ms = {d}\njitter_ms = 1.0\n")
    try:
        r = run_load(c, inflight, duration)
        r["rtt_min_us_at_1"] = c.stats(1, "engine").get("rtt_min_us")
    finally:
        c.close()
        c.remove()
    r.update(sites_ms={f"{a}-{b}": d for (a, b), d in SITES_MS.items()}, inflight_per_client=inflight,
             load_avg_1m=round(os.getloadavg()[0], 2))
    print(json.dumps({"wan": r}), flush=True)
    return r


def throttle(duration: float, inflight: int) -> dict[str, Any]:
    rates = {"timely": 4_000_000, "bounded": 2_000_000, "recon": 1_000_000}
    settings = {"throttling": {"throttle_outgoing": True, **{f"bandwidth_{k}_bps": v for k, v in rates.items()}}}
    c = LocalCluster(workers=1, settings=settings)

    def sample(c: LocalCluster) -> dict[str, Any]:
        time.sleep(duration / 3)
        s0 = c.stats(1, "net")
        time.sleep(duration / 3)
        s1 = c.stats(1, "net")
        dt = s1["t"] - s0["t"]
        measured = {k: round(8 * (s1["traffic"][f"out:{k}:bytes"] - s0["traffic"][f"out:{k}:bytes"]) / dt)
                    for k in rates}
        return {"window_s": round(dt, 2), "set_bps": rates, "measured_bps": measured,
                "ratio": {k: round(measured[k] / rates[k], 3) for k in rates},
                "traffic_at_end_of_window": s1["traffic"]}

    try:
        r = run_load(c, inflight, duration, sample)
    finally:
        c.close()
        c.remove()
    r["load_avg_1m"] = round(os.getloadavg()[0], 2)
    print(json.dumps({"throttle": {k: r[k] for k in ("measured_bps", "ratio", "throughput_ups")}}), flush=True)
    return r


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--inflight", type=int, default=64)
    parser.add_argument("--only", nargs="+", default=["curve", "wan", "throttle"])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "transport_bench.json"))
    args = parser.parse_args()
    out: dict[str, Any] = {"n": 4, "cpus": os.cpu_count(), "duration_s": args.duration,
                           "load_avg_1m_before": round(os.getloadavg()[0], 2)}
    if "curve" in args.only:
        out["curve"] = curve(args.duration, args.repeats, args.inflight)
    if "wan" in args.only:
        out["wan"] = wan(args.duration, args.inflight)
    if "throttle" in args.only:
        out["throttle"] = throttle(args.duration, args.inflight)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
