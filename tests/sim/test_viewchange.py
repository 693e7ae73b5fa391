"""View change in the simulator: every kind of faulty leader is replaced, committed updates
survive every view change, nested view changes, bad threshold shares; and the replay rule.

Stated bound (virtual time): after the last fault stops, every update a correct client
submitted is delivered within 10 s (the checker's liveness bound), in the final view.
"""

from __future__ import annotations

import pytest

from prime import msgs
from prime.core.viewchange import MemberState, ViewChange
from prime.sim.cluster import SimConfig
from tests.harness import Harness
from tests.sim.simutil import run, run_ok

LEADER_FAULTS = {
    "crash": dict(crash={1: 0.4}),
    "silent": dict(byz={1: "silent"}),
    "equivocate": dict(byz={1: "equivocating-leader"}),
    "delay": dict(byz={1: "delay"}, delay_ms=200.0),
}


# (f, k, net, fault, seed) of runs that break a bound through a known gap; each is kept
# visible by a test below that expects exactly that, so a fix shows up as its failure.
KNOWN_SLOW = {(1, 0, "wan", "silent", 1)}


@pytest.mark.parametrize("fault", sorted(LEADER_FAULTS))
@pytest.mark.parametrize(("f", "k", "net"), [(1, 0, "lan"), (1, 1, "lan"), (1, 0, "wan"), (1, 1, "wan")])
def test_faulty_leader_replaced_and_everything_delivered(fault: str, f: int, k: int, net: str) -> None:
    """The leader crashes, goes silent, equivocates or delays: view 2 completes and every
    submitted update is delivered by every correct replica; agreement holds across views (S7)."""
    for seed in range(1, 4):
        if (f, k, net, fault, seed) in KNOWN_SLOW:
            continue  # test_lost_commit_of_an_executed_ordinal_waits_for_an_ord_cert
        cfg = SimConfig(f=f, k=k, seed=seed, duration=1.5, net=net, loss=0.01, **LEADER_FAULTS[fault])
        summary, cluster = run_ok(cfg)
        assert summary["liveness_checked"]
        done = [vc for vc in summary["view_changes"] if vc["completed_s"] is not None]
        assert done, summary["replay"]
        final_views = {cluster.nodes[r].replica.view for r in cluster.correct if cluster.alive[r]}
        assert len(final_views) == 1 and final_views != {1}


def test_lost_commit_of_an_executed_ordinal_waits_for_an_ord_cert() -> None:
    """N=4, WAN, 1% loss, silent leader, seed 1: replica 4 loses replica 3's Commit of
    ordinal 1, which replicas 2 and 3 executed and so no longer retransmit; replica 4
    learns the ordinal only from the next ORD_CERT broadcast, every 2 s. Until then its
    incarnation hold lets it ack only seq-1 requests, and with replica 1 silent every PO
    certificate needs its ack, so nothing is pre-ordered for those 2 s. It happens again
    at ordinal 4, and a client of replica 4 waits 6.08 s, over the L3 bound of 6 s, which
    assumes a lost message costs one retransmission period (1 s), not an ORD_CERT period.
    Found when the simulator's order of same-instant ticks changed (issue 12 item 4): the
    run replays identically with the core's idle-sleeping timers and with the old ones
    (legacy "EAGER"), so they do not cause it. The run breaks L3 and nothing else; once
    the gap is fixed this test fails, and it goes, with its KNOWN_SLOW entry."""
    cfg = SimConfig(f=1, k=0, seed=1, duration=1.5, net="wan", loss=0.01, byz={1: "silent"})
    summary, _ = run(cfg)
    violations = summary["violations"]
    assert violations and all(v.startswith("L3 ") for v in violations), violations


def test_successive_faulty_leaders_nested_view_changes() -> None:
    """f=2 (N=7): the leaders of views 1 and 2 are both faulty, so view 3 is needed (L9)."""
    for seed in range(1, 4):
        cfg = SimConfig(f=2, k=0, seed=seed, duration=1.5, byz={1: "silent", 2: "silent"})
        summary, cluster = run_ok(cfg)
        assert summary["liveness_checked"]
        views = {cluster.nodes[r].replica.view for r in cluster.correct}
        assert min(views) >= 3, views


