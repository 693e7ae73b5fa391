"""Traffic classes, priority scheduling, token-bucket throttling and link emulation.

Pure: no sockets, no clocks, no global randomness. Every method that depends on
time takes ``now`` (seconds, any monotonic origin); randomness comes from a
``random.Random`` the caller seeds. The network process
(``prime.proc.net_main``) owns the sockets and the clock and drives these.

Three classes, served strictly in this order (the original Prime's split):

* ``TIMELY``: the ordering messages whose turnaround the suspect-leader protocol
  measures (PRE_PREPARE, PREPARE, COMMIT), the suspect-leader messages themselves,
  and the view change. A flood of bulk traffic must never delay them, or a correct
  leader looks slow and is replaced.
* ``BOUNDED``: pre-ordering (PO_REQUEST, PO_ACK, PO_ARU, PROOF_MATRIX) and client
  traffic. Its volume is bounded by the pre-ordering flow control.
* ``RECON``: reconciliation and catch-up, bulk traffic that only a lagging
  replica needs; it gets what is left.

Decisions beyond the original list (``CLASS_OF_TAG`` is the one table):

* View change (RB_*, REPORT, PC_SET, VC_*, REPLAY*, NEW_LEADER*) is TIMELY: it runs
  only when the leader is suspected, its volume per view is bounded by N, and while
  it runs nothing is ordered, so queueing it behind bulk traffic only prolongs the
  outage a Byzantine flooder wants.
* Catch-up (CATCHUP_REQUEST, ORD_CERT, REPLAYED) is RECON: like reconciliation it
  serves a replica that fell behind, can be large (an ORD_CERT carries a
  pre-prepare and a quorum of commits), and a Byzantine replica can ask for it at
  will; the replicas that keep up never wait for it.
* A frame whose tag cannot be read, or an unknown tag, is RECON: junk gets the
  lowest priority, and the verifier drops and counts it.
"""

from __future__ import annotations

import enum
import heapq
import math
import random
from collections import Counter, deque
from dataclasses import dataclass
from typing import Callable, Generic, TypeVar

from prime import msgs as M

T = TypeVar("T")


class TrafficClass(enum.IntEnum):
    """Lower value is served first."""

    TIMELY = 0
    BOUNDED = 1
    RECON = 2


CLASSES: tuple[TrafficClass, ...] = tuple(TrafficClass)

# The literal table: every message tag of ``prime.msgs`` -> its class.
CLASS_OF_TAG: dict[int, TrafficClass] = {
    # ordering (timely)
    M.T_PRE_PREPARE: TrafficClass.TIMELY,
    M.T_PREPARE: TrafficClass.TIMELY,
    M.T_COMMIT: TrafficClass.TIMELY,
    # the TAT challenge (timely, as in the original: T/6): a non-leader's proof matrix
    # starts the turnaround the leader is measured on, so bulk traffic queued ahead of
    # it would count against a correct leader (docs/protocol.md, receive-side priority)
    M.T_PROOF_MATRIX: TrafficClass.TIMELY,
    # suspect-leader (timely)
    M.T_TAT_MEASURE: TrafficClass.TIMELY,
    M.T_RTT_PING: TrafficClass.TIMELY,
    M.T_RTT_PONG: TrafficClass.TIMELY,
    M.T_RTT_MEASURE: TrafficClass.TIMELY,
    M.T_TAT_UB: TrafficClass.TIMELY,
    M.T_NEW_LEADER: TrafficClass.TIMELY,
    M.T_NEW_LEADER_PROOF: TrafficClass.TIMELY,
    # view change (timely: see the module docstring)
    M.T_RB_INIT: TrafficClass.TIMELY,
    M.T_RB_ECHO: TrafficClass.TIMELY,
    M.T_RB_READY: TrafficClass.TIMELY,
    M.T_REPORT: TrafficClass.TIMELY,
    M.T_PC_SET: TrafficClass.TIMELY,
    M.T_VC_LIST: TrafficClass.TIMELY,
    M.T_VC_PARTIAL_SIG: TrafficClass.TIMELY,
    M.T_VC_PROOF: TrafficClass.TIMELY,
    M.T_REPLAY: TrafficClass.TIMELY,
    M.T_REPLAY_PREPARE: TrafficClass.TIMELY,
    M.T_REPLAY_COMMIT: TrafficClass.TIMELY,
    # pre-ordering and client traffic (bounded)
    M.T_PO_REQUEST: TrafficClass.BOUNDED,
    M.T_PO_ACK: TrafficClass.BOUNDED,
    M.T_PO_ARU: TrafficClass.BOUNDED,
    M.T_UPDATE: TrafficClass.BOUNDED,
    M.T_CLIENT_RESPONSE: TrafficClass.BOUNDED,
    # reconciliation and catch-up (recon: see the module docstring)
    M.T_RECON: TrafficClass.RECON,
    M.T_CATCHUP_REQUEST: TrafficClass.RECON,
    M.T_ORD_CERT: TrafficClass.RECON,
    M.T_REPLAYED: TrafficClass.RECON,
    # a blocked replica's request for a request and its acks (prime/core/fetch.py): like
    # reconciliation, only a lagging replica needs it, and a faulty one can ask at will
    M.T_PO_FETCH: TrafficClass.RECON,
}

