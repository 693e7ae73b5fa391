"""The engine process: the only driver of ``prime/core`` outside the simulator.

It decides nothing. Each round it reads the time, steps one ``Tick``, steps every
verified record waiting on its input rings (up to ``engine_batch_count_max`` per
ring), performs the actions exactly as ``prime.sim.cluster.SimCluster._step``
does (Merkle batch signing inline: one Ed25519 signature per batch), keeping
the order the core emitted them in, and writes what goes out as
records on the ring to the net process, one flush per round. Threshold RSA (10 to
35 ms of big-number math) runs on one helper thread: GMP runs without the GIL
(cffi releases it), and its answers come back as ``ThresholdDone`` on a later
round, so ordering never waits for it.

When idle it sleeps in ``poll`` on its rings' doorbells until the core's next
deadline; the core's own periodic timers set how often an idle replica wakes.

Time: the core compares incarnations (start times in seconds, hardening H8) with
``Tick`` time, so ``now_us`` is wall-clock aligned at start and then advances
with the monotonic clock (it never runs backwards).
"""

from __future__ import annotations

import gc
import json
import logging
import queue
import select
import signal
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgpack

from prime import wire
from prime.auth import Ed25519Scheme, Signer
from prime.core import actions as A
from prime.core.events import ClientUpdate, CryptoDone, Inbound, ThresholdDone, Tick
from prime.core.params import Params
from prime.core.replica import Replica
from prime.msgs import UPDATES_PER_REQUEST_MAX, PoAck, UpdateKind
from prime.net import traffic as TR
from prime.proc import frames as F
from prime.proc.context import ProcStats, ReplicaContext, write_durably
from prime.proc.ring import Doorbell

DELIVER_CHUNK_BYTES = 16_384  # payload bytes per DELIVER record (an ordinal may be larger)
CLIENT_BACKLOG_MAX = 65_536  # client updates held while the core's own queue is full
OUT_BACKLOG_MAX = 100_000  # records waiting for room on the ring to the net process
SLEEP_MAX_S = 60.0  # a cap only: an idle engine wakes for the core's timers and its stats line
KEEP_TIME_EVERY = 16  # records stepped between looks at the clock within a round
KEEP_TIME_US = 1000  # a Tick (and the actions so far sent) at least this often within a round

_log = logging.getLogger("prime.engine")


class Clock:
    """Microseconds since the epoch at start, then monotonic."""

    def __init__(self) -> None:
        self._base = time.time_ns() // 1000 - time.monotonic_ns() // 1000

    def now_us(self) -> int:
        return self._base + time.monotonic_ns() // 1000


class Threshold:
    """Threshold RSA shares and combinations on one thread, off the ordering path."""

    def __init__(self, ctx: ReplicaContext) -> None:
        self.share_key = ctx.keys.threshold_share
        self.public = ctx.keys.threshold_public
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="threshold")
        self.done: queue.SimpleQueue[tuple[int, bytes | None]] = queue.SimpleQueue()
        self.bell = Doorbell()
        self.in_flight = 0

    def submit(self, job: A.ThresholdJob) -> None:
        self.in_flight += 1
        self.pool.submit(self._run, job)

    def _run(self, job: A.ThresholdJob) -> None:
        result: bytes | None
        try:
            result = self._compute(job)
        except Exception:  # a bug here must not kill the thread silently
            _log.exception("threshold job %d failed", job.job_id)
            result = None
        self.done.put((job.job_id, result))
        self.bell.ring()

    def _compute(self, job: A.ThresholdJob) -> bytes | None:
        from prime.crypto import threshold

        if job.op == "share":
            return threshold.sign_share(self.share_key, job.statement).to_bytes()
        raw = (share for _, share in job.shares)
        return threshold.combine_encoded(self.public, job.statement, raw, verify_shares=job.verify_shares)

    def results(self) -> list[tuple[int, bytes | None]]:
        out = []
        while True:
            try:
                out.append(self.done.get_nowait())
            except queue.Empty:
                break
        self.in_flight -= len(out)
        return out


