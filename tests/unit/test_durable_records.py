"""The restart records must survive a power loss (docs/hardening.md I11-3).

Two files decide what a restarted replica may ack: ``prime-ID.incarnation`` (is this
a restart at all: ``recovering``) and ``prime-ID.acked`` (``A.Persist``: which
incarnations an earlier life acked). Both are written to a temporary file and renamed
over the old one. A rename is a change to the *directory*: until the directory is
synced, a power loss may leave the old name pointing at the old file (or none), and
the restarted replica then reads an older record than the one its acks relied on
(and acks a second version), or finds no incarnation file and does not know it
restarted at all (no amnesia rule). So: data synced before the rename, the
directory synced after it, for both files."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from prime.core import actions as A
from prime.proc.engine import Engine
from prime.proc.supervisor import pick_incarnation, read_acked


def _trace(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """Record, in order, fsyncs (of a file: its inode; of a directory: 'dir') and renames."""
    events: list[tuple[str, Any]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        st = os.fstat(fd)
        events.append(("fsync", "dir" if stat.S_ISDIR(st.st_mode) else st.st_ino))
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        events.append(("replace", os.stat(src).st_ino))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


def _durable(events: list[tuple[str, Any]]) -> bool:
    """The file renamed into place was synced before, and the directory after."""
    renames = [i for i, e in enumerate(events) if e[0] == "replace"]
    if len(renames) != 1:
        return False
    i = renames[0]
    ino = events[i][1]
    return ("fsync", ino) in events[:i] and ("fsync", "dir") in events[i + 1:]


def test_both_restart_records_are_synced_file_then_directory(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    events = _trace(monkeypatch)
    record = ((0, 0, 0, 0), (5, 40, 0, 0), (7, 3, 0, 0), (0, 0, 0, 0), (5, 1, 0, 0))
    Engine.persist(SimpleNamespace(acked_path=tmp_path / "prime-1.acked"), A.Persist(record))  # type: ignore[arg-type]
    acked_ok, acked_events = _durable(events), list(events)
    events.clear()
    pick_incarnation(tmp_path, 1)
    incarnation_ok, incarnation_events = _durable(events), list(events)
    assert read_acked(tmp_path, 1, 4) == record
    assert acked_ok and incarnation_ok, {"acked": acked_events, "incarnation": incarnation_events}


def test_a_clean_stop_writes_the_exact_record_durably(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine's SIGTERM path (``Engine.clean_stop``) writes the core's exact record
    (what it acked, no reservation beyond) the same durable way."""
    from collections import Counter

    from prime.core.params import Params
    from prime.core.replica import Replica

    replica = Replica(Params(f=1, k=0), 1)
    replica.po.acked_hi[2], replica.po.reserved[2] = (3, 40), (3, 72)  # acked 40, reserved 72
    from prime.proc.engine import RecordWriter

    engine = SimpleNamespace(acked_path=tmp_path / "prime-1.acked", replica=replica,
                             stats=SimpleNamespace(counts=Counter()),
                             records=RecordWriter(tmp_path / "prime-1.acked"))
    engine.persist = lambda action: Engine.persist(engine, action)  # type: ignore[arg-type]
    events = _trace(monkeypatch)
    Engine.clean_stop(engine)  # type: ignore[arg-type]
    assert _durable(events), events
    record = read_acked(tmp_path, 1, 4)
    assert record is not None and record[2] == (3, 40, 0, 0), record


