"""Byzantine replica behaviours for the simulator.

Each behaviour runs a real ``Replica`` core and rewrites what it sends. A
Byzantine node signs only with its own ``Signer``: it can lie, equivocate,
replay and corrupt, but it can never produce another identity's signature.

Behaviours (``--byz ID:NAME``):
* ``silent``: sends nothing at all.
* ``equivocate``: as an originator, signs two versions of each PO_REQUEST and
  sends one to each half of the other replicas.
* ``equivocating-leader``: as leader, sends one pre-prepare to half of the
  replicas and a conflicting one (different matrix) to the other half; it also
  Prepares and Commits both versions towards their halves. Several nodes with
  this behaviour collude: each Prepares and Commits every version it sees.
* ``replay``: re-sends old messages it received to random replicas, and
  re-introduces other clients' signed updates in its own PO-Requests.
* ``corrupt``: rewrites outgoing messages with wrong fields (re-signed, so
  they verify) or flipped bytes (so they do not), at random.
* ``recon``: the RECON_ATTACK (PROTOCOL.md 6.2): sends its PO-Requests only to
  replicas ``1..2f+k+1``, acknowledges only other attackers' requests, and never
  sends reconciliation traffic, so correct designated senders must ship its
  requests to the deprived replicas. It orders correctly otherwise.
* ``delay``: the DELAY_ATTACK (PROTOCOL.md 6.1): as leader, ignores other
  replicas' PO_ARUs, applies each proof matrix only once it is ``--delay-ms``
  old, and sends each new pre-prepare only to replica 2 (whose flooding
  reaches the rest). Retransmissions are not restricted.
* ``bad-shares``: sends threshold shares with a wrong value (their Shoup proofs
  fail, so combination skips them, hardening H7).
* ``bad-parts``: as a designated sender, sends garbage erasure-coded parts
  (validly signed, so only the rebuilt request's digest can expose them).
* ``mute-after-replay``: correct until, as a new leader, it has sent its REPLAY;
  silent from then on.
* ``reencode``: relays others' PO-Requests and REPLAYs in non-canonical msgpack
  bytes that still verify, and acks the re-encoded copy's digest (issue 11 item 7).
* ``catchup-flood``: sends every replica a CATCHUP_REQUEST for about 64 ordinals
  back every 20 ms, to draw full answers of signed certificates (issue 11 item 11).
"""

from __future__ import annotations

import dataclasses
import random
from typing import TYPE_CHECKING, Any

import msgpack

from prime import msgs, wire
from prime.core import actions as A
from prime.core.order import pre_prepare_digest
from prime.core.preorder import request_digest
from prime.msgs import Commit, PoRequest, Prepare, PrePrepare, Update, UpdateKind
from prime.sim.cluster import Node
from prime.wire import Envelope

if TYPE_CHECKING:
    from prime.auth import Signer
    from prime.core.replica import Replica
    from prime.sim.cluster import SimCluster


