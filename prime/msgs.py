"""Every Prime message, defined once (docs/protocol.md section 2).

A message is a frozen dataclass registered with ``@message(tag=...)``. Each field
is ``Annotated[type, Spec]``: the spec says how the field is checked when decoded
(type, bounds, nesting). ``prime.wire`` derives the encoder and the decoder from
these declarations, so there is no second schema to drift.

On the wire a message body is the msgpack array ``[tag, *fields]`` in
declaration order. Every message travels inside an ``Envelope`` that names the
signer and carries the signature: either a direct signature (``mt_num == 1``,
no path) or the signature of a Merkle root plus the sibling path
(docs/protocol.md section 4.2). Messages that other messages embed (PO_ARU rows in a
pre-prepare, Prepares in a PC_SET, Commits in an ORD_CERT, ...) are embedded as
complete envelopes, so they stay verifiable on their own and can be forwarded as
the exact signed bytes.

Tags keep the C enum numbering (docs/protocol.md section 2.0). PO_CERT (29) is declared
but never sent in v3.0 and validation always rejects it (``REJECTED_TAGS``).
CATCHUP_REQUEST (27), dead code in v3.0, is ours: a replica a few ordinals
behind asks a peer for the ORD certificates it missed (``prime.core.catchup``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from itertools import starmap
from typing import Annotated, Any, Callable, ClassVar, TypeVar, get_type_hints

# ---------------------------------------------------------------------------
# Bounds. Every count and size taken from the wire is bounded by one of these.

SERVERS_MAX = 31  # bitmaps are 32-bit (docs/protocol.md section 1.1)
DIGEST_SIZE = 32  # SHA-256
SIGNATURE_BYTES_MAX = 1024  # Ed25519 is 64; a threshold RSA signature up to 8192 bits
SHARE_BYTES_MAX = 8192  # a Shoup share with its proof
PAYLOAD_BYTES_MAX = 16384  # one update's opaque content
UPDATES_PER_REQUEST_MAX = 256
ACK_PARTS_MAX = 1024
RECON_PARTS_MAX = 256
FETCH_KEYS_MAX = 64  # PO ids one PO_FETCH asks for
RECON_PART_BYTES_MAX = 65536
UNION_ENTRIES_MAX = 1024  # PC_SET ordinals one replay decides (a REPORT's replay certificate)
ORDINAL_MAX = 2**63 - 1
U32 = 2**32 - 1
U64 = 2**64 - 1
NESTING_DEPTH_MAX = 4  # RB_* > PC_SET > PRE_PREPARE > PO_ARU


# ---------------------------------------------------------------------------
# Field specs.


class Spec:
    """How one field is checked after msgpack decoding. ``check`` returns the
    (possibly converted) value, or raises ``BadField`` with a short reason.

    ``build`` is ``check`` without the checks, for ``wire.decode_verified`` only: it
    makes the same value out of a msgpack value that ``check`` already accepted in
    this replica. Most fields are used as msgpack made them (ints, bytes, tuples of
    those); ``converts`` is False for those, and the decoder then skips ``build``."""

    #: Whether ``build`` makes something other than the msgpack value itself.
    converts: ClassVar[bool] = False

    def check(self, value: Any, depth: int) -> Any:
        raise NotImplementedError

    def build(self, value: Any, depth: int) -> Any:
        """The decoded value of an already checked ``value`` (no checks: trusted input)."""
        return value

    def build_each(self, values: tuple[Any, ...], depth: int) -> tuple[Any, ...]:
        """``build`` of every item of an already checked tuple (``TupleOf`` calls it)."""
        build = self.build
        return tuple([build(v, depth) for v in values])

    def encode(self, value: Any) -> Any:
        return value


class BadField(Exception):
    """Internal to decoding: a field failed its spec. Never escapes ``wire``."""


@dataclass(frozen=True, slots=True)
class Int(Spec):
    lo: int = 0
    hi: int = U64

    def check(self, value: Any, depth: int) -> int:
        if type(value) is not int or not self.lo <= value <= self.hi:
            raise BadField("int")
        return value


@dataclass(frozen=True, slots=True)
class Bool(Spec):
    def check(self, value: Any, depth: int) -> bool:
        if type(value) is not bool:
            raise BadField("bool")
        return value


@dataclass(frozen=True, slots=True)
class Bytes(Spec):
    size_max: int
    size_exact: int | None = None

    def check(self, value: Any, depth: int) -> bytes:
        if type(value) is not bytes or len(value) > self.size_max:
            raise BadField("bytes")
        if self.size_exact is not None and len(value) != self.size_exact:
            raise BadField("bytes_len")
        return value


DIGEST = Bytes(DIGEST_SIZE, DIGEST_SIZE)


@dataclass(frozen=True, slots=True)
class PoSeqSpec(Spec):
    """An ``(incarnation, seq)`` pair (msgpack already makes it a tuple: ``build`` keeps it)."""

    def check(self, value: Any, depth: int) -> tuple[int, int]:
        if type(value) is not tuple or len(value) != 2:
            raise BadField("po_seq")
        inc, seq = value
        if type(inc) is not int or type(seq) is not int:
            raise BadField("po_seq")
        if not (0 <= inc <= U64 and 0 <= seq <= U64):
            raise BadField("po_seq")
        return (inc, seq)


PO_SEQ = PoSeqSpec()


@dataclass(frozen=True, slots=True)
class TupleOf(Spec):
    item: Spec
    count_max: int
    count_min: int = 0

    def check(self, value: Any, depth: int) -> tuple[Any, ...]:
        if type(value) is not tuple or not self.count_min <= len(value) <= self.count_max:
            raise BadField("count")
        item = self.item
        return tuple(item.check(v, depth) for v in value)

    @property
    def converts(self) -> bool:  # type: ignore[override]
        return self.item.converts

    def build(self, value: Any, depth: int) -> tuple[Any, ...]:
        return self.item.build_each(value, depth)

    def encode(self, value: Any) -> Any:
        item = self.item
        return [item.encode(v) for v in value]


@dataclass(frozen=True, slots=True)
class Optional(Spec):
    """``None`` (msgpack nil) or the inner spec; used for null matrix rows."""

    inner: Spec

    def check(self, value: Any, depth: int) -> Any:
        if value is None:
            return None
        return self.inner.check(value, depth)

    @property
    def converts(self) -> bool:  # type: ignore[override]
        return self.inner.converts

    def build(self, value: Any, depth: int) -> Any:
        return None if value is None else self.inner.build(value, depth)

    def encode(self, value: Any) -> Any:
        return None if value is None else self.inner.encode(value)


@dataclass(frozen=True, slots=True)
class Nested(Spec):
    """An embedded, separately signed message: its envelope bytes on the wire,
    an ``Envelope`` (raw bytes kept) once decoded. ``tags`` limits what may be
    embedded here."""

    tags: frozenset[int]
    converts = True  # bytes become an Envelope

    def check(self, value: Any, depth: int) -> Any:
        if type(value) is not bytes:
            raise BadField("nested")
        if depth >= NESTING_DEPTH_MAX:
            raise BadField("nesting_depth")
        # Imported here: wire imports this module.
        from prime.wire import decode_envelope_at_depth

        env = decode_envelope_at_depth(value, depth + 1)
        if isinstance(env, str):
            raise BadField("nested:" + env)
        if env.msg.TAG not in self.tags:
            raise BadField("nested_tag")
        return env

    def build(self, value: Any, depth: int) -> Any:
        return _build_envelope(value, depth + 1)

    def build_each(self, values: tuple[Any, ...], depth: int) -> tuple[Any, ...]:
        build, depth = _build_envelope, depth + 1
        return tuple([build(v, depth) for v in values])

    def encode(self, value: Any) -> Any:
        return value.raw


def _build_envelope_unbound(raw: bytes, depth: int) -> Any:
    raise RuntimeError("prime.wire is not imported")


# ``wire.decode_verified_at_depth``: prime.wire installs it when it is imported (it
# imports this module, so this module cannot import it at load time, and importing it
# inside ``Nested.build`` would cost a lookup per embedded envelope).
_build_envelope: Callable[[bytes, int], Any] = _build_envelope_unbound


@dataclass(frozen=True, slots=True)
class Record(Spec):
    """A small struct embedded by value (not signed on its own)."""

    cls: type
    converts = True  # a msgpack tuple becomes the record's dataclass

    def check(self, value: Any, depth: int) -> Any:
        pairs = _record_fields(self.cls)
        if type(value) is not tuple or len(value) != len(pairs):
            raise BadField("record")
        return self.cls(*(s.check(v, depth) for (_, s), v in zip(pairs, value)))

    def build(self, value: Any, depth: int) -> Any:
        builds = _record_builds(self.cls)
        if not builds:
            return self.cls(*value)
        values = list(value)
        for i, spec in builds:
            values[i] = spec.build(values[i], depth)
        return self.cls(*values)

    def build_each(self, values: tuple[Any, ...], depth: int) -> tuple[Any, ...]:
        if not _record_builds(self.cls):  # every field as msgpack made it (AckPart, ...)
            return tuple(starmap(self.cls, values))
        return Spec.build_each(self, values, depth)

    def encode(self, value: Any) -> Any:
        return [s.encode(getattr(value, n)) for n, s in _record_fields(self.cls)]


def _specs_of(cls: type) -> tuple[tuple[str, Spec], ...]:
    hints = get_type_hints(cls, include_extras=True)
    out = []
    for f in fields(cls):
        meta = getattr(hints[f.name], "__metadata__", ())
        specs = [m for m in meta if isinstance(m, Spec)]
        assert len(specs) == 1, f"{cls.__name__}.{f.name} needs exactly one Spec"
        out.append((f.name, specs[0]))
    return tuple(out)


_RECORD_CACHE: dict[type, tuple[tuple[str, Spec], ...]] = {}


def _record_fields(cls: type) -> tuple[tuple[str, Spec], ...]:
    """A record's ``(name, spec)`` pairs, derived once per class: a PO_ACK encodes
    and checks up to ``ACK_PARTS_MAX`` records."""
    pairs = _RECORD_CACHE.get(cls)
    if pairs is None:
        pairs = _RECORD_CACHE[cls] = _specs_of(cls)
    return pairs


def _builds_of(pairs: tuple[tuple[str, Spec], ...]) -> tuple[tuple[int, Spec], ...]:
    """``(index, spec)`` of the fields whose ``build`` converts: the only ones
    ``wire.decode_verified`` touches."""
    return tuple((i, spec) for i, (_, spec) in enumerate(pairs) if spec.converts)


_RECORD_BUILDS: dict[type, tuple[tuple[int, Spec], ...]] = {}


def _record_builds(cls: type) -> tuple[tuple[int, Spec], ...]:
    builds = _RECORD_BUILDS.get(cls)
    if builds is None:
        builds = _RECORD_BUILDS[cls] = _builds_of(_record_fields(cls))
    return builds


def _record_specs(cls: type) -> tuple[Spec, ...]:
    return tuple(s for _, s in _record_fields(cls))


def _record_names(cls: type) -> tuple[str, ...]:
    return tuple(n for n, _ in _record_fields(cls))


# ---------------------------------------------------------------------------
# Registry.

MESSAGES: dict[int, type] = {}
REJECTED_TAGS: dict[int, str] = {29: "po_cert:unsupported"}

M = TypeVar("M")


def message(tag: int) -> Callable[[type[M]], type[M]]:
    """Register a message class under its wire tag and derive its field specs."""

    def register(cls: type[M]) -> type[M]:
        assert tag not in MESSAGES and tag not in REJECTED_TAGS, tag
        cls.TAG = tag  # type: ignore[attr-defined]
        cls.SPECS = _specs_of(cls)  # type: ignore[attr-defined]
        cls.BUILDS = _builds_of(cls.SPECS)  # type: ignore[attr-defined]
        cls.NAME = _snake(cls.__name__)  # type: ignore[attr-defined]
        MESSAGES[tag] = cls
        return cls

    return register


def _snake(name: str) -> str:
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i:
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


class Message:
    """Base of every message class (for typing; the decorator adds the registry data)."""

    __slots__ = ()

    TAG: ClassVar[int]
    NAME: ClassVar[str]
    SPECS: ClassVar[tuple[tuple[str, Spec], ...]]
    BUILDS: ClassVar[tuple[tuple[int, Spec], ...]]  # fields ``decode_verified`` converts

    def invalid(self) -> str | None:
        """A short reason if the decoded fields are inconsistent, else None.
        Only shape rules live here; meaning is the core's business."""
        return None


