"""``wire.decode_verified``: the engine's rebuild of bytes a verify worker already decoded.

It must build exactly what ``wire.decode`` builds (same classes, same field values,
embedded envelopes as ``Envelope`` objects with their bytes, records as their
dataclasses, PoSeq pairs as tuples) for every message type, and it must stay off every
path that reads network bytes, because it checks nothing.

``Envelope.__eq__`` compares only ``raw``, and a message's ``==`` compares nested
envelopes by ``raw`` too, so ``same`` below walks both objects field by field and
compares types as well as values.
"""

from __future__ import annotations

import dataclasses
import re
import types
from collections import Counter
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prime import msgs, wire
from prime.msgs import (
    ACK_PARTS_MAX,
    MESSAGES,
    SERVERS_MAX,
    U64,
    UPDATES_PER_REQUEST_MAX,
    AckPart,
    PoAck,
    PoRequest,
    Prepare,
    PrePrepare,
    RbReady,
    Update,
    UpdateKind,
)
from prime.proc import frames as F
from prime.proc.engine import Engine
from prime.sim.cluster import SimCluster, SimConfig
from prime.wire import Envelope
from tests.unit.test_wire import (
    SIG,
    digest,
    envelopes,
    pc_set,
    po_aru,
    raw_of,
    sample_envelopes,
    wrap,
)

ROOT = Path(__file__).resolve().parents[2]


def same(a: Any, b: Any, where: str = "") -> None:
    """Assert ``a`` and ``b`` are the same decoded value: same types at every level, equal
    leaves, and every embedded envelope equal in every field, not only in ``raw``."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, Envelope):
        for name in ("sender", "mt_num", "mt_index", "sig", "path", "body", "raw"):
            same(getattr(a, name), getattr(b, name), f"{where}.{name}")
        same(a.msg, b.msg, f"{where}.msg")
    elif dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
        assert a == b, where
    elif isinstance(a, tuple):
        assert len(a) == len(b), f"{where}: {len(a)} != {len(b)} items"
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def check_same_as_decode(raw: bytes) -> Envelope:
    checked = wire.decode(raw)
    assert isinstance(checked, Envelope), checked
    rebuilt = wire.decode_verified(raw)
    assert isinstance(rebuilt, Envelope), rebuilt
    same(checked, rebuilt, wire.MESSAGES[checked.msg.TAG].NAME)
    return rebuilt


def names_inside(env: Envelope, out: Counter[str]) -> Counter[str]:
    """Names of ``env``'s message and of every message embedded in it, at any depth."""
    out[env.msg.NAME] += 1

    def walk(value: Any) -> None:
        if isinstance(value, Envelope):
            names_inside(value, out)
        elif isinstance(value, tuple):
            for v in value:
                walk(v)

    for name, _ in env.msg.SPECS:
        walk(getattr(env.msg, name))
    return out


# ---------------------------------------------------------------------------
# The comparison itself can fail where == would not.


def test_same_sees_differences_that_eq_hides() -> None:
    """``same`` fails on a list for a tuple, a plain tuple for a record and a nested
    envelope whose decoded message differs under identical bytes: the three ways a
    rebuild could go wrong that ``==`` on envelopes would not show."""
    env = sample_envelopes()[msgs.T_PO_ACK]
    part = env.msg.parts[0]
    as_list = dataclasses.replace(part, po=list(part.po))
    with pytest.raises(AssertionError, match="tuple != list"):
        same(part, as_list)
    bare = dataclasses.replace(env.msg, parts=(tuple(dataclasses.astuple(part)),) + env.msg.parts[1:])
    with pytest.raises(AssertionError, match="tuple != AckPart"):
        same(bare, env.msg)
    pp = sample_envelopes()[msgs.T_PRE_PREPARE]
    row = pp.msg.rows[0]
    forged_row = Envelope(
        row.sender, row.mt_num, row.mt_index, row.sig, row.path, row.body,
        dataclasses.replace(row.msg, num=row.msg.num + 1), row.raw,
    )
    forged = Envelope(
        pp.sender, pp.mt_num, pp.mt_index, pp.sig, pp.path, pp.body,
        dataclasses.replace(pp.msg, rows=(forged_row,) + pp.msg.rows[1:]), pp.raw,
    )
    assert forged == pp and forged.msg == pp.msg  # what == alone would accept
    with pytest.raises(AssertionError, match=r"rows\[0\]\.msg\.num"):
        same(pp, forged)


