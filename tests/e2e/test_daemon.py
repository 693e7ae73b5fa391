"""End-to-end: real ``bin/prime`` daemons on loopback, with applications.

Every test's processes run in their own process groups and are killed in a
finalizer even when the test fails; each test then checks that no process,
/dev/shm segment or socket file was left behind.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from typing import Any, Iterator

import pytest

from tests.e2e.daemons import LocalCluster, compare_streams

pytestmark = pytest.mark.e2e


@pytest.fixture
def cluster() -> Iterator[Any]:
    made: list[LocalCluster] = []

    def make(**kwargs: Any) -> LocalCluster:
        c = LocalCluster(**kwargs)
        made.append(c)
        return c

    yield make
    for c in made:
        left = c.close()
        c.remove()
        assert left == {"processes": [], "shm": []}, f"left behind: {left}"


def _stop_all_cleanly(c: LocalCluster) -> None:
    """SIGTERM every daemon: each exits 0 within a second, leaving nothing behind."""
    t0 = time.monotonic()
    running = [i for i, d in c.daemons.items() if d.poll() is None]
    for i in running:
        c.daemons[i].send_signal(signal.SIGTERM)
    for i in running:
        assert c.daemons[i].wait(5) == 0, i
    c.wait_gone(2.0)
    assert time.monotonic() - t0 < 2.0
    assert c.sockets_left() == []
    assert c.shm_left() == []


def _exactly_once(results: list[dict[str, Any]]) -> None:
    """Every update each client submitted is in every stream once (stamps of the
    reference stream: the replica that saw the most)."""
    for r in results:
        assert r["duplicates"] == 0, r["replica"]
        assert r["own_delivered"] == r["submitted"], (r["replica"], r["own_delivered"], r["submitted"])
    ref = max(results, key=lambda r: len(r["stamps"]))
    seen = Counter((s[0], s[1]) for s in ref["stamps"])
    for r in results:
        assert seen[(r["client"], r["incarnation"])] == r["submitted"], r["replica"]


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_n4_orders_client_signed_updates_identically(cluster: Any, workers: int) -> None:
    """N=4, four applications submitting client-signed 300-byte updates: every update
    is delivered exactly once, and every replica's stream is the same."""
    count = 2500 if workers == 1 else 500
    c = cluster(workers=workers)
    c.start_all()
    loads = [c.load(i, inflight=64, count=count, duration=120, linger=1.5, grace=30) for i in range(1, 5)]
    results = [c.result(e, 180) for e in loads]
    _exactly_once(results)
    assert sum(r["own_delivered"] for r in results) == 4 * count
    shared = compare_streams(results)
    assert shared > 10
    _stop_all_cleanly(c)


@pytest.mark.parametrize("child", ["worker0", "engine"])
def test_a_dead_child_stops_its_daemon_with_one_line(cluster: Any, child: str) -> None:
    """A child killed with SIGKILL: its daemon exits 1 naming the child and how it died,
    leaves no process, segment or socket; the other replicas keep ordering."""
    c = cluster()
    c.start_all()
    load = c.load(1, inflight=8, duration=6, linger=0.5)
    before = c.wait_ordinal(1, 5, 20)
    kids = c.children(4)
    import os

    os.kill(kids[child], signal.SIGKILL)
    assert c.daemons[4].wait(5) == 1
    line = c.wait_log(4, f"child {child}", 2)
    assert f"child {child} (pid {kids[child]}) was killed by SIGKILL; stopping the replica" in line
    assert c.wait_daemon_gone(4) == {"processes": [], "shm": [], "sockets": []}
    c.wait_ordinal(1, before + 20, 20)  # f = 1: three replicas go on
    assert c.result(load, 60)["own_delivered"] > 0
    _stop_all_cleanly(c)


def test_sigterm_and_sigint_leave_nothing(cluster: Any) -> None:
    """SIGINT on one daemon, SIGTERM on the others, under load: each exits 0 within a
    second, and no process, /dev/shm segment or socket file is left."""
    c = cluster(workers=2)
    c.start_all()
    load = c.load(2, inflight=16, duration=3, linger=0.2)
    c.wait_ordinal(2, 10, 20)
    t0 = time.monotonic()
    c.daemons[1].send_signal(signal.SIGINT)
    assert c.daemons[1].wait(5) == 0
    assert time.monotonic() - t0 < 1.0
    assert c.wait_daemon_gone(1, 1.0) == {"processes": [], "shm": [], "sockets": []}
    c.result(load, 60)
    _stop_all_cleanly(c)


def test_one_application_per_daemon_and_reconnect(cluster: Any) -> None:
    """A second application is refused with a clear error; after the first leaves, a
    new one attaches, and one that reconnects with its token keeps its lease."""
    from prime.app.client import Application, Ordinal, Refused

    c = cluster()
    c.start_all()
    first = Application.connect(1, conf=c.conf, keys=c.keys)
    with pytest.raises(Refused, match="another application is attached to replica 1"):
        Application.connect(1, conf=c.conf, keys=c.keys, client_id=c.n + 2)
    first.reconnect()  # same token: accepted at once
    stamp = first.submit(b"hello")
    seen = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and stamp not in seen:
        for item in first.poll(0.2):
            if isinstance(item, Ordinal):
                seen += [e.stamp for e in item.events]
    assert stamp in seen
    first.close()
    second = Application.connect(1, conf=c.conf, keys=c.keys, client_id=c.n + 2)
    stamp2 = second.submit(b"again")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and stamp2 not in seen:
        for item in second.poll(0.2):
            if isinstance(item, Ordinal):
                seen += [e.stamp for e in item.events]
    assert stamp2 in seen
    second.close()
    _stop_all_cleanly(c)
