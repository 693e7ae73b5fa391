"""Unit tests of the msgpack codec (prime.wire) against the message definitions (prime.msgs).

Three parts: a hand-made valid instance of every registered message type round-trips;
hypothesis strategies derived from each class's ``SPECS`` generate random valid instances
that round-trip; and a literal table of malformed inputs, each rejected with its reason.

``sample_envelopes()`` and ``wrap()`` are also used by ``test_wire_fuzz.py`` as seeds.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prime import msgs, wire
from prime.msgs import (
    ACK_PARTS_MAX,
    DIGEST_SIZE,
    MESSAGES,
    NESTING_DEPTH_MAX,
    ORDINAL_MAX,
    PAYLOAD_BYTES_MAX,
    RECON_PARTS_MAX,
    SERVERS_MAX,
    SHARE_BYTES_MAX,
    SIGNATURE_BYTES_MAX,
    U32,
    U64,
    UPDATES_PER_REQUEST_MAX,
    AckPart,
    FetchKey,
    CatchupRequest,
    ClientResponse,
    Commit,
    Message,
    NewLeader,
    NewLeaderProof,
    OrdCert,
    OrdKind,
    PcSet,
    PoAck,
    PoFetch,
    PoAru,
    PoRequest,
    Prepare,
    PrePrepare,
    ProofMatrix,
    RbEcho,
    RbInit,
    RbReady,
    Recon,
    ReconPart,
    Replay,
    ReplayCommit,
    Replayed,
    ReplayPrepare,
    Report,
    RttMeasure,
    RttPing,
    RttPong,
    TatMeasure,
    TatUb,
    Update,
    UpdateKind,
    VcList,
    VcPartialSig,
    VcProof,
)
from prime.wire import Envelope

SIG = bytes(range(64))  # a dummy Ed25519-sized signature: the codec never verifies it
MT_NUMS = tuple(1 << k for k in range(wire.PATH_DIGESTS_MAX + 1))  # 1, 2, 4, ..., 256


def digest(fill: int) -> bytes:
    return bytes([fill]) * DIGEST_SIZE


def merkle_path(mt_num: int) -> tuple[bytes, ...]:
    """log2(mt_num) sibling digests, as a signer of a batch of mt_num would attach."""
    return tuple(digest(0xD0 + k) for k in range(mt_num.bit_length() - 1))


def wrap(msg: Message, *, sender: int = 1, mt_num: int = 1, mt_index: int = 1) -> Envelope:
    """``msg`` as a signed envelope (dummy signature) at a given Merkle position."""
    return wire.make_envelope(
        sender=sender,
        body=wire.encode_body(msg),
        msg=msg,
        sig=SIG,
        mt_num=mt_num,
        mt_index=mt_index,
        path=merkle_path(mt_num),
    )


def raw_envelope(
    body: Any,
    *,
    sender: Any = 1,
    mt_num: Any = 1,
    mt_index: Any = 1,
    sig: Any = SIG,
    path: Any = (),
) -> bytes:
    """Envelope bytes from arbitrary (possibly malformed) parts; a non-bytes ``body`` is packed."""
    if not isinstance(body, bytes):
        body = msgpack.packb(body, use_bin_type=True)
    if isinstance(path, tuple):
        path = list(path)
    return msgpack.packb([sender, mt_num, mt_index, sig, path, body], use_bin_type=True)


@dataclasses.dataclass(frozen=True)
class Opaque:
    """Stands in for an embedded Envelope: ``wire.encode_body`` writes its ``raw`` as is."""

    raw: Any


def raw_of(msg: Message, **envelope_fields: Any) -> bytes:
    """Envelope bytes of a message built without validation (fields may be out of spec)."""
    return raw_envelope(wire.encode_body(msg), **envelope_fields)


# ---------------------------------------------------------------------------
# Hand-made valid instances, one per registered tag.


def po_aru(sender: int, servers_count: int = 4) -> Envelope:
    vector = tuple((1, 10 * sender + j) for j in range(servers_count))
    return wrap(PoAru(incarnation=1, num=7, cum_aru=vector), sender=sender)


def pre_prepare(*, seq: int = 9, view: int = 3, rows_count: int = 4) -> Envelope:
    rows = tuple(None if i == 2 else po_aru(i, rows_count) for i in range(1, rows_count + 1))
    msg = PrePrepare(seq=seq, view=view, sent_us=1_700_000_000_000_000, rows=rows)
    return wrap(msg, sender=(view - 1) % rows_count + 1, mt_num=4, mt_index=2)


def update(client: int = 7, seq: int = 1, payload: bytes = b"set k v") -> Envelope:
    return wrap(Update(client=client, incarnation=1, seq=seq, kind=UpdateKind.APP, payload=payload))


def pc_set(*, prepare_senders: tuple[int, ...] = (2, 3, 4)) -> PcSet:
    pp = pre_prepare()
    prepares = tuple(
        wrap(Prepare(seq=9, view=3, digest=digest(0x11)), sender=s, mt_num=2, mt_index=2)
        for s in prepare_senders
    )
    return PcSet(rb_origin=2, rb_view=3, rb_seq=1, pre_prepare=pp, prepares=prepares)


def ord_cert(*, view: int = 3, commit_senders: tuple[int, ...] = (1, 2, 3)) -> OrdCert:
    commits = tuple(
        wrap(Commit(seq=9, view=3, digest=digest(0x22)), sender=s, mt_num=8, mt_index=s)
        for s in commit_senders
    )
    return OrdCert(
        view=view, seq=9, kind=OrdKind.COMMIT, flag=1, pre_prepare=pre_prepare(), commits=commits
    )


def replayed(*, no_op: bool = False, view: int = 4) -> Replayed:
    if no_op:
        return Replayed(view=view, seq=9, pre_prepare=None, prepares=())
    pc = pc_set()
    return Replayed(view=view, seq=9, pre_prepare=pc.pre_prepare, prepares=pc.prepares)


def new_leader_proof(*, senders: tuple[int, ...] = (1, 2, 4)) -> NewLeaderProof:
    votes = tuple(wrap(NewLeader(new_view=5), sender=s) for s in senders)
    return NewLeaderProof(new_view=5, votes=votes)


def report() -> Report:
    return Report(rb_origin=3, rb_view=4, rb_seq=0, exec_aru=120, pc_set_size=2, replay_floor=100)


def sample_messages() -> dict[int, Message]:
    """One valid, hand-made message per registered tag."""
    ack_parts = tuple(AckPart(originator=o, po=(1, 40 + o), digest=digest(o)) for o in range(1, 5))
    recon_part = ReconPart(
        originator=2, po=(1, 8), part_index=3, request_bytes=600, data=b"\x07" * 150
    )
    share = b"\x5a" * 300
    by_class: list[Message] = [
        Update(client=7, incarnation=2, seq=11, kind=UpdateKind.CLIENT_NO_OP, payload=b""),
        ClientResponse(
            ordinal=12,
            event_idx=1,
            event_tot=2,
            client=7,
            incarnation=2,
            seq=11,
            kind=0,
            payload=b"ok",
        ),
        PoRequest(po=(1, 5), updates=(update(seq=1), update(seq=2), update(client=9, seq=1))),
        PoAck(parts=ack_parts),
        PoAru(incarnation=1, num=3, cum_aru=((1, 4), (1, 0), (0, 0), (1, 9))),
        ProofMatrix(sent_us=123, rows=(po_aru(1), None, po_aru(3), po_aru(4))),
        pre_prepare().msg,
        Prepare(seq=9, view=3, digest=digest(0x11)),
        Commit(seq=9, view=3, digest=digest(0x22)),
        Recon(parts=(recon_part,)),
        TatMeasure(view=3, max_tat_us=4_000),
        RttPing(view=3, ping_seq=77),
        RttPong(dest=2, view=3, ping_seq=77),
        RttMeasure(dest=2, view=3, rtt_us=850),
        TatUb(view=3, alpha_us=9_000),
        NewLeader(new_view=5),
        new_leader_proof(),
        RbInit(payload=wrap(report(), sender=3)),
        RbEcho(payload=wrap(pc_set(), sender=2)),
        RbReady(payload=wrap(report(), sender=3)),
        report(),
        pc_set(),
        VcList(view=4, members=0b1110),
        VcPartialSig(view=4, members=0b1110, start_seq=10, share=share),
        VcProof(view=4, members=0b1110, start_seq=10, signature=b"\x33" * 128),
        Replay(view=4, members=0b1110, start_seq=10, signature=b"\x33" * 128),
        ReplayPrepare(view=4, digest=digest(0x44)),
        ReplayCommit(view=4, digest=digest(0x55)),
        CatchupRequest(aru=118),
        ord_cert(),
        replayed(),
        PoFetch(seq=12, keys=(FetchKey(2, (1, 7)), FetchKey(3, (5, 1)))),
    ]
    out = {type(m).TAG: m for m in by_class}
    assert len(out) == len(by_class), "two samples share a tag"
    return out


def sample_envelopes() -> dict[int, Envelope]:
    """Every sample wrapped at a different Merkle position (mt_num cycles 1..256)."""
    out = {}
    for i, (tag, msg) in enumerate(sorted(sample_messages().items())):
        mt_num = MT_NUMS[i % len(MT_NUMS)]
        out[tag] = wrap(
            msg, sender=1 + i % SERVERS_MAX, mt_num=mt_num, mt_index=mt_num - i % mt_num
        )
    return out


def assert_round_trips(env: Envelope) -> None:
    decoded = wire.decode(env.raw)
    assert isinstance(decoded, Envelope), f"{env!r} rejected: {decoded}"
    assert decoded.raw == env.raw
    assert decoded.msg == env.msg
    assert (decoded.sender, decoded.mt_num, decoded.mt_index) == (
        env.sender,
        env.mt_num,
        env.mt_index,
    )
    assert (decoded.sig, decoded.path, decoded.body) == (env.sig, env.path, env.body)
    assert wire.encode_body(decoded.msg) == env.body  # re-encoding is byte-exact


def test_samples_cover_every_registered_tag() -> None:
    """Every tag in msgs.MESSAGES has a hand-made sample, so a new message type needs one."""
    assert set(sample_messages()) == set(MESSAGES)
    assert not set(sample_messages()) & set(msgs.REJECTED_TAGS)


@pytest.mark.parametrize("tag", sorted(MESSAGES), ids=lambda t: MESSAGES[t].NAME)
def test_sample_round_trips(tag: int) -> None:
    """The hand-made instance of this type decodes back to equal bytes and an equal message."""
    env = sample_envelopes()[tag]
    assert type(env.msg) is MESSAGES[tag]
    assert_round_trips(env)


def test_sample_merkle_positions_span_every_batch_size() -> None:
    """The samples exercise every accepted Merkle batch size, 1 through 256."""
    assert {e.mt_num for e in sample_envelopes().values()} == set(MT_NUMS)


@pytest.mark.parametrize(
    "msg",
    [
        PoAck(
            parts=(AckPart(originator=SERVERS_MAX, po=(U64, U64), digest=digest(1)),)
            * ACK_PARTS_MAX
        ),
        PoRequest(po=(0, 1), updates=(update(),) * UPDATES_PER_REQUEST_MAX),
        PrePrepare(
            seq=ORDINAL_MAX, view=U32, sent_us=U64, rows=tuple(po_aru(i, 31) for i in range(1, 32))
        ),
        Recon(parts=(ReconPart(1, (0, 1), SERVERS_MAX - 1, 1, b""),) * RECON_PARTS_MAX),
        Update(client=U32, incarnation=U64, seq=U64, kind=103, payload=b"\xff" * PAYLOAD_BYTES_MAX),
        VcPartialSig(view=0, members=U32, start_seq=1, share=b"s" * SHARE_BYTES_MAX),
    ],
    ids=["po_ack_max", "po_request_max", "pre_prepare_max", "recon_max", "update_max", "share_max"],
)
def test_largest_valid_messages_round_trip(msg: Message) -> None:
    """Messages at every count and size bound are still accepted (the bounds are inclusive)."""
    env = wire.make_envelope(
        sender=U32,
        body=wire.encode_body(msg),
        msg=msg,
        sig=b"\x01" * SIGNATURE_BYTES_MAX,
        mt_num=256,
        mt_index=256,
        path=merkle_path(256),
    )
    assert_round_trips(env)


def test_deepest_legitimate_nesting_round_trips() -> None:
    """RB_READY > PC_SET > PRE_PREPARE > PO_ARU, the deepest real chain, is within the limit."""
    env = wrap(RbReady(payload=wrap(pc_set(), sender=2)), sender=4)
    assert_round_trips(env)
    row = wire.decode(env.raw).msg.payload.msg.pre_prepare.msg.rows[0]  # type: ignore[union-attr]
    assert isinstance(row, Envelope) and isinstance(row.msg, PoAru)


# ---------------------------------------------------------------------------
# Random valid instances, derived from the specs.

BYTES_DRAWN_MAX = 96  # larger sizes are covered by test_largest_valid_messages_round_trip
COUNT_DRAWN_MAX = 4  # keeps nested matrices small; the count bounds are tested by hand
SIG_DRAWN_MAX = 80


@functools.cache
def spec_strategy(spec: msgs.Spec, depth: int) -> st.SearchStrategy[Any]:
    """Values accepted by ``spec`` for a field of a message nested ``depth`` envelopes deep."""
    match spec:
        case msgs.Int(lo=lo, hi=hi):
            return st.integers(lo, hi)
        case msgs.Bool():
            return st.booleans()
        case msgs.Bytes(size_max=size_max, size_exact=None):
            return st.binary(max_size=min(size_max, BYTES_DRAWN_MAX))
        case msgs.Bytes(size_exact=int(size_exact)):
            return st.binary(min_size=size_exact, max_size=size_exact)
        case msgs.PoSeqSpec():
            return st.tuples(st.integers(0, U64), st.integers(0, U64))
        case msgs.TupleOf(item=item, count_max=count_max, count_min=count_min):
            count_drawn_max = max(count_min, min(count_max, COUNT_DRAWN_MAX))
            items = st.lists(
                spec_strategy(item, depth), min_size=count_min, max_size=count_drawn_max
            )
            return items.map(tuple)
        case msgs.Optional(inner=inner):
            return st.none() | spec_strategy(inner, depth)
        case msgs.Record(cls=cls):
            return st.builds(cls, *(spec_strategy(s, depth) for s in msgs._record_specs(cls)))
        case msgs.Nested(tags=tags):
            if depth >= NESTING_DEPTH_MAX:
                return st.nothing()  # bounded: decode refuses anything deeper
            return st.one_of([envelopes(MESSAGES[t], depth + 1) for t in sorted(tags)])
    raise AssertionError(f"no strategy for {spec!r}: add a case for the new Spec kind")


def resign(env: Envelope, *, msg: Message | None = None, sender: int | None = None) -> Envelope:
    """The same envelope with a different message or signer (the codec never checks sigs)."""
    msg = env.msg if msg is None else msg
    return wire.make_envelope(
        sender=env.sender if sender is None else sender,
        body=wire.encode_body(msg),
        msg=msg,
        sig=env.sig,
        mt_num=env.mt_num,
        mt_index=env.mt_index,
        path=env.path,
    )


Draw = Callable[[st.SearchStrategy[Any]], Any]


def distinct_senders(draw: Draw, count: int) -> list[int]:
    return draw(
        st.lists(st.integers(1, wire.SENDER_MAX), min_size=count, max_size=count, unique=True)
    )


def fix_update(draw: Draw, m: Update) -> Update:
    return dataclasses.replace(m, kind=int(draw(st.sampled_from(UpdateKind))))


def fix_client_response(draw: Draw, m: ClientResponse) -> ClientResponse:
    low, high = sorted((m.event_idx, m.event_tot))
    return dataclasses.replace(m, event_idx=low, event_tot=high)


def fix_po_request(draw: Draw, m: PoRequest) -> PoRequest:
    return dataclasses.replace(m, po=(m.po[0], max(1, m.po[1])))


def fix_po_ack(draw: Draw, m: PoAck) -> PoAck:
    parts = tuple(dataclasses.replace(p, po=(p.po[0], max(1, p.po[1]))) for p in m.parts)
    return dataclasses.replace(m, parts=parts)


def fix_po_fetch(draw: Draw, m: PoFetch) -> PoFetch:
    keys = tuple(dataclasses.replace(k, po=(k.po[0], max(1, k.po[1]))) for k in m.keys)
    return dataclasses.replace(m, keys=keys)


def fix_pre_prepare(draw: Draw, m: PrePrepare) -> PrePrepare:
    rows = tuple(r if r is None else resign(r, sender=i) for i, r in enumerate(m.rows, start=1))
    return dataclasses.replace(m, rows=rows)


def fix_new_leader_proof(draw: Draw, m: NewLeaderProof) -> NewLeaderProof:
    senders = distinct_senders(draw, len(m.votes))
    votes = tuple(
        resign(v, sender=s, msg=NewLeader(new_view=m.new_view)) for v, s in zip(m.votes, senders)
    )
    return dataclasses.replace(m, votes=votes)


def fix_pc_set(draw: Draw, m: PcSet) -> PcSet:
    pp = m.pre_prepare.msg
    senders = distinct_senders(draw, len(m.prepares))
    prepares = tuple(
        resign(p, sender=s, msg=dataclasses.replace(p.msg, seq=pp.seq, view=pp.view))
        for p, s in zip(m.prepares, senders)
    )
    return dataclasses.replace(m, prepares=prepares)


def fix_ord_cert(draw: Draw, m: OrdCert) -> OrdCert:
    pp = m.pre_prepare.msg
    senders = distinct_senders(draw, len(m.commits))
    commits = tuple(
        resign(c, sender=s, msg=dataclasses.replace(c.msg, seq=pp.seq, view=pp.view))
        for c, s in zip(m.commits, senders)
    )
    return dataclasses.replace(
        m, kind=int(OrdKind.COMMIT), view=pp.view, seq=pp.seq, commits=commits
    )


def fix_replayed(draw: Draw, m: Replayed) -> Replayed:
    if m.pre_prepare is None:
        return dataclasses.replace(m, prepares=())
    pp = m.pre_prepare.msg
    senders = distinct_senders(draw, len(m.prepares))
    prepares = tuple(
        resign(p, sender=s, msg=dataclasses.replace(p.msg, seq=pp.seq, view=pp.view))
        for p, s in zip(m.prepares, senders)
    )
    return dataclasses.replace(m, view=max(m.view, pp.view), seq=pp.seq, prepares=prepares)


# The rules of each type's invalid(), as repairs applied to a spec-derived instance.
FIXUPS: dict[type, Callable[[Draw, Any], Any]] = {
    Update: fix_update,
    ClientResponse: fix_client_response,
    PoRequest: fix_po_request,
    PoAck: fix_po_ack,
    PoFetch: fix_po_fetch,
    PrePrepare: fix_pre_prepare,
    NewLeaderProof: fix_new_leader_proof,
    PcSet: fix_pc_set,
    OrdCert: fix_ord_cert,
    Replayed: fix_replayed,
}


@st.composite
def _message(draw: Draw, cls: type, depth: int) -> Message:
    msg = cls(*(draw(spec_strategy(spec, depth)) for _, spec in cls.SPECS))  # type: ignore[attr-defined]
    fixup = FIXUPS.get(cls)
    return msg if fixup is None else fixup(draw, msg)  # type: ignore[no-any-return]


@st.composite
def _envelope(draw: Draw, cls: type, depth: int) -> Envelope:
    msg = draw(messages(cls, depth))
    mt_num = draw(st.sampled_from(MT_NUMS))
    path = draw(
        st.lists(
            st.binary(min_size=DIGEST_SIZE, max_size=DIGEST_SIZE),
            min_size=mt_num.bit_length() - 1,
            max_size=mt_num.bit_length() - 1,
        )
    )
    return wire.make_envelope(
        sender=draw(st.integers(1, wire.SENDER_MAX)),
        body=wire.encode_body(msg),
        msg=msg,
        sig=draw(st.binary(min_size=1, max_size=SIG_DRAWN_MAX)),
        mt_num=mt_num,
        mt_index=draw(st.integers(1, mt_num)),
        path=tuple(path),
    )


@functools.cache
def messages(cls: type, depth: int = 0) -> st.SearchStrategy[Message]:
    """Random valid instances of ``cls`` nested ``depth`` envelopes deep."""
    return _message(cls, depth)


@functools.cache
def envelopes(cls: type, depth: int = 0) -> st.SearchStrategy[Envelope]:
    """Random valid envelopes carrying ``cls`` at a random Merkle position."""
    return _envelope(cls, depth)


def test_every_type_with_rules_has_a_fixup() -> None:
    """A message type whose invalid() adds rules must teach the strategies those rules."""
    with_rules = {c for c in MESSAGES.values() if c.invalid is not Message.invalid}
    assert with_rules <= set(FIXUPS), with_rules - set(FIXUPS)


@pytest.mark.parametrize("tag", sorted(MESSAGES), ids=lambda t: MESSAGES[t].NAME)
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_random_valid_instance_round_trips(tag: int, data: st.DataObject) -> None:
    """Any spec-derived valid instance of this type decodes back to itself, byte for byte."""
    assert_round_trips(data.draw(envelopes(MESSAGES[tag])))


# ---------------------------------------------------------------------------
# Rejections. Each row: id, envelope bytes, expected reason prefix.

D = digest(0x11)
GOOD_PREPARE = Prepare(seq=9, view=3, digest=D)


def prepare_body(*fields: Any) -> bytes:
    return msgpack.packb([msgs.T_PREPARE, *fields], use_bin_type=True)


def ack_parts(count: int) -> PoAck:
    return PoAck(parts=(AckPart(originator=1, po=(1, 1), digest=D),) * count)


def nest_rb_init(levels: int) -> bytes:
    """A REPORT wrapped in ``levels`` RB_INITs, each a signed envelope."""
    env = wrap(report(), sender=3)
    for _ in range(levels):
        env = wrap(RbInit(payload=env), sender=3)
    return env.raw


def rb_init_chain_reason(levels: int, tail: str) -> str:
    return "rb_init:payload:nested:" * (levels - 1) + "rb_init:payload:" + tail


R = dataclasses.replace
PP = pre_prepare()
PP_ROWS = PP.msg.rows

REJECTIONS: list[tuple[str, bytes, str]] = [
    # Tags.
    ("tag_zero", raw_envelope([0]), "tag"),
    ("tag_unregistered", raw_envelope([34, 1, 1, D]), "tag"),
    ("tag_negative", raw_envelope([-1]), "tag"),
    ("tag_huge", raw_envelope([U64]), "tag"),
    ("tag_bool", raw_envelope([True, 1]), "body"),
    ("tag_str", raw_envelope(["prepare", 1]), "body_msgpack"),
    ("tag_missing", raw_envelope([]), "body"),
    ("body_not_array", raw_envelope(6), "body"),
    ("po_cert", raw_envelope([29, 1, 2]), "po_cert:unsupported"),
    # Field counts.
    ("fields_too_few", raw_envelope(prepare_body(9, 3)), "prepare:field_count"),
    ("fields_too_many", raw_envelope(prepare_body(9, 3, D, 0)), "prepare:field_count"),
    ("fields_none", raw_envelope([msgs.T_NEW_LEADER]), "new_leader:field_count"),
    # Field types.
    ("bool_for_int", raw_of(R(GOOD_PREPARE, seq=True)), "prepare:seq:int"),
    ("float_for_int", raw_of(R(GOOD_PREPARE, view=3.0)), "prepare:view:int"),
    ("nil_for_int", raw_of(R(GOOD_PREPARE, view=None)), "prepare:view:int"),
    ("bytes_for_int", raw_of(R(GOOD_PREPARE, seq=b"\x09")), "prepare:seq:int"),
    ("array_for_int", raw_of(R(GOOD_PREPARE, seq=(9,))), "prepare:seq:int"),
    ("int_for_bytes", raw_of(R(GOOD_PREPARE, digest=5)), "prepare:digest:bytes"),
    ("empty_str_for_bytes", raw_of(R(GOOD_PREPARE, digest="")), "prepare:digest:bytes"),
    ("str_for_bytes", raw_of(R(GOOD_PREPARE, digest="x" * 32)), "body_msgpack"),
    ("str_for_sig", raw_envelope(prepare_body(9, 3, D), sig="x" * 64), "msgpack"),
    ("ext_for_bytes", raw_envelope(prepare_body(9, 3, msgpack.ExtType(1, D))), "body_msgpack"),
    (
        "bool_for_po_seq",
        raw_of(PoRequest(po=(True, 1), updates=(update(),))),
        "po_request:po:po_seq",
    ),
    (
        "po_seq_short",
        raw_of(PoRequest(po=(1,), updates=(update(),))),  # type: ignore[arg-type]
        "po_request:po:po_seq",
    ),
    ("int_for_record", raw_envelope([msgs.T_PO_ACK, [5]]), "po_ack:parts:record"),
    ("short_record", raw_envelope([msgs.T_PO_ACK, [[1, [1, 1]]]]), "po_ack:parts:record"),
    # Negative integers and integers above their bounds.
    ("seq_negative", raw_of(R(GOOD_PREPARE, seq=-1)), "prepare:seq:int"),
    ("time_negative", raw_of(TatMeasure(view=1, max_tat_us=-5)), "tat_measure:max_tat_us:int"),
    ("po_seq_negative", raw_of(PoRequest(po=(1, -1), updates=(update(),))), "po_request:po:po_seq"),
    ("seq_zero", raw_of(R(GOOD_PREPARE, seq=0)), "prepare:seq:int"),
    ("seq_above_ordinal_max", raw_of(R(GOOD_PREPARE, seq=ORDINAL_MAX + 1)), "prepare:seq:int"),
    ("view_above_u32", raw_of(R(GOOD_PREPARE, view=U32 + 1)), "prepare:view:int"),
    ("dest_zero", raw_of(RttPong(dest=0, view=1, ping_seq=1)), "rtt_pong:dest:int"),
    (
        "dest_above_servers",
        raw_of(RttPong(dest=SERVERS_MAX + 1, view=1, ping_seq=1)),
        "rtt_pong:dest:int",
    ),
    ("new_view_one", raw_of(NewLeader(new_view=1)), "new_leader:new_view:int"),
    ("aru_negative", raw_of(CatchupRequest(aru=-1)), "catchup_request:aru:int"),
    ("kind_above_u8", raw_of(Update(7, 0, 1, 256, b"")), "update:kind:int"),
    ("kind_unknown", raw_of(Update(7, 0, 1, 5, b"")), "update:kind"),
    ("report_rb_seq", raw_of(R(report(), rb_seq=1)), "report:rb_seq:int"),
    ("ack_originator_zero", raw_of(PoAck(parts=(AckPart(0, (1, 1), D),))), "po_ack:parts:int"),
    (
        "event_idx_above_tot",
        raw_of(ClientResponse(1, 3, 2, 7, 0, 1, 0, b"")),
        "client_response:event_idx",
    ),
    ("sender_zero", raw_of(GOOD_PREPARE, sender=0), "sender"),
    ("sender_negative", raw_of(GOOD_PREPARE, sender=-1), "sender"),
    ("sender_bool", raw_of(GOOD_PREPARE, sender=True), "sender"),
    ("sender_above_u32", raw_of(GOOD_PREPARE, sender=U32 + 1), "sender"),
    # Byte fields too long, and digests of the wrong length.
    (
        "payload_too_long",
        raw_of(Update(7, 0, 1, 0, b"p" * (PAYLOAD_BYTES_MAX + 1))),
        "update:payload:bytes",
    ),
    (
        "share_too_long",
        raw_of(VcPartialSig(1, 1, 1, b"s" * (SHARE_BYTES_MAX + 1))),
        "vc_partial_sig:share:bytes",
    ),
    (
        "signature_field_too_long",
        raw_of(VcProof(1, 1, 1, b"s" * (SIGNATURE_BYTES_MAX + 1))),
        "vc_proof:signature:bytes",
    ),
    ("sig_too_long", raw_of(GOOD_PREPARE, sig=b"s" * (SIGNATURE_BYTES_MAX + 1)), "sig"),
    ("sig_empty", raw_of(GOOD_PREPARE, sig=b""), "sig"),
    ("digest_short", raw_of(R(GOOD_PREPARE, digest=D[:-1])), "prepare:digest:bytes_len"),
    (
        "digest_long",
        raw_of(R(GOOD_PREPARE, digest=D + b"\x00")),
        "prepare:digest:bytes",
    ),  # > size_max
    ("digest_empty", raw_of(R(GOOD_PREPARE, digest=b"")), "prepare:digest:bytes_len"),
    (
        "ack_digest_short",
        raw_of(PoAck(parts=(AckPart(1, (1, 1), D[:31]),))),
        "po_ack:parts:bytes_len",
    ),
    # Array counts.
    (
        "ack_parts_too_many",
        raw_of(ack_parts(ACK_PARTS_MAX + 1)),
        "body_msgpack",
    ),  # > ARRAY_ITEMS_MAX
    ("ack_parts_none", raw_of(ack_parts(0)), "po_ack:parts:count"),
    (
        "updates_too_many",
        raw_of(PoRequest((1, 1), (update(),) * (UPDATES_PER_REQUEST_MAX + 1))),
        "po_request:updates:count",
    ),
    (
        "rows_too_many",
        raw_of(PrePrepare(1, 1, 0, (None,) * (SERVERS_MAX + 1))),
        "pre_prepare:rows:count",
    ),
    (
        "votes_too_many",
        raw_of(NewLeaderProof(5, tuple(wrap(NewLeader(5), sender=s) for s in range(1, 33)))),
        "new_leader_proof:votes:count",
    ),
    (
        "cum_aru_too_many",
        raw_of(PoAru(1, 1, ((0, 0),) * (SERVERS_MAX + 1))),
        "po_aru:cum_aru:count",
    ),
    (
        "recon_parts_too_many",
        raw_of(Recon((ReconPart(1, (0, 1), 0, 1, b""),) * (RECON_PARTS_MAX + 1))),
        "recon:parts:count",
    ),
    (
        "array_above_items_max",
        raw_envelope([msgs.T_PO_ACK, [0] * (wire.ARRAY_ITEMS_MAX + 1)]),
        "body_msgpack",
    ),
    ("envelope_too_short", msgpack.packb([1, 1, 1, SIG, []]), "envelope"),
    ("envelope_too_long", msgpack.packb([1, 1, 1, SIG, [], prepare_body(9, 3, D), 0]), "envelope"),
    # Maps, wherever they appear.
    ("map_envelope", msgpack.packb({1: 1}), "msgpack"),
    ("empty_map_envelope", msgpack.packb({}), "envelope"),
    ("map_body", raw_envelope({6: [9, 3, D]}), "body_msgpack"),
    ("map_field", raw_envelope(prepare_body({9: 3}, 3, D)), "body_msgpack"),
    ("empty_map_field", raw_envelope(prepare_body({}, 3, D)), "prepare:seq:int"),
    ("map_in_record", raw_envelope([msgs.T_PO_ACK, [{1: 1}]]), "body_msgpack"),
    ("map_in_path", raw_envelope(prepare_body(9, 3, D), mt_num=2, path=[{1: D}]), "msgpack"),
    (
        "map_in_nested_envelope",
        raw_of(R(PP.msg, rows=(Opaque(msgpack.packb({1: 2})),))),
        "pre_prepare:rows:nested:msgpack",
    ),
    (
        "map_in_nested_body",
        raw_of(R(PP.msg, rows=(Opaque(raw_envelope({3: 1})),))),
        "pre_prepare:rows:nested:body_msgpack",
    ),
    # Merkle position (H9).
    ("mt_num_zero", raw_of(GOOD_PREPARE, mt_num=0), "mt_num"),
    ("mt_num_three", raw_of(GOOD_PREPARE, mt_num=3, path=merkle_path(2)), "mt_num"),
    ("mt_num_six", raw_of(GOOD_PREPARE, mt_num=6, path=merkle_path(4)), "mt_num"),
    ("mt_num_255", raw_of(GOOD_PREPARE, mt_num=255, path=merkle_path(128)), "mt_num"),
    ("mt_num_512", raw_of(GOOD_PREPARE, mt_num=512, mt_index=1, path=merkle_path(512)), "mt_num"),
    ("mt_num_bool", raw_of(GOOD_PREPARE, mt_num=True), "mt_num"),
    ("mt_num_negative", raw_of(GOOD_PREPARE, mt_num=-4), "mt_num"),
    ("mt_index_zero", raw_of(GOOD_PREPARE, mt_num=4, mt_index=0, path=merkle_path(4)), "mt_index"),
    ("mt_index_above", raw_of(GOOD_PREPARE, mt_num=4, mt_index=5, path=merkle_path(4)), "mt_index"),
    ("mt_index_above_one", raw_of(GOOD_PREPARE, mt_num=1, mt_index=2), "mt_index"),
    ("path_too_short", raw_of(GOOD_PREPARE, mt_num=8, mt_index=1, path=merkle_path(4)), "path"),
    ("path_too_long", raw_of(GOOD_PREPARE, mt_num=4, mt_index=1, path=merkle_path(8)), "path"),
    ("path_for_direct_sig", raw_of(GOOD_PREPARE, path=merkle_path(2)), "path"),
    ("path_digest_short", raw_of(GOOD_PREPARE, mt_num=2, path=(D[:31],)), "path"),
    ("path_digest_str", raw_of(GOOD_PREPARE, mt_num=2, path=("",)), "path"),
    ("path_not_array", raw_of(GOOD_PREPARE, mt_num=2, path=D), "path"),
    ("path_of_ints", raw_of(GOOD_PREPARE, mt_num=2, path=[7]), "path"),
    ("body_not_bytes", msgpack.packb([1, 1, 1, SIG, [], [6, 9, 3, D]]), "body"),
    # Embedded messages.
    ("nested_wrong_tag", raw_of(PoRequest((1, 1), (po_aru(1),))), "po_request:updates:nested_tag"),
    ("nested_not_bytes", raw_of(PoRequest((1, 1), (Opaque(5),))), "po_request:updates:nested"),
    (
        "nested_garbage",
        raw_of(PoRequest((1, 1), (Opaque(b"\xc1"),))),
        "po_request:updates:nested:msgpack",
    ),
    (
        "nested_bad_field",
        raw_of(PoRequest((1, 1), (wrap(Update(7, 0, 1, 9, b"")),))),
        "po_request:updates:nested:update:kind",
    ),
    # H4: row i of a pre-prepare is null or signed by replica i.
    (
        "row_signed_by_wrong_replica",
        raw_of(R(PP.msg, rows=(po_aru(2),) + PP_ROWS[1:])),
        "pre_prepare:row_signer",
    ),
    ("row_duplicated", raw_of(R(PP.msg, rows=(PP_ROWS[0], PP_ROWS[0]))), "pre_prepare:row_signer"),
    # H6: distinct signers wherever a quorum is embedded, and bound views.
    (
        "new_leader_proof_duplicate",
        raw_of(new_leader_proof(senders=(1, 2, 1))),
        "new_leader_proof:duplicate_signer",
    ),
    (
        "new_leader_proof_vote_view",
        raw_of(NewLeaderProof(6, (wrap(NewLeader(5)),))),
        "new_leader_proof:vote_view",
    ),
    ("pc_set_duplicate", raw_of(pc_set(prepare_senders=(2, 3, 2))), "pc_set:duplicate_signer"),
    (
        "pc_set_prepare_view",
        raw_of(R(pc_set(), prepares=(wrap(Prepare(9, 4, D), sender=2),))),
        "pc_set:prepare_mismatch",
    ),
    ("ord_cert_duplicate", raw_of(ord_cert(commit_senders=(1, 3, 3))), "ord_cert:duplicate_signer"),
    ("ord_cert_view_not_pp_view", raw_of(ord_cert(view=4)), "ord_cert:pp_mismatch"),
    ("ord_cert_seq_not_pp_seq", raw_of(R(ord_cert(), seq=10)), "ord_cert:pp_mismatch"),
    (
        "ord_cert_commit_view",
        raw_of(R(ord_cert(), commits=(wrap(Commit(9, 4, D)),))),
        "ord_cert:commit_mismatch",
    ),
    ("ord_cert_kind", raw_of(R(ord_cert(), kind=OrdKind.PC_SET)), "ord_cert:kind"),
    ("replayed_seq_not_pp_seq", raw_of(R(replayed(), seq=10)), "replayed:pp_mismatch"),
    ("replayed_pp_from_later_view", raw_of(replayed(view=2)), "replayed:pp_mismatch"),
    (
        "replayed_no_op_with_prepares",
        raw_of(R(replayed(no_op=True), prepares=replayed().prepares)),
        "replayed:no_op_with_prepares",
    ),
    (
        "replayed_duplicate",
        raw_of(R(replayed(), prepares=pc_set(prepare_senders=(2, 3, 2)).prepares)),
        "replayed:duplicate_signer",
    ),
    (
        "replayed_prepare_view",
        raw_of(R(replayed(), prepares=(wrap(Prepare(9, 4, D), sender=2),))),
        "replayed:prepare_mismatch",
    ),
    # Nesting: NESTING_DEPTH_MAX envelopes below the top one decode; one more does not.
    (
        "nesting_at_limit",
        nest_rb_init(NESTING_DEPTH_MAX),
        rb_init_chain_reason(NESTING_DEPTH_MAX - 1, "nested_tag"),
    ),
    (
        "nesting_too_deep",
        nest_rb_init(NESTING_DEPTH_MAX + 1),
        rb_init_chain_reason(NESTING_DEPTH_MAX + 1, "nesting_depth"),
    ),
    # Whole-input checks.
    ("truncated", wrap(GOOD_PREPARE).raw[:-1], "msgpack"),
    ("trailing_byte", wrap(GOOD_PREPARE).raw + b"\x00", "msgpack"),
    ("empty", b"", "msgpack"),
    ("too_large", b"\x00" * (wire.ENVELOPE_BYTES_MAX + 1), "too_large"),
]


@pytest.mark.parametrize(
    ("raw", "reason"), [r[1:] for r in REJECTIONS], ids=[r[0] for r in REJECTIONS]
)
def test_malformed_input_is_rejected_with_its_reason(raw: bytes, reason: str) -> None:
    """Each malformed envelope yields a reason string (no exception) naming what is wrong."""
    result = wire.decode(raw)
    assert isinstance(result, str), f"accepted: {result!r}"
    assert result.startswith(reason), result


@pytest.mark.parametrize("tag", sorted(msgs.REJECTED_TAGS))
def test_rejected_tags_are_refused_whatever_their_fields(tag: int) -> None:
    """A declared-but-unsupported tag (PO_CERT, 29) is refused with its own reason."""
    for body in ([tag], [tag, 1, 2], [tag, 1, 1, D]):
        assert wire.decode(raw_envelope(body)) == msgs.REJECTED_TAGS[tag]
    assert 29 in msgs.REJECTED_TAGS and not set(msgs.REJECTED_TAGS) & set(MESSAGES)


def test_rejection_ids_are_unique() -> None:
    """The rejection table has no duplicate rows that would hide a missing case."""
    ids = [r[0] for r in REJECTIONS]
    assert len(ids) == len(set(ids))


def test_nesting_reason_is_exact_at_the_limit() -> None:
    """The depth limit trips exactly one envelope beyond NESTING_DEPTH_MAX, not earlier."""
    too_deep = wire.decode(nest_rb_init(NESTING_DEPTH_MAX + 1))
    assert too_deep == rb_init_chain_reason(NESTING_DEPTH_MAX + 1, "nesting_depth")
    at_limit = wire.decode(nest_rb_init(NESTING_DEPTH_MAX))
    assert isinstance(at_limit, str) and not at_limit.endswith("nesting_depth")


def test_size_max_is_inclusive() -> None:
    """An input exactly size_max bytes long is decoded; one byte over is refused unread."""
    raw = sample_envelopes()[msgs.T_PRE_PREPARE].raw
    assert isinstance(wire.decode(raw, size_max=len(raw)), Envelope)
    assert wire.decode(raw, size_max=len(raw) - 1) == "too_large"
    assert wire.decode(b"\xc1" * 10, size_max=9) == "too_large"  # refused before unpacking


@pytest.mark.parametrize("raw", [bytearray(b"\x90"), memoryview(b"\x90"), "x", None, 5])
def test_non_bytes_input_is_rejected(raw: Any) -> None:
    """decode accepts only bytes: other buffers and objects are refused, not unpacked."""
    assert wire.decode(raw) == "not_bytes"


def test_envelope_equality_is_by_raw_bytes() -> None:
    """Two envelopes are equal (and hash equal) exactly when their wire bytes are equal."""
    a = wire.decode(wrap(GOOD_PREPARE).raw)
    b = wire.decode(wrap(GOOD_PREPARE).raw)
    c = wire.decode(wrap(GOOD_PREPARE, sender=2).raw)
    assert isinstance(a, Envelope) and isinstance(b, Envelope) and isinstance(c, Envelope)
    assert a == b and hash(a) == hash(b) and a is not b
    assert a != c and a.msg == c.msg
    assert a.leaf_bytes == (1).to_bytes(4, "big") + a.body
