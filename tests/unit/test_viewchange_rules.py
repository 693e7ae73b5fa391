"""View-change rules, each driven by hand at one replica, and each shown against the literal
original behaviour (``Params.legacy``): H6 (bound RB origins, checked PC_SETs, lists of
2f+k+1, distinct NEW_LEADER votes), H7 (share proofs, combination retried), H11 (replayed
ordinals reported again), Bracha counting in reliable broadcast ("RB"), and the catch-up
of replayed ordinals from f+1 matching REPLAYED records (open question 5).

Replica 4 of N=4 (f=1, k=0) is under test; the test plays replicas 1-3. View 2's leader is 2.
"""

from __future__ import annotations

import pytest

from prime import msgs
from prime.core.order import pre_prepare_digest
from prime.core.quorum import matrix_pop
from prime.core.viewchange import statement, union_digest
from prime.crypto import threshold
from prime.wire import Envelope
from tests.harness import Harness

OTHERS = (1, 2, 3)
MEMBERS_123 = (1 << 1) | (1 << 2) | (1 << 3)
NO_UNION = union_digest(1, 1, ())  # the union of states that hold nothing to replay


def legacy(item: str, on: bool) -> frozenset[str]:
    return frozenset({item}) if on else frozenset()


def preinstall(h: Harness, view: int = 2) -> None:
    votes = tuple(h.sign(j, msgs.NewLeader(view)) for j in OTHERS)
    h.feed(h.sign(1, msgs.NewLeaderProof(view, votes)))
    assert h.replica.view == view and not h.replica.view_change_done
    h.flush()


def rb_deliver(h: Harness, payload: Envelope) -> None:
    """2f+k+1 replicas say READY for ``payload``: the replica delivers it."""
    for j in OTHERS:
        h.feed(h.sign(j, msgs.RbReady(payload)))


def report(h: Harness, origin: int, view: int = 2, *, aru: int = 0, pc_sets: int = 0) -> Envelope:
    return h.sign(origin, msgs.Report(origin, view, 0, aru, pc_sets, 0))


def certified_pp(h: Harness, seq: int, *, view: int = 1, vec=None) -> tuple[Envelope, tuple[Envelope, ...]]:
    """The leader's pre-prepare for ``seq`` in ``view`` and 2f+k Prepares of non-leaders."""
    leader = (view - 1) % h.n + 1
    vec = vec or h.vector()
    pp = h.pre_prepare(seq, [h.po_aru(i, vec, num=seq) for i in OTHERS] + [None], view=view, leader=leader)
    voters = [j for j in range(1, h.n + 1) if j != leader][: h.p.quorums.prepare]
    return pp, tuple(h.votes(msgs.Prepare, pp, voters))


# ------------------------------------------------------------------------------ H6


@pytest.mark.parametrize("old", [False, True], ids=["hardened", "literal-C"])
def test_h6_rb_payload_bound_to_its_origin(old: bool) -> None:
    """Replica 3 starts a reliable broadcast of a REPORT it signed but labelled as replica 2's.
    Hardened: dropped, and 2's genuine REPORT is echoed. Literal C: 3 occupies 2's instance
    and 2's genuine REPORT is never echoed by this replica."""
    h = Harness(me=4, legacy=legacy("H6", old))
    preinstall(h)
    forged = h.sign(3, msgs.Report(2, 2, 0, 0, 0, 0))
    h.feed(h.sign(3, msgs.RbInit(forged)))
    genuine = report(h, 2)
    h.feed(h.sign(2, msgs.RbInit(genuine)))
    h.flush()
    echoed = [m.payload.raw for m in h.sent_messages(msgs.RbEcho) if m.payload.sender != h.me]
    if old:
        assert forged.raw in echoed and genuine.raw not in echoed
    else:
        assert h.replica.stats.dropped["rb:origin"] == 1
        assert echoed == [genuine.raw]


def _forged_pc_set(h: Harness) -> Envelope:
    """Replica 3 alone: its own PP for ordinal 1 (view 1's leader is 1) and two copies of its
    own Prepare, claiming updates nobody ordered."""
    pp = h.sign(3, msgs.PrePrepare(1, 1, 0, (None, None, h.po_aru(3, h.vector(s3=(1, 500))), None)))
    prepare = h.sign(3, msgs.Prepare(1, 1, pre_prepare_digest(pp.msg)))
    return h.sign(3, msgs.PcSet(3, 2, 1, pp, (prepare, prepare)))


