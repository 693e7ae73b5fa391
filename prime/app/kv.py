"""A replicated key-value store: the example application, and the contract it follows.

What an application sees from its daemon (``Deliver`` actions, in order):
for each ordinal 1, 2, 3, ..., its events in order. An event is an UPDATE:
``kind == APP`` carries the application's payload; ``CLIENT_NO_OP`` ordinals
are empty; ``NEW_INCARNATION`` says a replica restarted; ``CLIENT_STATE_TRANSFER``
from replica r at ordinal X says r jumped over ordinals it never delivered.

The contract (docs/protocol.md section 7.3; docs/hardening.md OQ2 decided: the daemon delivers every
ordinal after the jump point, and the application discards what precedes X):

1. Apply each client stamp ``(client, incarnation, seq)`` at most once. A faulty
   replica can re-introduce a client's signed update, so the daemon may deliver
   it twice; the client table that remembers applied stamps is part of the state.
2. On ``StateTransferNeeded(J)`` the daemon skipped ordinals up to J. Stop
   applying: deliveries after J and up to X are held back.
3. When our own CLIENT_STATE_TRANSFER marker is delivered at ordinal X, take the
   state (store and client table) as of X from a peer, replace ours with it, and
   apply deliveries from X+1 on. Every application snapshots its state when it
   applies a peer's marker at X, so peers can serve exactly that state.

Payloads are msgpack ``["put", key, value]``, ``["del", key]`` or ``["sync", nonce]``;
anything else is applied as a no-op (the store ignores what it does not understand).

``sync`` is the application's own marker, for an application that attached late
(``StateTransferNeeded(at_attach=True)``: ordinals went by before it attached, and
no daemon marker will come for them): it submits ``["sync", nonce]`` from its own
client id, every replica snapshots its state at the end of the ordinal X that
carries it, and when the store sees its own ``sync`` while transferring it treats
X exactly as its own CLIENT_STATE_TRANSFER marker (rule 3).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import msgpack

from prime.msgs import Update, UpdateKind

Stamp = tuple[int, int, int]
# Snapshots kept per source (a replica's marker, or a client's ``sync``): a flood of
# ``sync`` from one client evicts only that client's own snapshots, never the one a
# jumped replica is about to ask for.
SNAPSHOTS_PER_SOURCE = 4


def put(key: bytes, value: bytes) -> bytes:
    return msgpack.packb(["put", key, value], use_bin_type=True)


def delete(key: bytes) -> bytes:
    return msgpack.packb(["del", key], use_bin_type=True)


def sync(nonce: int) -> bytes:
    return msgpack.packb(["sync", nonce], use_bin_type=True)


def _is_sync(payload: bytes) -> bool:
    try:
        op = msgpack.unpackb(payload, raw=False, use_list=True, max_bin_len=len(payload))
    except Exception:
        return False
    return isinstance(op, list) and len(op) == 2 and op[0] == "sync"


@dataclass(slots=True)
class KvStore:
    me: int
    client: int = 0  # this replica's application client id (0: none; the simulator's stores)
    data: dict[bytes, bytes] = field(default_factory=dict)
    applied: set[Stamp] = field(default_factory=set)
    ordinal: int = 0
    transferring: bool = False  # between StateTransferNeeded and our marker
    snapshots: dict[tuple[int, int], bytes] = field(default_factory=dict)  # (replica, X) -> state
    duplicates: int = 0

    def on_state_transfer_needed(self, ordinal: int) -> None:
        self.transferring = True

    def apply(self, ordinal: int, updates: tuple[Update, ...]) -> tuple[int, int] | None:
        """Apply one delivered ordinal. Returns ``(replica, X)`` when our own marker
        arrives and we must now fetch the state as of X from a peer."""
        markers = []
        for u in updates:
            if u.kind == UpdateKind.CLIENT_STATE_TRANSFER:
                if u.client == self.me and self.transferring:
                    self.ordinal = ordinal
                    return (self.me, ordinal)  # the state as of X: after all of ordinal X
                markers.append(u.client)
                continue
            if u.kind != UpdateKind.APP:
                continue
            if self.transferring:
                if self.client and u.client == self.client and _is_sync(u.payload):
                    self.ordinal = ordinal  # our own sync: as good as our own marker
                    return (self.client, ordinal)
                continue
            stamp = (u.client, u.incarnation, u.seq)
            if stamp in self.applied:
                self.duplicates += 1
                continue
            self.applied.add(stamp)
            if _is_sync(u.payload):
                markers.append(u.client)
                continue
            self._execute(u.payload)
        if not self.transferring:
            self.ordinal = ordinal
            for replica in markers:  # serve "state as of X" = after the whole ordinal
                self._snapshot(replica, ordinal)
        return None

    def _execute(self, payload: bytes) -> None:
        try:
            op = msgpack.unpackb(payload, raw=False, use_list=True, max_bin_len=len(payload))
        except Exception:
            return  # opaque payload: nothing to do
        if isinstance(op, list) and len(op) == 3 and op[0] == "put" and isinstance(op[1], bytes):
            if isinstance(op[2], bytes):
                self.data[op[1]] = op[2]
        elif isinstance(op, list) and len(op) == 2 and op[0] == "del" and isinstance(op[1], bytes):
            self.data.pop(op[1], None)

    def _snapshot(self, source: int, ordinal: int) -> None:
        self.snapshots[(source, ordinal)] = self.snapshot()
        mine = sorted(o for s, o in self.snapshots if s == source)
        for old in mine[:-SNAPSHOTS_PER_SOURCE]:
            del self.snapshots[(source, old)]

    def snapshot_at(self, ordinal: int) -> bytes | None:
        """The state as of the end of ``ordinal``, if some marker made us keep it."""
        for (_, o), blob in self.snapshots.items():
            if o == ordinal:
                return blob
        return None

    def snapshot(self) -> bytes:
        state: Any = [self.ordinal, sorted(self.data.items()), sorted(self.applied)]
        return msgpack.packb(state, use_bin_type=True)

    def restore(self, blob: bytes) -> None:
        ordinal, items, applied = msgpack.unpackb(blob, raw=False, use_list=True)
        self.ordinal = ordinal
        self.data = {k: v for k, v in items}
        self.applied = {tuple(s) for s in applied}  # type: ignore[misc]
        self.transferring = False

    @staticmethod
    def snapshot_digest(blob: bytes) -> str:
        """What peers compare before a state transfer: the whole snapshot (ordinal,
        data and client table), not only the data."""
        return hashlib.sha256(blob).hexdigest()

    def digest(self) -> str:
        return hashlib.sha256(msgpack.packb(sorted(self.data.items()), use_bin_type=True)).hexdigest()
