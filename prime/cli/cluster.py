"""``bin/cluster``: run a real local Prime cluster under load, report, and stop.

It starts N replica daemons (``bin/prime -i ID``: supervisor, net, verify
workers, engine, Ed25519 signatures) on loopback with ``conf/def.toml`` (or
``--conf``), through ``prime.proc.localcluster.LocalCluster``, and one load
generator per daemon (``python -m prime.app.load``), for ``--duration``
seconds. Keys are made if missing in a folder bin/cluster owns
(``.cluster/<user>/`` in the checkout, git-ignored), never in ``keys/``.

At the end it prints, per replica and in total, throughput and latency
p50/p90/p99, the CPU each process kind used (from /proc/PID/stat of the
daemons' children), and whether every replica delivered the same ordered
stream: a hash per replica over the ordinals every replica delivered,
compared. It stops everything it started, also on Ctrl-C/SIGTERM or when a
child fails (and says which), and checks that no process, /dev/shm segment or
socket file is left.

``--sim`` keeps the earlier mode: the seeded simulator on virtual time.
Exit status: 0 ok, 1 a child failed / streams differ / no progress / leftovers,
2 bad flags or configuration, 130 interrupted.
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

from prime.app.load import percentile
from prime.proc.cpuacct import cpu_ticks_s

ROOT = Path(__file__).resolve().parents[2]
PROGRESS_TTY_S = 0.5
PROGRESS_PLAIN_S = 2.0
LINGER_S = 1.5  # load generators keep reading this long after their load, so streams cover the same ordinals
GRACE_S = 8.0
START_TIMEOUT_S = 30.0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """Bad flags: one line and exit 2 (not argparse's usage block)."""
        print(f"cluster: {message} (see bin/cluster --help)", file=sys.stderr)
        raise SystemExit(2)


def _number(kind: type, what: str, low: float, high: float | None = None) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a number, got {text!r}") from None
        if value < low or (high is not None and value > high):
            span = f">= {low}" if high is None else f"in {low}..{high}"
            raise argparse.ArgumentTypeError(f"{what} must be {span}, got {text}")
        return value

    return parse


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="cluster",
        description="Start a local Prime cluster of real replica daemons on loopback, drive each with a "
        "load generator, print throughput, latency, CPU per process kind and a stream-agreement check, "
        "and stop everything.",
        epilog="Example: bin/cluster --f 1 --k 1 -n 64 --duration 10. --sim runs the seeded simulator "
        "instead. Exit status: 0 ok, 1 failure, 2 bad flags, 130 interrupted.",
    )
    p.add_argument("--f", type=_number(int, "--f", 0, 10), default=1, help="Byzantine replicas tolerated (default 1)")
    p.add_argument("--k", type=_number(int, "--k", 0, 15), default=0, help="crashed replicas tolerated (default 0)")
    p.add_argument("--duration", type=_number(float, "--duration", 0.1), default=5.0, help="seconds of load (default 5)")
    p.add_argument("-n", "--inflight", type=_number(int, "-n", 1), default=None,
                   help="updates in flight per load generator (default 64; --sim: per client, default 8)")
    p.add_argument("--size", type=_number(int, "--size", 16), default=None,
                   help="payload bytes per update (default [system] update_size_bytes)")
    p.add_argument("--workers", type=_number(int, "--workers", 0, 16), default=None,
                   help="verify workers per daemon (default [networking] workers)")
    p.add_argument("--conf", default=str(ROOT / "conf" / "def.toml"),
                   help="def.toml, or a folder holding def.toml and address.config (default: %(default)s)")
    sim = p.add_argument_group("simulator (--sim)")
    sim.add_argument("--sim", action="store_true", help="run the deterministic simulator on virtual time instead")
    sim.add_argument("--clients", type=_number(int, "--clients", 1), default=8, help="clients (default 8)")
    sim.add_argument("--net", choices=("lan", "wan"), default="lan", help="delay model (default lan)")
    sim.add_argument("--real-crypto", action="store_true", help="Ed25519 signatures (default: keyed-hash stand-ins)")
    sim.add_argument("--seed", type=int, default=1, help="seed (default 1)")
    return p


# ----------------------------------------------------------------- simulator


