"""Non-canonical encodings (issue 11 item 7): only the bytes our encoder produces decode,
and what is compared or digested is what was signed, not how it was framed.

msgpack has several encodings of one value (a fixarray or an array32 header, 5 as a
fixint or a uint64), and a signature covers only the signer id and the body. A relay
could re-frame a message into other bytes that still verify: a re-encoded PO-Request
split the acks between two digests (its originator stalled for good), a relayed
re-encoded REPLAY looked like the new leader equivocating (every new leader suspected).
"""

from __future__ import annotations

import msgpack
import pytest

from prime import msgs, wire
from prime.core.preorder import request_digest
from prime.sim.byzantine import reencode
from prime.wire import Envelope
from tests.harness import Harness
from tests.unit.test_viewchange_rules import MEMBERS_123, _replay, preinstall, report
from tests.unit.test_wire import SIG, sample_envelopes, wrap


def _widened_body(env: Envelope) -> bytes:
    """The body with its top-level integers widened to uint64 (a signer could sign that)."""
    arr = msgpack.unpackb(env.body, use_list=False)
    items = (
        b"\xcf" + v.to_bytes(8, "big") if type(v) is int else msgpack.packb(v, use_bin_type=True)
        for v in arr
    )
    return bytes([0x90 + len(arr)]) + b"".join(items)


@pytest.mark.parametrize("how", ["array", "int"])
@pytest.mark.parametrize("tag", sorted(sample_envelopes()))
def test_reencoded_envelope_refused(tag: int, how: str) -> None:
    """Every message type, re-framed (outer header widened, or every envelope integer
    widened) with its body and signature untouched, is refused, not decoded."""
    env = sample_envelopes()[tag]
    raw = reencode(env.raw, how)
    assert raw != env.raw
    assert msgpack.unpackb(raw, use_list=False) == msgpack.unpackb(env.raw, use_list=False)
    assert wire.decode(raw) == "envelope:noncanonical"


def test_reencoded_body_refused() -> None:
    """A body with a widened integer (a signer could sign it: it is its own message) is
    refused too, so one message content has one body."""
    env = sample_envelopes()[msgs.T_PREPARE]
    body = _widened_body(env)
    assert msgpack.unpackb(body, use_list=False) == msgpack.unpackb(env.body, use_list=False)
    raw = msgpack.packb([1, 1, 1, SIG, [], body], use_bin_type=True)
    assert wire.decode(raw) == "body:noncanonical"


def test_reencoded_nested_envelope_refused() -> None:
    """A pre-prepare whose embedded PO_ARU row was re-framed: the outer message is
    canonical, the nested one is not."""
    pp = sample_envelopes()[msgs.T_PRE_PREPARE].msg
    rows = list(pp.rows)
    row = next(r for r in rows if r is not None)
    i = rows.index(row)
    arr = list(msgpack.unpackb(wire.encode_body(pp), use_list=False))
    row_list = list(arr[4])
    row_list[i] = reencode(row.raw, "array")
    arr[4] = tuple(row_list)
    body = msgpack.packb(arr, use_bin_type=True)
    raw = msgpack.packb([1, 1, 1, SIG, [], body], use_bin_type=True)
    reason = wire.decode(raw)
    assert isinstance(reason, str) and reason.endswith("envelope:noncanonical"), reason


@pytest.mark.parametrize("tag", sorted(sample_envelopes()))
def test_encoder_output_accepted_and_reproduced(tag: int) -> None:
    """What our encoder produces decodes, and re-encoding the result gives the same bytes."""
    env = sample_envelopes()[tag]
    decoded = wire.decode(env.raw)
    assert isinstance(decoded, Envelope)
    again = wire.make_envelope(
        sender=decoded.sender,
        body=wire.encode_body(decoded.msg),
        msg=decoded.msg,
        sig=decoded.sig,
        mt_num=decoded.mt_num,
        mt_index=decoded.mt_index,
        path=decoded.path,
    )
    assert again.raw == env.raw


