"""Benchmark of the pure protocol core: updates ordered per CPU-second, in the simulator.

Runs ``prime.sim.cluster.SimCluster`` fault-free for N=4 (f=1, k=0) and N=6 (f=1, k=1),
each with keyed-hash signatures (``real_crypto=False``: BLAKE2b, nearly free) and with
Ed25519 (``real_crypto=True``: PyNaCl signs and verifies for real), under closed-loop load:
8 clients x 8 updates in flight by default, which keeps every replica's pre-ordering busy
(about one PO-Request per update) and puts all 64 in-flight updates in each ordinal. Time
is virtual, so more load does not queue: it only puts more updates in each ordinal and so
lowers the cost per update. ``time.process_time`` is read around ``cluster.run()`` only, so
building the cluster and the keys is not counted.

Reported per case, as the median over ``--repeat`` repetitions (min and max alongside):

* ``updates_per_cpu_s``: updates ordered (the APP updates delivered at one replica; in a
  fault-free run every replica delivers the same ones) per CPU-second of the whole run;
* ``updates_delivered_total_per_cpu_s``: updates delivered summed over all N replicas, per
  CPU-second (the cluster's total execution work);
* ``ordinals_per_cpu_s``: ordinals executed at one replica per CPU-second;
* signature verifications performed (``cluster.verifier.verifications``: cache misses)
  and signatures made (``Signer.signatures`` summed over replicas and clients): Ed25519
  operations in the ed25519 cases, keyed hashes in the others.

The simulator runs all N replicas, the clients, the network and the checker in ONE
process, so the CPU time covers the whole cluster: one replica's share is about CPU / N
(``cpu_s_per_replica``). It also shares one ``Verifier`` and its caches between all
replicas, so each distinct signature is verified once per cluster, where a deployment
verifies it at every receiving replica: the Ed25519 figures here are a lower bound on
a real replica's crypto cost. The counts (updates, ordinals, signatures, verifications)
are deterministic for a seed and identical in every repetition; only the CPU time varies.
Repetitions of the cases are interleaved, so drift on a shared machine hits every case
alike. Prints a table and writes perf/results/core_bench.json.

    python perf/core_bench.py                 # 5 repetitions of 3 virtual seconds (~2 min)
    python perf/core_bench.py --quick         # 3 repetitions of 1 virtual second
    python perf/core_bench.py --profile hash  # cProfile one N=4 run, top 25 by tottime
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from prime.sim.cluster import SimCluster, SimConfig

DEFAULT_OUTPUT = ROOT / "perf" / "results" / "core_bench.json"
SCHEMES = {"hash": False, "ed25519": True}  # name -> SimConfig.real_crypto


@dataclass(frozen=True)
class Case:
    f: int
    k: int
    scheme: str  # a key of SCHEMES

    @property
    def n(self) -> int:
        return 3 * self.f + 2 * self.k + 1

    @property
    def name(self) -> str:
        return f"N={self.n} {self.scheme}"


CASES = (Case(1, 0, "hash"), Case(1, 0, "ed25519"), Case(1, 1, "hash"), Case(1, 1, "ed25519"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeat", type=int, default=None, help="repetitions per case (5)")
    parser.add_argument("--quick", action="store_true", help="3 repetitions of 1 virtual second")
    parser.add_argument("--duration", type=float, default=None, help="virtual seconds of load (3)")
    parser.add_argument("--clients", type=int, default=8, help="closed-loop clients (8)")
    parser.add_argument("--inflight", type=int, default=8, help="updates in flight per client (8)")
    parser.add_argument("--seed", type=int, default=1, help="simulation seed (1)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON result file")
    parser.add_argument(
        "--profile",
        choices=sorted(SCHEMES),
        default=None,
        help="instead: cProfile one N=4 run with this scheme, print the top lines by tottime",
    )
    parser.add_argument("--profile-lines", type=int, default=25, help="lines printed (25)")
    args = parser.parse_args(argv)
    repeat = args.repeat if args.repeat is not None else (3 if args.quick else 5)
    duration = args.duration if args.duration is not None else (1.0 if args.quick else 3.0)
    if repeat < 1 or duration <= 0:
        parser.error("--repeat must be >= 1 and --duration > 0")

    def config(case: Case) -> SimConfig:
        return SimConfig(
            f=case.f,
            k=case.k,
            seed=args.seed,
            duration=duration,
            clients=args.clients,
            inflight=args.inflight,
            real_crypto=SCHEMES[case.scheme],
        )

    if args.profile is not None:
        profile_one(config(Case(1, 0, args.profile)), args.profile_lines)
        return 0

    samples: dict[Case, list[dict[str, Any]]] = {case: [] for case in CASES}
    for repetition in range(repeat):
        rotation = repetition % len(CASES)
        for case in CASES[rotation:] + CASES[:rotation]:
            samples[case].append(run_once(config(case)))
            print(f"  repetition {repetition + 1}/{repeat} {case.name}", file=sys.stderr)

    report: dict[str, Any] = {
        "benchmark": "core_updates_per_cpu_s",
        "statistic": f"median over {repeat} interleaved repetitions (min and max alongside)",
        "clock": "time.process_time around SimCluster.run() (CPU of the whole process)",
        "note": (
            "The simulator runs all N replicas, the clients, the network and the checker in "
            "one process, so cpu_s covers the whole cluster and the per-replica cost is about "
            "cpu_s / N (cpu_s_per_replica). One Verifier and its caches are shared by all "
            "replicas, so each distinct signature is verified once per cluster rather than "
            "at every receiving replica."
        ),
        "load": {
            "clients": args.clients,
            "inflight": args.inflight,
            "duration_virtual_s": duration,
            "seed": args.seed,
            "faults": "none",
        },
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cases": [summarise(case, samples[case]) for case in CASES],
    }
    print_table(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


def run_once(cfg: SimConfig) -> dict[str, Any]:
    """Build a cluster (not timed), run it (timed), and return its counts and CPU time."""
    cluster = SimCluster(cfg)
    started = time.process_time()
    summary = cluster.run()
    cpu_s = time.process_time() - started
    if not summary["ok"]:
        raise SystemExit(f"simulation failed: {summary['violations']}; {summary['replay']}")
    delivered = [int(v) for v in summary["delivered"].values()]
    ordinals = [int(v) for v in summary["ordinals"].values()]
    signers = [node.signer for node in cluster.nodes.values()]
    signers += list(cluster._client_signers.values())  # the simulated clients sign too
    return {
        "cpu_s": cpu_s,
        "updates_ordered": min(delivered),
        "updates_delivered_total": sum(delivered),
        "ordinals": min(ordinals),
        "verifications": cluster.verifier.verifications,
        "signatures": sum(signer.signatures for signer in signers),
        "messages_delivered": summary["network"]["delivered"],
        "trace_sha256": summary["trace_sha256"],
    }


def summarise(case: Case, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of the rates; the counts must be the same in every repetition."""
    first = runs[0]
    for run in runs[1:]:
        for key in ("updates_ordered", "ordinals", "verifications", "signatures", "trace_sha256"):
            assert run[key] == first[key], f"{case.name}: {key} differs between repetitions"

    def stats(values: list[float]) -> dict[str, float]:
        return {"median": statistics.median(values), "min": min(values), "max": max(values)}

    cpu = [run["cpu_s"] for run in runs]
    cpu_median = statistics.median(cpu)
    updates = first["updates_ordered"]
    return {
        "case": case.name,
        "n": case.n,
        "f": case.f,
        "k": case.k,
        "scheme": "ed25519 (PyNaCl)" if SCHEMES[case.scheme] else "keyed hash (BLAKE2b)",
        "repetitions": len(runs),
        "cpu_s": stats(cpu),
        "cpu_s_per_replica": cpu_median / case.n,
        # What one replica's CPU/N share orders per CPU-second (= N x updates_per_cpu_s).
        "updates_per_replica_cpu_s": case.n * updates / cpu_median,
        "updates_ordered": updates,
        "updates_delivered_total": first["updates_delivered_total"],
        "ordinals": first["ordinals"],
        "updates_per_ordinal": updates / max(first["ordinals"], 1),
        "messages_delivered": first["messages_delivered"],
        "verifications": first["verifications"],
        "signatures": first["signatures"],
        "updates_per_cpu_s": stats([updates / c for c in cpu]),
        "updates_delivered_total_per_cpu_s": stats(
            [first["updates_delivered_total"] / c for c in cpu]
        ),
        "ordinals_per_cpu_s": stats([first["ordinals"] / c for c in cpu]),
        "cpu_us_per_update": 1e6 * cpu_median / max(updates, 1),
        "trace_sha256": first["trace_sha256"],
    }


