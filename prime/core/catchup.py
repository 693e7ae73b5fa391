"""Catch-up: ORD certificates, filling a missed ordinal, and the jump (docs/protocol.md section 2.7).

Every replica periodically broadcasts the ORD certificate of its newest
normally ordered ordinal: the pre-prepare plus ``2f+k+1`` matching Commits, a
self-contained proof that the ordinal was decided (Q6). A replica that is
behind uses a certificate in one of two ways:

* *fill*: the certificate is for ``ARU+1``. It is exactly a commit certificate,
  so the ordinal is installed and executed as if ordered here: no gap, no
  state transfer.
* *ask*: the certificate is at most ``catchup_history_ordinals`` ahead. The
  replica sends that peer a CATCHUP_REQUEST with its ARU; the peer answers
  with the certificates it keeps above it (its newest ``catchup_history``),
  which fill one by one. This is the ordinal-by-ordinal catch-up the original
  declared (CATCHUP_HISTORY, CATCHUP_REQUEST) but left unimplemented; without
  it, one lost Commit costs a lagging replica a full state transfer.
* *jump*: the certificate is further ahead, or asking brought no progress
  for a whole catch-up period. The replica adopts its matrix as
  the execution point, skips delivery of the ordinals in between, and tells its
  application to transfer state (``StateTransferNeeded``), then introduces a
  CLIENT_STATE_TRANSFER marker that every replica delivers.

Open questions of docs/hardening.md section 4, decided:
* 2: after a jump to J the daemon goes on delivering J+1, J+2, ... as the C code
  does, and the application discards what it receives up to X, the ordinal of
  its own CLIENT_STATE_TRANSFER marker, then takes a peer's state as of X
  (``prime.app.kv`` documents and implements the contract).
* 5: a replayed (PC_SET/NO_OP) ordinal has no commit certificate, and waiting
  for the next normally committed one is not enough: a replica that missed a
  replay cannot build complete state for the next view change either, so a
  second view change in a row could stall (the Twins test found it). Such an
  ordinal travels as a REPLAYED record (its prepare certificate, or "NO_OP")
  in answers to CATCHUP_REQUEST, and is installed from ``f+1`` matching
  records sent by distinct replicas, at least one of them correct. During a
  view change a replica asks each peer whose REPORT is ahead of its ARU.

Hardening adopted (docs/hardening.md section 2):
* H6: a certificate counts only if its pre-prepare is signed by
  ``leader(PP.view)``, its Commits come from distinct replicas and carry the
  PP's view, sequence and digest, and the certificate's own view equals the
  PP's (the wire codec checks the field bindings, this module the signers).
* H12: a leader that jumps never moves its next ordinal backwards.
* H13: no jump while a peer is merely a few ordinals ahead for a moment: the
  gap must reach ``jump_gap_ordinals_min``, or the same certificate must stay
  ahead for a whole catch-up period in which we made no progress. When ARU+1
  is not even decided here (a catch-up answer was lost), a stalled replica
  within ``catchup_history_ordinals`` asks again, a peer per period (two peers
  ahead of it when the last ask brought nothing), and jumps only after two such
  asks brought nothing: one lost message made a correct
  replica that was never cut off skip ordinals by state transfer (issue 11
  item 16's checker, rule L2, found it).

Amplification (issue 11 item 11): a CATCHUP_REQUEST is a few dozen bytes and
its answer up to ``catchup_reply_count_max`` signed certificates, so a peer
asking every ``catchup_epsilon_us`` drew about a thousand times what it sent.
An answer now holds at most ``catchup_reply_bytes_max`` bytes of records, and
each asker draws from its own token bucket (in the virtual time ``Tick`` gives)
refilled at ``catchup_peer_bytes_per_s``, holding up to one full answer: a
correct replica catching up gets a full answer at once and more as it executes,
a faulty one asking in a loop gets that rate and no more.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prime import wire
from prime.core import actions as A
from prime.core.order import OrdSlot, pre_prepare_digest
from prime.core.quorum import leader_of
from prime.msgs import CatchupRequest, OrdCert, OrdKind, Replayed, UpdateKind
from prime.wire import Envelope

if TYPE_CHECKING:
    from prime.core.replica import Replica


class Catchup:
    """ORD certificates, ordinal-by-ordinal catch-up and the jump of one replica."""

    def __init__(self, replica: Replica) -> None:
        self.r = replica
        self.last_ord_cert: OrdCert | None = None  # our own newest (unsigned body)
        # ...and the envelope we signed it in, once back from signing: while no newer
        # ordinal executes, the broadcast repeats that envelope instead of signing the
        # same certificate again (an idle replica's only periodic message).
        self.last_ord_cert_env: Envelope | None = None
        # Our newest certificates and replayed ordinals, to answer requests.
        self.recent: dict[int, OrdCert | Replayed] = {}
        self.recent_at: dict[int, int] = {}  # when each kept ordinal was executed
        self.fills: dict[int, OrdCert] = {}  # valid certificates just above our ARU
        # Replayed records just above our ARU: ordinal -> sender -> (content key, record).
        self.vouches: dict[int, dict[int, tuple[bytes, Replayed]]] = {}
        self.asked: dict[int, tuple[int, int]] = {}  # peer -> (our ARU, time) of the last ask
        self.peer_certs: dict[int, Envelope] = {}  # newest valid cert per peer
        self.replied_at_us: dict[int, int] = {}  # rate limit of answers per peer
        # Per asker: (bytes it may still draw, when that was computed): a token bucket
        # refilled at catchup_peer_bytes_per_s up to one full answer (issue 11 item 11).
        self.answer_budget: dict[int, tuple[float, int]] = {}
        self.next_catchup_id = 1
        self.next_catchup_time_us = 0
        self.aru_at_last_attempt = -1
        self.asks_unanswered = 0  # catch-up periods asked again without progress

    # --------------------------------------------------------------- producing

    def on_executed_commit(self, slot: OrdSlot) -> None:
        assert slot.pp is not None and slot.commit_cert
        cert = OrdCert(slot.view, slot.seq, int(OrdKind.COMMIT), 1, slot.pp, slot.commit_cert)
        self._remember(cert)

    def on_executed_replayed(self, slot: OrdSlot) -> None:
        if slot.kind == OrdKind.PC_SET:
            assert slot.pp is not None
            record = Replayed(self.r.view, slot.seq, slot.pp, slot.prepare_cert)
        else:
            record = Replayed(self.r.view, slot.seq, None, ())
        self._keep_recent(record)

    def _keep_recent(self, record: OrdCert | Replayed) -> None:
        history = self.r.p.catchup_history_ordinals
        if history:
            self.recent[record.seq] = record
            self.recent_at[record.seq] = self.r.now_us
            while len(self.recent) > history:
                oldest = min(self.recent)
                del self.recent[oldest]
                self.recent_at.pop(oldest, None)

    def _remember(self, cert: OrdCert) -> None:
        self.last_ord_cert = cert
        self._keep_recent(cert)
        if not self.r.timer_armed("ord_cert"):
            self.r.set_timer("ord_cert", self.r.now_us + self.r.p.ord_cert_period_us)

    def quiescent(self) -> bool:
        """No certificate or replayed record waits to fill an ordinal, and no catch-up
        is under way (its timer runs while a peer's certificate is ahead of us)."""
        return not self.fills and not self.vouches and not self.r.timer_armed("catchup")

    def on_ord_cert_timeout(self) -> None:
        if self.last_ord_cert is not None:
            env = self.last_ord_cert_env
            if env is not None and env.msg is self.last_ord_cert:
                self.r.forward(env)  # unchanged: the signed copy, as retransmissions do
            else:
                self.r.sign_and_send(self.last_ord_cert)
            self.r.set_timer("ord_cert", self.r.now_us + self.r.p.ord_cert_period_us)

    def on_stale_vote(self, peer: int, seq: int) -> None:
        """``peer`` still votes (a retransmitted Prepare or Commit) for ordinal ``seq``, which
        we executed at least half a retransmission period ago: it lacks the decision (a
        vote lost on the way, and nobody retransmits for an ordinal they executed).
        Answer as if it had asked for catch-up from ``seq``, within its answer budget,
        instead of leaving it to the next ORD_CERT broadcast. A vote arriving just after
        we executed (the last of 2f+k+2) is no such sign: it gets nothing."""
        at = self.recent_at.get(seq)
        if at is None or self.r.now_us - at < self.r.p.retrans_period_us // 2:
            return
        self.answer(peer, seq - 1)

    def on_catchup_request(self, via: int, env: Envelope) -> None:
        """Answer a peer's CATCHUP_REQUEST with the certificates we keep above its ARU."""
        self.answer(env.sender, env.msg.aru)

    def answer(self, peer: int, aru: int) -> None:
        """The certificates we keep above ``aru``, to ``peer``: at most every
        ``catchup_epsilon_us`` and within its byte budget (shared by every way of asking)."""
        if peer == self.r.me or not 1 <= peer <= self.r.n:
            return
        last = self.replied_at_us.get(peer)
        if last is not None and self.r.now_us - last < self.r.p.catchup_epsilon_us:
            self.r.drop("catchup_request:rate")
            return
        p, now = self.r.p, self.r.now_us
        tokens, at = self.answer_budget.get(peer, (float(p.catchup_reply_bytes_max), now))
        refill = (now - at) * p.catchup_peer_bytes_per_s / 1e6
        tokens = min(float(p.catchup_reply_bytes_max), tokens + refill)
        if tokens <= 0:
            self.answer_budget[peer] = (tokens, now)
            self.r.drop("catchup_request:budget")  # this peer drew its share: it waits
            return
        self.replied_at_us[peer] = now
        start = aru + 1
        sent = 0
        for seq in range(start, start + p.catchup_reply_count_max):
            record = self.recent.get(seq)
            if record is None:
                break
            if isinstance(record, OrdCert):
                record = OrdCert(record.view, seq, record.kind, 2, record.pre_prepare, record.commits)
            size = len(wire.encode_body(record))
            if sent and sent + size > tokens:
                break  # the first record always goes, so any record can be fetched
            sent += size
            self.r.sign_and_send(record, dest=peer)
        # An answer over the budget (one large first record) is a debt paid by waiting.
        self.answer_budget[peer] = (tokens - sent, now)

    def ask(self, peer: int) -> None:
        """Ask ``peer`` for what it keeps above our ARU: at once when our ARU moved, else
        at most twice per retransmission period (the retransmission timer asks again)."""
        aru = self.r.ord.aru
        last = self.asked.get(peer)
        if last is not None and last[0] == aru and self.r.now_us - last[1] < self.r.p.retrans_period_us // 2:
            return
        self.asked[peer] = (aru, self.r.now_us)
        self.r.log.debug("ask %d for ordinals above %d", peer, aru)
        self.r.sign_and_send(CatchupRequest(aru), dest=peer)

    # --------------------------------------------------------------- receiving

    def valid_certificate(self, cert: OrdCert) -> bool:
        """H6 checks that need N and the quorum sizes (the codec checked the rest)."""
        pp_env = cert.pre_prepare
        pp = pp_env.msg
        if "H6" in self.r.p.legacy:  # the C checks: count and digests only
            ppd = pre_prepare_digest(pp)
            return len(cert.commits) == self.r.q.certificate and all(
                c.msg.digest == ppd for c in cert.commits
            )
        if pp_env.sender != leader_of(pp.view, self.r.n):
            return False
        if len(pp.rows) != self.r.n or any(
            row is not None and len(row.msg.cum_aru) != self.r.n for row in pp.rows
        ):
            return False
        if len(cert.commits) != self.r.q.certificate:
            return False
        ppd = pre_prepare_digest(pp)
        return all(c.msg.digest == ppd and 1 <= c.sender <= self.r.n for c in cert.commits)

    def on_ord_cert(self, via: int, env: Envelope) -> None:
        sender = env.sender
        if sender == self.r.me and via == self.r.me and env.msg is self.last_ord_cert:
            self.last_ord_cert_env = env  # our broadcast, back from signing
        if sender == self.r.me or not 1 <= sender <= self.r.n:
            return
        cert: OrdCert = env.msg
        if not self.valid_certificate(cert):
            self.r.drop("ord_cert:invalid")
            return
        if cert.view > self.r.view or (cert.view == self.r.view and not self.r.view_change_done):
            self.r.adopt_view(cert.view)  # the certificate proves the view was installed
        aru = self.r.ord.aru
        stored = self.peer_certs.get(sender)
        if stored is None or cert.seq > stored.msg.seq:
            self.peer_certs[sender] = env
        if cert.seq <= aru:
            return
        if cert.view <= self.r.view and cert.seq <= aru + self.r.p.catchup_history_ordinals:
            self.fills.setdefault(cert.seq, cert)
            self.try_fill()
        if self.r.ord.aru < cert.seq and not self.r.timer_armed("catchup"):
            delay = max(self.r.p.catchup_epsilon_us, self.next_catchup_time_us - self.r.now_us)
            self.r.set_timer("catchup", self.r.now_us + delay)

    def on_replayed(self, via: int, env: Envelope) -> None:
        """A peer says how a replay decided an ordinal; f+1 matching records install it."""
        sender, record = env.sender, env.msg
        if sender == self.r.me or not 1 <= sender <= self.r.n:
            return
        aru = self.r.ord.aru
        if record.seq <= aru:
            return
        if record.seq > aru + max(self.r.p.catchup_history_ordinals, self.r.p.catchup_reply_count_max):
            self.r.drop("replayed:window")
            return
        if record.pre_prepare is None:
            key = b""
        elif self.r.vc.valid_prepare_cert(record.pre_prepare, record.prepares):
            key = pre_prepare_digest(record.pre_prepare.msg)
        else:
            self.r.drop("replayed:invalid")
            return
        self.vouches.setdefault(record.seq, {}).setdefault(sender, (key, record))
        self.try_fill()

    def _vouched(self, seq: int) -> Replayed | None:
        """The record for ``seq`` that f+1 distinct replicas agree on, if any."""
        votes = self.vouches.get(seq)
        if not votes:
            return None
        counts: dict[bytes, int] = {}
        for key, record in votes.values():
            counts[key] = counts.get(key, 0) + 1
            if counts[key] >= self.r.q.one_correct:
                return record
        return None

    def try_fill(self) -> None:
        """Execute held certificates and vouched replayed ordinals for ARU+1, ARU+2, ..."""
        order = self.r.ord
        while True:
            for seq in [s for s in self.fills if s <= order.aru]:
                del self.fills[seq]
            for seq in [s for s in self.vouches if s <= order.aru]:
                del self.vouches[seq]
            before = order.aru
            cert = self.fills.pop(before + 1, None)
            if cert is not None:
                self.fill(cert)
            else:
                record = self._vouched(before + 1)
                if record is None:
                    return
                del self.vouches[before + 1]
                self.fill_replayed(record)
            if order.aru == before:
                return  # ordered but waiting for requests; execution resumes on arrival

    def fill_replayed(self, record: Replayed) -> None:
        """Install a replayed ordinal for ``ARU+1`` as the replay decided it."""
        order = self.r.ord
        slot = order.history.get(record.seq)
        if record.seq != order.aru + 1 or (slot is not None and slot.ordered):
            return
        self.r.stats.replayed_filled += 1
        self.r.log.debug("replayed ordinal %d installed from f+1 records", record.seq)
        order.install_replayed(record.seq, record.pre_prepare, tuple(record.prepares))
        order.send_prepares()

    def on_catchup_timeout(self) -> None:
        """Scan peers round-robin for a certificate ahead of us; ask, fill or jump."""
        n, aru = self.r.n, self.r.ord.aru
        self.next_catchup_time_us = self.r.now_us + self.r.p.catchup_period_us
        ahead: Envelope | None = None
        for i in range(n):
            peer = (self.next_catchup_id - 1 + i) % n + 1
            env = self.peer_certs.get(peer)
            if env is not None and env.msg.seq > aru:
                ahead = env
                self.next_catchup_id = peer % n + 1
                break
        if ahead is None:
            self.aru_at_last_attempt = -1
            return
        self.r.set_timer("catchup", self.next_catchup_time_us)
        cert: OrdCert = ahead.msg
        if cert.view > self.r.view:
            return  # a later view: its NEW_LEADER_PROOF brings us there first
        gap = cert.seq - aru
        stalled = self.aru_at_last_attempt == aru  # a whole period without progress (H13)
        self.aru_at_last_attempt = aru
        if not stalled:
            self.asks_unanswered = 0
        history = self.r.p.catchup_history_ordinals
        nxt = self.r.ord.history.get(aru + 1)
        # ARU+1 decided here but not executable: stuck waiting for requests or their acks,
        # which asking cannot bring. Not decided here: an answer (or its certificate) was
        # lost on the way, so ask again, a peer at a time, before giving up on executing
        # (a correct replica jumped over ordinals after one lost message).
        waiting_for_requests = nxt is not None and nxt.ordered
        if "H13" in self.r.p.legacy:
            self.jump(cert)
        elif stalled and (waiting_for_requests or gap > history or self.asks_unanswered >= 2):
            self.jump(cert)
        elif gap == 1:
            self.fill(cert)
        elif gap <= history:
            self.asks_unanswered += stalled
            self.r.sign_and_send(CatchupRequest(aru), dest=ahead.sender)
            if stalled:
                # The last ask brought nothing (lost on the way there or back): ask a
                # second peer ahead of us as well, so two more losses in a row are needed
                # before we give up and jump (each answer stays within its asker's budget).
                other = self._another_ahead(ahead.sender, aru)
                if other is not None:
                    self.r.sign_and_send(CatchupRequest(aru), dest=other)
        elif gap >= self.r.p.jump_gap_ordinals_min:
            self.jump(cert)

    def _another_ahead(self, peer: int, aru: int) -> int | None:
        """The next peer after ``peer`` (round-robin) whose certificate is above ``aru``."""
        n = self.r.n
        for i in range(1, n):
            other = (peer - 1 + i) % n + 1
            env = self.peer_certs.get(other)
            if other != self.r.me and env is not None and env.msg.seq > aru:
                return other
        return None

    # ------------------------------------------------------------------ fill

    def fill(self, cert: OrdCert) -> None:
        """Install a certificate for ``ARU+1`` as that ordinal's commit certificate.

        The certificate proves the decision, so it also overrides a different
        pre-prepare a two-faced leader may have shown us for this ordinal."""
        order = self.r.ord
        slot = order._slot(cert.seq, "ord_cert")
        if slot is None or slot.ordered:
            return
        if slot.pp is None or slot.ppd != pre_prepare_digest(cert.pre_prepare.msg):
            order._install_pp(slot, cert.pre_prepare)
        slot.commit_cert = tuple(cert.commits)
        slot.ordered = True
        order.try_execute()
        order.send_prepares()  # PPs held beyond the filled ordinal can now be prepared

    # ------------------------------------------------------------------ jump

    def jump(self, cert: OrdCert) -> None:
        """Adopt certificate ``cert`` as our execution point (2.7 "Jump")."""
        r, order, po = self.r, self.r.ord, self.r.po
        j = cert.seq
        assert j > order.aru
        r.stats.jumps += 1
        for seq in [s for s in order.history if s <= j]:
            del order.history[seq]
        order.aru = j
        order.high_seq = max(order.high_seq, j)
        order.pp_aru = max(order.pp_aru, j)
        slot = OrdSlot(j)
        order.history[j] = slot
        order._install_pp(slot, cert.pre_prepare)
        slot.commit_cert = tuple(cert.commits)
        slot.ordered = slot.executed = slot.reconciled = slot.sent_prepare = True
        order.last_executed_pop = slot.pop
        order.blocked_on = set()
        self._remember(cert)
        self.fills = {s: c for s, c in self.fills.items() if s > j}
        for s in range(1, r.n + 1):
            p = slot.pop[s - 1]
            po.jump_originator(s, p)
        for row in cert.pre_prepare.msg.rows:
            if row is not None:
                po.apply_po_aru(row)
        po.send_po_aru()
        if r.is_leader:
            order.should_send_pp = True
            if "H12" in r.p.legacy:
                order.seq = j + 1  # the C code: may move backwards and re-propose used ordinals
            else:
                order.seq = max(order.seq, j + 1)  # H12: never re-propose used ordinals
        r.emit(A.StateTransferNeeded(j))
        po.stamp_and_submit(UpdateKind.CLIENT_STATE_TRANSFER, j.to_bytes(8, "big"))
        order.send_prepares()
        order.try_execute()
        if not r.view_change_done:
            r.vc.recheck_all()  # the jump may complete someone's state (2.7 step 6)

    def collection_sizes(self) -> dict[str, int]:
        return {
            "peer_certs": len(self.peer_certs),
            "recent_certs": len(self.recent),
            "fills": len(self.fills),
            "vouches": sum(len(v) for v in self.vouches.values()),
            "asked": len(self.asked),
            "answer_budget": len(self.answer_budget),
        }
