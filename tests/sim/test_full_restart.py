"""A whole cluster restarts at once (every daemon stopped and started again).

Every replica comes back recovering (docs/hardening.md I11-3): it has forgotten the
acks it sent and may ack again only what its earlier life cannot have acked. With
the record the driver keeps (``A.Persist``: per originator, the highest incarnation
ever acked) the new incarnations are known to be new, and the cluster orders again.
With the record lost each replica must treat every incarnation up to its own as
possibly acked before, waits for the others to certify, and nobody ever does: the
daemon did exactly this before it kept the record.

The checker's S1 compares every life's deliveries at one ordinal, and a cluster that
lost all its state begins its history again at ordinal 1, so these runs check only
what holds across such a restart: every replica orders again, the same thing."""

from __future__ import annotations

import pytest

from prime.sim.cluster import SimConfig
from tests.sim.simutil import run


@pytest.mark.parametrize(("f", "k"), [(1, 0), (1, 1)], ids=["N4", "N6"])
def test_a_whole_cluster_restarted_at_once_orders_again(f: int, k: int) -> None:
    n = 3 * f + 2 * k + 1
    restart = {r: 1.5 for r in range(1, n + 1)}
    _, cluster = run(SimConfig(f=f, k=k, seed=11, duration=4, restart=restart))
    arus = [cluster.nodes[r].replica.ord.aru for r in range(1, n + 1)]
    assert min(arus) > 50, arus
    withheld = [cluster.nodes[r].replica.stats.amnesia_acks_withheld for r in range(1, n + 1)]
    assert max(withheld) < 100, withheld  # only PO ids an earlier life had acked
    # the same thing: replicas at the same ordinal hold the same application state
    by_aru: dict[int, set[str]] = {}
    for r in range(1, n + 1):
        by_aru.setdefault(cluster.nodes[r].replica.ord.aru, set()).add(cluster.apps[r].digest())
    assert all(len(digests) == 1 for digests in by_aru.values()), by_aru
    assert max(len(cluster.apps[r].data) for r in range(1, n + 1)) > 0


def test_without_the_record_a_whole_cluster_restart_waits_for_good() -> None:
    """Negative control: the record lost (keep_disk=False): no replica orders anything."""
    restart = {r: 1.5 for r in range(1, 5)}
    _, cluster = run(SimConfig(f=1, k=0, seed=11, duration=4, restart=restart, keep_disk=False))
    assert max(cluster.nodes[r].replica.ord.aru for r in range(1, 5)) <= 1  # (an empty first ordinal)
    assert min(cluster.nodes[r].replica.stats.amnesia_acks_withheld for r in range(1, 5)) > 1000
