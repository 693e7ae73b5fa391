"""The core's only outputs. The driver performs them; the core performs nothing."""

from __future__ import annotations

from dataclasses import dataclass

from prime.msgs import Message, Update
from prime.wire import Envelope


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``env`` to replica ``dest`` only."""

    dest: int
    env: Envelope


@dataclass(frozen=True, slots=True)
class Broadcast:
    """Send ``env`` to every other replica."""

    env: Envelope


@dataclass(frozen=True, slots=True)
class Deliver:
    """Ordinal ``ordinal`` is executed: hand its events to the application, in
    order. An empty ``updates`` is the synthetic CLIENT_NO_OP (docs/protocol.md section 2.3.5).
    ``requests`` names the PO-Requests executed, ``(originator, incarnation, seq)``."""

    ordinal: int
    updates: tuple[Update, ...]
    requests: tuple[tuple[int, int, int], ...] = ()


@dataclass(frozen=True, slots=True)
class SignJob:
    """Sign ``bodies`` and answer with ``CryptoDone(job_id, envelopes)``.

    ``direct``: sign each body on its own (messages that others embed);
    otherwise sign them as one Merkle batch (docs/protocol.md section 4.2)."""

    job_id: int
    messages: tuple[Message, ...]
    bodies: tuple[bytes, ...]
    direct: bool


@dataclass(frozen=True, slots=True)
class ThresholdJob:
    """Threshold RSA work (milliseconds of big-number math, so it leaves the core).

    ``op == "share"``: sign ``statement`` with this replica's key share and answer
    ``ThresholdDone(job_id, share_bytes)``. ``op == "combine"``: combine ``shares``
    (``(signer, share_bytes)`` pairs; shares whose proofs fail are skipped, H7) and
    answer ``ThresholdDone(job_id, signature)``, or ``None`` if too few were valid.
    ``verify_shares`` is False only to reproduce the original (``Params.legacy`` H7),
    which combines without checking share proofs."""

    job_id: int
    op: str
    statement: bytes
    shares: tuple[tuple[int, bytes], ...] = ()
    verify_shares: bool = True


@dataclass(frozen=True, slots=True)
class StateTransferNeeded:
    """The replica jumped over ordinals ``<= ordinal`` without delivering them:
    the application must fetch its state as of that ordinal from a peer."""

    ordinal: int


@dataclass(frozen=True, slots=True)
class Persist:
    """Write to stable storage before any later PO_ACK of ours leaves (other actions need
    not wait: the engine writes on a thread of its own and holds only those): per originator
    (index ``s``; index 0 unused) a bound on every PO id this replica has acknowledged,
    in this life or an earlier one, ``(lo_inc, lo_seq, band_inc, band_seq)``: the ids
    at most ``(lo_inc, lo_seq)``, and those of incarnations up to ``band_inc`` with
    sequence numbers up to ``band_seq`` (prime/core/preorder.py). The acks that follow
    rely on it: after a restart the driver hands it back (``Replica(acked_record=...)``),
    and the amnesia rule (docs/hardening.md I11-3) then withholds only what it covers.
    A clean stop writes ``Replica.clean_stop_record()`` the same way."""

    record: tuple[tuple[int, int, int, int], ...]


Action = Send | Broadcast | Deliver | SignJob | ThresholdJob | StateTransferNeeded | Persist