@pytest.mark.parametrize("old", [False, True], ids=["hardened", "literal-C"])
def test_h6_pc_set_fabricated_by_one_replica(old: bool) -> None:
    """Hardened: the fabricated PC_SET is dropped, so replica 3's state stays incomplete and
    cannot enter a list. Literal C: it is accepted and wins ordinal 1 in the replay union."""
    h = Harness(me=4, legacy=legacy("H6", old))
    preinstall(h)
    forged = _forged_pc_set(h)
    rb_deliver(h, report(h, 3, pc_sets=1))
    rb_deliver(h, forged)
    vc = h.replica.vc
    if old:
        assert 3 in vc.complete and vc.union(MEMBERS_123)[1].raw == forged.raw
    else:
        assert h.replica.stats.dropped["pc_set:invalid"] == 1
        assert 3 not in vc.complete and vc.union(MEMBERS_123) == {}


def test_h6_genuine_pc_set_accepted() -> None:
    """The control: the leader's PP with 2f+k distinct non-leader Prepares is accepted."""
    h = Harness(me=4)
    preinstall(h)
    pp, prepares = certified_pp(h, 1)
    genuine = h.sign(3, msgs.PcSet(3, 2, 1, pp, prepares))
    rb_deliver(h, report(h, 3, pc_sets=1))
    rb_deliver(h, genuine)
    assert 3 in h.replica.vc.complete and h.replica.vc.union(1 << 3)[1].raw == genuine.raw


@pytest.mark.parametrize("old", [False, True], ids=["hardened", "literal-C"])
def test_h6_short_vc_list_not_signed(old: bool) -> None:
    """A list naming only replica 3 (fewer than 2f+k+1 members). Hardened: no share. Literal C:
    a threshold share is computed for it, so one faulty replica's state could define the view."""
    h = Harness(me=4, legacy=legacy("H6", old))
    preinstall(h)
    rb_deliver(h, report(h, 3))
    assert 3 in h.replica.vc.complete
    h.feed(h.sign(3, msgs.VcList(2, 1 << 3)))
    shares = [j for j in h.threshold_jobs if j.op == "share" and j.statement == statement(2, 1 << 3, 1, NO_UNION)]
    if old:
        assert len(shares) == 1
    else:
        assert shares == [] and h.replica.stats.dropped["vc_list:members"] == 1


@pytest.mark.parametrize("old", [False, True], ids=["hardened", "literal-C"])
def test_h6_new_leader_proof_needs_distinct_voters(old: bool) -> None:
    """Three copies of replica 1's NEW_LEADER vote. Hardened: dropped. Literal C: one faulty
    replica forces a view change at will."""
    h = Harness(me=4, legacy=legacy("H6", old))
    vote = h.sign(1, msgs.NewLeader(2))
    h.feed(h.sign(1, msgs.NewLeaderProof(2, (vote, vote, vote))))
    assert h.replica.view == (2 if old else 1)


# ------------------------------------------------------------------------------ H7


def _shares(h: Harness, stmt: bytes, who: tuple[int, ...]) -> list[Envelope]:
    return [h.sign(j, msgs.VcPartialSig(2, MEMBERS_123, 1, h.threshold_share(j, stmt), NO_UNION)) for j in who]


