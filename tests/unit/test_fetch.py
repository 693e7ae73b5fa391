"""Request fetch (prime/core/fetch.py, issue 11 item 9): a replica blocked on an ordered
ordinal because it lacks a request or its certificate gets them from a peer, without a
jump; an uncertified answer is never executed; answers are bounded per asker.

Two harness replicas play the asker and the peer it asks (the keeper); the test carries
the messages between them and plays everyone else. ``legacy={"FETCH"}`` switches the
mechanism off, and the same scenario then stays blocked (the behaviour before the fix).
"""

from __future__ import annotations

import dataclasses

import pytest

from prime import msgs, wire
from prime.core.preorder import request_digest
from prime.wire import Envelope
from tests.harness import Harness

ORIGIN = 2  # the originator of the request the asker lacks


def _order(h: Harness, seq: int, vec: tuple[tuple[int, int], ...]) -> None:
    """Ordinal ``seq`` with matrix rows of ``vec`` from replicas 1-3, ordered by Commits."""
    pp = h.pre_prepare(seq, [h.po_aru(i, vec, num=seq) for i in (1, 2, 3)] + [None])
    h.feed(pp)
    for commit in h.votes(msgs.Commit, pp, [1, 2, 3]):
        h.feed(commit)


def _keeper_with(requests: list[Envelope], *, me: int = 3, **params: object) -> Harness:
    """A replica that executed ``requests`` (one ordinal each) and one more ordinal, so
    the ordinals that made them eligible are garbage-collected."""
    h = Harness(me=me, **params)
    for seq, req in enumerate(requests, start=1):
        h.feed(req)
        for acker in (1, 2, 4):
            if acker != me:
                h.feed(h.ack(acker, ORIGIN, seq, request_digest(req)))
        _order(h, seq, h.vector(s2=(1, seq)))
    _order(h, len(requests) + 1, h.vector(s2=(1, len(requests))))
    assert len(h.delivered) == len(requests) + 1
    assert (1, 1) not in h.replica.po.history[ORIGIN], "collected: only the fetch store has it"
    return h


def _fetches_to(h: Harness, dest: int) -> list[Envelope]:
    return [env for d, env in h.sent if d == dest and isinstance(env.msg, msgs.PoFetch)]


def _answer(keeper: Harness, fetch: Envelope, asker: int) -> list[Envelope]:
    """Feed ``fetch`` to the keeper and return what it sent the asker in answer."""
    before = len(keeper.sent)
    keeper.feed(fetch)
    return [env for d, env in keeper.sent[before:] if d == asker]


@pytest.mark.parametrize("legacy", [False, True], ids=["fetch", "no-fetch"])
def test_replica_missing_acks_fetches_the_certificate_without_a_jump(legacy: bool) -> None:
    """Two of the three other acks for a request are lost; everyone else executed and
    collected it. The blocked replica asks peers round-robin, the keeper answers with the
    signed acks and the request, and it executes. Without the fetch it stays blocked
    (in the simulator it then jumps by state transfer: rule L2)."""
    switch = frozenset({"FETCH"}) if legacy else frozenset()
    c = 5
    req = Harness(me=4).po_request(ORIGIN, 1, [Harness(me=4).update(c, 1, b"lost-acks")])
    keeper = _keeper_with([req], legacy=switch)
    asker = Harness(me=4, legacy=switch)
    asker.feed(req)
    asker.feed(asker.ack(ORIGIN, ORIGIN, 1, request_digest(req)))  # the acks of 1 and 3 are lost
    asker.advance(10_000)  # its own ack
    vec = asker.vector(s2=(1, 1))
    _order(asker, 1, vec)
    _order(asker, 2, vec)
    assert asker.delivered == [] and asker.replica.ord.blocked_on == {(ORIGIN, (1, 1))}
    # Peers 1, 2, 3 are asked in turn, one per fetch_retry_us (1 and 2 stay silent here).
    asker.advance(asker.p.fetch_delay_us + 2 * asker.p.fetch_retry_us)
    asker.flush()
    if legacy:
        assert _fetches_to(asker, 3) == [] and asker.replica.fetch.asks_sent == 0
        asker.advance(1_000_000)
        assert asker.delivered == [], "without the fetch nothing re-sends the lost acks"
        return
    assert [len(_fetches_to(asker, p)) for p in (1, 2, 3)] == [1, 1, 1]
    fetch = _fetches_to(asker, 3)[0]
    assert fetch.msg.seq == 1
    assert [(k.originator, k.po) for k in fetch.msg.keys] == [(ORIGIN, (1, 1))]
    answer = _answer(keeper, fetch, asker=4)
    assert {type(e.msg) for e in answer} == {msgs.PoAck, msgs.PoRequest}
    assert sorted(e.sender for e in answer if isinstance(e.msg, msgs.PoAck)) == [1, 2, 4]
    for env in answer:
        asker.feed(env, via=3)
    assert [d.ordinal for d in asker.delivered] == [1, 2]
    assert asker.delivered_payloads() == [[b"lost-acks"], []]
    assert asker.transfers == [] and asker.replica.stats.jumps == 0
    asks = asker.replica.fetch.asks_sent
    asker.advance(1_000_000)
    assert asker.replica.fetch.asks_sent == asks, "no more asking once unblocked"


