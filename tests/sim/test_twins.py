"""Twins: a Byzantine identity run as two instances that share its key, each talking to half
of the other replicas (so it equivocates in every role it has, without any hand-written attack).

With real quorums nothing breaks, for a twinned leader and a twinned non-leader; with the
quorums weakened by one (and our equivocation-evidence rule off, as in the original), the
same twins make correct replicas disagree, and the checker reports it.
"""

from __future__ import annotations

import pytest

from prime.sim.cluster import SimConfig
from tests.sim.simutil import run, run_ok

SEEDS = range(1, 9)
NO_EVIDENCE = {"legacy": frozenset({"EVIDENCE"})}


@pytest.mark.parametrize(("f", "k", "twin"), [(1, 0, 1), (1, 1, 1), (1, 0, 3), (1, 1, 4)],
                         ids=["N4-leader", "N6-leader", "N4-replica", "N6-replica"])
def test_twins_break_nothing(f: int, k: int, twin: int) -> None:
    """Safety and liveness hold with a twinned leader or non-leader, on WAN delays with loss
    and on a LAN."""
    for seed in SEEDS:
        for net, loss in (("wan", 0.03), ("lan", 0.0)):
            summary, _ = run_ok(SimConfig(f=f, k=k, seed=seed, duration=1.0, net=net, loss=loss, twins=[twin]))
            assert summary["liveness_checked"] and summary["twins"] == [twin]


def test_replica_that_missed_a_replay_catches_up_from_f_plus_1_records() -> None:
    """A twinned leader makes view changes follow one another; a replica that has not executed
    view 2's replay when view 3 starts cannot build complete state for view 3 until it gets the
    replayed ordinals, which have no commit certificate. It installs them from f+1 matching
    REPLAYED records. (Without them some of these seeds stalled in view 3 for good; which
    seeds need the path depends on timing, so the test runs seeds until one did, within a
    range: since an equivocator's acks count for each version they sign, fewer seeds stall.)"""
    filled = 0
    for seed in range(9, 41):
        summary, _ = run_ok(SimConfig(f=1, k=0, seed=seed, duration=1.0, net="wan", loss=0.03, twins=[1]))
        filled += sum(summary["replayed_filled"].values())
        if filled:
            break
    assert filled > 0, "no seed exercised the catch-up of replayed ordinals"


@pytest.mark.parametrize(("f", "k"), [(1, 0), (1, 1)], ids=["N4", "N6"])
def test_twinned_leader_safe_without_the_evidence_rule(f: int, k: int) -> None:
    """Even without our equivocation-evidence rule (the original's behaviour), a twinned
    leader cannot make correct replicas disagree: agreement, order and validity hold."""
    for seed in SEEDS:
        summary, _ = run(SimConfig(f=f, k=k, seed=seed, duration=1.0, net="wan", loss=0.05,
                                   twins=[1], params=NO_EVIDENCE))
        safety = [v for v in summary["violations"] if v.startswith("S")]
        assert not safety, (safety, summary["replay"])


@pytest.mark.parametrize(("f", "k"), [(1, 0), (1, 1)], ids=["N4", "N6"])
def test_twins_with_weakened_quorums_are_caught(f: int, k: int) -> None:
    """Quorums one short: the twinned leader's two halves each get their own pre-prepare
    ordered, and the checker reports the disagreement in several seeds."""
    caught = 0
    for seed in range(1, 13):
        summary, _ = run(SimConfig(f=f, k=k, seed=seed, duration=1.0, net="wan", loss=0.05,
                                   twins=[1], quorum_weaken_by=1, params=NO_EVIDENCE))
        caught += any(v.startswith("S1") for v in summary["violations"])
    assert caught >= 3, caught


SWEEP_FINDINGS = [
    # Found by stress sweeps; each stalled or crashed before its fix (session 2 of #6).
    dict(f=1, k=0, seed=16, net="wan", loss=0.03, twins=[1]),  # replay execution re-entered itself
    dict(f=1, k=0, seed=578, net="wan", loss=0.036, duplicate=0.05, clients=2, inflight=2,
         twins=[1]),  # a replica that executed the replay never sent its REPLAY_COMMIT
    dict(f=2, k=0, seed=529, net="wan", loss=0.002, duplicate=0.05, clients=2, inflight=2,
         byz={1: "equivocating-leader"}, twins=[2]),  # a silent new leader was never measured
    dict(f=1, k=0, seed=796, net="wan", loss=0.045, clients=2, inflight=2,
         twins=[1]),  # the new leader's matrix went backwards
    dict(f=1, k=1, seed=1843, net="lan", loss=0.043, duplicate=0.05, clients=2, inflight=2,
         crash={1: 0.81}, twins=[2]),  # two REPLAYs forwarded by everyone: a message storm
]


@pytest.mark.parametrize("case", SWEEP_FINDINGS, ids=lambda c: f"N{3 * c['f'] + 2 * c['k'] + 1}-seed{c['seed']}")
def test_runs_that_exposed_view_change_bugs_stay_fixed(case: dict) -> None:
    """Pinned runs from the sweeps. Timing-sensitive: a later change can make one of them
    pass even without its fix, so each fix also has a test of its own where one was feasible."""
    summary, _ = run_ok(SimConfig(duration=1.0, **case))
    assert summary["liveness_checked"]
