"""The checker's liveness rules of issue 11 item 16, and their negative controls.

L1 alone counted the updates a replica jumped over as covered, and looked only at the
end of the run. L2: a correct replica never crashed, restarted or partitioned executes
every ordinal (no state transfer). L3: a correct replica's clients get their replies
within ``reply_bound`` while faults are active too, and an update decided but never
delivered at its home (jumped over) is never answered.
"""

from __future__ import annotations

from prime import msgs
from prime.sim.cluster import Node, SimCluster, SimConfig
from prime.wire import Envelope
from tests.sim.simutil import run_ok


class JumpOnly(Node):
    """A correct replica that never hears the ordering phase (pre-prepares, prepares,
    commits) or catch-up answers: it can advance only by jumping to the certificates
    its peers broadcast periodically. The negative control of L2 and L3."""

    def incoming(self, via: int, env: Envelope) -> bool:
        msg = env.msg
        if isinstance(msg, (msgs.PrePrepare, msgs.Prepare, msgs.Commit, msgs.Replayed)):
            return False
        return not (isinstance(msg, msgs.OrdCert) and msg.flag == 2)


def test_checker_flags_a_replica_that_advances_only_by_jumps() -> None:
    """Replica 4 (correct, never crashed, restarted or partitioned, home of a client) only
    jumps. L1 alone reports nothing (jumped-over updates count as covered); L2 flags the
    jumps and L3 its client's updates that were decided but never answered."""
    cfg = SimConfig(f=1, k=0, seed=5, duration=3.0, clients=4, inflight=2)
    cluster = SimCluster(cfg)
    old = cluster.nodes[4]
    cluster.nodes[4] = JumpOnly(cluster, 4, old.replica, old.signer)
    summary = cluster.run()
    assert summary["jumps"].get("4", 0) >= 1
    assert summary["delivered"]["4"] < summary["submitted"] // 2
    kinds = {v.split()[0] for v in summary["violations"]}
    assert kinds == {"L2", "L3"}, summary["violations"]
    assert any(v.startswith("L2 r4 ") for v in summary["violations"])
    assert any(v.startswith("L3 ") and "r4's clients" in v for v in summary["violations"])


def test_checker_flags_a_client_waiting_too_long() -> None:
    """L3 bites on delay alone: with the bound set below what this run's clients wait
    (a lossy WAN), the late updates are reported; with the default bound, none."""
    cfg = SimConfig(f=1, k=0, seed=8, duration=1.0, net="wan", loss=0.02, clients=2, inflight=2)
    summary, _ = run_ok(cfg)
    assert summary["reply_delay_max_s"] > 0.05
    tight = SimConfig(**{**cfg.__dict__, "reply_bound": summary["reply_delay_max_s"] / 2})
    flagged = SimCluster(tight).run()
    assert not flagged["ok"] and all(v.startswith("L3 ") for v in flagged["violations"])
