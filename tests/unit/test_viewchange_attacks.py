"""The view change against a smarter adversary (issue 11, items 1, 2, 5, 6, 8, 12, 15).

Each test drives one replica by hand (``tests.harness``), plays every other replica, and
shows one attack: with the previous code it broke agreement or stalled the view change
(the closing note of the session that fixed it says what each showed before the fix);
now it is refused, bounded per sender, or decided the same way at every replica.
"""

from __future__ import annotations

from prime import msgs
from prime.core.order import pre_prepare_digest
from prime.core.viewchange import replay_digest, statement, union_digest
from prime.crypto import threshold
from prime.wire import Envelope
from tests.harness import Harness


def members_of(*ids: int) -> int:
    return sum(1 << i for i in ids)


def preinstall(h: Harness, view: int, voters: tuple[int, ...]) -> None:
    votes = tuple(h.sign(j, msgs.NewLeader(view)) for j in voters)
    h.feed(h.sign(voters[0], msgs.NewLeaderProof(view, votes)))
    assert h.replica.view == view and not h.replica.view_change_done
    h.flush()


def rb_deliver(h: Harness, payload: Envelope) -> None:
    """2f+k+1 replicas other than the one under test say READY: it delivers ``payload``."""
    for j in [j for j in range(1, h.n + 1) if j != h.me][: h.p.quorums.certificate]:
        h.feed(h.sign(j, msgs.RbReady(payload)))


def own_payloads(h: Harness, view: int) -> list[Envelope]:
    """The REPORT and PC_SETs the replica under test reliably broadcasts in ``view``."""
    return [m.payload for m in h.sent_messages(msgs.RbInit) if m.payload.msg.rb_view == view]


def certified_pp(h: Harness, seq: int, view: int, salt: int = 0) -> tuple[Envelope, tuple[Envelope, ...]]:
    """View ``view``'s leader's pre-prepare for ``seq`` (its rows acknowledge nothing, so it
    executes at once) and 2f+k Prepares of non-leaders: a prepare certificate."""
    leader = (view - 1) % h.n + 1
    rows = [h.po_aru(i, h.vector(), num=1000 * view + seq + salt) for i in range(1, h.n)] + [None]
    pp = h.pre_prepare(seq, rows, view=view, leader=leader)
    voters = [j for j in range(1, h.n + 1) if j != leader][: h.p.quorums.prepare]
    return pp, tuple(h.votes(msgs.Prepare, pp, voters))


def threshold_sign(h: Harness, stmt: bytes, signers: tuple[int, ...]) -> bytes:
    shares = [threshold.SignatureShare.from_bytes(h.threshold_share(j, stmt)) for j in signers]
    return threshold.combine(h.threshold_key[0], stmt, shares)


def ppd(pp: Envelope) -> bytes:
    return pre_prepare_digest(pp.msg)


# ------------------------------------------------------------------------- item 1


def test_pc_sets_beyond_the_announced_size_never_count_whatever_the_order() -> None:
    """Replica 3 announces one PC_SET and reliably broadcasts two (ordinals 1 and 2). One
    replica delivers PC_SET 2 before the REPORT, another after: before the fix the first
    counted {1, 2} (and was complete even with {2} alone) while the second counted {1}, so
    the same REPLAY made them install different things at ordinal 2. Now exactly the
    announced PC_SET 1 counts at both."""
    unions = []
    for order in ("pc_set_2_first", "report_first"):
        h = Harness(me=4)
        preinstall(h, 2, (1, 2, 3))
        pp1, prep1 = certified_pp(h, 1, view=1)
        pp2, prep2 = certified_pp(h, 2, view=1)
        report = h.sign(3, msgs.Report(3, 2, 0, 0, 1, 0))
        pc1 = h.sign(3, msgs.PcSet(3, 2, 1, pp1, prep1))
        pc2 = h.sign(3, msgs.PcSet(3, 2, 2, pp2, prep2))
        payloads = [pc2, report, pc1] if order == "pc_set_2_first" else [report, pc1, pc2]
        for i, payload in enumerate(payloads):
            rb_deliver(h, payload)
            if order == "pc_set_2_first" and i == 1:
                assert 3 not in h.replica.vc.complete, "PC_SET 1, the announced one, is missing"
        for j in (1, 2):
            rb_deliver(h, h.sign(j, msgs.Report(j, 2, 0, 0, 0, 0)))
        members = members_of(1, 2, 3)
        vc = h.replica.vc
        assert vc.complete >= {1, 2, 3}
        unions.append(({g: ppd(env.msg.pre_prepare) for g, env in vc.union(members).items()},
                       vc.start_seq_for(members)))
    assert unions[0] == unions[1]
    assert unions[0][0] == {1: ppd(pp1)}