def test_replica_missing_the_request_fetches_it() -> None:
    """Reconciliation was lost: the request itself never arrived (only its acks)."""
    c = 5
    h0 = Harness(me=4)
    req = h0.po_request(ORIGIN, 1, [h0.update(c, 1, b"no-recon")])
    keeper = _keeper_with([req])
    asker = Harness(me=4)
    for acker in (1, 2, 3):
        asker.feed(asker.ack(acker, ORIGIN, 1, request_digest(req)))
    vec = asker.vector(s2=(1, 1))
    _order(asker, 1, vec)
    asker.advance(asker.p.fetch_delay_us + 2 * asker.p.fetch_retry_us)
    asker.flush()
    for env in _answer(keeper, _fetches_to(asker, 3)[0], asker=4):
        asker.feed(env, via=3)
    assert asker.delivered_payloads() == [[b"no-recon"]] and asker.transfers == []


def test_uncertified_answer_is_not_installed() -> None:
    """A Byzantine originator (2) equivocates: 1, 2 and 3 certify version A. The blocked
    replica asks 2 first, which answers with version B and its own ack of B, twice (two
    envelopes, one signer), plus the genuine acks of A. B is never executed: its acks
    count by signer (2 and the asker's own, which acks the first copy it holds) and stay
    short of 2f+k+1. The next peer's answer brings A, which executes."""
    c = 5
    asker = Harness(me=4)
    version_a = asker.po_request(ORIGIN, 1, [asker.update(c, 1, b"A")])
    version_b = asker.po_request(ORIGIN, 1, [asker.update(c, 1, b"B")])
    acks_a = [asker.ack(acker, ORIGIN, 1, request_digest(version_a)) for acker in (1, 2, 3)]
    vec = asker.vector(s2=(1, 1))
    _order(asker, 1, vec)  # the request and every ack were lost on the way here
    asker.advance(asker.p.fetch_delay_us + asker.p.fetch_retry_us)
    asker.flush()
    assert len(_fetches_to(asker, 2)) == 1, "peer 2 was asked"
    # Byzantine answer: B, its signer's ack of B in two separately signed envelopes, the
    # genuine acks of A from 1 and 3 (which carry A's digest, not B's), and B again.
    part_b = msgs.AckPart(ORIGIN, (1, 1), request_digest(version_b))
    forged = [
        asker.ack(ORIGIN, ORIGIN, 1, request_digest(version_b)),
        asker.sign(ORIGIN, msgs.PoAck((part_b, dataclasses.replace(part_b, po=(1, 2))))),
        version_b,
        acks_a[0],
        acks_a[2],
        version_b,
    ]
    assert forged[0].raw != forged[1].raw
    for env in forged:
        asker.feed(env, via=2)
    asker.advance(50_000)  # the asker acks the copy it holds (B)
    slot = asker.replica.po.history[ORIGIN][(1, 1)]
    assert slot.ack_counts[request_digest(version_b)] == 2  # signers 2 and 4
    assert asker.delivered == [], "an uncertified version never executes (H3)"
    assert asker.replica.po.executable_copy(ORIGIN, (1, 1)) is None
    # A correct peer's answer: the acks of A (2's included) and A itself.
    asker.advance(asker.p.fetch_retry_us)
    asker.flush()
    assert len(_fetches_to(asker, 3)) == 1
    for env in [acks_a[1], version_a]:
        asker.feed(env, via=3)
    assert asker.delivered_payloads() == [[b"A"]]


def test_fetch_answers_are_bounded_per_asker() -> None:
    """A peer asking in a loop gets at most its token bucket: one full answer at once,
    then fetch_peer_bytes_per_s; another asker's budget is its own. Each answer also
    names at most FETCH_KEYS_MAX ids, and the asker asks once per fetch_retry_us."""
    c = 5
    h0 = Harness(me=4)
    requests = [h0.po_request(ORIGIN, s, [h0.update(c, s, bytes([s]) * 1500)]) for s in range(1, 9)]
    cap, rate = 6_000, 3_000
    keeper = _keeper_with(requests, fetch_reply_bytes_max=cap, fetch_peer_bytes_per_s=rate)
    keys = tuple(msgs.FetchKey(ORIGIN, (1, s)) for s in range(1, 9))
    ask = keeper.sign(4, msgs.PoFetch(1, keys))
    first = _answer(keeper, ask, asker=4)
    size = sum(len(e.raw) for e in first)
    assert 0 < size <= cap and len(first) < 8 * 3, "one bucketful, not everything asked for"
    drawn = size
    for _ in range(20):  # asking again at once: the bucket is (nearly) empty
        again_at_once = _answer(keeper, keeper.sign(4, msgs.PoFetch(1, keys)), asker=4)
        drawn += sum(len(e.raw) for e in again_at_once)
    assert keeper.replica.stats.dropped["po_fetch:budget"] >= 10, "refused once in debt"
    assert drawn <= cap + 2_000, "at most one more envelope as debt"
    other = _answer(keeper, keeper.sign(1, msgs.PoFetch(1, keys)), asker=1)
    assert 0 < sum(len(e.raw) for e in other) <= cap, "replica 1 draws from its own bucket"
    keeper.advance(2_000_000)  # two seconds refill 6,000 bytes: one more full answer
    again = _answer(keeper, keeper.sign(4, msgs.PoFetch(1, keys)), asker=4)
    assert 0 < sum(len(e.raw) for e in again) <= cap
    # The asking side: one PO_FETCH per retry period while blocked.
    asker = Harness(me=4)
    _order(asker, 1, asker.vector(s2=(1, 1)))
    asker.advance(asker.p.fetch_delay_us + 10 * asker.p.fetch_retry_us)
    assert asker.replica.fetch.asks_sent == 11
    too_many = tuple(msgs.FetchKey(ORIGIN, (1, s)) for s in range(1, msgs.FETCH_KEYS_MAX + 2))
    refused = wire.decode(keeper.sign(4, msgs.PoFetch(1, too_many)).raw)
    assert isinstance(refused, str) and refused.startswith("po_fetch:keys"), refused


