"""End-to-end: real ``bin/prime`` daemons on loopback, with applications.

Every test's processes run in their own process groups and are killed in a
finalizer even when the test fails; each test then checks that no process,
/dev/shm segment or socket file was left behind.
"""

from __future__ import annotations

import json
import signal
import time
from typing import Any

import pytest

from prime.proc.localcluster import LocalCluster, compare_streams

pytestmark = pytest.mark.e2e


def _stop_all_cleanly(c: LocalCluster) -> None:
    """SIGTERM every daemon: each exits 0 within a second, leaving nothing behind."""
    t0 = time.monotonic()
    running = [i for i, d in c.daemons.items() if d.poll() is None]
    for i in running:
        c.daemons[i].send_signal(signal.SIGTERM)
    for i in running:
        assert c.daemons[i].wait(5) == 0, i
    c.wait_gone(2.0)
    assert time.monotonic() - t0 < 2.0
    assert c.sockets_left() == []
    assert c.shm_left() == []


def _exactly_once(results: list[dict[str, Any]], context: object = None) -> None:
    """Every update each client submitted was delivered, once: no stream holds a stamp
    twice, and every submitted stamp is in some stream (a replica that fell far behind
    may jump over ordinals, and its application then misses them: it is told so, and
    only such a replica may miss its own updates)."""
    union: set[tuple[int, int, int]] = set()
    for r in results:
        assert r["duplicates"] == 0, r["replica"]
        union.update(tuple(s) for s in r["stamps"])
    for r in results:
        want = {(r["client"], r["incarnation"], seq) for seq in range(1, r["submitted"] + 1)}
        missing = want - union
        assert not missing, (r["replica"], len(missing), sorted(missing)[:3], context)
        if not r["notices"]:  # no jump
            assert r["own_delivered"] == r["submitted"], (r["replica"], r["own_delivered"], r["submitted"], context)


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_n4_orders_client_signed_updates_identically(cluster: Any, workers: int) -> None:
    """N=4, four applications submitting client-signed 300-byte updates: every update
    is delivered exactly once, and every replica's stream is the same."""
    count = 2500  # 10,000 updates in all
    c = cluster(workers=workers)
    c.start_all()
    loads = [c.load(i, inflight=64, count=count, duration=120, linger=1.5, grace=30) for i in range(1, 5)]
    results = [c.result(e, 180) for e in loads]
    _exactly_once(results)
    ours = {(r["client"], r["incarnation"]) for r in results}
    union = {tuple(s) for r in results for s in r["stamps"] if (s[0], s[1]) in ours}
    assert len(union) == 4 * count  # every update ordered (a replica that jumped saw fewer)
    shared = compare_streams(results)
    assert shared > 10
    _stop_all_cleanly(c)


@pytest.mark.parametrize("child", ["worker0", "engine"])
def test_a_dead_child_stops_its_daemon_with_one_line(cluster: Any, child: str) -> None:
    """A child killed with SIGKILL: its daemon exits 1 naming the child and how it died,
    leaves no process, segment or socket; the other replicas keep ordering."""
    c = cluster()
    c.start_all()
    load = c.load(1, inflight=8, duration=6, linger=0.5)
    before = c.wait_ordinal(1, 5, 20)
    kids = c.children(4)
    import os

    os.kill(kids[child], signal.SIGKILL)
    assert c.daemons[4].wait(5) == 1
    line = c.wait_log(4, f"child {child}", 2)
    assert f"child {child} (pid {kids[child]}) was killed by SIGKILL; stopping the replica" in line
    assert c.wait_daemon_gone(4) == {"processes": [], "shm": [], "sockets": []}
    c.wait_ordinal(1, before + 20, 20)  # f = 1: three replicas go on
    assert c.result(load, 60)["own_delivered"] > 0
    _stop_all_cleanly(c)


