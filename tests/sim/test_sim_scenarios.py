"""Hand-written simulator scenarios: faults, Byzantine behaviours, negative controls, replay."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from prime import msgs, wire
from prime.auth import KeyedHashScheme, Signer, Verifier
from prime.sim.cluster import SimConfig
from tests.sim.simutil import run, run_ok

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("f", "k"), [(1, 0), (1, 1)])
def test_fault_free_everyone_delivers_everything(f: int, k: int) -> None:
    """Fault-free: all replicas deliver every submitted update, in the same order."""
    summary, cluster = run_ok(SimConfig(f=f, k=k, seed=11, duration=1.0))
    assert summary["submitted"] > 50 and summary["liveness_checked"]
    counts = set(summary["delivered"].values())
    assert counts == {summary["submitted"]}, summary["delivered"]
    assert summary["p50_ms"] is not None and summary["p50_ms"] < 50


@pytest.mark.parametrize("behaviour", ["silent", "equivocate", "replay", "corrupt"])
@pytest.mark.parametrize(("f", "k"), [(1, 0), (1, 1)])
def test_byzantine_non_leader_cannot_break_or_stall(behaviour: str, f: int, k: int) -> None:
    """A Byzantine non-leader of any kind: safety and liveness hold for all correct replicas."""
    byz_id = 3
    summary, cluster = run_ok(SimConfig(f=f, k=k, seed=5, duration=1.0, byz={byz_id: behaviour}, loss=0.01))
    assert summary["liveness_checked"]
    arus = {cluster.nodes[r].replica.ord.aru for r in cluster.correct}
    assert len(arus) == 1, "every correct replica reached the same ordinal"


def test_equivocating_originator_is_caught_and_harmless() -> None:
    """Replicas see both versions of a two-faced PO-Request, yet agree on what executes."""
    summary, cluster = run_ok(SimConfig(seed=3, duration=1.0, byz={2: "equivocate"}))
    seen = sum(n.replica.stats.equivocations_seen for r, n in cluster.nodes.items() if r != 2)
    assert seen > 0, "the flood of PO-Requests exposed the equivocation"


def test_replayed_client_updates_applied_once() -> None:
    """A Byzantine replica re-introducing clients' updates gets them delivered again, identically
    at every correct replica, and each application applies every update exactly once."""
    summary, cluster = run_ok(SimConfig(seed=4, duration=1.0, byz={4: "replay"}))
    suppressed = summary["duplicates_suppressed_by_app"]
    assert suppressed and len(set(suppressed.values())) == 1, suppressed
    assert summary["delivered"]["1"] == summary["submitted"]


@pytest.mark.parametrize(("f", "k"), [(1, 0), (1, 1)])
def test_equivocating_leader_is_replaced(f: int, k: int) -> None:
    """A two-faced leader is caught by the flood of pre-prepares (two validly signed versions
    of one ordinal), replaced through a view change, and ordering continues in view 2."""
    for seed in range(1, 6):
        summary, cluster = run_ok(SimConfig(f=f, k=k, seed=seed, duration=1.0, byz={1: "equivocating-leader"}))
        assert summary["liveness_checked"]
        vc = summary["view_changes"][0]
        assert vc["view"] == 2 and vc["completed_s"] is not None
        assert min(v for r, v in summary["delivered"].items() if r != "1") == summary["submitted"]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_negative_control_f_plus_one_colluders(seed: int) -> None:
    """f+1 colluding Byzantine replicas break agreement, and the checker reports it."""
    summary, _ = run(SimConfig(seed=seed, duration=1.0, byz={1: "equivocating-leader", 2: "equivocating-leader"}))
    assert not summary["ok"]
    assert any(v.startswith("S1") for v in summary["violations"]), summary["violations"]


@pytest.mark.parametrize(("f", "k"), [(1, 0), (1, 1)])
def test_negative_control_weakened_quorums(f: int, k: int) -> None:
    """With every quorum one short, one equivocating originator gets both versions of a request
    certified and correct replicas execute different ones; the checker reports it."""
    for seed in range(1, 4):
        cfg = SimConfig(f=f, k=k, seed=seed, duration=1.0, byz={2: "equivocate"}, quorum_weaken_by=1)
        summary, _ = run(cfg)
        assert not summary["ok"]
        assert any(v.startswith("S1") for v in summary["violations"]), summary["violations"]


def test_crash_of_k_replicas_keeps_progress() -> None:
    """N=6 tolerates one crashed replica (k=1) on top of one Byzantine one."""
    summary, _ = run_ok(SimConfig(f=1, k=1, seed=8, duration=1.5, crash={6: 0.3}, byz={3: "silent"}))
    assert summary["liveness_checked"]
    assert summary["delivered"]["1"] == summary["submitted"]


def test_partitioned_replica_rejoins_and_agrees() -> None:
    """A replica cut off while the rest progress catches up after the partition heals."""
    cfg = SimConfig(f=1, k=1, seed=9, duration=2.0, partitions=["5|1,2,3,4,6@0.2-1.2"])
    summary, cluster = run_ok(cfg)
    assert summary["liveness_checked"]
    assert cluster.nodes[5].replica.ord.aru == cluster.nodes[1].replica.ord.aru


def test_partition_without_quorum_stalls_then_resumes_in_a_new_view() -> None:
    """N=4 split 2|2 orders nothing; the leader, unable to answer TAT challenges, is suspected;
    after the split heals view 2 is installed and every submitted update is delivered (L6)."""
    cfg = SimConfig(seed=10, duration=2.0, partitions=["1,2|3,4@0.3-1.3"])
    summary, cluster = run_ok(cfg)
    assert summary["liveness_checked"]
    (vc,) = summary["view_changes"]
    assert vc["view"] == 2 and vc["replicas"] == 4 and vc["preinstalled_s"] >= 1.3
    assert vc["completed_s"] is not None
    assert summary["delivered"]["3"] == summary["submitted"]


def test_same_seed_replays_byte_for_byte() -> None:
    """A seed fixes the run: two runs give the same trace digest; another seed does not."""
    cfg = dict(seed=21, duration=0.8, loss=0.03, duplicate=0.05, byz={3: "corrupt"}, partitions=["2|1,3,4@0.1-0.4"])
    a, _ = run(SimConfig(**cfg))
    b, _ = run(SimConfig(**cfg))
    c, _ = run(SimConfig(**{**cfg, "seed": 22}))
    assert a["trace_sha256"] == b["trace_sha256"]
    assert a["trace_sha256"] != c["trace_sha256"]


def test_long_run_memory_stays_bounded() -> None:
    """Repeated partitions over a long run: the core's collections do not grow with time."""
    parts = [f"4|1,2,3@{t}-{t + 0.7}" for t in (1, 4, 7, 10, 13)]
    cfg = SimConfig(seed=12, duration=16.0, loss=0.01, partitions=parts, clients=2, inflight=2)
    summary, cluster = run_ok(cfg)
    for rid, node in cluster.nodes.items():
        sizes = node.replica.collection_sizes()
        assert sizes["ord_history"] <= 10, (rid, sizes)
        assert sizes["po_history"] <= 200, (rid, sizes)
        assert sizes["blocked_on"] <= 20 and sizes["sign_queue"] <= 128, (rid, sizes)
        assert sizes["vouches"] <= 64 * cluster.n and sizes["rb_payloads"] <= 4 * (cluster.n + 1), (rid, sizes)
    assert summary["delivered"]["1"] == summary["submitted"] > 500


