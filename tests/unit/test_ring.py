"""The shared-memory SPSC ring: order, bounds, wrap-around, and a real second process."""

from __future__ import annotations

import os
import random
import select
import struct
import time

import pytest

from prime.proc.ring import Ring


@pytest.fixture
def ring():
    made = []

    def make(capacity: int = 4096, records: int = 64, record_max: int = 1000) -> Ring:
        r = Ring.create(f"prime-test-{os.getpid()}-{len(made)}", capacity, records, record_max)
        made.append(r)
        return r

    yield make
    for r in made:
        r.bell.close()
        r.release()
        r.unlink()
        r.shm.close()


def test_records_come_out_in_order_across_wraps(ring) -> None:
    r = ring(capacity=4096, records=1000, record_max=1000)
    rng = random.Random(7)
    sent, got = [], []
    for _ in range(2000):
        for _ in range(rng.randrange(1, 6)):
            data = rng.randbytes(rng.randrange(0, 1000))
            if r.put(data):
                sent.append(data)
        r.flush()
        got.extend(r.get_batch(rng.randrange(1, 8)))
    got.extend(r.get_batch(10_000))
    assert got == sent and len(sent) > 3000


def test_full_ring_refuses_and_never_overwrites(ring) -> None:
    r = ring(capacity=4096, records=1000, record_max=1000)
    accepted = 0
    while r.put(b"x" * 500):
        accepted += 1
    r.flush()
    assert accepted == 4096 // 504  # 4-byte length + 500, padded to 8
    assert not r.put(b"y" * 61)  # 64 bytes left: 4 + 61 padded is 72
    assert r.put(b"y" * 60)
    r.flush()
    assert r.get_batch(100) == [b"x" * 500] * accepted + [b"y" * 60]


def test_record_count_bound_and_size_bound(ring) -> None:
    r = ring(capacity=4096, records=3, record_max=100)
    assert r.put(b"a") and r.put(b"b") and r.put(b"c")
    assert not r.put(b"d")  # records_max
    assert not r.put(b"z" * 101)  # record_bytes_max
    r.flush()
    assert r.get_batch(10) == [b"a", b"b", b"c"]
    assert r.put(b"d")


def test_sleeping_consumer_is_woken_once_idle_producer_costs_no_syscall(ring) -> None:
    r = ring()
    r.put(b"1")
    r.flush()
    assert r.bell.rings == 0  # consumer never said it sleeps
    r.get_batch(10)
    assert r.sleep_ready()  # empty: may sleep
    r.put(b"2")
    r.flush()
    r.put(b"3")
    r.flush()
    assert r.bell.rings == 1  # rung once for the sleeper, not per batch
    assert select.select([r.bell.fileno()], [], [], 0)[0]
    r.awake()
    assert r.get_batch(10) == [b"2", b"3"]
    assert not select.select([r.bell.fileno()], [], [], 0)[0]


def test_two_processes_100k_records(ring) -> None:
    """A forked producer and this consumer, sleeping on the doorbell: nothing lost,
    reordered or duplicated."""
    r = ring(capacity=1 << 16, records=256, record_max=2000)
    total = 100_000
    pid = os.fork()
    if pid == 0:
        try:
            rng = random.Random(3)
            i = 0
            give_up = time.monotonic() + 30
            while i < total and time.monotonic() < give_up:
                data = struct.pack("<I", i) + bytes(rng.randrange(0, 1500))
                if r.put(data):
                    i += 1
                    if rng.random() < 0.2:
                        r.flush()
                else:
                    r.flush()
            r.flush()
        finally:
            os._exit(0)
    expect = 0
    while expect < total:
        batch = r.get_batch(100)
        if not batch:
            if r.sleep_ready():
                select.select([r.bell.fileno()], [], [], 1.0)
            r.awake()
            continue
        for rec in batch:
            assert struct.unpack_from("<I", rec)[0] == expect
            expect += 1
    os.waitpid(pid, 0)
