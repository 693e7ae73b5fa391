"""Issue 11's attacks on pre-ordering and reconciliation, run by their Byzantine behaviours in
the simulator (items 3, 4, 9, 10, 14). Each test runs the attack against the fixed core and
checks what the fix promises; each has a negative control that switches the fix off
(``Params.legacy``) and shows the attack breaking the core, so the behaviour is known to bite.
"""

from __future__ import annotations

from typing import Any

import pytest

from prime.sim.cluster import SimCluster, SimConfig
from tests.sim.simutil import run, run_ok


def legacy(*items: str) -> dict[str, Any]:
    return {"legacy": frozenset(items)}


def correct_jumps(summary: dict[str, Any], cluster: SimCluster) -> dict[str, int]:
    return {r: j for r, j in summary["jumps"].items() if int(r) in cluster.correct}


# ----------------------------------------------------------------- item 3: restart amnesia

AMNESIA = dict(f=1, k=1, duration=1.0, byz={4: "amnesia-equivocate"}, restart={2: 0.5})


def test_amnesia_equivocator_cannot_certify_a_second_version() -> None:
    """Replica 2 acked version A before it restarted; shown version B afterwards, it holds its
    ack, B is never certified, and every invariant (agreement first) holds."""
    for seed in (1, 2, 3):
        summary, cluster = run_ok(SimConfig(seed=seed, **AMNESIA))
        assert summary["liveness_checked"]
        assert cluster.nodes[2].replica.stats.amnesia_acks_withheld > 0, "the attack reached it"


def test_amnesia_equivocator_breaks_agreement_without_the_rule() -> None:
    """Negative control: with the restarted replica acking freely, B is certified as well and
    correct replicas execute different requests at one ordinal."""
    summary, _ = run(SimConfig(seed=1, params=legacy("AMNESIA"), **AMNESIA))
    assert any(v.startswith("S1 ") for v in summary["violations"]), summary["violations"]


EDGE = dict(f=1, k=1, duration=1.0, byz={4: "amnesia-edge"}, restart={2: 0.5})


@pytest.mark.parametrize("clean", [False, True], ids=["killed", "clean-stop"])
def test_amnesia_edge_cannot_certify_a_second_version(clean: bool) -> None:
    """Issue 12 item 7: replica 2's record is a reservation (killed) or exactly its acks
    (clean stop), and the equivocator's ids are acked moments before 2 stops: every ack
    that left is covered, 2 withholds every B, and every invariant holds."""
    for seed in (1, 2):
        summary, cluster = run_ok(SimConfig(seed=seed, clean_stop=[2] if clean else [], **EDGE))
        assert summary["liveness_checked"]
        attacker = cluster.nodes[4]
        assert len(attacker.pairs) >= 10, "ids signed up to the stop"  # type: ignore[attr-defined]
        assert cluster.nodes[2].replica.stats.amnesia_acks_withheld > 0, "the attack reached it"


def test_amnesia_edge_breaks_agreement_without_the_rule() -> None:
    """Negative control: with the restarted replica acking freely, a B is certified as well."""
    summary, _ = run(SimConfig(seed=1, clean_stop=[2], params=legacy("AMNESIA"), **EDGE))
    assert any(v.startswith("S1 ") for v in summary["violations"]), summary["violations"]


# ------------------------------------------------- item 4: acks naming unknown incarnations


def test_ack_junk_does_not_crowd_out_genuine_requests() -> None:
    """Replica 4 names 2 x po_window_max ids of every originator's later incarnations: correct
    replicas keep ordering (liveness checked) and hold at most its budget of such slots."""
    for seed in (1, 2):
        summary, cluster = run_ok(SimConfig(seed=seed, duration=1.0, byz={4: "ack-junk"}))
        assert summary["liveness_checked"]
        cap = cluster.params.po_unbacked_per_sender_max
        for r in sorted(cluster.correct):
            po = cluster.nodes[r].replica.po
            assert len(po.unbacked_by[4]) <= cap
            assert cluster.nodes[r].replica.collection_sizes()["po_history"] <= cap + 100
            assert cluster.nodes[r].replica.stats.dropped["po_request:full"] == 0


def test_ack_junk_stalls_ordering_without_per_sender_charging() -> None:
    """Negative control: the junk fills every originator's slots and genuine requests are
    refused (``po_request:full``); correct clients go unanswered."""
    summary, cluster = run(SimConfig(seed=1, duration=1.0, byz={4: "ack-junk"}, params=legacy("JUNK")))
    assert any(v.startswith("L1 ") for v in summary["violations"]), summary["violations"]
    assert all(cluster.nodes[r].replica.stats.dropped["po_request:full"] > 0 for r in cluster.correct)