class UpdateKind(enum.IntEnum):
    """Content types of an UPDATE (docs/protocol.md sections 2.1 and 7.3)."""

    APP = 0
    CLIENT_NO_OP = 101
    CLIENT_STATE_TRANSFER = 102
    NEW_INCARNATION = 103


class OrdKind(enum.IntEnum):
    """How an ordinal was decided (ORD_CERT ``kind``, docs/protocol.md section 2.7)."""

    COMMIT = 1
    PC_SET = 2
    NO_OP = 3


SERVER = Int(1, SERVERS_MAX)
VIEW = Int(0, U32)
ORDINAL = Int(0, ORDINAL_MAX)
TIME_US = Int(0, U64)
BITMAP = Int(0, U32)

# Tags, named once so Nested specs and the core can refer to them. Each tag's traffic
# class (timely, bounded, reconciliation) is the literal table CLASS_OF_TAG in
# prime/net/traffic.py; a test checks that every tag here has one.
T_PO_REQUEST, T_PO_ACK, T_PO_ARU, T_PROOF_MATRIX, T_PRE_PREPARE = 1, 2, 3, 4, 5
T_PREPARE, T_COMMIT, T_RECON, T_TAT_MEASURE, T_RTT_PING = 6, 7, 8, 9, 10
T_RTT_PONG, T_RTT_MEASURE, T_TAT_UB, T_NEW_LEADER, T_NEW_LEADER_PROOF = 11, 12, 13, 14, 15
T_RB_INIT, T_RB_ECHO, T_RB_READY, T_REPORT, T_PC_SET = 16, 17, 18, 19, 20
T_VC_LIST, T_VC_PARTIAL_SIG, T_VC_PROOF, T_REPLAY = 21, 22, 23, 24
T_REPLAY_PREPARE, T_REPLAY_COMMIT, T_ORD_CERT, T_UPDATE, T_CLIENT_RESPONSE = 25, 26, 28, 30, 31
T_CATCHUP_REQUEST = 27
T_REPLAYED = 32
T_PO_FETCH = 33


