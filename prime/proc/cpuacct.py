"""CPU time of processes, read from /proc (Linux): what ``perf/idle_bench.py`` and the
idle e2e test (``tests/e2e/test_idle.py``) measure a replica with.

Two figures per process, both summed over all its threads (the net process has a
ZeroMQ I/O thread, the engine a threshold thread):

* ``cpu_ticks_s``: ``utime + stime`` of ``/proc/PID/stat`` (fields 14 and 15), in
  seconds; the kernel's tick-sampled accounting (10 ms ticks), which also keeps the
  time of threads that have exited;
* ``run_s``: the first field of ``/proc/PID/task/TID/schedstat`` (nanoseconds on a
  CPU), summed over the live threads: exact, so a process that wakes for 50 us
  twenty times a second shows 1 ms/s, not a tick now and then.

Only the CPU time our own processes were given counts, not wall time: a busy
machine slows them down but does not add to these figures.
"""

from __future__ import annotations

import os
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_ticks_s(pid: int) -> float | None:
    """utime + stime of ``pid`` (every thread, dead ones too), in seconds; None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def run_s(pid: int) -> float | None:
    """Nanoseconds ``pid``'s live threads spent on a CPU (schedstat), in seconds; None if
    gone or the kernel does not keep it."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tids:
        try:
            total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # a thread that just exited
    return total / 1e9


def group_pids(pgid: int) -> list[int]:
    """Every process whose process group is ``pgid`` (a daemon's supervisor starts one:
    its children and the ``multiprocessing`` resource tracker are in it)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        if int(fields[2]) == pgid:  # field 5: pgrp
            out.append(int(entry))
    return sorted(out)


def sample(pids_by_kind: dict[str, list[int]]) -> dict[str, dict[str, float]]:
    """Per kind, the summed ``cpu_ticks_s`` and ``run_s`` of its processes now."""
    out: dict[str, dict[str, float]] = {}
    for kind, pids in pids_by_kind.items():
        ticks = run = 0.0
        for pid in pids:
            ticks += cpu_ticks_s(pid) or 0.0
            run += run_s(pid) or 0.0
        out[kind] = {"cpu_ticks_s": ticks, "run_s": run}
    return out


def delta(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """``after - before`` per kind and figure."""
    return {kind: {k: after[kind][k] - before.get(kind, {}).get(k, 0.0) for k in after[kind]} for kind in after}
