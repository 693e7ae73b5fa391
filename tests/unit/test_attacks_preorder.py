"""Issue 11's attacks on pre-ordering and reconciliation (items 3, 4, 9, 10, 13, 14), each
driven by hand at one replica and each shown against the behaviour before the fix (the
``Params.legacy`` switches "AMNESIA", "JUNK", "CERTSHIP", "NOOPGC" and "REBUILD").
"""

from __future__ import annotations

import pytest

from prime import msgs
from prime.core.preorder import SEQ_ANY, request_digest
from prime.core.replica import Replica
from prime.crypto import erasure
from prime.msgs import OrdKind
from prime.wire import Envelope
from tests.harness import Harness


def legacy(item: str, on: bool) -> frozenset[str]:
    return frozenset({item}) if on else frozenset()


def ids_acked(h: Harness, digest: bytes | None = None) -> set[tuple[int, tuple[int, int]]]:
    """PO ids our replica acked (with ``digest``, if given), in anything it sent."""
    return {
        (p.originator, p.po)
        for _, env in h.sent
        if env.sender == h.me and isinstance(env.msg, msgs.PoAck)
        for p in env.msg.parts
        if digest is None or p.digest == digest
    }


def order(h: Harness, seq: int, vec, ackers=(1, 2, 3)) -> Envelope:
    """Order ordinal ``seq`` with ``vec`` as the rows of ``ackers`` (PP and commits)."""
    rows: list[Envelope | None] = [None] * h.n
    for i in ackers:
        rows[i - 1] = h.po_aru(i, vec, num=seq)
    pp = h.pre_prepare(seq, rows)
    h.feed(pp)
    for c in h.votes(msgs.Commit, pp, list(range(1, h.p.quorums.certificate + 1))):
        h.feed(c)
    return pp


# ---------------------------------------------------------------- item 3: restart amnesia


def restarted(h: Harness, incarnation: int = 2, at_us: int = 1_500_000,
              acked: tuple[tuple[int, int, int, int], ...] | None = None) -> None:
    """Replace the harness's replica with a restarted one: empty state, a new incarnation
    (and, if given, what its earlier life persisted: A.Persist)."""
    h.replica = Replica(h.p, h.me, incarnation=incarnation, recovering=True, acked_record=acked)
    h.sent.clear()
    h.tick(at_us)
    h.flush()


def whole_incarnations(*incs: int) -> tuple[tuple[int, int, int, int], ...]:
    """A record (index 0 unused) covering every sequence number of each originator's
    incarnations up to the one given (what the record held before reservations)."""
    return tuple((inc, SEQ_ANY, 0, 0) for inc in incs)


@pytest.mark.parametrize("old", [False, True], ids=["fixed", "legacy"])
def test_restarted_replica_never_helps_certify_the_other_version(old: bool) -> None:
    """Replica 4 acked version A of originator 2's (1, 1) before it restarted (with 1 and 2,
    that certified A). Restarted, it is shown version B, acked by 2 (faulty) and 3: acking B
    would certify B too. It must hold its ack until 2f+k+1 *others* certify a version."""
    h = Harness(me=4, legacy=legacy("AMNESIA", old))
    client = h.n + 1
    version_b = h.po_request(2, 1, [h.update(client, 1, b"B")])
    restarted(h)
    h.feed(version_b)
    for acker in (2, 3):
        h.feed(h.ack(acker, 2, 1, request_digest(version_b)))
    h.advance(50_000)
    acked_b = (2, (1, 1)) in ids_acked(h, request_digest(version_b))
    if old:
        assert acked_b, "the literal behaviour acks B: with 2 and 3 that is a second certificate"
        return
    assert not acked_b, "the amnesiac replica helped certify a second version"
    assert h.replica.stats.amnesia_acks_withheld > 0
    # Once 2f+k+1 others certify B, acking it cannot make a second certificate: it does
    # (liveness: it is counted as certified and it vouches for it at retransmission).
    h.feed(h.ack(1, 2, 1, request_digest(version_b)))
    h.advance(1_100_000)
    assert (2, (1, 1)) in ids_acked(h, request_digest(version_b))