# ---------------------------------------------------------------------------
# 2.1 Client updates and replies.


@message(tag=T_UPDATE)
@dataclass(frozen=True, slots=True)
class Update(Message):
    """An application update. Signed by ``client`` (a client id > N, or the
    replica id for daemon-originated updates). ``(incarnation, seq)`` is the
    duplicate-suppression stamp; ``kind`` separates application payloads from
    the daemon's own markers (no-op, state transfer, new incarnation)."""

    client: Annotated[int, Int(1, U32)]
    incarnation: Annotated[int, Int(0, U64)]
    seq: Annotated[int, Int(0, U64)]
    kind: Annotated[int, Int(0, 255)]
    payload: Annotated[bytes, Bytes(PAYLOAD_BYTES_MAX)]

    def invalid(self) -> str | None:
        if self.kind not in UpdateKind._value2member_map_:
            return "kind"
        return None


@message(tag=T_CLIENT_RESPONSE)
@dataclass(frozen=True, slots=True)
class ClientResponse(Message):
    """One delivered event, daemon -> its local application (unsigned)."""

    ordinal: Annotated[int, ORDINAL]
    event_idx: Annotated[int, Int(1, U32)]
    event_tot: Annotated[int, Int(1, U32)]
    client: Annotated[int, Int(1, U32)]
    incarnation: Annotated[int, Int(0, U64)]
    seq: Annotated[int, Int(0, U64)]
    kind: Annotated[int, Int(0, 255)]
    payload: Annotated[bytes, Bytes(PAYLOAD_BYTES_MAX)]

    def invalid(self) -> str | None:
        return "event_idx" if self.event_idx > self.event_tot else None