# ------------------------------------------------------------------- item 9: split acks


@pytest.mark.parametrize(("f", "k"), [(1, 0), (1, 1)], ids=["N4", "N6"])
def test_split_ack_replicas_execute_ordinal_by_ordinal(f: int, k: int) -> None:
    """Replica 4 shows version A of each request (and its ack of A) to the larger half and B
    to the smaller one: the smaller half gets the certificate with reconciliation and keeps
    executing ordinal by ordinal, no jump, every correct replica delivering the same."""
    for seed in (1, 2, 3):
        summary, cluster = run_ok(SimConfig(f=f, k=k, seed=seed, duration=1.0, byz={4: "split-ack"}))
        assert correct_jumps(summary, cluster) == {}, summary["replay"]
        delivered = {summary["delivered"][str(r)] for r in cluster.correct}
        assert len(delivered) == 1 and delivered.pop() > 0


def test_split_ack_makes_the_smaller_half_jump_without_certificate_shipping() -> None:
    """Negative control: without the certifying acks, the smaller half never executes the
    originator's request, blocks, and advances only by a jump (the checker says ok).
    Request fetch is off too: it would bring the certificate on demand instead."""
    cfg = SimConfig(
        f=1, k=1, seed=1, duration=1.0, byz={4: "split-ack"}, params=legacy("CERTSHIP", "FETCH")
    )
    summary, cluster = run(cfg)
    assert correct_jumps(summary, cluster), "some correct replica advanced only by a jump"


# --------------------------------------------------------------- item 10: junk recon parts

RECON_JUNK = dict(duration=3.0, byz={4: "recon-junk"}, clients=2, inflight=2)


def test_recon_junk_is_bounded_per_sender() -> None:
    """Replica 4 sends junk parts all run long: each correct replica holds at most its budget
    of parts (and bytes) from it, and ordering is unaffected."""
    _, cluster = run_ok(SimConfig(seed=1, **RECON_JUNK))
    p = cluster.params
    for r in sorted(cluster.correct):
        recon = cluster.nodes[r].replica.recon
        assert len(recon.held_by[4]) <= p.recon_parts_per_sender_max
        assert recon.bytes_by[4] <= p.recon_bytes_per_sender_max
        assert recon.collection_sizes()["recon_parts"] <= p.recon_parts_per_sender_max + 50


def test_recon_junk_grows_without_bound_without_per_sender_budgets() -> None:
    """Negative control: every junk part is kept; the held parts grow with the run's length."""
    sizes = []
    for duration in (1.5, 3.0):
        cfg = SimConfig(seed=1, **{**RECON_JUNK, "duration": duration}, params=legacy("JUNK"))
        _, cluster = run(cfg)
        sizes.append(cluster.nodes[1].replica.recon.collection_sizes()["recon_parts"])
    assert sizes[0] > 1000 and sizes[1] > 1.5 * sizes[0], sizes


# ------------------------------------------------------------ item 14: early garbage parts

# f=3: replicas 2, 3 and 4 send garbage parts of every request as soon as they see it; replica
# 8's requests miss replica 10 for 0.4 s, so 10 rebuilds them from the parts of the designated
# senders 1-7: three garbage parts first, then four good ones (35 subsets, the good one last).
EARLY_GARBAGE = dict(
    f=3, k=0, duration=1.0, clients=5, partitions=["8>10@0.1-0.5"],
    byz={2: "early-garbage", 3: "early-garbage", 4: "early-garbage"},
)


def test_early_garbage_parts_do_not_starve_the_rebuild() -> None:
    summary, cluster = run_ok(SimConfig(seed=1, **EARLY_GARBAGE))
    assert correct_jumps(summary, cluster) == {}, summary["replay"]
    replica = cluster.nodes[10].replica
    assert replica.stats.recon_rebuilt > 0
    assert replica.recon.bad_senders == {2, 3, 4}, "the garbage senders are convicted"


def test_early_garbage_parts_starve_the_first_32_subsets() -> None:
    """Negative control: trying only the first 32 subsets in arrival order never reaches the
    good one; replica 10 rebuilds nothing and advances only by a jump. Request fetch is
    off too: it would fetch the whole request from a peer instead."""
    summary, cluster = run(SimConfig(seed=1, params=legacy("REBUILD", "FETCH"), **EARLY_GARBAGE))
    assert summary["liveness_checked"]
    assert cluster.nodes[10].replica.stats.recon_rebuilt == 0
    assert "10" in correct_jumps(summary, cluster)