# ------------------------------------------------------------------------- item 2


def test_a_replayed_decision_outranks_an_older_certificate_in_the_next_view_change() -> None:
    """The scenario of item 2. View 1: a prepare certificate for D1 at ordinal 1. View 2: one
    for D2 at ordinal 1 (formed at faulty replica 2 only). View 3 replays D1; replica 1
    commits to that replay (REPLAY_COMMIT) but has not executed it. View 4: its list is
    {1, 2, 3}, replica 2 reports D2. Before the fix replica 1 reported D1 under its
    pre-prepare's view 1, the highest-view rule picked D2 (view 2), and a replica that had
    executed view 3's replay held D1 at ordinal 1 while view 4 executed D2. Now replica 1
    carries the replay certificate: D1 is a decision of view 3 and wins."""
    d1 = None
    carrier = Harness(me=1, threshold=True)
    d1, d1_prepares = certified_pp(carrier, 1, view=1)
    d2, d2_prepares = certified_pp(carrier, 1, view=2, salt=7)
    assert ppd(d1) != ppd(d2)

    # View 3 at replica 1: its list {1, 2, 4}; replica 2 reports D1 (view 1).
    preinstall(carrier, 3, (2, 3, 4))
    (mine,) = own_payloads(carrier, 3)
    rb_deliver(carrier, mine)
    rb_deliver(carrier, carrier.sign(2, msgs.Report(2, 3, 0, 0, 1, 0)))
    rb_deliver(carrier, carrier.sign(2, msgs.PcSet(2, 3, 1, d1, d1_prepares)))
    rb_deliver(carrier, carrier.sign(4, msgs.Report(4, 3, 0, 0, 0, 0)))
    m3 = members_of(1, 2, 4)
    union3 = union_digest(2, 1, ((1, ppd(d1)),))
    replay3 = carrier.sign(3, msgs.Replay(3, m3, 2, threshold_sign(carrier, statement(3, m3, 2, union3), (1, 2, 4)), union3))
    carrier.feed(replay3)
    digest = carrier.replica.vc.replay_digest
    for j in (2, 4):
        carrier.feed(carrier.sign(j, msgs.ReplayPrepare(3, digest)))
    carrier.flush()
    assert carrier.sent_messages(msgs.ReplayCommit), "replica 1 committed to view 3's replay"
    assert not carrier.replica.view_change_done, "but has not executed it (no commits seen)"

    # View 4 at replica 1: what it reports.
    carrier.sent.clear()
    preinstall(carrier, 4, (2, 3, 4))
    carried = own_payloads(carrier, 4)
    (carried_report,) = [p for p in carried if isinstance(p.msg, msgs.Report)]
    assert carried_report.msg.replay is not None and carried_report.msg.replay_floor == 1
    assert sorted(v.sender for v in carried_report.msg.replay_votes) == [2, 4], "its prepare certificate"

    # Replica 3, in view 4, with members 1 (the carrier), 2 (faulty: reports D2) and itself.
    h = Harness(me=3, threshold=True)
    h.signers = carrier.signers
    preinstall(h, 4, (1, 2, 4))
    for payload in carried:
        rb_deliver(h, payload)
    rb_deliver(h, h.sign(2, msgs.Report(2, 4, 0, 0, 1, 0)))
    rb_deliver(h, h.sign(2, msgs.PcSet(2, 4, 1, d2, d2_prepares)))
    (own,) = own_payloads(h, 4)
    rb_deliver(h, own)
    m4 = members_of(1, 2, 3)
    assert h.replica.vc.complete >= {1, 2, 3}
    assert ppd(h.replica.vc.union(m4)[1].msg.pre_prepare) == ppd(d1), "D1, decided in view 3, wins"

    # And it executes D1 at ordinal 1 when view 4's replay runs.
    union4 = union_digest(2, 1, ((1, ppd(d1)),))
    replay4 = h.sign(4, msgs.Replay(4, m4, 2, threshold_sign(h, statement(4, m4, 2, union4), (1, 2, 3)), union4))
    h.feed(replay4)
    digest = h.replica.vc.replay_digest
    for j in (1, 2):
        h.feed(h.sign(j, msgs.ReplayPrepare(4, digest)))
    for j in (1, 2, 4):
        h.feed(h.sign(j, msgs.ReplayCommit(4, digest)))
    assert h.replica.view_change_done and h.replica.ord.aru == 1
    assert h.replica.ord.history[1].ppd == ppd(d1)