def run_sim(args: argparse.Namespace) -> int:
    from prime.sim.cluster import SimCluster, SimConfig

    cfg = SimConfig(
        f=args.f, k=args.k, seed=args.seed, duration=args.duration, clients=args.clients,
        inflight=args.inflight or 8, net=args.net, real_crypto=args.real_crypto, payload_bytes=args.size or 64,
    )
    try:
        cluster = SimCluster(cfg)
    except ValueError as e:
        print(f"cluster: {e}", file=sys.stderr)
        return 2
    crypto = "Ed25519 signatures" if cfg.real_crypto else "keyed-hash stand-ins for signatures (--real-crypto for Ed25519)"
    print(f"cluster: SIMULATION on virtual time, one process, {crypto}: N={cfg.n} (f={cfg.f}, k={cfg.k}), "
          f"{cfg.clients} clients x {cfg.inflight} in flight, {cfg.duration:g} s of load on the simulated "
          f"{cfg.net.upper()}")
    started = time.monotonic()
    tty = sys.stdout.isatty()
    last = [0.0]

    def show(p: dict[str, Any]) -> None:
        line = (f"  t={p['virtual_s']:5.1f}s  completed {p['completed']:7d}  ordinals {p['ordinals']:6d}"
                f"  violations {p['violations']}")
        if tty:
            print("\r" + line, end="", flush=True)
        elif time.monotonic() - last[0] >= PROGRESS_PLAIN_S:
            last[0] = time.monotonic()
            print(line, flush=True)

    summary = cluster.run(progress=show)
    if tty:
        print()
    print(f"throughput {summary['throughput_ups']:.0f} updates/s (virtual time), latency p50 "
          f"{summary['p50_ms']} ms, p99 {summary['p99_ms']} ms; {summary['submitted']} updates, "
          f"delivered per replica {summary['delivered']}; wall {time.monotonic() - started:.1f}s")
    if summary["ok"]:
        print("checker: agreement, order, validity and liveness hold")
        return 0
    for v in summary["violations"]:
        print(f"VIOLATION {v}")
    print(f"replay: {summary['replay']}")
    return 1


# ---------------------------------------------------------------- real cluster


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived: stop everything and say so."""


class ChildFailed(Exception):
    """A daemon or load generator exited early: stop everything and say which."""


def _raise_interrupted(signum: int, frame: Any) -> None:
    raise Interrupted(signal.Signals(signum).name)


def _conf_file(text: str) -> Path:
    path = Path(text)
    if path.is_dir():
        path = path / "def.toml"
    if not path.is_file():
        raise ValueError(f"--conf: no configuration file {path}")
    if not (path.parent / "address.config").is_file():
        raise ValueError(f"--conf: no address.config beside {path}")
    return path


def _owned_keys_dir(conf: Path, n: int) -> Path:
    """The key folder bin/cluster owns for this configuration: .cluster/<user>/keys-<hash of the
    settings keys depend on>. Made by bin/gen_keys when missing; the user's keys/ is never touched."""
    import tomllib

    with open(conf, "rb") as fh:
        data = tomllib.load(fh)
    relevant = {"system": data.get("system", {}), "bits": data.get("cryptography", {}).get("threshold_modulus_bits")}
    relevant["system"] = {k: relevant["system"].get(k) for k in ("f", "k", "num_clients")}
    tag = hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:10]
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry (containers)
        user = f"uid{os.getuid()}"
    return ROOT / ".cluster" / user / f"keys-n{n}-{tag}"


def _ensure_keys(conf: Path, out: Path) -> bool:
    """Make keys for ``conf`` in ``out`` unless they are there; True if made now."""
    if (out / "manifest.json").exists():
        return False
    out.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [sys.executable, "-m", "prime.cli.gen_keys", "--conf", str(conf), "--out", str(out)],
        capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    if done.returncode != 0:
        raise ValueError(f"gen_keys failed: {' '.join(done.stderr.split())[-300:]}")
    return True


def _kind(name: str) -> str:
    return "workers" if name.startswith("worker") else name


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def stream_hashes(results: list[dict[str, Any]]) -> tuple[dict[int, str], list[int]]:
    """Per replica, a hash over the ordinals every replica delivered (ordinal and digest of its
    events, in order); and those ordinals. Equal hashes: identical ordered streams on them."""
    sets = [set(r["digests"]) for r in results]
    common = sorted((set.intersection(*sets) if sets else set()), key=int)
    hashes = {}
    for r in results:
        h = hashlib.sha256()
        for o in common:
            h.update(f"{o}:{r['digests'][o]};".encode())
        hashes[r["replica"]] = h.hexdigest()[:16]
    return hashes, [int(o) for o in common]


