"""prime/core stays pure: no I/O, clocks, threads, processes or global randomness."""

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "prime" / "core"
FORBIDDEN_MODULES = {
    "time", "os", "socket", "threading", "multiprocessing", "asyncio", "zmq",
    "random", "secrets", "subprocess", "select", "selectors", "signal", "datetime",
}


def _imports(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_core_imports_nothing_impure() -> None:
    """No module of prime/core imports a module that does I/O, reads clocks or draws randomness."""
    files = sorted(CORE.glob("*.py"))
    assert len(files) >= 8, "the core's modules were found"
    for path in files:
        bad = _imports(ast.parse(path.read_text())) & FORBIDDEN_MODULES
        assert not bad, f"{path.name} imports {sorted(bad)}"


def test_checker_of_purity_bites() -> None:
    """The import scan itself detects a forbidden import (so the test above can fail)."""
    tree = ast.parse("import time\nfrom socket import socket\nfrom os import path as p\n")
    assert _imports(tree) & FORBIDDEN_MODULES == {"time", "socket", "os"}


def test_core_does_not_import_drivers() -> None:
    """The core never imports the simulator, the runtime or the network layer."""
    for path in sorted(CORE.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith(("prime.sim", "prime.proc", "prime.net")), (
                    f"{path.name} imports {node.module}"
                )
