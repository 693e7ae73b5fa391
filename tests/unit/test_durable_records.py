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
    engine = SimpleNamespace(acked_path=tmp_path / "prime-1.acked", replica=replica,
                             stats=SimpleNamespace(counts=Counter()))
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
