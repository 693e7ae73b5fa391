"""The restart record (``A.Persist``, docs/hardening.md I11-3): what it holds, when it is
written, and what a restarted replica's gate is made of (issue 12, item 7).

Per originator the record holds a bound on every PO id this replica acked in any life:
a write-ahead reservation a chunk ahead of its acks (written, paced, before an ack
beyond it leaves), cut back to the acks once the originator is idle, exact after a
clean stop, and joined with the bounds inherited from earlier lives. A restarted
replica withholds only what the record covers (until ``2f+k+1`` others certify it).
"""

from __future__ import annotations

from prime import msgs
from prime.core.preorder import PERSIST_INTERVAL_US, RESERVE_MIN, request_digest
from prime.core.replica import Replica
from prime.wire import Envelope
from tests.harness import Harness
from tests.unit.test_attacks_preorder import (
    _life_one_acks_a_future_incarnation,
    _shown_b,
    ids_acked,
    order,
    restarted,
)

Record = tuple[tuple[int, int, int, int], ...]
CLIENT = 5  # the first client id at N = 4


def release_hold(h: Harness, inc: int) -> None:
    """Order our NEW_INCARNATION marker (certified by 1, 2, 3), and nothing of originator
    2: the incarnation hold ends (we ack more than seq 1), and a restarted replica's
    window bound is fixed with nothing of 2 executed."""
    h.flush()
    mine = [env for _, env in h.sent if env.sender == h.me and isinstance(env.msg, msgs.PoRequest)]
    for acker in (1, 2, 3):
        h.feed(h.ack(acker, h.me, 1, request_digest(mine[0]), inc=inc))
    order(h, 1, h.vector(s4=(inc, 1)))
    order(h, 2, h.vector(s4=(inc, 1)))
    h.advance(20_000)
    assert not h.replica.po._own_incarnation_held()


def requests(h: Harness, seqs: range, tag: bytes = b"A") -> dict[int, Envelope]:
    """Originator 2's requests (incarnation 1) at ``seqs``, version ``tag``."""
    return {seq: h.po_request(2, seq, [h.update(CLIENT, seq, tag)]) for seq in seqs}


def life_one_acks(h: Harness, upto: int) -> dict[int, Envelope]:
    """Life 1 (never restarted) acks originator 2's (1, 1..upto), version A."""
    release_hold(h, 1)
    reqs = requests(h, range(1, upto + 1))
    for req in reqs.values():
        h.feed(req)
    h.advance(50_000)
    assert {(2, (1, seq)) for seq in reqs} <= ids_acked(h)
    return reqs


def acks_b(h: Harness, seq: int) -> bool:
    """Version B of (2, (1, seq)), acked by 2 (faulty) and 3: does this life ack B too?
    (The ids before it, version A, come first: acks go up to contiguous receipt.)"""
    for req in requests(h, range(1, seq)).values():
        h.feed(req)
    b = requests(h, range(seq, seq + 1), b"B")[seq]
    h.feed(b)
    for acker in (2, 3):
        h.feed(h.ack(acker, 2, seq, request_digest(b)))
    h.advance(50_000)
    return (2, (1, seq)) in ids_acked(h, request_digest(b))


def test_a_clean_stop_record_is_exactly_what_was_acked() -> None:
    """Life 1 acks 2's ids 1..5 and stops cleanly: the record for 2 is (1, 5), though its
    reservation ran further. The next life withholds 5 (its earlier life acked A there),
    and acks 6, which no life acked, at once: the gate is empty beyond what was acked.
    (Before issue 12's fix there was no clean stop, and the next life withheld every id
    up to 4000 beyond what had executed.)"""
    h = Harness(me=4)
    life_one_acks(h, 5)
    assert h.persisted[-1][1][2][:2] > (1, 5), "the reservation runs ahead of the acks"
    record = h.replica.clean_stop_record()
    assert record[2] == (1, 5, 0, 0), record
    restarted(h, incarnation=3, acked=record)
    release_hold(h, 3)
    assert not acks_b(h, 5), "life 2 helped certify B where life 1 acked A"
    h.feed(requests(h, range(6, 7))[6])
    h.advance(50_000)
    assert (2, (1, 6)) in ids_acked(h), "an id beyond the exact record: acked at once"


def test_a_crash_record_covers_every_ack_and_a_bounded_chunk_beyond() -> None:
    """Killed instead: the record on disk is the last reservation. It covers every ack
    (life 2 withholds B at 5) and at most a chunk beyond; life 2 acks the first id past
    the chunk at once, and withholds the ones within it."""
    h = Harness(me=4)
    life_one_acks(h, 5)
    record = h.persisted[-1][1]
    lo_inc, lo_seq, _, _ = record[2]
    assert lo_inc == 1 and 5 < lo_seq <= 5 + RESERVE_MIN, record[2]
    restarted(h, incarnation=3, acked=record)
    release_hold(h, 3)
    assert not acks_b(h, 5)
    reqs = requests(h, range(6, lo_seq + 2))
    for req in reqs.values():
        h.feed(req)
    h.advance(50_000)
    acked = ids_acked(h)
    assert (2, (1, lo_seq + 1)) in acked, "beyond the reservation: acked at once"
    assert (2, (1, lo_seq)) not in acked, "within it: withheld until others certify"


