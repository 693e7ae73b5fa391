"""How long a view change takes (virtual time) and what it costs in CPU.

Duration: the leader of view 1 crashes at 0.3 s; for N=4 and N=6, on the LAN
and WAN models, over several seeds, the time from the first correct replica
pre-installing view 2 to the last one completing its replay.

CPU: the threshold RSA work of one view change at the real modulus size
(2048 bits): each replica makes one share (with its proof) and combines
2f+k+1 shares (verifying their proofs) at least once; plus the protocol work,
measured as the simulator's extra CPU for a run with a view change over the
same run without (keyed-hash signatures, small threshold key).

    python perf/viewchange_bench.py [--seeds 5] [--bits 2048]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prime.crypto import threshold  # noqa: E402
from prime.sim.cluster import SimCluster, SimConfig  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "viewchange_bench.json"


def durations(f: int, k: int, net: str, seeds: int) -> list[float]:
    out = []
    for seed in range(1, seeds + 1):
        s = SimCluster(SimConfig(f=f, k=k, seed=seed, duration=1.5, net=net, crash={1: 0.3})).run()
        assert s["ok"], s["violations"]
        vc = s["view_changes"][0]
        out.append(round((vc["completed_s"] - vc["preinstalled_s"]) * 1000, 3))
    return out


def protocol_cpu_ms(f: int, k: int) -> float:
    def cpu(crash: dict[int, float]) -> float:
        samples = []
        for seed in (1, 2, 3):
            t = time.process_time()
            SimCluster(SimConfig(f=f, k=k, seed=seed, duration=1.0, crash=crash, clients=1, inflight=1)).run()
            samples.append(time.process_time() - t)
        return statistics.median(samples)

    n = 3 * f + 2 * k + 1
    # The crashed leader stops working, so compare with a crashed non-leader.
    return max(0.0, (cpu({1: 0.3}) - cpu({n: 0.3})) * 1000 / (n - 1))


def threshold_cpu_ms(n: int, t: int, bits: int) -> dict[str, float]:
    pub, shares = threshold.deal(n, t, bits, seed=b"vc-bench")
    msg = b"view-change statement"
    t0 = time.process_time()
    signed = [threshold.sign_share(s, msg) for s in shares[:t]]
    share_ms = (time.process_time() - t0) * 1000 / t
    t0 = time.process_time()
    threshold.combine(pub, msg, signed)
    combine_ms = (time.process_time() - t0) * 1000
    return {"share_ms": round(share_ms, 2), "combine_ms": round(combine_ms, 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--bits", type=int, default=2048)
    args = ap.parse_args()
    rows = []
    for f, k in ((1, 0), (1, 1)):
        n = 3 * f + 2 * k + 1
        crypto = threshold_cpu_ms(n, 2 * f + k + 1, args.bits)
        proto = protocol_cpu_ms(f, k)
        for net in ("lan", "wan"):
            d = durations(f, k, net, args.seeds)
            row = {
                "n": n, "net": net, "duration_ms_median": statistics.median(d),
                "duration_ms_max": max(d), "durations_ms": d,
                "threshold_cpu_ms_per_replica": round(crypto["share_ms"] + crypto["combine_ms"], 2),
                "threshold": crypto, "protocol_cpu_ms_per_replica": round(proto, 2),
            }
            rows.append(row)
            print(f"N={n} {net}: view change {row['duration_ms_median']} ms median, {row['duration_ms_max']} ms max; "
                  f"CPU per replica: threshold {row['threshold_cpu_ms_per_replica']} ms at {args.bits} bits "
                  f"(share {crypto['share_ms']}, combine {crypto['combine_ms']}), protocol ~{row['protocol_cpu_ms_per_replica']} ms")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"benchmark": "viewchange_bench", "bits": args.bits, "results": rows}, indent=2))
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
