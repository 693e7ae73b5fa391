"""``bin/client``: the pipelined load generator for a running daemon.

It needs the multiprocess runtime (prime/proc), which is not built yet; until
then it says so and exits 2. ``bin/cluster`` runs the same closed-loop load
against a simulated cluster.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="client",
        description="Submit updates to the local Prime daemon with N in flight and report "
        "throughput and latency.",
    )
    p.add_argument("-n", "--inflight", type=int, default=64, help="updates in flight (default 64)")
    p.add_argument("-i", "--id", type=int, default=1, help="the daemon's server id (default 1)")
    p.parse_args(argv)
    print("client: the multiprocess runtime (prime/proc) is not built yet; "
          "use bin/cluster for a simulated cluster", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
