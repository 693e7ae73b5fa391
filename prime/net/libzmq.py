"""Which libzmq this process runs on, and whether a peer can abort it.

libzmq as released (4.3.4, and 4.3.5, the one pyzmq's wheels bundle) asserts
``!_io_error`` in ``stream_engine_base_t::out_event`` and aborts the process
when it answers a ZMTP PING on a connection that has already failed. A peer
makes that happen at will: it fills the pipe of its connection (the net process
stops reading a sender over its budget, and ZeroMQ stops at the RCVHWM), sends a
PING behind its frames and resets the connection; when the net process next
reads that sender, libzmq decodes the buffered PING, tries to answer it and
aborts. One Byzantine replica could so stop the network process of every correct
replica. ``bin/setup`` therefore builds libzmq from source with
``native/libzmq/*.patch`` (``native/libzmq/build``), which returns instead, and
marks the build with an exported ``prime_libzmq_fix_level``; pyzmq is built
against it.

The daemon refuses to start on a libzmq without the mark unless
``[networking] libzmq_unpatched_ok = true`` (for a trusted network only).

``python -m prime.net.libzmq`` prints the path, version and fix level;
``--check`` exits 1 unless the fix is there.
"""

from __future__ import annotations

import ctypes
import os
import sys

FIX_LEVEL_REQUIRED = 1  # native/libzmq's patches: 1 = no abort on a failed link's PING


def loaded_path() -> str | None:
    """The file of the libzmq that pyzmq loaded into this process (Linux)."""
    import zmq

    zmq.zmq_version()  # the backend, and with it libzmq, is loaded by now
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and os.path.basename(fields[5].strip()).startswith("libzmq"):
                    return fields[5].strip()
    except OSError:
        return None
    return None


def fix_level() -> int:
    """The patch level of the loaded libzmq: 0 for a libzmq without our patches."""
    path = loaded_path()
    if path is None:
        return 0
    try:
        marker = ctypes.CDLL(path).prime_libzmq_fix_level  # the already loaded library
    except (OSError, AttributeError):
        return 0
    marker.restype = ctypes.c_int
    marker.argtypes = []
    return int(marker())


def problem() -> str | None:
    """One line saying why this libzmq must not serve a replica, or None."""
    level = fix_level()
    if level >= FIX_LEVEL_REQUIRED:
        return None
    import zmq

    return (
        f"libzmq {zmq.zmq_version()} at {loaded_path() or '(not found)'} lacks Prime's patch "
        "(a peer can abort it: docs/design.md section 9); run bin/setup, which builds "
        "it (native/libzmq/build), or set [networking] libzmq_unpatched_ok = true on a "
        "network only trusted machines reach"
    )


def main(argv: list[str]) -> int:
    import zmq

    level = fix_level()
    if "--check" not in argv:
        print(f"libzmq {zmq.zmq_version()} (pyzmq {zmq.pyzmq_version()}) at {loaded_path()}")
        print(f"fix level {level} (required {FIX_LEVEL_REQUIRED})")
    return 0 if level >= FIX_LEVEL_REQUIRED else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