def test_sigterm_and_sigint_leave_nothing(cluster: Any) -> None:
    """SIGINT on one daemon, SIGTERM on the others, under load: each exits 0 within a
    second, and no process, /dev/shm segment or socket file is left."""
    c = cluster(workers=2)
    c.start_all()
    load = c.load(2, inflight=16, duration=3, linger=0.2)
    c.wait_ordinal(2, 10, 20)
    t0 = time.monotonic()
    c.daemons[1].send_signal(signal.SIGINT)
    assert c.daemons[1].wait(5) == 0
    assert time.monotonic() - t0 < 1.0
    assert c.wait_daemon_gone(1, 1.0) == {"processes": [], "shm": [], "sockets": []}
    c.result(load, 60)
    _stop_all_cleanly(c)


def test_one_application_per_daemon_and_reconnect(cluster: Any) -> None:
    """A second application is refused with a clear error; after the first leaves, a
    new one attaches, and one that reconnects with its token keeps its place."""
    from prime.app.client import Application, Ordinal, Refused

    c = cluster()
    c.start_all()
    first = Application.connect(1, conf=c.conf, keys=c.keys)
    with pytest.raises(Refused, match="another application is attached to replica 1"):
        Application.connect(1, conf=c.conf, keys=c.keys, client_id=c.n + 2)
    first.reconnect()  # same token: accepted at once
    stamp = first.submit(b"hello")
    seen = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and stamp not in seen:
        for item in first.poll(0.2):
            if isinstance(item, Ordinal):
                seen += [e.stamp for e in item.events]
    assert stamp in seen
    first.close()
    second = Application.connect(1, conf=c.conf, keys=c.keys, client_id=c.n + 2)
    stamp2 = second.submit(b"again")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and stamp2 not in seen:
        for item in second.poll(0.2):
            if isinstance(item, Ordinal):
                seen += [e.stamp for e in item.events]
    assert stamp2 in seen
    second.close()
    _stop_all_cleanly(c)


def test_garbage_on_the_peer_port_is_counted_by_reason(cluster: Any) -> None:
    """Replica 4 is Byzantine (its daemon is not running; f = 1): on replica 1's peer port
    it sends random bytes, truncated and oversized frames, well-formed messages with bad
    signatures and replayed frames. Replica 1 counts each by reason and the three
    correct replicas keep ordering. Links are plain (``link_security = "none"``) so the
    bytes reach the decoder; with CURVE none of them would get past the handshake
    (tests/e2e/test_transport.py)."""
    import os
    import random

    import zmq

    from prime.auth import Ed25519Scheme, Signer
    from prime.crypto.keys import load_signing_key
    from prime.msgs import RttPing

    c = cluster(settings={"networking": {"link_security": "none"}})
    c.start_all([1, 2, 3])
    load = c.load(1, inflight=8, count=300, duration=60, linger=0.5)
    c.wait_ordinal(1, 3, 20)
    own = Signer(Ed25519Scheme({4: load_signing_key(c.keys, 4)}, {}), 4)
    forged = Signer(Ed25519Scheme({4: load_signing_key(c.keys, 3)}, {}), 4)  # wrong key
    good = own.sign_one(RttPing(1, 1)).raw
    bad_sig = forged.sign_one(RttPing(1, 2)).raw
    rng = random.Random(5)
    zctx = zmq.Context()
    attacker = zctx.socket(zmq.DEALER)
    attacker.setsockopt(zmq.ROUTING_ID, b"4")
    attacker.setsockopt(zmq.LINGER, 0)
    ip, port = "127.0.0.1", c.base_port + 10 + 4 - 1  # replica 1's socket for replica 4's frames
    attacker.connect(f"tcp://{ip}:{port}")
    try:
        time.sleep(0.5)
        for _ in range(50):
            attacker.send(rng.randbytes(rng.randrange(1, 400)))
        for cut in range(1, len(good) - 1, 7):
            attacker.send(good[:cut])
        for _ in range(5):
            attacker.send(os.urandom(65536 + 1))  # one byte over message_bytes_max
        for _ in range(10):
            attacker.send(bad_sig)
        for _ in range(5):
            attacker.send(good)  # the first is news, the rest are replays
        time.sleep(1.5)  # two stats intervals
    finally:
        attacker.close()
        zctx.term()
    net = c.stats(1, "net")["counts"]
    worker = c.stats(1, "worker0")["counts"]
    decode = sum(v for k, v in worker.items() if k.startswith("drop:decode:"))
    assert decode >= 50 + len(range(1, len(good) - 1, 7)) - 5, worker  # a few random ones may parse
    assert net.get("drop:peer:oversize") == 5, net
    assert worker.get("drop:bad_signature", 0) >= 10, worker
    assert worker.get("duplicate_frame", 0) >= 4, worker
    result = c.result(load, 90)
    assert result["own_delivered"] == 300
    _stop_all_cleanly(c)


