"""Request fetch in the simulator (prime/core/fetch.py, issue 11 item 9).

Seeds the checker's rule L2 caught before the fetch: plain message loss, no Byzantine
replica, no crash and no partition. A replica lost PO-Acks (or the reconciliation of a
request) that nobody sends again once the others executed the request, stayed blocked on
an ordered ordinal and advanced by state transfer. With the fetch it asks a peer and
executes ordinal by ordinal; with the fetch switched off (``legacy={"FETCH"}``) the jump
comes back.
"""

from __future__ import annotations

import dataclasses

import pytest

from prime.sim.scenarios import random_scenario
from tests.sim.simutil import run, run_ok

# (f, k, seed) of random_scenario draws with loss only, failing L2 without the fetch: the
# first such seeds (54 and 120 until the simulator ran same-instant ticks first, issue 12;
# N=4 244 until the ping answer was rate-limited, issue 14, when that run lost no ack
# the fetch had to bring: 301 is the next seed from 244 that needs it).
LOSS_ONLY = [(1, 0, 301), (1, 1, 413)]


@pytest.mark.parametrize(("f", "k", "seed"), LOSS_ONLY, ids=["N4-301", "N6-413"])
def test_lost_acks_are_fetched_without_a_jump(f: int, k: int, seed: int) -> None:
    cfg = random_scenario(seed, f=f, k=k)
    assert cfg.loss and not (cfg.byz or cfg.twins or cfg.crash or cfg.restart or cfg.partitions)
    summary, cluster = run_ok(cfg)
    jumps = {r: cluster.nodes[r].replica.stats.jumps for r in cluster.correct}
    assert not any(jumps.values()), (jumps, summary["replay"])
    assert sum(cluster.nodes[r].replica.fetch.asks_sent for r in cluster.correct) > 0
    off = dataclasses.replace(cfg, params={**cfg.params, "legacy": frozenset({"FETCH"})})
    summary_off, _ = run(off)
    assert any(v.startswith("L2 ") for v in summary_off["violations"]), summary_off["violations"]


def test_partitioned_replica_fetches_while_filling_from_certificates() -> None:
    """Replica 2 is cut off for 0.3 s and catches up from certificates, lacking the
    requests of every ordinal it fills. Fetching one ordinal's requests per round trip,
    and not filling the next held certificate once they came, it executed one ordinal
    per catch-up period and never caught up (L1); now it does."""
    cfg = random_scenario(18, f=1, k=0)
    assert cfg.partitions and not cfg.byz
    summary, cluster = run_ok(cfg)
    assert cluster.nodes[2].replica.fetch.asks_sent > 0