# ---------------------------------------------------------------------------
# 2.2 Pre-ordering.


@message(tag=T_PO_REQUEST)
@dataclass(frozen=True, slots=True)
class PoRequest(Message):
    """Originator (the signer) disseminates updates it introduced; id = (signer, po)."""

    po: Annotated[tuple[int, int], PO_SEQ]
    updates: Annotated[tuple[Any, ...], TupleOf(Nested(frozenset({T_UPDATE})), UPDATES_PER_REQUEST_MAX, 1)]

    def invalid(self) -> str | None:
        return "po_seq_zero" if self.po[1] == 0 else None


@dataclass(frozen=True, slots=True)
class AckPart:
    """Sender vouches that it holds ``originator``'s request ``po`` with this digest."""

    originator: Annotated[int, SERVER]
    po: Annotated[tuple[int, int], PO_SEQ]
    digest: Annotated[bytes, DIGEST]


@message(tag=T_PO_ACK)
@dataclass(frozen=True, slots=True)
class PoAck(Message):
    parts: Annotated[tuple[AckPart, ...], TupleOf(Record(AckPart), ACK_PARTS_MAX, 1)]

    def invalid(self) -> str | None:
        return "po_seq_zero" if any(p.po[1] == 0 for p in self.parts) else None


@message(tag=T_PO_ARU)
@dataclass(frozen=True, slots=True)
class PoAru(Message):
    """The PO-Summary: the signer's ``cum_aru`` vector (index i-1 = originator i).
    Individually signed because matrices and pre-prepares embed it."""

    incarnation: Annotated[int, Int(0, U64)]
    num: Annotated[int, Int(0, U64)]
    cum_aru: Annotated[tuple[tuple[int, int], ...], TupleOf(PO_SEQ, SERVERS_MAX, 1)]