def halves(
    n: int, me: int, rng: random.Random, exclude: frozenset[int] = frozenset()
) -> tuple[list[int], list[int]]:
    """Split the other replicas (minus ``exclude``) in two groups, non-empty if possible."""
    others = [r for r in range(1, n + 1) if r != me and r not in exclude]
    rng.shuffle(others)
    cut = max(1, len(others) // 2)
    return sorted(others[:cut]), sorted(others[cut:])


class Silent(Node):
    behaviour = "silent"

    def outgoing(self, action: A.Send | A.Broadcast) -> None:
        return


class EquivocatingOriginator(Node):
    behaviour = "equivocate"

    def outgoing(self, action: A.Send | A.Broadcast) -> None:
        env = action.env
        if not (isinstance(action, A.Broadcast) and isinstance(env.msg, PoRequest)):
            super().outgoing(action)
            return
        req: PoRequest = env.msg
        # Version B: same PO id, different contents (a fabricated daemon update).
        forged = Update(self.rid, req.po[0], 10**9 + req.po[1], int(UpdateKind.APP), b"evil")
        alt = PoRequest(req.po, (self.signer.sign_one(forged),))
        alt_env = self.signer.sign_one(alt)
        a, b = halves(self.cluster.n, self.rid, self.rng)
        for dst in a:
            self.cluster.transmit(self.rid, dst, env)
        for dst in b:
            self.cluster.transmit(self.rid, dst, alt_env)


class EquivocatingLeader(Node):
    behaviour = "equivocating-leader"

    def outgoing(self, action: A.Send | A.Broadcast) -> None:
        env = action.env
        if isinstance(action, A.Broadcast) and isinstance(env.msg, PrePrepare) and env.sender == self.rid:
            self._equivocate(env)
            return
        if isinstance(env.msg, (msgs.NewLeader, msgs.NewLeaderProof)) and self._colluders():
            return  # colluders never help replace their two-faced leader
        super().outgoing(action)

    def _colluders(self) -> list[Node]:
        return [
            n
            for n in self.cluster.nodes.values()
            if isinstance(n, EquivocatingLeader) and n.rid != self.rid
        ]

    def _equivocate(self, env: Envelope) -> None:
        pp: PrePrepare = env.msg
        # Version B: the same ordinal with every row nulled except the leader's own.
        rows = tuple(row if i == self.rid else None for i, row in enumerate(pp.rows, start=1))
        alt = PrePrepare(pp.seq, pp.view, pp.sent_us, rows)
        alt_env = self.signer.sign_one(alt)
        colluders = frozenset(n.rid for n in self._colluders())
        group_a, group_b = halves(self.cluster.n, self.rid, self.rng, colluders)
        for dst in group_a:
            self.cluster.transmit(self.rid, dst, env)
        for dst in group_b:
            self.cluster.transmit(self.rid, dst, alt_env)
        for c in sorted(colluders):
            self.cluster.transmit(self.rid, c, env)
            self.cluster.transmit(self.rid, c, alt_env)
        if colluders:
            # Tell the conspiracy which honest replicas saw which version, so every
            # colluder votes for a version only towards the replicas holding it.
            plan = self.cluster.conspiracy
            plan[env.raw] = group_a
            plan[alt_env.raw] = group_b
            self.vote_both(env, group_a)
            self.vote_both(alt_env, group_b)

    def vote_both(self, pp_env: Envelope, group: list[int]) -> None:
        """Prepare and Commit ``pp_env`` towards ``group`` (collusion)."""
        pp: PrePrepare = pp_env.msg
        ppd = pre_prepare_digest(pp)
        votes = [Commit(pp.seq, pp.view, ppd)]
        if self.rid != self.replica.leader:
            votes.insert(0, Prepare(pp.seq, pp.view, ppd))
        for v in votes:
            signed = self.signer.sign_one(v)
            for dst in group:
                self.cluster.transmit(self.rid, dst, signed)

    def incoming(self, via: int, env: Envelope) -> bool:
        group = self.cluster.conspiracy.pop(env.raw, None) if isinstance(env.msg, PrePrepare) else None
        if group is not None and env.sender != self.rid:
            self.cluster.conspiracy[env.raw] = group
            self.vote_both(env, group)
        return True


class Replayer(Node):
    behaviour = "replay"
    REMEMBER_MAX = 2000

    def __init__(self, cluster: SimCluster, rid: int, replica: Replica, signer: Signer) -> None:
        super().__init__(cluster, rid, replica, signer)
        self.seen: list[Envelope] = []
        self.reintroduced: set[bytes] = set()

    def incoming(self, via: int, env: Envelope) -> bool:
        if len(self.seen) < self.REMEMBER_MAX:
            self.seen.append(env)
        elif self.rng.random() < 0.05:
            self.seen[self.rng.randrange(self.REMEMBER_MAX)] = env
        if isinstance(env.msg, PoRequest) and env.sender != self.rid:
            for u in env.msg.updates:
                if u.msg.client > self.cluster.n and u.raw not in self.reintroduced:
                    self.reintroduced.add(u.raw)
                    self.cluster.inject_client_update(self.rid, u)
        return True

    def outgoing(self, action: A.Send | A.Broadcast) -> None:
        super().outgoing(action)
        if self.seen and self.rng.random() < 0.3:
            old = self.seen[self.rng.randrange(len(self.seen))]
            dst = self.rng.randrange(1, self.cluster.n + 1)
            self.cluster.transmit(self.rid, dst, old)


class Corrupter(Node):
    behaviour = "corrupt"

    def outgoing(self, action: A.Send | A.Broadcast) -> None:
        roll = self.rng.random()
        if roll < 0.4:
            super().outgoing(action)
            return
        env = action.env
        if roll < 0.55:
            bad = self._flip_bytes(env)
        else:
            bad = self._mutate_fields(env)
        if bad is None:
            return
        if isinstance(action, A.Send):
            self.cluster.transmit(self.rid, action.dest, bad)
        else:
            self.cluster.transmit_all(self.rid, bad)

    def _flip_bytes(self, env: Envelope) -> Envelope | None:
        raw = bytearray(env.raw)
        for _ in range(self.rng.randint(1, 4)):
            i = self.rng.randrange(len(raw))
            raw[i] ^= 1 << self.rng.randrange(8)
        decoded = wire.decode(bytes(raw))
        if isinstance(decoded, str):
            self.cluster.malformed_dropped += 1
            return None
        return decoded

    def _mutate_fields(self, env: Envelope) -> Envelope | None:
        msg = env.msg
        changes: dict[str, Any] = {}
        for name, spec in msg.SPECS:
            value = getattr(msg, name)
            if isinstance(spec, msgs.Int) and self.rng.random() < 0.5:
                changes[name] = min(spec.hi, max(spec.lo, value + self.rng.choice((-1, 1, 7))))
            elif spec is msgs.DIGEST and self.rng.random() < 0.7:
                changes[name] = self.rng.randbytes(msgs.DIGEST_SIZE)
            elif isinstance(spec, msgs.TupleOf) and value and self.rng.random() < 0.3:
                changes[name] = value[:-1] if len(value) > spec.count_min else value
        if not changes:
            return None
        try:
            forged = dataclasses.replace(msg, **changes)
        except (TypeError, ValueError):
            return None
        signed = self.signer.sign_one(forged)
        decoded = wire.decode(signed.raw)  # receivers decode: shape-invalid forgeries die here
        if isinstance(decoded, str):
            self.cluster.malformed_dropped += 1
            return None
        return decoded


class ReconAttacker(Node):
    behaviour = "recon"

    def outgoing(self, action: A.Send | A.Broadcast) -> None:
        env = action.env
        msg = env.msg
        if isinstance(msg, msgs.Recon):
            return  # never reconciles
        if isinstance(msg, PoRequest) and env.sender != self.rid:
            return  # whole-request reconciliation forward: withheld too
        if isinstance(msg, PoRequest) and isinstance(action, A.Broadcast):
            limit = 2 * self.cluster.cfg.f + self.cluster.cfg.k + 1
            for dst in range(1, limit + 1):
                if dst != self.rid:
                    self.cluster.transmit(self.rid, dst, env)
            return
        if isinstance(msg, msgs.PoAck):
            attackers = {r for r, b in self.cluster.cfg.byz.items() if b == self.behaviour}
            parts = tuple(p for p in msg.parts if p.originator in attackers)
            if parts:
                super().outgoing(type(action)(*_with_env(action, self.signer.sign_one(msgs.PoAck(parts)))))
            return
        super().outgoing(action)


class BadParts(Node):
    behaviour = "bad-parts"

    def outgoing(self, action: A.Send | A.Broadcast) -> None:
        msg = action.env.msg
        if isinstance(msg, msgs.Recon):
            parts = tuple(
                dataclasses.replace(p, data=self.rng.randbytes(len(p.data))) for p in msg.parts
            )
            bad = self.signer.sign_one(msgs.Recon(parts))
            super().outgoing(type(action)(*_with_env(action, bad)))
            return
        super().outgoing(action)


class DelayLeader(Node):
    behaviour = "delay"

    def __init__(self, cluster: SimCluster, rid: int, replica: Replica, signer: Signer) -> None:
        super().__init__(cluster, rid, replica, signer)
        self.released: set[bytes] = set()
        self.pp_sent: set[bytes] = set()

    def _leading(self) -> bool:
        return self.replica.is_leader

    def incoming(self, via: int, env: Envelope) -> bool:
        if not self._leading() or env.sender == self.rid:
            return True
        if isinstance(env.msg, msgs.PoAru):
            return False
        if isinstance(env.msg, msgs.ProofMatrix):
            if env.raw in self.released:
                self.released.discard(env.raw)
                return True
            self.released.add(env.raw)
            delay_us = int(self.cluster.cfg.delay_ms * 1000)
            self.cluster.deliver_later(self.rid, via, env, delay_us)
            return False
        return True

    def outgoing(self, action: A.Send | A.Broadcast) -> None:
        env = action.env
        if (
            isinstance(action, A.Broadcast)
            and isinstance(env.msg, PrePrepare)
            and env.sender == self.rid
            and env.raw not in self.pp_sent
        ):
            self.pp_sent.add(env.raw)
            if len(self.pp_sent) > 10_000:
                self.pp_sent.clear()
            if self.rid != 2:
                self.cluster.transmit(self.rid, 2, env)
            return
        super().outgoing(action)


class BadShares(Node):
    behaviour = "bad-shares"

    def outgoing(self, action: A.Send | A.Broadcast) -> None:
        msg = action.env.msg
        if isinstance(msg, msgs.VcPartialSig):
            from prime.crypto import threshold

            share = threshold.SignatureShare.from_bytes(msg.share)
            bad = dataclasses.replace(share, value=share.value + 1)
            forged = self.signer.sign_one(dataclasses.replace(msg, share=bad.to_bytes()))
            super().outgoing(type(action)(*_with_env(action, forged)))
            return
        super().outgoing(action)


class MuteAfterReplay(Node):
    """Correct until it has sent a REPLAY as a new leader, then silent: the view change
    completes, and the new view then has to notice that nothing is being ordered."""

    behaviour = "mute-after-replay"
    muted = False

    def outgoing(self, action: A.Send | A.Broadcast) -> None:
        if self.muted:
            return
        if isinstance(action.env.msg, msgs.Replay):
            self.muted = True
        super().outgoing(action)


def reencode(raw: bytes, how: str = "array") -> bytes:
    """The same envelope in other msgpack bytes: the outer array header widened to an
    array32 (``how="array"``) or every integer widened to a uint64 (``"int"``). The
    body, which the signature covers, is untouched, so the signature still verifies."""
    outer = msgpack.unpackb(raw, use_list=False, raw=False)

    def pack(value: Any, top: bool) -> bytes:
        if type(value) is int and value >= 0 and how == "int":
            return b"\xcf" + value.to_bytes(8, "big")
        if type(value) is tuple:
            items = b"".join(pack(v, False) for v in value)
            if top and how == "array":
                return b"\xdd" + len(value).to_bytes(4, "big") + items
            return msgpack.packb(len(value) * [None])[: -len(value) or None] + items
        return msgpack.packb(value, use_bin_type=True)

    return pack(outer, True)


class Reencoder(Node):
    """Relays other replicas' messages in non-canonical bytes that still verify (issue
    11 item 7). For each PO-Request of another originator it sends a re-encoded copy to
    half of the others and acks that copy's digest instead of the original's, so acks
    split between two digests of one request; it relays every REPLAY of a new leader
    re-encoded to everyone, so a replica comparing bytes sees the leader "equivocate".
    As leader it stops pre-preparing after 0.3 s, so a view change (and a REPLAY to
    relay) happens in its runs. Receivers decode what it sends, as any input: a copy
    the codec refuses never reaches them (counted in ``malformed_dropped``)."""

    behaviour = "reencode"
    MUTE_AS_LEADER_US = 300_000
    SPLIT_REQUESTS = True  # tests switch one half of the attack off to show the other
    RELAY_REPLAYS = True

    def __init__(self, cluster: SimCluster, rid: int, replica: Replica, signer: Signer) -> None:
        super().__init__(cluster, rid, replica, signer)
        self.twin_digest: dict[tuple[int, tuple[int, int]], bytes] = {}
        self.relayed: set[bytes] = set()

    def _twin(self, env: Envelope) -> Envelope | None:
        decoded = wire.decode(reencode(env.raw, self.rng.choice(("array", "int"))))
        if isinstance(decoded, str):
            self.cluster.malformed_dropped += 1  # the receivers' codec refuses it
            return None
        return decoded

    def incoming(self, via: int, env: Envelope) -> bool:
        msg = env.msg
        if env.sender == self.rid or env.raw in self.relayed:
            return True
        if len(self.relayed) > 10_000:
            self.relayed.clear()
        if isinstance(msg, PoRequest) and self.SPLIT_REQUESTS:
            key = (env.sender, msg.po)
            if key not in self.twin_digest and len(self.twin_digest) < 100_000:
                self.relayed.add(env.raw)
                twin = self._twin(env)
                self.twin_digest[key] = b"\0" * 32 if twin is None else request_digest(twin)
                if twin is not None:
                    group, _ = halves(self.cluster.n, self.rid, self.rng, frozenset({env.sender}))
                    for dst in group:
                        self.cluster.transmit(self.key, dst, twin)
        elif isinstance(msg, msgs.Replay) and self.RELAY_REPLAYS:
            self.relayed.add(env.raw)
            twin = self._twin(env)
            if twin is not None:
                self.cluster.transmit_all(self.key, twin)
        return True

    def outgoing(self, action: A.Send | A.Broadcast) -> None:
        env = action.env
        msg = env.msg
        own_pp = isinstance(msg, PrePrepare) and env.sender == self.rid
        if own_pp and self.cluster.now_us >= self.MUTE_AS_LEADER_US:
            return
        if isinstance(msg, msgs.PoAck):
            parts = tuple(
                dataclasses.replace(p, digest=self.twin_digest.get((p.originator, p.po), p.digest))
                for p in msg.parts
            )
            if parts != msg.parts:
                env = self.signer.sign_one(msgs.PoAck(parts))
                super().outgoing(type(action)(*_with_env(action, env)))
                return
        super().outgoing(action)


class CatchupFlooder(Node):
    """Asks every other replica for catch-up every 20 ms (issue 11 item 11): a small
    CATCHUP_REQUEST naming an ARU about 64 ordinals back, so each answer would be a full
    batch of signed certificates. Otherwise correct."""

    behaviour = "catchup-flood"
    PERIOD_US = 20_000  # catchup_epsilon_us: the spacing the old per-peer rule allowed
    last_us = -PERIOD_US

    def incoming(self, via: int, env: Envelope) -> bool:
        now = self.cluster.now_us
        if now - self.last_us >= self.PERIOD_US:
            self.last_us = now
            aru = self.replica.ord.aru
            back = max(0, aru - 64 + self.rng.randrange(16))
            ask = self.signer.sign_one(msgs.CatchupRequest(back))
            self.cluster.transmit_all(self.key, ask)
        return True


def _with_env(action: A.Send | A.Broadcast, env: Envelope) -> tuple[Any, ...]:
    return (action.dest, env) if isinstance(action, A.Send) else (env,)


BEHAVIOURS: dict[str, type[Node]] = {
    cls.behaviour: cls
    for cls in (
        Silent,
        EquivocatingOriginator,
        EquivocatingLeader,
        Replayer,
        Corrupter,
        ReconAttacker,
        BadParts,
        DelayLeader,
        BadShares,
        MuteAfterReplay,
        Reencoder,
        CatchupFlooder,
    )
}

def make_node(behaviour: str, cluster: SimCluster, rid: int, replica: Replica, signer: Signer) -> Node:
    cls = BEHAVIOURS.get(behaviour)
    if cls is None:
        raise ValueError(f"unknown Byzantine behaviour {behaviour!r}; known: {', '.join(sorted(BEHAVIOURS))}")
    return cls(cluster, rid, replica, signer)
