"""Review of the restart record (docs/hardening.md I11-3) from the attacker's side: the
``amnesia-edge`` attack at N = 4 (no benign-fault slack: 2f+k+1 = 3 of 4), and an
originator that forges its equivocated ids in a *future* incarnation (the H8 ceiling,
``incarnation_slack_s`` ahead), so the victim's record is a bound in an incarnation
that is not the one executing. Each runs with the victim killed (a reservation on
disk) and stopped cleanly (the exact record), and checks every invariant (agreement
first); a negative control switches the rule off and shows the attack bites."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from prime import msgs
from prime.msgs import PoRequest, Update, UpdateKind
from prime.sim import byzantine
from prime.sim.byzantine import AmnesiaEdge
from prime.sim.cluster import SimConfig
from tests.sim.simutil import run, run_ok


class FutureIncarnationEdge(AmnesiaEdge):
    """``amnesia-edge`` with its equivocated ids in incarnation ``own + slack - 1``
    (plausible by H8 at every replica), from seq 1 so the victim's ARU reaches them.
    Its own core goes on in its real incarnation."""

    behaviour = "amnesia-edge-future"

    def _sign_pair(self) -> tuple[Any, Any, Any, Any]:
        inc = self.replica.incarnation + self.replica.p.incarnation_slack_s - 1
        po = (inc, 1 + len(self.pairs))
        out: list[Any] = []
        for tag in (b"A", b"B"):
            forged = Update(self.rid, inc, 10**9 + po[1], int(UpdateKind.APP), b"edgefut" + tag)
            req = self.signer.sign_one(PoRequest(po, (self.signer.sign_one(forged),)))
            digest = hashlib.sha256(req.raw).digest()
            out += [req, self.signer.sign_one(msgs.PoAck((msgs.AckPart(self.rid, po, digest),)))]
        return out[0], out[1], out[2], out[3]


@pytest.fixture()
def future_edge(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(byzantine.BEHAVIOURS, FutureIncarnationEdge.behaviour, FutureIncarnationEdge)


N4_EDGE = dict(f=1, k=0, duration=1.0, byz={4: "amnesia-edge"}, restart={2: 0.5})


@pytest.mark.parametrize("clean", [False, True], ids=["killed", "clean-stop"])
def test_amnesia_edge_at_n4_cannot_certify_a_second_version(clean: bool) -> None:
    for seed in (1, 2):
        summary, cluster = run_ok(SimConfig(seed=seed, clean_stop=[2] if clean else [], **N4_EDGE))
        assert len(cluster.nodes[4].pairs) >= 10  # type: ignore[attr-defined]
        assert cluster.nodes[2].replica.stats.amnesia_acks_withheld > 0, "the attack reached it"


def test_amnesia_edge_at_n4_breaks_agreement_without_the_rule() -> None:
    summary, _ = run(SimConfig(seed=1, clean_stop=[2], params={"legacy": frozenset({"AMNESIA"})}, **N4_EDGE))
    assert any(v.startswith("S1 ") for v in summary["violations"]), summary["violations"]


FUTURE = dict(f=1, k=1, duration=1.0, byz={4: "amnesia-edge-future"}, restart={2: 0.5})


@pytest.mark.parametrize("clean", [False, True], ids=["killed", "clean-stop"])
def test_equivocated_ids_in_a_future_incarnation_stay_gated(future_edge: None, clean: bool) -> None:
    for seed in (1, 2):
        summary, cluster = run_ok(SimConfig(seed=seed, clean_stop=[2] if clean else [], **FUTURE))
        attacker = cluster.nodes[4]
        assert len(attacker.pairs) >= 10  # type: ignore[attr-defined]
        assert attacker.pairs[0][0].msg.po[0] > attacker.replica.incarnation  # type: ignore[attr-defined]
        assert cluster.nodes[2].replica.stats.amnesia_acks_withheld > 0, "the attack reached it"


def test_equivocated_ids_in_a_future_incarnation_break_agreement_without_the_rule(future_edge: None) -> None:
    summary, _ = run(SimConfig(seed=1, clean_stop=[2], params={"legacy": frozenset({"AMNESIA"})}, **FUTURE))
    assert any(v.startswith("S1 ") for v in summary["violations"]), summary["violations"]
