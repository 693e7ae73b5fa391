"""Verify workers: shape (``wire.decode``), then signatures (``prime.auth.Verifier``).

A worker reads raw records from the net process and passes on, unchanged, the
ones whose envelope and every embedded envelope verify (Merkle paths, Ed25519,
threshold signatures, client signatures on updates); everything else is
dropped and counted by reason. Workers never judge meaning: that is the core's.
The net process routes records by signer, so the siblings of one Merkle batch
reach the same worker and its root cache verifies the batch's signature once.

With ``workers = 0`` the net process calls ``RecordVerifier.check`` inline.
"""

from __future__ import annotations

import select
import signal
import time
from collections import deque
from typing import Any

from prime import msgs, wire
from prime.auth import Ed25519Scheme, Verifier
from prime.msgs import Update
from prime.net.traffic import TrafficClass
from prime.proc import frames as F
from prime.proc.context import ProcStats, ReplicaContext
from prime.wire import Envelope


VERIFY_CACHE_MAX = 4096
TIMELY = TrafficClass.TIMELY


class _UnsignedUpdatesVerifier(Verifier):
    """``clients_sign_updates = false`` (benchmarks only, unsafe): updates, alone or
    embedded in PO-Requests, are taken without checking their signature."""

    def verify(self, env: Envelope) -> bool:
        if env.msg.TAG == msgs.T_UPDATE:
            return True
        return super().verify(env)


class RecordVerifier:
    def __init__(self, ctx: ReplicaContext, counts: Any) -> None:
        scheme = Ed25519Scheme({}, ctx.keys.verify_keys)
        cls = Verifier if ctx.cfg.cryptography.clients_sign_updates else _UnsignedUpdatesVerifier
        # The verdict cache keeps whole envelopes (raw bytes) as keys: 4096 of them bound
        # a worker's cache to 4096 * message_bytes_max however peers fill it (auth.py's
        # default of 65536 would allow 4 GiB of junk at 64 KiB per frame).
        self.verifier = cls(scheme, threshold_public=ctx.keys.threshold_public, cache_size_max=VERIFY_CACHE_MAX)
        self.size_max = ctx.cfg.system.message_bytes_max
        self.n = ctx.cfg.n
        self.counts = counts

    def check(self, rec: bytes) -> bool:
        """True if ``rec`` (a PEER or CLIENT record) may go to the engine."""
        counts = self.counts
        kind = rec[0]
        raw = rec[F.PEER_HEADER:] if kind == F.PEER else rec[1:]
        env = wire.decode(raw, size_max=self.size_max)
        if isinstance(env, str):
            counts["drop:decode:" + env] += 1
            return False
        if kind == F.CLIENT:
            u = env.msg
            if not isinstance(u, Update) or u.client != env.sender or u.client <= self.n:
                counts["drop:client:not_an_update"] += 1
                return False
        elif env.sender > self.n:
            # Client-signed messages reach the core only inside PO-Requests.
            counts["drop:peer:signer_not_a_server"] += 1
            return False
        if self.verifier.seen(env):
            counts["duplicate_frame"] += 1  # passed on: the core ignores what it holds
        if not self.verifier.verify(env):
            counts["drop:bad_signature"] += 1
            return False
        counts["verified"] += 1
        return True


def _raise_exit(signum: int, frame: Any) -> None:
    raise SystemExit(0)


def worker_main(ctx: ReplicaContext, index: int) -> int:
    signal.signal(signal.SIGTERM, _raise_exit)
    src = ctx.to_workers[index]
    dst = ctx.to_engine[index]
    stats = ProcStats(ctx.me, f"worker{index}", ctx.cfg.logging.stats_interval_ms / 1000)
    checker = RecordVerifier(ctx, stats.counts)
    batch_max = ctx.cfg.networking.engine_batch_count_max * 4
    poller = select.poll()
    poller.register(src.bell.fileno(), select.POLLIN)
    counts = stats.counts
    try:
        _work(src, dst, checker, stats, batch_max, poller)
    except SystemExit:
        pass
    finally:
        stats.emit(time.monotonic(), {"verifications": checker.verifier.verifications})
    return 0


BULK_SLICE = 8  # bulk records verified between two looks for new timely ones


def _work(src: Any, dst: Any, checker: RecordVerifier, stats: ProcStats, batch_max: int, poller: Any) -> None:
    """Verify records from ``src`` into ``dst``, timely first: the timely records of a
    batch go before its bulk ones, and every ``BULK_SLICE`` bulk records the ring is
    looked at again, so a timely record that arrives behind a long batch of bulk
    (a flood) waits for a few verifications, not for the whole batch."""
    counts = stats.counts
    timely: deque[bytes] = deque()
    bulk: deque[bytes] = deque()

    def take(records: list[bytes]) -> None:
        for rec in records:
            (timely if rec[0] == F.PEER and rec[2] == TIMELY else bulk).append(rec)

    def forward(rec: bytes) -> None:
        if rec[0] == F.OVERRUN or checker.check(rec):  # OVERRUN: the net's note, passed on
            while not dst.put(rec):
                # Engine behind: back-pressure (the net process then drops and counts).
                dst.flush()
                counts["engine_ring_full_waits"] += 1
                time.sleep(0.0005)

    while True:
        take(src.get_batch(batch_max))
        now = time.monotonic()
        if stats.due(now):
            stats.emit(now, {"verifications": checker.verifier.verifications})
        if timely or bulk:
            while timely or bulk:
                if timely:
                    while timely:
                        forward(timely.popleft())
                    dst.flush()  # the engine sees timely records at once
                for _ in range(min(BULK_SLICE, len(bulk))):
                    forward(bulk.popleft())
                if len(bulk) < batch_max:
                    take(src.get_batch(batch_max - len(bulk)))
            dst.flush()
            continue
        if src.sleep_ready():
            # Nothing else to wake for: only the stats line (none when lines are off).
            wait = stats.wake_in_s(time.monotonic())
            poller.poll(-1 if wait is None else int(wait * 1000) + 1)
        src.awake()
