"""Run a simulation and fail with the replay command if the checker objects."""

from __future__ import annotations

from typing import Any

from prime.sim.cluster import SimCluster, SimConfig
from tests.conftest import SIM_TOTALS


def run(cfg: SimConfig, *, seed_run: bool = False) -> tuple[dict[str, Any], SimCluster]:
    cluster = SimCluster(cfg)
    summary = cluster.run()
    SIM_TOTALS["runs"] += 1
    SIM_TOTALS["seeds"] += 1 if seed_run else 0
    SIM_TOTALS["virtual_s"] += summary["virtual_s"]
    return summary, cluster


def run_ok(cfg: SimConfig, *, seed_run: bool = False) -> tuple[dict[str, Any], SimCluster]:
    summary, cluster = run(cfg, seed_run=seed_run)
    assert summary["ok"], f"{summary['violations']}\nreplay: {summary['replay']}"
    return summary, cluster
