"""Bytes sent for reconciliation per reconciled request, erasure-coded vs whole requests.

Runs the simulator under the RECON attack (replica 1 withholds its PO-Requests
from the f+k highest replicas) for N=4 and N=6 with 300-byte updates (the
original UPDATE_SIZE), once with erasure-coded parts and once forwarding whole
requests, and reports the bytes every designated sender put on the wire for
reconciliation divided by the number of (request, needy replica) shipments.
Expect roughly 1/(f+1) of the whole-request cost per sender, plus the RECON
envelope's fixed overhead (signature, Merkle path, part header).

    python perf/recon_bench.py [--duration 2] [--seeds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prime.sim.cluster import SimCluster, SimConfig  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "recon_bench.json"


def measure(f: int, k: int, erasure: bool, seed: int, duration: float) -> dict[str, float]:
    cfg = SimConfig(
        f=f, k=k, seed=seed, duration=duration, byz={1: "recon"}, payload_bytes=300,
        clients=4, inflight=4, params={"use_erasure_codes": erasure},
    )
    summary = SimCluster(cfg).run()
    assert summary["ok"], summary["violations"]
    recon = summary["recon"]
    return {
        "bytes_sent": recon["bytes_sent"],
        "shipments": recon["sent"],
        "bytes_per_shipment": recon["bytes_sent"] / max(1, recon["sent"]),
        "rebuilt": recon["rebuilt"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=2.0)
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    results = []
    for f, k in ((1, 0), (1, 1)):
        row: dict[str, object] = {"n": 3 * f + 2 * k + 1, "f": f, "k": k}
        for erasure in (True, False):
            runs = [measure(f, k, erasure, seed, args.duration) for seed in range(1, args.seeds + 1)]
            key = "erasure" if erasure else "whole"
            row[key] = {
                "bytes_per_shipment_median": statistics.median(r["bytes_per_shipment"] for r in runs),
                "bytes_sent_median": statistics.median(r["bytes_sent"] for r in runs),
                "runs": runs,
            }
        ratio = row["erasure"]["bytes_per_shipment_median"] / row["whole"]["bytes_per_shipment_median"]  # type: ignore[index]
        row["ratio_erasure_over_whole"] = round(ratio, 3)
        row["expected_about"] = round(1 / (f + 1), 3)
        results.append(row)
        print(f"N={row['n']}: erasure {row['erasure']['bytes_per_shipment_median']:.0f} B/shipment, "  # type: ignore[index]
              f"whole {row['whole']['bytes_per_shipment_median']:.0f} B/shipment, ratio {ratio:.3f} "  # type: ignore[index]
              f"(1/(f+1) = {1 / (f + 1):.3f})")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"benchmark": "recon_bench", "update_bytes": 300, "results": results}, indent=2))
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