def profile_one(cfg: SimConfig, lines: int) -> None:
    """cProfile one run (the profiler roughly triples the CPU time) and print the top."""
    cluster = SimCluster(cfg)
    profiler = cProfile.Profile()
    profiler.enable()
    summary = cluster.run()
    profiler.disable()
    print(f"N={cfg.n} real_crypto={cfg.real_crypto} trace_sha256={summary['trace_sha256']}")
    pstats.Stats(profiler).strip_dirs().sort_stats("tottime").print_stats(lines)


def print_table(report: dict[str, Any]) -> None:
    load = report["load"]
    print(
        f"Prime core in the simulator: {load['clients']} clients x {load['inflight']} in "
        f"flight, {load['duration_virtual_s']:g} virtual s, seed {load['seed']}, fault-free; "
        f"{report['statistic']}"
    )
    print("(all N replicas share one process: per-replica CPU is about cpu / N)")
    print(
        f"{'case':<13} {'updates/cpu-s':>13} {'[min..max]':>17} {'total/cpu-s':>11} "
        f"{'ordinals/cpu-s':>14} {'cpu s':>6} {'us/update':>9} {'updates':>7} "
        f"{'verifies':>8} {'signs':>6}"
    )
    for row in report["cases"]:
        ups = row["updates_per_cpu_s"]
        span = f"[{ups['min']:.0f}..{ups['max']:.0f}]"
        print(
            f"{row['case']:<13} {ups['median']:>13.0f} {span:>17} "
            f"{row['updates_delivered_total_per_cpu_s']['median']:>11.0f} "
            f"{row['ordinals_per_cpu_s']['median']:>14.1f} {row['cpu_s']['median']:>6.2f} "
            f"{row['cpu_us_per_update']:>9.1f} {row['updates_ordered']:>7} "
            f"{row['verifications']:>8} {row['signatures']:>6}"
        )


if __name__ == "__main__":
    sys.exit(main())