@pytest.mark.parametrize("old", [False, True], ids=["hardened", "literal-C"])
def test_h7_bad_share_skipped_and_combination_retried(old: bool) -> None:
    """N=6 (2f+k+1 = 4). Shares arrive from 1, 2, 3 (3's is for another statement: a bad share)
    and 5, then 6. Hardened: the first attempt skips the bad share by its proof, finds only three,
    and is retried when 6's share arrives: a VC_PROOF goes to the leader. Literal C: one attempt,
    unverified, when exactly four shares are present: it fails and is never retried."""
    h = Harness(f=1, k=1, me=4, threshold=True, legacy=legacy("H7", old))
    votes = tuple(h.sign(j, msgs.NewLeader(2)) for j in (1, 2, 3, 5))
    h.feed(h.sign(1, msgs.NewLeaderProof(2, votes)))
    stmt = statement(2, MEMBERS_123, 1, NO_UNION)
    good = _shares(h, stmt, (1, 2, 5, 6))
    bad_share = h.threshold_share(3, statement(2, MEMBERS_123, 99, NO_UNION))
    bad = h.sign(3, msgs.VcPartialSig(2, MEMBERS_123, 1, bad_share, NO_UNION))
    for env in (good[0], good[1], bad, good[2]):
        h.feed(env)
    combines = [j for j in h.threshold_jobs if j.op == "combine"]
    assert len(combines) == 1 and combines[0].verify_shares is (not old)
    h.feed(good[3])
    h.flush()
    proofs = h.sent_messages(msgs.VcProof)
    combines = [j for j in h.threshold_jobs if j.op == "combine"]
    if old:
        assert proofs == [] and len(combines) == 1, "the C code never tries again"
    else:
        assert len(combines) == 2 and len(proofs) == 1
        assert threshold.verify(h.threshold_key[0], stmt, proofs[0].signature)


# ------------------------------------------------------------------------------ H11


def _execute_replay_with_blocked_ordinal(h: Harness) -> Envelope:
    """View 2's replay fixes ordinal 1 to a PC_SET of replica 1 whose request (replica 2's
    PO request 1) this replica does not have: ordinal 1 is replayed but not executed."""
    preinstall(h)
    pp, prepares = certified_pp(h, 1, vec=h.vector(s2=(1, 1)))
    pc = h.sign(1, msgs.PcSet(1, 2, 1, pp, prepares))
    rb_deliver(h, report(h, 1, pc_sets=1))
    rb_deliver(h, pc)
    for j in (2, 3):
        rb_deliver(h, report(h, j))
    union = union_digest(2, 1, ((1, pre_prepare_digest(pp.msg)),))
    stmt = statement(2, MEMBERS_123, 2, union)
    assert h.replica.vc.start_seq_for(MEMBERS_123) == 2
    public, _ = h.threshold_key
    shares = [threshold.SignatureShare.from_bytes(h.threshold_share(j, stmt)) for j in OTHERS]
    signature = threshold.combine(public, stmt, shares)
    replay = h.sign(2, msgs.Replay(2, MEMBERS_123, 2, signature, union))
    h.feed(replay)
    digest = h.replica.vc.replay_digest
    for j in (1, 3):
        h.feed(h.sign(j, msgs.ReplayPrepare(2, digest)))
    for j in OTHERS:
        h.feed(h.sign(j, msgs.ReplayCommit(2, digest)))
    assert h.replica.view_change_done and h.replica.ord.aru == 0
    assert h.replica.ord.blocked_on == {(2, (1, 1))}
    return pp


@pytest.mark.parametrize("old", [False, True], ids=["hardened", "literal-C"])
def test_h11_replayed_ordinal_reported_in_the_next_view_change(old: bool) -> None:
    """View 3 starts before the replayed ordinal 1 executed here. Hardened: the REPORT carries a
    PC_SET for ordinal 1 and replay_floor 1, so view 3 cannot reopen ordinal 1. Literal C: the
    REPORT says nothing about it (exec_aru 0, no PC_SET), so a view-3 list of such replicas
    would make ordinal 1 a NO_OP or a fresh PP while another replica executed the PC_SET."""
    h = Harness(me=4, threshold=True, legacy=legacy("H11", old))
    pp = _execute_replay_with_blocked_ordinal(h)
    h.sent.clear()
    preinstall(h, view=3)
    h.flush()
    mine = [m.payload.msg for m in h.sent_messages(msgs.RbInit) if m.payload.msg.rb_view == 3]
    (my_report,) = [m for m in mine if isinstance(m, msgs.Report)]
    pc_sets = [m for m in mine if isinstance(m, msgs.PcSet)]
    floor = max([my_report.exec_aru, my_report.replay_floor] + [m.pre_prepare.msg.seq for m in pc_sets])
    if old:
        assert (my_report.pc_set_size, my_report.replay_floor, pc_sets) == (0, 0, [])
        assert floor == 0, "ordinal 1 would be open again in view 3"
    else:
        assert my_report.pc_set_size == 1 and my_report.replay_floor == 1
        assert pc_sets[0].pre_prepare.raw == pp.raw and floor == 1


