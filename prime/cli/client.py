"""``bin/client``: the pipelined load generator, as the application of its daemon.

It attaches to daemon ``-s SERVER_ID`` (``prime.app.client``), keeps ``-n``
updates in flight, each signed with client ``-i``'s key, and reads the ordered
stream. An update not delivered within ``--resubmit-s`` is submitted again
(the same signed update, so the same stamp; counted), and each of its stamps
counts once. It stops after ``--updates`` delivered or ``--duration`` seconds.

On a terminal a live progress line is redrawn in place; otherwise a plain line
every few seconds. At the end a summary (``--json``: one JSON object).
Exit status: 0 done, 1 the daemon could not be reached or refused us, 2 bad flags.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from prime.app.load import percentile

ROOT = Path(__file__).resolve().parents[2]
PROGRESS_TTY_S = 0.5
PROGRESS_PLAIN_S = 5.0


def _positive(kind: type, what: str) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a number, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{what} must be > 0, got {text}")
        return value

    return parse


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="client",
        description="Submit client-signed updates to your Prime daemon with N in flight and report "
        "throughput and latency.",
        epilog="Example: bin/client -s 1 -n 64 --duration 10. Exit status: 0 ok, 1 daemon "
        "unreachable or refused, 2 bad flags.",
    )
    p.add_argument("-s", "--server", type=_positive(int, "-s"), default=1, help="the daemon's server id (default 1)")
    p.add_argument("-i", "--client", type=_positive(int, "-i"), default=None,
                   help="client id, N+1..N+num_clients (default N + server id)")
    p.add_argument("-n", "--inflight", type=_positive(int, "-n"), default=64, help="updates in flight (default 64)")
    stop = p.add_mutually_exclusive_group()
    stop.add_argument("--updates", type=_positive(int, "--updates"), default=None, help="stop after this many delivered")
    stop.add_argument("--duration", type=_positive(float, "--duration"), default=None,
                      help="stop after this many seconds (default 10 unless --updates)")
    p.add_argument("--size", type=_positive(int, "--size"), default=None,
                   help="payload bytes (default [system] update_size_bytes)")
    p.add_argument("--resubmit-s", type=_positive(float, "--resubmit-s"), default=10.0,
                   help="resubmit an update not delivered within this long (default 10)")
    p.add_argument("--conf", default=str(ROOT / "conf" / "def.toml"), help="tunables (default: %(default)s)")
    p.add_argument("--keys", default=str(ROOT / "keys"), help="keys folder (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    return p


def _percentile(sorted_ms: list[float], q: float) -> float | None:
    value = percentile(sorted_ms, q)
    return None if value is None else round(value, 3)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from prime.app.client import Application, Ordinal
    from prime.config import load_config
    from prime.msgs import UpdateKind

    cfg = load_config(args.conf)
    size = args.size if args.size is not None else cfg.system.update_size_bytes
    app = Application.connect(args.server, conf=args.conf, keys=args.keys, client_id=args.client)
    stopping = {"now": False}
    signal.signal(signal.SIGTERM, lambda s, f: stopping.update(now=True))
    signal.signal(signal.SIGINT, lambda s, f: stopping.update(now=True))
    me, inc = app.client_id, app.incarnation
    pad = os.urandom(max(0, size - 12))
    outstanding: dict[int, tuple[float, bytes, float]] = {}  # seq -> (first submit, raw, last submit)
    delivered: set[int] = set()
    latencies: list[float] = []
    resubmissions = 0
    duplicates = 0
    submitted = 0
    duration = args.duration if args.duration is not None else (None if args.updates else 10.0)
    t0 = time.monotonic()
    tty = sys.stderr.isatty()
    next_progress = t0 + (PROGRESS_TTY_S if tty else PROGRESS_PLAIN_S)
    while not stopping["now"]:
        now = time.monotonic()
        if duration is not None and now - t0 >= duration:
            break
        if args.updates is not None and len(delivered) >= args.updates:
            break
        want = args.inflight - len(outstanding)
        if args.updates is not None:
            want = min(want, args.updates - len(delivered) - len(outstanding))
        if want > 0:
            raws = [app.make_update(b"%012d" % (submitted + k) + pad) for k in range(want)]
            app.send_raw(raws)
            for k, raw in enumerate(raws):
                outstanding[app.seq - want + 1 + k] = (now, raw, now)
            submitted += want
        stale = [seq for seq, (_, _, last) in outstanding.items() if now - last >= args.resubmit_s]
        if stale:
            app.send_raw([outstanding[seq][1] for seq in stale])
            for seq in stale:
                first, raw, _ = outstanding[seq]
                outstanding[seq] = (first, raw, now)
            resubmissions += len(stale)
        for item in app.poll(0.02):
            if not isinstance(item, Ordinal):
                continue
            for e in item.events:
                if e.client != me or e.incarnation != inc or e.kind != UpdateKind.APP:
                    continue
                if e.seq in delivered:
                    duplicates += 1
                    continue
                entry = outstanding.pop(e.seq, None)
                if entry is None:
                    continue
                delivered.add(e.seq)
                latencies.append((time.monotonic() - entry[0]) * 1000)
        if time.monotonic() >= next_progress:
            next_progress += PROGRESS_TTY_S if tty else PROGRESS_PLAIN_S
            _progress(tty, t0, len(delivered), len(outstanding), latencies)
    elapsed = time.monotonic() - t0
    if tty:
        sys.stderr.write("\n")
    app.close()
    lat = sorted(latencies)
    return {
        "server": args.server,
        "client": me,
        "inflight": args.inflight,
        "size_bytes": size,
        "updates": len(delivered),
        "submitted": submitted,
        "elapsed_s": round(elapsed, 3),
        "throughput_ups": round(len(delivered) / elapsed, 1) if elapsed > 0 else 0.0,
        "p50_ms": _percentile(lat, 0.50),
        "p90_ms": _percentile(lat, 0.90),
        "p99_ms": _percentile(lat, 0.99),
        "max_ms": round(lat[-1], 3) if lat else None,
        "resubmissions": resubmissions,
        "duplicates_ignored": duplicates,
        "undelivered": len(outstanding),
    }


def _progress(tty: bool, t0: float, done: int, inflight: int, latencies: list[float]) -> None:
    elapsed = time.monotonic() - t0
    recent = sorted(latencies[-2000:])
    p50 = f"{recent[len(recent) // 2]:.1f} ms" if recent else "-"
    line = f"client: {done / elapsed if elapsed else 0:8.1f} updates/s  in flight {inflight:4d}  p50 {p50}  {elapsed:6.1f} s"
    sys.stderr.write(("\r" + line) if tty else (line + "\n"))
    sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    from prime.app.client import AppError, BadClientId
    from prime.errors import ConfigError, KeyFileError

    try:
        summary = run(args)
    except (ConfigError, KeyFileError, BadClientId) as error:
        print(f"client: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    except AppError as error:
        print(f"client: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"client {summary['client']} -> server {summary['server']}: {summary['updates']} updates in "
            f"{summary['elapsed_s']} s = {summary['throughput_ups']} updates/s; latency p50 "
            f"{summary['p50_ms']} ms, p90 {summary['p90_ms']} ms, p99 {summary['p99_ms']} ms, max "
            f"{summary['max_ms']} ms; {summary['resubmissions']} resubmissions"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
