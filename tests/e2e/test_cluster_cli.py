"""End-to-end: ``bin/cluster`` runs real daemons and load generators, reports, and stops them.

Each test runs ``bin/cluster`` as a user would, watches /proc for the process
groups it starts (every one of its processes carries its run folder in its
command line or belongs to the group of one that does), and afterwards checks
that none of them, none of their /dev/shm segments and not the run folder is
left. A finalizer kills whatever a failing test left.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.e2e.conftest import private_conf, readme_block

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "bin" / "cluster"


def _proc_groups(needle: str) -> set[int]:
    """Process groups of the processes whose command line contains ``needle``."""
    groups = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if needle not in cmd:
                continue
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        groups.add(int(stat[stat.rindex(")") + 2:].split()[2]))
    # never the test's own group (bin/cluster runs in it), nor 0 (killpg(0) is our own group)
    return {g for g in groups if g > 1 and g != os.getpgrp()}


def _alive_in(groups: set[int]) -> list[int]:
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z" and int(fields[2]) in groups:
            alive.append(int(entry.name))
    return alive


class Run:
    """``bin/cluster ARGS`` with its output collected line by line and its groups watched."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([str(CLUSTER), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, stdin=subprocess.DEVNULL)
        self.lines: list[str] = []
        self._q: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.folder: str | None = None
        self.groups: set[int] = set()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._q.put(line.rstrip("\n"))
        self._q.put(None)

    def next_line(self, timeout_s: float) -> str | None:
        line = self._q.get(timeout=timeout_s)
        if line is not None:
            self.lines.append(line)
            m = re.search(r"run folder (/tmp/pcluster-[A-Za-z0-9_]+)$", line)
            if m and self.folder is None:
                self.folder = m.group(1)
        return line

    def watch(self) -> None:
        """Collect the process groups of the processes naming this run's folder (the
        daemons and load generators: each leads its own group)."""
        if self.folder:
            self.groups |= _proc_groups(self.folder)

    def finish(self, timeout_s: float) -> int:
        """Read to the end, watching the groups while it runs; the exit status."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.watch()
            try:
                if self.next_line(0.2) is None:
                    break
            except queue.Empty:
                continue
        return self.proc.wait(max(1.0, deadline - time.monotonic()))

    def kill_all(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        for g in self.groups:
            try:
                os.killpg(g, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def left_behind(self) -> dict[str, Any]:
        time.sleep(0.2)
        return {
            "processes": _alive_in(self.groups),
            "shm": [p.name for g in self.groups for p in Path("/dev/shm").glob(f"prime-r*-{g}-*")],
            "folder": bool(self.folder and Path(self.folder).exists()),
        }

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def run() -> Iterator[Any]:
    made: list[Run] = []

    def make(*args: str) -> Run:
        r = Run(*args)
        made.append(r)
        return r

    yield make
    for r in made:
        r.kill_all()


NOTHING = {"processes": [], "shm": [], "folder": False}


def test_cluster_runs_real_daemons_and_streams_agree(run: Any) -> None:
    r = run("--duration", "4")
    status = r.finish(90)
    out = r.text
    assert status == 0, out
    first = r.lines[0]
    assert "real processes" in first and "Ed25519 signatures on" in first and "N=4" in first, first
    # the run had the daemons' and the load generators' process groups: 4 + 4
    assert len(r.groups) == 8, (r.groups, out)
    rows = [line.split() for line in r.lines if re.match(r"\s+\d+\s+\d+", line)]
    assert [int(row[0]) for row in rows] == [1, 2, 3, 4], out
    hashes = {row[-1] for row in rows}
    assert len(hashes) == 1, out
    total = next(line.split() for line in r.lines if line.strip().startswith("total"))
    assert int(total[1]) > 0 and float(total[2]) > 0, out
    assert "streams: identical on every replica" in out
    assert re.search(r"CPU over .*engine \(4\).*net \(4\).*workers \(4\)", out), out
    assert "no process, /dev/shm segment or socket file left" in out
    assert r.left_behind() == NOTHING


def test_sigint_mid_run_stops_everything(run: Any) -> None:
    r = run("--duration", "60")
    deadline = time.monotonic() + 60
    progressed = False
    while time.monotonic() < deadline and not progressed:
        r.watch()
        try:
            line = r.next_line(0.2)
        except queue.Empty:
            continue
        assert line is not None, r.text
        m = re.search(r"ordinals \d+\.\.(\d+)", line)
        progressed = bool(m and int(m.group(1)) > 0)
    assert progressed, r.text
    r.watch()
    assert len(r.groups) == 8, r.groups
    r.proc.send_signal(signal.SIGINT)
    status = r.finish(30)
    assert status == 130, r.text
    assert "interrupted by SIGINT; stopping everything it started" in r.text
    assert "no process, /dev/shm segment or socket file left" in r.text
    assert r.left_behind() == NOTHING


def test_a_dead_daemon_stops_the_run_and_is_named(run: Any) -> None:
    r = run("--duration", "60")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(r.groups) < 8:
        r.watch()
        try:
            assert r.next_line(0.2) is not None, r.text
        except queue.Empty:
            pass
    assert len(r.groups) == 8, r.text
    # the daemon of replica 3: the group whose leader runs `bin/prime -i 3`
    victim = None
    for g in r.groups:
        try:
            cmd = Path(f"/proc/{g}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"-i" in cmd and cmd[cmd.index(b"-i") + 1] == b"3" and not any(b"prime.app.load" in c for c in cmd):
            victim = g
    assert victim is not None
    os.killpg(victim, signal.SIGKILL)
    status = r.finish(30)
    assert status == 1, r.text
    assert re.search(r"replica 3's daemon \(pid \d+\) exited with status -9.*; stopping everything", r.text), r.text
    assert "no process, /dev/shm segment or socket file left" in r.text
    assert r.left_behind() == NOTHING


@pytest.mark.parametrize("flags", [["--f", "x"], ["--bogus"], ["-n", "0"], ["--duration", "-1"],
                                   ["--f", "11"], ["--conf", "/nonexistent"], ["--real-crypto"]])
def test_bad_flags_one_line_exit_2(flags: list[str]) -> None:
    done = subprocess.run([str(CLUSTER), *flags], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cluster: "), done.stderr


def test_sim_mode_says_it_is_a_simulation() -> None:
    done = subprocess.run([str(CLUSTER), "--sim", "--duration", "1"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done
    first = done.stdout.splitlines()[0]
    assert "SIMULATION on virtual time" in first and "keyed-hash" in first, first
    assert "checker: agreement, order, validity and liveness hold" in done.stdout


def test_readme_by_hand_section_runs(tmp_path: Path) -> None:
    """The README's "Run a 4-replica cluster by hand" commands, as written, on a private
    configuration (its own port range and socket folder) and key folder."""
    block = readme_block("### Run a 4-replica cluster by hand")
    conf = private_conf(tmp_path)
    keys, logs = tmp_path / "keys", tmp_path / "logs"
    rewrites = [
        ("bin/gen_keys ", f"bin/gen_keys --conf {conf} --out {keys} "),
        ("bin/prime -i $i ", f"bin/prime -i $i --conf {conf} --keys {keys} "),
        ("--duration 10 ", f"--duration 3 --conf {conf} --keys {keys} --json "),
        ("/tmp/prime-logs", str(logs)),
        # the same kill, with each daemon's exit status collected afterwards
        ("kill %1 %2 %3 %4", "pids=$(jobs -p); kill %1 %2 %3 %4; for p in $pids; do wait $p; done"),
    ]
    for old, new in rewrites:
        assert old in block, (old, block)
        block = block.replace(old, new)
    script = f"cd {ROOT}\nset -e\n{block}\necho all-daemons-exited-0\n"
    proc = subprocess.Popen(["bash", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=90)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, (out, err)
    summary = next(json.loads(line) for line in out.splitlines() if line.startswith("{"))
    assert summary["updates"] > 0 and summary["throughput_ups"] > 0, summary
    assert "all-daemons-exited-0" in out
    assert all((logs / f"prime-{i}.log").exists() for i in range(1, 5))
