"""msgpack codec for ``prime.msgs``: shape checks, never an exception.

Trust is added in stages (docs/design.md section 4): bytes, then ``decode`` (shape: this module),
then a verifier (signature: ``prime.auth``), then the core (meaning). ``decode``
returns an ``Envelope`` or a short reason such as ``"po_ack:count"``; it never
raises and never allocates without bound: msgpack is called with explicit
``max_*_len`` limits, maps, strings and extension types are refused, and every
count or size taken from the wire is checked against a named bound.

Envelope layout (a msgpack array)::

    [sender, mt_num, mt_index, sig, [path digests...], body]

``body`` is the msgpack encoding of ``[tag, *fields]``; it is carried as a bin
so the exact signed bytes survive re-encoding.

Only the canonical encoding is accepted: the bytes our encoder produces (msgpack's
shortest form of every header and integer). msgpack has many encodings of one value
(a fixarray or an array16 header, 5 as a fixint or a uint32, ...), and the signature
covers only the signer id and the body, so without this rule anyone relaying a
message could re-frame it into different bytes that still verify; digests and
equality over those bytes would then split one message into two (issue 11 item 7:
a re-encoded PO-Request split its acks between two digests, a relayed re-encoded
REPLAY looked like a second REPLAY). With it, an envelope's ``raw`` is a function
of what was signed and of the signature, at every nesting level. The Merkle leaf covers the
signer id and the body (``leaf_bytes``); ``mt_num``/``mt_index``/``path`` say
where the leaf sits in its signed batch, ``mt_num == 1`` meaning a direct
signature over the leaf.

``decode_verified`` (end of this module) is not a stage: it rebuilds, checking nothing,
bytes that ``decode`` already accepted in another process of the same replica. Only the
engine calls it, on records from its verify workers; never on network bytes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import msgpack

from prime import msgs
from prime.msgs import MESSAGES, REJECTED_TAGS, BadField, Message

ENVELOPE_BYTES_MAX = 1 << 20  # hard ceiling; configs set a lower per-socket limit
MT_NUM_MAX = 256
PATH_DIGESTS_MAX = 8  # log2(MT_NUM_MAX)
SENDER_MAX = msgs.U32


@dataclass(frozen=True, slots=True, eq=False)
class Envelope:
    """A signed message as it travels: signer, Merkle position, signature, body.

    ``raw`` is the exact wire encoding and defines equality, so two envelopes are
    the same message exactly when their bytes are the same. ``decode`` accepts only
    the canonical encoding, so ``raw`` cannot differ for one signed body, signature
    and Merkle position (a signer that signs one body twice still makes two).
    """

    sender: int
    mt_num: int
    mt_index: int
    sig: bytes
    path: tuple[bytes, ...]
    body: bytes
    msg: Any  # the decoded Message
    raw: bytes

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Envelope) and self.raw == other.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    @property
    def leaf_bytes(self) -> bytes:
        return leaf_bytes(self.sender, self.body)

    def __repr__(self) -> str:
        return f"Envelope(from={self.sender}, {self.msg!r})"


def leaf_bytes(sender: int, body: bytes) -> bytes:
    """What a signature covers for one message: its signer and its body."""
    return sender.to_bytes(4, "big") + body


_packers = threading.local()  # one reusable Packer per thread (a Packer is not thread-safe)


def _canonical(value: Any, raw: bytes) -> bool:
    """Whether ``raw`` is exactly what our encoder makes of the decoded ``value``.

    ``value`` holds only tuples, ints, bools, None and bytes (``_unpack`` refuses
    the rest), and msgpack packs each of those in its one shortest form, so this
    is true exactly for the encoding ``encode_body`` / ``make_envelope`` produce."""
    try:
        packer = _packers.packer
    except AttributeError:
        packer = _packers.packer = msgpack.Packer(use_bin_type=True)
    try:
        return bool(packer.pack(value) == raw)
    except Exception:  # a value msgpack cannot pack back is not one we would send
        packer.reset()
        return False


def encode_body(msg: Message) -> bytes:
    """``[tag, *fields]`` as msgpack bytes."""
    out: list[Any] = [msg.TAG]
    for name, spec in msg.SPECS:
        out.append(spec.encode(getattr(msg, name)))
    return msgpack.packb(out, use_bin_type=True)


def make_envelope(
    *,
    sender: int,
    body: bytes,
    msg: Message,
    sig: bytes,
    mt_num: int = 1,
    mt_index: int = 1,
    path: tuple[bytes, ...] = (),
) -> Envelope:
    """Wrap a signed body. Used by signers; the result carries its wire bytes."""
    raw = msgpack.packb([sender, mt_num, mt_index, sig, list(path), body], use_bin_type=True)
    return Envelope(sender, mt_num, mt_index, sig, path, body, msg, raw)


def _array_items_max() -> int:
    """The longest msgpack array a valid envelope or body holds, from the specs.

    msgpack preallocates every array it opens from the count in its header, and
    it keeps up to 1024 arrays open at once, so a few KiB of nested array headers
    would otherwise reserve 1024 x 4096 x 8 B = 32 MiB. Capping counts at what the
    schema needs bounds one unpack at 1024 x ARRAY_ITEMS_MAX x 8 B (8 MiB today).
    """
    out = [6, PATH_DIGESTS_MAX]  # the envelope, its Merkle path

    def walk(spec: msgs.Spec) -> None:
        if isinstance(spec, msgs.TupleOf):
            out.append(spec.count_max)
            walk(spec.item)
        elif isinstance(spec, msgs.Optional):
            walk(spec.inner)
        elif isinstance(spec, msgs.Record):
            record_specs = msgs._record_specs(spec.cls)
            out.append(len(record_specs))
            for s in record_specs:
                walk(s)
        elif isinstance(spec, msgs.PoSeqSpec):
            out.append(2)

    for cls in MESSAGES.values():
        out.append(len(cls.SPECS) + 1)  # [tag, *fields]
        for _, spec in cls.SPECS:
            walk(spec)
    return max(out)


ARRAY_ITEMS_MAX = _array_items_max()


def _unpack(raw: bytes) -> Any:
    n = len(raw)
    return msgpack.unpackb(
        raw,
        use_list=False,
        raw=False,
        strict_map_key=True,
        max_bin_len=n,
        max_str_len=0,
        max_array_len=min(n, ARRAY_ITEMS_MAX),
        max_map_len=0,
        max_ext_len=0,
    )


def decode(raw: bytes, *, size_max: int = ENVELOPE_BYTES_MAX) -> Envelope | str:
    """Decode one envelope from the network. Returns an Envelope or a reason."""
    if type(raw) is not bytes:
        return "not_bytes"
    if len(raw) > size_max:
        return "too_large"
    return decode_envelope_at_depth(raw, 0)


def decode_envelope_at_depth(raw: bytes, depth: int) -> Envelope | str:
    """Decode an envelope that is ``depth`` levels deep inside another message."""
    try:
        outer = _unpack(raw)
    except Exception:  # msgpack raises many types on garbage; all mean "malformed"
        return "msgpack"
    if type(outer) is not tuple or len(outer) != 6:
        return "envelope"
    if not _canonical(outer, raw):
        return "envelope:noncanonical"
    sender, mt_num, mt_index, sig, path, body = outer
    if type(sender) is not int or not 1 <= sender <= SENDER_MAX:
        return "sender"
    if type(mt_num) is not int or not 1 <= mt_num <= MT_NUM_MAX or mt_num & (mt_num - 1):
        return "mt_num"  # H9: a power of two in 1..256
    if type(mt_index) is not int or not 1 <= mt_index <= mt_num:
        return "mt_index"  # H9
    if type(sig) is not bytes or not 1 <= len(sig) <= msgs.SIGNATURE_BYTES_MAX:
        return "sig"
    if type(path) is not tuple or len(path) != mt_num.bit_length() - 1:
        return "path"
    for d in path:
        if type(d) is not bytes or len(d) != msgs.DIGEST_SIZE:
            return "path"
    if type(body) is not bytes:
        return "body"
    msg = decode_body(body, depth)
    if isinstance(msg, str):
        return msg
    return Envelope(sender, mt_num, mt_index, sig, path, body, msg, raw)


def decode_body(body: bytes, depth: int = 0) -> Message | str:
    """Decode ``[tag, *fields]`` into its message class, checking every field."""
    try:
        arr = _unpack(body)
    except Exception:
        return "body_msgpack"
    if type(arr) is not tuple or not arr or type(arr[0]) is not int:
        return "body"
    if not _canonical(arr, body):
        return "body:noncanonical"
    tag = arr[0]
    if tag in REJECTED_TAGS:
        return REJECTED_TAGS[tag]
    cls = MESSAGES.get(tag)
    if cls is None:
        return "tag"
    specs = cls.SPECS
    if len(arr) != len(specs) + 1:
        return f"{cls.NAME}:field_count"
    values = []
    for (name, spec), value in zip(specs, arr[1:]):
        try:
            values.append(spec.check(value, depth))
        except BadField as e:
            return f"{cls.NAME}:{name}:{e}"
        except RecursionError:
            return f"{cls.NAME}:{name}:depth"
    msg = cls(*values)
    reason = msg.invalid()
    if reason is not None:
        return f"{cls.NAME}:{reason}"
    return msg


# ---------------------------------------------------------------------------
# Trusted re-decoding (never of network bytes).


def decode_verified(raw: bytes) -> Envelope | str:
    """TRUSTED INPUT ONLY: rebuild the envelope of bytes that ``decode`` already
    accepted in another process of this replica. Never call it on bytes from the network.

    The engine gets every peer and client record from a verify worker (or from the
    net process's inline ``RecordVerifier.check``), which ran ``decode`` on exactly
    these bytes and verified their signatures; decoding them a second time was a
    third of the engine's busy time. This builds the same ``Envelope`` and message
    objects as ``decode`` (same classes and field values, embedded envelopes as
    ``Envelope`` objects with their raw bytes, records as their dataclasses) but
    checks nothing: no canonical re-encoding, no bounds or types, no ``invalid()``
    rules, no size or nesting limits, no msgpack allocation limits. Bytes that never
    passed ``decode`` may come out as an out-of-range, inconsistent message that the
    core was promised it would never see. A short reason (``"verified:..."``) is
    returned only when the bytes do not even have the shape of an envelope, so a bug
    upstream is counted instead of killing the caller; it is no validation.
    """
    try:
        return decode_verified_at_depth(raw, 0)
    except Exception as e:  # only a caller's bug gets here (bytes ``decode`` never saw)
        return "verified:" + type(e).__name__


def decode_verified_at_depth(raw: bytes, depth: int) -> Envelope:
    """``decode_verified`` of an envelope ``depth`` levels deep; raises on bytes of the
    wrong shape. TRUSTED INPUT ONLY (see ``decode_verified``)."""
    sender, mt_num, mt_index, sig, path, body = msgpack.unpackb(raw, use_list=False)
    arr = msgpack.unpackb(body, use_list=False)
    cls = MESSAGES[arr[0]]
    builds = cls.BUILDS
    if builds:
        values = list(arr[1:])
        for i, spec in builds:
            values[i] = spec.build(values[i], depth)
        msg = cls(*values)
    else:
        msg = cls(*arr[1:])
    return Envelope(sender, mt_num, mt_index, sig, path, body, msg, raw)


msgs._build_envelope = decode_verified_at_depth  # Nested.build's decoder (see prime.msgs)