def test_acks_of_a_new_incarnation_are_persisted_before_they_leave() -> None:
    """The first ack of an originator's incarnation is preceded by A.Persist carrying it,
    so a restarted replica knows which incarnations an earlier life may have acked."""
    h = Harness(me=4)
    req = h.po_request(2, 1, [h.update(h.n + 1, 1)])
    h.feed(req)
    h.advance(50_000)
    first_ack = next(i for i, (_, env) in enumerate(h.sent) if isinstance(env.msg, msgs.PoAck))
    assert h.persisted, "no Persist before the ack"
    sent_before, record = h.persisted[0]
    assert sent_before <= first_ack and record[2][0] == 1 and record[2][1] >= 1, (h.persisted, first_ack)
    h.feed(h.po_request(2, 2, [h.update(h.n + 1, 2)]))
    h.advance(50_000)
    assert len(h.persisted) == 1, "within the reservation: nothing new to persist"


def test_with_its_record_a_restarted_replica_withholds_only_what_an_earlier_life_acked() -> None:
    """Whole-cluster restart: originator 3 came back as incarnation 5, this replica as 6.
    Without its record, any incarnation up to its own counts as possibly acked before, and
    it waits for others to certify 3's request; every replica restarting at once does the
    same, and none is ever certified. With the record (its earlier life acked 3's
    incarnation 1 at most) it acks incarnation 5 at once, and still withholds
    incarnation 1 (the amnesia rule, I11-3)."""
    client = 5
    for record, expect_new_acked in ((None, False), (whole_incarnations(0, 1, 1, 1, 1), True)):
        h = Harness(me=4)
        restarted(h, incarnation=6, acked=record)
        new = h.po_request(3, 1, [h.update(client, 1)], inc=5)
        old = h.po_request(2, 1, [h.update(client, 2)], inc=1)
        h.feed(new)
        h.feed(old)
        h.advance(50_000)
        assert ((3, (5, 1)) in ids_acked(h, request_digest(new))) is expect_new_acked, record
        assert (2, (1, 1)) not in ids_acked(h, request_digest(old)), record


def _life_one_acks_a_future_incarnation(h: Harness) -> tuple[Envelope, Envelope]:
    """At 10 s, faulty originator 2 shows this replica version A of (40, 1): 30 s ahead of
    the clock, within H8's 60 s slack, so it is acked (and, with 1 and 2, certified). It
    returns (A, B): B is the other version it keeps for this replica's next life."""
    client = h.n + 1
    version_a = h.po_request(2, 1, [h.update(client, 1, b"A")], inc=40)
    version_b = h.po_request(2, 1, [h.update(client, 1, b"B")], inc=40)
    h.tick(10_000_000)
    h.feed(version_a)
    h.advance(50_000)
    assert (2, (40, 1)) in ids_acked(h, request_digest(version_a)), "life 1 acks A"
    return version_a, version_b


def _shown_b(h: Harness, version_b: Envelope) -> bool:
    """Version B, acked by 2 (faulty) and 3 (shown B): does this life ack B too?"""
    h.feed(version_b)
    for acker in (2, 3):
        h.feed(h.ack(acker, 2, 1, request_digest(version_b), inc=40))
    h.advance(50_000)
    return (2, (40, 1)) in ids_acked(h, request_digest(version_b))


def test_without_its_record_a_restarted_replica_still_covers_the_incarnation_slack() -> None:
    """The record lost (corrupted or deleted: ``read_acked`` gives None), the fallback
    bound is the replica's own incarnation. But an earlier life accepted, and acked,
    incarnations up to its clock plus ``incarnation_slack_s`` (H8): restarted 2 s later
    (incarnation 12) it must not take originator 2's incarnation 40 for one no earlier
    life acked, or it helps certify B after its earlier life certified A."""
    h = Harness(me=4)
    _, version_b = _life_one_acks_a_future_incarnation(h)
    restarted(h, incarnation=12, at_us=12_000_000, acked=None)
    assert not _shown_b(h, version_b), "a second version certified: A by 1, 2, 4; B by 2, 3, 4"


