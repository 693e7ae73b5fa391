"""Real daemons on loopback, for the end-to-end tests (tests/e2e) and perf/daemon_bench.py.

``LocalCluster`` writes a configuration (a free port range, a short ipc folder
under /tmp, test keys from ``bin/gen_keys --seed``), starts ``bin/prime -i ID``
and load generators (``python -m prime.app.load``) each in its own process
group, and ``close()`` kills every group it made with SIGKILL, then reports
what was left behind: processes, /dev/shm segments named after its daemons,
socket files. Tests call ``close()`` from a finalizer, so a failing test leaves
nothing running.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prime.app.kvservice import default_port_base
from prime.config import ports_per_replica

ROOT = Path(__file__).resolve().parents[2]  # the checkout
PRIME = ROOT / "bin" / "prime"
PY = sys.executable
_KEYS_CACHE = Path(tempfile.gettempdir()) / f"prime-e2e-keys-curve-{os.getuid()}"  # keys with CURVE link keys


def _cluster_ports(base: int, n: int) -> list[int]:
    """Every TCP port a local cluster of n replicas on ``base`` listens on: each replica's
    per-sender ports (``prime.net.sockets``) and each KV service's port."""
    span = ports_per_replica(n)
    ports = [base + span * i + j for i in range(1, n + 1) for j in range(span)]
    return ports + [default_port_base(base) + i for i in range(1, n + 1)]


def _free_base_port(n: int) -> int:
    """A base port all of whose cluster ports (``_cluster_ports``) are free now.

    Bases lie below the kernel's ephemeral range, so no outgoing connection of this or
    another test takes one of them as its source port between this check and the
    daemons' bind; each pytest-xdist worker draws from its own slice, so two tests
    running at once never pick overlapping ranges."""
    span = _cluster_ports(0, n)[-1] + 1
    low, high = 10_000, _ephemeral_low() - span
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    if count > 1 and index < count:
        width = (high - low) // count
        low, high = low + index * width, low + (index + 1) * width
    for _ in range(200):
        base = random.randrange(low, max(low + 10, high), 10)
        if all(_port_free(port) for port in _cluster_ports(base, n)):
            return base
    raise RuntimeError(f"no free port range for {n} replicas in {low}..{high}")


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral (outgoing) range; 32768 if unknown."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def _renice(increment: int) -> Callable[[], None]:
    """A preexec_fn adding ``increment`` to the child's nice value; a raise it may not
    make (not root) is skipped, as the child then simply runs at the usual priority."""

    def apply() -> None:
        try:
            os.nice(increment)
        except OSError:
            pass

    return apply


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def make_test_keys(f: int, k: int, clients: int) -> Path:
    """Deterministic test keys, made once per (f, k, clients) and cached in /tmp."""
    out = _KEYS_CACHE / f"f{f}k{k}c{clients}"
    if (out / "manifest.json").exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent))
    conf = tmp / "def.toml"
    conf.write_text(f"[system]\nf = {f}\nk = {k}\nnum_clients = {clients}\n")
    shutil.copy(ROOT / "conf" / "address.config", tmp / "address.config")
    subprocess.run(
        [ROOT / "bin" / "gen_keys", "--conf", conf, "--out", tmp / "keys", "--bits", "1024",
         "--seed", "0e2e", "--clients", str(clients)],
        check=True, capture_output=True,
    )
    try:
        os.rename(tmp / "keys", out)
    except OSError:
        pass  # made meanwhile by another run
    shutil.rmtree(tmp, ignore_errors=True)
    return out