def test_sigstop_of_the_leader_changes_the_view(cluster: Any) -> None:
    """The leader stopped (SIGSTOP) for longer than the suspicion bound: the others change
    the view and keep ordering; after SIGCONT the old leader catches up."""
    c = cluster()
    c.start_all()
    loads = [c.load(i, inflight=4, duration=14, linger=1.0) for i in range(1, 5)]
    c.wait_ordinal(2, 20, 20)
    time.sleep(1.0)
    view = max(int(c.stats(i, "engine")["view"]) for i in range(1, c.n + 1))
    leader = (view - 1) % c.n + 1
    others = [i for i in range(1, c.n + 1) if i != leader]
    c.kill_group(leader, signal.SIGSTOP)
    try:
        stopped_at = max(c.ordinal(i) for i in others)
        deadline = time.monotonic() + 20
        views = {i: 0 for i in others}
        while time.monotonic() < deadline and max(views.values()) <= view:
            time.sleep(0.2)
            views = {i: int(c.stats(i, "engine").get("view", 0)) for i in others}
        assert max(views.values()) > view, f"no view change: {views}"
        other = max(others, key=c.ordinal)
        c.wait_ordinal(other, stopped_at + 20, 20)
    finally:
        c.kill_group(leader, signal.SIGCONT)
    target = c.ordinal(other)
    c.wait_ordinal(leader, target, 20)
    results = [c.result(e, 90) for e in loads]
    compare_streams(results)
    _stop_all_cleanly(c)


def test_kill9_restart_new_incarnation_and_state_transfer(cluster: Any) -> None:
    """N=6 (f=1, k=1): one daemon killed with SIGKILL mid-run, the others keep ordering;
    it restarts with a new incarnation, its application gets the state-transfer notice,
    and from then on its stream matches the others'."""
    c = cluster(f=1, k=1)
    c.start_all()
    loads = [c.load(i, inflight=4, duration=24, linger=1.5) for i in range(1, 6)]
    victim_load = c.load(6, inflight=4, duration=3, linger=0.0)
    c.wait_ordinal(1, 20, 30)
    first = c.wait_log(6, "started: incarnation", 1)
    c.result(victim_load, 60)
    c.daemons[6].send_signal(signal.SIGKILL)  # the supervisor only: children follow it
    c.daemons[6].wait(5)
    assert c.wait_daemon_gone(6)["processes"] == []
    at_kill = c.ordinal(1)
    c.wait_ordinal(1, at_kill + 100, 30)  # far enough ahead that 6 must jump
    size = len(c.log(6))
    c.start(6)
    second = c.wait_log(6, "started: incarnation", 20, after=size)
    inc1, inc2 = (int(line.split()[2].rstrip(",")) for line in (first, second))
    assert inc2 > inc1
    # the restart is known to the core (hardening I11-3: it forgot the acks it sent)
    assert "a restart" not in first and "a restart" in second, (first, second)
    app = c.load(6, inflight=2, duration=8, linger=1.5)
    results = [c.result(e, 90) for e in loads]
    restarted = c.result(app, 90)
    assert restarted["notices"], "no state-transfer notice"  # the core's, even if it attached later
    jump = max([*restarted["notices"], restarted["attached_after_ordinal"]])
    assert jump > at_kill
    assert restarted["own_delivered"] > 0
    shared = compare_streams([*results, restarted], after={6: jump})
    assert shared > 10
    assert c.stats(6, "engine")["jumps"] >= 1
    assert c.stats(6, "engine")["recovering"] is True
    assert c.stats(5, "engine")["recovering"] is False
    _stop_all_cleanly(c)