# ---------------------------------------------------------------------------
# Reading the tag of an envelope without decoding it.
#
# Envelope: [sender, mt_num, mt_index, sig(bin), [path bins...], body(bin)], body =
# msgpack [tag, ...]. Only the header bytes are looked at; any surprise gives None.


def _skip_int(raw: bytes, i: int) -> int:
    b = raw[i]
    if b < 0x80 or b >= 0xE0:
        return i + 1
    width = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8, 0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8}.get(b)
    if width is None:
        raise ValueError("not an int")
    return i + 1 + width


def _bin_span(raw: bytes, i: int) -> tuple[int, int]:
    """(start, end) of the bin payload at ``i``."""
    b = raw[i]
    width = {0xC4: 1, 0xC5: 2, 0xC6: 4}.get(b)
    if width is None:
        raise ValueError("not a bin")
    size = int.from_bytes(raw[i + 1:i + 1 + width], "big")
    start = i + 1 + width
    return start, start + size


def _array_len(raw: bytes, i: int) -> tuple[int, int]:
    """(count, index after the header) of the array at ``i``."""
    b = raw[i]
    if 0x90 <= b <= 0x9F:
        return b & 0x0F, i + 1
    if b == 0xDC:
        return int.from_bytes(raw[i + 1:i + 3], "big"), i + 3
    raise ValueError("not an array")


def tag_of(raw: bytes, start: int = 0) -> int | None:
    """The message tag inside the envelope that starts at ``raw[start]``, or None if
    the bytes are not shaped like one (never raises; cost: a few header bytes, no
    allocation beyond ints)."""
    try:
        count, i = _array_len(raw, start)
        if count != 6:
            return None
        for _ in range(3):
            i = _skip_int(raw, i)
        i = _bin_span(raw, i)[1]
        paths, i = _array_len(raw, i)
        for _ in range(paths):
            i = _bin_span(raw, i)[1]
        start, end = _bin_span(raw, i)
        if end > len(raw) or end - start < 2:
            return None
        _, j = _array_len(raw, start)
        tag = raw[j]
        return tag if tag < 0x80 else None
    except (ValueError, IndexError):
        return None


def class_of(raw: bytes, start: int = 0) -> TrafficClass:
    """The traffic class of the envelope at ``raw[start]`` (RECON when unreadable)."""
    tag = tag_of(raw, start)
    return CLASS_OF_TAG.get(tag, TrafficClass.RECON) if tag is not None else TrafficClass.RECON


class Lane(enum.IntEnum):
    """What an inbound frame is charged to in its sender's per-kind budget
    (``InboundBudgets``); timely traffic is in none."""

    PO_REQUEST = 0  # a correct replica sends one per pre-order period at most
    BOUNDED = 1  # the rest of pre-ordering: acks, ARUs, updates
    RECON = 2  # reconciliation and catch-up: a correct replica sends it only to a lagging one


