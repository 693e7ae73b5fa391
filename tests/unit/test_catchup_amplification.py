"""CATCHUP_REQUEST amplification (issue 11 item 11).

A CATCHUP_REQUEST is a few dozen bytes; its answer was up to 32 signed ORD certificates,
and a peer could ask every 20 ms (about a thousand times what it sent). Answers are now
bounded in bytes, and each asker draws from a token bucket in virtual time.

Replica 2 of N=4 is under test and has executed 64 ordinals; replica 4 asks.
"""

from __future__ import annotations

from typing import Any

from prime import msgs
from tests.harness import Harness

ORDINALS = 64
ASK_EVERY_US = 20_000  # catchup_epsilon_us: what the old per-peer spacing allowed


def _executed(ordinals: int = ORDINALS, **params: Any) -> Harness:
    h = Harness(me=2, **params)
    vec = h.vector()
    for seq in range(1, ordinals + 1):
        rows = [h.po_aru(i, vec, num=seq) for i in (1, 2, 3, 4)]
        pp = h.pre_prepare(seq, rows)
        h.feed(pp)
        for c in h.votes(msgs.Commit, pp, [1, 3, 4]):
            h.feed(c)
    assert len(h.delivered) == ordinals
    h.sent.clear()
    return h


def _answers(h: Harness, dest: int = 4) -> list[Any]:
    kinds = (msgs.OrdCert, msgs.Replayed)
    return [env for d, env in h.sent if d == dest and isinstance(env.msg, kinds)]


def test_a_peer_asking_in_a_loop_draws_a_bounded_rate() -> None:
    """Replica 4 asks for the oldest certificates every 20 ms for 2 s of virtual time.
    Before: every request got 32 certificates (about 100 answers, 3,200 certificates, a
    thousand times the request bytes). Now: one full answer, then the per-peer rate."""
    h = _executed()
    p = h.p
    seconds = 2.0
    requests = 0
    request_bytes = 0
    while h.now_us < seconds * 1e6:
        req = h.sign(4, msgs.CatchupRequest(ORDINALS - 64))
        request_bytes += len(req.raw)
        requests += 1
        h.feed(req)
        h.advance(ASK_EVERY_US)
    h.flush()
    answers = _answers(h)
    body_bytes = sum(len(env.body) for env in answers)
    largest = max(len(env.body) for env in answers)
    bound = p.catchup_reply_bytes_max + p.catchup_peer_bytes_per_s * seconds + largest
    assert body_bytes <= bound, f"{body_bytes} B for {requests} requests ({request_bytes} B)"
    # Before: every request was answered with 32 certificates.
    assert len(answers) < requests * p.catchup_reply_count_max / 3


def test_first_answer_is_full_and_bounded_in_bytes() -> None:
    """An asker with a full bucket gets a full answer at once (a lagging correct replica
    is not slowed down), and no answer exceeds catchup_reply_bytes_max (plus the first
    record, which always goes so that any record can be fetched)."""
    h = _executed()
    h.feed(h.sign(4, msgs.CatchupRequest(0)))
    h.flush()
    assert [env.msg.seq for env in _answers(h)] == list(range(1, h.p.catchup_reply_count_max + 1))

    small = _executed(catchup_reply_bytes_max=4096)
    small.feed(small.sign(4, msgs.CatchupRequest(0)))
    small.flush()
    answers = _answers(small)
    bodies = [len(env.body) for env in answers]
    assert 1 <= len(answers) < small.p.catchup_reply_count_max
    assert sum(bodies) <= 4096, bodies
    assert [env.msg.seq for env in answers] == list(range(1, len(answers) + 1))


def test_budget_refills_with_virtual_time_and_is_per_peer() -> None:
    """A peer that drew its budget waits; another peer is not affected; after a pause the
    first one is answered again."""
    h = _executed(catchup_peer_bytes_per_s=8192, catchup_reply_bytes_max=8192)
    for _ in range(3):  # spaced past the old 20 ms rule, so only the budget can refuse
        h.feed(h.sign(4, msgs.CatchupRequest(0)))
        h.advance(ASK_EVERY_US + 1)
    refused = h.replica.stats.dropped["catchup_request:budget"]
    assert refused >= 1
    h.sent.clear()
    h.feed(h.sign(3, msgs.CatchupRequest(0)))
    h.flush()
    assert _answers(h, dest=3), "replica 3 has its own budget"
    h.sent.clear()
    h.advance(1_000_000)
    h.feed(h.sign(4, msgs.CatchupRequest(0)))
    h.flush()
    assert _answers(h, dest=4), "the budget refilled with time"
