"""What every process of one replica is started with (built by the supervisor
before it forks, so children inherit rings, doorbells and loaded keys)."""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from prime.config import Config
from prime.crypto.keys import ServerKeys
from prime.proc.ring import Ring


def write_durably(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that a power loss leaves either the old or the
    new content, and once this returns, the new: the data synced before the rename,
    the directory (which holds the rename) synced after it. The restart records rely
    on it (docs/hardening.md I11-3): acks leave only once their record is on disk."""
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class ReplicaContext:
    cfg: Config
    me: int
    keys: ServerKeys
    keys_dir: Path
    incarnation: int
    recovering: bool  # an earlier incarnation of this replica ran here (its state is lost)
    acked_record: tuple[tuple[int, int, int, int], ...] | None  # what it persisted (A.Persist), if readable
    ipc_path: Path
    to_engine: list[Ring]  # engine inputs: one from the net process (workers = 0) or one per worker
    to_workers: list[Ring]  # net -> worker i (empty when workers = 0)
    to_net: Ring  # engine -> net

    @property
    def workers(self) -> int:
        return len(self.to_workers)


@dataclass
class ProcStats:
    """Counters of one process, written as one JSON line to stderr every
    ``[logging] stats_interval_ms`` (and on demand): ``stats {...}``.

    A line falls due every interval and is written at the process's first wake-up
    after that; a process with nothing else to wake for sleeps until the line is a
    whole interval overdue (``wake_in_s``), so an idle one writes a line every one to
    two intervals, mostly at wake-ups it has anyway, and never wakes every interval
    for the line alone (docs/design.md section 10)."""

    replica: int
    proc: str
    interval_s: float
    counts: Counter[str] = field(default_factory=Counter)
    _next_s: float = 0.0

    def due(self, now_s: float) -> bool:
        return self.interval_s > 0 and now_s >= self._next_s

    def wake_in_s(self, now_s: float) -> float | None:
        """How long the process may sleep before it must wake to write the line (the
        line a whole interval overdue); None when lines are off."""
        if self.interval_s <= 0:
            return None
        return max(0.0, self._next_s + self.interval_s - now_s)

    def emit(self, now_s: float, extra: dict[str, object] | None = None) -> None:
        self._next_s = now_s + self.interval_s
        usage = resource.getrusage(resource.RUSAGE_SELF)
        line: dict[str, object] = {
            "replica": self.replica,
            "proc": self.proc,
            "pid": os.getpid(),
            "t": round(time.time(), 3),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
            "counts": dict(sorted(self.counts.items())),
        }
        if extra:
            line.update(extra)
        sys.stderr.write("stats " + json.dumps(line, separators=(",", ":")) + "\n")
        sys.stderr.flush()
