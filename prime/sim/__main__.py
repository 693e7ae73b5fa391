"""``python -m prime.sim``: run one seeded scenario and check it.

A tool for studying attacks on BFT ordering: choose the fault model, the
network, the load and the Byzantine behaviours; get throughput, latency and
every invariant violation. The same seed always replays the same run byte for
byte, and a failing run prints the command that replays it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from typing import Any

from prime.core.params import LEGACY_ITEMS, Params
from prime.sim.byzantine import BEHAVIOURS
from prime.sim.cluster import SimCluster, SimConfig
from prime.sim.network import Partition


def _byz(text: str) -> tuple[int, str]:
    try:
        rid, behaviour = text.split(":", 1)
        return int(rid), behaviour
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ID:BEHAVIOUR, got {text!r}") from None


def _crash(text: str) -> tuple[int, float]:
    try:
        rid, at = text.split("@", 1)
        return int(rid), float(at)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ID@SECONDS, got {text!r}") from None


def _partition(text: str) -> str:
    try:
        Partition.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _param(text: str) -> tuple[str, Any]:
    key, _, value = text.partition("=")
    if not key or not value:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    parsed: Any = value
    if key == "legacy":  # the fixes to switch off: legacy=H3,RB
        return key, frozenset(item for item in value.split(",") if item)
    for conv in (int, float):
        try:
            parsed = conv(value)
            break
        except ValueError:
            continue
    if value in ("true", "false"):
        parsed = value == "true"
    return key, parsed


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bin/sim",
        description="Run a seeded, deterministic simulation of a Prime cluster and check "
        "agreement, gap-free order, validity and liveness.",
        epilog="Byzantine behaviours: " + ", ".join(sorted(BEHAVIOURS)) + ". Example: "
        "bin/sim --f 1 --k 1 --seed 7 --loss 0.02 --byz 3:equivocate --crash 5@1.5",
    )
    p.add_argument("--f", type=int, default=1, help="Byzantine replicas tolerated (default 1)")
    p.add_argument("--k", type=int, default=0, help="crashed/partitioned replicas tolerated (default 0)")
    p.add_argument("--seed", type=int, default=1, help="the run's seed (default 1)")
    p.add_argument("--duration", type=float, default=3.0, help="virtual seconds of load (default 3)")
    p.add_argument("--net", choices=("lan", "wan"), default="lan", help="delay model (default lan)")
    p.add_argument("--loss", type=float, default=0.0, help="per-message loss probability")
    p.add_argument("--duplicate", type=float, default=0.0, help="per-message duplication probability")
    p.add_argument("--clients", type=int, default=4, help="closed-loop clients (default 4)")
    p.add_argument("--inflight", type=int, default=4, help="updates in flight per client (default 4)")
    p.add_argument("--payload-bytes", type=int, default=32, help="update payload size (default 32)")
    p.add_argument("--byz", type=_byz, action="append", default=[], metavar="ID:BEHAVIOUR",
                   help="make replica ID Byzantine (repeatable)")
    p.add_argument("--crash", type=_crash, action="append", default=[], metavar="ID@T",
                   help="crash replica ID at virtual second T (repeatable)")
    p.add_argument("--restart", type=_crash, action="append", default=[], metavar="ID@T",
                   help="replica ID loses its state at T and restarts with a new incarnation "
                   "(after --crash ID@T0 if given), repeatable")
    p.add_argument("--clean-stop", type=int, action="append", default=[], metavar="ID",
                   help="replica ID stops cleanly before its --restart (or --crash): it writes "
                   "its exact restart record first, as the daemon does on SIGTERM; repeatable")
    p.add_argument("--twins", type=int, action="append", default=[], metavar="ID",
                   help="run Byzantine identity ID as two instances sharing its key, each "
                   "talking to half of the other replicas (Twins), repeatable")
    p.add_argument("--client-home", type=int, action="append", default=[], metavar="ID",
                   help="home replica of the next client (client c goes to the c-th of these, "
                   "cyclically), repeatable; default: every correct replica that does not "
                   "crash for good, restarting ones first")
    p.add_argument("--partition", type=_partition, action="append", default=[],
                   metavar="A,B|C,D@T1-T2", help="partition (use > for one-way), repeatable")
    p.add_argument("--delay-ms", type=float, default=20.0,
                   help="delay of the 'delay' behaviour: age a proof matrix must reach at the "
                   "malicious leader before it is applied (default 20)")
    p.add_argument("--liveness-bound", type=float, default=10.0,
                   help="virtual seconds after faults stop within which every update must be delivered")
    p.add_argument("--weaken-quorums", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--real-crypto", action="store_true", help="Ed25519 instead of keyed hashes")
    p.add_argument("--param", type=_param, action="append", default=[], metavar="KEY=VALUE",
                   help="override a core parameter (prime.core.params.Params), repeatable")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    p.add_argument("-v", "--verbose", action="store_true", help="log protocol events")
    return p


class UsageError(ValueError):
    """A flag value the simulator cannot run: one line, exit status 2."""


PARAM_KEYS = sorted(
    f.name for f in dataclasses.fields(Params) if f.init and f.name not in ("f", "k", "quorum_weaken_by")
)


def check_args(args: argparse.Namespace) -> None:
    """Everything argparse cannot check alone; raise ``UsageError`` naming the flag."""
    if args.f < 0 or args.k < 0 or 3 * args.f + 2 * args.k + 1 > 31:
        raise UsageError(
            f"--f {args.f} --k {args.k}: need f >= 0, k >= 0 and N = 3f+2k+1 <= 31 "
            "(bitmaps are 32-bit): f is 0..10, k is 0..15"
        )
    n = 3 * args.f + 2 * args.k + 1
    for flag, value, lo, hi in (
        ("--duration", args.duration, 0.001, 3600.0),
        ("--loss", args.loss, 0.0, 0.9),
        ("--duplicate", args.duplicate, 0.0, 0.9),
        ("--liveness-bound", args.liveness_bound, 0.1, 3600.0),
        ("--delay-ms", args.delay_ms, 0.0, 10_000.0),
    ):
        if not lo <= value <= hi:
            raise UsageError(f"{flag} {value}: must be between {lo} and {hi}")
    for flag, value, lo, hi in (
        ("--clients", args.clients, 1, 10_000),
        ("--inflight", args.inflight, 1, 10_000),
        ("--payload-bytes", args.payload_bytes, 1, 16_384),
    ):
        if not lo <= value <= hi:
            raise UsageError(f"{flag} {value}: must be an integer from {lo} to {hi}")
    ids = [("--byz", rid) for rid, _ in args.byz] + [("--crash", rid) for rid, _ in args.crash]
    ids += [("--restart", rid) for rid, _ in args.restart] + [("--twins", rid) for rid in args.twins]
    ids += [("--client-home", rid) for rid in args.client_home] + [("--clean-stop", rid) for rid in args.clean_stop]
    for text in args.partition:
        part = Partition.parse(text)
        ids += [("--partition", rid) for rid in sorted(part.a | part.b)]
    for flag, rid in ids:
        if not 1 <= rid <= n:
            raise UsageError(f"{flag}: replica {rid} does not exist (replicas are 1..{n} for f={args.f}, k={args.k})")
    for _, behaviour in args.byz:
        if behaviour not in BEHAVIOURS:
            raise UsageError(f"--byz: unknown behaviour {behaviour!r}; known: {', '.join(sorted(BEHAVIOURS))}")
    for key, value in args.param:
        if key not in PARAM_KEYS:
            raise UsageError(f"--param: unknown key {key!r}; known: {', '.join(PARAM_KEYS)}")
        if key == "legacy" and not value <= LEGACY_ITEMS:
            raise UsageError(
                f"--param legacy: unknown item(s) {', '.join(sorted(value - LEGACY_ITEMS))}; "
                f"known: {', '.join(sorted(LEGACY_ITEMS))}"
            )


def outside_model(args: argparse.Namespace) -> str:
    """Why this run is outside the fault model (empty if it is within it)."""
    byz = {rid for rid, _ in args.byz} | set(args.twins)
    down = {rid for rid, _ in args.crash} | {rid for rid, _ in args.restart}
    if len(byz) > args.f:
        return f"{len(byz)} Byzantine replicas > f = {args.f}"
    if len(byz | down) > args.f + args.k:
        return f"{len(byz | down)} faulty replicas (Byzantine, crashed or restarted) > f + k = {args.f + args.k}"
    if args.weaken_quorums:
        return "quorums weakened (a negative control)"
    return ""


def config_from_args(args: argparse.Namespace) -> SimConfig:
    return SimConfig(
        f=args.f,
        k=args.k,
        seed=args.seed,
        duration=args.duration,
        net=args.net,
        loss=args.loss,
        duplicate=args.duplicate,
        clients=args.clients,
        inflight=args.inflight,
        payload_bytes=args.payload_bytes,
        byz=dict(args.byz),
        crash=dict(args.crash),
        restart=dict(args.restart),
        twins=list(args.twins),
        clean_stop=list(args.clean_stop),
        client_homes=list(args.client_home),
        partitions=list(args.partition),
        liveness_bound=args.liveness_bound,
        delay_ms=args.delay_ms,
        quorum_weaken_by=args.weaken_quorums,
        real_crypto=args.real_crypto,
        params=dict(args.param),
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s %(message)s")
    if not args.verbose:
        # Skipped bad threshold shares are expected under --byz ID:bad-shares; the JSON
        # summary counts what matters, so keep the terminal readable.
        logging.getLogger("prime.crypto.threshold").setLevel(logging.ERROR)
    try:
        check_args(args)
        cfg = config_from_args(args)
        cluster = SimCluster(cfg)
    except (ValueError, TypeError, AssertionError) as e:
        print(f"prime.sim: {e}", file=sys.stderr)
        return 2
    outside = outside_model(args)
    if outside:
        print(f"prime.sim: OUTSIDE THE FAULT MODEL ({outside}): safety is checked, liveness is not, "
              "and a violation here shows the model's limit, not a bug", file=sys.stderr)
    started = time.process_time()
    summary = cluster.run()
    summary["cpu_s"] = round(time.process_time() - started, 3)
    summary["outside_model"] = outside
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    else:
        print(f"n={summary['n']} f={summary['f']} k={summary['k']} seed={summary['seed']} "
              f"net={summary['net']} virtual={summary['virtual_s']}s cpu={summary['cpu_s']}s")
        print(f"delivered updates per replica: {summary['delivered']}")
        print(f"throughput {summary['throughput_ups']} updates/s, "
              f"latency p50 {summary['p50_ms']} ms, p99 {summary['p99_ms']} ms")
        if not summary["liveness_checked"]:
            print(f"liveness not checked: {summary['liveness_skipped_reason']}")
        for v in summary["violations"]:
            print(f"VIOLATION {v}")
        print("ok" if summary["ok"] else f"FAILED; replay with: {summary['replay']}")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
