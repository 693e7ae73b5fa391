"""View change: reliable broadcast of state, a threshold-signed choice of whose state
defines the new view, and a replay that keeps every committed update (PROTOCOL.md 2.6;
Kirsch's thesis, "proof-based view change").

Replicas reliably broadcast (RB_INIT/ECHO/READY, Q13-Q15) a REPORT (their
execution point) and one PC_SET per prepare-certified but unexecuted ordinal.
Once a replica holds *complete state* from ``2f+k+1`` replicas it proposes that
set (VC_LIST); replicas holding complete state for a proposed set sign it with
a threshold share (VC_PARTIAL_SIG, computed outside the core: ``ThresholdJob``);
``2f+k+1`` shares combine into a VC_PROOF for the new leader, who issues a tiny
REPLAY naming the set. After REPLAY_PREPARE/REPLAY_COMMIT rounds every replica
replays the same ordinals: the union of the listed PC_SETs, NO_OPs elsewhere,
up to ``start_seq``, and the new leader continues from ``start_seq``.

Decisions and hardening (PROTOCOL.md 9, 10):
* Reliable broadcast counts echoes and readies per payload digest (Bracha);
  the original binds an instance to the first payload seen, which lets an
  equivocating originator stall a correct replica (``Params.legacy`` "RB").
* Open question 3: in the replay union, the PC_SET whose pre-prepare has the
  *highest view* wins an ordinal (ties: lowest replica id). A prepare
  certificate of a later view supersedes an older one for the same ordinal;
  "first by replica id" could resurrect a stale certificate.
* H5: ``executed_ord`` is not used; retransmissions stop when the view change
  is done, whatever executes meanwhile.
* H6: RB payloads are bound to their origin (payload signer and, for RB_INIT,
  the sender); PC_SETs need the leader's PP and distinct non-leader Prepares of
  its view; only lists of at least ``2f+k+1`` members get a share.
* H7: shares carry Shoup's proofs; combination skips bad shares and is retried
  as more shares arrive (the original combines once, unverified, when exactly
  2f+k+1 shares are present).
* H11: replayed PC_SET ordinals keep their certificate (reported again in the
  next view change), and a REPORT carries ``replay_floor``, the highest ordinal
  a replay fixed, which raises the next ``start_seq``.
* Open question 5: a replica whose state is incomplete because a peer's REPORT
  is ahead asks that peer for what it missed; replayed ordinals come back as
  REPLAYED records and are installed from f+1 matching ones (``catchup``).
* H12: ordering messages of a view are ignored until its replay executed, and a
  new leader never re-proposes an ordinal below ``start_seq``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prime.core.order import pre_prepare_digest
from prime.core.quorum import leader_of
from prime.msgs import (
    PcSet,
    RbEcho,
    RbInit,
    RbReady,
    Replay,
    ReplayCommit,
    ReplayPrepare,
    Report,
    VcList,
    VcPartialSig,
    VcProof,
)
from prime.wire import Envelope

if TYPE_CHECKING:
    from prime.core.replica import Replica


def statement(view: int, members: int, start_seq: int) -> bytes:
    """What the threshold signature covers: H(view || list || startSeq) (4.3)."""
    return hashlib.sha256(
        b"prime-vc" + view.to_bytes(4, "big") + members.to_bytes(4, "big") + start_seq.to_bytes(8, "big")
    ).digest()


def replay_digest(r: Replay) -> bytes:
    return hashlib.sha256(statement(r.view, r.members, r.start_seq) + r.signature).digest()


def bits(members: int) -> list[int]:
    return [i for i in range(1, 32) if members >> i & 1]


@dataclass(slots=True)
class RbSlot:
    """One reliable-broadcast instance ``(origin, seq)``.

    Echoes and readies are counted per payload digest, as in Bracha's protocol: an
    originator that sends two payloads cannot keep a correct replica that saw the
    other one first from delivering the payload the others agreed on. Each peer's
    first echo and first ready count, so an instance holds at most N+1 payloads."""

    payloads: dict[bytes, Envelope] = field(default_factory=dict)
    echoes: dict[bytes, set[int]] = field(default_factory=dict)
    readies: dict[bytes, set[int]] = field(default_factory=dict)
    echoed_by: set[int] = field(default_factory=set)
    readied_by: set[int] = field(default_factory=set)
    sent_echo: bool = False
    sent_ready: bool = False
    delivered: bool = False


class ViewChange:
    """View-change state and handlers of one replica (all reset when a view is pre-installed)."""

    RB_SEQ_MAX = 4096

    def __init__(self, replica: Replica) -> None:
        self.r = replica
        self.replay_floor = 0  # H11: the highest ordinal fixed by an executed replay
        self.reset()

    def reset(self) -> None:
        self.rb: dict[tuple[int, int], RbSlot] = {}
        self.my_rb: list[Envelope] = []
        self.reports: dict[int, Report] = {}
        self.pc_sets: dict[int, dict[int, Envelope]] = {}
        self.max_pc_seq: dict[int, int] = {}
        self.complete: set[int] = set()
        self.my_vc_list: VcList | None = None
        self.lists_seen: set[int] = set()
        self.pending_lists: list[int] = []
        self.shares: dict[tuple[int, int], dict[int, bytes]] = {}
        self.combined: set[tuple[int, int]] = set()
        self.attempted: set[tuple[int, int]] = set()
        self.failed: dict[tuple[int, int], int] = {}  # key -> shares its failed attempt had
        self.my_proof: VcProof | None = None
        self.combining: dict[tuple[int, int], int] = {}  # key -> shares in the attempt
        self.my_shares: list[VcPartialSig] = []
        self.replay: Envelope | None = None
        self.replay_digest = b""
        self.replay_conflict_seen = False
        self.replay_prepares: dict[int, bytes] = {}
        self.replay_commits: dict[int, bytes] = {}
        self.sent_replay_prepare = False
        self.sent_replay_commit = False
        self.sent_replay = False
        self.proof_sent_us: int | None = None
        self.replaying = False  # executing the replay: its executions must not re-enter it

    @property
    def active(self) -> bool:
        return not self.r.view_change_done

    # ------------------------------------------------------------ start (2.6.2)

    def start(self) -> None:
        """Report our state: one PC_SET per prepare-certified, unexecuted ordinal, then a REPORT."""
        self.reset()
        r, order = self.r, self.r.ord
        view, rb_seq = r.view, 0
        pc_sets = []
        for g in range(order.aru + 1, order.high_seq + 1):
            slot = order.history.get(g)
            if slot is None or slot.pp is None or not slot.prepare_cert:
                continue
            rb_seq += 1
            pc_sets.append(PcSet(r.me, view, rb_seq, slot.pp, slot.prepare_cert))
        report = Report(r.me, view, 0, order.aru, rb_seq, self.replay_floor)
        r.sign_direct(report, dest=-1)
        for pc in pc_sets:
            r.sign_direct(pc, dest=-1)
        r.set_timer("vc_retrans", r.now_us + r.p.retrans_period_us)

    def on_own_payload(self, via: int, env: Envelope) -> None:
        """Our REPORT or PC_SET came back signed: reliably broadcast it."""
        if via != self.r.me or env.sender != self.r.me or not self.active:
            return  # these travel only inside RB messages
        if env.msg.rb_view != self.r.view:
            return
        self.r.sign_and_send(RbInit(env))

    def on_retrans_timeout(self) -> None:
        if self.r.executed_in_view:
            return
        self.r.set_timer("vc_retrans", self.r.now_us + self.r.p.retrans_period_us)
        self.recheck_all()  # asks again whoever is still ahead of us
        for env in self.my_rb:
            self.r.forward(env)
        if self.replay is not None:
            self.r.forward(self.replay)
            if self.sent_replay_prepare:
                self.r.sign_and_send(ReplayPrepare(self.r.view, self.replay_digest))
            if self.sent_replay_commit:
                self.r.sign_and_send(ReplayCommit(self.r.view, self.replay_digest))
        else:
            if self.my_vc_list is not None:
                self.r.sign_and_send(self.my_vc_list)
            for share in self.my_shares:
                self.r.sign_and_send(share)
            if self.my_proof is not None:
                self.r.sign_and_send(self.my_proof, dest=self.r.leader)

    # ---------------------------------------------------- reliable broadcast (2.6.1)

    def _rb_slot(self, env: Envelope, kind: str) -> tuple[RbSlot, bytes] | None:
        """The instance an RB message of ``kind`` (init, echo, ready) belongs to and its
        payload's digest; None if the message is to be ignored (a peer's second echo or
        ready is, before its payload is kept)."""
        init = kind == "init"
        payload = env.msg.payload
        tag = payload.msg
        origin, seq = tag.rb_origin, tag.rb_seq
        if not self.active or tag.rb_view != self.r.view:
            return None
        bound = payload.sender == origin and (not init or env.sender == origin)
        if not bound and "H6" not in self.r.p.legacy:
            self.r.drop("rb:origin")  # H6: a payload is bound to its originator
            return None
        if not 1 <= origin <= self.r.n or seq > self.RB_SEQ_MAX or not 1 <= env.sender <= self.r.n:
            return None
        # What the origin signed (its id and the body), not how the envelope was framed:
        # one REPORT signed twice (another signature or Merkle position) is one payload.
        digest = hashlib.sha256(payload.leaf_bytes).digest()
        slot = self.rb.get((origin, seq))
        if slot is None:
            slot = self.rb[(origin, seq)] = RbSlot()
        if env.sender in (slot.echoed_by if kind == "echo" else slot.readied_by if kind == "ready" else ()):
            return None
        if digest not in slot.payloads:
            if slot.payloads:
                self.r.stats.equivocations_seen += 1  # evidence against the originator
                if "RB" in self.r.p.legacy:
                    return None  # the C code: the first payload seen binds the instance
            if init and slot.sent_echo:
                return None  # a second INIT is not echoed, so there is nothing to keep
            slot.payloads[digest] = payload
        return slot, digest

    def _send_rb(self, cls: type, slot: RbSlot, digest: bytes) -> None:
        self.r.sign_and_send(cls(slot.payloads[digest]))

    def _echo_and_ready(self, slot: RbSlot, digest: bytes) -> None:
        if not slot.sent_echo:
            slot.sent_echo = True
            self._send_rb(RbEcho, slot, digest)
        slot.sent_ready = True
        self._send_rb(RbReady, slot, digest)

    def _keep_own(self, via: int, env: Envelope) -> None:
        if env.sender == self.r.me and via == self.r.me:
            self.my_rb.append(env)  # retransmitted until the new view executes

    def on_rb_init(self, via: int, env: Envelope) -> None:
        found = self._rb_slot(env, "init")
        if found is None:
            return
        slot, digest = found
        self._keep_own(via, env)
        if not slot.sent_echo:
            slot.sent_echo = True
            self._send_rb(RbEcho, slot, digest)

    def _count(self, via: int, env: Envelope, kind: str) -> tuple[RbSlot, bytes, int] | None:
        """Count a peer's echo or ready for the payload it carries: (instance, digest, count)."""
        found = self._rb_slot(env, kind)
        if found is None:
            return None
        slot, digest = found
        self._keep_own(via, env)
        (slot.echoed_by if kind == "echo" else slot.readied_by).add(env.sender)
        votes = (slot.echoes if kind == "echo" else slot.readies).setdefault(digest, set())
        votes.add(env.sender)
        return slot, digest, len(votes)

    def on_rb_echo(self, via: int, env: Envelope) -> None:
        counted = self._count(via, env, "echo")
        if counted is None:
            return
        slot, digest, echoes = counted
        if echoes >= self.r.q.certificate and not slot.sent_ready:  # Q13
            self._echo_and_ready(slot, digest)

    def on_rb_ready(self, via: int, env: Envelope) -> None:
        counted = self._count(via, env, "ready")
        if counted is None:
            return
        slot, digest, readies = counted
        if readies >= self.r.q.one_correct and not slot.sent_ready:  # Q14
            self._echo_and_ready(slot, digest)
        if readies >= self.r.q.certificate and not slot.delivered:  # Q15
            slot.delivered = True
            self._deliver(slot.payloads[digest])

    # ------------------------------------------------- REPORT and PC_SET (2.6.2)

    def _deliver(self, payload: Envelope) -> None:
        msg = payload.msg
        i = msg.rb_origin
        if isinstance(msg, Report):
            if i in self.reports:
                return
            self.reports[i] = msg
            floor = max(msg.exec_aru, msg.replay_floor)
            self.max_pc_seq[i] = max(self.max_pc_seq.get(i, 0), floor)
        else:
            if not self._valid_pc_set(msg):
                self.r.drop("pc_set:invalid")
                return
            held = self.pc_sets.setdefault(i, {})
            report = self.reports.get(i)
            if report is not None and msg.rb_seq > report.pc_set_size:
                return  # H6: no more PC_SETs than the REPORT announced
            held.setdefault(msg.rb_seq, payload)
            self.max_pc_seq[i] = max(self.max_pc_seq.get(i, 0), msg.pre_prepare.msg.seq)
        self.check_complete(i)

    def _valid_pc_set(self, pc: PcSet) -> bool:
        return self.valid_prepare_cert(pc.pre_prepare, pc.prepares)

    def valid_prepare_cert(self, pp_env: Envelope, prepares: tuple[Envelope, ...]) -> bool:
        """H6: the PP is the leader's of its view; 2f+k distinct non-leaders Prepared it in that view."""
        pp = pp_env.msg
        ppd = pre_prepare_digest(pp)
        if "H6" in self.r.p.legacy:  # the C checks: the count, and each Prepare's digest
            return len(prepares) == self.r.q.prepare and all(p.msg.digest == ppd for p in prepares)
        leader = leader_of(pp.view, self.r.n)
        if pp_env.sender != leader or len(pp.rows) != self.r.n:
            return False
        if any(row is not None and len(row.msg.cum_aru) != self.r.n for row in pp.rows):
            return False
        signers = {p.sender for p in prepares}
        return (
            len(prepares) == self.r.q.prepare
            and len(signers) == len(prepares)
            and leader not in signers
            and all(1 <= s <= self.r.n for s in signers)
            and all(p.msg.digest == ppd and p.msg.view == pp.view and p.msg.seq == pp.seq for p in prepares)
        )

    def check_complete(self, i: int) -> None:
        if not self.active or i in self.complete or self.replaying:
            return
        report = self.reports.get(i)
        if report is None or len(self.pc_sets.get(i, {})) != report.pc_set_size:
            return
        if self.r.ord.aru < report.exec_aru:
            # We must catch up first (re-checked after executions and jumps). Ordinals a
            # replay decided have no certificate, so ask the replicas that are ahead.
            self.r.catchup.ask(i)
            return
        self.complete.add(i)
        self.r.log.debug("complete state of %d (aru %d, %d PC_SETs)", i, report.exec_aru, report.pc_set_size)
        if len(self.complete) == self.r.q.certificate and self.my_vc_list is None:
            members = sum(1 << j for j in self.complete)
            self.my_vc_list = VcList(self.r.view, members)
            self.r.sign_and_send(self.my_vc_list)
        for members in list(self.pending_lists):
            if self._subset(members):
                self.pending_lists.remove(members)
                self._sign_list(members)
        self.try_replay_prepare()
        self.try_execute_replay()

    def recheck_all(self) -> None:
        for i in range(1, self.r.n + 1):
            self.check_complete(i)

    def _subset(self, members: int) -> bool:
        return all(j in self.complete for j in bits(members))

    # -------------------------------------------- VC_LIST and shares (2.6.3)

    def on_vc_list(self, via: int, env: Envelope) -> None:
        msg: VcList = env.msg
        if not self.active or msg.view != self.r.view or msg.members in self.lists_seen:
            return
        members = bits(msg.members)
        # H6: only lists of 2f+k+1 real replicas (the C code signs any subset, even empty).
        too_few = len(members) < self.r.q.certificate and "H6" not in self.r.p.legacy
        if msg.members & 1 or too_few or any(j > self.r.n for j in members):
            self.r.drop("vc_list:members")
            return
        if len(self.lists_seen) >= 4 * self.r.n:
            return
        self.lists_seen.add(msg.members)
        if self._subset(msg.members):
            self._sign_list(msg.members)
        else:
            self.pending_lists.append(msg.members)

    def start_seq_for(self, members: int) -> int:
        return 1 + max((self.max_pc_seq.get(i, 0) for i in bits(members)), default=0)

    def _sign_list(self, members: int) -> None:
        start_seq = self.start_seq_for(members)
        self.r.request_threshold(
            "share", statement(self.r.view, members, start_seq), (self.r.view, members, start_seq)
        )

    def on_share_done(self, context: tuple[int, int, int], share: bytes | None) -> None:
        view, members, start_seq = context
        if share is None or view != self.r.view or not self.active:
            return
        msg = VcPartialSig(view, members, start_seq, share)
        self.my_shares.append(msg)
        self.r.sign_and_send(msg)

    def on_vc_partial_sig(self, via: int, env: Envelope) -> None:
        msg: VcPartialSig = env.msg
        if not self.active or msg.view != self.r.view or not 1 <= env.sender <= self.r.n:
            return
        key = (msg.members, msg.start_seq)
        held = self.shares.setdefault(key, {})
        if env.sender in held or len(self.shares) > 4 * self.r.n:
            return
        held[env.sender] = msg.share
        self._try_combine(key)

    def _try_combine(self, key: tuple[int, int]) -> None:
        held = self.shares.get(key, {})
        if key in self.combined or key in self.combining or len(held) < self.r.q.certificate:
            return
        if "H7" in self.r.p.legacy:
            if key in self.attempted or len(held) != self.r.q.certificate:
                return  # the C code: one attempt, when exactly 2f+k+1 shares are present
        elif self.my_proof is not None or self.combining or len(held) <= self.failed.get(key, 0):
            # The new leader needs one proof, so a replica combines one list at a time and
            # stops at its first proof (with N=6 several lists often gather shares, each
            # combination tens of milliseconds); a list whose combination failed is tried
            # again only with more shares (H7).
            return
        self.attempted.add(key)
        self.combining[key] = len(held)
        members, start_seq = key
        self.r.request_threshold(
            "combine",
            statement(self.r.view, members, start_seq),
            (self.r.view, members, start_seq),
            tuple(sorted(held.items())),
            verify_shares="H7" not in self.r.p.legacy,
        )

    def _combine_any(self) -> None:
        for key in list(self.shares):
            self._try_combine(key)

    def on_combine_done(self, context: tuple[int, int, int], signature: bytes | None) -> None:
        view, members, start_seq = context
        key = (members, start_seq)
        used = self.combining.pop(key, 0)
        if view != self.r.view or not self.active:
            return
        if signature is None:
            # H7: too few valid shares (bad ones were skipped). This list is retried when
            # more shares arrive (at once if some arrived meanwhile); others may go first.
            self.failed[key] = used
            if "H7" not in self.r.p.legacy:
                self._combine_any()
            return
        self.combined.add(key)
        if self.my_proof is not None:
            return  # the C code's (legacy H7) attempts run side by side
        self.r.log.debug("VC proof for list %s start %d", bits(members), start_seq)
        self.my_proof = VcProof(view, members, start_seq, signature)
        self.proof_sent_us = self.r.now_us  # the VC TAT stopwatch (2.5.1)
        self.r.sign_and_send(self.my_proof, dest=self.r.leader)

    # ----------------------------------------------------- REPLAY (2.6.4)

    def on_vc_proof(self, via: int, env: Envelope) -> None:
        msg: VcProof = env.msg
        if not self.active or msg.view != self.r.view or not self.r.is_leader or self.sent_replay:
            return
        self.sent_replay = True
        self.r.sign_and_send(Replay(msg.view, msg.members, msg.start_seq, msg.signature))

    def on_replay(self, via: int, env: Envelope) -> None:
        msg: Replay = env.msg
        if not self.active or msg.view != self.r.view or env.sender != self.r.leader:
            return
        if self.replay is not None:
            # A conflict is another content (what REPLAY_PREPAREs vote on), not other bytes:
            # the same REPLAY re-framed or signed again is no evidence against the leader.
            if replay_digest(msg) != self.replay_digest and not self.replay_conflict_seen:
                # Evidence, forwarded once (forwarding every copy of it, as peers forward
                # theirs, fed a storm of millions of messages): the first REPLAY is kept.
                self.replay_conflict_seen = True
                self.r.stats.equivocations_seen += 1
                self.r.forward(env)
                self.r.suspect.on_equivocation("REPLAYs")
            return
        self.replay = env
        self.r.log.debug("REPLAY list %s start %d", bits(msg.members), msg.start_seq)
        self.replay_digest = replay_digest(msg)
        self.proof_sent_us = None  # the stopwatch stops: the new leader answered
        if env.sender != self.r.me:
            self.r.forward(env)
        self.try_replay_prepare()

    def try_replay_prepare(self) -> None:
        if self.replay is None or self.sent_replay_prepare or not self._subset(self.replay.msg.members):
            return
        self.sent_replay_prepare = True
        self.r.sign_and_send(ReplayPrepare(self.r.view, self.replay_digest))

    def on_replay_prepare(self, via: int, env: Envelope) -> None:
        msg: ReplayPrepare = env.msg
        if not self.active or msg.view != self.r.view or env.sender == self.r.leader:
            return
        if not 1 <= env.sender <= self.r.n:
            return
        self.replay_prepares.setdefault(env.sender, msg.digest)
        self.try_replay_commit()

    def try_replay_commit(self) -> None:
        if self.replay is None or self.sent_replay_commit:
            return
        matching = sum(1 for d in self.replay_prepares.values() if d == self.replay_digest)
        if matching >= self.r.q.prepare:
            self.sent_replay_commit = True
            self.r.sign_and_send(ReplayCommit(self.r.view, self.replay_digest))

    def on_replay_commit(self, via: int, env: Envelope) -> None:
        msg: ReplayCommit = env.msg
        if not self.active or msg.view != self.r.view or not 1 <= env.sender <= self.r.n:
            return
        self.replay_commits.setdefault(env.sender, msg.digest)
        self.try_replay_commit()
        self.try_execute_replay()

    def try_execute_replay(self) -> None:
        if self.replay is None or not self.active or self.replaying:
            return
        if not self._subset(self.replay.msg.members):
            return
        matching = sum(1 for d in self.replay_commits.values() if d == self.replay_digest)
        if matching >= self.r.q.certificate:
            self.execute_replay(self.replay.msg)

    # ---------------------------------------------- executing the replay (2.6.5)

    def union(self, members: int) -> dict[int, Envelope]:
        """Ordinal -> winning PC_SET: the highest PP view wins (open question 3)."""
        out: dict[int, Envelope] = {}
        for i in bits(members):
            for _, env in sorted(self.pc_sets.get(i, {}).items()):
                pp = env.msg.pre_prepare.msg
                best = out.get(pp.seq)
                if best is None or pp.view > best.msg.pre_prepare.msg.view:
                    out[pp.seq] = env
        return out

    def execute_replay(self, replay: Replay) -> None:
        self.replaying = True
        try:
            self._execute_replay(replay)
        finally:
            self.replaying = False

    def _execute_replay(self, replay: Replay) -> None:
        r, order = self.r, self.r.ord
        start = replay.start_seq
        if not self.sent_replay_commit:
            # 2f+k+1 commits fixed the replay, so committing to it is safe; a replica that
            # got there without the prepares must still commit: after the view change it
            # ignores replay messages, and a peer may be waiting for exactly its commit.
            self.sent_replay_commit = True
            r.sign_and_send(ReplayCommit(r.view, self.replay_digest))
        chosen = self.union(replay.members)
        keep_low = order.aru - r.p.gc_lag_ordinals
        for g in list(order.history):
            slot = order.history[g]
            if slot.executed and keep_low <= g <= order.aru:
                continue
            if g >= start and slot.view >= r.view:
                continue
            if not slot.executed:
                del order.history[g]
        order.blocked_on = set()
        for g in range(order.aru + 1, start):
            pc_env = chosen.get(g)
            if pc_env is None:
                order.install_replayed(g, None, ())
            else:
                order.install_replayed(g, pc_env.msg.pre_prepare, tuple(pc_env.msg.prepares))
        # Step 4: ppARU = startSeq - 1: PPs we accepted above it in older views were
        # discarded with their slots (a replica that led the old view had some). Only a
        # certificate of this very view can have taken ARU further; then ARU it is.
        order.pp_aru = max(start - 1, order.aru)
        if "H11" not in r.p.legacy:
            self.replay_floor = max(self.replay_floor, start - 1)
        r.finish_view_change(start)

    def collection_sizes(self) -> dict[str, int]:
        """All of it is per view: reset when the next view is pre-installed."""
        return {
            "rb_instances": len(self.rb),
            "rb_payloads": sum(len(slot.payloads) for slot in self.rb.values()),
            "vc_lists_seen": len(self.lists_seen),
            "vc_share_sets": len(self.shares),
        }
