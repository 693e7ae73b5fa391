"""Replicas restarted one after another, each back and ordering before the next goes.

At most one replica is ever down, so a Byzantine fault-tolerant system must stay live
however many such restarts it sees over its lifetime. The restart amnesia rule (docs/
hardening.md I11-3) makes a restarted replica withhold its ack of every PO id an earlier
life might have acked, until ``2f+k+1`` *others* certify it. Two such gates over the same
PO ids at N = 4 leave only two replicas to ack them, one short of the certificate, and
the originator stalls for good. So what "might have acked" covers decides liveness.

Before issue 12's fix it covered, per originator, every sequence number up to
``amnesia_seq + po_window_max`` (4000 beyond what had executed): a gate that lasted until
the originator sent 4000 more PO-Requests (a replica restarted on Monday still withheld
on Tuesday), and the second restart stalled every originator but the last restarted
one. Now the replica's record (``A.Persist``) is a write-ahead reservation a little
ahead of what it acked (about half a second of acks at the originator's recent rate),
cut back to what was acked once the originator is idle, and exact after a clean stop:
the gate holds at most that chunk, and ends once the originator moved past it.

(The simulator's checker counts every restarted replica as faulty for the whole run,
so it calls these runs out of its fault model and checks no liveness: the tests assert
the deliveries themselves.)"""

from __future__ import annotations

import pytest

from prime.core.preorder import RESERVE_MIN
from prime.sim.cluster import US, SimCluster, SimConfig
from tests.sim.simutil import run

SECOND_RESTART_S = 2.5


def replied_after(cluster: SimCluster, after_s: float) -> dict[int, float]:
    """Per client with no reply after ``after_s``: its last reply (virtual s)."""
    after = int(after_s * US)
    stalled: dict[int, float] = {}
    for client in cluster.clients:
        replies = [at for stamp, at in cluster.checker.replied_at.items() if stamp[0] == client.cid]
        if not any(at > after for at in replies):
            stalled[client.cid] = max(replies, default=0) / US
    return stalled


def open_gates(cluster: SimCluster, rid: int) -> list[int]:
    """The originators replica ``rid``'s amnesia gate still withholds ids of."""
    po = cluster.nodes[rid].replica.po
    return [s for s in range(1, cluster.n + 1) if po.amnesia_gate_open(s)]


def test_two_sequential_restarts_leave_every_correct_client_live() -> None:
    cfg = SimConfig(f=1, k=0, seed=3, duration=SECOND_RESTART_S + 1.5, clients=3, inflight=4,
                    restart={2: 1.0, 3: SECOND_RESTART_S}, liveness_bound=3.0)
    _, cluster = run(cfg)
    # Replica 2 was back and ordering before 3 restarted: it is not down at that point.
    assert cluster.checker.replicas[2].jumped_at_us, "replica 2 recovered by a jump"
    assert cluster.checker.replicas[2].jumped_at_us[0] < SECOND_RESTART_S * US
    after = int((SECOND_RESTART_S + 0.5) * US)
    for client in cluster.clients:
        replies = [at for stamp, at in cluster.checker.replied_at.items() if stamp[0] == client.cid]
        assert any(at > after for at in replies), (
            f"client {client.cid} (home {client.home}) got no reply after "
            f"{after / US:g} s; last at {max(replies, default=0) / US:g} s"
        )


Stop = tuple[list[tuple[int, int]], tuple[tuple[int, int, int, int], ...]]


def watch_restarts(monkeypatch: pytest.MonkeyPatch) -> dict[int, Stop]:
    """Per restarted replica: what its earlier life acked (per originator, the highest
    PO id) and the record the new life was given (its gate)."""
    seen: dict[int, Stop] = {}
    restart = SimCluster._restart

    def watched(self: SimCluster, rid: int) -> None:
        old = self.nodes[rid].replica
        restart(self, rid)
        seen[rid] = (list(old.po.acked_hi), self.nodes[rid].replica.acked_record or ())

    monkeypatch.setattr(SimCluster, "_restart", watched)
    return seen


