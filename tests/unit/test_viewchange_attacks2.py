"""The view change of issue 11 attacked again, after the union-digest redesign.

Each test drives correct replicas by hand (``tests.harness``), plays every other replica,
and signs as a Byzantine replica only what that replica could sign with its own key
(threshold proofs are combined only from shares the test shows correct replicas produce,
plus the Byzantine replica's own). Each test asserts the safe or live outcome and fails
with the code it was written against (the view-change redesign of commit bf4372f, branch
``attack`` at 22fe0bf); a sketch of the suggested fix makes each pass (see the session's
report). They are not marked xfail: they are the bugs.
"""

from __future__ import annotations

from prime import msgs
from prime.core.preorder import request_digest
from prime.core.viewchange import statement, union_digest
from prime.msgs import OrdKind
from prime.wire import Envelope
from tests.harness import Harness
from tests.unit.test_viewchange_attacks import (
    certified_pp,
    members_of,
    own_payloads,
    ppd,
    preinstall,
    rb_deliver,
    threshold_sign,
)


def certified_pp_with(
    h: Harness, seq: int, view: int, vector: tuple[tuple[int, int], ...], num: int
) -> tuple[Envelope, tuple[Envelope, ...]]:
    """View ``view``'s leader's pre-prepare for ``seq`` whose rows (replicas 1..N-1) all carry
    ``vector``, and 2f+k Prepares of non-leaders: a prepare certificate."""
    leader = (view - 1) % h.n + 1
    rows = [h.po_aru(i, vector, num=num) for i in range(1, h.n)] + [None]
    pp = h.pre_prepare(seq, rows, view=view, leader=leader)
    voters = [j for j in range(1, h.n + 1) if j != leader][: h.p.quorums.prepare]
    return pp, tuple(h.votes(msgs.Prepare, pp, voters))


# ------------------------------------------------- a replayed NO_OP is not a free slot


def test_new_leader_cannot_overwrite_a_replayed_noop_that_has_not_executed_yet() -> None:
    """N=4, replica 2 (the leader of view 2) is Byzantine. View 2's replay (list {1, 2, 4})
    decides D1 at ordinal 1, a NO_OP at 2 and D3 at 3. Replica 4 executes the replay, but
    ordinal 1 waits for replica 3's PO-Request (1, 1), which has not reached it yet, so the
    NO_OP at 2 is installed (ordered, no pre-prepare) and not executed.

    The Byzantine leader then sends a view-2 PRE_PREPARE for ordinal 2 whose matrix makes
    request (3, 1, 2) eligible. ``Order.on_pre_prepare`` finds the slot without a
    pre-prepare and installs it over the NO_OP: slot 2 keeps ``kind NO_OP`` and ``ordered``
    but takes the new matrix. When the requests arrive, replica 4 executes (3, 1, 2) at
    ordinal 2, where every replica that executed the replay at once executed nothing (and
    vouches "NO_OP" for it in catch-up). One Byzantine leader splits the executions.

    Fails with bf4372f: ordinal 2 delivers request (3, 1, 2). Expected: an ordinal the
    replay decided is never re-decided by a pre-prepare (ordered slots take no PP)."""
    h = Harness(me=4, threshold=True)
    d1, d1_prepares = certified_pp_with(h, 1, 1, h.vector(s3=(1, 1)), num=11)
    d3, d3_prepares = certified_pp_with(h, 3, 1, h.vector(s3=(1, 1)), num=13)

    preinstall(h, 2, (1, 3, 4))
    rb_deliver(h, h.sign(1, msgs.Report(1, 2, 0, 0, 1, 0)))
    rb_deliver(h, h.sign(1, msgs.PcSet(1, 2, 1, d1, d1_prepares)))
    rb_deliver(h, h.sign(2, msgs.Report(2, 2, 0, 0, 1, 0)))
    rb_deliver(h, h.sign(2, msgs.PcSet(2, 2, 1, d3, d3_prepares)))
    (own,) = own_payloads(h, 2)
    rb_deliver(h, own)
    m = members_of(1, 2, 4)
    union = union_digest(4, 1, ((1, ppd(d1)), (3, ppd(d3))))
    # Replicas 1 and 4 (correct, complete for the list) sign this statement; 2 is the leader.
    replay = h.sign(2, msgs.Replay(2, m, 4, threshold_sign(h, statement(2, m, 4, union), (1, 2, 4)), union))
    h.feed(replay)
    digest = h.replica.vc.replay_digest
    for j in (1, 3):
        h.feed(h.sign(j, msgs.ReplayPrepare(2, digest)))
    for j in (1, 2, 3):
        h.feed(h.sign(j, msgs.ReplayCommit(2, digest)))
    order = h.replica.ord
    assert h.replica.view_change_done and order.aru == 0, "ordinal 1 waits for request (3, 1, 1)"
    assert order.history[2].kind == OrdKind.NO_OP and order.history[2].pp is None

    # The Byzantine leader of view 2 proposes ordinal 2 again (rows signed by 1, 2, 3 as in
    # normal operation once replica 3's second request is acknowledged).
    rogue = h.pre_prepare(2, [h.po_aru(i, h.vector(s3=(1, 2)), num=22) for i in (1, 2, 3)] + [None],
                          view=2, leader=2)
    h.feed(rogue)

    c = h.n + 1
    for seq in (1, 2):
        req = h.po_request(3, seq, [h.update(c, seq, b"u%d" % seq)])
        h.feed(req)
        for acker in (1, 2, 3):
            h.feed(h.ack(acker, 3, seq, request_digest(req)))
    executed = {d.ordinal: d.requests for d in h.delivered}
    assert executed.get(1) == ((3, 1, 1),), "ordinal 1 executed D1"
    assert 2 in executed, "the NO_OP at ordinal 2 executed"
    assert executed[2] == (), "the replay decided a NO_OP at ordinal 2: it executes nothing"


