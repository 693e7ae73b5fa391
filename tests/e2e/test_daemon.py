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
    for i in list(c.daemons):
        if c.daemons[i].poll() is None:
            c.daemons[i].send_signal(signal.SIGTERM)
    for i in list(c.daemons):
        code = c.daemons[i].wait(5)
        assert code == 0 or c.daemons[i] is None, (i, code)
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
