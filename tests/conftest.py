"""Shared pytest hooks: the simulator tests report how much they simulated.

With pytest-xdist each worker counts its own runs and writes them to a file at
the end; the controller adds the files up in the terminal summary.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

SIM_TOTALS: dict[str, float] = {"runs": 0, "virtual_s": 0.0, "seeds": 0}
_DIR = Path(__file__).resolve().parents[1] / ".pytest_cache" / "sim_totals"


def pytest_sessionstart(session: Any) -> None:
    if not hasattr(session.config, "workerinput"):  # controller (or no xdist)
        _DIR.mkdir(parents=True, exist_ok=True)
        for old in _DIR.glob("*.json"):
            old.unlink()
        for old in _ALONE.glob("wanted-*") if _ALONE.exists() else []:
            old.unlink()  # left by a session killed mid-test


def pytest_sessionfinish(session: Any) -> None:
    worker = getattr(session.config, "workerinput", {}).get("workerid", f"main-{os.getpid()}")
    if SIM_TOTALS["runs"]:
        _DIR.mkdir(parents=True, exist_ok=True)
        (_DIR / f"{worker}.json").write_text(json.dumps(SIM_TOTALS))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    totals = {"runs": 0.0, "virtual_s": 0.0, "seeds": 0.0}
    for path in _DIR.glob("*.json") if _DIR.exists() else []:
        for key, value in json.loads(path.read_text()).items():
            totals[key] += value
    if not totals["runs"]:
        totals = dict(SIM_TOTALS)
    if totals["runs"]:
        terminalreporter.write_line(
            f"simulator: {int(totals['runs'])} runs ({int(totals['seeds'])} random seeds), "
            f"{totals['virtual_s']:.0f} simulated seconds"
        )


_ALONE = _DIR.parent / "alone"


@pytest.fixture(autouse=True)
def _alone_or_together(request: Any) -> Iterator[None]:
    """A test marked ``alone`` runs while no other test of this session runs (under
    pytest-xdist the other workers wait): it measures something the machine's other
    load would distort, such as the leader's turnaround against its suspicion bound.
    Every other test holds a shared lock; an ``alone`` test first says it wants the
    machine (the others then start nothing new), then takes the lock exclusively."""
    worker = getattr(request.config, "workerinput", {}).get("workerid")
    if worker is None:  # one process: nothing runs beside it
        yield
        return
    _ALONE.mkdir(parents=True, exist_ok=True)
    alone = request.node.get_closest_marker("alone") is not None
    wanted = _ALONE / f"wanted-{worker}"
    fd = os.open(_ALONE / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if alone:
            wanted.touch()
            fcntl.flock(fd, fcntl.LOCK_EX)
        else:
            while any(p.name != wanted.name for p in _ALONE.glob("wanted-*")):
                time.sleep(0.2)
            fcntl.flock(fd, fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        wanted.unlink(missing_ok=True)
        os.close(fd)