ROW = Optional(Nested(frozenset({T_PO_ARU})))


@message(tag=T_PROOF_MATRIX)
@dataclass(frozen=True, slots=True)
class ProofMatrix(Message):
    """Non-leader -> leader: the PO_ARUs it holds (row i from replica i, or None)."""

    sent_us: Annotated[int, TIME_US]
    rows: Annotated[tuple[Any, ...], TupleOf(ROW, SERVERS_MAX, 1)]


# ---------------------------------------------------------------------------
# 2.3 Global ordering.


@message(tag=T_PRE_PREPARE)
@dataclass(frozen=True, slots=True)
class PrePrepare(Message):
    """Leader proposes the summary matrix ``rows`` (exactly N rows, row i null or
    signed by replica i: hardening H4, checked by the core that knows N)."""

    seq: Annotated[int, Int(1, ORDINAL_MAX)]
    view: Annotated[int, VIEW]
    sent_us: Annotated[int, TIME_US]
    rows: Annotated[tuple[Any, ...], TupleOf(ROW, SERVERS_MAX, 1)]

    def invalid(self) -> str | None:
        for i, row in enumerate(self.rows, start=1):
            if row is not None and row.sender != i:
                return "row_signer"  # H4
        return None


@message(tag=T_PREPARE)
@dataclass(frozen=True, slots=True)
class Prepare(Message):
    seq: Annotated[int, Int(1, ORDINAL_MAX)]
    view: Annotated[int, VIEW]
    digest: Annotated[bytes, DIGEST]


@message(tag=T_COMMIT)
@dataclass(frozen=True, slots=True)
class Commit(Message):
    seq: Annotated[int, Int(1, ORDINAL_MAX)]
    view: Annotated[int, VIEW]
    digest: Annotated[bytes, DIGEST]


# ---------------------------------------------------------------------------
# 2.4 Reconciliation.


@dataclass(frozen=True, slots=True)
class ReconPart:
    """One erasure-coded part (index 0..N-1) of ``originator``'s request ``po``."""

    originator: Annotated[int, SERVER]
    po: Annotated[tuple[int, int], PO_SEQ]
    part_index: Annotated[int, Int(0, SERVERS_MAX - 1)]
    request_bytes: Annotated[int, Int(1, RECON_PART_BYTES_MAX * SERVERS_MAX)]
    data: Annotated[bytes, Bytes(RECON_PART_BYTES_MAX)]


@message(tag=T_RECON)
@dataclass(frozen=True, slots=True)
class Recon(Message):
    parts: Annotated[tuple[ReconPart, ...], TupleOf(Record(ReconPart), RECON_PARTS_MAX, 1)]


# ---------------------------------------------------------------------------
# 2.5 Suspect-leader.


