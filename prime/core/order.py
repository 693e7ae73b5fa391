"""Global ordering and execution: PRE_PREPARE, PREPARE, COMMIT (docs/protocol.md section 2.3).

The leader periodically proposes its summary matrix in a pre-prepare; replicas
agree on it with a Prepare and a Commit round (the paper's "global ordering",
DSN'08 section 4.3). An ordered pre-prepare makes eligible, for each originator
``s``, the requests between the previous ordinal's and this ordinal's
``proof_aru(s)`` (Q2); they execute in a deterministic order (originator id,
then PO seq, then position in the request).

Invariants:
* S1/S6: an ordinal is ordered only with ``2f+k+1`` Commits on one pre-prepare
  digest (PPD), prepared only with ``2f+k`` Prepares from non-leaders on it.
* S2: ordinals execute as ``ARU+1, ARU+2, ...``, each exactly once.
* S4: each PO id executes at most once, only after it is eligible, and only
  through its certified copy (H3).
* S5: a pre-prepare whose proof-ARU vector goes backwards is never prepared.

Hardening adopted here (docs/hardening.md section 2):
* H1: a prepare certificate sends our Commit on *either* path (Prepares after
  the PP, or the PP after the Prepares).
* H2: when a PP completes, both certificates are re-checked, so Commits that
  arrived first are not stranded.
* H4: a PP must carry exactly N rows, row ``i`` null or signed by ``i``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prime.core import actions as A
from prime.core.quorum import compare_vectors, matrix_pop
from prime.msgs import Commit, OrdKind, Prepare, PrePrepare, Update
from prime.types import PO_ZERO, PoSeq
from prime.wire import Envelope

if TYPE_CHECKING:
    from prime.core.replica import Replica

Pop = tuple[PoSeq, ...]


def pre_prepare_digest(pp: PrePrepare) -> bytes:
    """PPD = H(seq || view || row_1 || ... || row_N) over the signed rows (2.3.1);
    timestamps are not covered, null rows hash as a zero length."""
    h = hashlib.sha256(b"prime-ppd")
    h.update(pp.seq.to_bytes(8, "big"))
    h.update(pp.view.to_bytes(4, "big"))
    for row in pp.rows:
        raw = b"" if row is None else row.raw
        h.update(len(raw).to_bytes(4, "big"))
        h.update(raw)
    return h.digest()


def eligible_between(prev: Pop, cur: Pop) -> list[tuple[int, PoSeq]]:
    """The PO ids a matrix with proof ARUs ``cur`` makes eligible after one with ``prev``,
    in execution order (2.3.4)."""
    out: list[tuple[int, PoSeq]] = []
    for s, (p, c) in enumerate(zip(prev, cur), start=1):
        if p[0] < c[0]:
            p = (c[0], 0)  # the old incarnation's unexecuted tail is abandoned
        for j in range(p[1] + 1, c[1] + 1):
            out.append((s, (c[0], j)))
    return out


@dataclass(slots=True)
class OrdSlot:
    """Everything known about one ordinal (docs/protocol.md section 3.2)."""

    seq: int
    view: int = 0
    pp: Envelope | None = None
    ppd: bytes = b""
    pop: Pop = ()
    kind: OrdKind = OrdKind.COMMIT
    prepares: dict[int, Envelope] = field(default_factory=dict)
    commits: dict[int, Envelope] = field(default_factory=dict)
    prepare_cert: tuple[Envelope, ...] = ()
    commit_cert: tuple[Envelope, ...] = ()
    sent_prepare: bool = False
    ordered: bool = False
    executed: bool = False
    reconciled: bool = False
    po_slot_list: list[tuple[int, PoSeq]] = field(default_factory=list)


class Order:
    """Global-ordering and execution state of one replica."""

    def __init__(self, replica: Replica) -> None:
        self.r = replica
        self.aru = 0  # highest executed ordinal (all below executed)
        self.pp_aru = 0  # all PPs up to here complete and accepted
        self.high_seq = 0  # highest prepare-certified ordinal
        self.seq = 1  # leader: next ordinal to assign
        self.should_send_pp = False
        self.history: dict[int, OrdSlot] = {}
        self.blocked_on: set[tuple[int, PoSeq]] = set()  # requests ARU+1 waits for
        self.zero_pop: Pop = tuple([PO_ZERO] * replica.n)
        self.last_executed_pop: Pop = self.zero_pop

    # ------------------------------------------------------------ slot helpers

    def _slot(self, seq: int, reason: str) -> OrdSlot | None:
        if seq <= self.aru:
            return None
        slot = self.history.get(seq)
        if slot is None:
            if seq > self.aru + self.r.p.ordinal_window_max:
                self.r.drop(reason + ":window")
                return None
            slot = OrdSlot(seq)
            self.history[seq] = slot
        return slot

    def pop_of(self, seq: int) -> Pop | None:
        """proof_aru vector of ordinal ``seq``'s decided matrix (zeros for 0)."""
        if seq == 0:
            return self.zero_pop
        slot = self.history.get(seq)
        if slot is None or (slot.pp is None and slot.kind != OrdKind.NO_OP):
            return self.last_executed_pop if seq == self.aru else None
        return slot.pop

    # --------------------------------------------------------- PRE_PREPARE (2.3.1)

    def on_newer_summary(self) -> None:
        if self.r.is_leader:
            self.should_send_pp = True

    def on_pre_prepare_timeout(self) -> None:
        if not self.r.is_leader:
            self.r.cancel_timer("pre_prepare")  # a new view's leader sets it again
            return
        if not self.should_send_pp or not self.r.view_change_done:
            return
        if self.seq > self.aru + self.r.p.ordinal_window_max // 2:
            return  # do not run further ahead than replicas accept
        self.should_send_pp = False
        pp = PrePrepare(self.seq, self.r.view, self.r.now_us, self._matrix_for(self.seq))
        self.seq += 1
        self.r.stats.pre_prepares_sent += 1
        self.r.sign_and_send(pp)

    def pre_prepare_due(self) -> int | None:
        """The leader's pre-prepare job runs while it has something new to propose
        (``should_send_pp``: a newer summary row was accepted, or a view began) and may
        propose it: exactly when its handler would send. A TAT challenge needs no
        firing of its own: the proof matrix carrying it sets the flag if it holds a
        newer row, as it always did."""
        r = self.r
        if not (r.is_leader and self.should_send_pp and r.view_change_done):
            return None
        if self.seq > self.aru + r.p.ordinal_window_max // 2:
            return None  # until execution catches up
        return r.now_us

    def _matrix_for(self, seq: int) -> tuple[Envelope | None, ...]:
        """Our summary matrix, with each row kept at least as high as the matrix that
        defines ordinal ``seq-1``.

        Rows of a correct replica only grow, but a faulty one signs PO_ARUs that are
        neither higher nor lower than each other, and the PO_ARU rule keeps the first
        it saw. After a view change the previous matrix came from the old leader, which
        may have kept the other one: our matrix would then go backwards (S5), every
        correct replica would refuse it, and with no new requests nobody would ever
        measure us slow. So where our row is lower anywhere, the previous row is reused."""
        rows = list(self.r.po.cum_acks[1:])
        prev = self._rows_of(seq - 1)
        if prev is not None:
            for i, old in enumerate(prev):
                mine = rows[i]
                if old is not None and (mine is None or compare_vectors(mine.msg.cum_aru, old.msg.cum_aru)[0]):
                    rows[i] = old
        return tuple(rows)

    def _rows_of(self, seq: int) -> tuple[Envelope | None, ...] | None:
        """The rows of the pre-prepare whose matrix ordinal ``seq`` uses (a NO_OP copies
        its predecessor's); None if that slot is gone or unknown."""
        while seq > 0:
            slot = self.history.get(seq)
            if slot is None:
                return None
            if slot.pp is not None:
                return slot.pp.msg.rows
            if slot.kind != OrdKind.NO_OP:
                return None
            seq -= 1
        return None

    def on_pre_prepare(self, via: int, env: Envelope) -> None:
        pp: PrePrepare = env.msg
        if not self.r.view_change_done:
            self.r.drop("pre_prepare:view_change")  # H12: nothing before the replay
            return
        if pp.view != self.r.view or env.sender != self.r.leader:
            self.r.drop("pre_prepare:view_or_leader")
            return
        if "H4" not in self.r.p.legacy and not self.rows_positional(pp):
            self.r.drop("pre_prepare:rows")  # H4 (the codec checks signers too: paired)
            return
        for row in pp.rows:
            if row is not None and len(row.msg.cum_aru) != self.r.n:
                self.r.drop("pre_prepare:row_shape")
                return
        slot = self._slot(pp.seq, "pre_prepare")
        if slot is None:
            return
        if slot.ordered and slot.pp is None:
            # A NO_OP a replay (or f+1 REPLAYED records) decided: nothing re-decides it, not
            # even a pre-prepare of this very view from a leader that ignores H12.
            self.r.drop("pre_prepare:decided")
            return
        if slot.pp is not None:
            if slot.pp.raw != env.raw and slot.view == pp.view and slot.ppd != pre_prepare_digest(pp):
                self.r.stats.equivocations_seen += 1  # flooding exposes a two-faced leader
                self.r.suspect.on_equivocation()
            return
        self._install_pp(slot, env)
        if not self.r.is_leader and env.sender != self.r.me:
            self.r.forward(env)  # flood each new PP once (2.3.1 step 4)
        self._on_pp_complete(slot)

    def rows_positional(self, pp: PrePrepare) -> bool:
        """H4: exactly N rows, row i null or signed by replica i."""
        return len(pp.rows) == self.r.n and all(
            row is None or row.sender == i for i, row in enumerate(pp.rows, start=1)
        )

    def _install_pp(self, slot: OrdSlot, env: Envelope) -> None:
        pp: PrePrepare = env.msg
        slot.pp = env
        slot.view = pp.view
        slot.ppd = pre_prepare_digest(pp)
        vectors = [None if row is None else row.msg.cum_aru for row in pp.rows]
        slot.pop = matrix_pop(vectors, self.r.n, self.r.q, plain="OLDTAIL" in self.r.p.legacy)

    def install_replayed(self, seq: int, pc_pp: Envelope | None, prepares: tuple[Envelope, ...]) -> None:
        """Install ordinal ``seq`` as a replay decided it (2.6.5 step 3): the pre-prepare
        of a prepare certificate, or a NO_OP that copies ordinal ``seq-1``'s matrix so
        nothing new becomes eligible. Then execute what can be executed."""
        slot = OrdSlot(seq)
        if pc_pp is not None:
            self._install_pp(slot, pc_pp)
            slot.kind = OrdKind.PC_SET
            if "H11" not in self.r.p.legacy:
                # H11: the slot keeps its certificate, so an ordinal replayed here but
                # not yet executed is reported again if another view change starts.
                slot.prepare_cert = prepares
                self.high_seq = max(self.high_seq, seq)
            for row in pc_pp.msg.rows:
                if row is not None:
                    self.r.po.apply_po_aru(row)
            self.r.po.raise_proof_points(slot.pop)
        else:
            prev = self.pop_of(seq - 1)
            slot.kind = OrdKind.NO_OP
            slot.pop = prev if prev is not None else self.zero_pop
        slot.ordered = slot.sent_prepare = True
        self.history[seq] = slot
        # Unlike the C code, which marks replayed ordinals reconciled, ship their requests
        # to replicas that never acknowledged them: nobody else will (the originator stops
        # retransmitting once it executed them), and such a replica would wait forever.
        self.r.recon.reconcile(slot)
        self.try_execute()

    def _on_pp_complete(self, slot: OrdSlot) -> None:
        # H1/H2: re-check both certificates now that the PP is here.
        self._check_prepare_cert(slot, on_pp_complete=True)
        if "H2" not in self.r.p.legacy:
            self._check_commit_cert(slot)
        assert slot.pp is not None
        for row in slot.pp.msg.rows:
            if row is not None:
                self.r.po.apply_po_aru(row)
        if slot.seq > self.pp_aru:
            # Also when pp_aru lags ARU (ordinals filled from certificates or jumped over):
            # send_prepares skips what is executed and resumes at the first open ordinal.
            self.send_prepares()

    def send_prepares(self) -> None:
        """Accept consecutive complete PPs, checking backward progress (S5); the
        newest accepted one answers the TAT challenges it covers (2.3.1 step 6)."""
        accepted: OrdSlot | None = None
        while True:
            g = self.pp_aru + 1
            slot = self.history.get(g)
            if g <= self.aru:
                self.pp_aru = g
                continue
            if slot is None or slot.pp is None:
                break
            prev = self.pop_of(g - 1)
            if prev is None:
                break
            if any(c < p for c, p in zip(slot.pop, prev)):
                self.r.stats.backward_progress_rejected += 1
                break  # invalid PP: no Prepare; the leader's TAT will grow
            self.r.po.raise_proof_points(slot.pop)
            if not self.r.is_leader and not slot.sent_prepare:
                self.r.sign_and_send(Prepare(g, slot.view, slot.ppd))
            slot.sent_prepare = True
            self.pp_aru = g
            accepted = slot
            self.r.recon.reconcile(slot)
        if accepted is not None and accepted.pp is not None:
            rows = accepted.pp.msg.rows
            self.r.suspect.on_pp_accepted(tuple(None if r is None else r.msg.cum_aru for r in rows))

    # ------------------------------------------------------------ PREPARE (2.3.2)

    def on_prepare(self, via: int, env: Envelope) -> None:
        msg: Prepare = env.msg
        if not self.r.view_change_done:
            return
        if msg.view != self.r.view or env.sender == self.r.leader:
            self.r.drop("prepare:view_or_leader")
            return
        if msg.seq <= self.aru:
            self.r.catchup.on_stale_vote(env.sender, msg.seq)
            return
        slot = self._slot(msg.seq, "prepare")
        if slot is None or env.sender in slot.prepares:
            return
        slot.prepares[env.sender] = env
        self._check_prepare_cert(slot)

    @staticmethod
    def _matching(slot: OrdSlot, votes: dict[int, Envelope]) -> list[Envelope]:
        """Votes (by ascending sender) on exactly this slot's pre-prepare and view."""
        return [
            e for _, e in sorted(votes.items()) if e.msg.view == slot.view and e.msg.digest == slot.ppd
        ]

    def _check_prepare_cert(self, slot: OrdSlot, *, on_pp_complete: bool = False) -> None:
        if slot.pp is None or slot.prepare_cert or slot.ordered:
            return
        matching = self._matching(slot, slot.prepares)
        if len(matching) < self.r.q.prepare:
            return
        slot.prepare_cert = tuple(matching[: self.r.q.prepare])
        self.high_seq = max(self.high_seq, slot.seq)
        if on_pp_complete and "H1" in self.r.p.legacy:
            return  # the C code sends no Commit on this path
        self.r.sign_and_send(Commit(slot.seq, slot.view, slot.ppd))  # H1

    # ------------------------------------------------------------- COMMIT (2.3.3)

    def on_commit(self, via: int, env: Envelope) -> None:
        msg: Commit = env.msg
        if not self.r.view_change_done:
            return
        if msg.view != self.r.view:
            self.r.drop("commit:view")
            return
        if msg.seq <= self.aru:
            self.r.catchup.on_stale_vote(env.sender, msg.seq)
            return
        slot = self._slot(msg.seq, "commit")
        if slot is None or env.sender in slot.commits:
            return
        slot.commits[env.sender] = env
        self._check_commit_cert(slot)

    def _check_commit_cert(self, slot: OrdSlot) -> None:
        if slot.pp is None or slot.ordered:
            return
        matching = self._matching(slot, slot.commits)
        if len(matching) < self.r.q.certificate:
            return
        slot.commit_cert = tuple(matching[: self.r.q.certificate])
        slot.ordered = True
        self.try_execute()

    # ----------------------------------------------------------- EXECUTE (2.3.5)

    def eligible(self, slot: OrdSlot) -> list[tuple[int, PoSeq]] | None:
        """The PO ids ordinal ``slot`` makes eligible, in execution order (2.3.4)."""
        prev = self.pop_of(slot.seq - 1)
        if prev is None:
            return None
        return eligible_between(prev, slot.pop)

    def on_request_available(self, s: int, po: PoSeq) -> None:
        """A request (or an ack making its copy certified) arrived."""
        if self.blocked_on and (s, po) in self.blocked_on:  # called per PO-Ack part
            before = self.aru
            self.try_execute()
            if self.aru > before and self.r.catchup.fills:
                # Catching up: the ordinals after it may be held as certificates already.
                self.r.catchup.try_fill()

    def try_execute(self) -> None:
        """Execute ordered ordinals in order while their requests are here (2.3.5)."""
        while True:
            slot = self.history.get(self.aru + 1)
            if slot is None or not slot.ordered:
                return
            if slot.pp is None and slot.kind != OrdKind.NO_OP:
                return
            ids = self.eligible(slot)
            if ids is None:
                return
            po = self.r.po
            missing = {
                (s, q)
                for s, q in ids
                if q > po.last_executed[s] and po.executable_copy(s, q) is None
            }
            if missing:
                self.blocked_on = missing
                self.r.fetch.on_blocked(slot.seq)  # asks peers if it lasts (fetch.py)
                return
            self.blocked_on = set()
            self._execute(slot, ids)

    def _execute(self, slot: OrdSlot, ids: list[tuple[int, PoSeq]]) -> None:
        g = slot.seq
        assert g == self.aru + 1, (g, self.aru)
        prev = self.pop_of(g - 1)
        assert prev is not None
        po = self.r.po
        slot.executed = True
        self.aru = g
        for s in range(1, self.r.n + 1):
            if prev[s - 1][0] < slot.pop[s - 1][0]:
                po.abandon_older_incarnation(s, prev[s - 1], slot.pop[s - 1][0])
        updates: list[Update] = []
        requests: list[tuple[int, int, int]] = []
        for s, q in ids:
            if q <= po.last_executed[s]:
                continue
            env = po.executable_copy(s, q)
            assert env is not None
            # Every event of an eligible request is delivered, as in the original: a client
            # update a Byzantine replica re-introduced is the application's to suppress,
            # with its client table, which is part of the state it transfers (README).
            updates.extend(u.msg for u in env.msg.updates)
            requests.append((s, q[0], q[1]))
            po.mark_executed(s, q)
            slot.po_slot_list.append((s, q))
        self.last_executed_pop = slot.pop
        self.r.stats.ordinals_executed += 1
        self.r.stats.updates_delivered += len(updates)
        self.r.emit(A.Deliver(g, tuple(updates), tuple(requests)))
        if not slot.reconciled:
            self.r.recon.reconcile(slot)
        if slot.kind == OrdKind.COMMIT and slot.commit_cert:
            self.r.catchup.on_executed_commit(slot)
        elif slot.kind != OrdKind.COMMIT:
            self.r.catchup.on_executed_replayed(slot)
        self._collect(g - self.r.p.gc_lag_ordinals)
        if self.r.view_change_done or "H5" in self.r.p.legacy:
            # H5: only an execution in the installed view stops the view-change
            # retransmissions (the C code lets any execution stop them).
            self.r.executed_in_view = True
        if not self.r.view_change_done:
            self.r.vc.recheck_all()  # complete state may need this execution (2.6.3)

    def _collect(self, g: int) -> None:
        """Garbage-collect executed ordinals up to ``g`` (3.4)."""
        for seq in sorted(s for s in self.history if s <= g):
            slot = self.history[seq]
            if not slot.executed or not slot.reconciled:
                continue
            for s, q in slot.po_slot_list:
                self.r.fetch.keep(seq, s, q)  # for a peer that lacks it (fetch.py)
                self.r.po.collect(s, q)
            del self.history[seq]

    def purge_before_view(self, view: int) -> None:
        """Forget unordered slots of views before ``view`` (adopting a view from a
        certificate): their pre-prepares and votes can never complete any more, and an
        occupied slot would make this view's pre-prepare for the ordinal be ignored."""
        dead = sorted(g for g, slot in self.history.items() if not slot.ordered and slot.view < view)
        for g in dead:
            del self.history[g]
        if dead:
            self.pp_aru = max(self.aru, min(self.pp_aru, dead[0] - 1))
        self.blocked_on = set()
        self.try_execute()

    # ------------------------------------------------------ retransmission (2.8)

    def quiescent(self) -> bool:
        """Nothing of ordering is pending here: no ordinal slot above the ARU (a
        pre-prepare or vote not executed), nothing new for a leader to propose, no
        executed ordinal waiting for requests."""
        if (self.should_send_pp and self.r.is_leader) or self.blocked_on:
            return False  # (the flag outlives a view we led: it counts only as leader)
        aru = self.aru
        return not any(seq > aru for seq in self.history)

    def retrans_due(self) -> int | None:
        """Ordering retransmission runs while an accepted pre-prepare is not executed."""
        history = self.history
        for seq in range(self.aru + 1, self.pp_aru + 1):
            slot = history.get(seq)
            if slot is not None and slot.pp is not None:
                return self.r.now_us
        return None

    def on_retrans_timeout(self) -> None:
        for seq in range(self.aru + 1, self.pp_aru + 1):
            slot = self.history.get(seq)
            if slot is None or slot.pp is None:
                continue
            if self.r.is_leader:
                self.r.forward(slot.pp)
            else:
                if not slot.ordered:
                    # The leader's flood reached only those connected at the time; if it
                    # crashed since, a replica that was cut off would never get the PP, the
                    # ordinal could lack its prepare quorum for good, and (its TAT challenge
                    # answered at the others) nobody would measure the dead leader.
                    self.r.forward(slot.pp)
                if self.r.me in slot.prepares:
                    self.r.forward(slot.prepares[self.r.me])
            if self.r.me in slot.commits:
                self.r.forward(slot.commits[self.r.me])

    # ----------------------------------------------------------------- checks

    def invariants(self) -> None:
        """Checked after every step: O(1), a few lookups."""
        history, aru, p = self.history, self.aru, self.r.p
        assert aru >= 0 and self.high_seq >= 0
        top, nxt = history.get(aru), history.get(aru + 1)
        assert top is None or top.executed
        assert nxt is None or not nxt.executed, "S2: ordinals execute in order"
        assert len(history) <= p.ordinal_window_max + p.gc_lag_ordinals + 1

    def collection_sizes(self) -> dict[str, int]:
        return {
            "ord_history": len(self.history),
            "blocked_on": len(self.blocked_on),
        }