# ---------------------------------------------------------------------------
# Equal to decode for every message type.


def test_every_message_class_declares_what_it_converts() -> None:
    """Each message's BUILDS lists exactly its fields that are not used as msgpack made
    them (embedded envelopes and records, alone, optional or in tuples)."""
    def converts(spec: msgs.Spec) -> bool:
        if isinstance(spec, msgs.TupleOf):
            return converts(spec.item)
        if isinstance(spec, msgs.Optional):
            return converts(spec.inner)
        return isinstance(spec, (msgs.Nested, msgs.Record))

    for cls in MESSAGES.values():
        expected = [i for i, (_, spec) in enumerate(cls.SPECS) if converts(spec)]
        assert [i for i, _ in cls.BUILDS] == expected, cls.NAME


@pytest.mark.parametrize("tag", sorted(MESSAGES), ids=lambda t: MESSAGES[t].NAME)
def test_sample_of_every_type_rebuilds_as_decode(tag: int) -> None:
    """The hand-made instance of every type (PO-Request with updates, PO_ACK records,
    matrices with null rows, PC_SET, REPORT inside RB_*, ORD_CERT, REPLAYED, PO_FETCH, ...)."""
    env = sample_envelopes()[tag]
    rebuilt = check_same_as_decode(env.raw)
    assert rebuilt == env and rebuilt.msg == env.msg  # and equal to what the sender built


@pytest.mark.parametrize("tag", sorted(MESSAGES), ids=lambda t: MESSAGES[t].NAME)
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_random_valid_instance_rebuilds_as_decode(tag: int, data: st.DataObject) -> None:
    """Spec-derived random valid instances (every Merkle position, optional rows absent
    or present, nested envelopes at depth) rebuild as decode makes them."""
    check_same_as_decode(data.draw(envelopes(MESSAGES[tag])).raw)


def test_largest_and_deepest_rebuild_as_decode() -> None:
    """Messages at the count bounds, and the deepest legitimate nesting
    (RB_READY > PC_SET > PRE_PREPARE > PO_ARU)."""
    big = [
        PoAck(parts=(AckPart(originator=SERVERS_MAX, po=(U64, U64), digest=digest(1)),) * ACK_PARTS_MAX),
        PoRequest(
            po=(0, 1),
            updates=tuple(
                wrap(Update(client=100 + i, incarnation=1, seq=i, kind=UpdateKind.APP, payload=b"u" * 300), sender=100 + i)
                for i in range(UPDATES_PER_REQUEST_MAX)
            ),
        ),
        PrePrepare(seq=5, view=1, sent_us=U64, rows=tuple(po_aru(i, SERVERS_MAX) for i in range(1, SERVERS_MAX + 1))),
    ]
    for msg in big:
        check_same_as_decode(wrap(msg, sender=3, mt_num=256, mt_index=200).raw)
    deep = check_same_as_decode(wrap(RbReady(payload=wrap(pc_set(), sender=2)), sender=4).raw)
    assert isinstance(deep.msg.payload.msg.pre_prepare.msg.rows[0], Envelope)


