"""Reconciliation: ship eligible requests to replicas that lack them (docs/protocol.md section 2.4).

Once ordinal ``g``'s pre-prepare is accepted, the requests it makes eligible
must reach every correct replica, even if their originator sent them to only
some (the RECON attack, 6.2) or crashed. The first ``2f+k+1`` replicas (by id)
whose matrix row shows they hold a request are its *designated senders*; each
sends it to every replica with no evidence of holding it.

Two modes:

* ``use_erasure_codes = true`` (default): the request's wire bytes are coded
  with zfec into N parts, any ``f+1`` of which rebuild it (Q21); designated
  sender ``r`` sends only part ``r-1``, so each sender ships about
  ``1/(f+1)`` of the request. The receiver keeps one part per sender, and
  rebuilds from ``f+1`` parts whose result hashes to the *certified* digest
  (the one ``2f+k+1`` PO-Acks carry, hardening H3); other subsets are tried
  when a Byzantine sender's part is garbage. The rebuilt bytes are decoded by
  the codec like any input (H9) and processed as a PO-Request.
* ``use_erasure_codes = false``: whole PO-Requests are forwarded unchanged, as
  the original release does.

Invariants: each ordinal is reconciled at most once (``slot.reconciled``); a
sender contributes only its own part index; decoding is attempted only
against a certified digest, so a bad part never yields a wrong request;
reconciliation slots exist only for requests inside the PO window that are not
yet executable here, and are dropped once they are.
"""

from __future__ import annotations

import hashlib
import itertools
from typing import TYPE_CHECKING

from prime import msgs, wire
from prime.core.preorder import request_digest
from prime.crypto import erasure
from prime.msgs import Recon as ReconMsg
from prime.msgs import ReconPart
from prime.types import PO_ZERO, PoSeq
from prime.wire import Envelope

if TYPE_CHECKING:
    from prime.core.order import OrdSlot
    from prime.core.replica import Replica


def designated_senders(column: list[tuple[int, int]], target: tuple[int, int], count: int) -> list[int]:
    """Q20: the first ``count`` replica ids (ascending) whose row reaches ``target``.
    ``column[r-1]`` is replica ``r``'s row entry for the originator."""
    out: list[int] = []
    for r, c in enumerate(column, start=1):
        if c >= target:
            out.append(r)
            if len(out) == count:
                break
    return out