# ------------------------------------------------------------ reliable broadcast


@pytest.mark.parametrize("old", [False, True], ids=["bracha", "literal-C"])
def test_rb_delivers_what_the_quorum_agreed_despite_seeing_another_payload_first(old: bool) -> None:
    """Replica 1 equivocates: this replica gets REPORT A first, everyone else B. Echoes and
    readies counted per payload deliver B (Bracha). The C rule, 'the first payload binds the
    instance', ignores every B message: replica 1's state never completes here."""
    h = Harness(me=4, legacy=legacy("RB", old))
    preinstall(h)
    a = report(h, 1)
    b = h.sign(1, msgs.Report(1, 2, 0, 7, 0, 0))  # differs from a in its exec_aru
    h.feed(h.sign(1, msgs.RbInit(a)))
    for j in (1, 2, 3):
        h.feed(h.sign(j, msgs.RbEcho(b)))
    for j in (1, 2, 3):
        h.feed(h.sign(j, msgs.RbReady(b)))
    assert h.replica.stats.equivocations_seen >= 1
    delivered = h.replica.vc.reports.get(1)
    if old:
        assert delivered is None
    else:
        assert delivered == b.msg


def test_rb_one_echo_and_one_ready_per_sender_per_instance() -> None:
    """A peer's second echo (for another payload) does not count: two payloads cannot both
    gather 2f+k+1 echoes from the same replicas."""
    h = Harness(me=4)
    preinstall(h)
    a = report(h, 1)
    b = h.sign(1, msgs.Report(1, 2, 0, 7, 0, 0))
    for j in (1, 2):
        h.feed(h.sign(j, msgs.RbEcho(a)))
        h.feed(h.sign(j, msgs.RbEcho(b)))
    h.feed(h.sign(3, msgs.RbEcho(b)))
    for floor in range(8, 20):  # a flood of other payloads from a peer already counted
        h.feed(h.sign(1, msgs.RbEcho(h.sign(1, msgs.Report(1, 2, 0, floor, 0, 0)))))
    h.flush()
    assert h.sent_messages(msgs.RbReady) == [], "b has one counted echo, a two: no quorum"
    slot = h.replica.vc.rb[(1, 0)]
    assert sorted(map(len, slot.echoes.values())) == [1, 2]
    assert len(slot.payloads) == 2, "payloads of uncounted echoes are not kept"


# ----------------------------------------------- replayed ordinals: f+1 records


def _replayed(h: Harness, who: int, seq: int, pc: tuple[Envelope, tuple[Envelope, ...]] | None) -> Envelope:
    if pc is None:
        return h.sign(who, msgs.Replayed(2, seq, None, ()))
    return h.sign(who, msgs.Replayed(2, seq, pc[0], pc[1]))


def test_replayed_ordinal_installed_from_f_plus_1_matching_records() -> None:
    """Ordinal 1 was a replayed PC_SET, ordinal 2 a replayed NO_OP. One record (maybe from a
    faulty replica) installs nothing; f+1 = 2 matching records from distinct replicas do."""
    h = Harness(me=4)
    pc = certified_pp(h, 1)
    other = certified_pp(h, 1, vec=h.vector(s3=(1, 9)))
    h.feed(_replayed(h, 1, 1, pc))
    h.feed(_replayed(h, 2, 1, other))
    h.feed(_replayed(h, 2, 1, pc))  # a second record from 2 does not count
    h.feed(_replayed(h, 1, 2, None))
    assert h.replica.ord.aru == 0 and h.replica.stats.replayed_filled == 0
    h.feed(_replayed(h, 3, 1, pc))
    assert h.replica.ord.aru == 1 and h.replica.ord.history[1].ppd == pre_prepare_digest(pc[0].msg)
    h.feed(_replayed(h, 3, 2, None))
    assert h.replica.ord.aru == 2 and h.replica.stats.replayed_filled == 2
    assert [d.ordinal for d in h.delivered] == [1, 2]
    # It can now vouch for them itself, in answer to a peer that is behind.
    h.sent.clear()
    h.feed(h.sign(2, msgs.CatchupRequest(0)))
    h.flush()
    answers = [(dest, env.msg) for dest, env in h.sent if isinstance(env.msg, msgs.Replayed)]
    assert [(dest, m.seq, m.pre_prepare is None) for dest, m in answers] == [(2, 1, False), (2, 2, True)]