@message(tag=T_TAT_MEASURE)
@dataclass(frozen=True, slots=True)
class TatMeasure(Message):
    view: Annotated[int, VIEW]
    max_tat_us: Annotated[int, TIME_US]


@message(tag=T_RTT_PING)
@dataclass(frozen=True, slots=True)
class RttPing(Message):
    view: Annotated[int, VIEW]
    ping_seq: Annotated[int, Int(1, U64)]


@message(tag=T_RTT_PONG)
@dataclass(frozen=True, slots=True)
class RttPong(Message):
    dest: Annotated[int, SERVER]
    view: Annotated[int, VIEW]
    ping_seq: Annotated[int, Int(1, U64)]


@message(tag=T_RTT_MEASURE)
@dataclass(frozen=True, slots=True)
class RttMeasure(Message):
    dest: Annotated[int, SERVER]
    view: Annotated[int, VIEW]
    rtt_us: Annotated[int, TIME_US]


@message(tag=T_TAT_UB)
@dataclass(frozen=True, slots=True)
class TatUb(Message):
    view: Annotated[int, VIEW]
    alpha_us: Annotated[int, TIME_US]


@message(tag=T_NEW_LEADER)
@dataclass(frozen=True, slots=True)
class NewLeader(Message):
    new_view: Annotated[int, Int(2, U32)]


@message(tag=T_NEW_LEADER_PROOF)
@dataclass(frozen=True, slots=True)
class NewLeaderProof(Message):
    new_view: Annotated[int, Int(2, U32)]
    votes: Annotated[tuple[Any, ...], TupleOf(Nested(frozenset({T_NEW_LEADER})), SERVERS_MAX, 1)]

    def invalid(self) -> str | None:
        signers = [v.sender for v in self.votes]
        if len(set(signers)) != len(signers):
            return "duplicate_signer"  # H6
        if any(v.msg.new_view != self.new_view for v in self.votes):
            return "vote_view"
        return None


# ---------------------------------------------------------------------------
# 2.6 View change.

RB_PAYLOAD = Nested(frozenset({T_REPORT, T_PC_SET}))


@message(tag=T_RB_INIT)
@dataclass(frozen=True, slots=True)
class RbInit(Message):
    payload: Annotated[Any, RB_PAYLOAD]


@message(tag=T_RB_ECHO)
@dataclass(frozen=True, slots=True)
class RbEcho(Message):
    payload: Annotated[Any, RB_PAYLOAD]


@message(tag=T_RB_READY)
@dataclass(frozen=True, slots=True)
class RbReady(Message):
    payload: Annotated[Any, RB_PAYLOAD]


@message(tag=T_REPORT)
@dataclass(frozen=True, slots=True)
class Report(Message):
    rb_origin: Annotated[int, SERVER]
    rb_view: Annotated[int, VIEW]
    rb_seq: Annotated[int, Int(0, 0)]
    exec_aru: Annotated[int, ORDINAL]
    pc_set_size: Annotated[int, Int(0, U32)]
    # H11: the highest ordinal fixed by a replay this replica committed to (REPLAY_COMMIT
    # sent) and has not yet executed; 0 without one. It is proven by ``replay`` below: a
    # correct replica trusts it only when it equals that replay's ``start_seq - 1``.
    replay_floor: Annotated[int, ORDINAL]
    # The replay certificate (none: all four empty): the leader's REPLAY, whose threshold
    # signature covers ``union_digest``, and the opening of that digest: the ordinals in
    # ``[union_lo, start_seq)`` the replay decided as PC_SETs, with their PPDs (every
    # other ordinal there it decided as a NO_OP). Those decisions are decisions of the
    # REPLAY's view, and compete as such in the next replay union.
    replay: Annotated[Any, Optional(Nested(frozenset({T_REPLAY})))] = None
    union_lo: Annotated[int, ORDINAL] = 0
    union_seqs: Annotated[tuple[int, ...], TupleOf(ORDINAL, UNION_ENTRIES_MAX)] = ()
    union_ppds: Annotated[tuple[bytes, ...], TupleOf(DIGEST, UNION_ENTRIES_MAX)] = ()
    # ... and why that REPLAY is the one its view committed to: 2f+k REPLAY_PREPAREs of
    # non-leaders, or 2f+k+1 REPLAY_COMMITs, on its digest. A Byzantine leader can get two
    # REPLAYs threshold-signed, but only one can gather these.
    replay_votes: Annotated[
        tuple[Any, ...], TupleOf(Nested(frozenset({T_REPLAY_PREPARE, T_REPLAY_COMMIT})), SERVERS_MAX)
    ] = ()


