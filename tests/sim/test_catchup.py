"""Catch-up, partition recovery and restart in the simulator (docs/protocol.md section 2.7; L5-L7).

In every run the checker also compares the example key-value application's state at
all correct replicas at the end (prime.app.kv): it must be equal, state transfers
included.
"""

from __future__ import annotations

import pytest

from prime import msgs
from prime.app.kv import KvStore, put
from prime.msgs import UpdateKind
from prime.sim.cluster import SimCluster, SimConfig
from tests.harness import Harness
from tests.sim.simutil import run_ok


@pytest.mark.parametrize(("f", "k", "lonely"), [(1, 0, 4), (1, 1, 6)], ids=["N4", "N6"])
def test_partitioned_replica_rejoins_via_state_transfer(f: int, k: int, lonely: int) -> None:
    """(a) A replica cut off while the rest progress gets the notice after healing, takes
    the application state from a peer, and then delivers the same ordinals as everyone."""
    for seed in range(1, 4):
        rest = ",".join(str(r) for r in range(1, 3 * f + 2 * k + 2) if r != lonely)
        cfg = SimConfig(f=f, k=k, seed=seed, duration=2.5, partitions=[f"{lonely}|{rest}@0.2-1.5"])
        summary, cluster = run_ok(cfg)
        rec = cluster.checker.replicas[lonely]
        assert rec.jumped_to, "far behind: it jumped and was told to transfer state"
        assert summary["app"]["state_transfers"] >= 1 and summary["app"]["waiting"] == []
        assert rec.next_ordinal == cluster.checker.replicas[1].next_ordinal
        assert len(set(summary["app"]["kv_keys"].values())) == 1


@pytest.mark.parametrize(("f", "k"), [(1, 0), (1, 1)], ids=["N4", "N6"])
def test_restart_with_empty_state_rejoins(f: int, k: int) -> None:
    """(c) A replica restarts with empty state and a new incarnation: its NEW_INCARNATION is
    ordered (L7), it catches up and then orders new updates of its own again."""
    n = 3 * f + 2 * k + 1
    for seed in range(1, 4):
        summary, cluster = run_ok(SimConfig(f=f, k=k, seed=seed, duration=2.0, restart={n: 0.6}))
        assert summary["incarnations"][str(n)] >= 2
        announced = [
            (g, u) for g, ups in cluster.checker.decided.items() for u in ups
            if u.kind == UpdateKind.NEW_INCARNATION and u.client == n and u.incarnation >= 2
        ]
        assert announced, "the new incarnation was ordered"
        replica = cluster.nodes[n].replica
        assert replica.po.po_seq_executed[1] >= 1 and replica.ord.aru > announced[0][0]


def test_restarted_leader_is_replaced_and_rejoins() -> None:
    """The leader restarts: the others change view, and it rejoins the new view."""
    summary, cluster = run_ok(SimConfig(seed=2, duration=2.0, restart={1: 0.5}))
    assert summary["view_changes"] and len({n.replica.view for n in cluster.nodes.values()}) == 1


def test_long_run_with_partitions_and_restarts_stays_bounded() -> None:
    """(d) Repeated partitions and restarts over a long run: the core's collections stay bounded."""
    parts = [f"3|1,2,4,5,6@{t}-{t + 0.8}" for t in (1, 5, 9, 13)]
    cfg = SimConfig(f=1, k=1, seed=4, duration=16.0, loss=0.01, clients=2, inflight=2,
                    partitions=parts, restart={5: 3.0})
    summary, cluster = run_ok(cfg)
    cfg2 = SimConfig(f=1, k=1, seed=5, duration=16.0, clients=2, inflight=2, restart={6: 11.0})
    run_ok(cfg2)
    for rid, node in cluster.nodes.items():
        sizes = node.replica.collection_sizes()
        assert sizes["ord_history"] <= 10 and sizes["po_history"] <= 200, (rid, sizes)
        assert sizes["recent_certs"] <= 64 and sizes["fills"] <= 64, (rid, sizes)
        assert sizes["tat_challenges"] <= 64 and sizes["recon_slots"] <= 50, (rid, sizes)
    assert summary["submitted"] > 500


def test_application_check_bites() -> None:
    """The end-of-run application comparison reports a replica whose state diverged."""
    cluster = SimCluster(SimConfig(seed=1, duration=0.5))
    cluster.run()
    assert cluster.app_violations() == []
    cluster.apps[2].data[b"x"] = b"tampered"
    assert cluster.app_violations() and "differ" in cluster.app_violations()[0]


def test_kv_applies_each_stamp_once_and_transfers_state() -> None:
    """The application contract: duplicates are skipped; during a transfer nothing is applied
    until the peer's state as of the marker's ordinal is taken."""
    a, b = KvStore(1), KvStore(2)
    u1 = msgs.Update(5, 1, 1, 0, put(b"k", b"v1"))
    u2 = msgs.Update(5, 1, 2, 0, put(b"k", b"v2"))
    marker = msgs.Update(2, 1, 3, int(UpdateKind.CLIENT_STATE_TRANSFER), b"")
    a.apply(1, (u1, u1))
    assert a.data == {b"k": b"v1"} and a.duplicates == 1
    b.on_state_transfer_needed(1)
    assert b.apply(2, (u2, marker)) == (2, 2)
    a.apply(2, (u2, marker))  # a snapshots the state as of ordinal 2 for replica 2
    b.restore(a.snapshots[(2, 2)])
    assert b.data == a.data == {b"k": b"v2"} and not b.transferring


@pytest.mark.parametrize("legacy", [False, True])
def test_h8_far_future_incarnation_refused(legacy: bool) -> None:
    """H8: a PO-Request claiming an incarnation far ahead of our clock is dropped; the C code
    accepts it and resets the originator's counters to that incarnation."""
    h = Harness(me=4, legacy=frozenset({"H8"}) if legacy else frozenset())
    far = 10**6
    h.feed(h.po_request(2, 1, [h.update(h.n + 1, 1)], inc=far))
    if legacy:
        assert h.replica.po.aru[2] == (far, 1)
    else:
        assert h.replica.po.aru[2] == (0, 0)
        assert h.replica.stats.dropped["po_request:incarnation_ahead"] == 1
