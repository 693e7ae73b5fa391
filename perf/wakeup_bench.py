"""Wake-up cost between two processes: eventfd vs pipe vs ZeroMQ doorbell (and busy rings).

Why: a ring's consumer sleeps when its ring is empty, and the producer must wake it
(``prime/proc/ring.py``). This measures, for each mechanism, the round-trip latency
of a ping-pong between two forked processes that each sleep in ``poll`` until woken
(two wake-ups per round trip), and the CPU it costs; and, as the baseline, the same
ping-pong over two shared-memory rings with the ring's own sleep handshake
(eventfd doorbell) and with busy polling (no sleep: what a hot ring costs).

    .venv/bin/python perf/wakeup_bench.py [--rounds 20000]

Writes perf/results/wakeup_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import select
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prime.proc.ring import Ring  # noqa: E402


def _cpu() -> float:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def _child_cpu() -> float:
    u = resource.getrusage(resource.RUSAGE_CHILDREN)
    return u.ru_utime + u.ru_stime


class Eventfd:
    def __init__(self) -> None:
        self.fd = os.eventfd(0, os.EFD_NONBLOCK)

    def ring(self) -> None:
        os.eventfd_write(self.fd, 1)

    def wait(self) -> None:
        p = select.poll()
        p.register(self.fd, select.POLLIN)
        p.poll()
        os.eventfd_read(self.fd)


class Pipe:
    def __init__(self) -> None:
        self.r, self.w = os.pipe()
        os.set_blocking(self.r, False)

    def ring(self) -> None:
        os.write(self.w, b"x")

    def wait(self) -> None:
        p = select.poll()
        p.register(self.r, select.POLLIN)
        p.poll()
        os.read(self.r, 4096)


def _pingpong(make: Callable[[], tuple[Any, Any]], rounds: int) -> dict[str, float]:
    """Parent rings A and waits on B; child waits on A, rings B."""
    a, b = make()
    child0 = _child_cpu()
    pid = os.fork()
    if pid == 0:
        try:
            for _ in range(rounds):
                a.wait()
                b.ring()
        finally:
            os._exit(0)
    lat = []
    cpu0, t0 = _cpu(), time.perf_counter()
    for _ in range(rounds):
        s = time.perf_counter_ns()
        a.ring()
        b.wait()
        lat.append(time.perf_counter_ns() - s)
    wall = time.perf_counter() - t0
    cpu_parent = _cpu() - cpu0
    os.waitpid(pid, 0)
    cpu_child = _child_cpu() - child0
    lat.sort()
    return {
        "round_trip_p50_us": round(lat[len(lat) // 2] / 1000, 2),
        "round_trip_p99_us": round(lat[int(0.99 * (len(lat) - 1))] / 1000, 2),
        "wakeups_per_s": round(2 * rounds / wall),
        "cpu_us_per_wakeup": round((cpu_parent + cpu_child) * 1e6 / (2 * rounds), 2),
    }


def _zmq_pair() -> tuple[Any, Any]:
    import zmq

    class Bell:
        def __init__(self, name: str) -> None:
            self.addr = f"ipc:///tmp/prime-wakeup-{os.getpid()}-{name}"
            self.sock: Any = None

        def _open(self, bind: bool) -> Any:
            if self.sock is None:
                ctx = zmq.Context()
                self.sock = ctx.socket(zmq.PAIR)
                (self.sock.bind if bind else self.sock.connect)(self.addr)
            return self.sock

    class Side:
        def __init__(self, bell: Bell, bind_for_send: bool) -> None:
            self.bell, self.bind = bell, bind_for_send

        def ring(self) -> None:
            self.bell._open(self.bind).send(b"")

        def wait(self) -> None:
            self.bell._open(not self.bind).recv()

    # Sockets are made lazily, after the fork (a ZeroMQ context must not cross one).
    bell_a, bell_b = Bell("a"), Bell("b")
    return Side(bell_a, True), Side(bell_b, False)


def _rings(rounds: int, busy: bool) -> dict[str, float]:
    a = Ring.create(f"prime-wakeup-a-{os.getpid()}", 1 << 16, 1024, 1024)
    b = Ring.create(f"prime-wakeup-b-{os.getpid()}", 1 << 16, 1024, 1024)

    def recv(ring: Ring) -> None:
        while True:
            if ring.get_batch(1):
                return
            if busy:
                continue
            if ring.sleep_ready():
                p = select.poll()
                p.register(ring.bell.fileno(), select.POLLIN)
                p.poll(1000)
            ring.awake()

    try:
        pid = os.fork()
        if pid == 0:
            try:
                for _ in range(rounds):
                    recv(a)
                    b.put(b"pong")
                    b.flush()
            finally:
                os._exit(0)
        lat = []
        cpu0, t0 = _cpu(), time.perf_counter()
        for _ in range(rounds):
            s = time.perf_counter_ns()
            a.put(b"ping")
            a.flush()
            recv(b)
            lat.append(time.perf_counter_ns() - s)
        wall = time.perf_counter() - t0
        cpu_parent = _cpu() - cpu0
        os.waitpid(pid, 0)
        lat.sort()
        return {
            "round_trip_p50_us": round(lat[len(lat) // 2] / 1000, 2),
            "round_trip_p99_us": round(lat[int(0.99 * (len(lat) - 1))] / 1000, 2),
            "round_trips_per_s": round(rounds / wall),
            "parent_cpu_share": round(cpu_parent / wall, 2),
            "bell_rings_parent": a.bell.rings,
        }
    finally:
        for r in (a, b):
            r.bell.close()
            r.release()
            r.unlink()
            r.shm.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20_000)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "wakeup_bench.json"))
    args = parser.parse_args()
    out: dict[str, Any] = {"rounds": args.rounds, "cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0]}
    out["eventfd"] = _pingpong(lambda: (Eventfd(), Eventfd()), args.rounds)
    out["pipe"] = _pingpong(lambda: (Pipe(), Pipe()), args.rounds)
    out["zmq_pair_ipc"] = _pingpong(_zmq_pair, args.rounds)
    out["ring_eventfd_sleep"] = _rings(args.rounds, busy=False)
    out["ring_busy_poll"] = _rings(args.rounds, busy=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
