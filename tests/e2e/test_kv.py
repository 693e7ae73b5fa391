"""End-to-end: the replicated key-value service (``bin/kv``) on real daemons.

Four ``bin/prime`` daemons, each with its ``bin/kv serve`` application, every
process in its own process group; a finalizer kills them all even when a test
fails, then checks that no process, /dev/shm segment or socket file is left.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import msgpack
import pytest

from prime.app.kvservice import default_port_base
from prime.proc.localcluster import ROOT, LocalCluster

pytestmark = pytest.mark.e2e
KV = str(ROOT / "bin" / "kv")


class KvCluster:
    """A LocalCluster plus one ``bin/kv serve`` per replica."""

    def __init__(self, c: LocalCluster) -> None:
        self.c = c
        self.port_base = default_port_base(c.base_port)
        self.kvs: dict[int, subprocess.Popen[bytes]] = {}
        self.all: list[subprocess.Popen[bytes]] = []

    def start_kv(self, i: int) -> None:
        log = open(self.c.dir / f"kv-{i}.log", "ab")
        proc = subprocess.Popen(
            [KV, "serve", "-i", str(i), "--conf", str(self.c.conf), "--keys", str(self.c.keys), "--wait-s", "60"],
            start_new_session=True, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd="/",
        )
        log.close()
        self.kvs[i] = proc
        self.all.append(proc)

    def log(self, i: int) -> str:
        try:
            return (self.c.dir / f"kv-{i}.log").read_text()
        except FileNotFoundError:
            return ""

    def wait_serving(self, i: int, timeout_s: float = 30.0, after: int = 0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if "serving http" in self.log(i)[after:]:
                return
            assert self.kvs[i].poll() is None, f"kv {i} exited {self.kvs[i].returncode}:\n{self.log(i)}"
            time.sleep(0.05)
        raise AssertionError(f"kv {i} not serving in {timeout_s} s:\n{self.log(i)}")

    def kill(self, i: int) -> None:
        os.killpg(self.kvs[i].pid, signal.SIGKILL)
        self.kvs[i].wait(5)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([KV, *args, "--conf", str(self.c.conf)], capture_output=True, text=True,
                              timeout=60, cwd="/")

    def http(self, i: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port_base + i}{path}", data=body, method=method)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def put(self, i: int, key: str, value: str) -> int:
        code, body = self.http(i, "PUT", "/kv/" + urllib.parse.quote(key, safe=""), value.encode())
        assert code == 200, (i, key, code, body, self.log(i)[-1500:])
        return int(json.loads(body)["ordinal"])

    def get(self, i: int, key: str) -> bytes | None:
        code, body = self.http(i, "GET", "/kv/" + urllib.parse.quote(key, safe=""))
        assert code in (200, 404), (i, key, code, body)
        return body if code == 200 else None

    def status(self, i: int) -> dict[str, Any]:
        code, body = self.http(i, "GET", "/status")
        assert code == 200, body
        return json.loads(body)

    def wait_same_state(self, ids: list[int], timeout_s: float = 20.0) -> dict[str, Any]:
        """All replicas at the same ordinal (nothing is being written) report the same digest."""
        deadline = time.monotonic() + timeout_s
        while True:
            st = {i: self.status(i) for i in ids}
            if len({(s["ordinal"], s["transferring"]) for s in st.values()}) == 1:
                assert len({s["digest"] for s in st.values()}) == 1, st
                return st[ids[0]]
            assert time.monotonic() < deadline, st
            time.sleep(0.1)

    def close(self) -> list[int]:
        for p in self.all:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for p in self.all:
            p.wait(5)
        left = []
        for p in self.all:
            try:
                os.killpg(p.pid, 0)
                left.append(p.pid)
            except ProcessLookupError:
                pass
        return left


@pytest.fixture
def kv_cluster() -> Iterator[Any]:
    made: list[KvCluster] = []

    def make(**kwargs: Any) -> KvCluster:
        k = KvCluster(LocalCluster(**kwargs))
        made.append(k)
        return k

    yield make
    for k in made:
        kv_left = k.close()
        left = k.c.close()
        sockets = k.c.sockets_left()
        k.c.remove()
        assert kv_left == [], f"kv services left: {kv_left}"
        assert left == {"processes": [], "shm": []}, f"left behind: {left}"
        assert sockets == [], sockets


def _start(k: KvCluster, ids: list[int]) -> None:
    """KV services first (each attaches the moment its daemon's socket appears), then daemons."""
    for i in ids:
        k.start_kv(i)
    deadline = time.monotonic() + 30
    while not all("waiting for daemon" in k.log(i) for i in ids):
        assert time.monotonic() < deadline, {i: k.log(i) for i in ids}
        time.sleep(0.05)
    k.c.start_all(ids)
    for i in ids:
        k.wait_serving(i)


def test_kv_writes_through_every_replica_read_the_same(kv_cluster: Any) -> None:
    """N=4 with four KV services: writes through different replicas (bin/kv and HTTP,
    some concurrent) answer with their ordinal; every replica then returns the same
    value for every key and the same digest at the same ordinal. Bad usage: one line,
    exit 2; a missing key: exit 1."""
    k = kv_cluster()
    _start(k, [1, 2, 3, 4])
    bad = k.cli("put", "only-a-key")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert k.cli("get", "x", "-r", "5").returncode == 2
    expect: dict[str, str | None] = {}
    for i in (1, 2, 3, 4):
        ran = k.cli("put", f"colour-{i}", f"blue {i}", "-r", str(i))
        assert ran.returncode == 0, ran.stderr
        assert f"put colour-{i} at ordinal " in ran.stdout and f"(replica {i})" in ran.stdout
        expect[f"colour-{i}"] = f"blue {i}"
    first = k.put(1, "shared", "from 1")
    second = k.put(3, "shared", "from 3")
    assert second > first
    expect["shared"] = "from 3"
    assert k.cli("del", "colour-2", "-r", "4").returncode == 0
    expect["colour-2"] = None

    def writer(i: int) -> None:
        for j in range(10):
            k.put(i, f"w{i}-{j}", f"v{i}.{j}")

    threads = [threading.Thread(target=writer, args=(i,)) for i in (1, 2, 3, 4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    expect.update({f"w{i}-{j}": f"v{i}.{j}" for i in (1, 2, 3, 4) for j in range(10)})
    final = k.wait_same_state([1, 2, 3, 4])
    assert final["keys"] == sum(v is not None for v in expect.values())
    for i in (1, 2, 3, 4):
        for key, value in expect.items():
            assert k.get(i, key) == (value.encode() if value is not None else None), (i, key)
        got = k.cli("get", "shared", "-r", str(i))
        assert got.returncode == 0 and got.stdout == "from 3\n", got
        assert k.status(i)["transfers"] == 0
    missing = k.cli("get", "colour-2", "-r", "2")
    assert missing.returncode == 1 and "not found at replica 2" in missing.stderr
    big = k.http(2, "PUT", "/kv/big", b"x" * 5000)
    assert big[0] == 400 and b"0..4096 bytes" in big[1]
    assert k.http(2, "GET", "/digest?ordinal=oops")[0] == 400
    assert k.http(2, "GET", "/nowhere")[0] == 404
    k.kvs[1].send_signal(signal.SIGTERM)
    assert k.kvs[1].wait(10) == 0 and "kv 1: stopped" in k.log(1)
    assert k.get(2, "shared") == b"from 3"  # the others go on


class ForgingPeer:
    """A Byzantine replica's KV service: for any ordinal it serves a snapshot in which
    key b"forged" exists, with that snapshot's own (consistent) digest."""


    def __init__(self, port: int) -> None:
        self.asked: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                url = urllib.parse.urlsplit(self.path)
                outer.asked.append(url.path)
                try:
                    x = int(urllib.parse.parse_qs(url.query)["ordinal"][0])
                except (KeyError, ValueError):
                    self.send_error(404)
                    return
                blob = msgpack.packb([x, [[b"forged", b"by 1"]], []], use_bin_type=True)
                body = (json.dumps({"ordinal": x, "digest": hashlib.sha256(blob).hexdigest()}).encode()
                        if url.path == "/digest" else blob)
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("forger", [False, True], ids=["honest-peers", "forged-snapshot-at-1"])
def test_kv_replica_restarted_catches_up_by_state_transfer(kv_cluster: Any, forger: bool) -> None:
    """Replica 4 (daemon and KV service) is killed with SIGKILL while the others keep
    writing, far enough for its daemon to jump; restarted, it takes the state as of its
    marker from f+1 = 2 peers that agree on the digest, then serves the same values as
    the others and takes writes again. With replica 1's KV service replaced by a peer
    that serves a forged snapshot with a matching digest of its own, 1 is outvoted and
    the forged key never appears."""
    k = kv_cluster()
    peer: ForgingPeer | None = None
    honest = [2, 3] if forger else [1, 2, 3]
    if forger:
        # Replica 1 is asked first: a transfer that trusted the first answer would take its snapshot.
        peer = ForgingPeer(k.port_base + 1)
        k.c.start(1)  # its daemon orders as usual; its "application" is the forger
    try:
        _start(k, [*honest, 4])
        if forger:
            k.c.wait_log(1, "started:", 20)
        expect = {f"before-{j}": f"b{j}" for j in range(6)}
        for j, key in enumerate(expect):
            k.put(honest[j % len(honest)] if j % 2 else 4, key, expect[key])
        k.kill(4)
        k.c.daemons[4].send_signal(signal.SIGKILL)  # the supervisor only: its children follow it
        k.c.daemons[4].wait(5)
        assert k.c.wait_daemon_gone(4)["processes"] == []
        at_kill = k.c.ordinal(1)

        def writer(i: int, rnd: int) -> None:
            for j in range(10):
                key = f"during-{rnd}-{i}-{j}"
                k.put(i, key, f"d{i}.{j}")
                expect[key] = f"d{i}.{j}"

        rounds = 0
        while k.c.ordinal(1) <= at_kill + 100:  # far enough ahead that 4 must jump
            threads = [threading.Thread(target=writer, args=(i, rounds)) for i in honest]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            rounds += 1
            assert rounds < 30, f"ordinal {k.c.ordinal(1)} after {rounds} rounds"
        size = len(k.log(4))
        k.start_kv(4)
        k.c.start(4)
        k.wait_serving(4, after=size)
        deadline = time.monotonic() + 60
        while True:
            st = k.status(4)
            if st["transfers"] >= 1 and not st["transferring"]:
                break
            assert time.monotonic() < deadline, f"no state transfer: {st}\n{k.log(4)[-2000:]}"
            time.sleep(0.2)
        transfer = st["last_transfer"]
        assert transfer["ordinal"] > at_kill
        assert transfer["source"] in honest
        if forger:
            assert peer is not None and "/digest" in peer.asked  # it was asked, and lost the vote
            assert transfer["outvoted"] == [1], transfer
        else:
            assert transfer["outvoted"] == [] and transfer["bad_snapshots"] == []
        expect["after"] = "written through 4"
        assert k.put(4, "after", "written through 4") > transfer["ordinal"]
        ids = [*honest, 4]
        k.wait_same_state(ids, 30)
        for i in ids:
            assert k.get(i, "forged") is None
            for key, value in expect.items():
                assert k.get(i, key) == value.encode(), (i, key)
    finally:
        if peer is not None:
            peer.close()


def test_kv_service_restarted_alone_orders_a_sync_and_takes_the_state(kv_cluster: Any) -> None:
    """Only replica 2's KV service dies (its daemon keeps ordering). Restarted, it attaches
    late, so no daemon marker will come: it is told what went by, orders its own sync,
    and takes the state as of that ordinal from f+1 agreeing peers."""
    k = kv_cluster()
    _start(k, [1, 2, 3, 4])
    expect = {f"a{j}": f"{j}" for j in range(4)}
    for j, (key, value) in enumerate(expect.items()):
        k.put(1 + j % 4, key, value)
    k.kill(2)
    for j in range(6):
        k.put(3, f"b{j}", "while 2 was away")
        expect[f"b{j}"] = "while 2 was away"
    k.put(1, "a0", "changed")
    expect["a0"] = "changed"
    size = len(k.log(2))
    k.start_kv(2)
    k.wait_serving(2, after=size)
    deadline = time.monotonic() + 30
    while True:
        st = k.status(2)
        if st["transfers"] >= 1 and not st["transferring"]:
            break
        assert time.monotonic() < deadline, f"no state transfer: {st}\n{k.log(2)[-2000:]}"
        time.sleep(0.2)
    assert "went by before we attached" in k.log(2)[size:]
    assert st["last_transfer"]["outvoted"] == [] and st["last_transfer"]["source"] in (1, 3, 4)
    assert k.put(2, "after", "through 2") > st["last_transfer"]["ordinal"]
    expect["after"] = "through 2"
    k.wait_same_state([1, 2, 3, 4], 30)
    for i in (1, 2, 3, 4):
        for key, value in expect.items():
            assert k.get(i, key) == value.encode(), (i, key)


@pytest.mark.timeout(180)
def test_readme_kv_section_runs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The README's "The key-value service, by hand" commands, as written, on a private
    configuration (its own ports and socket folder) and key folder; the additions are
    waits a person typing does: for the services to be up before the first write, and for
    replica 1 to show an applied ordinal before its status is read."""
    from tests.e2e.conftest import private_conf, readme_block

    block = readme_block("### The key-value service, by hand")
    conf = private_conf(tmp_path)
    keys = tmp_path / "keys"
    rewrites = [
        ("bin/gen_keys ", f"bin/gen_keys --conf {conf} --out {keys} "),
        ("bin/kv serve -i $i ", f"bin/kv serve -i $i --conf {conf} --keys {keys} "),
        ("bin/prime -i $i ", f"bin/prime -i $i --conf {conf} --keys {keys} "),
        ("bin/kv put colour blue -r 2 ",
         f"for try in $(seq 120); do bin/kv status -r 2 --conf {conf} >/dev/null 2>&1 && break; "
         f"sleep 0.5; done\n"
         f"bin/kv put colour blue -r 2 --conf {conf} "),
        ("bin/kv get colour -r 4 ", f"bin/kv get colour -r 4 --conf {conf} "),
        ("bin/kv del colour -r 3", f"bin/kv del colour -r 3 --conf {conf}"),
        # replica 1 may still be applying (or taking its state by transfer, if its service
        # attached late): wait until it shows an ordinal, as a person would look again
        ("bin/kv status -r 1 ",
         f"for try in $(seq 40); do bin/kv status -r 1 --conf {conf} | grep -q '\"ordinal\": [1-9]' && break; "
         f"sleep 0.5; done\n"
         f"bin/kv status -r 1 --conf {conf} "),
        # the same kill, then each background job's exit status is collected
        ("kill $(jobs -p)", "pids=$(jobs -p); kill $pids; for p in $pids; do wait $p || true; done"),
    ]
    for old, new in rewrites:
        assert old in block, (old, block)
        block = block.replace(old, new)
    script = f"cd {ROOT}\nset -e\nset -x\n{block}\necho readme-kv-done\n"  # -x: the failure names its step
    shm = Path("/dev/shm")
    before = {p.name for p in shm.glob("prime-r*")}
    proc = subprocess.Popen(["bash", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        try:
            out, err = proc.communicate(timeout=150)
        except subprocess.TimeoutExpired as timeout:
            tail = timeout.stderr or b""
            tail = tail.decode(errors="replace") if isinstance(tail, bytes) else tail
            # the steps (bash -x) and what the commands said, without the daemons' stats lines
            tail = "\n".join(line for line in tail.splitlines() if not line.startswith("stats "))[-6000:]
            pytest.fail(f"README kv section still running after 150 s; stdout {timeout.output!r}; "
                        f"stderr ends:\n{tail}")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the background services and daemons
        except ProcessLookupError:
            pass
        time.sleep(0.5)
        left = sorted(n for n in {p.name for p in shm.glob("prime-r*")} - before if _owner_gone(n))
        for name in left:  # a daemon killed by the finalizer cannot remove its rings
            (shm / name).unlink(missing_ok=True)
    assert proc.returncode == 0, (out, err)
    assert not left, f"shared-memory segments left behind: {left}"
    lines = out.splitlines()
    assert "blue" in lines and "readme-kv-done" in lines, out
    start = out.index("{")
    status, _ = json.JSONDecoder().raw_decode(out[start:])
    assert isinstance(status, dict) and any(
        isinstance(v, int) and v > 0 for k, v in status.items() if "ordinal" in k
    ), (json.dumps(status), out, err[-4000:])


def _owner_gone(segment: str) -> bool:
    """Whether the daemon named in a ring segment (prime-r<ID>-<PID>-...) has exited; other
    tests' live daemons (another xdist worker) are never touched."""
    try:
        pid = int(segment.split("-")[2])
        os.kill(pid, 0)
    except (IndexError, ValueError):
        return False
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