def test_a_record_of_the_earlier_format_is_read_as_whole_incarnations(tmp_path: Path) -> None:
    """A file written before the reservations (per originator the highest incarnation
    acked) still bounds the gate: every sequence number of those incarnations. Anything
    else malformed is no record at all (the core's conservative fallback)."""
    from prime.core.preorder import SEQ_ANY

    (tmp_path / "prime-1.acked").write_text("[0, 5, 7, 0, 5]")
    assert read_acked(tmp_path, 1, 4) == ((0, SEQ_ANY, 0, 0), (5, SEQ_ANY, 0, 0), (7, SEQ_ANY, 0, 0),
                                          (0, SEQ_ANY, 0, 0), (5, SEQ_ANY, 0, 0))
    for bad in ("[[1, 2, 3]] ", "[0, 5, 7, 0]", "[[0,0,0,-1],[0,0,0,0],[0,0,0,0],[0,0,0,0],[0,0,0,0]]", "{}"):
        (tmp_path / "prime-1.acked").write_text(bad)
        assert read_acked(tmp_path, 1, 4) is None, bad


def test_only_our_acks_wait_for_the_record_and_the_engine_does_not(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine writes the record on a thread of its own (``RecordWriter``): while the
    disk syncs it, what does not depend on it leaves at once (a pre-prepare, another
    replica's ack forwarded) and the engine's ``perform`` returns; our own PO_ACKs that
    the core emitted after the record wait for it, and leave in their order once it is
    on disk. Inline, two fsyncs held every action of the engine for 8 to 26 ms on the
    review machine (far more under other processes' writes)."""
    import threading
    from collections import Counter, deque

    from prime import msgs
    from prime.core.params import Params
    from prime.core.replica import Replica
    from prime.proc import engine as E
    from prime.proc import frames as F
    from tests.harness import Harness

    gate = threading.Event()
    writes: list[str] = []

    def slow_write(path: Path, text: str) -> None:  # a disk that takes its time
        assert gate.wait(10)
        writes.append(text)

    monkeypatch.setattr(E, "write_durably", slow_write)
    h = Harness(me=1)
    own_ack = h.sign(1, msgs.PoAck((msgs.AckPart(2, (1, 1), b"d" * 32),)))
    own_ack2 = h.sign(1, msgs.PoAck((msgs.AckPart(3, (1, 1), b"e" * 32),)))
    others_ack = h.sign(2, msgs.PoAck((msgs.AckPart(3, (1, 1), b"e" * 32),)))
    prepare = h.sign(1, msgs.Prepare(5, 1, b"p" * 32))
    record = ((0, 0, 0, 0), (1, 40, 0, 0), (1, 40, 0, 0), (1, 40, 0, 0), (0, 0, 0, 0))
    sent: list[bytes] = []
    replica = Replica(Params(f=1, k=0), 1)
    engine = SimpleNamespace(
        me=1, replica=replica, backlog=deque(), held_acks=deque(), record_needed=0,
        records=E.RecordWriter(tmp_path / "prime-1.acked"), stats=SimpleNamespace(counts=Counter()),
        out=SimpleNamespace(put=lambda rec: sent.append(rec) or True, flush=lambda: None),
    )
    for name in ("perform", "flush", "own_ack", "release_acks"):
        setattr(engine, name, getattr(E.Engine, name).__get__(engine))

    def emit(*actions: Any) -> None:
        replica.take_actions = lambda: list(actions)  # type: ignore[method-assign]
        engine.perform()

    def bodies() -> list[bytes]:
        return [rec[1:] if rec[0] == F.BCAST else rec[2:] for rec in sent]

    emit(A.Broadcast(own_ack))  # no record asked for: it goes
    emit(A.Persist(record), A.Broadcast(own_ack2), A.Send(2, others_ack), A.Broadcast(prepare))
    assert bodies() == [own_ack.raw, others_ack.raw, prepare.raw]  # perform returned: not blocked
    assert [rec for _, rec in engine.held_acks] == [F.B_BCAST + own_ack2.raw]
    assert not engine.records.poll()  # still writing: still held
    gate.set()
    for _ in range(200):
        if engine.records.poll():
            break
        threading.Event().wait(0.01)
    engine.release_acks()
    assert bodies() == [own_ack.raw, others_ack.raw, prepare.raw, own_ack2.raw]
    assert len(writes) == 1 and not engine.held_acks
    engine.records.close()
