"""The net process's read loop (``prime.proc.net_main.Net.read_peers``) against the
inbound queues: a sender whose queue is at its bound is not read, and within a round
reading stops once one of its queues reports full, so nothing it sent is refused
(docs/hardening.md I14-1: "the sender stops being read before anything is refused").

The ``Net`` here has real ZeroMQ sockets (inproc) and the real budgets, queues and
read loop, but no rings, workers or engine: the rings report no room, so what is
read stays queued, as when the workers are behind or the sender's lane budget is
spent."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any, Iterator

import pytest
import zmq

from prime import msgs as M
from prime import wire
from prime.net import traffic, transport
from prime.proc import net_main


def _po_request(seq: int, pad: int = 0) -> bytes:
    import msgpack

    body = wire.encode_body(M.PoRequest((1, seq), ()))
    return msgpack.packb([4, 1, 1, b"s" * 64 + b"p" * pad, [], body], use_bin_type=True)


@pytest.fixture()
def net() -> Iterator[tuple[Any, zmq.Socket]]:  # type: ignore[type-arg]
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.bind("inproc://r2-peer4")
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.SNDHWM, 0)
    dealer.connect("inproc://r2-peer4")
    n: Any = net_main.Net.__new__(net_main.Net)
    now = time.monotonic()
    n.counts = Counter()
    n.size_max = 1 << 20
    n.routers = {4: router}
    n.peer_order = [4]
    n.paused = {}
    n.class_paused = Counter()
    n.poller = zmq.Poller()
    n.poller.register(router, zmq.POLLIN)
    # a generous read budget: the queue bound, not the budget, is what is tested
    n.budgets = traffic.PeerBudgets([4], 10**6, 10**12, 1.0, now)
    n.lane_budgets = traffic.InboundBudgets([4], {}, f=1, cap=5000, burst_s=0.2, now=now)
    n.inbound = transport.Inbound(n.lane_budgets)
    n.peer_ring_room = lambda: 0  # the rings are full: everything read waits in the queues
    n._forward_peer = lambda via, cls, raw: pytest.fail("nothing may be forwarded")
    try:
        yield n, dealer
    finally:
        dealer.close(0)
        router.close(0)
        ctx.term()


def _send(dealer: zmq.Socket, frames: list[bytes]) -> None:  # type: ignore[type-arg]
    for raw in frames:
        dealer.send(raw)
    time.sleep(0.05)  # inproc: delivered at once, but give the pipe a moment


def test_a_sender_near_its_frame_bound_is_read_only_up_to_it(net: tuple[Any, zmq.Socket]) -> None:
    """1000 of its frames wait; it sends 256 more. The round reads up to the bound
    (1024) and leaves the rest in its socket: nothing is refused. (Before: the whole
    batch was read and 232 frames were dropped, counted as peer_queue_full.)"""
    n, dealer = net
    bound = transport.INBOUND_PER_PEER_MAX
    for i in range(bound - 24):
        assert n.inbound.push(4, _po_request(i))
    assert not n.inbound.full(4)
    _send(dealer, [_po_request(10_000 + i) for i in range(net_main.PEER_BATCH_EACH)])
    n.read_peers(None)
    sched = n.inbound.sched
    assert sched.dropped[traffic.TrafficClass.BOUNDED] == 0, sched.dropped
    assert sched.waiting(traffic.TrafficClass.BOUNDED, -4) == bound  # its PO-Request queue
    assert n.inbound.full(4)
    n.read_peers(None)  # full: not read at all now, paused until its queue drains
    assert sched.dropped[traffic.TrafficClass.BOUNDED] == 0
    assert 4 in n.paused
    # the counters say why: a full queue, not a spent read budget (before: counted as
    # throttled, in in_throttled_by_peer, like a flooder out of tokens)
    assert n.class_paused[4] == 1 and n.counts["in:class_queue_full"] == 1
    assert n.budgets.paused[4] == 0 and n.counts["in:throttled_peer"] == 0


def test_a_sender_is_not_read_past_half_its_byte_bound(net: tuple[Any, zmq.Socket]) -> None:
    """Big frames: the queue reports full from half its bytes; reading stops at the frame
    that crossed it, so a batch of big frames is never refused for bytes either.
    (Before, with a read budget above 4 MiB a round: 128 frames of 60 kB, 7.7 MB, were read in one round for a 4 MiB bound; the
    frames beyond it were dropped.)"""
    n, dealer = net
    big = [_po_request(i, pad=60_000) for i in range(128)]
    _send(dealer, big)
    n.read_peers(None)
    sched = n.inbound.sched
    assert sched.dropped[traffic.TrafficClass.BOUNDED] == 0, sched.dropped
    assert n.inbound.full(4)
    held = sched._bytes[traffic.TrafficClass.BOUNDED][-4]
    assert transport.INBOUND_PER_PEER_BYTES_MAX // 2 <= held < transport.INBOUND_PER_PEER_BYTES_MAX // 2 + 70_000
