"""Erasure coding of PO-Requests for reconciliation (docs/protocol.md section 2.4, Q21), over zfec.

A request's wire bytes are split into ``f+1`` equal data blocks (zero padded)
and coded into ``N`` parts, any ``f+1`` of which rebuild it. Part ``i``
(0-based) is replica ``i+1``'s to send, so a designated sender ships one part
of size about ``1/(f+1)`` of the request instead of the whole request.

Decoding trusts nothing: part sizes are checked against the claimed request
length before zfec sees them, and the result is only a candidate: the caller
compares its digest with the certified one (hardening H3/H9). ``decode``
returns None on any inconsistency, never raises.
"""

from __future__ import annotations

from collections.abc import Mapping

import zfec

REQUEST_BYTES_MAX = 1 << 20


def part_size(request_bytes: int, data_parts: int) -> int:
    """Bytes in each part of a ``request_bytes`` request split into ``data_parts`` blocks."""
    return -(-request_bytes // data_parts)


def encode(raw: bytes, *, data_parts: int, total_parts: int) -> list[bytes]:
    """All ``total_parts`` parts of ``raw``; any ``data_parts`` of them rebuild it."""
    assert 1 <= data_parts <= total_parts <= 256
    assert 0 < len(raw) <= REQUEST_BYTES_MAX
    size = part_size(len(raw), data_parts)
    padded = raw.ljust(size * data_parts, b"\0")
    blocks = tuple(padded[i * size : (i + 1) * size] for i in range(data_parts))
    return [bytes(p) for p in zfec.Encoder(data_parts, total_parts).encode(blocks)]


def decode(
    parts: Mapping[int, bytes], *, request_bytes: int, data_parts: int, total_parts: int
) -> bytes | None:
    """Rebuild from exactly ``data_parts`` parts (index -> bytes), or None if they
    cannot be a coding of a ``request_bytes`` request."""
    if len(parts) != data_parts or not 0 < request_bytes <= REQUEST_BYTES_MAX:
        return None
    size = part_size(request_bytes, data_parts)
    indices = sorted(parts)
    if indices[0] < 0 or indices[-1] >= total_parts:
        return None
    if any(len(parts[i]) != size for i in indices):
        return None
    try:
        blocks = zfec.Decoder(data_parts, total_parts).decode([parts[i] for i in indices], indices)
    except Exception:  # zfec raises on inconsistent input; to us that is just "no"
        return None
    return b"".join(bytes(b) for b in blocks)[:request_bytes]