def test_a_life_without_the_record_persists_a_bound_that_covers_the_earlier_lives() -> None:
    """Life 2 restarts without its record (lost) and acks originator 3's request, which
    persists a record again. Life 3 reads that record: it must still cover what life 1
    acked (originator 2's incarnation 40), though life 2 never acked anything of 2.
    Before the fix, life 2 wrote only its own acks (2's entry 0), and life 3 acked B."""
    h = Harness(me=4)
    _, version_b = _life_one_acks_a_future_incarnation(h)
    restarted(h, incarnation=12, at_us=12_000_000, acked=None)
    h.persisted.clear()
    other = h.po_request(3, 1, [h.update(h.n + 2, 1)], inc=13)  # 3 restarted too
    h.feed(other)
    for acker in (1, 2, 3):  # certified by others: acked whatever the bound
        h.feed(h.ack(acker, 3, 1, request_digest(other), inc=13))
    h.advance(50_000)
    assert (3, (13, 1)) in ids_acked(h), "life 2 acks a correct originator's new incarnation"
    record = h.persisted[-1][1] if h.persisted else None  # on disk now (None: still unreadable)
    restarted(h, incarnation=13, at_us=13_000_000, acked=record)
    assert not _shown_b(h, version_b), f"life 3 helped certify B (its record: {record})"


def test_a_faulty_originator_cannot_make_a_replica_write_its_record_at_will() -> None:
    """A.Persist is synced to disk in the engine's own thread before the next action
    ("rare: once per originator incarnation"). But the originator picks its incarnations:
    any value above its last one and within H8's slack of the clock is taken as a restart,
    and the first request of each is acked. Faulty originator 2 shows a new incarnation
    every 5 ms for a second; a replica must not write its record more than a few times
    for it (here: at most 20), or every correct engine spends its rounds in fsync."""
    h = Harness(me=4)
    h.tick(100_000_000)  # incarnations up to 160 are plausible
    for i in range(200):
        h.feed(h.po_request(2, 1, [h.update(h.n + 1, i + 1)], inc=2 + i))
        h.advance(5_000)
    assert (2, (3, 1)) in ids_acked(h)  # it acks them: a restart of a correct one looks the same
    assert len(h.persisted) <= 20, f"{len(h.persisted)} writes of the record in one second"


def test_replica_that_never_restarted_acks_at_once() -> None:
    """Control: the rule concerns only a restarted replica."""
    h = Harness(me=4)
    req = h.po_request(2, 1, [h.update(h.n + 1, 1)])
    h.feed(req)
    h.advance(50_000)
    assert (2, (1, 1)) in ids_acked(h, request_digest(req))


def test_restarted_replica_acks_freely_beyond_what_its_previous_life_could_hold() -> None:
    """Once its new incarnation's marker executed, a restarted replica acks at once every PO id
    beyond the PO window of what was executed then (its previous life held nothing beyond
    it), and any incarnation newer than its earlier lives acked (its record: incarnation 1
    of every originator); within it, only certified versions. (Without the record, an
    incarnation newer than its own but within H8's slack is withheld too: see
    test_without_its_record_a_restarted_replica_still_covers_the_incarnation_slack.)"""
    h = Harness(me=4, po_window_max=8)
    restarted(h, incarnation=2, acked=whole_incarnations(0, 1, 1, 1, 1))
    mine = [env for _, env in h.sent if env.sender == 4 and isinstance(env.msg, msgs.PoRequest)]
    assert [env.msg.po for env in mine] == [(2, 1)], "its NEW_INCARNATION marker"
    client = h.n + 1
    reqs = {seq: h.po_request(2, seq, [h.update(client, seq)]) for seq in range(1, 15)}

    def certify(seqs: range) -> None:
        for seq in seqs:
            h.feed(reqs[seq])
            for acker in (1, 2, 3):
                h.feed(h.ack(acker, 2, seq, request_digest(reqs[seq])))

    for acker in (1, 2, 3):
        h.feed(h.ack(acker, 4, 1, request_digest(mine[0]), inc=2))
    certify(range(1, 4))
    order(h, 1, h.vector(s2=(1, 3), s4=(2, 1)))  # our marker and 2's first three execute
    order(h, 2, h.vector(s2=(1, 3), s4=(2, 1)))
    h.advance(20_000)
    assert h.replica.po.amnesia_seq[2] == 3, "the bound: 3 executed, so at most 3+8 was held"
    certify(range(4, 12))
    order(h, 3, h.vector(s2=(1, 11), s4=(2, 1)))
    order(h, 4, h.vector(s2=(1, 11), s4=(2, 1)))
    assert h.replica.po.white_line[2] == (1, 11)
    h.sent.clear()
    for seq in (12, 13, 14):
        h.feed(reqs[seq])
    newer = h.po_request(3, 1, [h.update(client, 99)], inc=3)
    h.feed(newer)
    h.advance(20_000)
    acked = ids_acked(h)
    assert {(2, (1, 12)), (2, (1, 13)), (2, (1, 14))} <= acked, "beyond 3+8: acked at once"
    assert (3, (3, 1)) in acked, "an incarnation no earlier life acked: acked at once"


