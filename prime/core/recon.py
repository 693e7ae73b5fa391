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

Against a smarter adversary (issue 11):

* Item 9, split acks: an originator that shows version A to most replicas and B
  to the rest, and sends its own ack for A only to the first group, leaves the
  others short of ``2f+k+1`` acks on A for good (acks are not re-sent once the
  request executed). A designated sender therefore forwards the signed PO_ACK
  envelopes that certify the request to each needy replica, with its part; the
  receiver checks each signature like any ack.
* Item 10: parts are kept per sending peer, at most
  ``recon_parts_per_sender_max`` parts and ``recon_bytes_per_sender_max`` bytes,
  its oldest evicted first, and collected when the request executes, is jumped
  over, or falls below its originator's white line.
* Item 14: every subset of ``f+1`` parts is eventually tried: each arriving
  part queues the subsets it forms with the parts that came before it (all
  subsets, once each, whatever the arrival order), consumed
  ``recon_decodes_per_step_max`` at a time per event and per retransmission
  tick. Once a request is rebuilt, the held parts are checked against its
  encoding: a sender whose signed part differs is proven faulty and its parts
  are never tried again, so garbage costs the search at most once per sender.
* Item 13: a replayed NO_OP ordinal makes nothing eligible; it counts as
  reconciled at once, so it is garbage-collected like any other ordinal.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prime import msgs, wire
from prime.core.preorder import request_digest
from prime.crypto import erasure
from prime.msgs import OrdKind, ReconPart
from prime.msgs import Recon as ReconMsg
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


Key = tuple[int, PoSeq]  # (originator, po)


def _subsets_with(
    part: ReconPart, earlier: list[ReconPart], size: int
) -> Iterator[tuple[ReconPart, ...]]:
    """Every ``size``-subset of ``earlier + [part]`` that contains ``part``, lazily."""
    for rest in itertools.combinations(earlier, size - 1):
        yield rest + (part,)