def test_simulated_traffic_rebuilds_as_decode() -> None:
    """Every distinct envelope a simulated N=6 cluster delivers while its leader crashes
    (view change: REPORT and PC_SET inside RB_*, VC_*, REPLAY*), a replica restarts
    (catch-up: CATCHUP_REQUEST, ORD_CERT, PO_FETCH) and 2% of messages are lost
    (RECON), with clients' 300-byte signed updates inside PO-Requests. Replica 3 sends
    its prepare certificates as PC_SETs whatever its execution point (pc-set-overflow):
    correct replicas rarely hold one unexecuted when a view changes."""
    cluster = SimCluster(
        SimConfig(
            f=1, k=1, seed=1, duration=2.0, payload_bytes=300, byz={3: "pc-set-overflow"},
            crash={1: 0.5}, restart={6: 1.2}, loss=0.02,
        )
    )
    seen: dict[bytes, Envelope] = {}
    deliver = cluster._on_message

    def capture(dst: int, via: int, env: Envelope) -> None:
        seen.setdefault(env.raw, env)
        deliver(dst, via, env)

    cluster._on_message = capture  # type: ignore[method-assign]
    assert cluster.run()["ok"]
    names: Counter[str] = Counter()
    client_updates = 0
    for raw, env in seen.items():
        rebuilt = check_same_as_decode(raw)
        assert rebuilt == env and rebuilt.msg == env.msg
        names_inside(rebuilt, names)
        if isinstance(rebuilt.msg, PoRequest):
            client_updates += sum(u.sender > cluster.cfg.n for u in rebuilt.msg.updates)
    expected = set(MESSAGES[t].NAME for t in MESSAGES) - {"client_response", "replayed"}
    assert expected <= set(names), expected - set(names)
    assert client_updates > 100


# ---------------------------------------------------------------------------
# Trusted input only.


def test_decode_verified_checks_nothing() -> None:
    """The hazard the name warns of: bytes decode refuses (a PREPARE for ordinal 0, a
    re-framed envelope) come out as messages. Hence: never on network bytes."""
    raw = raw_of(Prepare(seq=0, view=1, digest=digest(1)))
    assert wire.decode(raw) == "prepare:seq:int"
    assert isinstance(wire.decode_verified(raw), Envelope)
    env = sample_envelopes()[msgs.T_PREPARE]
    arr = msgpack.unpackb(env.raw, use_list=False)
    widened = b"\xdc\x00\x06" + b"".join(msgpack.packb(v, use_bin_type=True) for v in arr)  # array16 header
    assert wire.decode(widened) == "envelope:noncanonical"
    assert isinstance(wire.decode_verified(widened), Envelope)


@pytest.mark.parametrize("raw", [b"", b"\xc1", msgpack.packb([1, 2]), msgpack.packb([1, 1, 1, SIG, [], b"\x92\x63\x01"])])
def test_shapeless_bytes_give_a_reason_not_an_exception(raw: bytes) -> None:
    """A bug upstream (bytes that are not an envelope at all, an unknown tag) is counted
    by the engine, not a crash of the ordering process."""
    reason = wire.decode_verified(raw)
    assert isinstance(reason, str) and reason.startswith("verified:"), reason


def test_only_the_engine_uses_decode_verified() -> None:
    """No module or script that reads network bytes (net process, verify workers,
    simulator, core, transport, bin/) calls the unchecked decoder: only its definition
    and the engine."""
    call = re.compile(r"(?<!def )\bdecode_verified(_at_depth)?\(")
    sources = [*(ROOT / "prime").rglob("*.py"), *(p for p in (ROOT / "bin").iterdir() if p.is_file())]
    users = {
        p.relative_to(ROOT).as_posix()
        for p in sources
        if call.search(p.read_text(encoding="utf-8", errors="replace"))
    }
    assert users == {"prime/wire.py", "prime/proc/engine.py"}, users


def test_engine_steps_the_rebuilt_envelopes() -> None:
    """``Engine.on_records`` turns a PEER record into an Inbound of the rebuilt envelope
    and a CLIENT record into a queued update, both as decode would make them."""
    steps: list[Any] = []
    fake = types.SimpleNamespace(
        replica=types.SimpleNamespace(step=steps.append),
        stats=types.SimpleNamespace(counts=Counter()),
        clients=[],
    )
    pp = sample_envelopes()[msgs.T_PRE_PREPARE]
    update = wrap(Update(client=9, incarnation=1, seq=4, kind=UpdateKind.APP, payload=b"x" * 300), sender=9)
    Engine.on_records(fake, [F.B_PEER + bytes((3, 0)) + pp.raw, F.B_CLIENT + update.raw, F.B_PEER + b"\x03\x00\xc1"])  # type: ignore[arg-type]
    assert len(steps) == 1 and steps[0].via == 3
    same(wire.decode(pp.raw), steps[0].env)
    assert len(fake.clients) == 1
    same(wire.decode(update.raw), fake.clients[0])
    assert fake.stats.counts["decode_after_verify:verified:FormatError"] == 1