def test_a_whole_cluster_restarted_at_once_orders_again(cluster: Any) -> None:
    """Every daemon stopped (SIGTERM) and started again: each comes back recovering
    (its incarnation file says it ran before) with the record of the incarnations it
    acked (``prime-ID.acked``), so the new incarnations are acked at once and the
    cluster orders again. Before the daemon kept that record, the same restart ordered
    nothing, ever: every replica waited for the others to certify."""
    c = cluster()
    c.start_all()
    first = c.result(c.load(1, inflight=4, count=100, duration=30, linger=0.5), 60)
    assert first["own_delivered"] == 100
    for i in range(1, 5):
        assert c.stop(i) == 0
    assert all((c.ipc / f"prime-{i}.acked").exists() for i in range(1, 5))
    sizes = {i: len(c.log(i)) for i in range(1, 5)}
    c.start_all()
    for i in range(1, 5):
        assert "a restart" in c.wait_log(i, "started: incarnation", 20, after=sizes[i])
    loads = [c.load(i, inflight=4, count=100, duration=30, linger=0.5) for i in range(1, 5)]
    results = [c.result(e, 60) for e in loads]
    assert [r["own_delivered"] for r in results] == [100] * 4
    assert all(r["duplicates"] == 0 for r in results)
    assert all(c.stats(i, "engine")["recovering"] for i in range(1, 5))
    _stop_all_cleanly(c)


def test_a_rolling_restart_by_sigterm_leaves_every_client_live(cluster: Any) -> None:
    """An operator's rolling restart, under load from replicas 1 and 4: daemon 2 stopped
    with SIGTERM and started again, and once it is back and ordering, daemon 3 the same.
    A SIGTERM makes the engine write its exact record (``prime-ID.acked``: what it
    acked, no reservation beyond), so each comes back with no gate over an id still to
    be sent, and every update of both clients is delivered. Before issue 12's fix each
    restarted replica withheld up to 4000 ids per originator, and after the second
    restart the two gates left 1 and 4 one ack short of a certificate, for good."""
    c = cluster()
    c.start_all()
    loads = [c.load(i, inflight=4, duration=16, linger=1.5) for i in (1, 4)]
    c.wait_ordinal(1, 20, 30)
    for victim in (2, 3):
        assert c.stop(victim) == 0
        record = json.loads((c.ipc / f"prime-{victim}.acked").read_text())
        assert len(record) == 5 and all(len(entry) == 4 for entry in record), record
        size = len(c.log(victim))
        c.start(victim)
        assert "a restart" in c.wait_log(victim, "started: incarnation", 20, after=size)
        c.wait_ordinal(victim, c.ordinal(1) + 10, 30)  # back (by a jump) and ordering
        time.sleep(1.5)  # a stats line after it caught up
        assert c.stats(victim, "engine")["amnesia_gates_open"] == [], c.stats(victim, "engine")
    results = [c.result(e, 90) for e in loads]
    _exactly_once(results)
    assert all(r["own_delivered"] == r["submitted"] > 0 for r in results), results
    _stop_all_cleanly(c)