def test_a_clean_stop_of_a_gated_life_still_carries_the_earlier_lifes_bound() -> None:
    """Life 1 acks A at 2's id 3 and is killed (record: 3 plus a chunk). Life 2 acks
    nothing of 2 and stops cleanly: its exact record must still cover id 3, or life 3
    acks B there and B is certified by 2, 3 and 4 after A was by 1, 2 and 4."""
    h = Harness(me=4)
    life_one_acks(h, 3)
    restarted(h, incarnation=3, acked=h.persisted[-1][1])
    record = h.replica.clean_stop_record()
    assert record[2][:2] >= (1, 3), record
    restarted(h, incarnation=4, acked=record)
    release_hold(h, 4)
    assert not acks_b(h, 3), f"life 3 helped certify B (life 2's clean record: {record})"


def test_a_clean_stop_without_the_record_carries_the_incarnation_slack() -> None:
    """The same across a lost record: life 1 acks A at (40, 1), 30 s ahead of its clock;
    life 2 starts without its record (gate: incarnations up to its own plus H8's slack)
    and stops cleanly at once. Life 3 must still withhold (40, 1)."""
    h = Harness(me=4)
    _, version_b = _life_one_acks_a_future_incarnation(h)
    restarted(h, incarnation=12, at_us=12_000_000, acked=None)
    record = h.replica.clean_stop_record()
    restarted(h, incarnation=13, at_us=13_000_000, acked=record)
    assert not _shown_b(h, version_b), f"life 3 helped certify B (life 2's clean record: {record})"


def test_an_idle_originator_has_its_reservation_cut_back() -> None:
    """An originator that stops sending has its reservation cut back to what was acked
    within about a second (the retransmission tick writes the record): a crash after
    that leaves the next life no gate beyond the acks."""
    h = Harness(me=4)
    life_one_acks(h, 5)
    assert h.persisted[-1][1][2][:2] > (1, 5)
    h.advance(2_000_000)
    assert h.persisted[-1][1][2][:2] == (1, 5), h.persisted[-1]


def test_a_busy_originator_costs_the_record_a_few_writes_a_second() -> None:
    """Originator 2 sends a request every 2 ms for 2 s (1,000 of them). Every ack is
    covered before it leaves (the core's invariants check that after every step), yet
    the record is written a few times a second, not once per ack batch; and what it
    reserves beyond the acks stays about half a second of them."""
    h = Harness(me=4)
    release_hold(h, 1)
    h.persisted.clear()
    po = h.replica.po
    worst_ahead = 0
    for seq in range(1, 1001):
        h.feed(h.po_request(2, seq, [h.update(CLIENT, seq)]))
        h.advance(2_000)
        worst_ahead = max(worst_ahead, po.reserved[2][1] - po.acked_hi[2][1])
    assert po.acked_hi[2] >= (1, 999), "acks kept up with the requests"
    assert len(h.persisted) <= 2 * 4 + 2, f"{len(h.persisted)} writes in 2 s"
    assert worst_ahead <= 500 * 0.5 * 2, worst_ahead  # 500 acks/s: about 250 ahead


def test_a_faulty_originator_cannot_grow_the_record_or_write_it_at_will() -> None:
    """Faulty originator 2 alternates bursts (the whole PO window, then a new plausible
    incarnation) with silences, for 3 s: the record keeps one entry per originator, its
    bound stays within the window of what was acked, and the writes stay within the
    pace (a burst of N, then one per PERSIST_INTERVAL_US)."""
    h = Harness(me=4, po_window_max=64)
    h.tick(100_000_000)  # incarnations up to 160 are plausible
    release_hold(h, 1)
    h.persisted.clear()
    start = h.now_us
    for round_ in range(15):
        inc = 1 + round_ * 7
        for seq in range(1, 65):
            h.feed(h.po_request(2, seq, [h.update(CLIENT, round_ * 100 + seq)], inc=inc))
        h.advance(100_000 if round_ % 2 else 300_000)
    elapsed = h.now_us - start
    assert len(h.persisted) <= h.n + elapsed // PERSIST_INTERVAL_US + 1, len(h.persisted)
    for _, record in h.persisted:
        assert len(record) == h.n + 1 and all(len(e) == 4 for e in record)
    acked = h.replica.po.acked_hi[2]
    lo = h.persisted[-1][1][2]
    assert (lo[0], lo[1]) >= acked and lo[1] <= acked[1] + 64 and lo[0] == acked[0], (lo, acked)


def test_the_record_given_back_is_what_a_replica_was_built_with() -> None:
    """A restarted replica keeps the record it was given (the gate) apart from its own
    reservations; the record it writes joins both."""
    h = Harness(me=4)
    given: Record = ((0, 0, 0, 0), (0, 0, 0, 0), (1, 9, 0, 0), (0, 0, 0, 0), (0, 0, 0, 0))
    h.replica = Replica(h.p, 4, incarnation=3, recovering=True, acked_record=given)
    assert h.replica.clean_stop_record() == given
