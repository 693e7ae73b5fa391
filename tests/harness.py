"""A hand-driven single replica for scenario tests of individual protocol rules.

The harness owns a signer for every identity (a test plays all the other
replicas and the clients), feeds chosen envelopes to one ``Replica`` in a chosen
order, completes its sign jobs at once, and records what it sends and delivers.
"""

from __future__ import annotations

from typing import Any

from prime import msgs
from prime.auth import KeyedHashScheme, Signer, Verifier
from prime.core import actions as A
from prime.core.events import ClientUpdate, CryptoDone, Inbound, ThresholdDone, Tick
from prime.core.order import pre_prepare_digest
from prime.core.params import Params
from prime.core.replica import Replica
from prime.crypto import threshold
from prime.errors import CryptoError
from prime.sim.cluster import sim_threshold_key
from prime.wire import Envelope

Vec = tuple[tuple[int, int], ...]


class Harness:
    def __init__(self, *, f: int = 1, k: int = 0, me: int = 4, threshold: bool = False, **params: Any) -> None:
        self.p = Params(f=f, k=k, **params)
        self.n = self.p.n
        self.me = me
        self.scheme = KeyedHashScheme(7)
        # Real Shoup threshold RSA (the simulator's 512-bit key) when a test drives a view
        # change through its threshold jobs; otherwise such jobs are recorded, not answered.
        self.threshold_key = sim_threshold_key(self.n, self.p.quorums.certificate) if threshold else None
        self.threshold_jobs: list[A.ThresholdJob] = []
        public = self.threshold_key[0] if self.threshold_key else None
        self.verifier = Verifier(self.scheme, threshold_public=public)
        self.signers = {i: Signer(self.scheme, i) for i in range(1, self.n + 1 + 20)}
        self.replica = Replica(self.p, me, incarnation=1)
        self.now_us = 0
        self.sent: list[tuple[int, Envelope]] = []  # (dest or 0 for broadcast, env)
        self.delivered: list[A.Deliver] = []
        self.transfers: list[int] = []
        self.persisted: list[tuple[int, tuple[tuple[int, int, int, int], ...]]] = []
        self.tick(0)

    # ------------------------------------------------------------ driving
    def _drain(self) -> None:
        work = self.replica.take_actions()
        while work:
            action = work.pop(0)
            if isinstance(action, A.SignJob):
                envs = self.signers[self.me].sign_batch(action.messages, action.bodies, direct=action.direct)
                for env in envs:
                    assert self.verifier.verify(env)
                self.replica.step(CryptoDone(action.job_id, envs))
                work = self.replica.take_actions() + work
            elif isinstance(action, A.Send):
                self.sent.append((action.dest, action.env))
            elif isinstance(action, A.Broadcast):
                self.sent.append((0, action.env))
            elif isinstance(action, A.Deliver):
                self.delivered.append(action)
            elif isinstance(action, A.StateTransferNeeded):
                self.transfers.append(action.ordinal)
            elif isinstance(action, A.Persist):  # (how many messages had left by then, what)
                self.persisted.append((len(self.sent), action.record))
            elif isinstance(action, A.ThresholdJob):
                self.threshold_jobs.append(action)
                if self.threshold_key is not None:
                    self.replica.step(ThresholdDone(action.job_id, self._threshold(action)))
                    work = self.replica.take_actions() + work
        self.replica.invariants()

    def _threshold(self, job: A.ThresholdJob) -> bytes | None:
        assert self.threshold_key is not None
        public = self.threshold_key[0]
        if job.op == "share":
            return self.threshold_share(self.me, job.statement)
        parsed = [threshold.SignatureShare.from_bytes(raw) for _, raw in job.shares]
        try:
            return threshold.combine(public, job.statement, parsed, verify_shares=job.verify_shares)
        except CryptoError:
            return None

    def threshold_share(self, who: int, statement: bytes) -> bytes:
        """Replica ``who``'s threshold signature share on ``statement`` (valid proof)."""
        assert self.threshold_key is not None
        share = threshold.sign_share(self.threshold_key[1][who - 1], statement, nonce_seed=b"%d" % who)
        return share.to_bytes()

    def tick(self, now_us: int) -> None:
        self.now_us = now_us
        self.replica.step(Tick(now_us))
        self._drain()

    def advance(self, delta_us: int) -> None:
        """Let time pass, firing every timer due on the way, in order."""
        end = self.now_us + delta_us
        while True:
            nxt = self.replica.next_deadline_us()
            if nxt is None or nxt > end:
                break
            self.tick(max(nxt, self.now_us))
        self.tick(end)

    def flush(self) -> None:
        """Release the pending signature batch."""
        self.advance(self.p.sig_debounce_us)

    def feed(self, env: Envelope, via: int | None = None) -> None:
        assert self.verifier.verify(env), "tests feed only validly signed envelopes"
        self.replica.step(Inbound(via if via is not None else env.sender, env))
        self._drain()

    def client_update(self, env: Envelope) -> None:
        self.replica.step(ClientUpdate(env))
        self._drain()

    # --------------------------------------------------------- crafting
    def sign(self, who: int, msg: msgs.Message) -> Envelope:
        return self.signers[who].sign_one(msg)

    def update(self, client: int, seq: int, payload: bytes = b"x", inc: int = 1) -> Envelope:
        return self.sign(client, msgs.Update(client, inc, seq, int(msgs.UpdateKind.APP), payload))

    def po_request(self, origin: int, seq: int, updates: list[Envelope], inc: int = 1) -> Envelope:
        return self.sign(origin, msgs.PoRequest((inc, seq), tuple(updates)))

    def po_aru(self, who: int, vector: Vec, num: int = 1, inc: int = 1) -> Envelope:
        return self.sign(who, msgs.PoAru(inc, num, vector))

    def vector(self, **entries: tuple[int, int]) -> Vec:
        """A cum_aru vector: vector(s2=(1, 1)) sets originator 2's entry."""
        v = [(0, 0)] * self.n
        for key, value in entries.items():
            v[int(key[1:]) - 1] = value
        return tuple(v)

    def pre_prepare(self, seq: int, rows: list[Envelope | None], view: int = 1, leader: int = 1) -> Envelope:
        return self.sign(leader, msgs.PrePrepare(seq, view, 0, tuple(rows)))

    def votes(self, cls: type, pp: Envelope, voters: list[int]) -> list[Envelope]:
        ppd = pre_prepare_digest(pp.msg)
        return [self.sign(v, cls(pp.msg.seq, pp.msg.view, ppd)) for v in voters]

    def ack(self, who: int, origin: int, seq: int, digest: bytes, inc: int = 1) -> Envelope:
        return self.sign(who, msgs.PoAck((msgs.AckPart(origin, (inc, seq), digest),)))

    # ---------------------------------------------------------- reading
    def sent_messages(self, cls: type) -> list[Any]:
        return [env.msg for _, env in self.sent if isinstance(env.msg, cls) and env.sender == self.me]

    def delivered_payloads(self) -> list[list[bytes]]:
        return [[u.payload for u in d.updates if u.kind == msgs.UpdateKind.APP] for d in self.delivered]
