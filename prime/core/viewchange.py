"""View change: reliable broadcast of state, a threshold-signed choice of whose state
defines the new view, and a replay that keeps every committed update (docs/protocol.md section 2.6;
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

Decisions and hardening (docs/hardening.md):
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
* Issue 11 (docs/hardening.md section 5): only the PC_SETs a REPORT announced
  count; a replay's decisions are decisions of its view, certified by the union
  digest under the threshold signature and by the REPLAY's prepare votes, and
  carried in the REPORT of every replica that committed to it (which is also what
  proves ``replay_floor``); per-sender bounds on lists, shares and RB instances;
  a view change that does not complete in time moves on.
* Open question 5: a replica whose state is incomplete because a peer's REPORT
  is ahead asks that peer for what it missed; replayed ordinals come back as
  REPLAYED records and are installed from f+1 matching ones (``catchup``).
* H12: ordering messages of a view are ignored until its replay executed, and a
  new leader never re-proposes an ordinal below ``start_seq``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

from prime.core.order import pre_prepare_digest
from prime.core.quorum import leader_of
from prime.msgs import (
    UNION_ENTRIES_MAX,
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


def statement(view: int, members: int, start_seq: int, union: bytes) -> bytes:
    """What the threshold signature covers: H(view || list || startSeq || union digest)
    (4.3, with the union: a replayed decision must be provable later, see ``union_digest``)."""
    return hashlib.sha256(
        b"prime-vc"
        + view.to_bytes(4, "big")
        + members.to_bytes(4, "big")
        + start_seq.to_bytes(8, "big")
        + union
    ).digest()


def replay_digest(r: Replay) -> bytes:
    return hashlib.sha256(statement(r.view, r.members, r.start_seq, r.union_digest) + r.signature).digest()


def union_digest(start_seq: int, lo: int, entries: Sequence[tuple[int, bytes]]) -> bytes:
    """The digest of a replay's decisions: ordinals ``lo .. start_seq-1``, those listed
    (ascending) as the PC_SET whose pre-prepare digest is given, every other one a NO_OP.

    Every correct replica with complete state for a list computes the same union, so
    the 2f+k+1 shares of a VC proof (at least f+k+1 of them correct) certify it: a REPLAY
    proves what its replay decided, and a replica that committed to it can carry those
    decisions into the next view change, where nobody can forge them (issue 11, item 2)."""
    h = hashlib.sha256(b"prime-union")
    h.update(start_seq.to_bytes(8, "big"))
    h.update(lo.to_bytes(8, "big"))
    for seq, ppd in entries:
        h.update(seq.to_bytes(8, "big"))
        h.update(ppd)
    return h.digest()


ShareKey = tuple[int, int, bytes]  # (members, start_seq, union digest)


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


@dataclass(slots=True)
class MemberState:
    """What one replica's complete state says about each ordinal: its decisions.

    A decision carries the view that made it: a PC_SET's pre-prepare view, or the view of
    a replay the replica committed to (for every ordinal of ``[noop_lo, noop_hi)`` that
    replay did not decide as a PC_SET, a NO_OP of that view). In the union the decision
    of the highest view wins, so a replayed decision outranks every prepare certificate
    older than the replay (issue 11, item 2)."""

    exec_aru: int
    floor: int  # the highest ordinal this state fixes (start_seq is above it)
    pcs: dict[int, tuple[int, Envelope]] = field(default_factory=dict)  # seq -> (view, PC_SET)
    noop_view: int = 0
    noop_lo: int = 0
    noop_hi: int = 0

    def decision(self, seq: int) -> tuple[int, Envelope | None] | None:
        found = self.pcs.get(seq)
        if found is not None:
            return found
        if self.noop_lo <= seq < self.noop_hi:
            return (self.noop_view, None)
        return None


@dataclass(slots=True)
class CommittedReplay:
    """The replay this replica sent REPLAY_COMMIT for: the certificate it carries into the
    next view change until every ordinal the replay fixed has executed here."""

    replay: Envelope
    lo: int
    entries: tuple[tuple[int, bytes], ...]  # (seq, ppd) of the PC_SETs it decided
    contents: dict[int, Envelope]  # seq -> the winning PC_SET payload
    votes: tuple[Envelope, ...]  # 2f+k REPLAY_PREPAREs or 2f+k+1 REPLAY_COMMITs on it

    @property
    def start_seq(self) -> int:
        return self.replay.msg.start_seq


class ViewChange:
    """View-change state and handlers of one replica (all reset when a view is pre-installed).

    Every table here is bounded per sender (issue 11, items 5, 6, 12): one VC_LIST per
    replica, at most N share sets per replica, and per RB origin at most the PC_SETs its
    REPORT announced (never more than the ordinal window; ``RB_EARLY_MAX`` before its
    REPORT is seen)."""

    RB_EARLY_MAX = 64  # PC_SET instances of an origin accepted before its REPORT is seen

    def __init__(self, replica: Replica) -> None:
        self.r = replica
        self.committed: CommittedReplay | None = None  # its certificate (item 2)
        self.timeouts_in_row = 0  # view changes that did not complete in time, in a row
        self.reset()

    def reset(self) -> None:
        self.rb: dict[tuple[int, int], RbSlot] = {}
        self.my_rb: list[Envelope] = []
        self.reports: dict[int, Report] = {}
        self.pc_sets: dict[int, dict[int, Envelope]] = {}
        self.announced: dict[int, int] = {}  # origin -> PC_SETs its REPORT(s) announced
        self.pc_ordinals: dict[int, set[int]] = {}  # origin -> ordinals of PC_SETs we echoed
        self.members: dict[int, MemberState] = {}
        self.complete: set[int] = set()
        self.my_vc_list: VcList | None = None
        self.lists_by_sender: dict[int, int] = {}  # one VC_LIST per replica and view
        self.lists_seen: set[int] = set()
        self.pending_lists: list[int] = []
        self.shares: dict[ShareKey, dict[int, bytes]] = {}
        self.shares_by_sender: dict[int, set[ShareKey]] = {}
        self.combined: set[ShareKey] = set()
        self.attempted: set[ShareKey] = set()
        self.failed: dict[ShareKey, int] = {}  # key -> shares its failed attempt had
        self.my_proof: VcProof | None = None
        self.combining: dict[ShareKey, int] = {}  # key -> shares in the attempt
        self.my_shares: list[VcPartialSig] = []
        self.replay: Envelope | None = None
        self.replay_digest = b""
        self.replay_conflict_seen = False
        self.replay_prepares: dict[int, Envelope] = {}
        self.my_union: tuple[int, tuple[tuple[int, bytes], ...]] | None = None  # (lo, entries)
        self.replay_commits: dict[int, Envelope] = {}
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
        """Report our state: one PC_SET per prepare-certified, unexecuted ordinal, then a
        REPORT; with the certificate of a replay we committed to and have not finished
        executing, whose decisions (PC_SETs and NO_OPs alike) replace what we hold for the
        ordinals it fixed."""
        self.reset()
        r, order = self.r, self.r.ord
        view = r.view
        pcs: dict[int, tuple[Envelope, tuple[Envelope, ...]]] = {}
        for g in range(order.aru + 1, order.high_seq + 1):
            slot = order.history.get(g)
            if slot is None or slot.pp is None or not slot.prepare_cert:
                continue
            pcs[g] = (slot.pp, slot.prepare_cert)
        cert = self.committed
        if cert is not None and cert.start_seq - 1 <= order.aru:
            cert = self.committed = None  # all of it executed: exec_aru says the rest
        floor = 0
        if cert is not None:
            floor = cert.start_seq - 1
            replay_view = cert.replay.msg.view
            # Below the replay's start its decisions replace what we hold, except prepare
            # certificates of a later view: that view re-decided the ordinal (the replay
            # never executed anywhere, or it would have kept it), and they outrank it.
            for g in [g for g, (pp, _) in pcs.items() if g < cert.start_seq and pp.msg.view <= replay_view]:
                del pcs[g]
            for g, pc in cert.contents.items():
                if g > order.aru and g not in pcs:
                    pcs[g] = (pc.msg.pre_prepare, pc.msg.prepares)
        pc_sets = [PcSet(r.me, view, i, pp, prepares) for i, (_, (pp, prepares)) in enumerate(sorted(pcs.items()), 1)]
        if cert is None:
            report = Report(r.me, view, 0, order.aru, len(pc_sets), floor)
        else:
            seqs = tuple(g for g, _ in cert.entries)
            ppds = tuple(d for _, d in cert.entries)
            report = Report(
                r.me, view, 0, order.aru, len(pc_sets), floor, cert.replay, cert.lo, seqs, ppds, cert.votes
            )
        r.sign_direct(report, dest=-1)
        for pc in pc_sets:
            r.sign_direct(pc, dest=-1)
        r.set_timer("vc_retrans", r.now_us + r.p.retrans_period_us)
        timeout = r.p.view_change_timeout_us << min(self.timeouts_in_row, 6)
        r.set_timer("vc_deadline", r.now_us + timeout)

    def on_deadline(self) -> None:
        """The view change did not complete in time: move on to the next view (item 5).
        The new leader's stopwatch only runs once a VC proof is sent, so a view change
        that never produces one (shares refused, lists never signed) would otherwise
        stall for good with nobody suspecting anyone. The bound doubles with every view
        change in a row that misses it, so slow but correct networks still finish."""
        if self.r.view_change_done:
            return
        self.timeouts_in_row += 1
        self.r.stats.view_change_timeouts += 1
        self.r.suspect.suspect(f"view change {self.r.view} not complete in time")

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
        if not 1 <= origin <= self.r.n or not 1 <= env.sender <= self.r.n:
            return None
        if isinstance(tag, Report):
            # What the origin says it needs bounds its instances (item 12): a correct
            # origin announces one PC_SET per prepare-certified ordinal of its window.
            self.announced[origin] = max(self.announced.get(origin, 0), tag.pc_set_size)
        elif seq > self._rb_seq_limit(origin):
            self.r.drop("rb:seq")
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

    def _rb_seq_limit(self, origin: int) -> int:
        announced = self.announced.get(origin)
        if announced is None:
            return self.RB_EARLY_MAX  # its REPORT travels beside: more once it is here
        return min(announced, self.r.p.ordinal_window_max)

    def _worth_echoing(self, payload: Envelope) -> bool:
        """A PC_SET is echoed only if it is a valid certificate for an ordinal its origin
        has not used already: junk instances cost the origin, not every correct replica."""
        msg = payload.msg
        if not isinstance(msg, PcSet):
            return True
        if not self._valid_pc_set(msg):
            self.r.drop("pc_set:invalid")
            return False
        used = self.pc_ordinals.setdefault(msg.rb_origin, set())
        seq = msg.pre_prepare.msg.seq
        if seq in used:
            self.r.drop("pc_set:ordinal_reused")
            return False
        used.add(seq)
        return True

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
            slot.sent_echo = True  # one INIT per instance is considered, worth it or not
            if self._worth_echoing(slot.payloads[digest]):
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
            if not self._valid_report(msg):
                self.r.drop("report:invalid")
                return
            self.reports[i] = msg
        else:
            if not self._valid_pc_set(msg):
                self.r.drop("pc_set:invalid")
                return
            report = self.reports.get(i)
            if report is not None and msg.rb_seq > report.pc_set_size:
                return  # H6: no more PC_SETs than the REPORT announced
            self.pc_sets.setdefault(i, {}).setdefault(msg.rb_seq, payload)
        self.check_complete(i)

    def _valid_report(self, rep: Report) -> bool:
        """A REPORT's replay floor is what its replay certificate proves (items 2 and 8):
        ``start_seq - 1`` of a REPLAY of an earlier view, whose threshold signature (checked
        with the envelope) covers the union digest the listed decisions open. Without a
        certificate the floor is 0: a bare number would let one replica make every correct
        one install NO_OPs up to 2^62."""
        if "H11" in self.r.p.legacy:
            return True  # the floor is trusted, as the C code trusts its REPORT
        if rep.replay is None:
            return rep.replay_floor == 0 and rep.union_lo == 0 and not rep.union_seqs and not rep.union_ppds
        replay: Replay = rep.replay.msg
        start = replay.start_seq
        seqs = rep.union_seqs
        if not self._valid_replay_votes(replay, rep.replay_votes):
            return False
        return (
            1 <= replay.view < rep.rb_view
            and rep.replay.sender == leader_of(replay.view, self.r.n)
            and rep.replay_floor == start - 1
            and rep.union_lo <= start
            and len(seqs) == len(rep.union_ppds)
            and all(rep.union_lo <= g < start for g in seqs)
            and all(a < b for a, b in zip(seqs, seqs[1:]))
            and union_digest(start, rep.union_lo, tuple(zip(seqs, rep.union_ppds))) == replay.union_digest
        )

    def _valid_replay_votes(self, replay: Replay, votes: tuple[Envelope, ...]) -> bool:
        """2f+k REPLAY_PREPAREs of distinct non-leaders, or 2f+k+1 REPLAY_COMMITs of distinct
        replicas, all of the replay's view and on its digest. A correct replica prepares
        one REPLAY per view and commits only a prepared (or executed) one; with the leader
        faulty, at most f-1 faulty non-leaders remain, so two REPLAYs of one view cannot
        both gather 2f+k prepares (2f+2k+2 correct replicas would be needed)."""
        digest = replay_digest(replay)
        senders = {v.sender for v in votes}
        if len(senders) != len(votes) or not all(1 <= j <= self.r.n for j in senders):
            return False
        if not all(v.msg.view == replay.view and v.msg.digest == digest for v in votes):
            return False
        kinds = {type(v.msg) for v in votes}
        if kinds == {ReplayPrepare}:
            return len(votes) >= self.r.q.prepare and leader_of(replay.view, self.r.n) not in senders
        return kinds == {ReplayCommit} and len(votes) >= self.r.q.certificate

    def _member_state(self, i: int) -> MemberState | None:
        """Replica ``i``'s decisions, once its REPORT and exactly the PC_SETs ``1 ..
        pc_set_size`` it announced are here (item 1: whatever the arrival order, the same
        PC_SETs count at every correct replica); None while something is missing."""
        report = self.reports.get(i)
        if report is None:
            return None
        held = self.pc_sets.get(i, {})
        counted = [held.get(k) for k in range(1, report.pc_set_size + 1)]
        if any(env is None for env in counted):
            return None
        state = MemberState(report.exec_aru, max(report.exec_aru, report.replay_floor))
        cert = report.replay.msg if report.replay is not None and "H11" not in self.r.p.legacy else None
        decided = dict(zip(report.union_seqs, report.union_ppds)) if cert is not None else {}
        for env in counted:
            assert env is not None
            pp = env.msg.pre_prepare.msg
            state.floor = max(state.floor, pp.seq)
            if cert is not None and pp.seq < cert.start_seq and pp.view <= cert.view:
                # Below the replay's start its decisions count; a PC_SET there is the content
                # of one, in the replay's view (one of a later view re-decided the ordinal).
                if decided.get(pp.seq) == pre_prepare_digest(pp):
                    state.pcs[pp.seq] = (cert.view, env)
                continue
            known = state.pcs.get(pp.seq)
            if known is None or pp.view > known[0]:
                state.pcs[pp.seq] = (pp.view, env)
        if cert is not None:
            if any(g > report.exec_aru and g not in state.pcs for g in decided):
                return None  # a decided PC_SET it holds and did not report: never complete
            state.noop_view = cert.view
            state.noop_lo, state.noop_hi = report.union_lo, cert.start_seq
        return state

    def _union_lo(self, members: int) -> int:
        return 1 + max((self.members[i].exec_aru for i in bits(members)), default=0)

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
        state = self._member_state(i)
        if state is None:
            return
        if self.r.ord.aru < state.exec_aru:
            # We must catch up first (re-checked after executions and jumps). Ordinals a
            # replay decided have no certificate, so ask the replicas that are ahead.
            self.r.catchup.ask(i)
            return
        self.members[i] = state
        self.complete.add(i)
        self.r.log.debug("complete state of %d (aru %d, %d decisions)", i, state.exec_aru, len(state.pcs))
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
        if not self.active or msg.view != self.r.view or not 1 <= env.sender <= self.r.n:
            return
        if env.sender in self.lists_by_sender:
            return  # a correct replica proposes one list per view (item 6: no global cap)
        members = bits(msg.members)
        # H6: only lists of 2f+k+1 real replicas (the C code signs any subset, even empty).
        too_few = len(members) < self.r.q.certificate and "H6" not in self.r.p.legacy
        if msg.members & 1 or too_few or any(j > self.r.n for j in members):
            self.r.drop("vc_list:members")
            return
        self.lists_by_sender[env.sender] = msg.members
        if msg.members in self.lists_seen:
            return
        self.lists_seen.add(msg.members)
        if self._subset(msg.members):
            self._sign_list(msg.members)
        else:
            self.pending_lists.append(msg.members)

    def start_seq_for(self, members: int) -> int:
        """Above everything the members' complete states fix (call with complete members)."""
        return 1 + max((self.members[i].floor for i in bits(members)), default=0)

    def union_entries(self, members: int, start_seq: int) -> tuple[int, tuple[tuple[int, bytes], ...]]:
        """(lo, the PC_SET decisions in ``[lo, start_seq)``): what the union digest covers.
        Ordinals below ``lo`` executed at every replica complete for these members."""
        lo = self._union_lo(members)
        chosen = self.union(members)
        entries = tuple(
            (g, pre_prepare_digest(chosen[g].msg.pre_prepare.msg)) for g in sorted(chosen) if lo <= g < start_seq
        )
        return lo, entries

    def _sign_list(self, members: int) -> None:
        start_seq = self.start_seq_for(members)
        lo, entries = self.union_entries(members, start_seq)
        if start_seq - 1 - self.r.ord.aru > self.r.p.ordinal_window_max or len(entries) > UNION_ENTRIES_MAX:
            # Installing the replay would mean more ordinals in one step than the window
            # holds (item 8); no correct state leads here, as floors are proven.
            self.r.drop("vc_list:too_far")
            return
        udigest = union_digest(start_seq, lo, entries)
        self.r.request_threshold(
            "share",
            statement(self.r.view, members, start_seq, udigest),
            (self.r.view, members, start_seq, udigest),
        )

    def on_share_done(self, context: tuple[int, int, int, bytes], share: bytes | None) -> None:
        view, members, start_seq, udigest = context
        if share is None or view != self.r.view or not self.active:
            return
        msg = VcPartialSig(view, members, start_seq, share, udigest)
        self.my_shares.append(msg)
        self.r.sign_and_send(msg)

    def on_vc_partial_sig(self, via: int, env: Envelope) -> None:
        msg: VcPartialSig = env.msg
        sender = env.sender
        if not self.active or msg.view != self.r.view or not 1 <= sender <= self.r.n:
            return
        key = (msg.members, msg.start_seq, msg.union_digest)
        mine = self.shares_by_sender.setdefault(sender, set())
        if key in mine:
            return
        if len(mine) >= self.r.n:
            # Per sender, at most one share per list a replica can propose (item 5): a
            # replica flooding shares for made-up lists fills only its own entries.
            self.r.drop("vc_partial_sig:sender_full")
            return
        mine.add(key)
        self.shares.setdefault(key, {})[sender] = msg.share
        self._try_combine(key)

    def _try_combine(self, key: ShareKey) -> None:
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
        members, start_seq, udigest = key
        self.r.request_threshold(
            "combine",
            statement(self.r.view, members, start_seq, udigest),
            (self.r.view, members, start_seq, udigest),
            tuple(sorted(held.items())),
            verify_shares="H7" not in self.r.p.legacy,
        )

    def _combine_any(self) -> None:
        for key in list(self.shares):
            self._try_combine(key)

    def on_combine_done(self, context: tuple[int, int, int, bytes], signature: bytes | None) -> None:
        view, members, start_seq, udigest = context
        key = (members, start_seq, udigest)
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
        self.my_proof = VcProof(view, members, start_seq, signature, udigest)
        self.proof_sent_us = self.r.now_us  # the VC TAT stopwatch (2.5.1)
        self.r.sign_and_send(self.my_proof, dest=self.r.leader)

    # ----------------------------------------------------- REPLAY (2.6.4)

    def on_vc_proof(self, via: int, env: Envelope) -> None:
        msg: VcProof = env.msg
        if not self.active or msg.view != self.r.view or not self.r.is_leader or self.sent_replay:
            return
        self.sent_replay = True
        self.r.sign_and_send(Replay(msg.view, msg.members, msg.start_seq, msg.signature, msg.union_digest))

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

    def _replay_matches_my_state(self) -> bool:
        """With complete state for the REPLAY's members, our own start_seq and union
        digest must be the ones its threshold signature covers (they are, at every correct
        replica: the shares of f+k+1 correct ones went into it). Computed once."""
        assert self.replay is not None
        replay: Replay = self.replay.msg
        if not self._subset(replay.members):
            return False
        if self.my_union is None:
            start = self.start_seq_for(replay.members)
            lo, entries = self.union_entries(replay.members, start)
            if start != replay.start_seq or union_digest(start, lo, entries) != replay.union_digest:
                self.r.drop("replay:union_mismatch")
                self.my_union = (-1, ())
            else:
                self.my_union = (lo, entries)
        return self.my_union[0] >= 0

    def try_replay_prepare(self) -> None:
        if self.replay is None or self.sent_replay_prepare or not self._replay_matches_my_state():
            return
        self.sent_replay_prepare = True
        self.r.sign_and_send(ReplayPrepare(self.r.view, self.replay_digest))

    def on_replay_prepare(self, via: int, env: Envelope) -> None:
        msg: ReplayPrepare = env.msg
        if not self.active or msg.view != self.r.view or env.sender == self.r.leader:
            return
        if not 1 <= env.sender <= self.r.n:
            return
        self.replay_prepares.setdefault(env.sender, env)
        self.try_replay_commit()

    def try_replay_commit(self) -> None:
        if self.replay is None or self.sent_replay_commit or not self._replay_matches_my_state():
            return
        matching = len(self._matching(self.replay_prepares))
        if matching >= self.r.q.prepare:
            self._send_replay_commit()

    def _matching(self, votes: dict[int, Envelope]) -> list[Envelope]:
        """Votes on the REPLAY we hold, by ascending sender."""
        return [env for _, env in sorted(votes.items()) if env.msg.digest == self.replay_digest]

    def _send_replay_commit(self) -> None:
        """Commit to the replay, and from now on carry its certificate (item 2): its
        decisions are this view's, and a replica that committed must report them so,
        executed or not, in every later view change until they have executed here."""
        assert self.replay is not None and self.my_union is not None
        self.sent_replay_commit = True
        replay: Replay = self.replay.msg
        if "H11" not in self.r.p.legacy:
            lo, entries = self.my_union
            chosen = self.union(replay.members)
            contents = {g: chosen[g] for g, _ in entries}
            prepares = self._matching(self.replay_prepares)
            if len(prepares) >= self.r.q.prepare:
                votes = tuple(prepares[: self.r.q.prepare])
            else:  # committing because the replay executes: 2f+k+1 commits prove it
                votes = tuple(self._matching(self.replay_commits)[: self.r.q.certificate])
            self.committed = CommittedReplay(self.replay, lo, entries, contents, votes)
        self.r.sign_and_send(ReplayCommit(self.r.view, self.replay_digest))

    def on_replay_commit(self, via: int, env: Envelope) -> None:
        msg: ReplayCommit = env.msg
        if not self.active or msg.view != self.r.view or not 1 <= env.sender <= self.r.n:
            return
        self.replay_commits.setdefault(env.sender, env)
        self.try_replay_commit()
        self.try_execute_replay()

    def try_execute_replay(self) -> None:
        if self.replay is None or not self.active or self.replaying:
            return
        if not self._replay_matches_my_state():
            return
        matching = len(self._matching(self.replay_commits))
        if matching >= self.r.q.certificate:
            self.execute_replay(self.replay.msg)

    # ---------------------------------------------- executing the replay (2.6.5)

    def decide(self, members: int, seq: int) -> Envelope | None:
        """The members' decision for ``seq`` made in the highest view (open question 3, with
        replayed decisions in their replay's view: item 2); ties go to the lowest replica
        id. None: a NO_OP (decided so, or nobody reported anything)."""
        best: tuple[int, Envelope | None] | None = None
        for i in bits(members):
            state = self.members.get(i)  # (every member is complete when it matters)
            found = None if state is None else state.decision(seq)
            if found is not None and (best is None or found[0] > best[0]):
                best = found
        return None if best is None else best[1]

    def union(self, members: int) -> dict[int, Envelope]:
        """Ordinal -> winning PC_SET, for ordinals whose winning decision is a PC_SET."""
        seqs = sorted({g for i in bits(members) if i in self.members for g in self.members[i].pcs})
        out: dict[int, Envelope] = {}
        for g in seqs:
            env = self.decide(members, g)
            if env is not None:
                out[g] = env
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
            self._send_replay_commit()
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
        self.timeouts_in_row = 0
        r.cancel_timer("vc_deadline")
        r.finish_view_change(start)

    def collection_sizes(self) -> dict[str, int]:
        """All of it is per view: reset when the next view is pre-installed."""
        return {
            "rb_instances": len(self.rb),
            "rb_payloads": sum(len(slot.payloads) for slot in self.rb.values()),
            "vc_lists_seen": len(self.lists_seen),
            "vc_share_sets": len(self.shares),
        }
