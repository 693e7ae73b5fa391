"""Clients of a restarted replica (issue 12 item 7; docs/hardening.md I12-7).

A replica restarted with empty state and a new incarnation is ``recovering`` until it
has caught up. What its application submits meanwhile, and right after, must be
ordered and delivered like any other update (L1: "every update a correct client
submits to a correct daemon is delivered"); only what the old incarnation had taken
in may go down with it (the checker's ``lost_with_home``, which the client submits
anew). The simulator's clients now attach to restarting replicas, in these tests and
in the random scenarios.
"""

from __future__ import annotations

import pytest

from prime.sim.cluster import US, SimCluster, SimConfig
from prime.sim.scenarios import random_scenario
from tests.sim.simutil import run, run_ok

RECOVERY_WINDOW_S = 0.3  # "during and right after the restart"


def recovering_stamps(cluster: SimCluster, rid: int, since_s: float) -> list[tuple[int, int, int]]:
    """Stamps the clients of ``rid`` submitted within RECOVERY_WINDOW_S of ``since_s``."""
    homed = {c.cid for c in cluster.clients if c.home == rid}
    lo, hi = int(since_s * US), int((since_s + RECOVERY_WINDOW_S) * US)
    return sorted(
        s for s, at in cluster.checker.submitted_at.items() if s[0] in homed and lo <= at < hi
    )


@pytest.mark.parametrize(("f", "k"), [(1, 0), (1, 1)], ids=["N4", "N6"])
@pytest.mark.parametrize("crash", [False, True], ids=["restart", "crash-restart"])
def test_updates_given_to_a_recovering_replica_are_delivered(f: int, k: int, crash: bool) -> None:
    """The restarted replica's client keeps eight updates in flight through the restart
    (closed loop: those the old incarnation held are submitted anew right after it, and
    every reply brings the next): every update it gives the recovering replica, before
    its jump included, is ordered, delivered at every correct replica and answered; the
    checker's L1 and L3 hold for them as for any other. (This passed before the fix of
    I12-7 too: without a faulty replica nothing was lost.)"""
    n = 3 * f + 2 * k + 1
    at = 0.8
    faults = {"crash": {n: 0.5}, "restart": {n: at}} if crash else {"restart": {n: at}}
    for seed in (1, 2):
        cfg = SimConfig(f=f, k=k, seed=seed, duration=2.0, clients=3, inflight=8, loss=0.01,
                        **faults)
        summary, cluster = run_ok(cfg)
        assert [c.home for c in cluster.clients] == [n, 1, 2], "the default homes: restarting first"
        stamps = recovering_stamps(cluster, n, at)
        assert len(stamps) >= 8, "its clients submitted while it recovered"
        jumped_at = cluster.checker.replicas[n].jumped_at_us
        assert jumped_at, "it recovered by a jump"
        before = [s for s in stamps if cluster.checker.submitted_at[s] < jumped_at[0]]
        assert len(before) >= 8, "updates given to it before it caught up"
        for stamp in stamps:
            assert stamp in cluster.checker.stamp_ordinal, stamp
            assert stamp in cluster.checker.replied_at, stamp
        assert summary["lost_with_home"] <= 8, "only what the old incarnation held"


def test_random_scenarios_attach_a_client_to_the_restarting_replica() -> None:
    """Every random scenario with a restart homes its first client at that replica."""
    seen = 0
    for seed in range(200):
        for f, k in ((1, 0), (1, 1)):
            cfg = random_scenario(seed, f=f, k=k)
            if cfg.restart:
                seen += 1
                homes = [c.home for c in SimCluster(cfg).clients]
                assert homes[0] in cfg.restart, (seed, f, k, homes)
    assert seen >= 40


OLD_TAIL = dict(f=1, k=1, duration=2.0, byz={1: "old-tail"}, clients=3, inflight=4,
                client_homes=[6, 2])


@pytest.mark.parametrize("old", [False, True], ids=["fixed", "legacy"])
@pytest.mark.parametrize("crash", [False, True], ids=["restart", "crash-restart"])
def test_faulty_leader_cannot_make_the_old_tail_eligible(old: bool, crash: bool) -> None:
    """Replica 6 restarts; the faulty leader (1) claims 40 requests of 6's old incarnation
    that 6 never sent and holds replica 5's row in the old incarnation, so its claim is
    the proof ARU of column 6 (docs/hardening.md I12-7). Before the fix ("OLDTAIL") no
    correct replica ever executed that ordinal or any after it: the updates 6's client
    gave it after the restart (and every later one) were never delivered (L1). Now the
    old tail is abandoned, the leader that withholds 6's new requests is replaced, and
    everything is delivered."""
    faults = {"crash": {6: 0.5}, "restart": {6: 0.8}} if crash else {"restart": {6: 0.6}}
    params = {"legacy": frozenset({"OLDTAIL"})} if old else {}
    summary, cluster = run(SimConfig(seed=1, params=params, **OLD_TAIL, **faults))
    attacker = cluster.nodes[1]
    assert attacker.claim is not None and attacker.frozen_row is not None, "the attack ran"
    restarted_client = cluster.clients[0].cid
    assert cluster.clients[0].home == 6
    if old:
        assert not summary["ok"]
        lost = [v for v in summary["violations"] if v.startswith("L1")]
        assert lost and f"({restarted_client}, 1," in lost[0], summary["violations"]
        return
    assert summary["ok"], f"{summary['violations']}\nreplay: {summary['replay']}"
    assert summary["view_changes"], "the leader that withheld 6's requests was replaced"
    at = 0.8 if crash else 0.6
    stamps = recovering_stamps(cluster, 6, at)
    assert stamps and all(s in cluster.checker.stamp_ordinal for s in stamps)


def test_reencode_with_a_restart_found_by_the_seeds() -> None:
    """Found once clients attached to restarting replicas: a reencode replica's split acks
    left 6's old requests with 3 correct acks, and its row made them eligible the moment
    three correct rows were in 6's new incarnation; every correct replica jumped over the
    blocked ordinals, and two updates 6's client gave it after its restart were never
    delivered anywhere (L1). Timing-dependent, so only the fixed core is asserted."""
    cfg = SimConfig(f=1, k=1, seed=1, duration=1.5, net="wan", loss=0.02, clients=3, inflight=8,
                    byz={3: "reencode"}, crash={6: 0.956}, restart={6: 1.18}, client_homes=[6])
    summary, cluster = run_ok(cfg)
    assert not cluster.checker.replicas[1].jumped_to, "no correct replica jumps over ordinals"
