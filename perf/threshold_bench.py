"""Benchmark of Shoup threshold RSA (prime.crypto.threshold) for the view-change proof.

For N=4 (t=3) and N=6 (t=4) it deals one seeded key, times the dealing once, then reports
the median over several repetitions of: signature shares made per second, share proofs
verified per second, combines per second (with and without share verification), and
signatures verified per second. Prints a table and writes perf/results/threshold_bench.json.

    python perf/threshold_bench.py               # 2048-bit modulus, as docs/protocol.md section 4.3 advises
    python perf/threshold_bench.py --quick       # fewer, shorter repetitions
    python perf/threshold_bench.py --bits 1024   # C Prime's modulus size
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from prime.crypto import threshold

CONFIGURATIONS = [(4, 3), (6, 4)]  # (players, threshold): t = 2f+k+1 for f=1, k=0 and k=1
MESSAGE_COUNT = 16  # distinct statements signed in turn
DEFAULT_OUTPUT = ROOT / "perf" / "results" / "threshold_bench.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", type=int, default=2048, help="modulus size (default 2048)")
    parser.add_argument("--quick", action="store_true", help="3 short repetitions instead of 7")
    parser.add_argument("--seed", default="threshold-bench", help="dealer seed (text)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON result file")
    args = parser.parse_args(argv)
    repetitions = 3 if args.quick else 7
    repetition_s = 0.2 if args.quick else 1.0

    results = []
    for players, t in CONFIGURATIONS:
        results.append(
            bench_configuration(
                players,
                t,
                bits=args.bits,
                seed=f"{args.seed}-{players}-{t}".encode(),
                repetitions=repetitions,
                repetition_s=repetition_s,
            )
        )
    report = {
        "benchmark": "threshold_rsa",
        "modulus_bits": args.bits,
        "deal_s": results[0]["deal_s"],
        "repetitions": repetitions,
        "repetition_s_target": repetition_s,
        "statistic": "median over repetitions",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "configurations": results,
    }
    print_table(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


def bench_configuration(
    players: int, t: int, *, bits: int, seed: bytes, repetitions: int, repetition_s: float
) -> dict[str, Any]:
    """Deals one key (timed once) and measures the per-operation rates."""
    print(f"N={players} t={t}: dealing a {bits}-bit key", flush=True)
    started = time.perf_counter()
    public, keys = threshold.deal(
        players, t, bits, seed=seed, progress=lambda line: print(f"  {line}", flush=True)
    )
    deal_s = time.perf_counter() - started
    print(f"  dealt in {deal_s:.2f} s", flush=True)

    messages = [f"view {i} | list | startSeq {i}".encode() for i in range(MESSAGE_COUNT)]
    shares = {message: [threshold.sign_share(key, message) for key in keys] for message in messages}
    signatures = {
        message: threshold.combine(public, message, shares[message]) for message in messages
    }

    def sign(i: int) -> None:
        threshold.sign_share(keys[i % players], messages[i % MESSAGE_COUNT])

    def verify_share(i: int) -> None:
        message = messages[i % MESSAGE_COUNT]
        assert threshold.verify_share(public, message, shares[message][i % players])

    def combine(i: int) -> None:
        message = messages[i % MESSAGE_COUNT]
        threshold.combine(public, message, shares[message][:t])

    def combine_unverified(i: int) -> None:
        message = messages[i % MESSAGE_COUNT]
        threshold.combine(public, message, shares[message][:t], verify_shares=False)

    def verify(i: int) -> None:
        message = messages[i % MESSAGE_COUNT]
        assert threshold.verify(public, message, signatures[message])

    operations: dict[str, Callable[[int], None]] = {
        "shares_per_s": sign,
        "share_verifications_per_s": verify_share,
        "combines_per_s": combine,
        "combines_unverified_per_s": combine_unverified,
        "verifies_per_s": verify,
    }
    result: dict[str, Any] = {"players": players, "threshold": t, "deal_s": round(deal_s, 3)}
    for name, operation in operations.items():
        result[name] = round(rate_per_s(operation, repetitions, repetition_s), 1)
        print(f"  {name}: {result[name]}", flush=True)
    return result


def rate_per_s(operation: Callable[[int], None], repetitions: int, repetition_s: float) -> float:
    """Median operations per second over repetitions of about repetition_s each."""
    started = time.perf_counter()
    operation(0)  # warm-up, and a first cost estimate
    estimate_s = max(time.perf_counter() - started, 1e-6)
    iterations = max(3, round(repetition_s / estimate_s))
    rates = []
    for _ in range(repetitions):
        started = time.perf_counter()
        for i in range(iterations):
            operation(i)
        rates.append(iterations / (time.perf_counter() - started))
    return statistics.median(rates)


def print_table(report: dict[str, Any]) -> None:
    columns = [
        "deal_s",
        "shares_per_s",
        "share_verifications_per_s",
        "combines_per_s",
        "combines_unverified_per_s",
        "verifies_per_s",
    ]
    print(f"\nShoup threshold RSA, {report['modulus_bits']}-bit modulus ({report['statistic']})")
    print(f"{'N/t':>6} " + " ".join(f"{c:>26}" for c in columns))
    for row in report["configurations"]:
        label = f"{row['players']}/{row['threshold']}"
        print(f"{label:>6} " + " ".join(f"{row[c]:>26}" for c in columns))


if __name__ == "__main__":
    sys.exit(main())
