"""The local socket between a daemon and its one application (ZeroMQ ipc).

The daemon binds a ROUTER at ``<client_ipc_dir>/prime-<id>.sock``; the
application connects a DEALER. Every message is multipart, its first frame one
kind byte:

    app -> daemon   HELLO   b"H" msgpack [version, token or None]
                    SUBMIT  b"U" raw_envelope...   (signed UPDATEs, one per frame)
                    PING    b"P"                   (optional; the daemon ignores it)
                    BYE     b"X"
    daemon -> app   WELCOME b"W" msgpack [version, server_id, n, token, next_ordinal]
                    REFUSED b"R" reason (utf-8)
                    DELIVER b"D" head msgpack [[client, inc, seq, kind, payload]...]
                            (head: u64 ordinal, u8 last, big-endian; an ordinal with
                            many updates comes in several parts, last = 1 on the final one)
                    NOTICE  b"T" msgpack ordinal   (state transfer needed up to it)

One application per daemon (as the original): a HELLO while another application
is connected is refused. The daemon learns that an application went away from
ZeroMQ (its connection closed: a send to it fails with EHOSTUNREACH), not from a
timeout, so a busy application that does not read for a while keeps its place.
An application that reconnects with the token of its WELCOME takes its place
back at once. The daemon may send PING (ignored) to probe the connection.
"""

from __future__ import annotations

from pathlib import Path

VERSION = 1
PING_PERIOD_S = 1.0

HELLO = b"H"
SUBMIT = b"U"
PING = b"P"
BYE = b"X"
WELCOME = b"W"
REFUSED = b"R"
DELIVER = b"D"
NOTICE = b"T"


def socket_path(ipc_dir: str | Path, server_id: int) -> Path:
    """Where replica ``server_id``'s application socket lives."""
    return Path(ipc_dir) / f"prime-{server_id}.sock"
