"""Glue between the network process's sockets and ``prime.net.traffic``.

``Outbound``: every frame the engine sends passes the classifier, the per-class
token buckets (``[throttling]``) and the link emulator (``link_*``, ``[[links]]``)
before it reaches a peer's DEALER. ``Inbound``: frames read from the ROUTER wait
in per-(class, peer) queues and go to the verify workers timely class first and
round-robin across peers within a class, as the rings have room.

The clock is the caller's (``now`` in seconds of ``time.monotonic``), so the
network process keeps one loop; this module owns no timer, no thread.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Callable

import zmq

from prime.config import Config
from prime.net import traffic as TR

THROTTLE_QUEUE_MAX = 10_000  # frames waiting per class for tokens
LINK_QUEUE_MAX = 100_000  # frames waiting per emulated link for their release time
INBOUND_PER_PEER_MAX = 1024  # frames waiting per (class, peer) for ring room or their lane budget
INBOUND_PER_PEER_BYTES_MAX = 4 << 20  # ... and bytes: a sender's queues hold at most 12 MiB


class Outbound:
    """Outgoing frames: classify, throttle, emulate the link, send without blocking."""

    def __init__(
        self, cfg: Config, me: int, dealers: dict[int, zmq.Socket], counts: Counter[str],  # type: ignore[type-arg]
        now: float, seed: int,
    ) -> None:
        self.dealers = dealers
        self.peers = list(dealers)
        self.counts = counts
        self.throttle: TR.Throttle[tuple[list[int], bytes]] = TR.Throttle(
            TR.ThrottleSettings.from_config(cfg.throttling, THROTTLE_QUEUE_MAX), now
        )
        self.rng = random.Random(seed)
        self.randomize = cfg.throttling.randomize_sending
        self.link: TR.LinkEmulator[bytes] = TR.LinkEmulator(
            TR.links_from_config(cfg, me), self.rng, LINK_QUEUE_MAX
        )
        self.emulate = self.link.active

    def submit(self, dest: int | None, raw: bytes) -> None:
        """Queue one frame for ``dest`` (None: every peer); ``pump`` sends it."""
        dests = self.peers if dest is None else [dest]
        cls = TR.class_of(raw)
        if not self.throttle.submit(cls, (dests, raw), 8 * len(raw) * len(dests)):
            self.counts["drop:out:throttle_queue_full"] += 1

    def pump(self, now: float) -> bool:
        """Send what the buckets and the emulated links allow now; True if any."""
        moved = False
        send = self._send
        for _, (dests, raw) in self.throttle.release(now):
            moved = True
            if self.randomize and len(dests) > 1:
                dests = self.rng.sample(dests, len(dests))
            for dest in dests:
                if not self.emulate:
                    send(dest, raw)
                elif not self.link.send(dest, raw, len(raw), now):
                    pass  # lost or refused: counted by the emulator
        if self.emulate:
            for dest, raw in self.link.due(now):
                moved = True
                send(dest, raw)
        return moved

    def _send(self, dest: int, raw: bytes) -> None:
        try:
            self.dealers[dest].send(raw, zmq.NOBLOCK)
        except zmq.Again:
            self.counts["drop:out:peer_queue_full"] += 1

    def wait_s(self, now: float) -> float | None:
        """Seconds until ``pump`` next has work (None: nothing waits)."""
        times = [t for t in (self.throttle.next_release(now), self.link.next_due()) if t is not None]
        return max(0.0, min(times) - now) if times else None


class Inbound:
    """Peer frames waiting for ring room, served class first, peers in turn, each
    sender within its per-lane budgets (``traffic.InboundBudgets``).

    A sender's PO-Requests wait in a queue of their own (keyed ``-via`` in the
    scheduler, served in turn with the senders' other pre-ordering queues), so its
    acks and ARUs never wait behind PO-Requests held for their lane budget: a correct
    replica that alone has clients sends PO-Requests above the floor the others'
    silence sets, and its acks must not pay for that. The core takes one peer's
    messages in any order (the simulator reorders every link)."""

    def __init__(self, budgets: TR.InboundBudgets | None = None) -> None:
        self.sched: TR.FairScheduler[tuple[TR.Lane | None, bytes]] = TR.FairScheduler(
            INBOUND_PER_PEER_MAX, INBOUND_PER_PEER_BYTES_MAX)
        self.budgets = budgets
        self.by_peer: dict[int, list[int]] = {}  # frames read per peer, per class

    def push(self, via: int, raw: bytes) -> bool:
        tag = TR.tag_of(raw)
        cls = TR.CLASS_OF_TAG.get(tag, TR.TrafficClass.RECON) if tag is not None else TR.TrafficClass.RECON
        counts = self.by_peer.get(via)
        if counts is None:
            counts = self.by_peer[via] = [0] * len(TR.CLASSES)
        counts[cls] += 1
        lane = TR.lane_of(tag, cls)
        if self.budgets is not None:
            self.budgets.arrived(via, lane)
        return self.sched.push(cls, -via if lane == TR.Lane.PO_REQUEST else via, (lane, raw), len(raw))

    def full(self, via: int) -> bool:
        """Whether one of ``via``'s queues is at its bound."""
        return self.sched.full(via) or self.sched.full(-via)

    def class_wait(self, via: int) -> float:
        """Seconds until ``via``'s full queues have drained a quarter at their lanes'
        rates (at most a second): reading it sooner would only refuse its frames."""
        sched, lanes = self.sched, self.budgets
        waits = []
        for key in (via, -via):
            for cls in TR.CLASSES:
                if not sched.class_full(cls, key):
                    continue
                lane = sched.head(cls, key)[0]
                if lanes is None or lane is None:
                    waits.append(0.001)  # waiting for ring room only
                    continue
                rate = lanes.rate_now.get(lane, lanes.cap)
                waits.append(lanes.ready_in(lane, via) + sched.waiting(cls, key) / 4 / rate)
        return min(1.0, max(0.001, min(waits, default=0.001)))

    def drain(self, room: Callable[[], int], forward: Callable[[int, TR.TrafficClass, bytes], None],
              now: float = 0.0) -> bool:
        """Forward queued frames (with the class ``push`` read) while ``room()`` says the
        rings take more and each sender's lane budget allows; frames over their budget
        keep waiting in their sender's queue."""
        moved = False
        sched = self.sched
        budget = room() if len(sched) else 0
        gate = None
        if self.budgets is not None:
            self.budgets.tick(now)
            take = self.budgets.take

            def gate(key: int, item: tuple[TR.Lane | None, bytes]) -> bool:
                return take(item[0], abs(key), item)

        while budget > 0 and len(sched):
            got = sched.pop(gate)
            if got is None:
                break  # what waits is over its senders' lane budgets
            budget -= 1
            cls, key, (_, raw) = got
            forward(abs(key), cls, raw)
            moved = True
        return moved

    def wait_s(self) -> float | None:
        """Seconds until ``drain`` may move something (None: nothing waits)."""
        sched = self.sched
        if not len(sched):
            return None
        budgets = self.budgets
        if budgets is None:
            return 0.0
        wait = None
        for cls in TR.CLASSES:
            for key in sched.waiting_peers(cls):
                w = budgets.ready_in(sched.head(cls, key)[0], abs(key))
                wait = w if wait is None else min(wait, w)
                if wait == 0.0:
                    return 0.0
        return wait


def stats(out: Outbound, inbound: Inbound) -> dict[str, int]:
    return TR.counters(out.throttle, inbound.sched, out.link)  # type: ignore[arg-type]