LANE_OF_CLASS: dict[TrafficClass, Lane] = {TrafficClass.BOUNDED: Lane.BOUNDED, TrafficClass.RECON: Lane.RECON}


def lane_of(tag: int | None, cls: TrafficClass) -> Lane | None:
    """The budget lane of a frame with ``tag`` in class ``cls`` (None: timely)."""
    if tag == M.T_PO_REQUEST:
        return Lane.PO_REQUEST
    return LANE_OF_CLASS.get(cls)


# ---------------------------------------------------------------------------
# Inbound: class first, then round-robin across peers within a class.


class FairScheduler(Generic[T]):
    """Queues per (class, peer); ``pop`` serves the most urgent non-empty class and,
    within it, the peers in turn, one item each.

    Every peer has its own bounded queue per class (``per_peer_max`` items and, when
    ``push`` is told sizes, ``per_peer_bytes_max`` bytes), so a peer flooding
    well-formed messages fills only its own queue: its excess is refused (``push``
    returns False, counted in ``dropped``) while every other peer keeps its share.
    Nothing is dropped silently.
    """

    def __init__(self, per_peer_max: int, per_peer_bytes_max: int = 0) -> None:
        if per_peer_max < 1:
            raise ValueError("per_peer_max must be >= 1")
        self.per_peer_max = per_peer_max
        self.per_peer_bytes_max = per_peer_bytes_max  # 0: no byte bound
        self._bytes: list[dict[int, int]] = [{} for _ in CLASSES]  # held per (class, peer)
        self._sizes: list[dict[int, deque[int]]] = [{} for _ in CLASSES]  # beside each queue
        self._queues: list[dict[int, deque[T]]] = [{} for _ in CLASSES]
        # peers with a non-empty queue, in service order, per class
        self._turn: list[deque[int]] = [deque() for _ in CLASSES]
        self._size = 0
        self.queued: Counter[TrafficClass] = Counter()
        self.served: Counter[TrafficClass] = Counter()
        self.dropped: Counter[TrafficClass] = Counter()

    def __len__(self) -> int:
        return self._size

    def push(self, cls: TrafficClass, peer: int, item: T, size: int = 0) -> bool:
        """Queue ``item`` (of ``size`` bytes, if the byte bound is to count it)."""
        queues = self._queues[cls]
        q = queues.get(peer)
        if q is None:
            q = queues[peer] = deque()
        held = self._bytes[cls].get(peer, 0)
        if len(q) >= self.per_peer_max or (self.per_peer_bytes_max and size and held + size > self.per_peer_bytes_max):
            self.dropped[cls] += 1
            return False
        if self.per_peer_bytes_max:
            self._bytes[cls][peer] = held + size
            sizes = self._sizes[cls].get(peer)
            if sizes is None:
                sizes = self._sizes[cls][peer] = deque()
            sizes.append(size)
        if not q:
            self._turn[cls].append(peer)
        q.append(item)
        self._size += 1
        self.queued[cls] += 1
        return True

    def pop(self, gate: Callable[[int, T], bool] | None = None) -> tuple[TrafficClass, int, T] | None:
        """The next item; a peer whose next item ``gate(peer, item)`` refuses is passed
        over (its items wait, in order) and the next peer or class is served."""
        for cls in CLASSES:
            turn = self._turn[cls]
            queues = self._queues[cls]
            for _ in range(len(turn)):
                peer = turn[0]
                q = queues[peer]
                if gate is not None and not gate(peer, q[0]):
                    turn.rotate(-1)
                    continue
                turn.popleft()
                item = q.popleft()
                if self.per_peer_bytes_max:
                    self._bytes[cls][peer] -= self._sizes[cls][peer].popleft()
                if q:
                    turn.append(peer)  # back of the line: the other peers go first
                self._size -= 1
                self.served[cls] += 1
                return cls, peer, item
        return None

    def full(self, peer: int) -> bool:
        """Whether one of ``peer``'s queues is at a bound (the next push may be refused)."""
        return any(self.class_full(cls, peer) for cls in CLASSES)

    def class_full(self, cls: TrafficClass, peer: int) -> bool:
        if len(self._queues[cls].get(peer, ())) >= self.per_peer_max:
            return True
        bound = self.per_peer_bytes_max
        return bool(bound) and self._bytes[cls].get(peer, 0) >= bound // 2

    def waiting(self, cls: TrafficClass, peer: int) -> int:
        return len(self._queues[cls].get(peer, ()))

    def head(self, cls: TrafficClass, peer: int) -> T:
        """The item ``pop`` would serve next for (``cls``, ``peer``), which must wait."""
        return self._queues[cls][peer][0]

    def waiting_peers(self, cls: TrafficClass) -> tuple[int, ...]:
        """The peers with items of ``cls`` waiting, in service order."""
        return tuple(self._turn[cls])

    def peek_class(self) -> TrafficClass | None:
        for cls in CLASSES:
            if self._turn[cls]:
                return cls
        return None


