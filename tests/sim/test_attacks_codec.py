"""Issue 11 items 7 and 11 in the simulator: the attacks' behaviours against the fixed core.

Run against the unfixed core (reported in the branch's notes), ``reencode`` stalled the
originator of every re-encoded request (no update of its clients delivered) and, relaying
REPLAYs, made every new leader look two-faced (hundreds of views pre-installed, the run
never recovered); ``catchup-flood`` drew about 1.4 MB per second from every correct
replica (checker R1).
"""

from __future__ import annotations

import pytest

from prime.sim.byzantine import Reencoder
from prime.sim.cluster import SimConfig
from tests.sim.simutil import run_ok


def test_reencoded_requests_do_not_split_acks() -> None:
    """Replica 3 relays every PO-Request re-encoded to half of the others and acks the
    re-encoded digest: the codec refuses the copies, and every originator's updates are
    delivered (before: replica 1's clients got nothing, acks split between two digests)."""
    summary, cluster = run_ok(SimConfig(f=1, k=0, seed=1, duration=2.0, byz={3: "reencode"}))
    assert cluster.malformed_dropped > 100, "the attack was mounted"
    assert min(summary["delivered"][str(r)] for r in (1, 2, 4)) == summary["submitted"] > 500


def test_relayed_reencoded_replays_do_not_depose_leaders(monkeypatch: pytest.MonkeyPatch) -> None:
    """The leader crashes; replica 3 relays the next leader's REPLAY re-encoded to all.
    One view change completes (before: 524 views pre-installed in 12 s, the cluster never
    ordered again after the crash)."""
    monkeypatch.setattr(Reencoder, "SPLIT_REQUESTS", False)  # the REPLAY half of the attack
    cfg = SimConfig(f=1, k=1, seed=3, duration=2.0, byz={3: "reencode"}, crash={1: 0.3})
    summary, cluster = run_ok(cfg)
    assert cluster.malformed_dropped >= 1, "the REPLAY was relayed re-encoded"
    assert [v["view"] for v in summary["view_changes"]] == [2]
    assert summary["view_changes"][0]["completed_s"] is not None


def test_reencode_as_leader_is_replaced() -> None:
    """As leader, the re-encoder also stops ordering: it is replaced, and the relayed
    re-encoded REPLAY of its successor does not depose that one too."""
    summary, _ = run_ok(SimConfig(f=1, k=0, seed=2, duration=2.0, byz={1: "reencode"}))
    assert [v["view"] for v in summary["view_changes"]] == [2]


def test_catchup_flood_draws_a_bounded_rate() -> None:
    """Replica 3 asks everyone for 64 ordinals back every 20 ms. Each correct replica's
    answers to it stay within the checker's R1 bound (before: ~1.4 MB in a second)."""
    summary, cluster = run_ok(SimConfig(f=1, k=0, seed=4, duration=3.0, byz={3: "catchup-flood"}))
    answered = cluster.checker.catchup_answers
    assert answered, "the flood was answered"
    assert max(answered.values()) <= cluster.cfg.catchup_answer_bytes_per_s_max
    assert summary["submitted"] > 500
