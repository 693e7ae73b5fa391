"""Shared pytest hooks: the simulator tests report how much they simulated.

With pytest-xdist each worker counts its own runs and writes them to a file at
the end; the controller adds the files up in the terminal summary.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

SIM_TOTALS: dict[str, float] = {"runs": 0, "virtual_s": 0.0, "seeds": 0}
_DIR = Path(__file__).resolve().parents[1] / ".pytest_cache" / "sim_totals"


def pytest_sessionstart(session: Any) -> None:
    if not hasattr(session.config, "workerinput"):  # controller (or no xdist)
        _DIR.mkdir(parents=True, exist_ok=True)
        for old in _DIR.glob("*.json"):
            old.unlink()


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