def test_replayed_record_with_a_fabricated_certificate_dropped() -> None:
    h = Harness(me=4)
    forged = _forged_pc_set(h).msg
    h.feed(h.sign(3, msgs.Replayed(2, 1, forged.pre_prepare, forged.prepares)))
    assert h.replica.stats.dropped["replayed:invalid"] == 1 and not h.replica.catchup.vouches


def test_lagging_replica_asks_peers_whose_report_is_ahead() -> None:
    """During a view change, a REPORT with a higher exec ARU makes the replica ask that peer;
    the peers' records fill the gap and its state for them becomes complete."""
    h = Harness(me=4)
    preinstall(h)
    h.sent.clear()
    for j in (2, 3):
        rb_deliver(h, report(h, j, aru=1))
    h.flush()
    asked = sorted(dest for dest, env in h.sent if isinstance(env.msg, msgs.CatchupRequest))
    assert asked == [2, 3] and not h.replica.vc.complete
    for j in (2, 3):
        h.feed(_replayed(h, j, 1, None))
    assert h.replica.ord.aru == 1 and h.replica.vc.complete == {2, 3}


# ------------------------------------------- the first pre-prepare of a new view


def test_new_leader_matrix_never_goes_below_the_replayed_one() -> None:
    """A faulty replica 3 signed two PO_ARUs neither of which is higher (each acks a request
    the other does not). The replayed ordinal 5 used version A; this replica, leader of the new
    view, kept version B. Its next matrix reuses row A, so the pre-prepare does not go
    backwards (S5), which every correct replica would refuse."""
    h = Harness(me=1)
    order, po = h.replica.ord, h.replica.po
    version_a = h.po_aru(3, h.vector(s2=(1, 4), s4=(1, 1)), num=7)
    version_b = h.po_aru(3, h.vector(s2=(1, 1), s4=(1, 4)), num=8)
    rows = [h.po_aru(j, h.vector(s2=(1, 4), s4=(1, 1))) for j in (1, 2)] + [version_a, None]
    replayed = h.pre_prepare(5, rows, view=1, leader=1)
    order.install_replayed(5, replayed, ())
    po.cum_acks[3] = version_b
    for env in rows[:2]:
        po.apply_po_aru(env)
    matrix = order._matrix_for(6)
    assert matrix[2] is version_a
    new_pop = matrix_pop([None if r is None else r.msg.cum_aru for r in matrix], h.n, h.p.quorums)
    assert all(c >= p for c, p in zip(new_pop, order.history[5].pop))
    with_b = [None if r is None else r.msg.cum_aru for r in po.cum_acks[1:]]
    old_pop = matrix_pop(with_b, h.n, h.p.quorums)
    assert any(c < p for c, p in zip(old_pop, order.history[5].pop)), "the plain matrix went backwards"


def _replay(h: Harness, members: int, start_seq: int = 1) -> Envelope:
    stmt = statement(2, members, start_seq, NO_UNION)
    shares = [threshold.SignatureShare.from_bytes(h.threshold_share(j, stmt)) for j in OTHERS]
    signed = threshold.combine(h.threshold_key[0], stmt, shares)
    return h.sign(2, msgs.Replay(2, members, start_seq, signed, NO_UNION))


def test_two_replays_from_the_new_leader_are_evidence_forwarded_once() -> None:
    """Two validly signed, different REPLAYs from view 2's leader: the first is kept, the
    second is forwarded once as evidence (every peer forwarding every copy was a storm of
    millions of messages) and the leader is suspected at once, during the view change."""
    h = Harness(me=4, threshold=True)
    preinstall(h)
    first, second = _replay(h, MEMBERS_123), _replay(h, (1 << 1) | (1 << 2) | (1 << 4))
    h.feed(first)
    h.sent.clear()
    for _ in range(3):
        h.feed(second)
        h.feed(second, via=3)
    h.flush()
    forwarded = [env for _, env in h.sent if env.raw == second.raw]
    assert len(forwarded) == 1 and h.replica.vc.replay.raw == first.raw
    assert [m.new_view for m in h.sent_messages(msgs.NewLeader)] == [3]
