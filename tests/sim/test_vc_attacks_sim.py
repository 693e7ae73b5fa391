"""The view-change attacks of issue 11 as simulator behaviours (``prime.sim.byzantine``):
each runs through a view change (the leader crashes) and every invariant still holds.

With the previous code, ``vc-flood`` stalled view 2 for good (no replica could combine a
proof once the made-up shares filled the table) and ``replay-floor`` broke the history
bound (an assertion in the core). The random seeds draw these behaviours too.
"""

from __future__ import annotations

import pytest

from prime.sim.cluster import SimConfig
from tests.sim.simutil import run_ok


@pytest.mark.parametrize("behaviour", ["pc-set-overflow", "stale-certs", "replay-floor", "vc-flood"])
@pytest.mark.timeout(300)
def test_view_change_attack_survived(behaviour: str) -> None:
    cfg = SimConfig(f=1, k=1, seed=3, duration=2.0, byz={3: behaviour}, crash={1: 0.5})
    summary, cluster = run_ok(cfg)
    (vc,) = summary["view_changes"]
    assert vc["view"] == 2 and vc["completed_s"] is not None
    dropped = cluster.nodes[2].replica.stats.dropped
    if behaviour == "vc-flood":
        assert dropped["vc_partial_sig:sender_full"] > 0 and dropped["rb:seq"] > 0
    if behaviour == "replay-floor":
        assert dropped["report:invalid"] >= 1