def run_real(args: argparse.Namespace) -> int:
    from prime.config import load_config
    from prime.errors import ConfigError
    from prime.proc.localcluster import LocalCluster

    n = 3 * args.f + 2 * args.k + 1
    if n > 31:
        print(f"cluster: N = 3f+2k+1 = {n} is above 31 (--f {args.f}, --k {args.k})", file=sys.stderr)
        return 2
    try:
        conf = _conf_file(args.conf)
        cfg = load_config(str(conf))
    except (ValueError, ConfigError) as error:
        print(f"cluster: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    workers = args.workers if args.workers is not None else cfg.networking.workers
    inflight = args.inflight or 64
    size = args.size or cfg.system.update_size_bytes
    clients = max(n, cfg.system.num_clients)

    signal.signal(signal.SIGINT, _raise_interrupted)
    signal.signal(signal.SIGTERM, _raise_interrupted)
    cluster: LocalCluster | None = None
    status = 0
    try:
        try:
            cluster = LocalCluster(args.f, args.k, workers=workers, clients=clients, base_conf=conf,
                                   keys=Path("/nonexistent"), prefix="pcluster-")
            keys = _owned_keys_dir(cluster.conf, n)
            made = _ensure_keys(cluster.conf, keys)
            cluster.keys = keys
        except (ValueError, OSError) as error:
            print(f"cluster: {' '.join(str(error).split())}", file=sys.stderr)
            return 2
        try:
            rel_keys = keys.relative_to(Path.cwd())
        except ValueError:
            rel_keys = keys
        print(f"cluster: real processes on loopback, Ed25519 signatures on: N={n} replica daemons "
              f"(f={args.f}, k={args.k}), {workers} verify worker{'s' if workers != 1 else ''} each, one load "
              f"generator per replica with {inflight} in flight x {size} bytes, {args.duration:g} s; "
              f"conf {conf}, keys {rel_keys}{' (made now)' if made else ''}, run folder {cluster.dir}", flush=True)
        status = _drive(cluster, n, inflight, size, args.duration)
    except Interrupted as why:
        _quiet_signals()
        print(f"\ncluster: interrupted by {why}; stopping everything it started", flush=True)
        status = 130
    except ChildFailed as why:
        _quiet_signals()
        print(f"\ncluster: {why}; stopping everything it started", flush=True)
        status = 1
    finally:
        _quiet_signals()
        if cluster is not None:
            left = cluster.close()  # unlinks the /dev/shm segments it reports
            sockets = cluster.sockets_left()
            cluster.remove()  # the run folder, with the ipc sockets in it
            shm_now = cluster.shm_left()
            procs_now = cluster.processes_left()
            started = len(cluster.daemons) + len(cluster.loads)
            if left["shm"] or sockets:
                print(f"cluster: removed what killed processes left: /dev/shm {left['shm']}, sockets {sockets}")
            if procs_now or shm_now or cluster.dir.exists():
                print(f"cluster: LEFT BEHIND: process groups {procs_now}, /dev/shm {shm_now}, "
                      f"run folder still there: {cluster.dir.exists()}")
                status = status or 1
            else:
                print(f"cluster: stopped {len(cluster.daemons)} daemons and {len(cluster.loads)} load generators "
                      f"({started} process groups); no process, /dev/shm segment or socket file left")
    return status


def _quiet_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _check_children(cluster: Any, loads_done_ok: bool = False) -> None:
    for i, proc in sorted(cluster.daemons.items()):
        if proc.poll() is not None:
            tail = [line for line in cluster.log(i).splitlines() if not line.startswith("stats ")][-3:]
            raise ChildFailed(f"replica {i}'s daemon (pid {proc.pid}) exited with status {proc.returncode}"
                              + (f"; its log ends: {' | '.join(tail)}" if tail else ""))
    for replica, (proc, _out) in enumerate(cluster.loads, start=1):
        code = proc.poll()
        if code is not None and (code != 0 or not loads_done_ok):
            raise ChildFailed(f"the load generator of replica {replica} (pid {proc.pid}) exited early "
                              f"with status {code}")


def _drive(cluster: Any, n: int, inflight: int, size: int, duration: float) -> int:
    for i in range(1, n + 1):
        cluster.start(i)
    deadline = time.monotonic() + START_TIMEOUT_S
    children: dict[int, dict[str, int]] = {}
    while len(children) < n:
        _check_children(cluster)
        for i in range(1, n + 1):
            if i not in children and "started:" in cluster.log(i):
                children[i] = cluster.children(i)
        if time.monotonic() > deadline:
            missing = [i for i in range(1, n + 1) if i not in children]
            raise ChildFailed(f"replicas {missing} did not start within {START_TIMEOUT_S:g} s")
        time.sleep(0.05)
    pids: dict[str, list[int]] = {}
    for i in range(1, n + 1):
        pids.setdefault("supervisor", []).append(cluster.daemons[i].pid)
        for name, pid in children[i].items():
            pids.setdefault(_kind(name), []).append(pid)
    for i in range(1, n + 1):
        cluster.load(i, inflight=inflight, duration=duration, linger=LINGER_S, grace=GRACE_S, payload=size,
                     extra=["--latencies"])
    pids["load generators"] = [p.pid for p, _ in cluster.loads]
    t0 = time.monotonic()
    cpu0 = {kind: sum(cpu_ticks_s(p) or 0.0 for p in ps) for kind, ps in pids.items()}

    tty = sys.stdout.isatty()
    step = PROGRESS_TTY_S if tty else PROGRESS_PLAIN_S
    next_line = t0 + step
    cpu1: dict[str, float] = {}
    limit = duration + LINGER_S + GRACE_S + 10
    while True:
        _check_children(cluster, loads_done_ok=True)
        if all(p.poll() is not None for p, _ in cluster.loads):
            break
        now = time.monotonic()
        if now - t0 > limit:
            raise ChildFailed(f"load generators still running {limit:g} s after start")
        if now - t0 >= duration and not cpu1:
            cpu1 = {kind: sum(cpu_ticks_s(p) or 0.0 for p in ps) for kind, ps in pids.items()}
            cpu_t = now - t0
        if now >= next_line:
            next_line += step
            ords = [cluster.ordinal(i) for i in range(1, n + 1)]
            line = (f"  {min(now - t0, duration):5.1f}/{duration:g} s  ordinals {min(ords)}..{max(ords)} "
                    f"({'load' if now - t0 < duration else 'draining'})")
            print(("\r" + line + "   ") if tty else line, end="" if tty else "\n", flush=True)
        time.sleep(0.1)
    if not cpu1:
        cpu1 = {kind: sum(cpu_ticks_s(p) or 0.0 for p in ps) for kind, ps in pids.items()}
        cpu_t = time.monotonic() - t0
    if tty:
        print()
    results = [json.loads(out.read_text()) for _, out in cluster.loads]
    return _report(results, cpu0, cpu1, cpu_t, {k: len(v) for k, v in pids.items()})


def _report(results: list[dict[str, Any]], cpu0: dict[str, float], cpu1: dict[str, float], cpu_t: float,
            counts: dict[str, int]) -> int:
    hashes, common = stream_hashes(results)
    print(f"{'replica':>7} {'updates':>8} {'upd/s':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
          f"{'ordinals':>8}  stream hash")
    every: list[float] = []
    total_updates = 0
    total_rate = 0.0
    for r in results:
        lat = sorted(r.get("latencies_ms", []))
        every += lat
        total_updates += r["own_delivered"]
        total_rate += r["throughput_ups"]
        print(f"{r['replica']:>7} {r['own_delivered']:>8} {r['throughput_ups']:>8.0f} {_ms(percentile(lat, .5)):>8} "
              f"{_ms(percentile(lat, .9)):>8} {_ms(percentile(lat, .99)):>8} {r['ordinals']:>8}  "
              f"{hashes[r['replica']]}")
    every.sort()
    print(f"{'total':>7} {total_updates:>8} {total_rate:>8.0f} {_ms(percentile(every, .5)):>8} "
          f"{_ms(percentile(every, .9)):>8} {_ms(percentile(every, .99)):>8}")
    parts = []
    for kind in ("engine", "net", "workers", "supervisor", "load generators"):
        if kind in cpu1:
            secs = cpu1[kind] - cpu0.get(kind, 0.0)
            parts.append(f"{kind} ({counts[kind]}) {secs:.1f} s = {100 * secs / cpu_t:.0f}% of a core")
    print(f"CPU over {cpu_t:.1f} s of load: " + ", ".join(parts))
    status = 0
    if not common:
        print("streams: NO ordinal delivered by every replica; nothing to compare")
        status = 1
    elif len(set(hashes.values())) == 1:
        print(f"streams: identical on every replica ({len(common)} ordinals {common[0]}..{common[-1]} "
              "delivered by all, hash above)")
    else:
        print(f"streams: DIFFER ({len(common)} ordinals delivered by all; hashes above)")
        status = 1
    if total_updates == 0:
        print("throughput: no update was delivered")
        status = 1
    return status


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.sim:
        return run_sim(args)
    if args.real_crypto or args.net != "lan" or args.seed != 1 or args.clients != 8:
        print("cluster: --real-crypto, --net, --seed and --clients are for --sim only (the real cluster "
              "always signs with Ed25519 and runs one load generator per replica)", file=sys.stderr)
        return 2
    return run_real(args)


if __name__ == "__main__":
    sys.exit(main())
