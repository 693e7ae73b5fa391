"""Throughput and latency under the delay attack vs fault-free, in the simulator.

For N=4 and N=6 on the LAN model, the leader (replica 1) runs the DELAY_ATTACK
(docs/protocol.md section 6.1) at several delays: it applies proof matrices only once they
are ``delay`` old and sends each pre-prepare to replica 2 only. Below the
suspect-leader bound (K_lat * TAT_acceptable + PP period, 40 ms here) it keeps
its role and slows ordering; above, it is suspected, the view change installs
view 2 under a correct leader, and throughput recovers. Writes JSON and a PNG.

    python perf/attack_sim.py [--duration 3] [--seeds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prime.sim.cluster import SimCluster, SimConfig  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DELAYS_MS = (0.0, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0)


def med(values: Any) -> float | None:
    data = [v for v in values if v is not None]
    return statistics.median(data) if data else None


def one(f: int, k: int, delay_ms: float, seed: int, duration: float) -> dict[str, Any]:
    byz = {1: "delay"} if delay_ms > 0 else {}
    cfg = SimConfig(f=f, k=k, seed=seed, duration=duration, clients=8, inflight=8,
                    byz=byz, delay_ms=delay_ms)
    s = SimCluster(cfg).run()
    assert s["ok"], s["violations"]
    vcs = s["view_changes"]
    return {
        "throughput_ups": s["throughput_ups"],
        "p50_ms": s["p50_ms"],
        "p99_ms": s["p99_ms"],
        "tat_leader_ms": statistics.median(s["tat_leader_ms"].values()) if s["tat_leader_ms"] else None,
        "suspected_at_s": vcs[0]["preinstalled_s"] if vcs else None,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    results: list[dict[str, Any]] = []
    for f, k in ((1, 0), (1, 1)):
        n = 3 * f + 2 * k + 1
        for delay in DELAYS_MS:
            runs = [one(f, k, delay, seed, args.duration) for seed in range(1, args.seeds + 1)]
            row = {
                "n": n, "f": f, "k": k, "delay_ms": delay,
                "throughput_ups": statistics.median(r["throughput_ups"] for r in runs),
                "p50_ms": med(r["p50_ms"] for r in runs),
                "tat_leader_ms": med(r["tat_leader_ms"] for r in runs),
                "suspected": sum(r["suspected_at_s"] is not None for r in runs),
                "runs": runs,
            }
            results.append(row)
            print(f"N={n} delay {delay:5.1f} ms: {row['throughput_ups']:7.1f} updates/s, "
                  f"p50 {row['p50_ms']} ms, TAT_leader {row['tat_leader_ms']} ms, "
                  f"suspected in {row['suspected']}/{len(runs)} runs")
    for n in (4, 6):
        base = next(r for r in results if r["n"] == n and r["delay_ms"] == 0)
        for r in results:
            if r["n"] == n:
                r["throughput_ratio"] = round(r["throughput_ups"] / base["throughput_ups"], 3)
                r["latency_ratio"] = round(r["p50_ms"] / base["p50_ms"], 3) if r["p50_ms"] else None
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "attack_sim.json"
    out.write_text(json.dumps({"benchmark": "attack_sim", "net": "lan", "duration_s": args.duration,
                               "bound_ms": 40.0, "results": results}, indent=2))
    print(f"wrote {out}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (pip install '.[plot]'): no PNG")
        return 0
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for n in (4, 6):
        rows = [r for r in results if r["n"] == n]
        ax1.plot([r["delay_ms"] for r in rows], [r["throughput_ups"] for r in rows], "o-", label=f"N={n}")
        lat = [r for r in rows if r["p50_ms"] is not None]
        ax2.plot([r["delay_ms"] for r in lat], [r["p50_ms"] for r in lat], "o-", label=f"N={n}")
    for ax in (ax1, ax2):
        ax.axvline(20.0, color="grey", ls=":", lw=1)
        ax.set_xlabel("leader's delay (ms)")
        ax.legend()
    ax1.set_ylabel("updates/s (virtual time)")
    ax2.set_ylabel("median latency (ms)")
    fig.suptitle("Prime under the delay attack (simulated LAN; beyond the dotted line the leader is replaced)")
    fig.tight_layout()
    png = RESULTS / "attack_sim.png"
    fig.savefig(png, dpi=100)
    print(f"wrote {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