@message(tag=T_PC_SET)
@dataclass(frozen=True, slots=True)
class PcSet(Message):
    rb_origin: Annotated[int, SERVER]
    rb_view: Annotated[int, VIEW]
    rb_seq: Annotated[int, Int(1, U32)]
    pre_prepare: Annotated[Any, Nested(frozenset({T_PRE_PREPARE}))]
    prepares: Annotated[tuple[Any, ...], TupleOf(Nested(frozenset({T_PREPARE})), SERVERS_MAX, 1)]

    def invalid(self) -> str | None:
        signers = [p.sender for p in self.prepares]
        if len(set(signers)) != len(signers):
            return "duplicate_signer"  # H6
        pp = self.pre_prepare.msg
        for p in self.prepares:
            if p.msg.seq != pp.seq or p.msg.view != pp.view:
                return "prepare_mismatch"
        return None


@message(tag=T_VC_LIST)
@dataclass(frozen=True, slots=True)
class VcList(Message):
    view: Annotated[int, VIEW]
    members: Annotated[int, BITMAP]


@message(tag=T_VC_PARTIAL_SIG)
@dataclass(frozen=True, slots=True)
class VcPartialSig(Message):
    view: Annotated[int, VIEW]
    members: Annotated[int, BITMAP]
    start_seq: Annotated[int, Int(1, ORDINAL_MAX)]
    share: Annotated[bytes, Bytes(SHARE_BYTES_MAX)]
    # digest of the replay union the list's complete state defines (viewchange.union_digest)
    union_digest: Annotated[bytes, DIGEST] = bytes(DIGEST_SIZE)


@message(tag=T_VC_PROOF)
@dataclass(frozen=True, slots=True)
class VcProof(Message):
    view: Annotated[int, VIEW]
    members: Annotated[int, BITMAP]
    start_seq: Annotated[int, Int(1, ORDINAL_MAX)]
    signature: Annotated[bytes, Bytes(SIGNATURE_BYTES_MAX)]
    # digest of the replay union the list's complete state defines (viewchange.union_digest)
    union_digest: Annotated[bytes, DIGEST] = bytes(DIGEST_SIZE)


@message(tag=T_REPLAY)
@dataclass(frozen=True, slots=True)
class Replay(Message):
    view: Annotated[int, VIEW]
    members: Annotated[int, BITMAP]
    start_seq: Annotated[int, Int(1, ORDINAL_MAX)]
    signature: Annotated[bytes, Bytes(SIGNATURE_BYTES_MAX)]
    # digest of the replay union the list's complete state defines (viewchange.union_digest)
    union_digest: Annotated[bytes, DIGEST] = bytes(DIGEST_SIZE)


@message(tag=T_REPLAY_PREPARE)
@dataclass(frozen=True, slots=True)
class ReplayPrepare(Message):
    view: Annotated[int, VIEW]
    digest: Annotated[bytes, DIGEST]


@message(tag=T_REPLAY_COMMIT)
@dataclass(frozen=True, slots=True)
class ReplayCommit(Message):
    view: Annotated[int, VIEW]
    digest: Annotated[bytes, DIGEST]


# ---------------------------------------------------------------------------
# 2.7 Catch-up.


@message(tag=T_CATCHUP_REQUEST)
@dataclass(frozen=True, slots=True)
class CatchupRequest(Message):
    """'My ARU is ``aru``: send me the ORD certificates you keep above it.'"""

    aru: Annotated[int, ORDINAL]


@dataclass(frozen=True, slots=True)
class FetchKey:
    """One PO id a PO_FETCH asks for."""

    originator: Annotated[int, SERVER]
    po: Annotated[tuple[int, int], PO_SEQ]