def test_a_replay_certificate_whose_opening_does_not_match_is_refused() -> None:
    """A REPORT whose listed decisions do not hash to the union digest the REPLAY's threshold
    signature covers (here: D2 claimed where the replay decided D1) is dropped."""
    h = Harness(me=4, threshold=True)
    d1, _ = certified_pp(h, 1, view=1)
    d2, _ = certified_pp(h, 1, view=2, salt=7)
    m = members_of(1, 2, 4)
    union = union_digest(2, 1, ((1, ppd(d1)),))
    replay = h.sign(3, msgs.Replay(3, m, 2, threshold_sign(h, statement(3, m, 2, union), (1, 2, 4)), union))
    preinstall(h, 4, (1, 2, 3))
    digest = replay_digest(replay.msg)
    prepares = tuple(h.sign(j, msgs.ReplayPrepare(3, digest)) for j in (1, 2))
    lie = h.sign(2, msgs.Report(2, 4, 0, 0, 0, 1, replay, 1, (1,), (ppd(d2),), prepares))
    truth = h.sign(1, msgs.Report(1, 4, 0, 0, 0, 1, replay, 1, (1,), (ppd(d1),), prepares))
    rb_deliver(h, lie)
    rb_deliver(h, truth)
    assert h.replica.stats.dropped["report:invalid"] == 1
    assert 2 not in h.replica.vc.reports and 1 in h.replica.vc.reports


def test_a_replay_certificate_needs_the_votes_of_its_view() -> None:
    """The REPLAY's threshold signature alone is not enough (a faulty leader can get two lists
    signed): the certificate also needs 2f+k REPLAY_PREPAREs of non-leaders (or 2f+k+1
    REPLAY_COMMITs) on that REPLAY. Too few, the leader's own, or votes on another digest:
    refused."""
    kinds = ["none", "one", "leader's", "other digest", "two commits", "three commits"]
    for kind in kinds:
        h = Harness(me=4, threshold=True)
        d1, _ = certified_pp(h, 1, view=1)
        m = members_of(1, 2, 4)
        union = union_digest(2, 1, ((1, ppd(d1)),))
        replay = h.sign(3, msgs.Replay(3, m, 2, threshold_sign(h, statement(3, m, 2, union), (1, 2, 4)), union))
        digest = replay_digest(replay.msg)
        preinstall(h, 4, (1, 2, 3))
        votes = {
            "none": (),
            "one": (h.sign(1, msgs.ReplayPrepare(3, digest)),),
            "leader's": tuple(h.sign(j, msgs.ReplayPrepare(3, digest)) for j in (1, 3)),  # 3 leads
            "other digest": tuple(h.sign(j, msgs.ReplayPrepare(3, bytes(32))) for j in (1, 2)),
            "two commits": tuple(h.sign(j, msgs.ReplayCommit(3, digest)) for j in (1, 2)),
            "three commits": tuple(h.sign(j, msgs.ReplayCommit(3, digest)) for j in (1, 2, 3)),
        }[kind]
        rb_deliver(h, h.sign(1, msgs.Report(1, 4, 0, 0, 0, 1, replay, 1, (1,), (ppd(d1),), votes)))
        accepted = 1 in h.replica.vc.reports
        assert accepted == (kind == "three commits"), kind


# ------------------------------------------------------------------------- item 8


