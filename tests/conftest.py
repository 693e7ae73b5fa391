"""Shared pytest hooks: the simulator tests report how much they simulated."""

from __future__ import annotations

from typing import Any

SIM_TOTALS: dict[str, float] = {"runs": 0, "virtual_s": 0.0, "seeds": 0}


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if SIM_TOTALS["runs"]:
        terminalreporter.write_line(
            f"simulator: {int(SIM_TOTALS['runs'])} runs ({int(SIM_TOTALS['seeds'])} random seeds), "
            f"{SIM_TOTALS['virtual_s']:.0f} simulated seconds"
        )