class Recon:
    """Reconciliation duties of one replica."""

    def __init__(self, replica: Replica) -> None:
        self.r = replica
        n = replica.n
        # (originator, po) -> sender -> its part (erasure mode, receiving side), in arrival order
        self.slots: dict[Key, dict[int, ReconPart]] = {}
        self.decode_attempts_max = 32  # "REBUILD" legacy: subsets tried per rebuild attempt
        # Per sender, the keys it holds parts under (arrival order) and their bytes (item 10).
        self.held_by: list[dict[Key, int]] = [{} for _ in range(n + 1)]
        self.bytes_by: list[int] = [0] * (n + 1)
        # Subsets of parts still to decode, per key (item 14), and senders proven to have
        # sent a part that is not of the certified request's encoding.
        self.pending: dict[Key, deque[Iterator[tuple[ReconPart, ...]]]] = {}
        self.bad_senders: set[int] = set()

    def reconcile(self, slot: OrdSlot) -> None:
        if slot.reconciled:
            return
        if slot.pp is None:
            if slot.kind == OrdKind.NO_OP and "NOOPGC" not in self.r.p.legacy:
                slot.reconciled = True  # it makes nothing eligible: nothing to ship (item 13)
            return
        ids = self.r.ord.eligible(slot)
        if ids is None:
            return
        slot.reconciled = True
        me, n, po = self.r.me, self.r.n, self.r.po
        ship_certificates = "CERTSHIP" not in self.r.p.legacy
        rows = slot.pp.msg.rows
        # Whether we are a designated sender depends on the originator only (its
        # column of the matrix and its proof-ARU), so it is decided once per originator.
        designated: dict[int, bool] = {}
        outbox: dict[int, list[ReconPart]] = {}
        ack_box: dict[int, list[msgs.AckPart]] = {}
        cert_box: dict[int, dict[int, Envelope]] = {}  # dest -> id(env) -> certifying PO_ACK
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
            certifying: list[Envelope] | None = None
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
                    if ship_certificates:
                        # And the others' signed acks that certify it (item 9): the needy
                        # replica may never have been sent some of them (split acks).
                        if certifying is None:
                            certifying = po_slot.certifying_envs(certified)
                        box = cert_box.setdefault(dest, {})
                        for cert_env in certifying:
                            if cert_env.sender not in (me, dest):
                                box[id(cert_env)] = cert_env
                    if not self.r.p.use_erasure_codes:
                        self.r.forward(env, dest)
                        self.r.stats.recon_bytes_sent += len(env.raw)
                        continue
                    if part is None:
                        part = self._my_part(s, q, env.raw)
                    outbox.setdefault(dest, []).append(part)
        for dest, envs in sorted(cert_box.items()):
            for cert_env in envs.values():
                self.r.forward(cert_env, dest)
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
        if sender in self.bad_senders:
            self.r.drop("recon:proven_bad_sender")
            return
        po = self.r.po
        data_parts = self.r.q.one_correct
        legacy = self.r.p.legacy
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
            if po.slot_for(s, q, "recon", sender) is None:
                continue  # outside the window
            key = (s, q)
            held = self.slots.setdefault(key, {})
            if sender in held:
                continue
            if "REBUILD" not in legacy:
                # Every subset this part forms with the parts before it (item 14).
                earlier = [p for x, p in held.items() if p.request_bytes == part.request_bytes]
                if len(earlier) + 1 >= data_parts:
                    subsets = _subsets_with(part, earlier, data_parts)
                    self.pending.setdefault(key, deque()).append(subsets)
            held[sender] = part
            if "JUNK" not in legacy:
                self._charge(sender, key, len(part.data))
            if key in self.slots:  # our own charge may have evicted it
                self.try_rebuild(s, q)
        if "JUNK" in legacy:
            self._prune()

    def _charge(self, sender: int, key: Key, size: int) -> None:
        """Count ``sender``'s part against its budget; evict its oldest beyond it (item 10)."""
        mine = self.held_by[sender]
        mine[key] = size
        self.bytes_by[sender] += size
        p = self.r.p
        while (
            len(mine) > p.recon_parts_per_sender_max
            or self.bytes_by[sender] > p.recon_bytes_per_sender_max
        ):
            old = next(iter(mine))
            self._drop_part(sender, old)

    def _drop_part(self, sender: int, key: Key) -> None:
        size = self.held_by[sender].pop(key, None)
        if size is not None:
            self.bytes_by[sender] -= size
        held = self.slots.get(key)
        if held is not None:
            held.pop(sender, None)
            if not held:
                del self.slots[key]
                self.pending.pop(key, None)

    def holders(self, s: int, q: PoSeq) -> list[int]:
        """Senders whose parts for ``(s, q)`` are held."""
        return sorted(self.slots.get((s, q), ()))

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
        if "REBUILD" in self.r.p.legacy:
            self._try_rebuild_legacy(s, q, held, certified)
            return
        queue = self.pending.get((s, q))
        budget = self.r.p.recon_decodes_per_step_max
        while queue and budget > 0:
            subset = next(queue[0], None)
            if subset is None:
                queue.popleft()
                continue
            if any(held.get(p.part_index + 1) is not p for p in subset):
                continue  # a part since evicted or proven bad: not a candidate any more
            budget -= 1
            if self._decode(s, q, subset, certified):
                return
        if queue is not None and not queue:
            del self.pending[(s, q)]

    def _decode(self, s: int, q: PoSeq, subset: tuple[ReconPart, ...], certified: bytes) -> bool:
        """Decode one subset; on the certified request, process it and return True."""
        length = subset[0].request_bytes
        raw = erasure.decode(
            {p.part_index: p.data for p in subset},
            request_bytes=length,
            data_parts=self.r.q.one_correct,
            total_parts=self.r.n,
        )
        if raw is None or hashlib.sha256(raw).digest() != certified:
            self.r.stats.recon_bad_rebuilds += 1
            return False
        rebuilt = wire.decode(raw)  # validated like any other input (H9)
        if isinstance(rebuilt, str) or rebuilt.sender != s:
            self.r.drop("recon:rebuilt_invalid")
            return False
        if not isinstance(rebuilt.msg, msgs.PoRequest) or rebuilt.msg.po != q:
            self.r.drop("recon:rebuilt_invalid")
            return False
        if "REBUILD" not in self.r.p.legacy:
            self._convict(raw, self.slots[(s, q)])
        self.forget(s, q)
        self.r.stats.recon_rebuilt += 1
        self.r.po.on_po_request(self.r.me, rebuilt)
        return True

    def _convict(self, raw: bytes, held: dict[int, ReconPart]) -> None:
        """Every correct designated sender ships a part of the certified request: a
        signed part that differs from its encoding proves its sender faulty."""
        encoded = erasure.encode(raw, data_parts=self.r.q.one_correct, total_parts=self.r.n)
        for sender, part in held.items():
            if part.request_bytes != len(raw) or part.data != encoded[part.part_index]:
                self.bad_senders.add(sender)
        for sender in self.bad_senders:
            for key in list(self.held_by[sender]):
                self._drop_part(sender, key)

    def _try_rebuild_legacy(
        self, s: int, q: PoSeq, held: dict[int, ReconPart], certified: bytes
    ) -> None:
        """The first ``decode_attempts_max`` subsets in arrival order, afresh each time."""
        by_length: dict[int, list[ReconPart]] = {}
        for part in held.values():
            by_length.setdefault(part.request_bytes, []).append(part)
        attempts = 0
        for _, parts in sorted(by_length.items()):
            for subset in itertools.combinations(parts, self.r.q.one_correct):
                attempts += 1
                if attempts > self.decode_attempts_max:
                    return
                if self._decode(s, q, subset, certified):
                    return

    def on_acks_changed(self, s: int, q: PoSeq) -> None:
        if (s, q) in self.slots:
            self.try_rebuild(s, q)

    def on_tick(self) -> None:
        """Retransmission tick: collect parts of what is executed here, and go on with
        rebuilds whose subsets were not all tried yet."""
        po = self.r.po
        done = [
            k for k in self.slots if k[1] <= po.white_line[k[0]] or po.executable_copy(*k) is not None
        ]
        for key in done:
            self.forget(*key)
        for s, q in sorted(self.pending):
            self.try_rebuild(s, q)

    def _prune(self) -> None:
        po = self.r.po
        if len(self.slots) <= self.r.p.po_window_max:
            return
        for key in [k for k in self.slots if k[1] <= po.white_line[k[0]]]:
            del self.slots[key]

    def forget(self, s: int, q: PoSeq) -> None:
        """The request was executed and collected (or rebuilt): its parts are of no more use."""
        key = (s, q)
        held = self.slots.pop(key, None)
        self.pending.pop(key, None)
        if held is not None:
            for sender in held:
                size = self.held_by[sender].pop(key, None)
                if size is not None:
                    self.bytes_by[sender] -= size

    def quiescent(self) -> bool:
        """No parts held and no rebuild pending (the retransmission tick collects parts
        of what was executed: until then the replica is not quiescent)."""
        return not self.slots and not self.pending

    def collection_sizes(self) -> dict[str, int]:
        return {
            "recon_slots": len(self.slots),
            "recon_parts": sum(len(h) for h in self.slots.values()),
            "recon_bytes": sum(len(p.data) for h in self.slots.values() for p in h.values()),
            "recon_pending": len(self.pending),
        }
