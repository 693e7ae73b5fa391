"""Pre-ordering: PO_REQUEST, PO_ACK, PO_ARU and the proof matrix (docs/protocol.md sections 2.1 and 2.2).

Every replica disseminates the updates it introduced and collects proof that
``2f+k+1`` replicas hold them *before* the leader is involved (the paper's
"pre-ordering" phase, DSN'08 section 4.2). The leader then orders only compact
summary vectors, so it cannot censor or delay individual updates unnoticed.

State per originator ``s`` (docs/protocol.md section 3.1): ``aru[s]`` (contiguous receipt),
``max_acked[s]``, ``cum_aru[s]`` (contiguous receipt *with* a PO certificate:
Q1), ``white_line[s]`` (garbage-collection point), ``last_executed[s]``, and
the summary matrix ``cum_acks[r]`` (the newest PO_ARU accepted from ``r``).

Invariants:
* S11: ``cum_aru[s]`` never advances over a request unless the copy held here
  has ``2f+k+1`` acks carrying its digest.
* H3: a request is executable only through a copy whose digest has ``2f+k+1``
  acks; a second version signed by an equivocating originator is kept apart
  (at most ``request_copies_max`` versions) and never replaces the first.
* L8: at most ``max_po_in_flight`` own PO-Requests are un-executed.
* Every stored PO slot lies within ``po_window_max`` of its originator's white
  line, so a peer cannot make us store without bound.
* Junk cannot crowd out genuine state (issue 11, item 4): a slot holding a
  request signed by its originator is the originator's; a slot that PO-Acks or
  reconciliation parts created before any request arrived is *charged to the
  peer that created it*, at most ``po_unbacked_per_sender_max`` per peer, its
  oldest evicted first. Only request-backed slots count towards an originator's
  cap, so acks naming another originator's unknown (later) incarnations never
  get its genuine PO-Requests refused. H8 (plausible incarnations) applies to
  acks and reconciliation parts as to requests.

Restart amnesia (issue 11, item 3). A replica that restarts has forgotten the
acks its previous life sent. Were it to ack the other version of an
equivocating originator's request, that version could be certified too (f
Byzantine acks plus the amnesiac one and correct replicas shown the other
version), and correct replicas would execute different requests at one PO id.
The rule: a *recovering* replica (one the driver restarted, ``Replica(...,
recovering=True)``) acks a PO id an earlier life might have acked (its *gate*) only
for a digest ``2f+k+1`` *other* replicas already certify.

The gate comes from a record on stable storage (``A.Persist``; ``Replica(
acked_record=...)``): per originator, a bound every PO id any life of ours acked
lies under, written *before* the acks it covers leave. It is a write-ahead
reservation: the bound runs ``reserve_chunk`` sequence numbers ahead of the highest
id acked (about ``RESERVE_AHEAD_US`` of acks at the originator's recent rate, at
least ``RESERVE_MIN``, at most ``po_window_max``), so acks within it leave without a
write; the ack of an id beyond it waits for the next paced write, which tops up every
active originator's reservation as well (one write serves them all). An originator idle
for ``RESERVE_AHEAD_US`` gets its bound cut back to what was acked at the next write
(and the retransmission tick makes that write), and a clean stop writes the exact
record (``Replica.clean_stop_record``): an operator's rolling restart leaves an empty
gate. A record entry is ``(lo_inc, lo_seq, band_inc, band_seq)``: the ids at most
``(lo_inc, lo_seq)`` (lexicographically), and those of incarnations up to
``band_inc`` with sequence numbers up to ``band_seq``. The band exists only when the
record was lost: the bound is then our own incarnation plus H8's
``incarnation_slack_s`` (incarnations are start times in seconds; an earlier life's
clock was at most our start, and it accepted incarnations up to its clock plus the
slack), any sequence number. The record we write carries the inherited bounds (one
entry per originator: what we reserve joined with what we inherited), so a life
that began gated never forgets an earlier life's acks.

Once our new incarnation's marker executed, a second bound applies too: our earlier
lives never acked beyond the PO window of their white line, which was at most what
had been executed then, so only sequence numbers within ``po_window_max`` of that (of
the executed incarnation; of a later one: up to ``po_window_max``) stay gated, and the
inherited bounds are cut down to that. The gate ends once the originator executed
past its bound: ids at most the white line are never acked again.

Safety: the first certificate of any digest is made of acks each given at most once
per life; two first certificates intersect in a correct replica's single life, so
only one digest is ever certified. Liveness: a restarted replica counts as one of the
k benign faults while its gate holds ids the originator still has to send; the other
``2f+k+1`` correct replicas certify without it, it acks the certified digest
afterwards, and acks everything else as before. The gate holds at most the chunk
beyond what was acked when it stopped (none after a clean stop), so an originator
that goes on past it within a few tenths of a second of its own traffic leaves no
gate behind for the next restart (tests/sim/test_sequential_restarts.py). The record
is also what lets a whole cluster restart: every replica comes back recovering,
nobody is there to certify for the others, and only ids no earlier life acked, the
new incarnations', can be acked at once.
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prime import msgs
from prime.core import actions as A
from prime.core.quorum import compare_vectors, matrix_pop
from prime.msgs import PoAck, PoAru, PoRequest, ProofMatrix, Update, UpdateKind
from prime.types import PO_ZERO, PoSeq
from prime.wire import Envelope

if TYPE_CHECKING:
    from prime.core.replica import Replica

PoId = tuple[int, int, int]  # (originator, incarnation, seq)
# A.Persist is synced to disk before any later PO_ACK of ours leaves (the engine writes it
# on a thread of its own and holds only those acks meanwhile). An originator chooses its incarnations and how fast it sends, so a faulty one
# could make a replica sync every round. Writes are paced instead: a burst of N (every
# originator's first acks at start-up go at once), then one per PERSIST_INTERVAL_US; an
# ack beyond the record's reservation waits for the next allowed write (one write covers
# every originator).
PERSIST_INTERVAL_US = 100_000
# The reservation: a write covers the acks of about RESERVE_AHEAD_US at the originator's
# recent rate beyond the highest id acked, at least RESERVE_MIN ids (at most the PO
# window). A busy replica writes about twice a second; a crashed one's gate holds at
# most that chunk beyond what it had acked. An originator idle that long has its bound
# cut back to what was acked, at the next write.
RESERVE_AHEAD_US = 500_000
RESERVE_MIN = 32
# "Any sequence number": the bound of an incarnation whose record was lost.
SEQ_ANY = 1 << 62
RecordEntry = tuple[int, int, int, int]  # (lo_inc, lo_seq, band_inc, band_seq): module docstring
ACK_DIGESTS_PER_ACKER = 2  # digests one acker is counted for in one slot (equivocators sign two)


def request_digest(env: Envelope) -> bytes:
    """The PO-Request digest: H(entire wire bytes, signature included) (2.2.1).

    The codec accepts only the canonical encoding, so these bytes are a function of
    what the originator signed and of its signature: a relay cannot re-frame a
    request into a second digest (issue 11 item 7). The signature stays covered so
    that bytes rebuilt by reconciliation that match a certified digest are the very
    envelope 2f+k+1 replicas verified."""
    return hashlib.sha256(env.raw).digest()


@dataclass(slots=True)
class PoSlot:
    """One PO id: the first copy received, other versions, and the acks seen."""

    request: Envelope | None = None
    digest: bytes = b""
    others: dict[bytes, Envelope] = field(default_factory=dict)
    acks: dict[int, bytes] = field(default_factory=dict)  # acker -> first digest it acked
    ack_counts: dict[bytes, int] = field(default_factory=dict)  # digest -> acks
    # digest -> acker -> the signed PO_ACK carrying that ack. A certificate is 2f+k+1
    # signers of one digest, so an equivocating originator's ack of A counts for A even
    # if its ack of B came first (at most ACK_DIGESTS_PER_ACKER digests per acker). The
    # envelopes are shipped with reconciliation, so a replica that never saw 2f+k+1
    # acks on one digest can check the certificate itself (issue 11, item 9).
    signers: dict[bytes, dict[int, Envelope | None]] = field(default_factory=dict)
    owner: int = 0  # the peer charged for this slot while it holds no request (0: none)

    def add_ack(self, acker: int, digest: bytes, env: Envelope | None = None) -> bool:
        """Record ``acker``'s ack of ``digest``; False if known or over its bound."""
        signers = self.signers.get(digest)
        if acker not in self.acks:  # the usual case: its first ack (the pre-ordering hot path)
            self.acks[acker] = digest
            if signers is None:
                self.signers[digest] = {acker: env}
                self.ack_counts[digest] = 1
            else:
                signers[acker] = env
                self.ack_counts[digest] = len(signers)
            return True
        if signers is not None and acker in signers:
            return False
        mine = [d for d, who in self.signers.items() if acker in who]
        if len(mine) >= ACK_DIGESTS_PER_ACKER:
            # Over its bound: its ack of its least-backed digest makes room, if that has
            # less backing than this one. f colluders back junk with at most f acks;
            # a certified digest has f+k+1 correct ones, so junk never displaces it.
            weakest = min(mine, key=lambda d: (self.ack_counts[d], d))
            backing = len(signers) if signers is not None else 0
            if self.ack_counts[weakest] - 1 >= backing:
                return False
            del self.signers[weakest][acker]
            self.ack_counts[weakest] -= 1
            if not self.ack_counts[weakest]:
                del self.signers[weakest], self.ack_counts[weakest]
        if signers is None:
            signers = self.signers[digest] = {}
        signers[acker] = env
        self.ack_counts[digest] = len(signers)
        return True

    def remove_acker(self, acker: int) -> None:
        """Forget every ack of ``acker`` (its junk slot is evicted)."""
        self.acks.pop(acker, None)
        for digest in [d for d, who in self.signers.items() if acker in who]:
            del self.signers[digest][acker]
            if self.signers[digest]:
                self.ack_counts[digest] = len(self.signers[digest])
            else:
                del self.signers[digest], self.ack_counts[digest]

    def certifying_envs(self, digest: bytes) -> list[Envelope]:
        """The stored PO_ACK envelopes of the acks that carry ``digest``."""
        return [e for _, e in sorted(self.signers.get(digest, {}).items()) if e is not None]

    def certified_copy(self, quorum: int) -> Envelope | None:
        """The held copy whose digest has ``quorum`` acks (H3), if any."""
        if self.request is None:
            return None
        counts = self.ack_counts
        if counts.get(self.digest, 0) >= quorum:
            return self.request
        for d, env in self.others.items():
            if counts.get(d, 0) >= quorum:
                return env
        return None


