"""Bounded single-producer/single-consumer rings of bytes in shared memory.

One ring joins two processes of one replica (net -> verifier, verifier ->
engine, engine -> net). It carries records of bytes, never pickles.

Layout of the segment (``multiprocessing.shared_memory``)::

    [0]    tail       u64  bytes ever written (producer owns it)
    [64]   tail_count u64  records ever written (producer)
    [128]  head       u64  bytes ever read (consumer owns it)
    [192]  head_count u64  records ever read (consumer)
    [256]  sleeping   u64  1: the consumer is about to sleep on the doorbell; 2: rung
    [320]  data       capacity bytes, records of [u32 length][payload][pad to 8]

Indices only grow (the data position is ``index % capacity``), so full and empty
never look alike, and each index sits on its own cache line (LMAX Disruptor /
io_uring style). A record that would cross the end of the data area is preceded
by a wrap marker (length ``0xFFFFFFFF``) and starts at the next lap; records are
8-byte aligned so a marker always fits.

The producer writes its records, then publishes ``tail`` once per batch; the
consumer reads everything up to ``tail`` in one batch, then publishes ``head``.
The ring is bounded twice, in bytes (``capacity``) and in records
(``records_max``): ``put`` returns False when a record does not fit, and the
caller decides between back-pressure and drop-and-count. Memory never grows.

Wake-up: the consumer sleeps on a doorbell (an eventfd, see ``perf/wakeup_bench.py``
for why not a pipe or a ZeroMQ socket) only after announcing it in ``sleeping``,
and the producer rings only when that flag is set, so a busy ring costs no system
call. The announce/check pairs on both sides (store one index, load the other)
need a full memory fence, or x86 may reorder the store after the load and lose a
wake-up (Dekker); ``_fence`` gets one from an uncontended lock (a locked
instruction). Indices are words of a memoryview cast to ``"Q"``, whose item
stores and loads copy 8 aligned bytes at once, so an index is never seen torn.
(With ``struct.pack_into``, which zeroes its target before writing the value, a
consumer did see tails of 0 and read stale slots: ``tests/unit/test_ring.py``
caught it about one run in four.)
"""

from __future__ import annotations

import os
import struct
import threading
from multiprocessing import shared_memory