def _relayed(env: Envelope, how: str = "array") -> Envelope | None:
    """What a replica gets when a relay sends ``env`` re-encoded: the codec's verdict."""
    decoded = wire.decode(reencode(env.raw, how))
    return decoded if isinstance(decoded, Envelope) else None


def _acked_digests(h: Harness) -> list[bytes]:
    return [p.digest for m in h.sent_messages(msgs.PoAck) for p in m.parts if p.originator == 1]


def test_reencoded_po_request_does_not_split_the_acks() -> None:
    """A relay's re-encoded copy of replica 1's PO-Request reaches replica 4 first. Replica
    4 must ack the digest of the request replica 1 signed and sent (the one the others
    ack), not a second digest of the same request: with the acks split, neither digest
    gathers 2f+k+1 and replica 1's requests stall for good."""
    h = Harness(me=4)
    original = h.po_request(1, 1, [h.update(5, 1)])
    copy = _relayed(original)
    if copy is not None:  # the codec let it through: it arrives first
        assert copy.msg == original.msg and h.verifier.verify(copy)
        h.feed(copy, via=3)
    h.feed(original, via=1)
    h.advance(50_000)
    assert _acked_digests(h) == [request_digest(original)]


def test_relayed_reencoded_replay_is_not_evidence() -> None:
    """View 2's leader sends one REPLAY; a faulty replica relays it re-encoded. No second
    REPLAY exists, so the leader must not be suspected (before: every correct new leader
    was suspected at once, over a thousand views pre-installed and none completed)."""
    h = Harness(me=4, threshold=True)
    preinstall(h)
    replay = _replay(h, MEMBERS_123)
    h.feed(replay)
    copy = _relayed(replay, "int")
    if copy is not None:
        h.feed(copy, via=3)
    h.flush()
    assert h.sent_messages(msgs.NewLeader) == []
    assert h.replica.stats.equivocations_seen == 0 and not h.replica.vc.replay_conflict_seen


def test_replay_signed_twice_is_not_evidence() -> None:
    """The leader's one REPLAY content under two signatures (direct, and at a Merkle
    position: both valid, canonical, different bytes) is one REPLAY, not two: conflicts
    are judged on content (what REPLAY_PREPAREs vote on), not on bytes."""
    h = Harness(me=4, threshold=True)
    preinstall(h)
    replay = _replay(h, MEMBERS_123)
    other = msgs.TatUb(2, 1)
    bodies = [replay.body, wire.encode_body(other)]
    framed = h.signers[2].sign_batch([replay.msg, other], bodies, direct=False)[0]
    assert framed.raw != replay.raw and framed.body == replay.body and h.verifier.verify(framed)
    h.feed(replay)
    h.feed(framed)
    h.flush()
    assert h.sent_messages(msgs.NewLeader) == []
    assert h.replica.stats.equivocations_seen == 0


def test_rb_counts_one_payload_however_it_was_signed() -> None:
    """Replica 1's REPORT signed directly and again in a Merkle batch is one payload:
    readies carrying either framing count together (counted per byte string, two
    readies for one and one for the other never delivered)."""
    h = Harness(me=4)
    preinstall(h)
    direct = report(h, 1)
    other = msgs.TatUb(2, 1)
    bodies = [direct.body, wire.encode_body(other)]
    framed = h.signers[1].sign_batch([direct.msg, other], bodies, direct=False)[0]
    assert framed.raw != direct.raw and h.verifier.verify(framed)
    h.feed(h.sign(1, msgs.RbReady(direct)))
    h.feed(h.sign(2, msgs.RbReady(direct)))
    h.feed(h.sign(3, msgs.RbReady(framed)))
    assert h.replica.vc.reports.get(1) == direct.msg


def test_wrap_helper_is_canonical() -> None:
    """The fuzz and wire tests' seeds are canonical (else they would test refusals only)."""
    env = wrap(msgs.TatUb(2, 1), mt_num=4, mt_index=3)
    assert isinstance(wire.decode(env.raw), Envelope)