# ------------------------------------------------- item 4: acks naming unknown incarnations


@pytest.mark.parametrize("old", [False, True], ids=["fixed", "legacy"])
def test_junk_acks_for_later_incarnations_do_not_crowd_out_requests(old: bool) -> None:
    """Replica 3 acks 2*window PO ids of originator 2's incarnation 50 (plausible, unknown):
    before the fix they filled originator 2's slots and its genuine request was refused."""
    window, cap = 16, 8
    h = Harness(me=4, po_window_max=window, po_unbacked_per_sender_max=cap, legacy=legacy("JUNK", old))
    junk = [msgs.AckPart(2, (50, seq), bytes(32)) for seq in range(1, window + 1)]
    for inc in (50, 51):
        h.feed(h.sign(3, msgs.PoAck(tuple(p if inc == 50 else msgs.AckPart(2, (inc, p.po[1]), p.digest) for p in junk))))
    req = h.po_request(2, 1, [h.update(h.n + 1, 1)])
    h.feed(req)
    h.advance(50_000)
    if old:
        assert h.replica.stats.dropped["po_request:full"] == 1
        assert (2, (1, 1)) not in ids_acked(h)
        return
    assert h.replica.stats.dropped["po_request:full"] == 0
    assert (2, (1, 1)) in ids_acked(h, request_digest(req))
    po = h.replica.po
    assert len(po.unbacked_by[3]) == cap and len(po.history[2]) == cap + 1, "junk bounded per sender"
    # H8 for acks too: an incarnation past the clock's slack creates nothing.
    far = h.p.incarnation_slack_s + 1
    h.feed(h.sign(1, msgs.PoAck((msgs.AckPart(2, (far, 1), bytes(32)),))))
    assert h.replica.stats.dropped["po_ack:incarnation_ahead"] == 1


def test_evicted_junk_slot_keeps_a_correct_peers_ack() -> None:
    """Junk from one peer evicts only its own: a slot another peer also acked passes to it."""
    h = Harness(me=4, po_unbacked_per_sender_max=2)
    h.feed(h.ack(3, 2, 1, b"d" * 32))
    h.feed(h.ack(1, 2, 1, b"d" * 32))  # a correct peer acks the same (genuine) id
    for seq in (2, 3):
        h.feed(h.ack(3, 2, seq, bytes(32)))  # 3's budget is full: its oldest, (1, 1), goes
    slot = h.replica.po.history[2][(1, 1)]
    assert slot.acks == {1: b"d" * 32} and slot.owner == 1
    assert (2, (1, 1)) not in h.replica.po.unbacked_by[3]


# --------------------------------------------------------------- item 9: split-ack certificate


def _split_ack_at_designated_sender(old: bool) -> tuple[Harness, Envelope, Envelope, Envelope]:
    """Originator 2 shows version A to 1 and 3 and version B to 4, and sends its ack of A to
    1 and 3 only. Replica 1 holds A certified (acks of 1, 2, 3) and orders it."""
    h = Harness(me=1, legacy=legacy("CERTSHIP", old))
    client = h.n + 1
    version_a = h.po_request(2, 1, [h.update(client, 1, b"A")])
    version_b = h.po_request(2, 1, [h.update(client, 1, b"B")])
    h.feed(version_a)
    orig_ack_a = h.ack(2, 2, 1, request_digest(version_a))
    h.feed(orig_ack_a)
    h.feed(h.ack(3, 2, 1, request_digest(version_a)))
    h.feed(h.ack(4, 2, 1, request_digest(version_b)))
    h.advance(20_000)  # our own ack of A
    order(h, 1, h.vector(s2=(1, 1)), ackers=(1, 2, 3))
    h.flush()
    assert h.delivered_payloads() == [[b"A"]]
    return h, version_a, version_b, orig_ack_a