_TAIL, _TAIL_COUNT, _HEAD, _HEAD_COUNT, _SLEEPING = 0, 64, 128, 192, 256
HEADER_BYTES = 320
_WRAP = 0xFFFFFFFF
# Index slots (8-byte words) in the header, read and written through a memoryview
# cast to "Q": an item store or load is one 8-byte memcpy, a single instruction on
# x86-64. (struct.pack_into first zeroes its target and then writes the value, so a
# reader can see a published index as 0 in between: it did, see the docstring.)
_W_TAIL, _W_TAIL_COUNT, _W_HEAD, _W_HEAD_COUNT, _W_SLEEPING = (o // 8 for o in (_TAIL, _TAIL_COUNT, _HEAD, _HEAD_COUNT, _SLEEPING))
_U32 = struct.Struct("I")  # record lengths: written before the tail that publishes them
_FENCE = threading.Lock()


def _fence() -> None:
    """A full memory barrier (lock cmpxchg), for the Dekker-style sleep handshake."""
    _FENCE.acquire()
    _FENCE.release()


def _align8(n: int) -> int:
    return (n + 7) & ~7


class Doorbell:
    """An eventfd: ``ring`` adds one, ``drain`` empties it, ``fileno`` is pollable.

    Created before the fork, inherited by both ends."""

    def __init__(self) -> None:
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.rings = 0  # write system calls made (the wake-ups actually paid for)

    def fileno(self) -> int:
        return self.fd

    def ring(self) -> None:
        self.rings += 1
        try:
            os.eventfd_write(self.fd, 1)
        except BlockingIOError:  # counter saturated: the consumer is awake anyway
            pass

    def drain(self) -> None:
        try:
            os.eventfd_read(self.fd)
        except BlockingIOError:
            pass

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


class Ring:
    """One SPSC ring. Create it in the parent (``Ring.create``) before forking;
    the producer process calls only ``put``/``flush``, the consumer only
    ``get_batch``/``sleep_ready``/``awake``."""

    def __init__(self, shm: shared_memory.SharedMemory, capacity: int, records_max: int,
                 record_bytes_max: int, bell: Doorbell) -> None:
        self.shm = shm
        self.buf = shm.buf
        self.idx = shm.buf[:HEADER_BYTES].cast("Q")
        self.capacity = capacity
        self.records_max = records_max
        self.record_bytes_max = record_bytes_max
        self.bell = bell
        self.name = shm.name
        # producer-local state
        self._tail = 0
        self._tail_count = 0
        self._head_seen = 0
        self._head_count_seen = 0
        self._unpublished = False
        # consumer-local state
        self._head = 0
        self._head_count = 0

    @classmethod
    def create(cls, name: str, capacity: int, records_max: int, record_bytes_max: int) -> Ring:
        assert capacity % 8 == 0 and capacity >= 2 * _align8(record_bytes_max + 4)
        shm = shared_memory.SharedMemory(name=name, create=True, size=HEADER_BYTES + capacity)
        shm.buf[:HEADER_BYTES] = bytes(HEADER_BYTES)  # before any other process maps it
        return cls(shm, capacity, records_max, record_bytes_max, Doorbell())

    def release(self) -> None:
        """Drop our views of the segment, so it can be closed."""
        self.idx.release()

    def unlink(self) -> None:
        """Remove the segment (the creator, at shutdown)."""
        try:
            self.shm.unlink()
        except FileNotFoundError:
            pass

    # ------------------------------------------------------------ producer

    def put(self, data: bytes | bytearray | memoryview) -> bool:
        """Append one record (not yet visible: call ``flush``). False if full or too big."""
        n = len(data)
        if n > self.record_bytes_max:
            return False
        need = _align8(4 + n)
        cap = self.capacity
        pos = self._tail % cap
        skip = cap - pos if cap - pos < need else 0
        if (self._tail + skip + need - self._head_seen > cap
                or self._tail_count - self._head_count_seen >= self.records_max):
            idx = self.idx
            self._head_seen = idx[_W_HEAD]
            self._head_count_seen = idx[_W_HEAD_COUNT]
            if (self._tail + skip + need - self._head_seen > cap
                    or self._tail_count - self._head_count_seen >= self.records_max):
                return False
        buf = self.buf
        if skip:
            _U32.pack_into(buf, HEADER_BYTES + pos, _WRAP)
            self._tail += skip
            pos = 0
        start = HEADER_BYTES + pos
        _U32.pack_into(buf, start, n)
        buf[start + 4:start + 4 + n] = data
        self._tail += need
        self._tail_count += 1
        self._unpublished = True
        return True

    def flush(self) -> None:
        """Publish the records put so far and wake the consumer if it sleeps."""
        if not self._unpublished:
            return
        self._unpublished = False
        idx = self.idx
        idx[_W_TAIL_COUNT] = self._tail_count
        idx[_W_TAIL] = self._tail
        _fence()
        if idx[_W_SLEEPING] == 1:
            idx[_W_SLEEPING] = 2  # rung: later batches need not ring again
            self.bell.ring()

    def free_records(self) -> int:
        """Records the producer may still put (a lower bound, reloading the head)."""
        self._head_count_seen = self.idx[_W_HEAD_COUNT]
        return self.records_max - (self._tail_count - self._head_count_seen)

    # ------------------------------------------------------------ consumer

    def get_batch(self, count_max: int) -> list[bytes]:
        """Up to ``count_max`` records, oldest first (copied out, so the slots free up)."""
        buf = self.buf
        tail = self.idx[_W_TAIL]
        head = self._head
        if head == tail:
            return []
        out: list[bytes] = []
        cap = self.capacity
        while head != tail and len(out) < count_max:
            pos = head % cap
            n = _U32.unpack_from(buf, HEADER_BYTES + pos)[0]
            if n == _WRAP:
                head += cap - pos
                continue
            start = HEADER_BYTES + pos + 4
            out.append(bytes(buf[start:start + n]))
            head += _align8(4 + n)
        self._head = head
        self._head_count += len(out)
        self.idx[_W_HEAD_COUNT] = self._head_count
        self.idx[_W_HEAD] = head
        return out

    def pending(self) -> bool:
        return self.idx[_W_TAIL] != self._head

    def sleep_ready(self) -> bool:
        """Announce a sleep; True if the ring is still empty (then poll the bell),
        False if records arrived meanwhile (do not sleep)."""
        idx = self.idx
        idx[_W_SLEEPING] = 1
        _fence()
        if idx[_W_TAIL] != self._head:
            idx[_W_SLEEPING] = 0
            return False
        return True

    def awake(self) -> None:
        """After the poll returned (bell rung or timeout): clear the flag, drain the bell."""
        self.idx[_W_SLEEPING] = 0
        self.bell.drain()
