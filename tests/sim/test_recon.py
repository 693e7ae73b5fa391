"""Reconciliation under the RECON attack, erasure-coded and whole, and with garbage parts."""

from __future__ import annotations

import pytest

from prime.sim.cluster import SimConfig
from tests.sim.simutil import run_ok

SEEDS = range(1, 9)


def _attacker_stamps(cluster, attacker: int, replica: int) -> set[tuple[int, int, int]]:
    """Client stamps of the attacker's own clients delivered at ``replica``, counting those
    covered by a state transfer (a jump over the ordinal that decided them) as delivered."""
    homes = {c.cid for c in cluster.clients if c.home == attacker}
    checker = cluster.checker
    rec = checker.replicas[replica]
    jump = max(rec.jumped_to, default=0)
    covered = {s for s, g in checker.stamp_ordinal.items() if g <= jump}
    return {s for s in rec.delivered_stamps | covered if s[0] in homes}


@pytest.mark.parametrize("erasure", [True, False], ids=["erasure", "whole"])
@pytest.mark.parametrize(("f", "k"), [(1, 0), (1, 1)], ids=["N4", "N6"])
def test_recon_attack_everything_certified_is_delivered(f: int, k: int, erasure: bool) -> None:
    """With replica 1 withholding its requests from the f+k highest replicas, every update of
    every correct replica and every update the attacker got certified reaches all correct replicas."""
    for seed in SEEDS:
        cfg = SimConfig(
            f=f, k=k, seed=seed, duration=1.0, byz={1: "recon"}, loss=0.01 * (seed % 3),
            params={"use_erasure_codes": erasure},
        )
        summary, cluster = run_ok(cfg)
        assert summary["liveness_checked"], summary["liveness_skipped_reason"]
        deprived = range(2 * f + k + 2, cluster.n + 1)  # never sent the attacker's requests
        reference = _attacker_stamps(cluster, 1, 2)
        assert reference, "the attacker's clients got updates ordered"
        for r in sorted(cluster.correct):
            assert _attacker_stamps(cluster, 1, r) == reference, (r, cfg.replay_command())
        rebuilt = sum(cluster.nodes[r].replica.stats.recon_rebuilt for r in deprived)
        if erasure:
            assert rebuilt > 0, "the deprived replicas rebuilt the attacker's requests from parts"
        else:
            assert rebuilt == 0 and summary["recon"]["sent"] > 0


@pytest.mark.parametrize(("f", "k", "bad", "good_parts"), [(1, 0, 3, 1), (1, 1, 4, 2)], ids=["N4", "N6"])
def test_garbage_parts_from_a_designated_sender_break_nothing(f: int, k: int, bad: int, good_parts: int) -> None:
    """A recon attacker plus a designated sender sending garbage (two Byzantine replicas, more
    than f, so only safety is promised): garbage is never rebuilt into a request. With N=6 two
    correct designated senders remain, f+1 good parts, and the requests are still rebuilt."""
    for seed in SEEDS:
        cfg = SimConfig(f=f, k=k, seed=seed, duration=1.0, byz={1: "recon", bad: "bad-parts"})
        summary, cluster = run_ok(cfg)
        assert summary["recon"]["bad_rebuilds"] > 0, "garbage parts were received and refused"
        if good_parts >= f + 1:
            assert summary["recon"]["rebuilt"] > 0


@pytest.mark.parametrize(("f", "k"), [(1, 0), (1, 1)], ids=["N4", "N6"])
def test_bad_parts_alone_keep_liveness(f: int, k: int) -> None:
    """With f=1 Byzantine designated sender sending garbage (and loss forcing reconciliation),
    every invariant, liveness included, holds."""
    for seed in SEEDS:
        summary, _ = run_ok(SimConfig(f=f, k=k, seed=seed, duration=1.0, byz={2: "bad-parts"}, loss=0.03))
        assert summary["liveness_checked"]


def test_erasure_coding_halves_reconciliation_bytes() -> None:
    """Erasure-coded recon sends about 1/(f+1) of the bytes of whole-request recon (N=4, f=1)."""
    totals = {}
    for erasure in (True, False):
        cfg = SimConfig(seed=3, duration=1.0, byz={1: "recon"}, payload_bytes=300,
                        params={"use_erasure_codes": erasure})
        summary, _ = run_ok(cfg)
        totals[erasure] = summary["recon"]["bytes_sent"] / summary["recon"]["sent"]
    ratio = totals[True] / totals[False]
    assert 0.45 < ratio < 0.65, ratio


def test_daemon_markers_are_not_client_updates() -> None:
    """Sanity for the helper above: NEW_INCARNATION markers are not counted as client stamps."""
    summary, cluster = run_ok(SimConfig(seed=1, duration=0.3, clients=1, inflight=1))
    rec = cluster.checker.replicas[1]
    assert rec.delivered_stamps and all(s[0] > cluster.n for s in rec.delivered_stamps)