class Recon:
    """Reconciliation duties of one replica."""

    def __init__(self, replica: Replica) -> None:
        self.r = replica
        # (originator, po) -> sender -> its part (erasure mode, receiving side)
        self.slots: dict[tuple[int, PoSeq], dict[int, ReconPart]] = {}
        self.decode_attempts_max = 32  # subsets tried per rebuild attempt

    def reconcile(self, slot: OrdSlot) -> None:
        if slot.reconciled or slot.pp is None:
            return
        ids = self.r.ord.eligible(slot)
        if ids is None:
            return
        slot.reconciled = True
        me, n, po = self.r.me, self.r.n, self.r.po
        rows = slot.pp.msg.rows
        # Whether we are a designated sender depends on the originator only (its
        # column of the matrix and its proof-ARU), so it is decided once per originator.
        designated: dict[int, bool] = {}
        outbox: dict[int, list[ReconPart]] = {}
        ack_box: dict[int, list[msgs.AckPart]] = {}
        for s, q in ids:
            if s not in designated:
                column = [PO_ZERO if row is None else row.msg.cum_aru[s - 1] for row in rows]
                senders = designated_senders(column, slot.pop[s - 1], self.r.q.certificate)
                designated[s] = me in senders
            if not designated[s]:
                continue
            env = po.executable_copy(s, q)
            if env is None:
                continue
            po_slot = po.history[s][q]
            # The first copy's digest was computed on arrival; hash only another version.
            certified = po_slot.digest if env is po_slot.request else request_digest(env)
            acks = po_slot.acks
            part: ReconPart | None = None
            for dest in range(1, n + 1):
                if dest in (me, s):
                    continue
                # Needy: no evidence it holds the request, or it acked another version
                # (an equivocating originator fed it a copy that is not the certified one).
                if po.cum_max_acked[dest][s] < q or acks.get(dest, certified) != certified:
                    self.r.stats.recon_requests_sent += 1
                    # Our ack too: the needy replica verifies what it rebuilds (or receives)
                    # against the digest 2f+k+1 acks certify, and acks lost on the way are
                    # never re-sent once the request executed, so it could wait for good.
                    ack_box.setdefault(dest, []).append(msgs.AckPart(s, q, acks.get(me, certified)))
                    if not self.r.p.use_erasure_codes:
                        self.r.forward(env, dest)
                        self.r.stats.recon_bytes_sent += len(env.raw)
                        continue
                    if part is None:
                        part = self._my_part(s, q, env.raw)
                    outbox.setdefault(dest, []).append(part)
        for dest, parts in sorted(outbox.items()):
            for i in range(0, len(parts), msgs.RECON_PARTS_MAX):
                self.r.sign_and_send(ReconMsg(tuple(parts[i : i + msgs.RECON_PARTS_MAX])), dest=dest)
        for dest, ack_parts in sorted(ack_box.items()):
            for i in range(0, len(ack_parts), msgs.ACK_PARTS_MAX):
                self.r.sign_and_send(msgs.PoAck(tuple(ack_parts[i : i + msgs.ACK_PARTS_MAX])), dest=dest)

    def _my_part(self, s: int, q: PoSeq, raw: bytes) -> ReconPart:
        data_parts = self.r.q.one_correct
        mine = self.r.me - 1
        data = erasure.encode(raw, data_parts=data_parts, total_parts=self.r.n)[mine]
        return ReconPart(s, q, mine, len(raw), data)

    # ---------------------------------------------------------------- receiving

    def on_recon(self, via: int, env: Envelope) -> None:
        """Keep each sender's own part; rebuild once f+1 parts match the certified digest."""
        sender = env.sender
        if not 1 <= sender <= self.r.n or sender == self.r.me:
            self.r.drop("recon:sender")
            return
        po = self.r.po
        data_parts = self.r.q.one_correct
        for part in env.msg.parts:
            s, q = part.originator, part.po
            if s > self.r.n or part.part_index != sender - 1:
                self.r.drop("recon:part_index")  # a sender may only send its own part
                continue
            if len(part.data) != erasure.part_size(part.request_bytes, data_parts):
                self.r.drop("recon:part_size")
                continue
            if q <= po.white_line[s] or po.executable_copy(s, q) is not None:
                continue  # executed or already held in its certified version
            if po.slot_for(s, q, "recon") is None:
                continue  # outside the window
            held = self.slots.setdefault((s, q), {})
            if sender in held:
                continue
            held[sender] = part
            self.try_rebuild(s, q)
        self._prune()

    def try_rebuild(self, s: int, q: PoSeq) -> None:
        """Rebuild ``(s, q)`` from f+1 parts whose result has the certified digest."""
        held = self.slots.get((s, q))
        po = self.r.po
        data_parts = self.r.q.one_correct
        if held is None or len(held) < data_parts:
            return
        certified = po.certified_digest(s, q)
        if certified is None:
            return  # acks still to come; they retry us
        by_length: dict[int, list[ReconPart]] = {}
        for part in held.values():
            by_length.setdefault(part.request_bytes, []).append(part)
        attempts = 0
        for length, parts in sorted(by_length.items()):
            for subset in itertools.combinations(parts, data_parts):
                attempts += 1
                if attempts > self.decode_attempts_max:
                    return
                raw = erasure.decode(
                    {p.part_index: p.data for p in subset},
                    request_bytes=length,
                    data_parts=data_parts,
                    total_parts=self.r.n,
                )
                if raw is None or hashlib.sha256(raw).digest() != certified:
                    self.r.stats.recon_bad_rebuilds += 1
                    continue
                rebuilt = wire.decode(raw)  # validated like any other input (H9)
                if isinstance(rebuilt, str) or rebuilt.sender != s:
                    self.r.drop("recon:rebuilt_invalid")
                    continue
                if not isinstance(rebuilt.msg, msgs.PoRequest) or rebuilt.msg.po != q:
                    self.r.drop("recon:rebuilt_invalid")
                    continue
                del self.slots[(s, q)]
                self.r.stats.recon_rebuilt += 1
                po.on_po_request(self.r.me, rebuilt)
                return

    def on_acks_changed(self, s: int, q: PoSeq) -> None:
        if (s, q) in self.slots:
            self.try_rebuild(s, q)

    def _prune(self) -> None:
        po = self.r.po
        if len(self.slots) <= self.r.p.po_window_max:
            return
        for key in [k for k in self.slots if k[1] <= po.white_line[k[0]]]:
            del self.slots[key]

    def forget(self, s: int, q: PoSeq) -> None:
        """The request was executed and collected: its parts are of no more use."""
        self.slots.pop((s, q), None)

    def collection_sizes(self) -> dict[str, int]:
        return {"recon_slots": len(self.slots)}