class PreOrder:
    """Pre-ordering state and handlers of one replica."""

    def __init__(self, replica: Replica) -> None:
        self.r = replica
        n = replica.n
        inc = replica.incarnation
        self.po_seq: PoSeq = (inc, 0)
        self.po_seq_executed: PoSeq = (inc, 0)
        # Index 0 unused: arrays are 1-based like replica ids.
        self.history: list[dict[PoSeq, PoSlot]] = [dict() for _ in range(n + 1)]
        self.aru: list[PoSeq] = [PO_ZERO] * (n + 1)
        self.max_acked: list[PoSeq] = [PO_ZERO] * (n + 1)
        self.cum_aru: list[PoSeq] = [PO_ZERO] * (n + 1)
        self.cum_aru_updated = False
        self.cum_max_acked: list[list[PoSeq]] = [[PO_ZERO] * (n + 1) for _ in range(n + 1)]
        self.cum_acks: list[Envelope | None] = [None] * (n + 1)
        self.max_num_sent_in_proof: list[PoSeq] = [PO_ZERO] * (n + 1)
        # The matrix may have news for the leader (matrix_due): set when a row or a
        # mark of what we sent changes, cleared once the matrix is seen to hold none.
        self.matrix_changed = True
        # The PO_ACK job may have work (ack_due): set when ARU advances or the incarnation
        # hold may end, cleared once ack_due finds none.
        self.acks_maybe_due = True
        self.last_executed: list[PoSeq] = [PO_ZERO] * (n + 1)
        self.white_line: list[PoSeq] = [PO_ZERO] * (n + 1)
        self.intro_client_seq: dict[int, PoSeq] = {}
        self.update_queue: deque[Envelope] = deque()
        self.aru_num = 0
        # Slots created by acks or recon parts before any request: per peer charged, in
        # creation order (oldest evicted first), and per originator how many there are.
        self.unbacked_by: list[dict[tuple[int, PoSeq], None]] = [{} for _ in range(n + 1)]
        self.unbacked_in: list[int] = [0] * (n + 1)
        # Restart amnesia (module docstring): None until our new incarnation's marker
        # executed; then, per originator, what had been executed at that point (our
        # earlier lives' PO window ended within po_window_max of it).
        self.recovering = replica.recovering and "AMNESIA" not in replica.p.legacy
        self.amnesia_inc: list[int] | None = None
        self.amnesia_seq: list[int] = [0] * (n + 1)
        # The gate: per originator, what our earlier lives may have acked (the record
        # the driver kept, A.Persist), as a lexicographic bound and a band (RecordEntry).
        record = replica.acked_record
        if record is None and self.recovering:
            # The record is lost. An earlier life's clock was at most our start time (our
            # incarnation), and it acked incarnations up to its clock plus H8's slack, any
            # sequence number. The bound goes into the records we write too: a later life
            # must still cover what the earlier ones acked, not only what this one does.
            band = (replica.incarnation + replica.p.incarnation_slack_s, SEQ_ANY)
            record = tuple((0, 0) + band for _ in range(n + 1))
        self.gate_lo: list[PoSeq] = [PO_ZERO] * (n + 1)
        self.gate_band: list[PoSeq] = [PO_ZERO] * (n + 1)
        for s, entry in enumerate(record or ()):
            if s:
                self.gate_lo[s], self.gate_band[s] = (entry[0], entry[1]), (entry[2], entry[3])
        # This life's own acks, per originator: the highest id acked; the bound the record
        # on disk covers (every ack leaves at most that: the write-ahead reservation);
        # when that reservation was made and the highest id acked then (the recent ack
        # rate sizes the next one); when an id was last acked (an idle originator's
        # reservation is cut back to what was acked).
        self.acked_hi: list[PoSeq] = [PO_ZERO] * (n + 1)
        self.reserved: list[PoSeq] = [PO_ZERO] * (n + 1)
        self.reserve_base: list[tuple[int, PoSeq]] = [(0, PO_ZERO)] * (n + 1)
        self.last_ack_us: list[int] = [0] * (n + 1)
        # Pacing of A.Persist (PERSIST_INTERVAL_US, a burst of n): no write before
        # persist_next_us; persist_tat_us is when the pace would have caught up.
        self.persist_next_us = 0
        self.persist_tat_us = 0
        # Own incarnation starts at (inc, 0) for our own originator slot.
        self.aru[replica.me] = self.max_acked[replica.me] = self.cum_aru[replica.me] = (inc, 0)
        self.white_line[replica.me] = (inc, 0)

    # ------------------------------------------------------------- intake (2.1)

    def announce_incarnation(self) -> None:
        """Introduce the NEW_INCARNATION marker: our first PO-Request (seq 1)."""
        self.stamp_and_submit(UpdateKind.NEW_INCARNATION, b"")

    def stamp_and_submit(self, kind: UpdateKind, payload: bytes) -> None:
        """A daemon-originated update: stamp it with our (incarnation, seq) and sign it."""
        me = self.r.me
        inc, seq = self.intro_client_seq.get(me, (self.r.incarnation, 0))
        stamp = (self.r.incarnation, seq + 1 if inc == self.r.incarnation else 1)
        self.intro_client_seq[me] = stamp
        self.r.sign_direct(Update(me, stamp[0], stamp[1], int(kind), payload), dest=-1)

    def on_own_stamped_update(self, via: int, env: Envelope) -> None:
        """Our own signed daemon update came back from signing: queue it."""
        if via != self.r.me or env.sender != self.r.me:
            self.r.drop("update:not_local")
            return
        self.update_queue.append(env)
        self.send_po_requests()

    def on_client_update(self, env: Envelope) -> None:
        """An UPDATE signed by a client, handed in by the local application."""
        u = env.msg
        if not isinstance(u, Update) or u.client != env.sender:
            self.r.drop("update:signer")  # hardening: server_id == machine_id (2.9)
            return
        if not self.r.n < u.client <= self.r.n + self.r.p.num_clients:
            self.r.drop("update:client_range")
            return
        if u.kind != UpdateKind.APP:
            self.r.drop("update:kind")
            return
        stamp = (u.incarnation, u.seq)
        if stamp <= self.intro_client_seq.get(u.client, PO_ZERO):
            self.r.drop("update:duplicate")
            return
        self.intro_client_seq[u.client] = stamp
        self.update_queue.append(env)
        self.send_po_requests()

    def in_flight(self) -> int:
        return self.po_seq[1] - self.po_seq_executed[1]

    def send_po_requests(self) -> None:
        """Pack queued updates into PO-Requests while flow control allows (L8)."""
        budget = self.r.p.po_request_bytes_max
        while self.update_queue and self.in_flight() < self.r.p.max_po_in_flight:
            batch: list[Envelope] = []
            size = 0
            while self.update_queue and len(batch) < msgs.UPDATES_PER_REQUEST_MAX:
                nxt = len(self.update_queue[0].raw)
                if batch and size + nxt > budget:
                    break
                batch.append(self.update_queue.popleft())
                size += nxt
            self.po_seq = (self.po_seq[0], self.po_seq[1] + 1)
            self.r.sign_and_send(PoRequest(self.po_seq, tuple(batch)))

    # --------------------------------------------------------- PO_REQUEST (2.2.1)

    def slot_for(self, s: int, po: PoSeq, reason: str, by: int = 0) -> PoSlot | None:
        """Get or create the PO slot of ``(s, po)`` (None outside the bounded window);
        a slot created for peer ``by`` (acks, recon parts) is charged to it."""
        return self._slot_for(s, po, reason, by)

    def certified_digest(self, s: int, po: PoSeq) -> bytes | None:
        """The digest ``2f+k+1`` PO-Acks carry for ``(s, po)``, if known yet (H3)."""
        slot = self.history[s].get(po)
        if slot is None:
            return None
        quorum = self.r.q.certificate
        for digest, count in slot.ack_counts.items():
            if count >= quorum:
                return digest
        return None

    def _slot_for(self, s: int, po: PoSeq, reason: str, by: int = 0) -> PoSlot | None:
        """Get or create the PO slot, refusing ids outside the bounded window.

        ``by`` is 0 for a PO-Request (signed by ``s`` itself); otherwise the peer whose
        ack or recon part would create the slot, which is charged for it (item 4)."""
        if po <= self.white_line[s]:
            return None
        hist = self.history[s]
        slot = hist.get(po)
        if slot is not None:
            return slot
        wl = self.white_line[s]
        window = self.r.p.po_window_max
        if po[0] == wl[0] and po[1] > wl[1] + window:
            self.r.drop(reason + ":window")
            return None
        if po[0] > wl[0] and po[1] > window:
            self.r.drop(reason + ":window")
            return None
        legacy = "JUNK" in self.r.p.legacy
        if by and not legacy:
            if not self.incarnation_plausible(po[0]):
                self.r.drop(reason + ":incarnation_ahead")  # H8 for acks and recon too
                return None
            slot = PoSlot(owner=by)
            hist[po] = slot
            self._charge(by, s, po)
            return slot
        if len(hist) - (0 if legacy else self.unbacked_in[s]) >= 2 * window:
            self.r.drop(reason + ":full")
            return None
        slot = PoSlot()
        hist[po] = slot
        return slot

    def _charge(self, by: int, s: int, po: PoSeq) -> None:
        """Charge peer ``by`` for the request-less slot ``(s, po)``; evict its oldest
        such slots beyond its budget (its own junk only ever displaces its own)."""
        mine = self.unbacked_by[by]
        mine[(s, po)] = None
        self.unbacked_in[s] += 1
        while len(mine) > self.r.p.po_unbacked_per_sender_max:
            old_s, old_po = next(iter(mine))
            self._evict_unbacked(by, old_s, old_po)

    def _uncharge(self, slot: PoSlot, s: int, po: PoSeq) -> None:
        if slot.owner:
            self.unbacked_by[slot.owner].pop((s, po), None)
            self.unbacked_in[s] -= 1
            slot.owner = 0

    def _evict_unbacked(self, by: int, s: int, po: PoSeq) -> None:
        """Take ``by``'s ack off the request-less slot it was charged for. Another peer
        that acked it takes the charge (so colluders cannot leave it uncharged);
        with nobody else on it, the slot goes."""
        slot = self.history[s][po]
        self._uncharge(slot, s, po)
        slot.remove_acker(by)
        holders = sorted(slot.acks) or [x for x in self.r.recon.holders(s, po) if x != by]
        if holders:
            slot.owner = holders[0]
            self._charge(holders[0], s, po)
            return
        del self.history[s][po]

    def _delete_slot(self, s: int, po: PoSeq) -> None:
        slot = self.history[s].pop(po, None)
        if slot is not None:
            self._uncharge(slot, s, po)

    def on_po_request(self, via: int, env: Envelope) -> None:
        req: PoRequest = env.msg
        s = env.sender
        if not 1 <= s <= self.r.n:
            self.r.drop("po_request:sender")
            return
        for u in req.updates:
            c = u.msg.client
            if u.sender != c or (c <= self.r.n and c != s):
                self.r.drop("po_request:update_signer")
                return
            if c > self.r.n + self.r.p.num_clients:
                self.r.drop("po_request:client_range")
                return
        inc = req.po[0]
        if req.po <= self.white_line[s]:
            return  # executed and collected
        if not self.incarnation_plausible(inc):
            self.r.drop("po_request:incarnation_ahead")  # H8
            return
        if inc > self.aru[s][0]:
            # The originator restarted: its old incarnation's tail is abandoned.
            self.max_acked[s] = self.aru[s] = self.cum_aru[s] = (inc, 0)
        slot = self._slot_for(s, req.po, "po_request")
        if slot is None:
            return
        digest = request_digest(env)
        if slot.request is None:
            slot.request, slot.digest = env, digest
            self._uncharge(slot, s, req.po)  # now the originator's own state
        elif digest != slot.digest and digest not in slot.others:
            self.r.stats.equivocations_seen += 1
            if not self._keep_other_version(slot, digest, env):
                self.r.drop("po_request:too_many_versions")
                return
        else:
            return  # first copy wins; a duplicate changes nothing
        self._advance_aru(s)
        self._advance_cum_aru(s)
        self.r.ord.on_request_available(s, req.po)

    def incarnation_plausible(self, inc: int) -> bool:
        """H8: an incarnation is its replica's start time in seconds (the clock ``Tick``
        gives us), so one more than ``incarnation_slack_s`` ahead of ours is refused: a
        faulty replica cannot announce a far-future incarnation and lock others out."""
        if "H8" in self.r.p.legacy:
            return True
        return inc <= self.r.now_us // 1_000_000 + self.r.p.incarnation_slack_s

    def _keep_other_version(self, slot: PoSlot, digest: bytes, env: Envelope) -> bool:
        """Keep a second version of a PO id (H3), within ``request_copies_max``.

        When full, a version backed by at least f+1 acks (so possibly the
        certified one) evicts the least-acked stored one: an equivocating
        originator cannot crowd out the version correct replicas certified."""
        if len(slot.others) + 1 < self.r.p.request_copies_max:
            slot.others[digest] = env
            return True
        counts = slot.ack_counts
        backing = counts.get(digest, 0)
        if backing < self.r.q.one_correct:
            return False
        weakest = min(slot.others, key=lambda d: (counts.get(d, 0), d))
        if counts.get(weakest, 0) >= backing:
            return False
        del slot.others[weakest]
        slot.others[digest] = env
        return True

    def _advance_aru(self, s: int) -> None:
        inc, seq = self.aru[s]
        hist = self.history[s]
        while True:
            slot = hist.get((inc, seq + 1))
            if slot is None or slot.request is None:
                break
            seq += 1
        if seq != self.aru[s][1]:
            self.aru[s] = (inc, seq)
            self.acks_maybe_due = True

    def _advance_cum_aru(self, s: int) -> None:
        inc, seq = self.cum_aru[s]
        hist = self.history[s]
        quorum = self.r.q.certificate
        while True:
            slot = hist.get((inc, seq + 1))
            # Fewer acks than the quorum in all cannot certify any copy: skip the lookup.
            if slot is None or len(slot.acks) < quorum or slot.certified_copy(quorum) is None:
                break
            seq += 1
        if (inc, seq) != self.cum_aru[s]:
            self.cum_aru[s] = (inc, seq)
            self.cum_aru_updated = True

    # ------------------------------------------------------------- PO_ACK (2.2.2)

    def on_po_ack_timeout(self) -> None:
        self.send_po_acks(retransmit=False)

    def ack_due(self) -> int | None:
        """The PO_ACK job runs while ``send_po_acks(retransmit=False)`` would do
        something (replica.Periodic): a held request not acked yet, or the restart
        amnesia bounds to fix. It mirrors that loop without its effects, and only after
        something that can give it work (``acks_maybe_due``: ARU advanced, or our own
        execution or a jump moved, which may end the incarnation hold)."""
        if not self.acks_maybe_due:
            return None
        hold = self._own_incarnation_held()
        now = self.r.now_us
        if self.recovering and not hold and self.amnesia_inc is None:
            return now
        due: int | None = None
        waiting = now < self.persist_next_us
        for s in range(1, self.r.n + 1):
            aru = self.aru[s]
            start = self.max_acked[s]
            if start[0] < aru[0]:
                start = (aru[0], 0)
            last = min(aru[1], 1) if hold else aru[1]  # held: only seq 1 is acked
            if start[1] >= last:
                continue
            hist, inc = self.history[s], aru[0]
            # Beyond the record's reservation: acked once a write is allowed.
            reserved = self.reserved[s]
            covered = reserved[1] if reserved[0] == inc else SEQ_ANY if reserved[0] > inc else 0
            for j in range(start[1] + 1, last + 1):
                slot = hist.get((inc, j))
                if slot is not None and slot.request is not None:
                    at = self.persist_next_us if waiting and j > covered else now
                    if at == now:
                        return now
                    due = at if due is None else min(due, at)
                    break
        if due is None:
            self.acks_maybe_due = False  # nothing to ack until something gives us work
        return due

    def _own_incarnation_held(self) -> bool:
        """Incarnation hold: until our newest incarnation executed, ack only seq-1 requests."""
        return self.po_seq[0] > self.last_executed[self.r.me][0]

    def _may_have_acked_before(self, s: int, po: PoSeq) -> bool:
        """Restart amnesia: could an earlier life have acked ``(s, po)``? (docstring)"""
        if not self.recovering or s == self.r.me:
            return False
        band = self.gate_band[s]
        if not (po <= self.gate_lo[s] or (po[0] <= band[0] and po[1] <= band[1])):
            return False
        if self.amnesia_inc is None:
            return True
        window = self.r.p.po_window_max
        known = self.amnesia_inc[s]
        if po[0] < known:
            return True
        return po[1] <= (self.amnesia_seq[s] if po[0] == known else 0) + window

    def amnesia_gate_open(self, s: int) -> bool:
        """Does the gate still cover an id of ``s`` above its white line? (Every gated id
        is at most the larger of the bound and the band's corner; once the originator
        executed past that, nothing of it is withheld again.)"""
        if not self.recovering or s == self.r.me:
            return False
        return max(self.gate_lo[s], self.gate_band[s]) > self.white_line[s]

    def _fix_amnesia_bounds(self) -> None:
        """Our new incarnation's marker executed (or was jumped over): what had been
        executed then bounds what our earlier lives' PO windows held. The inherited
        bounds are cut down to that, so the records we write carry no more than it."""
        self.amnesia_inc = [p[0] for p in self.last_executed]
        self.amnesia_seq = [p[1] for p in self.last_executed]
        window = self.r.p.po_window_max
        for s in range(1, self.r.n + 1):
            if s == self.r.me:
                continue
            i, cap = self.last_executed[s][0], self.last_executed[s][1] + window
            lo, (b_inc, b_seq) = self.gate_lo[s], self.gate_band[s]
            # The bound: of the executed incarnation, at most cap; of a later one (the
            # originator restarted and its marker has not executed yet), at most the window.
            if lo[0] == i:
                lo = (i, min(lo[1], cap))
            elif lo[0] > i:
                lo = (lo[0], min(lo[1], window))
            if b_inc:
                if b_inc >= i:  # the band's part of the executed incarnation joins the bound
                    lo = max(lo, (i, min(b_seq, cap)))
                else:  # the band lies below what executed: the bound covers it
                    lo = max(lo, (b_inc, b_seq))
                b_seq = min(b_seq, window)
                if (b_inc, b_seq) <= lo:
                    b_inc = b_seq = 0  # every id of it is at most the bound
            self.gate_lo[s], self.gate_band[s] = lo, (b_inc, b_seq)

    def _ackable_digest(self, s: int, po: PoSeq, slot: PoSlot) -> bytes | None:
        """The digest we ack for a held request: the first copy's, except where restart
        amnesia applies; then only a version ``2f+k+1`` others certify, if we hold it."""
        if not self._may_have_acked_before(s, po):
            return slot.digest
        me = self.r.me
        for digest, count in slot.ack_counts.items():
            others = count - (1 if me in slot.signers[digest] else 0)
            if others >= self.r.q.certificate and (digest == slot.digest or digest in slot.others):
                return digest
        return None

    def send_po_acks(self, *, retransmit: bool) -> None:
        parts: list[msgs.AckPart] = []
        hold = self._own_incarnation_held()
        if self.recovering and not hold and self.amnesia_inc is None:
            self._fix_amnesia_bounds()
        may_persist = self.r.now_us >= self.persist_next_us
        grown: dict[int, PoSeq] = {}  # originator -> highest id acked beyond its reservation
        for s in range(1, self.r.n + 1):
            aru = self.aru[s]
            if retransmit:
                start = self.last_executed[s]
                if start[0] < aru[0]:
                    start = (aru[0], 0)
            else:
                start = self.max_acked[s]
                if start[0] < aru[0]:
                    start = (aru[0], 0)
            inc, last = aru
            reserved = self.reserved[s]
            if not may_persist and aru > reserved:
                # Beyond the reservation: once the record may be written (ack_due).
                last = reserved[1] if reserved[0] == inc else 0
            for j in range(start[1] + 1, last + 1):
                if hold and j != 1:
                    break
                slot = self.history[s].get((inc, j))
                if slot is None or slot.request is None:
                    continue  # collected: it was ordered without our ack
                digest = self._ackable_digest(s, (inc, j), slot) if self.recovering else slot.digest
                if digest is None:
                    self.r.stats.amnesia_acks_withheld += 1
                    continue  # retransmission retries once others certify it
                parts.append(msgs.AckPart(s, (inc, j), digest))
                if (inc, j) > self.max_acked[s]:
                    self.max_acked[s] = (inc, j)
                if (inc, j) > self.acked_hi[s]:
                    self.acked_hi[s] = (inc, j)
                    self.last_ack_us[s] = self.r.now_us
                if (inc, j) > reserved:
                    grown[s] = (inc, j)
        if grown:  # on stable storage before any of these acks leaves (I11-3)
            self._write_record(grown)
        for i in range(0, len(parts), msgs.ACK_PARTS_MAX):
            self.r.sign_and_send(PoAck(tuple(parts[i : i + msgs.ACK_PARTS_MAX])))

    # --------------------------------------------------- the record (I11-3)

    def reserve_chunk(self, s: int, upto: PoSeq) -> int:
        """How far beyond ``upto`` a new reservation for ``s`` reaches: the ids acked per
        RESERVE_AHEAD_US since the last reservation (at least RESERVE_MIN, at most the
        PO window: an originator cannot be acked further than that ahead anyway)."""
        at, base = self.reserve_base[s]
        done = upto[1] - (base[1] if base[0] == upto[0] else 0)
        elapsed = max(self.r.now_us - at, PERSIST_INTERVAL_US)
        chunk = done * RESERVE_AHEAD_US // elapsed
        return min(max(chunk, RESERVE_MIN), self.r.p.po_window_max)

    def _write_record(self, grown: dict[int, PoSeq]) -> None:
        """Reserve beyond the ids in ``grown`` (originator -> highest id about to be
        acked), cut back idle originators' reservations, and emit the record (paced)."""
        now = self.r.now_us
        for s, upto in grown.items():
            self.reserved[s] = (upto[0], upto[1] + self.reserve_chunk(s, upto))
            self.reserve_base[s] = (now, upto)
        for s in range(1, self.r.n + 1):
            if s in grown or self.acked_hi[s] == PO_ZERO:
                continue
            if now - self.last_ack_us[s] >= RESERVE_AHEAD_US:
                self.reserved[s] = self.acked_hi[s]  # idle: cut back
                continue
            # Active: topped up too, since this write happens anyway. The originators'
            # reservations then run out together, and one write serves them all (each on
            # its own, N originators made about N times the writes).
            upto = self.acked_hi[s]
            topped = (upto[0], upto[1] + self.reserve_chunk(s, upto))
            if topped > self.reserved[s]:
                self.reserved[s] = topped
                self.reserve_base[s] = (now, upto)
        self.r.emit(A.Persist(self.record()))
        self.persist_tat_us = max(self.persist_tat_us, now) + PERSIST_INTERVAL_US
        self.persist_next_us = self.persist_tat_us - (self.r.n - 1) * PERSIST_INTERVAL_US

    def tighten_idle_reservations(self) -> None:
        """Cut back the reservation of every originator idle for RESERVE_AHEAD_US to what
        was acked (one write, if the pace allows; the retransmission tick calls this).
        Without it, an originator that went quiet right after a reservation would keep
        the chunk in a crashed replica's gate until it sends that many requests again."""
        now = self.r.now_us
        if now < self.persist_next_us:
            return
        idle = any(
            self.reserved[s] > self.acked_hi[s] and now - self.last_ack_us[s] >= RESERVE_AHEAD_US
            for s in range(1, self.r.n + 1)
        )
        if idle:
            self._write_record({})

    def record(self) -> tuple[RecordEntry, ...]:
        """What goes to stable storage: per originator (index 0 unused), a bound on
        every id any life of ours acked: our reservation joined with the inherited gate."""
        out: list[RecordEntry] = [(0, 0, 0, 0)]
        for s in range(1, self.r.n + 1):
            lo = max(self.gate_lo[s], self.reserved[s])
            band = self.gate_band[s]
            if band <= lo:
                band = PO_ZERO  # every id in the band is at most the bound
            out.append((lo[0], lo[1], band[0], band[1]))
        return tuple(out)

    def clean_stop_record(self) -> tuple[RecordEntry, ...]:
        """The exact record, for a clean stop: our reservations cut back to what we
        acked. The driver writes it and sends nothing more; should it go on instead,
        an ack beyond it waits for a new write as usual."""
        for s in range(1, self.r.n + 1):
            self.reserved[s] = self.acked_hi[s]
        return self.record()

    def on_po_ack(self, via: int, env: Envelope) -> None:
        a = env.sender
        if not 1 <= a <= self.r.n:
            self.r.drop("po_ack:sender")
            return
        known = self.cum_max_acked[a]
        n, history, white_line, order = self.r.n, self.history, self.white_line, self.r.ord
        recon_slots = self.r.recon.slots
        for part in env.msg.parts:  # up to ACK_PARTS_MAX: the pre-ordering hot loop
            s, po = part.originator, part.po
            if s > n:
                self.r.drop("po_ack:originator")
                continue
            if po > known[s]:
                known[s] = po
            # An existing slot above the white line, else _slot_for's full checks.
            slot = history[s].get(po) if po > white_line[s] else None
            if slot is None:
                slot = self._slot_for(s, po, "po_ack", a)
            if slot is None or not slot.add_ack(a, part.digest, env):
                continue
            if slot.request is not None:
                self._advance_cum_aru(s)
                order.on_request_available(s, po)
            elif recon_slots and (s, po) in recon_slots:
                self.r.recon.on_acks_changed(s, po)  # a rebuild may now have its digest

    # ------------------------------------------------------------- PO_ARU (2.2.3)

    def on_po_aru_timeout(self) -> None:
        if self.cum_aru_updated:
            self.send_po_aru()

    def aru_due(self) -> int | None:
        """The PO_ARU job runs while our summary changed since we last sent it."""
        return self.r.now_us if self.cum_aru_updated else None

    def send_po_aru(self) -> None:
        self.cum_aru_updated = False
        self.aru_num += 1
        vector = tuple(self.cum_aru[1:])
        self.r.sign_direct(PoAru(self.po_seq[0], self.aru_num, vector))

    def on_po_aru_message(self, via: int, env: Envelope) -> None:
        self.apply_po_aru(env)

    def apply_po_aru(self, env: Envelope) -> bool:
        """The PO_ARU rule (2.2.3), also used for matrix and pre-prepare rows.
        Returns True if the summary was accepted as strictly newer."""
        j = env.sender
        cur: PoAru = env.msg
        if not 1 <= j <= self.r.n or len(cur.cum_aru) != self.r.n:
            self.r.drop("po_aru:shape")
            return False
        if not self.incarnation_plausible(cur.incarnation):
            self.r.drop("po_aru:incarnation_ahead")  # H8
            return False
        prev_env = self.cum_acks[j]
        if prev_env is not None:
            prev: PoAru = prev_env.msg
            if cur.incarnation < prev.incarnation:
                return False
            lower, higher = compare_vectors(cur.cum_aru, prev.cum_aru)
        else:
            lower, higher = False, any(v != PO_ZERO for v in cur.cum_aru)
        if not higher:
            return False
        if lower:
            self.r.drop("po_aru:inconsistent")
            return False
        self.cum_acks[j] = env
        self.matrix_changed = True
        known = self.cum_max_acked[j]
        for s, v in enumerate(cur.cum_aru, start=1):
            if v > known[s]:
                known[s] = v
        self.r.ord.on_newer_summary()
        return True

    def matrix_vectors(self) -> list[tuple[PoSeq, ...] | None]:
        return [None if e is None else e.msg.cum_aru for e in self.cum_acks[1:]]

    # ------------------------------------------------------- PROOF_MATRIX (2.2.4)

    def on_proof_matrix_timeout(self) -> None:
        if self.r.is_leader or not self.r.view_change_done:
            return
        pop = self.matrix_pop()
        news = False
        for s in range(1, self.r.n + 1):
            if pop[s - 1] > self.max_num_sent_in_proof[s]:
                self.max_num_sent_in_proof[s] = pop[s - 1]
                news = True
        if news:
            rows = tuple(self.cum_acks[1:])
            self.r.sign_and_send(ProofMatrix(self.r.now_us, rows), dest=self.r.leader)
            self.r.suspect.on_proof_matrix_sent(tuple(self.matrix_vectors()))

    def matrix_pop(self) -> tuple[PoSeq, ...]:
        """The proof ARU of our own matrix (Q2 with the incarnation rule)."""
        return matrix_pop(self.matrix_vectors(), self.r.n, self.r.q, plain="OLDTAIL" in self.r.p.legacy)

    def challenge_new_leader(self, ordered: tuple[PoSeq, ...] | None) -> None:
        """A view was installed with ``ordered`` as the eligibility point of its replay.
        What we sent the old leader beyond it is news to the new one: forget it, so the
        next proof matrix goes out and is a TAT challenge. Otherwise a new leader that
        sends the REPLAY and then nothing, with requests pending from the old view, is
        never measured and never replaced (the C code keeps the old marks)."""
        if ordered is None:
            return  # the replay point is behind our execution and collected: keep the marks
        for s in range(1, self.r.n + 1):
            self.max_num_sent_in_proof[s] = min(self.max_num_sent_in_proof[s], ordered[s - 1])
        self.matrix_changed = True

    def matrix_due(self) -> int | None:
        """The proof-matrix job runs while a non-leader's matrix makes eligible more than
        it sent the leader. Only a newer row (``apply_po_aru``) or lowered marks
        (``challenge_new_leader``) can create such news, so the matrix is looked at only
        after one of them (``matrix_changed``), not on every wake-up."""
        if not self.matrix_changed or self.r.is_leader or not self.r.view_change_done:
            return None
        pop = self.matrix_pop()
        sent = self.max_num_sent_in_proof
        if any(pop[s - 1] > sent[s] for s in range(1, self.r.n + 1)):
            return self.r.now_us
        self.matrix_changed = False  # no news; raising the marks cannot make any
        return None

    def on_proof_matrix(self, via: int, env: Envelope) -> None:
        if not self.r.is_leader or env.sender == self.r.me:
            return
        for row in env.msg.rows:
            if row is not None:
                self.apply_po_aru(row)

    # -------------------------------------------------------- retransmission (2.8)

    def quiescent(self) -> bool:
        """Nothing of pre-ordering is pending here: no update queued, every request of
        ours executed, nothing received, acked or certified beyond what is executed (per
        originator, and no slot above it, however it was made), and the restart record
        cut back to what was acked (``tighten_idle_reservations``, which the
        retransmission tick makes). The cheap tests first: a busy replica fails them."""
        if self.update_queue:
            return False
        me = self.r.me
        last = self.last_executed
        if self.po_seq > last[me] and self.po_seq > self.po_seq_executed:
            return False
        for s in range(1, self.r.n + 1):
            done = last[s]
            if self.aru[s] > done or self.max_acked[s] > done or self.cum_aru[s] > done:
                return False
            if self.reserved[s] > self.acked_hi[s]:
                return False
        return not any(po > last[s] for s in range(1, self.r.n + 1) for po in self.history[s])

    def retrans_due(self) -> int | None:
        """The retransmission job (``replica.Periodic``) runs every period unless the
        replica is quiescent: then there is nothing to retransmit, no PO_ARU anyone
        lacks that would order anything, and no reservation to cut back."""
        return None if self.r.quiescent() else self.r.now_us

    def on_retrans_timeout(self) -> None:
        if self.r.quiescent():  # a firing armed while there was work may find none left
            return
        me = self.r.me
        for po, slot in sorted(self.history[me].items()):
            if po > self.last_executed[me] and slot.request is not None:
                self.r.forward(slot.request)
        self.send_po_acks(retransmit=True)
        self.tighten_idle_reservations()
        self.send_po_aru()
        self.r.recon.on_tick()

    # ------------------------------------------------------------ execution hooks

    def raise_proof_points(self, pop: tuple[PoSeq, ...]) -> None:
        for s in range(1, self.r.n + 1):
            if pop[s - 1] > self.max_num_sent_in_proof[s]:
                self.max_num_sent_in_proof[s] = pop[s - 1]

    def executable_copy(self, s: int, po: PoSeq) -> Envelope | None:
        slot = self.history[s].get(po)
        if slot is None:
            return None
        if "H3" in self.r.p.legacy or s == self.r.me:
            # The C code executes whatever copy came first. For our own requests that is
            # right: we signed exactly one version, so there is nothing to certify, and
            # waiting for acks that peers no longer retransmit could stall us.
            return slot.request
        return slot.certified_copy(self.r.q.certificate)

    def mark_executed(self, s: int, po: PoSeq) -> None:
        if po > self.last_executed[s]:
            self.last_executed[s] = po
            if s == self.r.me:
                self.acks_maybe_due = True  # the incarnation hold may end
        if s == self.r.me and po > self.po_seq_executed:
            self.po_seq_executed = po
            self.send_po_requests()  # flow control may reopen (L8)

    def collect(self, s: int, po: PoSeq) -> None:
        """Garbage-collect one executed request (3.4)."""
        self._delete_slot(s, po)
        self.r.recon.forget(s, po)
        if po > self.white_line[s]:
            self.white_line[s] = po
        if po > self.cum_aru[s]:
            self.cum_aru[s] = po
            self.cum_aru_updated = True
            # Requests after it may be certified already (their acks came first, this
            # one's never did: it was ordered on others' evidence): advance over them,
            # or nothing would ever move cum_aru again and they would never be ordered.
            self._advance_cum_aru(s)
        if po > self.aru[s]:
            self.aru[s] = po
        if po > self.max_acked[s]:
            self.max_acked[s] = po

    def abandon_older_incarnation(self, s: int, keep_upto: PoSeq, new_inc: int) -> None:
        """2.3.5 step 3: drop slots of an abandoned incarnation above ``keep_upto``."""
        for po in sorted(self.history[s]):
            if po > keep_upto and po[0] < new_inc:
                self.collect(s, po)

    def jump_originator(self, s: int, p: PoSeq) -> None:
        """2.7 jump step 4: everything of ``s`` up to ``p`` counts as executed."""
        self.acks_maybe_due = True
        if p > self.max_num_sent_in_proof[s]:
            self.max_num_sent_in_proof[s] = p
        for po in [q for q in self.history[s] if q <= p]:
            self._delete_slot(s, po)
            self.r.recon.forget(s, po)
        for arr in (self.max_acked, self.aru, self.last_executed, self.white_line):
            if p > arr[s]:
                arr[s] = p
        if p > self.cum_aru[s]:
            self.cum_aru[s] = p
            self.cum_aru_updated = True
        self._advance_aru(s)
        self._advance_cum_aru(s)
        if s == self.r.me and p > self.po_seq_executed:
            self.po_seq_executed = min(p, self.po_seq) if p[0] == self.po_seq[0] else self.po_seq_executed
            self.send_po_requests()

    # ----------------------------------------------------------------- checks

    def invariants(self) -> None:
        assert self.in_flight() <= self.r.p.max_po_in_flight, "L8 flow control"
        assert self.po_seq_executed <= self.po_seq
        assert self.last_executed[self.r.me] <= self.po_seq
        assert len(self.unbacked_by[0]) == 0, "a request-backed slot is nobody's charge"
        assert all(a <= r for a, r in zip(self.acked_hi, self.reserved)), "an ack the record does not cover"

    def collection_sizes(self) -> dict[str, int]:
        return {
            "po_history": sum(len(h) for h in self.history),
            "update_queue": len(self.update_queue),
            "intro_client_seq": len(self.intro_client_seq),
        }