# ---------------------------------------------------------------------------
# Outgoing: token buckets per class.


class TokenBucket:
    """Bits refill at ``rate_bps`` up to ``depth_bits``; starts full.

    A message larger than the depth (a broadcast to many peers) may be taken when
    the bucket is full, leaving a debt that the refill pays back first, so the
    long-run rate still matches ``rate_bps`` and nothing waits forever.
    """

    def __init__(self, rate_bps: float, depth_bits: float, now: float) -> None:
        if rate_bps <= 0 or depth_bits <= 0:
            raise ValueError("rate and depth must be positive")
        self.rate_bps = float(rate_bps)
        self.depth_bits = float(depth_bits)
        self.tokens = float(depth_bits)
        self.last = now

    def refill(self, now: float) -> None:
        if now > self.last:
            self.tokens = min(self.depth_bits, self.tokens + (now - self.last) * self.rate_bps)
            self.last = now

    def take(self, bits: float) -> bool:
        if self.tokens >= bits or self.tokens >= self.depth_bits:
            self.tokens -= bits
            return True
        return False


class PeerBudgets:
    """Inbound, per sender: how many frames the net process may read from each
    peer now (``[throttling] inbound_peer_*``).

    Two buckets per peer, frames and bits, refilled at their rates up to a burst of
    ``burst_s`` at those rates. Reading charges both after the fact (a frame's size
    is known only once read), so the bits may go into debt by one frame; a peer is
    read again once both are positive.

    The frame rate of a peer is ``msgs_per_s`` at most, and, with ``vs_others`` > 0,
    at most ``vs_others`` times what the ``(f+1)``-th busiest peer sent in the last
    window (never below ``floor_msgs_per_s``). In Prime every correct replica sends
    about the same traffic (everyone pre-orders, acks and votes), and at most ``f``
    peers are faulty, so the ``(f+1)``-th highest rate is a correct peer's (or
    above one): a flooder gets a few times a correct peer's rate at whatever load
    the system runs, and a correct peer is never held below its own pace. Until
    the first window has passed, every peer has the absolute cap.
    """

    WINDOW_S = 1.0
    PAUSE_QUANTUM_S = 0.02  # a peer out of budget is read again once it has this much

    def __init__(self, peers: list[int], msgs_per_s: float, bps: float, burst_s: float, now: float, *,
                 f: int = 0, vs_others: float = 0.0, floor_msgs_per_s: float = 0.0) -> None:
        if msgs_per_s <= 0 or bps <= 0 or burst_s <= 0:
            raise ValueError("inbound rates and burst must be positive")
        self.cap = float(msgs_per_s)
        self.burst_s = burst_s
        self.f = f
        self.vs_others = vs_others
        self.floor = min(float(floor_msgs_per_s), self.cap) if floor_msgs_per_s > 0 else self.cap
        rate = self.cap  # until a window has shown what correct peers send
        self.msgs = {p: TokenBucket(rate, max(1.0, rate * burst_s), now) for p in peers}
        self.bits = {p: TokenBucket(bps, max(8.0, bps * burst_s), now) for p in peers}
        self.window: Counter[int] = Counter()  # frames read per peer in the current window
        self.window_start = now
        self.rate_now: dict[int, float] = {p: rate for p in peers}
        self.paused: Counter[int] = Counter()  # times a peer was left unread for lack of tokens
        self.read: Counter[int] = Counter()  # frames read per peer, ever

    def allowed(self, peer: int, now: float) -> tuple[int, float]:
        """(frames, bytes) ``peer`` may send now; read frames while both last (the
        last one read may overdraw the bytes). (0, _): leave its socket unread."""
        if now - self.window_start >= self.WINDOW_S:
            self._rerate(now)
        msgs, bits = self.msgs[peer], self.bits[peer]
        msgs.refill(now)
        bits.refill(now)
        if msgs.tokens < 1 or bits.tokens <= 0:
            return 0, 0.0
        return int(msgs.tokens), bits.tokens / 8

    def charge(self, peer: int, frames: int, nbytes: int) -> None:
        self.msgs[peer].tokens -= frames
        self.bits[peer].tokens -= 8 * nbytes
        self.window[peer] += frames
        self.read[peer] += frames

    def ready_in(self, peer: int) -> float:
        """Seconds until ``peer`` has ``PAUSE_QUANTUM_S`` of frames in its budget again
        (at least one frame's worth of both), so that a peer held to its budget is read
        in batches: read a frame at a time as its tokens trickle in, a flooder woke the
        net process, then a worker and the engine, once per frame it got through."""
        msgs, bits = self.msgs[peer], self.bits[peer]
        need = min(msgs.depth_bits, max(1.0, msgs.rate_bps * self.PAUSE_QUANTUM_S))
        wait_msgs = max(0.0, (need - msgs.tokens) / msgs.rate_bps)
        wait_bits = max(0.0, (1 - bits.tokens) / bits.rate_bps)
        return max(wait_msgs, wait_bits)

    def _rerate(self, now: float) -> None:
        elapsed = now - self.window_start
        if self.vs_others > 0:
            rates = sorted((self.window[p] / elapsed for p in self.msgs), reverse=True)
            reference = rates[min(self.f, len(rates) - 1)]
            rate = min(self.cap, max(self.floor, self.vs_others * reference))
            for p, bucket in self.msgs.items():
                bucket.refill(now)
                bucket.rate_bps = rate
                bucket.depth_bits = max(1.0, rate * self.burst_s)
                bucket.tokens = min(bucket.tokens, bucket.depth_bits)
                self.rate_now[p] = rate
        self.window.clear()
        self.window_start = now


