"""A closed-loop load generator on the application library (``python -m prime.app.load``).

It attaches to one daemon, keeps ``--inflight`` of its own updates outstanding
(``--payload-bytes`` each), and reads the ordered stream. It records, per
ordinal, a digest of the ordinal's events (so streams of different replicas
can be compared ordinal by ordinal), every stamp it saw (duplicates are
counted), its own updates' latencies, and state-transfer notices. At the end
it writes one JSON object (``--out`` or stdout).

After a state-transfer notice it stops waiting for the updates it had
outstanding and goes on submitting (those never seen in its stream are
``lost_at_notice``: ordered at or below the jump point, or lost with a previous
incarnation of the daemon).

It stops after ``--count`` own updates were delivered (or ``--duration``
seconds), then keeps reading for ``--linger`` seconds so the streams of all
replicas cover the same ordinals.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import statistics
import sys
import time
from typing import Any

from prime.app.client import AppError, Application, Ordinal, StateTransferNeeded
from prime.msgs import UpdateKind


def percentile(sorted_values: list[float], q: float) -> float | None:
    """The q-quantile of an ascending list (the element at index q*(n-1)); None if empty.
    One rule for every load report (this generator, bin/client, bin/cluster)."""
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(q * (len(sorted_values) - 1)))]


def ordinal_digest(item: Ordinal) -> str:
    h = hashlib.sha256(b"%d" % item.ordinal)
    for e in item.events:
        h.update(b"|%d,%d,%d,%d," % (e.client, e.incarnation, e.seq, e.kind))
        h.update(e.payload)
    return h.hexdigest()[:16]


def run(args: argparse.Namespace) -> dict[str, Any]:
    app = Application.connect(
        args.id, conf=args.conf, keys=args.keys, client_id=args.client, connect_timeout_s=args.connect_timeout
    )
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda s, f: stop.update(now=True))
    me = app.client_id
    payload_pad = os.urandom(max(0, args.payload_bytes - 16))
    outstanding: dict[int, float] = {}
    latencies_ms: list[float] = []
    delivered_at: list[float] = []  # time.monotonic() of each own delivery (--timeline)
    digests: dict[int, str] = {}
    stamps_seen: dict[tuple[int, int, int], int] = {}
    notices: list[int] = []  # the daemon jumped, or we fell behind
    attached_at = 0  # ordinals before this went by before we attached
    own_delivered = 0
    submitted = 0
    at_risk: dict[int, float] = {}  # outstanding at a notice: no longer waited for
    t0 = time.monotonic()
    first_delivery = None
    end_load = t0 + args.duration
    finished_at = None
    while not stop["now"]:
        now = time.monotonic()
        load_on = (args.count == 0 or submitted < args.count) and now < end_load
        if load_on and len(outstanding) < args.inflight:
            batch = []
            while len(outstanding) + len(batch) < args.inflight and (args.count == 0 or submitted + len(batch) < args.count):
                batch.append(b"%016d" % (submitted + len(batch)) + payload_pad)
            for stamp in app.submit_many(batch):
                outstanding[stamp[2]] = now
            submitted += len(batch)
        if finished_at is None and not outstanding and not load_on:
            finished_at = now
        if finished_at is not None and now - finished_at >= args.linger:
            break
        if now - t0 > args.duration + args.linger + args.grace:
            break  # give up: the JSON says what is missing
        for item in app.poll(0.05):
            if isinstance(item, StateTransferNeeded):
                # Updates a daemon took before it jumped are ordered, but those ordered at or
                # below the jump point never appear in this stream (an application learns
                # of them from the client table in the state it takes; this generator keeps
                # none), and a daemon that restarted lost what its previous life held: stop
                # waiting for them (those seen later still count, from ``at_risk``).
                if item.at_attach:
                    attached_at = item.ordinal
                    continue
                notices.append(item.ordinal)
                at_risk.update(outstanding)
                outstanding.clear()
                continue
            digests[item.ordinal] = ordinal_digest(item)
            for e in item.events:
                if e.kind != UpdateKind.APP:
                    continue
                stamps_seen[e.stamp] = stamps_seen.get(e.stamp, 0) + 1
                if e.client == me and e.incarnation == app.incarnation:
                    sent = outstanding.pop(e.seq, None)
                    if sent is None:
                        sent = at_risk.pop(e.seq, None)
                    if sent is not None:
                        own_delivered += 1
                        if first_delivery is None:
                            first_delivery = time.monotonic()
                        got_at = time.monotonic()
                        latencies_ms.append((got_at - sent) * 1000)
                        if args.timeline:
                            delivered_at.append(got_at)
    elapsed = (finished_at or time.monotonic()) - t0
    app.close()
    lat = sorted(latencies_ms)
    p99 = percentile(lat, 0.99)
    return {
        "replica": args.id,
        "client": me,
        "incarnation": app.incarnation,
        "submitted": submitted,
        "own_delivered": own_delivered,
        "outstanding": len(outstanding),
        "lost_at_notice": len(at_risk),
        "elapsed_s": round(elapsed, 3),
        "throughput_ups": round(own_delivered / elapsed, 1) if elapsed > 0 else 0.0,
        "p50_ms": round(statistics.median(lat), 3) if lat else None,
        "p99_ms": None if p99 is None else round(p99, 3),
        "ordinals": len(digests),
        "digests": {str(k): v for k, v in sorted(digests.items())},
        "duplicates": sum(c - 1 for c in stamps_seen.values() if c > 1),
        "stamps": sorted(stamps_seen),
        "notices": notices,
        "attached_after_ordinal": attached_at,
        "reattached": app.reattached,
        **({"latencies_ms": [round(x, 3) for x in latencies_ms]} if args.latencies else {}),
        **({"delivered_at": [round(x, 4) for x in delivered_at]} if args.timeline else {}),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="prime-load", description=__doc__.split("\n\n")[0])
    parser.add_argument("-i", "--id", type=int, required=True, help="the daemon (replica id) to attach to")
    parser.add_argument("--conf", default=None)
    parser.add_argument("--keys", default=None)
    parser.add_argument("--client", type=int, default=None, help="client id (default N + replica id)")
    parser.add_argument("-n", "--inflight", type=int, default=1)
    parser.add_argument("--count", type=int, default=0, help="own updates to deliver (0: until --duration)")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--linger", type=float, default=1.0)
    parser.add_argument("--grace", type=float, default=30.0)
    parser.add_argument("--payload-bytes", type=int, default=300)
    parser.add_argument("--connect-timeout", type=float, default=10.0)
    parser.add_argument("--out", default=None)
    parser.add_argument("--latencies", action="store_true", help="include every latency in the JSON")
    parser.add_argument("--timeline", action="store_true",
                        help="include when each own update was delivered (the machine's monotonic clock, "
                             "seconds), so rates before and during an event can be compared in one run")
    args = parser.parse_args(argv)
    try:
        result = run(args)
    except AppError as error:
        print(f"prime-load: {error}", file=sys.stderr)
        return 2
    text = json.dumps(result)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
