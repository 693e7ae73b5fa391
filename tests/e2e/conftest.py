"""Shared by the end-to-end tests: real daemons on loopback, always cleaned up."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from prime.proc.localcluster import ROOT, LocalCluster, _free_base_port


@pytest.fixture
def cluster() -> Iterator[Any]:
    """``cluster(**kwargs)`` starts a LocalCluster; every one is closed after the test,
    which fails if a process or shared-memory segment was left behind."""
    made: list[LocalCluster] = []

    def make(**kwargs: Any) -> LocalCluster:
        c = LocalCluster(**kwargs)
        made.append(c)
        return c

    yield make
    for c in made:
        left = c.close()
        c.remove()
        assert left == {"processes": [], "shm": []}, f"left behind: {left}"


def readme_block(heading: str) -> str:
    """The first code block under README heading ``heading``, as written."""
    readme = (ROOT / "README.md").read_text()
    return readme.split(heading, 1)[1].split("```\n", 2)[1]


def private_conf(folder: Path, n: int = 4) -> Path:
    """conf/def.toml with its own free port range and socket folder, beside a copy of
    address.config, so README commands run as written without touching the defaults."""
    conf = folder / "def.toml"
    text = (ROOT / "conf" / "def.toml").read_text()
    text = re.sub(r"(?m)^base_port = \d+", f"base_port = {_free_base_port(n)}", text)
    text = re.sub(r'(?m)^client_ipc_dir = ".*"', f'client_ipc_dir = "{folder}/ipc"', text)
    conf.write_text(text)
    (folder / "address.config").write_text((ROOT / "conf" / "address.config").read_text())
    return conf