# ------------------------------------- two REPLAYs of one view: the tie goes to the liar


def test_an_uncommitted_replay_of_a_byzantine_leader_cannot_outvote_the_committed_one() -> None:
    """N=4, replica 3 (the leader of view 3) is Byzantine. In view 3 replica 2 reports D1 (a
    view-1 prepare certificate) at ordinal 1, replica 3 reports only E2 at ordinal 2,
    replicas 1 and 4 report nothing. Correct replicas sign a share for every list they are
    complete for, so both L1 = {1, 2, 4} (D1 at 1, start 2) and L2 = {1, 3, 4} (NO_OP at 1,
    E2 at 2, start 3) get shares from replicas 1 and 4; with its own share replica 3
    combines both proofs. It sends REPLAY R1 (L1) to everyone and keeps R2 (L2).

    Replica 1 executes R1: D1 at ordinal 1. Replica 4 commits to R1 but has not executed it,
    and carries R1 into view 4. Replica 2 never saw R1. In view 4 the list is {2, 3, 4}:
    replica 2 reports D1 under view 1, replica 4 carries R1 (D1, a decision of view 3), and
    replica 3 carries R2 (a NO_OP at ordinal 1, also a decision of view 3, and it is a
    valid certificate: leader-signed, threshold-signed, opening matches). Equal views, and
    the tie goes to the lowest replica id: 3. View 4 replays a NO_OP at ordinal 1, where
    replica 1 executed D1.

    Fails with bf4372f: the view-4 union has no decision D1 at ordinal 1. Expected: only the
    replay the view actually committed to counts, e.g. a REPORT's replay certificate also
    carries 2f+k REPLAY_PREPAREs of non-leaders on its digest (a correct replica prepares
    one REPLAY per view, so two REPLAYs of a view cannot both have them)."""
    d1_h = Harness(me=1, threshold=True)
    d1, d1_prepares = certified_pp(d1_h, 1, view=1)
    e2, e2_prepares = certified_pp(d1_h, 2, view=1)
    l1, l2 = members_of(1, 2, 4), members_of(1, 3, 4)
    u1 = union_digest(2, 1, ((1, ppd(d1)),))
    u2 = union_digest(3, 1, ((2, ppd(e2)),))
    s1, s2 = statement(3, l1, 2, u1), statement(3, l2, 3, u2)

    def view3_states(h: Harness) -> None:
        """Replica ``h.me`` (1 or 4) in view 3, complete for all four replicas."""
        preinstall(h, 3, (1, 2, 4))
        (own,) = own_payloads(h, 3)
        rb_deliver(h, own)
        other = 5 - h.me  # 4 for replica 1, 1 for replica 4: reports nothing either
        rb_deliver(h, h.sign(other, msgs.Report(other, 3, 0, 0, 0, 0)))
        rb_deliver(h, h.sign(2, msgs.Report(2, 3, 0, 0, 1, 0)))
        rb_deliver(h, h.sign(2, msgs.PcSet(2, 3, 1, d1, d1_prepares)))
        rb_deliver(h, h.sign(3, msgs.Report(3, 3, 0, 0, 1, 0)))
        rb_deliver(h, h.sign(3, msgs.PcSet(3, 3, 1, e2, e2_prepares)))
        assert h.replica.vc.complete == {1, 2, 3, 4}
        h.feed(h.sign(2, msgs.VcList(3, l1)))
        h.feed(h.sign(3, msgs.VcList(3, l2)))
        h.flush()
        signed = {job.statement for job in h.threshold_jobs if job.op == "share"}
        assert {s1, s2} <= signed, "a correct replica signs a share for both lists"

    # Replica 1: signs both, executes R1 (D1 at ordinal 1).
    view3_states(d1_h)
    r1 = d1_h.sign(3, msgs.Replay(3, l1, 2, threshold_sign(d1_h, s1, (1, 3, 4)), u1))
    r2 = d1_h.sign(3, msgs.Replay(3, l2, 3, threshold_sign(d1_h, s2, (1, 3, 4)), u2))
    d1_h.feed(r1)
    digest = d1_h.replica.vc.replay_digest
    for j in (2, 4):
        d1_h.feed(d1_h.sign(j, msgs.ReplayPrepare(3, digest)))
    for j in (2, 3, 4):
        d1_h.feed(d1_h.sign(j, msgs.ReplayCommit(3, digest)))
    assert d1_h.replica.view_change_done and d1_h.replica.ord.aru == 1
    assert d1_h.replica.ord.history[1].ppd == ppd(d1), "replica 1 executed D1 at ordinal 1"

    # Replica 4: signs both, commits to R1, has not executed it; carries it into view 4.
    carrier = Harness(me=4, threshold=True)
    carrier.signers = d1_h.signers
    view3_states(carrier)
    carrier.feed(r1)
    for j in (1, 2):
        carrier.feed(carrier.sign(j, msgs.ReplayPrepare(3, digest)))
    carrier.flush()
    assert carrier.sent_messages(msgs.ReplayCommit) and not carrier.replica.view_change_done
    carrier.sent.clear()
    preinstall(carrier, 4, (1, 2, 3))
    carried = own_payloads(carrier, 4)

    # Replica 2 in view 4: its own view-1 certificate for D1, replica 4's carried R1, and
    # replica 3's REPORT carrying R2 (all it needs: R2, its opening, E2).
    h = Harness(me=2, threshold=True)
    h.signers = d1_h.signers
    h.feed(d1)
    for env in d1_prepares:
        h.feed(env)
    h.flush()
    assert h.replica.ord.history[1].prepare_cert
    preinstall(h, 4, (1, 3, 4))
    for payload in carried:
        rb_deliver(h, payload)
    rb_deliver(h, h.sign(3, msgs.Report(3, 4, 0, 0, 1, 2, r2, 1, (2,), (ppd(e2),))))
    rb_deliver(h, h.sign(3, msgs.PcSet(3, 4, 1, e2, e2_prepares)))
    for payload in own_payloads(h, 4):
        rb_deliver(h, payload)
    m4 = members_of(2, 3, 4)
    h.feed(h.sign(4, msgs.VcList(4, m4)))
    h.flush()
    # The union the tie produces: ordinal 1 a NO_OP, E2 at 2, start 3.
    noop_at_1 = statement(4, m4, 3, union_digest(3, 1, ((2, ppd(e2)),)))
    signed = {job.statement for job in h.threshold_jobs if job.op == "share"}
    assert noop_at_1 not in signed, "replica 2 signs view 4's replay of a NO_OP where replica 1 executed D1"
    vc = h.replica.vc
    if {2, 3, 4} <= vc.complete:  # (a fix may instead refuse replica 3's certificate)
        union = vc.union(m4)
        assert 1 in union and ppd(union[1].msg.pre_prepare) == ppd(d1)