@pytest.mark.parametrize("old", [False, True], ids=["fixed", "legacy"])
def test_split_acks_certificate_reaches_the_replica_that_lacks_it(old: bool) -> None:
    """The designated sender forwards the signed acks that certify A to replica 4, which acked
    B and never got the originator's ack of A; replica 4 then executes A, in order."""
    h1, version_a, version_b, orig_ack_a = _split_ack_at_designated_sender(old)
    to_4 = [env for dest, env in h1.sent if dest == 4]
    assert (orig_ack_a.raw in {e.raw for e in to_4}) is not old
    # Replica 4, fed what it saw from the others and then what replica 1 shipped.
    h4 = Harness(me=4)
    h4.feed(version_b)
    h4.feed(h4.ack(2, 2, 1, request_digest(version_b)))  # the originator's ack of B, to 4 only
    for acker in (1, 3):
        h4.feed(h4.ack(acker, 2, 1, request_digest(version_a)))
    order(h4, 1, h4.vector(s2=(1, 1)), ackers=(1, 2, 3))
    assert h4.delivered == [], "A lacks its certificate here"
    for env in to_4:
        h4.feed(env, via=1)
    h4.feed(version_a, via=1)  # or its parts: whole-request reconciliation for brevity
    if old:
        assert h4.delivered == [], "without the certificate, replica 4 blocks until it jumps"
    else:
        assert h4.delivered_payloads() == [[b"A"]] and h4.transfers == []


# -------------------------------------------------------------- item 10: junk recon parts


def _junk_recon(h: Harness, sender: int, count: int, size: int) -> None:
    for seq in range(1, count + 1):
        part = msgs.ReconPart(2, (1, seq), sender - 1, 2 * size, bytes(size))
        h.feed(h.sign(sender, msgs.Recon((part,))))


@pytest.mark.parametrize("old", [False, True], ids=["fixed", "legacy"])
def test_junk_recon_parts_are_bounded_per_sender(old: bool) -> None:
    """Replica 3 sends parts for 300 PO ids nobody ever orders: before the fix all were kept;
    now at most its budget, and another sender's genuine parts are still kept and rebuilt."""
    h = Harness(me=4, recon_parts_per_sender_max=20, recon_bytes_per_sender_max=1 << 20, legacy=legacy("JUNK", old))
    _junk_recon(h, 3, 300, 1000)
    sizes = h.replica.recon.collection_sizes()
    if old:
        assert sizes["recon_parts"] == 300 and sizes["recon_bytes"] == 300_000
        return
    assert sizes["recon_parts"] == 20 and h.replica.recon.bytes_by[3] == 20_000
    # The bytes budget binds as well.
    h2 = Harness(me=4, recon_bytes_per_sender_max=50_000)
    _junk_recon(h2, 3, 300, 1000)
    assert h2.replica.recon.collection_sizes()["recon_bytes"] <= 50_000


def test_genuine_parts_survive_a_junk_flood_and_rebuild() -> None:
    h = Harness(me=4, recon_parts_per_sender_max=20)
    req = h.po_request(3, 1, [h.update(h.n + 1, 1, b"payload")])
    for acker in (1, 2, 3):
        h.feed(h.ack(acker, 3, 1, request_digest(req)))
    parts = erasure.encode(req.raw, data_parts=2, total_parts=h.n)
    h.feed(h.sign(1, msgs.Recon((msgs.ReconPart(3, (1, 1), 0, len(req.raw), parts[0]),))))
    _junk_recon(h, 2, 300, 500)  # replica 2 floods; replica 1's part is not its to evict
    h.feed(h.sign(2, msgs.Recon((msgs.ReconPart(3, (1, 1), 1, len(req.raw), parts[1]),))))
    order(h, 1, h.vector(s3=(1, 1)))
    assert h.delivered_payloads() == [[b"payload"]]