def test_byzantine_signer_cannot_impersonate() -> None:
    """A signer is bound to one identity: relabelling its envelope as another's fails verification."""
    scheme = KeyedHashScheme(1)
    env = Signer(scheme, 2).sign_one(msgs.Commit(1, 1, b"d" * 32))
    forged = wire.make_envelope(sender=3, body=env.body, msg=env.msg, sig=env.sig)
    verifier = Verifier(scheme)
    assert verifier.verify(env)
    assert not verifier.verify(forged)


def test_cli_json_summary_and_exit_status() -> None:
    """`python -m prime.sim --json` ends with one JSON object; a violation exits non-zero."""
    ok = subprocess.run(
        [sys.executable, "-m", "prime.sim", "--seed", "3", "--duration", "0.5", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    summary = json.loads(ok.stdout.strip().splitlines()[-1])
    for key in ("seed", "n", "f", "k", "delivered", "throughput_ups", "p50_ms", "p99_ms",
                "view_changes", "violations", "ok"):
        assert key in summary
    assert summary["ok"] is True and summary["violations"] == []
    bad = subprocess.run(
        [sys.executable, "-m", "prime.sim", "--seed", "1", "--duration", "0.5",
         "--byz", "1:equivocating-leader", "--byz", "2:equivocating-leader"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert bad.returncode == 1
    assert "replay with: bin/sim" in bad.stdout


def test_cli_rejects_bad_arguments_clearly() -> None:
    """A malformed option gets one clear line and exit status 2."""
    out = subprocess.run(
        [sys.executable, "-m", "prime.sim", "--partition", "1,2@x"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 2 and "partition" in out.stderr
