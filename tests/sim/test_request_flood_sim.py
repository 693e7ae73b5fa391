"""A Byzantine originator flooding validly signed PO-Requests (issue 14 item 1), in the
simulator: ``request-flood`` sends every request to everyone, ``gapped-flood`` each to
a different random subset of the others, as a real flooder does whose targets' queues
fill at different moments (with the daemons, that flood and not the contiguous one
cost the others' throughput). Every correct client's update is still delivered (the
checker's L1, with its latency bound), nobody suspects the correct leader, and what
the correct replicas hold of the flooder stays within its window."""

from __future__ import annotations

import pytest

from prime.sim.cluster import SimConfig
from prime.sim.scenarios import random_scenario
from tests.sim.simutil import run_ok


@pytest.mark.parametrize("behaviour", ["request-flood", "gapped-flood"])
@pytest.mark.parametrize(("f", "k"), [(1, 0), (1, 1)], ids=["N4", "N6"])
def test_a_flooding_originator_leaves_the_correct_clients_live(behaviour: str, f: int, k: int) -> None:
    n = 3 * f + 2 * k + 1
    cfg = SimConfig(f=f, k=k, seed=1, duration=3.0, clients=3, inflight=2, byz={n: behaviour})
    summary, cluster = run_ok(cfg)
    for r in cluster.correct:
        replica = cluster.nodes[r].replica
        assert replica.suspect.suspicions == 0 and replica.view == 1, (r, behaviour)
        held = len(replica.po.history[n])  # the flooder's PO slots this replica keeps
        assert held <= replica.p.po_window_max, (r, held)


def test_random_scenarios_draw_the_gapped_flood() -> None:
    """It takes the place of about half the request-flood draws (from a generator of
    its own, so the other draws of every seed stay what they were)."""
    drawn = {b for seed in range(400) for b in random_scenario(seed, f=1, k=0).byz.values()}
    assert {"request-flood", "gapped-flood"} <= drawn
