"""The view change of issue 11 attacked again, after the union-digest redesign.

Each test drives correct replicas by hand (``tests.harness``), plays every other replica,
and signs as a Byzantine replica only what that replica could sign with its own key
(threshold proofs are combined only from shares the test shows correct replicas produce,
plus the Byzantine replica's own). Each test asserts the safe or live outcome and fails
with the code it was written against (branch ``attack``, on top of bf4372f).
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