class InboundBudgets:
    """Inbound, per (sender, lane): how many PO-Requests, other pre-ordering frames
    and reconciliation frames the net process passes on from each peer
    (``[throttling] inbound_class_*``).

    ``PeerBudgets`` bounds what is read from a peer, all kinds together, at a few
    times a correct peer's frame rate. That still lets a faulty replica fill its
    whole share with its cheapest-to-make, costliest-to-handle traffic: validly
    signed PO-Requests, each new one acked by every replica and ordered, where a
    correct replica sends one per pre-order period and only for its clients; and
    reconciliation, which a correct replica sends only to a lagging peer. Here each
    lane has its own relative bound: per peer at most ``ratio`` times the
    ``(f+1)``-th busiest peer's rate in that lane over the last window (a correct
    peer's, or above one, since at most ``f`` lie), never below the lane's floor,
    never above the absolute cap. A frame over its budget is not dropped: it waits
    in its sender's own queue (``FairScheduler``), other peers and classes are
    served past it, and once that queue is full the net process stops reading the
    sender's socket, so the back-pressure reaches the sender's TCP connection.
    Timely traffic is in no lane (``PeerBudgets`` bounds its rate).
    """

    WINDOW_S = 1.0
    QUANTUM_S = 0.05  # a sender held to a lane budget is passed on in batches of this much

    def __init__(self, peers: list[int], limits: dict[Lane, tuple[float, float]], *, f: int,
                 cap: float, burst_s: float, now: float) -> None:
        self.limits = {lane: (ratio, min(floor, cap)) for lane, (ratio, floor) in limits.items() if ratio > 0}
        self.f = f
        self.cap = float(cap)
        self.burst_s = burst_s
        self.buckets: dict[Lane, dict[int, TokenBucket]] = {
            lane: {p: TokenBucket(self.cap, max(1.0, self.cap * burst_s), now) for p in peers} for lane in self.limits
        }
        self.window: dict[Lane, Counter[int]] = {lane: Counter() for lane in self.limits}
        self.window_start = now
        self.rate_now: dict[Lane, float] = {lane: self.cap for lane in self.limits}
        self.deferred: Counter[int] = Counter()  # frames of a peer that waited for their lane budget
        self._deferred_head: dict[tuple[Lane, int], object] = {}  # the frame last counted, per lane
        self.now = now

    def arrived(self, peer: int, lane: Lane | None) -> None:
        if lane is not None:
            window = self.window.get(lane)
            if window is not None:
                window[peer] += 1

    def tick(self, now: float) -> None:
        self.now = now
        if now - self.window_start >= self.WINDOW_S:
            self._rerate(now)

    def take(self, lane: Lane | None, peer: int, item: object = None) -> bool:
        """Whether one frame of ``lane`` from ``peer`` may go on now (charged if so). A
        refused ``item`` is counted in ``deferred`` once, however often it is asked for
        (the net process asks every round while it waits)."""
        buckets = self.buckets.get(lane) if lane is not None else None
        if buckets is None:
            return True
        bucket = buckets[peer]
        bucket.refill(self.now)
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return True
        if item is None or self._deferred_head.get((lane, peer)) is not item:
            self.deferred[peer] += 1
            if item is not None:
                self._deferred_head[(lane, peer)] = item
        return False

    def ready_in(self, lane: Lane | None, peer: int) -> float:
        """Seconds until ``peer`` may pass on ``QUANTUM_S`` of ``lane``'s frames again (at
        least one): the net process wakes for a sender held to its lane budget once per
        batch, not once per frame (a worker and the engine then wake once per batch too)."""
        buckets = self.buckets.get(lane) if lane is not None else None
        if buckets is None:
            return 0.0
        bucket = buckets[peer]
        need = min(bucket.depth_bits, max(1.0, bucket.rate_bps * self.QUANTUM_S))
        return max(0.0, (need - bucket.tokens) / bucket.rate_bps)

    def _rerate(self, now: float) -> None:
        elapsed = now - self.window_start
        for lane, (ratio, floor) in self.limits.items():
            window = self.window[lane]
            buckets = self.buckets[lane]
            rates = sorted((window[p] / elapsed for p in buckets), reverse=True)
            reference = rates[min(self.f, len(rates) - 1)]
            rate = min(self.cap, max(floor, ratio * reference))
            for bucket in buckets.values():
                bucket.refill(now)
                bucket.rate_bps = rate
                bucket.depth_bits = max(1.0, rate * self.burst_s)
                bucket.tokens = min(bucket.tokens, bucket.depth_bits)
            self.rate_now[lane] = rate
            window.clear()
        self.window_start = now