def test_recon_parts_collected_when_the_request_executes() -> None:
    h = Harness(me=4)
    req = h.po_request(3, 1, [h.update(h.n + 1, 1, b"x")])
    parts = erasure.encode(req.raw, data_parts=2, total_parts=h.n)
    h.feed(h.sign(1, msgs.Recon((msgs.ReconPart(3, (1, 1), 0, len(req.raw), parts[0]),))))
    assert h.replica.recon.collection_sizes()["recon_parts"] == 1
    h.feed(req)  # it came whole after all
    for acker in (1, 2, 3):
        h.feed(h.ack(acker, 3, 1, request_digest(req)))
    order(h, 1, h.vector(s3=(1, 1)))
    order(h, 2, h.vector(s3=(1, 1)))  # the next ordinal collects ordinal 1 (GC lag 1)
    assert h.replica.recon.collection_sizes()["recon_parts"] == 0
    assert h.replica.recon.bytes_by[1] == 0


# ------------------------------------------------------------- item 13: NO_OP collection


@pytest.mark.parametrize("old", [False, True], ids=["fixed", "legacy"])
def test_replayed_no_op_ordinals_are_garbage_collected(old: bool) -> None:
    """A replay installs NO_OPs at ordinals 1-5; once later ordinals execute, they are gone."""
    h = Harness(me=4, legacy=legacy("NOOPGC", old))
    for g in range(1, 6):
        h.replica.ord.install_replayed(g, None, ())
    assert h.replica.ord.aru == 5
    for g in range(6, 9):
        order(h, g, h.vector())
    history = h.replica.ord.history
    noops = [g for g, slot in history.items() if slot.kind == OrdKind.NO_OP]
    if old:
        assert noops == [1, 2, 3, 4, 5], "never marked reconciled, never collected"
    else:
        assert noops == [] and sorted(history) == [8]


# ------------------------------------------------------------- item 14: erasure rebuild


@pytest.mark.parametrize("old", [False, True], ids=["fixed", "legacy"])
def test_rebuild_finds_the_good_subset_behind_early_garbage(old: bool) -> None:
    """f=3 (N=10, f+1 = 4 data parts): garbage parts from 2, 3, 4 arrive first, then good
    parts from 5-8. Before the fix only the first 32 of the 35 subsets were ever tried (the
    only good one is the last); now each part is tried with those before it, and the senders
    of garbage are convicted once the request is rebuilt."""
    h = Harness(f=3, me=10, legacy=legacy("REBUILD", old))
    req = h.po_request(1, 1, [h.update(h.n + 1, 1, b"payload")])
    for acker in range(1, 8):
        h.feed(h.ack(acker, 1, 1, request_digest(req)))
    order(h, 1, h.vector(s1=(1, 1)), ackers=range(1, 8))
    good = erasure.encode(req.raw, data_parts=4, total_parts=h.n)
    for sender in range(2, 9):
        data = good[sender - 1] if sender >= 5 else bytes(len(good[sender - 1]))
        h.feed(h.sign(sender, msgs.Recon((msgs.ReconPart(1, (1, 1), sender - 1, len(req.raw), data),))))
    if old:
        assert h.delivered == [] and h.replica.stats.recon_rebuilt == 0
        return
    assert h.delivered_payloads() == [[b"payload"]]
    assert h.replica.recon.bad_senders == {2, 3, 4}


def test_rebuild_work_per_event_is_bounded_and_resumes() -> None:
    """A step decodes at most ``recon_decodes_per_step_max`` subsets; the rest are tried on the
    next events (here the retransmission tick), so nothing starves and no step is unbounded."""
    h = Harness(f=3, me=10, recon_decodes_per_step_max=2)
    req = h.po_request(1, 1, [h.update(h.n + 1, 1, b"payload")])
    good = erasure.encode(req.raw, data_parts=4, total_parts=h.n)
    for sender in range(2, 9):
        data = good[sender - 1] if sender >= 5 else bytes(len(good[sender - 1]))
        h.feed(h.sign(sender, msgs.Recon((msgs.ReconPart(1, (1, 1), sender - 1, len(req.raw), data),))))
    for acker in range(1, 8):  # the certificate comes last: all 35 subsets are pending
        h.feed(h.ack(acker, 1, 1, request_digest(req)))
    order(h, 1, h.vector(s1=(1, 1)), ackers=range(1, 8))
    assert h.delivered == [] and h.replica.stats.recon_bad_rebuilds <= 2 * 8
    h.advance(20 * h.p.retrans_period_us)
    assert h.delivered_payloads() == [[b"payload"]]