def test_bin_client_pipelined_load(cluster: Any) -> None:
    """bin/client -n 16 --updates 300 on a real cluster: every update delivered, a JSON
    summary; bad flags and a server's id as client id: one line, exit 2."""
    import json
    import subprocess

    from prime.proc.localcluster import ROOT

    client = str(ROOT / "bin" / "client")
    bad = subprocess.run([client, "-n", "0"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "-n must be > 0" in bad.stderr
    c = cluster()
    c.start_all()
    common = ["--conf", str(c.conf), "--keys", str(c.keys)]
    wrong = subprocess.run([client, "-s", "1", "-i", "2", *common], capture_output=True, text=True, timeout=30)
    assert wrong.returncode == 2 and "client id 2 is not in 5..12" in wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1
    ran = subprocess.run([client, "-s", "2", "-n", "16", "--updates", "300", "--json", *common],
                         capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    summary = json.loads(ran.stdout.strip().splitlines()[-1])
    assert summary["updates"] == 300 and summary["undelivered"] == 0
    assert summary["p50_ms"] <= summary["p90_ms"] <= summary["p99_ms"] <= summary["max_ms"]
    assert "\r" not in ran.stderr  # not a terminal: plain progress lines only
    _stop_all_cleanly(c)


def test_a_slow_application_is_told_to_transfer_state(cluster: Any) -> None:
    """The daemon queues at most app_sndhwm_messages deliveries for its application: one
    that stops reading is not waited for (ordering goes on), and when it reads again it
    gets a notice naming the last ordinal it missed, then whole ordinals in order."""
    from prime.app.client import Application, Ordinal, StateTransferNeeded
    from prime.msgs import UpdateKind

    c = cluster(settings={"networking": {"app_sndhwm_messages": 16}})
    c.start_all()
    slow = Application.connect(1, conf=c.conf, keys=c.keys, queue_max=8)
    load = c.load(2, inflight=32, duration=10, linger=0.5, payload=4000)
    start = c.wait_ordinal(1, 5, 20)
    c.wait_ordinal(1, start + 150, 30)  # ordering goes on while nobody reads
    items: list[Any] = []
    deadline = time.monotonic() + 20

    def overrun_notice() -> int | None:
        big = [n for n, i in enumerate(items) if isinstance(i, StateTransferNeeded) and i.ordinal > start]
        return big[-1] if big else None

    while time.monotonic() < deadline and (overrun_notice() is None or len(items) < overrun_notice() + 6):
        items += slow.poll(0.2)
    at = overrun_notice()
    assert at is not None, f"no notice past ordinal {start}: {items[:5]}"
    notice = items[at].ordinal
    before = [i.ordinal for i in items[:at] if isinstance(i, Ordinal)]
    seq = [(type(i).__name__[0], i.ordinal) for i in items]
    assert before and before[-1] < notice, seq[max(0, at - 8):at + 4]  # what it got before the notice came in order
    ordinals = [i.ordinal for i in items[at + 1:] if isinstance(i, Ordinal)]
    assert ordinals[0] == notice + 1
    assert ordinals == list(range(ordinals[0], ordinals[0] + len(ordinals)))
    assert c.stats(1, "net")["counts"]["app_overrun"] >= 1
    # Then our own CLIENT_STATE_TRANSFER marker is ordered: the application takes a
    # peer's state as of its ordinal (README contract, rule 3).
    marker = None
    later = items[at + 1:]
    while time.monotonic() < deadline + 30 and marker is None:
        for item in later:
            if isinstance(item, Ordinal):
                for e in item.events:
                    if e.kind == UpdateKind.CLIENT_STATE_TRANSFER and e.client == 1:
                        marker = item.ordinal
        later = slow.poll(0.2)
    assert marker is not None and marker > notice
    slow.close()
    c.result(load, 60)
    _stop_all_cleanly(c)


def test_unsigned_updates_when_clients_do_not_sign(cluster: Any) -> None:
    """clients_sign_updates = false (benchmarks only): updates carry no client signature
    and are still ordered, exactly once, identically."""
    c = cluster(settings={"cryptography": {"clients_sign_updates": False}})
    c.start_all()
    loads = [c.load(i, inflight=16, count=200, duration=60, linger=1.0) for i in range(1, 5)]
    results = [c.result(e, 120) for e in loads]
    dropped = {i: c.stats(i, "engine").get("core_dropped") for i in range(1, 5)}
    _exactly_once(results, dropped)
    assert compare_streams(results) > 5
    _stop_all_cleanly(c)