@message(tag=T_PO_FETCH)
@dataclass(frozen=True, slots=True)
class PoFetch(Message):
    """'Ordinal ``seq`` is ordered here and I cannot execute it: send me these
    requests and the signed PO_ACKs that certify them.' (docs/protocol.md 2.7)

    The answer is no new message: the original PO_REQUEST and PO_ACK envelopes,
    forwarded unchanged, which the asker verifies and counts like any others."""

    seq: Annotated[int, Int(1, ORDINAL_MAX)]
    keys: Annotated[tuple[FetchKey, ...], TupleOf(Record(FetchKey), FETCH_KEYS_MAX, 1)]

    def invalid(self) -> str | None:
        return "po_seq_zero" if any(k.po[1] == 0 for k in self.keys) else None


@message(tag=T_REPLAYED)
@dataclass(frozen=True, slots=True)
class Replayed(Message):
    """'Ordinal ``seq`` was fixed by the replay of view ``view``: as this prepare
    certificate's pre-prepare, or as a NO_OP when ``pre_prepare`` is None.'

    A replayed ordinal has no commit certificate. A replica that missed the replay
    installs it from ``f+1`` matching copies sent by distinct replicas, one of which
    is correct (``prime.core.catchup``; ours, docs/hardening.md OQ5)."""

    view: Annotated[int, VIEW]
    seq: Annotated[int, Int(1, ORDINAL_MAX)]
    pre_prepare: Annotated[Any, Optional(Nested(frozenset({T_PRE_PREPARE})))]
    prepares: Annotated[tuple[Any, ...], TupleOf(Nested(frozenset({T_PREPARE})), SERVERS_MAX)]

    def invalid(self) -> str | None:
        if self.pre_prepare is None:
            return "no_op_with_prepares" if self.prepares else None
        pp = self.pre_prepare.msg
        if pp.seq != self.seq or pp.view > self.view:
            return "pp_mismatch"
        signers = [p.sender for p in self.prepares]
        if len(set(signers)) != len(signers):
            return "duplicate_signer"
        for p in self.prepares:
            if p.msg.seq != pp.seq or p.msg.view != pp.view:
                return "prepare_mismatch"
        return None


@message(tag=T_ORD_CERT)
@dataclass(frozen=True, slots=True)
class OrdCert(Message):
    view: Annotated[int, VIEW]
    seq: Annotated[int, Int(1, ORDINAL_MAX)]
    kind: Annotated[int, Int(1, 3)]
    flag: Annotated[int, Int(1, 2)]
    pre_prepare: Annotated[Any, Nested(frozenset({T_PRE_PREPARE}))]
    commits: Annotated[tuple[Any, ...], TupleOf(Nested(frozenset({T_COMMIT})), SERVERS_MAX, 1)]

    def invalid(self) -> str | None:
        if self.kind != OrdKind.COMMIT:
            return "kind"
        pp = self.pre_prepare.msg
        if pp.seq != self.seq or pp.view != self.view:
            return "pp_mismatch"  # H6: the certificate's view is bound to its pre-prepare
        signers = [c.sender for c in self.commits]
        if len(set(signers)) != len(signers):
            return "duplicate_signer"  # H6
        for c in self.commits:
            if c.msg.seq != self.seq or c.msg.view != pp.view:
                return "commit_mismatch"
        return None


# ---------------------------------------------------------------------------
# Traffic classes (docs/protocol.md sections 2.0 and 2.8): timely messages are served first.


class TrafficClass(enum.IntEnum):
    TIMELY = 0
    BOUNDED = 1
    RECON = 2


TIMELY_TAGS = frozenset({T_PROOF_MATRIX, T_PRE_PREPARE, T_VC_PROOF, T_REPLAY, T_RTT_PING, T_RTT_PONG})


def traffic_class(tag: int) -> TrafficClass:
    if tag in TIMELY_TAGS:
        return TrafficClass.TIMELY
    if tag == T_RECON:
        return TrafficClass.RECON
    return TrafficClass.BOUNDED


# Messages signed alone (direct signature) because others embed them (docs/protocol.md section 2.0).
DIRECT_SIGNED_TAGS = frozenset({T_UPDATE, T_PO_ARU, T_NEW_LEADER, T_REPORT, T_PC_SET})