def test_a_bare_replay_floor_is_refused() -> None:
    """Replica 3 reports replay_floor 2^62 with no replay to prove it. Before the fix its state
    counted as complete with that floor: start_seq 2^62 + 1, and every correct replica would
    install NO_OPs up to it. Now the REPORT is dropped and replica 3 stays incomplete."""
    h = Harness(me=4)
    preinstall(h, 2, (1, 2, 3))
    rb_deliver(h, h.sign(3, msgs.Report(3, 2, 0, 0, 0, 2**62)))
    for j in (1, 2):
        rb_deliver(h, h.sign(j, msgs.Report(j, 2, 0, 0, 0, 0)))
    (own,) = own_payloads(h, 2)
    rb_deliver(h, own)
    vc = h.replica.vc
    assert h.replica.stats.dropped["report:invalid"] == 1
    assert 3 not in vc.complete and vc.complete == {1, 2, 4}
    assert vc.start_seq_for(members_of(1, 2, 4)) == 1


def test_no_share_for_a_list_that_would_install_more_than_the_window() -> None:
    """A (validly certified) PC_SET far beyond this replica's execution point would make the
    replay install thousands of NO_OPs in one step: the replica signs no share for it."""
    h = Harness(me=4)
    preinstall(h, 2, (1, 2, 3))
    far = h.p.ordinal_window_max + 50
    pp, prepares = certified_pp(h, far, view=1)
    rb_deliver(h, h.sign(3, msgs.Report(3, 2, 0, 0, 1, 0)))
    rb_deliver(h, h.sign(3, msgs.PcSet(3, 2, 1, pp, prepares)))
    for j in (1, 2):
        rb_deliver(h, h.sign(j, msgs.Report(j, 2, 0, 0, 0, 0)))
    h.feed(h.sign(1, msgs.VcList(2, members_of(1, 2, 3))))
    assert h.replica.stats.dropped["vc_list:too_far"] == 1
    assert not [j for j in h.threshold_jobs if j.op == "share"]


# ---------------------------------------------------------------------- items 5, 6


def test_share_flood_from_one_replica_does_not_refuse_the_genuine_shares() -> None:
    """N=6. Replica 3 sends threshold shares for 60 made-up lists. Before the fix the global
    table (4N entries) filled and every later share was refused, the correct ones included:
    no proof, and nobody suspected the new leader. Now replica 3 fills only its own N
    entries, and the four genuine shares combine into a VC proof."""
    h = Harness(f=1, k=1, me=4, threshold=True)
    preinstall(h, 2, (1, 2, 3, 5))
    m = members_of(1, 2, 5, 6)
    union = union_digest(1, 1, ())
    stmt = statement(2, m, 1, union)
    for junk in range(60):
        h.feed(h.sign(3, msgs.VcPartialSig(2, m, 100 + junk, b"junk", union)))
    assert h.replica.stats.dropped["vc_partial_sig:sender_full"] == 60 - h.n
    for j in (1, 2, 5, 6):
        h.feed(h.sign(j, msgs.VcPartialSig(2, m, 1, h.threshold_share(j, stmt), union)))
    h.flush()
    (proof,) = h.sent_messages(msgs.VcProof)
    assert threshold.verify(h.threshold_key[0], stmt, proof.signature)
    assert all(len(keys) <= h.n for keys in h.replica.vc.shares_by_sender.values())


def test_a_view_change_that_does_not_complete_moves_on() -> None:
    """Nothing completes view 2 (no REPORT, no proof ever): before the fix no stopwatch ran and
    the replica waited for good. Now, once the bound passes, it votes for view 3; the bound
    doubles for the next view change in a row."""
    h = Harness(me=4)
    preinstall(h, 2, (1, 2, 3))
    h.advance(h.p.view_change_timeout_us - 10_000)
    assert [m.new_view for m in h.sent_messages(msgs.NewLeader)] == []
    h.advance(20_000)
    assert [m.new_view for m in h.sent_messages(msgs.NewLeader)] == [3]
    assert h.replica.stats.view_change_timeouts == 1
    preinstall(h, 3, (1, 2, 3))
    h.advance(2 * h.p.view_change_timeout_us - 10_000)
    assert [m.new_view for m in h.sent_messages(msgs.NewLeader)] == [3]
    h.advance(20_000)
    assert [m.new_view for m in h.sent_messages(msgs.NewLeader)] == [3, 4]


