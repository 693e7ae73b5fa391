"""Request fetch: a replica blocked on an ordered ordinal gets the missing requests
and their certificates from its peers (docs/protocol.md section 2.7, issue 11 item 9).

Why. An ordinal is ordered, but one request it makes eligible is not executable
here: the request never arrived, or it did but fewer than ``2f+k+1`` PO-Acks on
its digest did (H3). PO-Acks are sent once, and reconciliation ships a request
once per ordinal; if that message was lost, every other replica executes the
request and garbage-collects it, nobody sends anything again, and the blocked
replica stays on that ordinal until catch-up makes it jump over it by state
transfer, seconds later (the simulator's rule L2 catches this under plain message
loss).

The mechanism.

* *Keeping.* When an executed ordinal is garbage-collected, each replica keeps, for
  each request it made eligible, the copy it executed and the signed PO_ACK
  envelopes it holds that carry that copy's digest. Entries live for the last
  ``catchup_history_ordinals`` ordinals and at most ``fetch_keep_requests_max``
  requests, each originator at most its share (``fetch_keep_requests_max // N``,
  oldest first out), so an originator that floods valid requests ages out its own
  and nobody else's; the bound is on their number. Requests not yet collected are answered from the
  pre-ordering state itself.
* *Asking.* A replica blocked on ordinal ``ARU+1`` for ``fetch_delay_us`` sends one
  peer a PO_FETCH ``(seq, keys)`` naming the PO ids it lacks (at most
  ``FETCH_KEYS_MAX``), and asks the next peer, round-robin, every
  ``fetch_retry_us`` while it stays blocked on that ordinal: a silent or lying
  peer costs one period, a lost message too. The same message also names what the
  *decided* ordinals after it (ordered here, or held as certificates to fill) will
  need and we lack, within the cap: a replica back from a partition catches up
  ordinal by ordinal from certificates and lacks the requests of each, and one
  round trip per ordinal would leave it ever further behind. When the fetched
  requests unblock ARU+1, the held certificates fill the next ordinals at once
  (``Order.on_request_available``).
* *Answering.* A peer forwards, unchanged, the signed PO_ACK envelopes it keeps
  for each named request, then the PO_REQUEST envelope (each envelope once per
  answer).
  Each asker draws from its own token bucket (virtual time from ``Tick``), holding
  ``fetch_reply_bytes_max`` and refilled at ``fetch_peer_bytes_per_s``: the first
  envelope of an answer always goes (so any request can be fetched), the rest only
  within the bucket. An answer costs the answerer lookups for at most
  ``FETCH_KEYS_MAX`` ids.
* *Installing.* The asker handles the forwarded envelopes as the PO_ACKs and
  PO_REQUEST they are: their signatures are verified by the driver, acks count
  per signer, a second version is kept apart, and only a copy whose digest has
  ``2f+k+1`` acks is executable (H3, S11). A Byzantine answerer can forward only
  what others signed, so it can neither make the asker execute a version correct
  replicas did not certify nor count one signer twice; at worst it stays silent,
  and the next peer is asked. Acks go first so that a certified version is backed
  when its request arrives (``_keep_other_version`` admits a further version of a
  full slot only when acks back it).

``legacy`` switch "FETCH" turns the mechanism off (tests show the jump without it).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from prime import msgs
from prime.core.order import eligible_between
from prime.core.preorder import request_digest
from prime.core.quorum import matrix_pop
from prime.msgs import FetchKey, PoFetch
from prime.types import PoSeq
from prime.wire import Envelope

if TYPE_CHECKING:
    from prime.core.replica import Replica

Key = tuple[int, PoSeq]  # (originator, po)


class Fetch:
    """Keeping, asking for and answering with executed requests and their acks."""

    def __init__(self, replica: Replica) -> None:
        self.r = replica
        self.enabled = "FETCH" not in replica.p.legacy
        # Keeping: key -> (ordinal, request, certifying PO_ACK envelopes), and per
        # originator the keys in the order they were kept (ordinals ascending), to age
        # them out: each originator's share of the cap is its own.
        self.kept: dict[Key, tuple[int, Envelope, tuple[Envelope, ...]]] = {}
        self.kept_order: dict[int, deque[tuple[int, Key]]] = {}
        # Answering: per asker, (bytes it may still draw, when that was computed).
        self.answer_budget: dict[int, tuple[float, int]] = {}
        # Asking: the ordinal we are blocked on (0: none) and the next peer to ask.
        self.blocked_seq = 0
        self.next_peer = replica.me % replica.n + 1
        self.asks_sent = 0  # PO_FETCH messages sent (stats, tests)

    # -------------------------------------------------------------- keeping

    def keep(self, seq: int, s: int, q: PoSeq) -> None:
        """Ordinal ``seq`` executed ``(s, q)`` and is being collected: keep its copy."""
        history = self.r.p.catchup_history_ordinals
        if not self.enabled or not history:
            return
        po = self.r.po
        slot = po.history[s].get(q)
        env = po.executable_copy(s, q) if slot is not None else None
        if slot is None or env is None:
            return
        digest = slot.digest if env is slot.request else request_digest(env)
        self.kept[(s, q)] = (seq, env, tuple(slot.certifying_envs(digest)))
        self.kept_order.setdefault(s, deque()).append((seq, (s, q)))
        share = max(1, self.r.p.fetch_keep_requests_max // self.r.n)
        for origin, order in self.kept_order.items():
            while order and (order[0][0] <= seq - history or (origin == s and len(order) > share)):
                old_seq, key = order.popleft()
                entry = self.kept.get(key)
                if entry is not None and entry[0] == old_seq:
                    del self.kept[key]

    def _lookup(self, s: int, q: PoSeq) -> tuple[Envelope, list[Envelope]] | None:
        """The copy of ``(s, q)`` we would execute and the acks certifying it, if any."""
        po = self.r.po
        slot = po.history[s].get(q)
        if slot is not None:
            env = po.executable_copy(s, q)
            if env is not None:
                digest = slot.digest if env is slot.request else request_digest(env)
                return env, slot.certifying_envs(digest)
        entry = self.kept.get((s, q))
        if entry is None:
            return None
        return entry[1], list(entry[2])

    # ------------------------------------------------------------- answering

    def on_po_fetch(self, via: int, env: Envelope) -> None:
        """Answer a peer's PO_FETCH with the acks and requests we hold, within its budget."""
        peer = env.sender
        if peer == self.r.me or not 1 <= peer <= self.r.n:
            self.r.drop("po_fetch:sender")
            return
        if not self.enabled:
            return
        p, now = self.r.p, self.r.now_us
        cap = float(p.fetch_reply_bytes_max)
        tokens, at = self.answer_budget.get(peer, (cap, now))
        tokens = min(cap, tokens + (now - at) * p.fetch_peer_bytes_per_s / 1e6)
        if tokens <= 0:
            self.answer_budget[peer] = (tokens, now)
            self.r.drop("po_fetch:budget")  # this peer drew its share: it waits
            return
        sent = 0
        shipped: set[int] = set()  # one PO_ACK envelope may certify several requests
        for key in env.msg.keys:
            s, q = key.originator, key.po
            if s > self.r.n:
                self.r.drop("po_fetch:originator")
                continue
            found = self._lookup(s, q)
            if found is None:
                continue
            request, acks = found
            # The asker's own ack too: a restarted asker forgot the acks its previous
            # life sent, and one of them may be part of the certificate.
            out = [e for e in [*acks, request] if id(e) not in shipped]
            for item in out:  # (a key named twice gets nothing the second time)
                size = len(item.raw)
                if sent and sent + size > tokens:
                    break
                sent += size
                shipped.add(id(item))
                self.r.forward(item, peer)
            else:
                continue
            break  # out of budget
        # An answer over the budget (one large first envelope) is a debt paid by waiting.
        self.answer_budget[peer] = (tokens - sent, now)

    # ---------------------------------------------------------------- asking

    def on_blocked(self, seq: int) -> None:
        """Ordinal ``seq`` (ARU+1) is ordered but waits for requests (Order.try_execute)."""
        if not self.enabled or seq == self.blocked_seq:
            return
        self.blocked_seq = seq
        self.r.set_timer("po_fetch", self.r.now_us + self.r.p.fetch_delay_us)

    def on_timeout(self) -> None:
        """Still blocked on the same ordinal: ask the next peer for what it lacks."""
        order = self.r.ord
        if self.blocked_seq != order.aru + 1 or not order.blocked_on:
            self.blocked_seq = 0
            return
        keys = self._wanted(sorted(order.blocked_on))
        peer = self.next_peer
        if peer == self.r.me:
            peer = peer % self.r.n + 1
        self.next_peer = peer % self.r.n + 1
        self.asks_sent += 1
        seq = self.blocked_seq
        self.r.log.debug("blocked on ordinal %d: fetch %d request(s) from %d", seq, len(keys), peer)
        self.r.sign_and_send(PoFetch(seq, tuple(FetchKey(s, q) for s, q in keys)), dest=peer)
        self.r.set_timer("po_fetch", self.r.now_us + self.r.p.fetch_retry_us)

    def _wanted(self, keys: list[Key]) -> list[Key]:
        """``keys`` (what ARU+1 waits for), then what the decided ordinals after it will
        need and we lack, up to ``FETCH_KEYS_MAX``: a replica catching up ordinal by
        ordinal from certificates (after a partition, say) lacks the requests of each,
        and asking for one ordinal per round trip would leave it ever further behind."""
        order, po = self.r.ord, self.r.po
        wanted = set(keys)
        out = keys[: msgs.FETCH_KEYS_MAX]
        prev = order.pop_of(self.blocked_seq)
        g = self.blocked_seq + 1
        while prev is not None and len(out) < msgs.FETCH_KEYS_MAX:
            cur = self._decided_pop(g)
            if cur is None:
                break
            for s, q in eligible_between(prev, cur):
                if (s, q) in wanted or q <= po.last_executed[s]:
                    continue
                if po.executable_copy(s, q) is None and len(out) < msgs.FETCH_KEYS_MAX:
                    wanted.add((s, q))
                    out.append((s, q))
            prev, g = cur, g + 1
        return out

    def _decided_pop(self, seq: int) -> tuple[PoSeq, ...] | None:
        """The proof ARUs of ordinal ``seq`` if it is decided here (ordered, or a held
        certificate to fill it with), else None: no fetching for undecided proposals."""
        slot = self.r.ord.history.get(seq)
        if slot is not None and slot.ordered and slot.pp is not None:
            return slot.pop
        cert = self.r.catchup.fills.get(seq)
        if cert is None:
            return None
        rows = cert.pre_prepare.msg.rows
        vectors = [None if row is None else row.msg.cum_aru for row in rows]
        return tuple(matrix_pop(vectors, self.r.n, self.r.q, plain="OLDTAIL" in self.r.p.legacy))

    def collection_sizes(self) -> dict[str, int]:
        return {
            "fetch_kept": len(self.kept),
            "fetch_kept_order": sum(len(order) for order in self.kept_order.values()),
            "fetch_answer_budget": len(self.answer_budget),
        }