def test_new_leader_crashing_during_view_change() -> None:
    """The leader of view 2 crashes just as view 2 is being installed: view 3 follows (L9)."""
    for seed in range(1, 4):
        cfg = SimConfig(f=1, k=1, seed=seed, duration=1.5, crash={1: 0.3, 2: 0.35})
        summary, cluster = run_ok(cfg)
        assert summary["liveness_checked"]
        assert all(cluster.nodes[r].replica.view >= 3 for r in cluster.correct if cluster.alive[r])


@pytest.mark.parametrize("net", ["lan", "wan"])
@pytest.mark.parametrize(("f", "k", "fault"), [(1, 0, dict(partitions=["1|2,3,4@0.3-1.0"])),
                                               (1, 1, dict(crash={1: 0.3}))], ids=["N4", "N6"])
def test_new_leader_silent_after_its_replay_is_replaced(f: int, k: int, fault: dict, net: str) -> None:
    """View 2's leader completes the view change (sends its REPLAY) and then sends nothing,
    while every client's requests are stuck from view 1. Replicas send their proof matrix to
    the new leader as a TAT challenge once the view is installed, so the silence is measured
    and view 3 takes over. (Keeping the old view's "already sent" marks, as the C code does,
    stalls every one of these runs for good.)"""
    for seed in range(1, 4):
        cfg = SimConfig(f=f, k=k, seed=seed, duration=1.0, net=net, byz={2: "mute-after-replay"}, **fault)
        summary, cluster = run_ok(cfg)
        assert summary["liveness_checked"]
        assert all(cluster.nodes[r].replica.view >= 3 for r in cluster.correct if cluster.alive[r])


@pytest.mark.parametrize(("f", "k"), [(1, 0), (1, 1)])
def test_bad_threshold_shares_are_skipped(f: int, k: int) -> None:
    """A replica sending threshold shares with wrong values does not stall the view change (H7)."""
    for seed in range(1, 4):
        cfg = SimConfig(f=f, k=k, seed=seed, duration=1.0, crash={1: 0.3} if k else {}, byz={3: "bad-shares"})
        if not k:
            cfg = SimConfig(f=f, k=k, seed=seed, duration=1.0, byz={3: "bad-shares"}, partitions=["1|2,3,4@0.3-0.8"])
        summary, _ = run_ok(cfg)
        assert summary["liveness_checked"] and summary["view_changes"][0]["completed_s"] is not None


def test_view_changes_under_partition_and_loss() -> None:
    """Leader partitioned away with heavy loss elsewhere: a new view forms, the old leader
    rejoins (adopting the view from a certificate or a proof) and agrees."""
    for seed in range(1, 6):
        cfg = SimConfig(f=1, k=1, seed=seed, duration=2.0, loss=0.05, partitions=["1|2,3,4,5,6@0.2-1.0"])
        summary, cluster = run_ok(cfg)
        assert summary["liveness_checked"]
        assert len({cluster.nodes[r].replica.view for r in cluster.correct}) == 1


def _pc_set(h: Harness, seq: int, view: int, origin: int):
    leader = view % h.n or h.n
    req_vec = h.vector(s2=(1, seq))
    pp = h.pre_prepare(seq, [h.po_aru(i, req_vec, num=seq * 10 + view) for i in (1, 2, 3)] + [None],
                       view=view, leader=leader)
    voters = [r for r in range(1, h.n + 1) if r != leader][: h.p.quorums.prepare]
    prepares = tuple(h.votes(msgs.Prepare, pp, voters))
    return h.sign(origin, msgs.PcSet(origin, 3, 1, pp, prepares))


def test_replay_union_highest_view_wins() -> None:
    """Open question 3: for one ordinal, a prepare certificate of view 2 beats one of view 1,
    whichever replica reported it; the rule 'first by replica id' would pick the stale one."""
    h = Harness(me=4)
    vc: ViewChange = h.replica.vc
    old = _pc_set(h, 5, 1, origin=1)
    new = _pc_set(h, 5, 2, origin=3)
    vc.pc_sets = {1: {1: old}, 3: {1: new}}
    vc.members = {i: MemberState(0, 5, {5: (env.msg.pre_prepare.msg.view, env)}) for i, env in ((1, old), (3, new))}
    vc.members[2] = MemberState(0, 0)
    members = (1 << 1) | (1 << 2) | (1 << 3)
    chosen = vc.union(members)
    assert chosen[5] is new
    first_by_id = next(env for i in sorted(vc.pc_sets) for env in vc.pc_sets[i].values())
    assert first_by_id is old, "the original rule would have replayed the view-1 certificate"