class RecordWriter:
    """Writes the restart record (``A.Persist``) on a thread of its own, so the engine
    goes on ordering while the disk syncs it (two fsyncs: 8 to 26 ms on the review
    machine when it is quiet, far more when other processes write), and holds back only
    what depends on it: our own PO_ACKs (docs/hardening.md I11-3: an ack leaves only
    once a record covering it is on disk).

    Each record handed over gets a generation. One write at a time; records handed
    over meanwhile are coalesced into the newest, which covers every ack emitted
    before it (the core's record covers all it acked, reservation included). A write
    that fails is re-raised in the engine's thread (``poll``): the engine stops, as
    it did when the write was inline."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="record")
        self.done: queue.SimpleQueue[tuple[int, BaseException | None]] = queue.SimpleQueue()
        self.bell = Doorbell()
        self.requested = 0  # generation of the newest record handed over
        self.written = 0  # generation of the newest record on disk
        self.in_flight = False
        self.waiting: tuple[int, str] | None = None  # (generation, text) for the next write

    def submit(self, record: tuple[tuple[int, int, int, int], ...]) -> int:
        """Hand over a record; returns its generation."""
        self.requested += 1
        text = json.dumps([list(entry) for entry in record])
        if self.in_flight:
            self.waiting = (self.requested, text)  # the newest covers the ones before it
        else:
            self._start(self.requested, text)
        return self.requested

    def _start(self, generation: int, text: str) -> None:
        self.in_flight = True
        self.pool.submit(self._run, generation, text)

    def _run(self, generation: int, text: str) -> None:
        error: BaseException | None = None
        try:
            write_durably(self.path, text)
        except BaseException as e:  # handed to the engine's thread: it must not go on
            error = e
        self.done.put((generation, error))
        self.bell.ring()

    def poll(self) -> bool:
        """Take finished writes (raising a failed one's error); start the next. True if
        a write finished."""
        finished = False
        while True:
            try:
                generation, error = self.done.get_nowait()
            except queue.Empty:
                break
            if error is not None:
                raise error
            self.written = max(self.written, generation)
            self.in_flight = False
            finished = True
        if finished and self.waiting is not None:
            generation, text = self.waiting
            self.waiting = None
            self._start(generation, text)
        return finished

    def close(self) -> None:
        """Wait for the write in progress (a clean stop then writes its own record)."""
        self.pool.shutdown(wait=True)


class Engine:
    def __init__(self, ctx: ReplicaContext) -> None:
        cfg = ctx.cfg
        self.ctx = ctx
        self.me = ctx.me
        self.params = Params.from_config(cfg)
        # A restart forgets the acks this replica sent: the core must know (I11-3).
        self.replica = Replica(self.params, ctx.me, incarnation=ctx.incarnation, recovering=ctx.recovering,
                               acked_record=ctx.acked_record)
        self.acked_path = Path(cfg.networking.client_ipc_dir) / f"prime-{ctx.me}.acked"
        scheme = Ed25519Scheme({ctx.me: ctx.keys.signing_key}, {})
        self.signer = Signer(scheme, ctx.me)
        self.clock = Clock()
        self.threshold = Threshold(ctx)
        self.records = RecordWriter(self.acked_path)
        # Our own PO_ACKs waiting for the record that covers them, in the order the core
        # emitted them: (generation needed, record for the net process).
        self.held_acks: deque[tuple[int, bytes]] = deque()
        self.record_needed = 0  # generation of the newest record the core asked for
        self.inputs = ctx.to_engine
        self.out = ctx.to_net
        self.batch_max = cfg.networking.engine_batch_count_max
        self.stats = ProcStats(ctx.me, "engine", cfg.logging.stats_interval_ms / 1000)
        self.clients: deque[wire.Envelope] = deque()
        # Feed the core client updates only while its own queue is short: it packs
        # them into PO-Requests as flow control (max_po_in_flight) allows.
        self.core_queue_max = 4 * UPDATES_PER_REQUEST_MAX
        self.backlog: deque[bytes] = deque()
        self.ordinal = 0
        self.progress_every = cfg.system.print_progress_ordinals
        self.gc_watch: GcWatch | None = None
        self.stop = False

    # ------------------------------------------------------------- loop

    def run(self) -> None:
        r = self.replica
        clock = self.clock
        r.step(Tick(clock.now_us()))
        self.perform()
        poller = select.poll()
        for ring in self.inputs:
            poller.register(ring.bell.fileno(), select.POLLIN)
        poller.register(self.threshold.bell.fileno(), select.POLLIN)
        poller.register(self.records.bell.fileno(), select.POLLIN)
        while not self.stop:
            busy = self.round()
            if self.stats.due(time.monotonic()):  # also when busy: a loaded engine reports too
                self.emit_stats()
            if busy:
                continue
            deadline = r.next_deadline_us()
            now = clock.now_us()
            timeout_s = SLEEP_MAX_S if deadline is None else max(0.0, (deadline - now) / 1e6)
            stats_s = self.stats.wake_in_s(time.monotonic())
            timeout_s = min(timeout_s, SLEEP_MAX_S, SLEEP_MAX_S if stats_s is None else stats_s)
            if timeout_s <= 0:
                continue
            if all(ring.sleep_ready() for ring in self.inputs):
                poller.poll(timeout_s * 1000)
            for ring in self.inputs:
                ring.awake()
            self.threshold.bell.drain()
            self.records.bell.drain()

    def round(self) -> bool:
        """One round; True if there was input (so look again before sleeping)."""
        r = self.replica
        r.step(Tick(self.clock.now_us()))
        busy = False
        for job_id, result in self.threshold.results():
            r.step(ThresholdDone(job_id, result))
            busy = True
        if self.records.poll():
            self.release_acks()
            busy = True
        records: list[bytes] = []
        for ring in self.inputs:
            records += ring.get_batch(self.batch_max)
        if records:
            busy = True
            self.on_records_by_class(records)
        self.feed_clients()
        self.perform()
        return busy or self.ring_backlog_pending()

    def on_records_by_class(self, records: list[bytes]) -> None:
        """Timely records first (ordering, suspect-leader, view change: what the
        leader's turnaround is measured on), then the rest, each in arrival order;
        the core keeps time as it goes (``keep_time``), so a long batch neither
        delays its own timers nor stamps late messages with an early clock. The core
        does not depend on the order of one peer's messages (the simulator reorders
        every link), so serving classes out of arrival order is safe."""
        timely: list[bytes] = []
        rest: list[bytes] = []
        TIMELY = TR.TrafficClass.TIMELY
        for rec in records:
            if rec[0] == F.PEER and rec[2] == TIMELY:  # the class the net process read
                timely.append(rec)
            else:
                rest.append(rec)
        self.stats.counts["timely_first"] += len(timely)
        for part in (timely, rest):
            for start in range(0, len(part), KEEP_TIME_EVERY):
                self.on_records(part[start:start + KEEP_TIME_EVERY])
                self.keep_time()

    def keep_time(self) -> None:
        """Mid-round: step the clock and send what that (and the records so far) produced,
        once ``KEEP_TIME_US`` have passed since the last Tick."""
        now = self.clock.now_us()
        if now - self.replica.now_us >= KEEP_TIME_US:
            self.replica.step(Tick(now))
            self.perform()

    def on_records(self, records: list[bytes]) -> None:
        r = self.replica
        counts = self.stats.counts
        for rec in records:
            kind = rec[0]
            if kind == F.PEER:
                # Only a verify worker (or, with workers = 0, the net process's
                # RecordVerifier.check) puts PEER and CLIENT records here, after wire.decode
                # accepted these very bytes: rebuild them, do not check them again.
                env = wire.decode_verified(rec[F.PEER_HEADER:])
                if isinstance(env, str):  # verified by a worker: cannot happen
                    counts["decode_after_verify:" + env] += 1
                    continue
                r.step(Inbound(rec[1], env))
                counts["inbound"] += 1
            elif kind == F.CLIENT:
                env = wire.decode_verified(rec[1:])
                if isinstance(env, str):
                    counts["decode_after_verify:" + env] += 1
                    continue
                if len(self.clients) >= CLIENT_BACKLOG_MAX:
                    counts["client:backlog_full"] += 1
                    continue
                self.clients.append(env)
            elif kind == F.OVERRUN:
                # The application fell behind and was told so (NOTICE): introduce our
                # CLIENT_STATE_TRANSFER marker, as the core does after a jump, so it can
                # take a peer's state as of the marker's ordinal (README contract, rule 3).
                # The core's own method, called from here: no change to the core.
                counts["app_overrun"] += 1
                r.po.stamp_and_submit(UpdateKind.CLIENT_STATE_TRANSFER, rec[1:9])
            else:
                counts["record:unknown_kind"] += 1

    def feed_clients(self) -> None:
        r = self.replica
        q = r.po.update_queue
        clients = self.clients
        while clients and len(q) < self.core_queue_max:
            r.step(ClientUpdate(clients.popleft()))
            self.stats.counts["client_update"] += 1

    # ---------------------------------------------------------- actions

    def perform(self) -> None:
        """Carry out the core's actions (as ``SimCluster._step``)."""
        r = self.replica
        work = deque(r.take_actions())
        out = self.backlog
        counts = self.stats.counts
        while work:
            action = work.popleft()
            if isinstance(action, (A.Broadcast, A.Send)):
                if isinstance(action, A.Broadcast):
                    rec = F.B_BCAST + action.env.raw
                else:
                    rec = F.B_SEND + bytes((action.dest,)) + action.env.raw
                if (self.held_acks or self.record_needed > self.records.written) and self.own_ack(action.env):
                    # Not before the record that covers it is on disk (I11-3); behind the
                    # acks held already, in the order the core emitted them.
                    self.held_acks.append((self.record_needed, rec))
                    counts["acks_held_for_record"] += 1
                else:
                    out.append(rec)
            elif isinstance(action, A.SignJob):
                envs = self.signer.sign_batch(action.messages, action.bodies, direct=action.direct)
                r.step(CryptoDone(action.job_id, envs))
                # Its effects go after the actions already taken: the engine steps many
                # events per round, so those may hold earlier Delivers (the simulator,
                # one event per step, can put them first; here that would reorder ordinals).
                work.extend(r.take_actions())
                counts["sign_batches"] += 1
            elif isinstance(action, A.Deliver):
                self.deliver(action)
            elif isinstance(action, A.ThresholdJob):
                self.threshold.submit(action)
                counts["threshold_jobs"] += 1
            elif isinstance(action, A.Persist):
                # Written on the record thread; only our own acks wait for it.
                self.record_needed = self.records.submit(action.record)
                counts["persists"] += 1
            elif isinstance(action, A.StateTransferNeeded):
                out.append(F.B_NOTICE + msgpack.packb(action.ordinal))
                counts["state_transfer_notices"] += 1
        self.flush()

    def own_ack(self, env: wire.Envelope) -> bool:
        """Our own PO_ACK (sent, or forwarded by fetch or reconciliation): what a
        restart record must cover before it leaves."""
        return env.sender == self.me and isinstance(env.msg, PoAck)

    def release_acks(self) -> None:
        """Hand the net process the held acks whose record is now on disk."""
        held, written = self.held_acks, self.records.written
        while held and held[0][0] <= written:
            self.backlog.append(held.popleft()[1])
        self.flush()

    def persist(self, action: A.Persist) -> None:
        """Write a record now, in this thread (written, synced, renamed): the clean
        stop's. The core's records during the run go to ``RecordWriter`` instead, and
        our acks that follow one wait for it (docs/hardening.md I11-3). Rare either way:
        the record reserves ahead of the acks (about half a second of them), and its
        writes are paced (``PERSIST_INTERVAL_US``) however a faulty originator behaves
        (prime/core/preorder.py)."""
        write_durably(self.acked_path, json.dumps([list(entry) for entry in action.record]))

    def clean_stop(self) -> None:
        """A clean stop (SIGTERM; the supervisor sends it on SIGINT and SIGTERM): write the
        exact record, so the next life withholds nothing this one did not ack and an
        operator's rolling restart leaves no gate (I11-3). Nothing is sent after it: the
        engine exits, and what it handed the net process already is covered (acks
        still held for a record are never sent)."""
        self.records.close()  # one writer of the file at a time
        self.persist(A.Persist(self.replica.clean_stop_record()))
        self.stats.counts["persists"] += 1

    def deliver(self, action: A.Deliver) -> None:
        counts = self.stats.counts
        assert action.ordinal > self.ordinal, (self.ordinal, action.ordinal)  # the core's order
        self.ordinal = action.ordinal
        every = self.progress_every
        if every and action.ordinal % every == 0:
            _log.info(
                "progress: ordinal %d, %d updates delivered, view %d",
                action.ordinal, counts["updates_delivered"] + len(action.updates), self.replica.view,
            )
        counts["ordinals"] += 1
        counts["updates_delivered"] += len(action.updates)
        chunk: list[list[Any]] = []
        size = 0
        out = self.backlog
        ordinal = action.ordinal
        for u in action.updates:
            chunk.append([u.client, u.incarnation, u.seq, u.kind, u.payload])
            size += len(u.payload) + 32
            if size >= DELIVER_CHUNK_BYTES:
                out.append(F.B_DELIVER + F.DELIVER_HEAD.pack(ordinal, 0) + msgpack.packb(chunk))
                chunk, size = [], 0
        out.append(F.B_DELIVER + F.DELIVER_HEAD.pack(ordinal, 1) + msgpack.packb(chunk))

    def flush(self) -> None:
        out = self.backlog
        ring = self.out
        while out:
            if not ring.put(out[0]):
                break
            out.popleft()
        ring.flush()
        if len(out) > OUT_BACKLOG_MAX:
            # The net process stopped reading. Peer messages are retransmitted; keep the rest.
            kept = deque(rec for rec in out if rec[0] not in (F.SEND, F.BCAST))
            self.stats.counts["out:dropped_backlog"] += len(out) - len(kept)
            self.backlog = kept

    def ring_backlog_pending(self) -> bool:
        return bool(self.backlog)

    def gapped_requests(self) -> dict[int, list[int]]:
        """Originator -> [requests held above its ARU, its ARU's sequence number]. One
        pass over the PO window per stats line (bounded by ``po_window_max`` per
        originator)."""
        po = self.replica.po
        out: dict[int, list[int]] = {}
        for s in range(1, self.replica.n + 1):
            aru = po.aru[s]
            held = sum(1 for q, slot in po.history[s].items() if q > aru and slot.request is not None)
            if held:
                out[s] = [held, aru[1]]
        return out

    def emit_stats(self) -> None:
        r = self.replica
        self.stats.emit(
            time.monotonic(),
            {
                "view": r.view,
                "ordinal": self.ordinal,
                "incarnation": r.incarnation,
                "recovering": r.recovering,
                # restart amnesia (I11-3): acks held back, originators whose ids are still gated
                "amnesia_acks_withheld": r.stats.amnesia_acks_withheld,
                "amnesia_gates_open": [s for s in range(1, r.n + 1) if r.po.amnesia_gate_open(s)],
                "core_dropped": dict(sorted(r.stats.dropped.items())),
                "jumps": r.stats.jumps,
                # suspect-leader view of the links: RTT each peer measured to us, suspicions
                "rtt_min_us": {j: v for j, v in enumerate(r.suspect.rtt_min) if j and j != r.me and v < 10**13},
                "suspicions": r.suspect.suspicions,
                # an idle replica's keep-alives rest (docs/design.md section 10)
                "quiescent": r.quiescent(),
                "keepalive_paused": r.suspect.keepalive_paused(),
                "timers_fired": dict(sorted(r.stats.timers_fired.items())),
                "tat_leader_us": r.suspect.tat_leader_us,
                "tat_bound_us": r.suspect.threshold_us() if r.suspect.tat_acceptable_us < 10**13 else None,
                "gc_max_pause_ms": [round(x, 2) for x in self.gc_watch.max_ms] if self.gc_watch else None,
                "gc_collections": list(self.gc_watch.count) if self.gc_watch else None,
                # Per originator with any: requests held beyond the last one received in
                # sequence (what a gapped flood leaves: held, not yet acked), and the ARU.
                "po_gapped": self.gapped_requests(),
            },
        )


class GcWatch:
    """Longest garbage-collector pause per generation (a stall the core's timers feel)."""

    def __init__(self) -> None:
        self.start = 0.0
        self.max_ms = [0.0, 0.0, 0.0]
        self.count = [0, 0, 0]
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.start = time.perf_counter()
            return
        gen = info.get("generation", 0)
        ms = (time.perf_counter() - self.start) * 1000
        self.count[gen] += 1
        if ms > self.max_ms[gen]:
            self.max_ms[gen] = ms


def engine_main(ctx: ReplicaContext) -> int:
    engine = Engine(ctx)
    engine.gc_watch = GcWatch()

    def _stop(signum: int, frame: Any) -> None:
        raise SystemExit(0)  # also out of a poll (PEP 475 would resume it)

    signal.signal(signal.SIGTERM, _stop)
    try:
        engine.run()
    except SystemExit:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the record is written whole
        engine.clean_stop()
    finally:
        engine.emit_stats()
    return 0