# ------------------------- a stale replay certificate hides a newer prepare certificate


def test_a_stale_replay_certificate_does_not_hide_a_later_views_certificate() -> None:
    """N=4, replica 3 is Byzantine; replica 4 (under test) is correct.

    View 2 (leader 2, correct): replica 3 reports E2 (a view-1 prepare certificate) at
    ordinal 2; the replay R2 of list {2, 3, 4} decides a NO_OP at 1 and E2 at 2 (start 3).
    Replica 4 commits to R2; only replica 3's commit joins it, so R2 never executes
    anywhere. View 3: replica 4 is cut off; the list {1, 2, 3} (replica 3 now omits E2)
    replays nothing, start 1, and view 3 orders D1' at 1 and D2' at 2 in normal operation:
    D2' is committed by replicas 1, 3 and 4 (replica 4 adopted view 3 from the ORD
    certificate of ordinal 1 and prepared, then committed D2'), so replica 1 executes it.
    Replica 4 waits at ordinal 2 for a request, so its R2 certificate is still "not
    executed".

    View 4, list {2, 3, 4}: ``ViewChange.start`` deletes replica 4's view-3 prepare
    certificate for D2' (ordinal 2 is below R2's start) and reports R2's view-2 decision E2
    instead; nobody else holds D2', so view 4 replays E2 at ordinal 2, where replica 1
    executed D2'.

    Fails with bf4372f: the union decides E2 at ordinal 2 (and replica 4 signs a share for
    it). Expected: a prepare certificate of a view above the carried replay's view is
    reported, and wins under the highest-view rule (or the stale certificate is dropped
    once a later view is adopted and decided past it)."""
    h = Harness(me=4, threshold=True)
    e2, e2_prepares = certified_pp(h, 2, view=1, salt=5)

    # View 2: replica 4 commits to R2, which never gathers 2f+k+1 commits.
    preinstall(h, 2, (1, 2, 3))
    (own,) = own_payloads(h, 2)
    rb_deliver(h, own)
    rb_deliver(h, h.sign(2, msgs.Report(2, 2, 0, 0, 0, 0)))
    rb_deliver(h, h.sign(3, msgs.Report(3, 2, 0, 0, 1, 0)))
    rb_deliver(h, h.sign(3, msgs.PcSet(3, 2, 1, e2, e2_prepares)))
    m2 = members_of(2, 3, 4)
    u2 = union_digest(3, 1, ((2, ppd(e2)),))
    s2 = statement(2, m2, 3, u2)
    h.feed(h.sign(2, msgs.VcList(2, m2)))
    h.flush()
    assert s2 in {job.statement for job in h.threshold_jobs if job.op == "share"}
    h.feed(h.sign(2, msgs.Replay(2, m2, 3, threshold_sign(h, s2, (2, 3, 4)), u2)))
    h.feed(h.sign(3, msgs.ReplayPrepare(2, h.replica.vc.replay_digest)))
    h.feed(h.sign(3, msgs.ReplayCommit(2, h.replica.vc.replay_digest)))
    h.flush()
    assert h.replica.vc.committed is not None and not h.replica.view_change_done

    # View 3 (leader 3): replicas 1, 2, 3 completed it (replaying nothing) and commit D1' at
    # ordinal 1; its ORD certificate brings replica 4 into view 3.
    d1, _ = certified_pp_with(h, 1, 3, h.vector(), num=31)
    d1_commits = tuple(h.votes(msgs.Commit, d1, [1, 2, 3]))
    h.feed(h.sign(1, msgs.OrdCert(3, 1, int(OrdKind.COMMIT), 1, d1, d1_commits)))
    assert h.replica.view == 3 and h.replica.view_change_done and h.replica.ord.aru == 1
    # D2' at ordinal 2 makes replica 1's request (1, 1) eligible; replica 4 lacks it.
    d2, _ = certified_pp_with(h, 2, 3, h.vector(s1=(1, 1)), num=32)
    h.feed(d2)
    h.feed(h.votes(msgs.Prepare, d2, [1])[0])
    h.flush()
    for env in h.votes(msgs.Commit, d2, [1, 3]):
        h.feed(env)
    h.flush()
    slot = h.replica.ord.history[2]
    assert slot.ordered and slot.prepare_cert and slot.ppd == ppd(d2), "view 3 committed D2' at 2"
    assert h.replica.ord.aru == 1, "replica 4 waits for request (1, 1) at ordinal 2"

    # View 4, list {2, 3, 4}: replica 2 executed ordinal 1 (it missed the Prepares of D2'),
    # replica 3 reports nothing.
    preinstall(h, 4, (1, 2, 3))
    for payload in own_payloads(h, 4):
        rb_deliver(h, payload)
    rb_deliver(h, h.sign(2, msgs.Report(2, 4, 0, 1, 0, 0)))
    rb_deliver(h, h.sign(3, msgs.Report(3, 4, 0, 1, 0, 0)))
    m4 = members_of(2, 3, 4)
    h.feed(h.sign(2, msgs.VcList(4, m4)))
    h.flush()
    stale = statement(4, m4, 3, union_digest(3, 2, ((2, ppd(e2)),)))
    signed = {job.statement for job in h.threshold_jobs if job.op == "share"}
    assert stale not in signed, "replica 4 signs view 4's replay of E2 at 2, where replica 1 executed D2'"
    vc = h.replica.vc
    assert {2, 3, 4} <= vc.complete
    assert ppd(vc.union(m4)[2].msg.pre_prepare) == ppd(d2)