def test_kept_requests_age_out_with_the_catchup_history() -> None:
    """Executed requests are kept for the last catchup_history_ordinals ordinals only."""
    c = 5
    h0 = Harness(me=4)
    requests = [h0.po_request(ORIGIN, s, [h0.update(c, s)]) for s in range(1, 7)]
    keeper = _keeper_with(requests, catchup_history_ordinals=3)
    kept = keeper.replica.fetch.kept
    assert sorted(kept) == [(ORIGIN, (1, s)) for s in (4, 5, 6)]
    assert sum(len(o) for o in keeper.replica.fetch.kept_order.values()) == 3
    assert all(len(acks) == 3 for _, _, acks in kept.values()), "2f+k+1 signed acks each"
    capped = _keeper_with(requests, fetch_keep_requests_max=2 * h0.n)  # a share of 2 each
    assert sorted(capped.replica.fetch.kept) == [(ORIGIN, (1, s)) for s in (5, 6)]


def test_a_flooding_originator_ages_out_only_its_own_kept_requests() -> None:
    """Originator 1 had two requests executed, then originator 2 (Byzantine, flooding
    valid requests: sim behaviour request-flood) twenty. Each originator keeps its
    share of fetch_keep_requests_max (here 4 each at N=4), so 1's two stay available to
    a replica that must fetch them; with one shared cap, 2's flood evicted them."""
    h = Harness(me=3, fetch_keep_requests_max=4 * 4)
    seq = 0
    rows: dict[str, tuple[int, int]] = {}
    for origin, count in ((1, 2), (ORIGIN, 20)):
        for q in range(1, count + 1):
            req = h.po_request(origin, q, [h.update(5 + origin, q)])
            h.feed(req)
            for acker in (1, 2, 4):
                if acker != 3:
                    h.feed(h.ack(acker, origin, q, request_digest(req)))
            seq += 1
            rows[f"s{origin}"] = (1, q)
            _order(h, seq, h.vector(**rows))
    _order(h, seq + 1, h.vector(**rows))
    kept = sorted(h.replica.fetch.kept)
    assert [(1, (1, 1)), (1, (1, 2))] == [k for k in kept if k[0] == 1], kept
    assert [k for k in kept if k[0] == ORIGIN] == [(ORIGIN, (1, q)) for q in range(17, 21)], kept


def test_one_fetch_asks_for_the_decided_ordinals_ahead_too() -> None:
    """A replica back from a partition holds decided ordinals 1-3 but none of their
    requests: one PO_FETCH names all three, one answer executes all three (asking an
    ordinal per round trip, it would fall ever further behind a loaded cluster)."""
    c = 5
    h0 = Harness(me=4)
    requests = [h0.po_request(ORIGIN, s, [h0.update(c, s, b"r%d" % s)]) for s in (1, 2, 3)]
    keeper = _keeper_with(requests)
    asker = Harness(me=4)
    for seq, req in enumerate(requests, start=1):
        for acker in (1, 2, 3):
            asker.feed(asker.ack(acker, ORIGIN, seq, request_digest(req)))
        _order(asker, seq, asker.vector(s2=(1, seq)))
    assert asker.replica.ord.blocked_on == {(ORIGIN, (1, 1))}
    asker.advance(asker.p.fetch_delay_us + 2 * asker.p.fetch_retry_us)
    asker.flush()
    fetch = _fetches_to(asker, 3)[0]
    assert [(k.originator, k.po) for k in fetch.msg.keys] == [(ORIGIN, (1, s)) for s in (1, 2, 3)]
    for env in _answer(keeper, fetch, asker=4):
        asker.feed(env, via=3)
    assert asker.delivered_payloads() == [[b"r1"], [b"r2"], [b"r3"]] and asker.transfers == []
