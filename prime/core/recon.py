"""Reconciliation: ship eligible requests to replicas that lack them (PROTOCOL.md 2.4).

Once ordinal ``g``'s pre-prepare is accepted, the requests it makes eligible
must reach every correct replica, even if their originator sent them to only
some (the RECON attack, 6.2) or crashed. The first ``2f+k+1`` replicas (by id)
whose matrix row shows they hold a request are its *designated senders*; each
sends it to every replica with no evidence of holding it.

This module forwards whole PO-Requests (the original release's behaviour,
``use_erasure_codes = false``). Erasure-coded parts are a later addition.

Invariant: each ordinal is reconciled at most once (``slot.reconciled``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prime.core.preorder import request_digest
from prime.types import PO_ZERO

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
            for dest in range(1, n + 1):
                if dest in (me, s):
                    continue
                # Needy: no evidence it holds the request, or it acked another version
                # (an equivocating originator fed it a copy that is not the certified one).
                if po.cum_max_acked[dest][s] < q or acks.get(dest, certified) != certified:
                    self.r.forward(env, dest)
                    self.r.stats.recon_requests_sent += 1
                    self.r.stats.recon_bytes_sent += len(env.raw)

    def collection_sizes(self) -> dict[str, int]:
        return {}
