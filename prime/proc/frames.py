"""Record kinds on the rings between a replica's processes (bytes, never pickles).

The first byte names the kind; peer ids fit one byte (N <= 31).

    net -> verifier -> engine   PEER    b"P" via class raw_envelope  (class: prime.net.traffic, read once by the net)
                                CLIENT  b"C" raw_envelope        (an UPDATE from the app)
                                OVERRUN b"O" u64 ordinal         (the app was told it fell behind: net -> engine,
                                                                  which introduces our state-transfer marker)
    engine -> net               SEND    b"S" dest raw_envelope
                                BCAST   b"B" raw_envelope
                                DELIVER b"D" u64 ordinal, u8 last, msgpack [[client, inc, seq, kind, payload]...]
                                NOTICE  b"T" msgpack ordinal     (state transfer needed up to it)

A verifier passes a verified record on unchanged, so the engine gets the very
bytes the net process read. An ordinal's DELIVER may span several records
(``last`` false on all but the final one), so one record stays under the ring's
record bound however many updates the ordinal carries.
"""

from __future__ import annotations

import struct

DELIVER_HEAD = struct.Struct(">QB")  # ordinal, last (1 on an ordinal's final record)

PEER = 0x50  # "P"
CLIENT = 0x43  # "C"
OVERRUN = 0x4F  # "O"
SEND = 0x53  # "S"
BCAST = 0x42  # "B"
DELIVER = 0x44  # "D"
NOTICE = 0x54  # "T"

B_PEER = b"P"
B_CLIENT = b"C"
B_OVERRUN = b"O"
B_SEND = b"S"
B_BCAST = b"B"
B_DELIVER = b"D"
B_NOTICE = b"T"
PEER_HEADER = 3  # b"P", via, traffic class: the envelope starts here
