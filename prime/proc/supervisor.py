"""The supervisor: ``bin/prime -i ID`` after its configuration and keys loaded.

It picks the incarnation, creates the rings, forks the children (net, verify
workers, engine) and watches them, in the manner of gunicorn's arbiter: signal
handlers only wake the main loop (``signal.set_wakeup_fd``), which reaps and
decides. If any child exits, it stops the others and exits 1 with one line naming
the child and how it died: a half-alive replica does more harm than a stopped
one. SIGINT and SIGTERM stop every child (SIGTERM, then SIGKILL after
``STOP_GRACE_S``), unlink the shared-memory rings and remove the application
socket. Children die with the supervisor (``PR_SET_DEATHSIG``), and the
``multiprocessing`` resource tracker unlinks the rings even if the supervisor is
killed with SIGKILL.

Forking (not spawning) is deliberate: children inherit the loaded keys, the
ring mappings and the doorbell eventfds, and start in milliseconds. Nothing
ZeroMQ exists in the supervisor before the fork.

Incarnation (hardening H8): the start time in seconds, and at least one more
than the last one this replica used (kept in ``<client_ipc_dir>/prime-<id>.incarnation``),
so a daemon restarted within the same second still gets a new incarnation.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import select
import signal
import sys
import time
from pathlib import Path
from typing import Callable

from prime.app.protocol import socket_path
from prime.config import Config
from prime.core.preorder import SEQ_ANY
from prime.crypto.keys import ServerKeys
from prime.errors import PrimeError
from prime.proc.context import ReplicaContext, write_durably
from prime.proc.ring import Ring

STOP_GRACE_S = 0.5
WATCH_POLL_S = 30.0
EXIT_CHILD_DIED = 1
_PR_SET_PDEATHSIG = 1


# Keys of conf/def.toml this runtime does not implement yet: a non-default value stops
# start-up with one line naming the key, rather than being ignored silently.
_NOT_IMPLEMENTED: tuple[tuple[str, str, object], ...] = (
    ("system", "benchmark_end_run_updates", 0),
    ("attacks", "delay_attack", False),
    ("attacks", "recon_attack", False),
)


def unsupported(cfg: Config) -> str | None:
    """One line naming the first key set to something the daemon does not do yet."""
    for group, key, default in _NOT_IMPLEMENTED:
        value = getattr(getattr(cfg, group), key)
        if value != default:
            shown = str(value).lower() if isinstance(value, bool) else value
            return (
                f"{cfg.def_path}: [{group}] {key} = {shown} is not implemented by the daemon "
                f"yet (the simulator has it); set it to {str(default).lower() if isinstance(default, bool) else default}"
            )
    return None


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def pick_incarnation(ipc_dir: Path, me: int) -> tuple[int, bool]:
    """A new incarnation (hardening H8), and whether this replica ran before here: its
    last incarnation is on file. Then it restarts with empty state, and the core must
    know (``Replica(recovering=True)``, hardening I11-3: it has forgotten the acks it
    sent). The file must outlive the daemon for this: keep ``client_ipc_dir`` on
    storage a reboot does not wipe when replicas can restart after one."""
    path = ipc_dir / f"prime-{me}.incarnation"
    previous = 0
    try:
        previous = int(path.read_text().strip() or 0)
    except (OSError, ValueError):
        pass
    incarnation = max(int(time.time()), previous + 1)
    write_durably(path, f"{incarnation}\n")  # lost on a power loss, a restart would not know it is one
    return incarnation, previous > 0


def acked_path(ipc_dir: Path, me: int) -> Path:
    """Where the engine keeps ``A.Persist``: a bound on every PO id this replica acked."""
    return ipc_dir / f"prime-{me}.acked"


def read_acked(ipc_dir: Path, me: int, n: int) -> tuple[tuple[int, int, int, int], ...] | None:
    """What an earlier life persisted, or None (none, or unreadable: the core then falls
    back to its own incarnation plus the slack as the bound, which is safe but lets a
    whole cluster that restarts at once wait on itself). The record holds, per
    originator, ``[lo_inc, lo_seq, band_inc, band_seq]`` (prime/core/preorder.py); a
    record of the earlier format (per originator the highest incarnation acked) is read
    as covering every sequence number of the incarnations up to that one."""
    try:
        values = json.loads(acked_path(ipc_dir, me).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(values, list) or len(values) != n + 1:
        return None
    out: list[tuple[int, int, int, int]] = []
    for v in values:
        if type(v) is int and v >= 0:
            out.append((v, SEQ_ANY, 0, 0))
        elif isinstance(v, list) and len(v) == 4 and all(type(x) is int and 0 <= x <= SEQ_ANY for x in v):
            out.append((v[0], v[1], v[2], v[3]))
        else:
            return None
    return tuple(out)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return f"was killed by {name}"
    return f"exited with status {os.WEXITSTATUS(status)}"


class Supervisor:
    def __init__(self, cfg: Config, me: int, keys: ServerKeys, keys_dir: Path) -> None:
        self.cfg = cfg
        self.me = me
        self.keys = keys
        self.keys_dir = keys_dir
        self.children: dict[int, str] = {}  # pid -> name
        self.rings: list[Ring] = []
        self.ipc_path = socket_path(cfg.networking.client_ipc_dir, me)

    def say(self, line: str) -> None:
        sys.stderr.write(f"prime[{self.me}]: {line}\n")
        sys.stderr.flush()

    def _ring(self, label: str) -> Ring:
        net = self.cfg.networking
        name = f"prime-r{self.me}-{os.getpid()}-{label}"
        ring = Ring.create(name, net.ring_capacity_bytes, net.ring_slot_count, net.ring_slot_size_bytes)
        self.rings.append(ring)
        return ring

    def build(self) -> ReplicaContext:
        ipc_dir = Path(self.cfg.networking.client_ipc_dir)
        ipc_dir.mkdir(parents=True, exist_ok=True)
        incarnation, recovering = pick_incarnation(ipc_dir, self.me)
        acked = read_acked(ipc_dir, self.me, self.cfg.n) if recovering else None
        workers = self.cfg.networking.workers
        if workers == 0:
            to_workers: list[Ring] = []
            to_engine = [self._ring("net-engine")]
        else:
            to_workers = [self._ring(f"net-w{i}") for i in range(workers)]
            to_engine = [self._ring(f"w{i}-engine") for i in range(workers)]
        to_net = self._ring("engine-net")
        return ReplicaContext(
            cfg=self.cfg,
            me=self.me,
            keys=self.keys,
            keys_dir=self.keys_dir,
            incarnation=incarnation,
            recovering=recovering,
            acked_record=acked,
            ipc_path=self.ipc_path,
            to_engine=to_engine,
            to_workers=to_workers,
            to_net=to_net,
        )

    def _fork(self, name: str, target: Callable[[], int]) -> None:
        pid = os.fork()
        if pid == 0:
            code = 70
            try:
                _die_with_parent()
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor stops us
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                if os.getppid() == 1:
                    os._exit(1)
                import logging

                logging.basicConfig(
                    level=self.cfg.logging.level.upper(),
                    format=f"%(asctime)s prime[{self.me}] {name} %(levelname)s %(message)s",
                    stream=sys.stderr,
                    force=True,
                )
                profile_dir = os.environ.get("PRIME_PROFILE_DIR")
                if profile_dir:  # perf work: one cProfile dump per child, at its exit
                    import cProfile

                    prof = cProfile.Profile()
                    try:
                        code = prof.runcall(target)
                    finally:
                        prof.dump_stats(f"{profile_dir}/prime-{self.me}-{name}.prof")
                else:
                    code = target()
            except PrimeError as error:  # an operator's problem: one line, no traceback
                sys.stderr.write(f"prime[{self.me}] {name}: {error}\n")
                code = 70
            except BaseException as error:  # report, then die: the supervisor names us
                import traceback

                traceback.print_exc()
                sys.stderr.write(f"prime[{self.me}] {name}: {error!r}\n")
                code = 70
            finally:
                sys.stderr.flush()
                os._exit(code)
        self.children[pid] = name

    def run(self) -> int:
        from prime.proc.engine import engine_main
        from prime.proc.net_main import net_main
        from prime.proc.verifier import worker_main

        ctx = self.build()
        read_fd, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(write_fd)
        pending: list[int] = []
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
            signal.signal(sig, lambda s, f: pending.append(s))
        try:
            self._fork("engine", lambda: engine_main(ctx))
            for i in range(ctx.workers):
                self._fork(f"worker{i}", lambda i=i: worker_main(ctx, i))  # type: ignore[misc]
            self._fork("net", lambda: net_main(ctx))
            self.say(
                f"started: incarnation {ctx.incarnation}"
                f"{' (a restart: previous incarnation on file)' if ctx.recovering else ''}, "
                f"{ctx.workers} verify worker(s), "
                f"pids {', '.join(f'{n}={p}' for p, n in self.children.items())}"
            )
            return self._watch(read_fd, pending)
        finally:
            self._stop_children()
            self._cleanup()

    def _watch(self, read_fd: int, pending: list[int]) -> int:
        while True:
            try:
                # Signals (SIGCHLD too) write to the wake-up fd: the timeout is only a
                # safety net, long so an idle daemon's supervisor does not wake each second.
                select.select([read_fd], [], [], WATCH_POLL_S)
            except InterruptedError:
                pass
            try:
                while os.read(read_fd, 512):
                    pass
            except BlockingIOError:
                pass
            while pending:
                sig = pending.pop(0)
                if sig in (signal.SIGINT, signal.SIGTERM):
                    self.say(f"{signal.Signals(sig).name}: stopping")
                    return 0
            dead = self._reap()
            if dead:
                pid, name, status = dead[0]
                self.say(f"child {name} (pid {pid}) {_describe(status)}; stopping the replica")
                return EXIT_CHILD_DIED

    def _reap(self) -> list[tuple[int, str, int]]:
        dead = []
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            name = self.children.pop(pid, None)
            if name is not None:
                dead.append((pid, name, status))
        return dead

    def _stop_children(self) -> None:
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + STOP_GRACE_S
        while self.children and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.01)
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        while self.children:
            try:
                pid, _ = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            except OSError as e:
                if e.errno != errno.EINTR:
                    break
                continue
            self.children.pop(pid, None)

    def _cleanup(self) -> None:
        for ring in self.rings:
            ring.bell.close()
            ring.release()
            ring.unlink()
            try:
                ring.shm.close()
            except BufferError:
                pass
        try:
            self.ipc_path.unlink()
        except FileNotFoundError:
            pass
        # The resource tracker (our child) would outlive us as a zombie until init reaps
        # it: stop and reap it now, its segments all unlinked.
        from multiprocessing import resource_tracker

        try:
            resource_tracker._resource_tracker._stop()  # noqa: SLF001
        except Exception:  # noqa: BLE001 - best effort at exit
            pass
