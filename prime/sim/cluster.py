"""A whole Prime cluster in one process, on virtual time, from one seed.

``SimCluster`` drives N pure ``Replica`` cores (``prime.core``) the way the real
runtime will: it ticks them, verifies every envelope before handing it in,
performs their ``SignJob``s with a ``Signer`` bound to their own identity, and
carries their ``Send``/``Broadcast`` actions over a seeded ``Network``.
Closed-loop clients submit signed updates to their home replica (a restarting
one included: what its old incarnation held is lost with it and submitted anew,
and a client also learns of its updates from the state its application takes
after a jump), and the ``Checker`` sees every delivery.

Everything random comes from ``random.Random(seed)`` streams derived in a fixed
order, and events with equal times are ordered ticks first (by node), then by
insertion, so one seed replays byte for byte.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import random
import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from prime.app.kv import KvStore, put
from prime.auth import KeyedHashScheme, Scheme, Signer, Verifier
from prime.core import actions as A
from prime.core.events import ClientUpdate, CryptoDone, Event, Inbound, ThresholdDone, Tick
from prime.core.params import Params
from prime.core.replica import Replica
from prime.msgs import OrdCert, Replayed, Update, UpdateKind
from prime.sim.checker import Checker, ClientStamp
from prime.sim.network import Network, Partition
from prime.wire import Envelope

_TICK, _MSG, _CLIENT_IN, _CLIENT_SUBMIT, _CRASH, _RESTART, _PROBE = range(7)
US = 1_000_000
# Events at one instant run ticks first, by node key, then the rest by insertion. A
# tick's place must not depend on when it was scheduled: a core whose idle timers sleep
# schedules the same firing later than one that re-arms them every period, and both
# must replay the same run (replica.Periodic; tests/unit/test_idle_timers.py).
_TICK_ORDER_KEYS = 1 << 16  # node keys (at most 31 + TWIN_KEY_OFFSET) sort below this


@dataclass
class SimConfig:
    """One scenario. Times are virtual seconds unless the name says otherwise."""

    f: int = 1
    k: int = 0
    seed: int = 1
    duration: float = 3.0
    net: str = "lan"
    loss: float = 0.0
    duplicate: float = 0.0
    clients: int = 4
    inflight: int = 4
    payload_bytes: int = 32
    byz: dict[int, str] = field(default_factory=dict)
    crash: dict[int, float] = field(default_factory=dict)
    restart: dict[int, float] = field(default_factory=dict)  # empty state, new incarnation
    twins: list[int] = field(default_factory=list)  # Byzantine identities run twice (Twins)
    # Client c's home is client_homes[c % len]; empty: every replica that may have clients
    # (correct or a recon attacker, never crashed for good), restarting ones first.
    client_homes: list[int] = field(default_factory=list)
    partitions: list[str] = field(default_factory=list)
    liveness_bound: float = 10.0
    # A restarted replica gets back what its earlier life persisted (A.Persist: a bound
    # on what it acked); False: its disk is lost too (the conservative amnesia bound).
    keep_disk: bool = True
    # Replicas whose stops (a restart, or the crash before it) are clean: the driver
    # writes the core's exact record first (Replica.clean_stop_record), as the daemon
    # does on SIGTERM. Others stop as if killed: their disk holds the last reservation.
    clean_stop: list[int] = field(default_factory=list)
    # L3: seconds a correct replica's client may wait for its reply, faults active or not.
    # Six retransmission periods (1 s each, as the original's): with f+k replicas faulty
    # every quorum is all the correct ones, and each message lost on the way costs a
    # period. Calibrated on 1,000 seeded runs (500 each at N=4 and N=6): the longest wait
    # in a run where no correct replica needed a state transfer was 4.19 s.
    reply_bound: float = 6.0
    # R1: bytes of catch-up answers a correct replica may send one peer in a second. A
    # correct asker needs at most the certificates it lacks (catchup_history_ordinals of
    # them before it jumps instead); answering a request every 20 ms with 32 was ~1.4 MB/s at N=4.
    catchup_answer_bytes_per_s_max: int = 512 * 1024
    delay_ms: float = 20.0  # the delay attack's target (conf: [attacks] delay_target_us)
    quorum_weaken_by: int = 0
    real_crypto: bool = False
    check_invariants: bool = True
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return 3 * self.f + 2 * self.k + 1

    def validate(self) -> None:
        n = self.n
        for rid in list(self.byz) + list(self.crash) + list(self.restart) + list(self.twins) + list(self.clean_stop):
            if not 1 <= rid <= n:
                raise ValueError(f"replica id {rid} out of range 1..{n}")
        for rid in self.client_homes:
            if not 1 <= rid <= n:
                raise ValueError(f"client home {rid} out of range 1..{n}")
            if rid in self.crash and rid not in self.restart:
                raise ValueError(f"client home {rid} crashes for good: its clients get no answer")
        for rid, t in self.restart.items():
            if rid in self.byz:
                raise ValueError(f"replica {rid}: only correct replicas restart")
            if rid in self.crash and self.crash[rid] >= t:
                raise ValueError(f"replica {rid}: restart at {t:g} s must follow its crash")
        if len(self.byz) > self.f and not self.quorum_weaken_by:
            # More than f Byzantine replicas is allowed only as the checker's negative control.
            pass
        if self.duration <= 0 or self.clients < 0 or self.inflight < 1:
            raise ValueError("duration > 0, clients >= 0 and inflight >= 1 are required")

    def replay_command(self) -> str:
        parts = [f"bin/sim --f {self.f} --k {self.k} --seed {self.seed}"]
        parts.append(f"--duration {self.duration:g} --net {self.net}")
        if self.loss:
            parts.append(f"--loss {self.loss:g}")
        if self.duplicate:
            parts.append(f"--duplicate {self.duplicate:g}")
        parts.append(f"--clients {self.clients} --inflight {self.inflight}")
        for rid, b in sorted(self.byz.items()):
            parts.append(f"--byz {rid}:{b}")
        for rid, t in sorted(self.crash.items()):
            parts.append(f"--crash {rid}@{t:g}")
        for rid, t in sorted(self.restart.items()):
            parts.append(f"--restart {rid}@{t:g}")
        for rid in sorted(self.twins):
            parts.append(f"--twins {rid}")
        for rid in sorted(self.clean_stop):
            parts.append(f"--clean-stop {rid}")
        for rid in self.client_homes:
            parts.append(f"--client-home {rid}")
        for p in self.partitions:
            parts.append(f"--partition '{p}'")
        if self.quorum_weaken_by:
            parts.append(f"--weaken-quorums {self.quorum_weaken_by}")
        if "delay" in self.byz.values():
            parts.append(f"--delay-ms {self.delay_ms:g}")
        for key, value in sorted(self.params.items()):
            if isinstance(value, (frozenset, set)):
                text = ",".join(sorted(value))  # legacy=H1,H2: the switched-off fixes
            else:
                text = str(value).lower() if isinstance(value, bool) else value
            parts.append(f"--param {key}={text}")
        return " ".join(parts)


def _catchup_answer(env: Envelope) -> bool:
    """An answer to a CATCHUP_REQUEST: a certificate re-sent on request (flag 2), or the
    record of a replayed ordinal (only sent on request)."""
    msg = env.msg
    return (isinstance(msg, OrdCert) and msg.flag == 2) or isinstance(msg, Replayed)


_THRESHOLD_KEYS: dict[tuple[int, int], Any] = {}


def sim_threshold_key(n: int, t: int) -> Any:
    """One (n, t) Shoup key per process, dealt from a fixed seed at 512 bits: the
    simulator needs real threshold math, not real secrecy."""
    key = _THRESHOLD_KEYS.get((n, t))
    if key is None:
        from prime.crypto import threshold

        key = _THRESHOLD_KEYS[(n, t)] = threshold.deal(n, t, 512, seed=b"prime-sim-%d-%d" % (n, t))
    return key


TWIN_KEY_OFFSET = 100  # cluster key of the second instance of a twinned identity


class Node:
    """A correct replica as the cluster sees it: its core and its own signer.
    Byzantine behaviours (``prime.sim.byzantine``) subclass this."""

    behaviour = "correct"
    # Whether the core's own invariants hold for this node. A behaviour that sends, as
    # itself, what its core never made (its core then sees its "own" requests executed
    # beyond flow control) says False: the checks are for correct replicas' cores.
    core_invariants = True

    def __init__(self, cluster: SimCluster, rid: int, replica: Replica, signer: Signer) -> None:
        self.cluster = cluster
        self.rid = rid
        self.key = rid  # the cluster's handle; differs from rid only for a second twin
        self.replica = replica
        self.signer = signer
        self.rng = random.Random(cluster.seed_for(f"node-{rid}"))

    def outgoing(self, action: A.Send | A.Broadcast) -> None:
        """Put one network action on the wire (Byzantine nodes rewrite this)."""
        if isinstance(action, A.Send):
            self.cluster.transmit(self.key, action.dest, action.env)
        else:
            self.cluster.transmit_all(self.key, action.env)

    def incoming(self, via: int, env: Envelope) -> bool:
        """Whether to hand a verified envelope to the core (Byzantine nodes may spy)."""
        return True


class Twin(Node):
    """One of two instances sharing a Byzantine identity and its key (Twins): each runs
    a correct core but talks only to its half of the network, so together they
    equivocate in every role the identity has."""

    behaviour = "twin"
    group: frozenset[int] = frozenset()

    def outgoing(self, action: A.Send | A.Broadcast) -> None:
        if isinstance(action, A.Send):
            if action.dest in self.group:
                self.cluster.transmit(self.key, action.dest, action.env)
            return
        for dst in sorted(self.group):
            self.cluster.transmit(self.key, dst, action.env)


@dataclass
class SimClient:
    cid: int
    home: int
    incarnation: int = 1
    next_seq: int = 1
    outstanding: dict[int, int] = field(default_factory=dict)  # seq -> submit time
    latencies_us: list[int] = field(default_factory=list)
    # Outstanding seqs the home's current incarnation took in. A restart loses them with
    # the daemon's memory; those that reach the home while it is down are lost too.
    handed: set[int] = field(default_factory=set)
    lost: int = 0  # such updates since the home's last restart: submitted anew after it


class SimCluster:
    def __init__(self, cfg: SimConfig, *, log: logging.Logger | None = None) -> None:
        cfg.validate()
        self.cfg = cfg
        self.n = cfg.n
        self.log = log or logging.getLogger("prime.sim")
        self.params = Params(f=cfg.f, k=cfg.k, quorum_weaken_by=cfg.quorum_weaken_by, **cfg.params)
        self.now_us = 0
        self._heap: list[tuple[int, int, int, Any, Any]] = []
        self._seq = 0
        self.scheme: Scheme = self._make_scheme()
        self.threshold_public, self.threshold_shares = sim_threshold_key(self.n, self.params.quorums.certificate)
        self.verifier = Verifier(self.scheme, threshold_public=self.threshold_public)
        self.network = Network(
            random.Random(self.seed_for("network")),
            cfg.net,
            cfg.loss,
            cfg.duplicate,
            [Partition.parse(p) for p in cfg.partitions],
        )
        self.byzantine = set(cfg.byz) | set(cfg.twins)
        self.correct = set(range(1, self.n + 1)) - self.byzantine
        self.checker = Checker(self.n, set(self.correct))
        self.alive: dict[int, bool] = {}
        self.twin_b_group: dict[int, frozenset[int]] = {}
        self.nodes: dict[int, Node] = {}
        self._tick_at: dict[int, int | None] = {}
        self.dropped_unverified = 0
        self.malformed_dropped = 0
        self.restarted: dict[int, int] = {}
        self.disk: dict[int, tuple[tuple[int, int, int, int], ...]] = {}  # per replica: its A.Persist
        # The example application (prime.app.kv) at every replica, with state transfer.
        self.apps: dict[int, KvStore] = {r: KvStore(r) for r in range(1, cfg.n + 1)}
        self.app_waiting: dict[int, tuple[int, int]] = {}  # replica -> (replica, X) to fetch
        self.app_buffer: dict[int, list[tuple[int, tuple[Update, ...]]]] = {}
        self.app_transfers = 0
        self.trace = hashlib.sha256()  # every message and delivery, in order: replay proof
        self.conspiracy: dict[bytes, list[int]] = {}  # colluding Byzantine nodes' shared plan
        self.deliveries: dict[int, int] = {}
        self.first_ordinal_us: int | None = None
        self._make_nodes()
        self.clients = self._make_clients()
        self.load_end_us = int(cfg.duration * US)
        for rid, t in cfg.crash.items():
            self._push(int(t * US), _CRASH, rid, None)
        for rid, t in cfg.restart.items():
            self._push(int(t * US), _RESTART, rid, None)

    # ---------------------------------------------------------------- set-up

    def seed_for(self, purpose: str) -> int:
        """An independent, reproducible stream per purpose."""
        return random.Random(f"{self.cfg.seed}/{purpose}").getrandbits(64)

    def _make_scheme(self) -> Scheme:
        if not self.cfg.real_crypto:
            return KeyedHashScheme(self.seed_for("keys"))
        from prime.auth import Ed25519Scheme
        from prime.crypto.sign import SigningKey

        ids = range(1, self.n + 1 + self.cfg.clients)
        rng = random.Random(self.seed_for("ed25519"))
        keys = {i: SigningKey(rng.randbytes(32)) for i in ids}
        return Ed25519Scheme(keys, {i: k.verify_key for i, k in keys.items()})

    def _make_nodes(self) -> None:
        from prime.sim.byzantine import make_node

        for rid in range(1, self.n + 1):
            replica = Replica(self.params, rid, incarnation=1)
            signer = Signer(self.scheme, rid)
            behaviour = self.cfg.byz.get(rid)
            node = make_node(behaviour, self, rid, replica, signer) if behaviour else Node(self, rid, replica, signer)
            self.nodes[rid] = node
            self.alive[rid] = True
            self._tick_at[rid] = None
            self._step(rid, Tick(0))
        # Twins: a second instance of each twinned identity, same key, other half of the net.
        twin_rng = random.Random(self.seed_for("twins"))
        for rid in sorted(self.cfg.twins):
            others = [r for r in range(1, self.n + 1) if r != rid]
            twin_rng.shuffle(others)
            cut = max(1, len(others) // 2)
            group_a, group_b = frozenset(others[:cut]), frozenset(others[cut:])
            self.twin_b_group[rid] = group_b
            first = self.nodes[rid]
            second = Twin(self, rid, Replica(self.params, rid, incarnation=1), Signer(self.scheme, rid))
            second.key, second.group = rid + TWIN_KEY_OFFSET, group_b
            self.nodes[rid] = Twin(self, rid, first.replica, first.signer)
            self.nodes[rid].group = group_a
            key = second.key
            self.nodes[key] = second
            self.alive[key] = True
            self._tick_at[key] = None
            self._step(key, Tick(0))

    def _make_clients(self) -> list[SimClient]:
        # Clients attach to correct replicas that do not crash for good, and to recon
        # attackers: their updates must still reach everyone (docs/protocol.md section 8,
        # L4). Restarting replicas come first: what their clients submit while they
        # recover must be ordered too (docs/protocol.md section 2.10).
        homes = list(self.cfg.client_homes) or sorted(
            (
                r
                for r in range(1, self.n + 1)
                if (r not in self.cfg.crash or r in self.cfg.restart)
                and (r in self.correct or self.cfg.byz.get(r) == "recon")
            ),
            key=lambda r: (r not in self.cfg.restart, r),
        )
        clients = []
        for c in range(self.cfg.clients):
            cid = self.n + 1 + c
            client = SimClient(cid, homes[c % len(homes)])
            clients.append(client)
            for _ in range(self.cfg.inflight):
                self._push(0, _CLIENT_SUBMIT, client, None)
        self._client_signers = {c.cid: Signer(self.scheme, c.cid) for c in clients}
        self._client_of = {c.cid: c for c in clients}
        self._client_rng = random.Random(self.seed_for("clients"))
        return clients

    # ------------------------------------------------------------ scheduling

    def _push(self, at_us: int, kind: int, a: Any, b: Any) -> None:
        self._seq += 1
        order = a if kind == _TICK else _TICK_ORDER_KEYS + self._seq
        heapq.heappush(self._heap, (at_us, order, kind, a, b))

    def transmit(self, src: int, dst: int, env: Envelope) -> None:
        """Carry ``env`` from node ``src`` (a key) to replica ``dst``; a message to a
        twinned identity reaches the twin whose half of the network the sender is in."""
        via = self.nodes[src].rid
        if dst == via:
            return
        twin_b = self.twin_b_group.get(dst)
        if twin_b is not None and via in twin_b:
            dst += TWIN_KEY_OFFSET
        for delay in self.network.transit(src, dst, self.now_us):
            self._push(self.now_us + delay, _MSG, dst, (via, env))

    def transmit_all(self, src: int, env: Envelope) -> None:
        via = self.nodes[src].rid
        for dst in range(1, self.n + 1):
            if dst != via:
                self.transmit(src, dst, env)

    def _schedule_tick(self, rid: int) -> None:
        deadline = self.nodes[rid].replica.next_deadline_us()
        if deadline is None:
            return
        current = self._tick_at[rid]
        if current is None or deadline < current or current <= self.now_us:
            self._tick_at[rid] = deadline
            self._push(max(deadline, self.now_us), _TICK, rid, deadline)

    # --------------------------------------------------------------- stepping

    def _step(self, rid: int, event: Event) -> None:
        node = self.nodes[rid]
        replica = node.replica
        replica.step(event)
        if self.cfg.check_invariants and node.core_invariants:
            replica.invariants()
        work = deque(replica.take_actions())
        while work:
            action = work.popleft()
            if isinstance(action, A.SignJob):
                envs = node.signer.sign_batch(action.messages, action.bodies, direct=action.direct)
                replica.step(CryptoDone(action.job_id, envs))
                work.extendleft(reversed(replica.take_actions()))  # its effects come first
            elif isinstance(action, (A.Send, A.Broadcast)):
                if isinstance(action, A.Send) and rid in self.correct:
                    if _catchup_answer(action.env):
                        size = len(action.env.raw)
                        self.checker.record_catchup_answer(rid, action.dest, size, self.now_us)
                node.outgoing(action)
            elif isinstance(action, A.Deliver):
                self._on_deliver(rid, action)
            elif isinstance(action, A.ThresholdJob):
                result = self._threshold(node.rid, action)
                replica.step(ThresholdDone(action.job_id, result))
                work.extendleft(reversed(replica.take_actions()))
            elif isinstance(action, A.Persist):
                self.disk[rid] = action.record  # survives a restart
            elif isinstance(action, A.StateTransferNeeded):
                if rid in self.correct:
                    self.checker.record_jump(rid, action.ordinal, self.now_us)
                    self.apps[rid].on_state_transfer_needed(action.ordinal)
        self._schedule_tick(rid)

    def _threshold(self, rid: int, job: A.ThresholdJob) -> bytes | None:
        """Shoup threshold RSA for a replica's view change (small modulus: simulation)."""
        from prime.crypto import threshold

        if job.op == "share":
            nonce = hashlib.sha256(b"%d/%d/" % (self.cfg.seed, rid) + job.statement).digest()
            share = threshold.sign_share(self.threshold_shares[rid - 1], job.statement, nonce_seed=nonce)
            return share.to_bytes()
        raw = (share for _, share in job.shares)
        return threshold.combine_encoded(
            self.threshold_public, job.statement, raw, verify_shares=job.verify_shares
        )

    def _restart(self, rid: int) -> None:
        """Replica ``rid`` comes back with empty state and a new incarnation (its start
        time in seconds, like the original's wall-clock incarnations)."""
        old = self.nodes[rid].replica
        if self.alive[rid]:
            self._stop(rid)  # no crash before: it stops now
        incarnation = max(old.incarnation + 1, self.now_us // US + 1)
        replica = Replica(self.params, rid, incarnation=incarnation, recovering=True,
                          acked_record=self.disk.get(rid) if self.cfg.keep_disk else None)
        self.nodes[rid] = Node(self, rid, replica, Signer(self.scheme, rid))
        self.alive[rid] = True
        self._tick_at[rid] = None
        self.restarted[rid] = self.restarted.get(rid, 0) + 1
        self.checker.record_restart(rid)
        self.apps[rid] = KvStore(rid)
        self.app_waiting.pop(rid, None)
        self.app_buffer.pop(rid, None)
        self._step(rid, Tick(self.now_us))
        # Its clients: what the old incarnation had taken in died with it (the application
        # sees its daemon go away). They submit that many new updates to the new one, at
        # once, while it is still recovering; those must be ordered like any other.
        for client in self.clients:
            if client.home != rid:
                continue
            for seq in sorted(client.handed):
                self._client_lost(client, seq)
            for _ in range(client.lost):
                self._push(self.now_us, _CLIENT_SUBMIT, client, None)
            client.lost = 0

    def _stop(self, rid: int) -> None:
        """Replica ``rid`` goes down: killed, or (``clean_stop``) after writing its exact record."""
        self.alive[rid] = False
        if rid in self.cfg.clean_stop:
            self.disk[rid] = self.nodes[rid].replica.clean_stop_record()

    def _client_lost(self, client: SimClient, seq: int) -> None:
        """Update ``seq`` of ``client`` went down with its home daemon: no reply is owed."""
        client.handed.discard(seq)
        if client.outstanding.pop(seq, None) is not None:
            self.checker.record_lost_with_home((client.cid, client.incarnation, seq))
            client.lost += 1

    def _client_in(self, rid: int, env: Envelope) -> None:
        """A signed update reaches replica ``rid``'s application socket."""
        client = self._client_of.get(env.sender)
        own = client is not None and client.home == rid and env.msg.seq in client.outstanding
        if not self.alive[rid]:
            if own:
                self._client_lost(client, env.msg.seq)  # its daemon is down
            return
        if own:
            client.handed.add(env.msg.seq)
        self._advance(rid)
        self._step(rid, ClientUpdate(env))

    def _advance(self, rid: int) -> None:
        if self.nodes[rid].replica.now_us < self.now_us:
            self._step(rid, Tick(self.now_us))

    def _on_deliver(self, rid: int, action: A.Deliver) -> None:
        if self.first_ordinal_us is None:
            self.first_ordinal_us = self.now_us
        self.deliveries[rid] = self.deliveries.get(rid, 0) + 1
        self.trace.update(b"d%d,%d,%d," % (self.now_us, rid, action.ordinal))
        for u in action.updates:
            self.trace.update(b"%d,%d,%d," % (u.client, u.incarnation, u.seq) + u.payload)
        self.checker.record_delivery(rid, action.ordinal, action.updates, action.requests, self.now_us)
        self._app_deliver(rid, action.ordinal, action.updates)
        for u in action.updates:
            client = self._client_of.get(u.client)
            if client is None or client.home != rid or u.kind != UpdateKind.APP:
                continue
            self._client_replied(client, u.seq)

    def _client_replied(self, client: SimClient, seq: int) -> None:
        """The client learns update ``seq`` was applied: it records the reply and submits
        its next update."""
        sent = client.outstanding.pop(seq, None)
        if sent is None:
            return
        client.handed.discard(seq)
        self.checker.record_reply((client.cid, client.incarnation, seq), self.now_us)
        client.latencies_us.append(self.now_us - sent)
        if self.now_us < self.load_end_us:
            self._push(self.now_us, _CLIENT_SUBMIT, client, None)

    # ---------------------------------------------------------- application

    def _app_deliver(self, rid: int, ordinal: int, updates: tuple[Update, ...]) -> None:
        if rid not in self.correct:
            return  # only correct replicas' applications are modelled
        if rid in self.app_waiting:
            self.app_buffer.setdefault(rid, []).append((ordinal, updates))
        else:
            want = self.apps[rid].apply(ordinal, updates)
            if want is not None:
                self.app_waiting[rid] = want
        self._serve_state_transfers()

    def _serve_state_transfers(self) -> None:
        """A waiting application takes state as of X from any correct peer that has it."""
        for rid, key in list(self.app_waiting.items()):
            for peer in sorted(self.correct):
                blob = self.apps[peer].snapshots.get(key) if peer != rid else None
                if blob is None:
                    continue
                app = self.apps[rid]
                app.restore(blob)
                self.app_transfers += 1
                del self.app_waiting[rid]
                for ordinal, updates in self.app_buffer.pop(rid, []):
                    if ordinal > key[1]:
                        app.apply(ordinal, updates)
                # The transferred client table answers the home's clients for updates
                # ordered in the ordinals the replica jumped over.
                for client in self.clients:
                    if client.home == rid:
                        for seq in sorted(client.outstanding):
                            if (client.cid, client.incarnation, seq) in app.applied:
                                self._client_replied(client, seq)
                break

    def app_violations(self) -> list[str]:
        """Correct, running applications that are not waiting for state and have applied the
        same ordinal end equal. (The run stops once every update liveness covers is
        delivered; some replicas may still be an ordinal behind with a Byzantine replica's
        clients' updates, so only equal execution points are comparable.)"""
        by_ordinal: dict[int, dict[int, str]] = {}
        for r in sorted(self.must_deliver()):
            app = self.apps[r]
            if r not in self.app_waiting and not app.transferring:
                by_ordinal.setdefault(app.ordinal, {})[r] = app.digest()
        return [
            f"KV application states differ at ordinal {ordinal}: {digests}"
            for ordinal, digests in sorted(by_ordinal.items())
            if len(set(digests.values())) > 1
        ]

    def _submit(self, client: SimClient) -> None:
        seq = client.next_seq
        client.next_seq += 1
        key = b"k%d" % self._client_rng.randrange(16)
        payload = put(key, self._client_rng.randbytes(self.cfg.payload_bytes))
        u = Update(client.cid, client.incarnation, seq, int(UpdateKind.APP), payload)
        env = self._client_signers[client.cid].sign_one(u)
        self.checker.record_submit(client.cid, client.incarnation, seq, payload, self.now_us)
        client.outstanding[seq] = self.now_us
        self._push(self.now_us + 50, _CLIENT_IN, client.home, env)

    def deliver_later(self, dst: int, via: int, env: Envelope, delay_us: int) -> None:
        """Hand ``env`` to ``dst`` again after ``delay_us`` (a delaying Byzantine node)."""
        self._push(self.now_us + delay_us, _MSG, dst, (via, env))

    def inject_client_update(self, rid: int, env: Envelope) -> None:
        """Hand a signed update to replica ``rid``'s intake (Byzantine replays use this)."""
        self._push(self.now_us + 50, _CLIENT_IN, rid, env)

    # ------------------------------------------------------------------- run

    def faults_end_us(self) -> int:
        crash_end = max((int(t * US) for t in (*self.cfg.crash.values(), *self.cfg.restart.values())), default=0)
        return max(self.network.faults_end_us(), crash_end)

    def run(self, progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Run the scenario, then the liveness drain; return the summary.

        ``progress`` (optional) is called about once per virtual second with a
        small dict of running figures, for a live progress line."""
        deadline = max(self.load_end_us, self.faults_end_us()) + int(self.cfg.liveness_bound * US)
        self._push(100_000, _PROBE, None, None)
        try:
            self._loop(deadline, progress)
        except AssertionError as e:
            # A broken invariant is a bug, and stops a normal run loudly. In a negative
            # control (more than f faulty, or weakened quorums) the protocol is broken on
            # purpose, so it is one more violation to report.
            if self.liveness_applicable()[0]:
                raise
            self.checker._violate(f"INV core invariant broken: {e!r}")
        return self.summary(deadline)

    def run_until(self, until_us: int) -> None:
        """Go on running after ``run`` returned, up to virtual time ``until_us``; unless
        ``resume_load`` restarted the clients, the cluster is idle meanwhile
        (tests/unit/test_idle_timers.py). The clock ends at ``until_us``."""
        self._loop(until_us, None)
        self.now_us = max(self.now_us, until_us)

    def resume_load(self, seconds: float) -> None:
        """The clients submit again from now on, for ``seconds``, each keeping
        ``inflight`` updates outstanding as at the start."""
        self.load_end_us = self.now_us + int(seconds * US)
        for client in self.clients:
            for _ in range(self.cfg.inflight - len(client.outstanding)):
                self._push(self.now_us, _CLIENT_SUBMIT, client, None)

    def _loop(self, deadline: int, progress: Callable[[dict[str, Any]], None] | None) -> None:
        load_end = self.load_end_us
        heap = self._heap
        while heap:
            at, _, kind, a, b = heap[0]
            if at > deadline:
                break
            heapq.heappop(heap)
            self.now_us = at
            # Kinds are exclusive; the most frequent ones are tested first.
            if kind == _MSG:
                if self.alive[a]:
                    self._on_message(a, *b)
            elif kind == _TICK:
                if self.alive[a] and self._tick_at[a] == b:
                    self._tick_at[a] = None
                    self._step(a, Tick(at))
            elif kind == _CLIENT_IN:
                self._client_in(a, b)
            elif kind == _CLIENT_SUBMIT:
                if at < load_end:
                    self._submit(a)
            elif kind == _CRASH:
                self._stop(a)
            elif kind == _RESTART:
                self._restart(a)
            elif kind == _PROBE:
                if progress is not None and at % US == 0:
                    progress(self._progress())
                if at >= max(load_end, self.faults_end_us()) and self._all_delivered():
                    break
                self._push(at + 100_000, _PROBE, None, None)

    def _on_message(self, dst: int, via: int, env: Envelope) -> None:
        self.trace.update(b"m%d,%d,%d," % (self.now_us, dst, via))
        self.trace.update(env.raw)  # the same digest as hashing the concatenation, no copy
        if not self.verifier.verify(env):
            self.dropped_unverified += 1
            return
        node = self.nodes[dst]
        if not node.incoming(via, env):
            return
        self._advance(dst)
        self._step(dst, Inbound(via, env))

    # --------------------------------------------------------------- results

    def view_change_log(self) -> list[dict[str, Any]]:
        """Per view change: when the first and the last correct replica pre-installed
        it, how many did, and when it completed (None until the view change exists)."""
        per_view: dict[int, list[int]] = {}
        done: dict[int, int] = {}
        for rid in sorted(self.correct):
            for rec in self.nodes[rid].replica.view_changes:
                per_view.setdefault(rec.view, []).append(rec.preinstalled_us)
                if rec.completed_us is not None:
                    done[rec.view] = max(done.get(rec.view, 0), rec.completed_us)
        return [
            {
                "view": v,
                "preinstalled_s": round(min(ts) / US, 6),
                "preinstalled_all_s": round(max(ts) / US, 6),
                "replicas": len(ts),
                "completed_s": round(done[v] / US, 6) if v in done else None,
            }
            for v, ts in sorted(per_view.items())
        ]

    def _progress(self) -> dict[str, Any]:
        done = sum(len(c.latencies_us) for c in self.clients)
        return {
            "virtual_s": self.now_us / US,
            "completed": done,
            "submitted": len(self.checker.submitted),
            "ordinals": max(self.deliveries.values(), default=0),
            "violations": len(self.checker.violations),
        }

    def must_deliver(self) -> set[int]:
        return {r for r in self.correct if self.alive[r]}

    def cut_off(self) -> dict[int, list[tuple[int, int]]]:
        """Per replica, the windows (virtual us) in which a partition cut it off: it is on
        the smaller side (both sides, if equal) of that partition."""
        out: dict[int, list[tuple[int, int]]] = {}
        for p in self.network.partitions:
            small = p.a if len(p.a) < len(p.b) else p.b if len(p.b) < len(p.a) else p.a | p.b
            for r in small:
                out.setdefault(r, []).append((p.start_us, p.end_us))
        return out

    def unfaulted(self) -> set[int]:
        """Correct replicas never crashed, restarted or cut off by a partition (L2)."""
        faulted = set(self.cfg.crash) | set(self.cfg.restart) | set(self.cut_off())
        return self.must_deliver() - faulted

    def client_homes(self) -> dict[ClientStamp, int]:
        """The home replica of every update of a client of a correct replica (L3)."""
        home = {c.cid: c.home for c in self.clients if c.home in self.correct}
        lost = self.checker.lost_with_home
        return {s: home[s[0]] for s in self.checker.submitted if s[0] in home and s not in lost}

    def _reply_delays(self) -> dict[ClientStamp, int]:
        return self.checker.reply_delays(self.client_homes(), self.now_us, self.cut_off())

    def submitted_stamps(self) -> list[ClientStamp]:
        """Stamps liveness covers: those of clients of correct replicas (a Byzantine
        replica's own clients, such as a recon attacker's, have no guarantee)."""
        correct_clients = {c.cid for c in self.clients if c.home in self.correct}
        lost = self.checker.lost_with_home
        return sorted(
            s for s in self.checker.submitted if s[0] in correct_clients and s not in lost
        )

    def apps_in_transfer(self) -> list[int]:
        """Correct, running replicas whose application was told to transfer state and has
        not got it yet (its replica's CLIENT_STATE_TRANSFER marker not yet delivered, or
        no peer serving the state as of it)."""
        apps, waiting = self.apps, self.app_waiting
        return sorted(r for r in self.must_deliver() if apps[r].transferring or r in waiting)

    def _all_delivered(self) -> bool:
        if self.apps_in_transfer():
            return False  # its clients' replies may come with the state it takes
        stamps = self.submitted_stamps()
        for r in self.must_deliver():
            rec = self.checker.replicas.get(r)
            if rec is None:
                return False
            jump = max(rec.jumped_to, default=0)
            for stamp in stamps:
                if stamp in rec.delivered_stamps:
                    continue
                at = self.checker.stamp_ordinal.get(stamp)
                if at is None or at > jump:
                    return False
        return True

    def liveness_applicable(self) -> tuple[bool, str]:
        """Liveness is promised within the fault model: at most f Byzantine and k crashed
        replicas, and real quorums. Faulty leaders are replaced by suspect-leader and
        the view change, so they no longer exempt a run."""
        if len(self.byzantine) > self.cfg.f or self.cfg.quorum_weaken_by:
            return False, "negative control (more than f faults or weakened quorums)"
        if len(self.byzantine) + len(set(self.cfg.crash) | set(self.cfg.restart)) > self.cfg.f + self.cfg.k:
            return False, "more than f+k faulty replicas"
        return True, ""

    def summary(self, deadline_us: int) -> dict[str, Any]:
        applicable, reason = self.liveness_applicable()
        if applicable:
            self.checker.check_liveness(self.must_deliver(), self.submitted_stamps(), self.cfg.liveness_bound)
            self.checker.check_catchup_answers(self.cfg.catchup_answer_bytes_per_s_max)
            self.checker.check_execution(self.unfaulted())
            self.checker.check_reply_delay(
                self.client_homes(), int(self.cfg.reply_bound * US), self.now_us, self.cut_off()
            )
            for v in self.app_violations():
                self.checker._violate(v)
            for r in self.apps_in_transfer():
                self.checker._violate(
                    f"L7 r{r}'s application still waits for its state transfer "
                    f"{self.cfg.liveness_bound:g}s after faults stopped"
                )
        latencies = sorted(x for c in self.clients for x in c.latencies_us)
        # The system's rate: what correct replicas delivered ordinal by ordinal. A replica
        # that took a state transfer delivered less (it jumped over the rest), so it does
        # not define the rate; if every one did, the highest count does.
        records = [self.checker.replicas[r] for r in self.must_deliver() if r in self.checker.replicas]
        whole = [rec.updates_delivered for rec in records if not rec.jumped_to]
        delivered_updates = max(whole or [rec.updates_delivered for rec in records] or [0])
        duration_s = self.cfg.duration
        return {
            "seed": self.cfg.seed,
            "n": self.n,
            "f": self.cfg.f,
            "k": self.cfg.k,
            "net": self.cfg.net,
            "byz": {str(k): v for k, v in sorted(self.cfg.byz.items())},
            "crash": {str(k): v for k, v in sorted(self.cfg.crash.items())},
            "restart": {str(k): v for k, v in sorted(self.cfg.restart.items())},
            "twins": sorted(self.cfg.twins),
            "clean_stop": sorted(self.cfg.clean_stop),
            "incarnations": {
                str(r): n.replica.incarnation for r, n in sorted(self.nodes.items()) if r <= self.n
            },
            "partitions": list(self.cfg.partitions),
            "delivered": {
                str(r): (self.checker.replicas[r].updates_delivered if r in self.checker.replicas else 0)
                for r in range(1, self.n + 1)
            },
            "ordinals": {str(r): self.deliveries.get(r, 0) for r in range(1, self.n + 1)},
            "submitted": len(self.checker.submitted),
            "lost_with_home": len(self.checker.lost_with_home),
            "throughput_ups": round(delivered_updates / duration_s, 1),
            "p50_ms": round(statistics.median(latencies) / 1000, 3) if latencies else None,
            "p99_ms": round(latencies[int(0.99 * (len(latencies) - 1))] / 1000, 3) if latencies else None,
            "reply_delay_max_s": round(max(self._reply_delays().values(), default=0) / US, 6),
            "view_changes": self.view_change_log(),
            "recon": {
                "erasure_codes": self.params.use_erasure_codes,
                "bytes_sent": sum(n.replica.stats.recon_bytes_sent for n in self.nodes.values()),
                "sent": sum(n.replica.stats.recon_requests_sent for n in self.nodes.values()),
                "rebuilt": sum(n.replica.stats.recon_rebuilt for n in self.nodes.values()),
                "bad_rebuilds": sum(n.replica.stats.recon_bad_rebuilds for n in self.nodes.values()),
            },
            "suspicions": {
                str(r): n.replica.suspect.suspicions
                for r, n in sorted(self.nodes.items())
                if n.replica.suspect.suspicions
            },
            "tat_leader_ms": {
                str(r): round(self.nodes[r].replica.suspect.tat_leader_us / 1000, 3)
                for r in sorted(self.correct)
            },
            "jumps": {str(r): n.replica.stats.jumps for r, n in sorted(self.nodes.items()) if n.replica.stats.jumps},
            "replayed_filled": {
                str(r): n.replica.stats.replayed_filled
                for r, n in sorted(self.nodes.items())
                if n.replica.stats.replayed_filled
            },
            "virtual_s": round(self.now_us / US, 3),
            "liveness_checked": applicable,
            "liveness_skipped_reason": reason,
            "dropped_unverified": self.dropped_unverified,
            "dropped_malformed": self.malformed_dropped,
            "app": {
                "state_transfers": self.app_transfers,
                "waiting": sorted(self.app_waiting),
                "kv_keys": {str(r): len(a.data) for r, a in sorted(self.apps.items()) if r in self.correct},
            },
            "duplicates_suppressed_by_app": {
                str(r): rec.duplicates_suppressed
                for r, rec in sorted(self.checker.replicas.items())
                if rec.duplicates_suppressed
            },
            "network": {"delivered": self.network.delivered, "dropped": self.network.dropped},
            "violations": list(self.checker.violations),
            "ok": not self.checker.violations,
            "replay": self.cfg.replay_command(),
            "trace_sha256": self.trace.hexdigest(),
        }