@dataclass(frozen=True, slots=True)
class ThrottleSettings:
    """``[throttling]`` of def.toml, in the units the throttle uses."""

    enabled: bool
    rate_bps: tuple[float, float, float]  # per class, by TrafficClass value
    depth_bits: float
    tick_s: float
    queue_max: int  # items waiting per class before new ones are refused

    @classmethod
    def from_config(cls, throttling: object, queue_max: int) -> "ThrottleSettings":
        t = throttling
        return cls(
            enabled=bool(getattr(t, "throttle_outgoing")),
            rate_bps=(
                float(getattr(t, "bandwidth_timely_bps")),
                float(getattr(t, "bandwidth_bounded_bps")),
                float(getattr(t, "bandwidth_recon_bps")),
            ),
            depth_bits=float(getattr(t, "tokens_max_bits")),
            tick_s=getattr(t, "throttle_tick_us") / 1e6,
            queue_max=queue_max,
        )


class Throttle(Generic[T]):
    """Per-class token buckets with a bounded FIFO per class.

    ``submit`` queues an item with its cost in bits; ``release(now)`` refills the
    buckets and returns, timely first, every item whose class has the tokens. A
    full class queue refuses new items (``submit`` returns False) and counts them
    in ``dropped``: the caller drops the frame and the protocol retransmits, never
    silently. When disabled, ``submit`` queues and ``release`` hands everything
    back, so the caller has one path either way.
    """

    def __init__(self, settings: ThrottleSettings, now: float) -> None:
        self.settings = settings
        self.buckets = [TokenBucket(settings.rate_bps[c], settings.depth_bits, now) for c in CLASSES]
        self.queues: list[deque[tuple[T, int]]] = [deque() for _ in CLASSES]
        self.submitted: Counter[TrafficClass] = Counter()
        self.sent_items: Counter[TrafficClass] = Counter()
        self.sent_bits: Counter[TrafficClass] = Counter()
        self.throttled: Counter[TrafficClass] = Counter()  # items that had to wait a tick
        self.dropped: Counter[TrafficClass] = Counter()

    def submit(self, cls: TrafficClass, item: T, bits: int) -> bool:
        q = self.queues[cls]
        if len(q) >= self.settings.queue_max:
            self.dropped[cls] += 1
            return False
        q.append((item, bits))
        self.submitted[cls] += 1
        return True

    def waiting(self) -> int:
        return sum(len(q) for q in self.queues)

    def release(self, now: float) -> list[tuple[TrafficClass, T]]:
        out: list[tuple[TrafficClass, T]] = []
        enabled = self.settings.enabled
        for cls in CLASSES:
            q = self.queues[cls]
            if not q:
                continue
            bucket = self.buckets[cls]
            bucket.refill(now)
            while q:
                item, bits = q[0]
                if enabled and not bucket.take(bits):
                    self.throttled[cls] += 1
                    break
                q.popleft()
                out.append((cls, item))
                self.sent_items[cls] += 1
                self.sent_bits[cls] += bits
        return out

    def next_release(self, now: float) -> float | None:
        """When ``release`` can next hand something out (now if it can at once)."""
        best: float | None = None
        for cls in CLASSES:
            q = self.queues[cls]
            if not q:
                continue
            if not self.settings.enabled:
                return now
            bucket = self.buckets[cls]
            bucket.refill(now)
            need = min(q[0][1], bucket.depth_bits) - bucket.tokens
            at = now if need <= 0 else now + need / bucket.rate_bps
            at = max(at, now)
            best = at if best is None else min(best, at)
        return best