def beyond_acked(stop: Stop) -> list[int]:
    """Per originator, how many ids the record covers beyond what the earlier life acked."""
    acked, record = stop
    return [entry[1] - acked[s][1] if entry[0] == acked[s][0] else -1 for s, entry in enumerate(record) if s]


def test_crash_restarts_close_together_stall_nobody_once_the_reservation_is_passed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Crash restarts: the record holds a reservation, not the exact acks, so replica 2
    comes back at 1.0 s withholding up to a chunk of ids per originator beyond what it
    had acked (here some tens; at most po_window_max). The originators go on without it
    and pass that chunk within a few tenths of a second; nothing of 2's gate is left when
    replica 3 restarts 0.7 s after 2, and every client gets replies again within a second.
    Before the fix 2's gate held 4000 ids per originator and every client but 3's
    stalled for good."""
    stops = watch_restarts(monkeypatch)
    cfg = SimConfig(f=1, k=0, seed=5, duration=3.5, clients=3, inflight=4,
                    restart={2: 1.0, 3: 1.7}, liveness_bound=3.0)
    _, cluster = run(cfg)
    for rid in (2, 3):
        ahead = beyond_acked(stops[rid])
        assert min(ahead) >= 0 and max(ahead) > 0, (rid, ahead)  # a gate, over every ack
        assert max(ahead) <= 4 * RESERVE_MIN, (rid, ahead)  # about half a second of acks
    assert not replied_after(cluster, 2.7), replied_after(cluster, 2.7)
    assert open_gates(cluster, 2) == [] and open_gates(cluster, 3) == [], "the gates ended"


def test_an_idle_originator_leaves_no_gate_for_later_restarts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Monday and Tuesday: the clients stop at 1.0 s; replica 2 crash-restarts at 2.5 s and
    3 at 4.0 s, with nothing sent in between; the load comes back at 5.0 s. An idle
    originator's reservation was cut back to what was acked (the retransmission tick
    writes it), so neither gate covers an id still to be sent, and every client gets
    replies. Without the cut-back both gates hold the same chunk and the originators
    stall when their clients come back; before the fix both held 4000 ids."""
    stops = watch_restarts(monkeypatch)
    cfg = SimConfig(f=1, k=0, seed=8, duration=1.0, clients=3, inflight=4,
                    restart={2: 2.5, 3: 4.0}, liveness_bound=1.0)
    _, cluster = run(cfg)
    cluster.run_until(5 * US)
    assert all(beyond_acked(stops[rid]) == [0] * cluster.n for rid in (2, 3)), stops
    cluster.resume_load(1.0)
    cluster.run_until(7 * US)
    assert not replied_after(cluster, 5.5), replied_after(cluster, 5.5)


def test_clean_stops_leave_an_empty_gate(monkeypatch: pytest.MonkeyPatch) -> None:
    """Replicas 2 and 3 stop cleanly (the daemon's SIGTERM: the exact record is written)
    and come back 0.7 s apart, under load. Each new life's record is exactly what its
    earlier life acked, all of which the others certify without it: no id still to be
    sent is withheld, and nothing stalls. (Before the fix, with no clean stop, the same
    restarts stalled client 7 from 2.05 s on.)"""
    stops = watch_restarts(monkeypatch)
    cfg = SimConfig(f=1, k=0, seed=3, duration=3.0, clients=3, inflight=4,
                    restart={2: 1.0, 3: 1.7}, clean_stop=[2, 3], liveness_bound=3.0)
    _, cluster = run(cfg)
    for rid in (2, 3):
        assert beyond_acked(stops[rid]) == [0] * cluster.n, (rid, stops[rid])
        assert open_gates(cluster, rid) == [], rid
    assert not replied_after(cluster, 2.2), replied_after(cluster, 2.2)