def test_vc_list_flood_cannot_keep_the_honest_list_out() -> None:
    """N=7 (f=2): only 29 lists of at least 2f+k+1 = 5 members exist. Faulty replicas 2 and 3
    send the 28 others between them. Before the fix the global cap (4N = 28 lists) was then
    full and replica 1's honest list was never considered. Now each replica's first list
    counts, whatever the others sent."""
    import itertools

    h = Harness(f=2, k=0, me=7)
    preinstall(h, 2, (1, 2, 3, 4, 5))
    honest = members_of(1, 4, 5, 6, 7)
    lists = [members_of(*c) for size in (5, 6, 7) for c in itertools.combinations(range(1, 8), size)]
    junk = [m for m in lists if m != honest]
    assert len(junk) == 28
    for i, m in enumerate(junk):
        h.feed(h.sign(2 + i % 2, msgs.VcList(2, m)))
    h.feed(h.sign(1, msgs.VcList(2, honest)))
    vc = h.replica.vc
    assert honest in vc.lists_seen and honest in vc.pending_lists
    assert sorted(vc.lists_by_sender) == [1, 2, 3]


# ------------------------------------------------------------------------ item 12


def test_rb_instances_per_origin_are_bounded_by_what_it_announced() -> None:
    """Replica 3 opens 300 reliable-broadcast instances: copies of one valid PC_SET under
    different RB sequence numbers. Before the fix every correct replica echoed each of
    them (up to 4,096 instances per origin and view). Now, before its REPORT is seen, at
    most RB_EARLY_MAX instances are accepted; a PC_SET is echoed only for an ordinal the
    origin has not used; and once the REPORT announced one PC_SET, no instance beyond
    it is accepted at all."""
    h = Harness(me=4)
    preinstall(h, 2, (1, 2, 3))
    pp, prepares = certified_pp(h, 1, view=1)
    h.sent.clear()
    for seq in range(1, 301):
        h.feed(h.sign(3, msgs.RbInit(h.sign(3, msgs.PcSet(3, 2, seq, pp, prepares)))))
    h.flush()
    vc = h.replica.vc
    echoes = [m for m in h.sent_messages(msgs.RbEcho) if m.payload.sender == 3]
    assert len(echoes) == 1
    assert len([key for key in vc.rb if key[0] == 3]) == vc.RB_EARLY_MAX
    h.feed(h.sign(3, msgs.RbInit(h.sign(3, msgs.Report(3, 2, 0, 0, 1, 0)))))
    before = h.replica.stats.dropped["rb:seq"]
    for seq in range(2, 50):
        h.feed(h.sign(3, msgs.RbEcho(h.sign(3, msgs.PcSet(3, 2, seq, pp, prepares)))))
    assert h.replica.stats.dropped["rb:seq"] - before == 48


# ------------------------------------------------------------------------ item 15


def test_adopting_a_view_frees_the_slots_of_older_views() -> None:
    """Replica 4 holds view 1's pre-prepare for ordinal 1 (never ordered) when an ORD
    certificate proves view 2 installed. Before the fix it adopted view 2 but kept the old
    slot, so view 2's own pre-prepare, Prepares and Commits for ordinal 1 were ignored and
    ordinal 1 never executed. Now the slot is freed and ordinal 1 executes in view 2."""
    h = Harness(me=4)
    old_pp, _ = certified_pp(h, 1, view=1)
    h.feed(old_pp)
    assert h.replica.ord.history[1].view == 1
    cert_pp, _ = certified_pp(h, 3, view=2)
    commits = tuple(h.votes(msgs.Commit, cert_pp, [1, 2, 3]))
    h.feed(h.sign(1, msgs.OrdCert(2, 3, 1, 1, cert_pp, commits)))
    assert h.replica.view == 2 and h.replica.view_change_done
    new_pp, prepares = certified_pp(h, 1, view=2, salt=3)
    h.feed(new_pp)
    for env in prepares:
        h.feed(env)
    for env in h.votes(msgs.Commit, new_pp, [1, 2, 3]):
        h.feed(env)
    assert h.replica.ord.aru >= 1
    assert [d.ordinal for d in h.delivered][:1] == [1]