class LocalCluster:
    def __init__(self, f: int = 1, k: int = 0, *, workers: int = 1, settings: dict[str, dict[str, Any]] | None = None,
                 clients: int = 8, base_conf: Path | None = None, keys: Path | None = None,
                 prefix: str = "pe2e-", priority: int = 0) -> None:
        """``base_conf`` (a def.toml; its address.config beside it) is the starting point
        (bin/cluster passes the user's); the cluster's own port range, ipc folder, f, k,
        workers, num_clients and ``settings`` override it. ``keys`` is a folder of keys
        made for this configuration (default: the cached deterministic test keys).

        ``priority`` < 0 starts the daemons at that nice value (if we may: root), above
        other work on the machine: a test that measures timing (suspect-leader's
        turnaround bound) stands for replicas on machines of their own, and must not
        measure the CPU contention of a test running beside it."""
        self.priority = priority
        self.f, self.k = f, k
        self.n = 3 * f + 2 * k + 1
        self.dir = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
        self.ipc = self.dir / "ipc"
        self.logs = self.dir / "log"
        self.keys = keys if keys is not None else make_test_keys(f, k, clients)
        self.base_port = _free_base_port(self.n)
        groups: dict[str, dict[str, Any]] = {}
        if base_conf is not None:
            import tomllib

            with open(base_conf, "rb") as fh:
                groups = {g: dict(v) for g, v in tomllib.load(fh).items() if isinstance(v, dict)}
        own: dict[str, dict[str, Any]] = {
            "system": {"f": f, "k": k, "num_clients": clients},
            "networking": {"base_port": self.base_port, "client_ipc_dir": str(self.ipc), "workers": workers},
            "logging": {"stats_interval_ms": 500},
        }
        for group, values in [*own.items(), *(settings or {}).items()]:
            groups.setdefault(group, {}).update(values)
        groups["system"].pop("n", None)  # N follows f and k
        lines = []
        for group, values in groups.items():
            lines.append(f"[{group}]")
            for key, value in values.items():
                lines.append(f"{key} = {json.dumps(value)}")
        self.conf = self.dir / "def.toml"
        self.conf.write_text("\n".join(lines) + "\n")
        address = (base_conf.parent if base_conf is not None else ROOT / "conf") / "address.config"
        shutil.copy(address, self.dir / "address.config")
        self.daemons: dict[int, subprocess.Popen[bytes]] = {}
        self.loads: list[tuple[subprocess.Popen[bytes], Path]] = []
        self.pgids: set[int] = set()
        self.supervisor_pids: set[int] = set()

    # --------------------------------------------------------------- daemons

    def start(self, i: int) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [str(PRIME), "-i", str(i), "--conf", str(self.conf), "--keys", str(self.keys),
             "--log-dir", str(self.logs)],
            start_new_session=True, stdin=subprocess.DEVNULL,
            preexec_fn=_renice(self.priority) if self.priority else None,
        )
        self.daemons[i] = proc
        self.pgids.add(proc.pid)
        self.supervisor_pids.add(proc.pid)
        return proc

    def start_all(self, ids: list[int] | None = None) -> None:
        for i in ids or range(1, self.n + 1):
            self.start(i)
        for i in ids or range(1, self.n + 1):
            self.wait_log(i, "started:", 20)

    def log(self, i: int) -> str:
        try:
            return (self.logs / f"prime-{i}.log").read_text()
        except FileNotFoundError:
            return ""

    def wait_log(self, i: int, text: str, timeout_s: float, *, after: int = 0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            log = self.log(i)
            at = log.find(text, after)
            if at >= 0:
                end = log.find("\n", at)
                return log[at:end if end >= 0 else None]
            daemon = self.daemons.get(i)
            if daemon is not None and daemon.poll() is not None and text not in self.log(i)[after:]:
                raise AssertionError(  # it will not say it now
                    f"replica {i} exited ({daemon.returncode}) before {text!r}; "
                    f"log tail:\n{self.log(i)[-3000:]}")
            time.sleep(0.05)
        raise AssertionError(f"replica {i}: no {text!r} in {timeout_s} s; log tail:\n{self.log(i)[-3000:]}")

    def stats(self, i: int, proc: str) -> dict[str, Any]:
        """The newest stats line of replica ``i``'s process ``proc`` (net, engine, worker0...)."""
        last: dict[str, Any] = {}
        for line in self.log(i).splitlines():
            if line.startswith("stats ") and f'"proc":"{proc}"' in line:
                try:
                    last = json.loads(line[6:])
                except ValueError:
                    continue
        return last

    def children(self, i: int) -> dict[str, int]:
        """Child name -> pid, from the supervisor's "started:" line."""
        line = self.wait_log(i, "started:", 10)
        pids = line.split("pids ", 1)[1]
        return {name: int(pid) for name, pid in (p.split("=") for p in pids.split(", "))}

    def processes_by_kind(self, i: int) -> dict[str, list[int]]:
        """Every process of daemon ``i`` by kind: ``supervisor``, ``net``, ``engine``,
        ``worker`` (all of them), and ``other`` for the rest of its process group (the
        ``multiprocessing`` resource tracker), so nothing of the daemon goes uncounted."""
        from prime.proc.cpuacct import group_pids

        sup = self.daemons[i].pid
        named = {pid: ("worker" if name.startswith("worker") else name) for name, pid in self.children(i).items()}
        out: dict[str, list[int]] = {"supervisor": [sup]}
        for pid in group_pids(sup):
            if pid == sup:
                continue
            out.setdefault(named.get(pid, "other"), []).append(pid)
        return out

    def measure_cpu(self, window_s: float, ids: list[int] | None = None) -> dict[int, dict[str, dict[str, float]]]:
        """CPU each process kind of each daemon used over the next ``window_s`` seconds:
        replica -> kind -> {"cpu_ticks_s", "run_s"} (``prime.proc.cpuacct``), plus the
        kind "total" (the daemon's processes summed). Sleeps through the window."""
        from prime.proc import cpuacct

        ids = ids or list(range(1, self.n + 1))
        kinds = {i: self.processes_by_kind(i) for i in ids}
        before = {i: cpuacct.sample(kinds[i]) for i in ids}
        time.sleep(window_s)
        out: dict[int, dict[str, dict[str, float]]] = {}
        for i in ids:
            d = cpuacct.delta(before[i], cpuacct.sample(kinds[i]))
            d["total"] = {k: sum(v[k] for v in d.values()) for k in ("cpu_ticks_s", "run_s")}
            out[i] = d
        return out

    def kill_group(self, i: int, sig: int) -> None:
        os.killpg(self.daemons[i].pid, sig)

    def stop(self, i: int, sig: int = signal.SIGTERM, timeout_s: float = 5.0) -> int:
        proc = self.daemons[i]
        proc.send_signal(sig)
        return proc.wait(timeout_s)

    def daemon_left(self, i: int) -> dict[str, list[Any]]:
        """What daemon ``i`` (its latest run) left: processes of its group, its
        /dev/shm segments, its socket file."""
        pid = self.daemons[i].pid
        procs = []
        try:
            os.killpg(pid, 0)
            procs.append(pid)
        except ProcessLookupError:
            pass
        shm = [p.name for p in Path("/dev/shm").glob(f"prime-r{i}-{pid}-*")]
        sock = [p.name for p in self.ipc.glob(f"prime-{i}.sock")]
        return {"processes": procs, "shm": shm, "sockets": sock}

    def wait_daemon_gone(self, i: int, timeout_s: float = 3.0) -> dict[str, list[Any]]:
        deadline = time.monotonic() + timeout_s
        left = self.daemon_left(i)
        while time.monotonic() < deadline and (left["processes"] or left["shm"]):
            time.sleep(0.05)
            left = self.daemon_left(i)
        return left

    def ordinal(self, i: int) -> int:
        return int(self.stats(i, "engine").get("ordinal", 0))

    def wait_ordinal(self, i: int, above: int, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            o = self.ordinal(i)
            if o > above:
                return o
            time.sleep(0.1)
        raise AssertionError(f"replica {i} stuck at ordinal {self.ordinal(i)} (wanted > {above})")

    # ----------------------------------------------------------------- load

    def load(self, i: int, *, inflight: int, count: int = 0, duration: float = 30.0, linger: float = 1.0,
             grace: float = 20.0, payload: int = 300, extra: list[str] | None = None,
             nice: int = 0) -> tuple[subprocess.Popen[bytes], Path]:
        """A load generator on daemon ``i``; ``nice`` > 0 runs it at that lower CPU
        priority (it stands for a client on another machine, not for work of ours)."""
        out = self.dir / f"load-{i}-{len(self.loads)}.json"
        extra = list(extra or [])
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        proc = subprocess.Popen(
            [PY, "-m", "prime.app.load", "-i", str(i), "--conf", str(self.conf), "--keys", str(self.keys),
             "-n", str(inflight), "--count", str(count), "--duration", str(duration), "--linger", str(linger),
             "--grace", str(grace), "--payload-bytes", str(payload), "--connect-timeout", "30",
             "--out", str(out), *extra],
            start_new_session=True, env=env, stdin=subprocess.DEVNULL,
            preexec_fn=(lambda: os.nice(nice)) if nice else None,
        )
        self.pgids.add(proc.pid)
        self.loads.append((proc, out))
        return proc, out

    @staticmethod
    def result(entry: tuple[subprocess.Popen[bytes], Path], timeout_s: float) -> dict[str, Any]:
        proc, out = entry
        assert proc.wait(timeout_s) == 0, f"load generator exited {proc.returncode}"
        return json.loads(out.read_text())

    # -------------------------------------------------------------- cleanup

    def shm_left(self) -> list[str]:
        names = []
        for pid in self.supervisor_pids:
            names += [p.name for p in Path("/dev/shm").glob(f"prime-r*-{pid}-*")]
        return names

    def sockets_left(self) -> list[str]:
        return [p.name for p in self.ipc.glob("*.sock")] if self.ipc.exists() else []

    def processes_left(self) -> list[int]:
        left = []
        for pgid in self.pgids:
            try:
                os.killpg(pgid, 0)
                left.append(pgid)
            except ProcessLookupError:
                pass
            except PermissionError:
                left.append(pgid)
        return left

    def wait_gone(self, timeout_s: float = 3.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and (self.processes_left() or self.shm_left()):
            time.sleep(0.05)

    def close(self) -> dict[str, list[Any]]:
        """Stop everything this cluster started (SIGTERM to daemons still running, then
        SIGKILL to every group); return what was left behind."""
        running = [p for p in self.daemons.values() if p.poll() is None]
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        for proc in running:
            try:
                proc.wait(3)
            except subprocess.TimeoutExpired:
                pass
        for pgid in list(self.pgids):
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for proc in self.daemons.values():
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        for proc, _ in self.loads:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self.wait_gone()
        left = {"processes": self.processes_left(), "shm": self.shm_left()}
        for name in left["shm"]:
            try:
                os.unlink(f"/dev/shm/{name}")
            except OSError:
                pass
        return left

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def compare_streams(results: list[dict[str, Any]], *, after: dict[int, int] | None = None) -> int:
    """Assert every pair of streams agrees on every ordinal both delivered (for replica r,
    only ordinals above ``after[r]``); return how many ordinals all share."""
    after = after or {}
    maps = []
    for r in results:
        floor = after.get(r["replica"], 0)
        maps.append({int(o): d for o, d in r["digests"].items() if int(o) > floor})
    for a in range(len(maps)):
        for b in range(a + 1, len(maps)):
            both = maps[a].keys() & maps[b].keys()
            bad = [o for o in both if maps[a][o] != maps[b][o]]
            assert not bad, f"replicas {results[a]['replica']} and {results[b]['replica']} differ at {sorted(bad)[:5]}"
    return len(set.intersection(*(set(m) for m in maps))) if maps else 0


def flood_pool(keys: Path, flooder: int, count: int) -> list[bytes]:
    """Validly signed frames of replica ``flooder`` (its real key): ``count`` distinct
    PO-Requests, each carrying one daemon-originated no-op update, and ``count``
    reconciliation messages, interleaved."""
    from prime import msgs as M
    from prime.auth import Ed25519Scheme, Signer
    from prime.crypto import keys as keyfiles

    signer = Signer(Ed25519Scheme({flooder: keyfiles.load_signing_key(keys, flooder)}, {}), flooder)
    pool = []
    for seq in range(1, count + 1):
        upd = signer.sign_one(M.Update(flooder, 1, seq, int(M.UpdateKind.CLIENT_NO_OP), b"f" * 200))
        pool.append(signer.sign_one(M.PoRequest((1, seq), (upd,))).raw)
        part = M.ReconPart(originator=1, po=(1, seq), part_index=3, request_bytes=1000, data=b"r" * 250)
        pool.append(signer.sign_one(M.Recon((part,))).raw)
    return pool


class Flooder(threading.Thread):
    """Replica ``flooder`` gone Byzantine: its CURVE link key on its own socket at each
    target, sending ``pool`` round and round, as fast as the sockets take them
    (``rate`` 0) or at ``rate`` frames per second to each target. When every target's
    queue is full it waits for room (no busy spin: its own CPU is not the attack).
    ``nice`` > 0 runs it, with its ZeroMQ I/O thread, at that lower CPU priority: it
    stands for another machine, whose CPU the targets would not share.

    A frame a target's socket refuses (its queue full) is skipped for that target, not
    retried: each target holds a different, gapped part of the flooder's PO sequence.
    ``sndhwm`` is each socket's send queue in frames; with ZeroMQ's default (1,000) the
    first thousand frames queue before the link is up and reach every target alike
    (in order, no gaps, the first 500 PO-Requests of the pool); a small one makes the
    flood gapped from its first frames, as a flooder that wants gaps would."""

    def __init__(self, c: LocalCluster, flooder: int, targets: tuple[int, ...], pool: list[bytes],
                 rate: float = 0.0, nice: int = 0, sndhwm: int = 1000) -> None:
        from prime.crypto import keys as keyfiles

        super().__init__(daemon=True)
        self.rate = rate
        self.nice = nice
        self.stop = threading.Event()
        self.sent = 0
        self.full = 0  # sends refused for a full queue: the targets' back-pressure
        self.ctx: Any = None
        self.keys = keyfiles.load_curve_keys(c.keys, flooder, c.n)
        self.endpoints = {t: f"tcp://127.0.0.1:{c.base_port + ports_per_replica(c.n) * t + flooder - 1}"
                          for t in targets}  # its socket at each target
        self.pool = pool
        self.sndhwm = sndhwm

    def _connect(self) -> list[Any]:
        import zmq
        from zmq.utils import z85

        self.ctx = zmq.Context()  # made here, so its I/O thread inherits this thread's priority
        socks = []
        for target, endpoint in self.endpoints.items():
            s = self.ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.SNDHWM, self.sndhwm)
            s.setsockopt(zmq.CURVE_SECRETKEY, z85.encode(self.keys.secret))
            s.setsockopt(zmq.CURVE_PUBLICKEY, z85.encode(self.keys.public))
            s.setsockopt(zmq.CURVE_SERVERKEY, z85.encode(self.keys.peers[target]))
            s.connect(endpoint)
            socks.append(s)
        return socks

    def run(self) -> None:
        import zmq

        if self.nice:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
        socks = self._connect()
        i = 0
        pool, n = self.pool, len(self.pool)
        t0 = time.monotonic()
        poller = zmq.Poller()
        for s in socks:
            poller.register(s, zmq.POLLOUT)
        while not self.stop.is_set():
            if self.rate and i % 16 == 0:
                ahead = i / self.rate - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
            raw = pool[i % n]
            i += 1
            blocked = 0
            for s in socks:
                try:
                    s.send(raw, zmq.NOBLOCK)
                    self.sent += 1
                except zmq.Again:
                    self.full += 1
                    blocked += 1
            if blocked == len(socks):
                poller.poll(50)
        self.ctx.destroy(linger=0)

    def close(self) -> None:
        self.stop.set()
        if self.is_alive():
            self.join(5)