# ---------------------------------------------------------------------------
# Wide-area link emulation, on the sending side.


@dataclass(frozen=True, slots=True)
class LinkParams:
    """One direction of one link. ``bandwidth_bps`` 0 means unlimited."""

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0
    bandwidth_bps: int = 0

    @property
    def inert(self) -> bool:
        return not (self.delay_ms or self.jitter_ms or self.loss or self.bandwidth_bps)


class LinkEmulator(Generic[T]):
    """Holds each outgoing frame until its emulated arrival, or drops it.

    For a frame of ``size`` bytes sent at ``now`` on link ``dest``: with probability
    ``loss`` it is dropped (counted: the protocol retransmits); otherwise it leaves
    once the link finished sending the frames before it (``size * 8 / bandwidth``
    each) and is released ``delay +- jitter`` (uniform) later. Frames on one link
    are released in order (the real link is TCP, which cannot reorder), so jitter
    larger than the gap between frames delays the later ones too. At most
    ``queue_max`` frames wait per link; beyond that a frame is refused and counted.
    """

    def __init__(self, links: dict[int, LinkParams], rng: random.Random, queue_max: int) -> None:
        self.links = links
        self.rng = rng
        self.queue_max = queue_max
        self._heap: list[tuple[float, int, int, T]] = []
        self._seq = 0
        self._busy_until: dict[int, float] = {}  # link serialisation (bandwidth)
        self._last_release: dict[int, float] = {}  # FIFO per link
        self._waiting: Counter[int] = Counter()
        self.sent: Counter[int] = Counter()
        self.lost: Counter[int] = Counter()
        self.refused: Counter[int] = Counter()

    @property
    def active(self) -> bool:
        return any(not p.inert for p in self.links.values())

    def send(self, dest: int, item: T, size: int, now: float) -> bool:
        """Schedule ``item``; False if it was lost or refused (both counted)."""
        p = self.links.get(dest, LinkParams())
        if p.loss and self.rng.random() < p.loss:
            self.lost[dest] += 1
            return False
        if self._waiting[dest] >= self.queue_max:
            self.refused[dest] += 1
            return False
        depart = now
        if p.bandwidth_bps:
            depart = max(now, self._busy_until.get(dest, now)) + size * 8 / p.bandwidth_bps
            self._busy_until[dest] = depart
        delay = p.delay_ms
        if p.jitter_ms:
            delay += self.rng.uniform(-p.jitter_ms, p.jitter_ms)
        at = max(depart + max(delay, 0.0) / 1000, self._last_release.get(dest, -math.inf))
        self._last_release[dest] = at
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, dest, item))
        self._waiting[dest] += 1
        return True

    def due(self, now: float) -> list[tuple[int, T]]:
        """Frames whose release time has come, in release order."""
        heap = self._heap
        out: list[tuple[int, T]] = []
        while heap and heap[0][0] <= now:
            _, _, dest, item = heapq.heappop(heap)
            self._waiting[dest] -= 1
            self.sent[dest] += 1
            out.append((dest, item))
        return out

    def next_due(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def waiting(self) -> int:
        return len(self._heap)


def links_from_config(cfg: object, me: int) -> dict[int, LinkParams]:
    """This replica's outgoing links: ``link_*`` of ``[networking]`` for every peer,
    replaced by a ``[[links]]`` entry naming the pair (either order)."""
    net = getattr(cfg, "networking")
    default = LinkParams(
        net.link_delay_ms, net.link_jitter_ms, net.link_loss, net.link_bandwidth_bps
    )
    out = {peer: default for peer in range(1, getattr(cfg, "n") + 1) if peer != me}
    for link in getattr(cfg, "links"):
        if me in (link.a, link.b):
            other = link.b if link.a == me else link.a
            out[other] = LinkParams(link.delay_ms, link.jitter_ms, link.loss, link.bandwidth_bps)
    return out


def counters(
    throttle: Throttle[object] | None,
    inbound: FairScheduler[object] | None,
    link: LinkEmulator[object] | None,
) -> dict[str, int]:
    """Flat counters for a stats line: ``out:<class>:sent_bits`` and friends."""
    out: dict[str, int] = {}
    for cls in CLASSES:
        name = cls.name.lower()
        if throttle is not None:
            out[f"out:{name}:submitted"] = throttle.submitted[cls]
            out[f"out:{name}:msgs"] = throttle.sent_items[cls]
            out[f"out:{name}:bytes"] = throttle.sent_bits[cls] // 8
            out[f"out:{name}:queued"] = len(throttle.queues[cls])
            out[f"out:{name}:throttled"] = throttle.throttled[cls]
            out[f"drop:out:{name}:throttle_queue_full"] = throttle.dropped[cls]
        if inbound is not None:
            out[f"in:{name}:served"] = inbound.served[cls]
            out[f"drop:in:{name}:peer_queue_full"] = inbound.dropped[cls]
    if link is not None:
        out["link:sent"] = sum(link.sent.values())
        out["link:waiting"] = link.waiting()
        out["drop:link:loss"] = sum(link.lost.values())
        out["drop:link:queue_full"] = sum(link.refused.values())
    return out

