"""End-to-end: the transport of real daemons (issue 14): CURVE links, link emulation,
throttling, traffic counters.

Each test's processes are killed in a finalizer and checked gone (as in
test_daemon.py)."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import pytest
import zmq
from zmq.utils import z85

from prime.crypto import keys as keyfiles
from prime.proc.localcluster import LocalCluster

pytestmark = pytest.mark.e2e


def _links(c: LocalCluster, pairs: dict[tuple[int, int], dict[str, float]]) -> None:
    with open(c.conf, "a") as conf:
        for (a, b), values in pairs.items():
            conf.write(f"[[links]]\na = {a}\nb = {b}\n")
            for key, value in values.items():
                conf.write(f"{key} = {value!r}\n")


def _net_counts(c: LocalCluster, i: int) -> dict[str, int]:
    return dict(c.stats(i, "net").get("counts", {}))


def _wait_stats(c: LocalCluster, i: int, proc: str, key: str, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        s = c.stats(i, proc)
        if key in s or key in s.get("counts", {}):
            return s
        time.sleep(0.1)
    raise AssertionError(f"replica {i}: no {key} in {proc} stats")


def _dealer(ctx: zmq.Context, c: LocalCluster, target: int, *, secret: bytes | None,
            server_public: bytes | None, routing_id: bytes, slot: int) -> zmq.Socket:  # type: ignore[type-arg]
    """A DEALER to ``target``'s socket for peer ``slot`` (its first port + slot - 1)."""
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.ROUTING_ID, routing_id)
    if secret is not None:
        assert server_public is not None
        sock.setsockopt(zmq.CURVE_SECRETKEY, z85.encode(secret))
        sock.setsockopt(zmq.CURVE_PUBLICKEY, z85.encode(keyfiles.curve_public_of(secret)))
        sock.setsockopt(zmq.CURVE_SERVERKEY, z85.encode(server_public))
    sock.connect(f"tcp://127.0.0.1:{c.base_port + 10 * target + slot - 1}")
    return sock


def test_a_wrong_curve_key_cannot_get_a_frame_to_the_daemon(cluster: Any) -> None:
    """Replica 1 alone (no real peers, so every frame it reads comes from us). On the
    socket for replica 2's frames, a client with a fresh CURVE key, a client speaking
    no CURVE at all, and a client holding replica 3's real link key (a replica on
    another's socket) each send 200 frames: the daemon reads none (peer_in stays 0),
    and counts the refused keys and the failed handshakes. Control, same run: a
    client holding replica 2's real link key does get its frames read (and dropped
    later as unsigned junk), so the counter can move."""
    c = cluster(workers=1)
    c.start(1)
    c.wait_log(1, "started:", 15)
    servers = keyfiles.load_curve_keys(c.keys, 1, c.n).peers
    ctx = zmq.Context()
    try:
        import os

        wrong = _dealer(ctx, c, 1, secret=os.urandom(32), server_public=servers[1], routing_id=b"2", slot=2)
        plain = _dealer(ctx, c, 1, secret=None, server_public=None, routing_id=b"3", slot=2)
        secret3 = (Path(c.keys) / "servers" / "server_3.curve_key").read_bytes()
        other = _dealer(ctx, c, 1, secret=secret3, server_public=servers[1], routing_id=b"2", slot=2)
        for sock in (wrong, plain, other):
            for n in range(200):
                try:
                    sock.send(b"\x96\x02\x01\x00" + bytes([n]) * 40, zmq.NOBLOCK)
                except zmq.Again:
                    pass  # no connection: IMMEDIATE off, the queue may fill
        time.sleep(2.5)  # stats lines come every 0.5 s
        assert _net_counts(c, 1).get("peer_in", 0) == 0, _net_counts(c, 1)
        counts = _wait_stats(c, 1, "net", "link:refused:unknown_key", 10)["counts"]
        assert counts.get("peer_in", 0) == 0, counts
        assert counts["link:refused:unknown_key"] >= 1
        assert _wait_stats(c, 1, "net", "link:refused:wrong_peer", 10)["counts"]["link:refused:wrong_peer"] >= 1
        assert counts.get("link:handshake_failed:protocol", 0) + counts.get(
            "link:handshake_failed:no_detail", 0
        ) + counts.get("link:handshake_failed:auth", 0) >= 2, counts
        # control: the right key gets through the same socket path
        secret2 = (Path(c.keys) / "servers" / "server_2.curve_key").read_bytes()
        good = _dealer(ctx, c, 1, secret=secret2, server_public=servers[1], routing_id=b"4", slot=2)
        for n in range(20):
            good.send(b"\x96\x02\x01\x00" + bytes([n]) * 40)
        deadline = time.monotonic() + 10
        while _net_counts(c, 1).get("peer_in", 0) < 20 and time.monotonic() < deadline:
            time.sleep(0.1)
        after = _net_counts(c, 1)
        assert after.get("peer_in", 0) == 20, after
        assert after["link:admitted"] >= 1
    finally:
        ctx.destroy(linger=0)


def test_cluster_orders_with_curve_on(cluster: Any) -> None:
    """The default, link_security = "curve": every replica admits its three peers and
    orders client updates exactly once."""
    c = cluster(workers=1)
    assert "link_security" not in c.conf.read_text()  # the default is curve
    c.start_all()
    loads = [c.load(i, inflight=32, count=300, duration=60, linger=1.0, grace=30) for i in range(1, 5)]
    results = [c.result(e, 120) for e in loads]
    assert sum(r["own_delivered"] for r in results) == 4 * 300
    assert all(r["duplicates"] == 0 for r in results)
    for i in range(1, 5):
        counts = _net_counts(c, i)
        assert counts.get("link:admitted", 0) >= 3, (i, counts)
        assert not any(k.startswith("link:refused") for k in counts), (i, counts)


def test_suspect_leader_rtt_matches_the_emulated_delays(cluster: Any) -> None:
    """Per-pair delays from [[links]] (1-2: 20 ms, 1-3: 10 ms, 2-3: 5 ms, the rest 0):
    the minimum RTT the suspect-leader protocol measures for each delayed pair is the
    emulated round trip plus the same processing time as the undelayed pairs of the
    same run, within 4 ms. (The daemons run above other work on the machine: see
    the four-sites test below.)"""
    c = cluster(workers=1, priority=-20)
    delays = {(1, 2): 20.0, (1, 3): 10.0, (2, 3): 5.0}
    _links(c, {pair: {"delay_ms": d} for pair, d in delays.items()})
    c.start_all()
    time.sleep(10)
    measured: dict[tuple[int, int], float] = {}
    for i in range(1, 5):
        rtts = _wait_stats(c, i, "engine", "rtt_min_us", 10)["rtt_min_us"]
        for j, us in rtts.items():
            measured[(i, int(j))] = us / 1000
    emulated = {(i, j): 2 * delays.get((min(i, j), max(i, j)), 0.0) for (i, j) in measured}
    base = statistics.median(measured[p] for p in measured if emulated[p] == 0)
    assert len(measured) >= 10, measured
    for pair, ms in measured.items():
        if emulated[pair]:
            assert ms >= emulated[pair], (pair, ms)
            assert abs(ms - emulated[pair] - base) <= 4.0, (pair, ms, emulated[pair], base)


SITES_MS = {(1, 2): 10.0, (1, 3): 20.0, (1, 4): 30.0, (2, 3): 40.0, (2, 4): 50.0, (3, 4): 25.0}


@pytest.mark.solo
def test_four_emulated_sites_suspect_no_correct_leader(cluster: Any) -> None:
    """Four emulated sites 10 to 50 ms apart, 1 ms jitter, clients submitting on every
    replica (2 in flight each) for 60 s: the view never changes (the leader's
    turnaround, which includes the emulated delays, stays under the bound the RTTs
    set), updates keep being ordered, exactly once, while the suspect-leader protocol
    keeps measuring. (At 8 in flight per client this 2-core machine's CPU contention
    stretches the turnaround's tail past the bound about once in 15 s: see
    docs/design.md, section 9.) The daemons stand for four sites' own machines: they
    run above other work on the machine, and bin/test runs this test alone after the
    others (``solo``); beside another cluster on the same two cores (a flood test, or
    the 10,000-update test), even at nice -20, the turnaround passed the bound and the
    view went 1 -> 7."""
    c = cluster(workers=1, priority=-20)
    _links(c, {pair: {"delay_ms": d, "jitter_ms": 1.0} for pair, d in SITES_MS.items()})
    c.start_all()
    loads = [c.load(i, inflight=2, duration=60, linger=2.0, grace=30) for i in range(1, 5)]
    time.sleep(3)
    view0 = {i: c.stats(i, "engine")["view"] for i in range(1, 5)}
    ordinal0 = c.ordinal(1)
    results = [c.result(e, 150) for e in loads]
    view1 = {i: c.stats(i, "engine")["view"] for i in range(1, 5)}
    assert view0 == view1 == {i: 1 for i in range(1, 5)}, (view0, view1)
    assert all(c.stats(i, "engine")["suspicions"] == 0 for i in range(1, 5))
    assert c.ordinal(1) > ordinal0 + 500, (ordinal0, c.ordinal(1))
    assert all(r["duplicates"] == 0 for r in results)
    assert sum(r["own_delivered"] for r in results) > 60 * 4 * 2 * 1000 / 400  # >= 1 per 400 ms per slot
    rtts = c.stats(1, "engine")["rtt_min_us"]
    assert rtts["4"] / 1000 >= 60.0 - 2.0, rtts  # 2 x 30 ms, minus the jitter
    tat, bound = c.stats(2, "engine")["tat_leader_us"], c.stats(2, "engine")["tat_bound_us"]
    assert 0 < tat < bound, (tat, bound)


def test_four_emulated_sites_with_loss_keep_ordering(cluster: Any) -> None:
    """The four sites with 2% loss on every link, under client load: updates keep
    being ordered, exactly once (a lost ordering message may cost a view change:
    only the protocol's own timers resend it), and the emulator's losses are counted
    at the set rate."""
    c = cluster(workers=1)
    _links(c, {pair: {"delay_ms": d, "jitter_ms": 1.0, "loss": 0.02} for pair, d in SITES_MS.items()})
    c.start_all()
    loads = [c.load(i, inflight=16, duration=20, linger=2.0, grace=30) for i in range(1, 5)]
    time.sleep(6)
    ordinal0 = c.ordinal(1)
    time.sleep(12)
    ordinal1 = c.ordinal(1)
    results = [c.result(e, 90) for e in loads]
    assert ordinal1 > ordinal0 + 50, (ordinal0, ordinal1)
    assert all(r["duplicates"] == 0 for r in results)
    losses = sum(c.stats(i, "net")["traffic"]["drop:link:loss"] for i in range(1, 5))
    sent = sum(c.stats(i, "net")["traffic"]["link:sent"] for i in range(1, 5))
    assert 0.01 < losses / (losses + sent) < 0.03, (losses, sent)


def test_throttled_bounded_class_keeps_its_rate_and_counts_everything(cluster: Any) -> None:
    """With throttle_outgoing on and the bounded (pre-ordering) class at 2 Mbit/s, under
    load the bytes it sends over 6 s stay within 10% of 2 Mbit/s; every frame offered
    is sent, still queued or refused and counted; timely traffic still flows."""
    rate = 2_000_000
    c = cluster(workers=1, settings={"throttling": {"throttle_outgoing": True, "bandwidth_bounded_bps": rate}})
    c.start_all()
    loads = [c.load(i, inflight=128, duration=16, linger=1.0, grace=30) for i in range(1, 5)]
    time.sleep(6)

    def sample() -> tuple[float, dict[str, int]]:
        s = c.stats(1, "net")
        return s["t"], s["traffic"]

    t0, tr0 = sample()
    time.sleep(6)
    t1, tr1 = sample()
    for e in loads:
        c.result(e, 90)
    measured = 8 * (tr1["out:bounded:bytes"] - tr0["out:bounded:bytes"]) / (t1 - t0)
    assert tr1["out:bounded:throttled"] > tr0["out:bounded:throttled"]  # it was saturated
    assert abs(measured - rate) <= 0.10 * rate, measured
    assert tr1["out:timely:msgs"] > tr0["out:timely:msgs"]
    for cls in ("timely", "bounded", "recon"):
        assert tr1[f"out:{cls}:submitted"] == (
            tr1[f"out:{cls}:msgs"] + tr1[f"out:{cls}:queued"] + tr1[f"drop:out:{cls}:throttle_queue_full"]
        ), cls


def test_a_flooding_replica_is_held_to_its_share_and_the_others_keep_ordering(cluster: Any) -> None:
    """Replica 4 is Byzantine: with its real signing and link keys it floods replicas 1..3
    with validly signed PO-Requests and reconciliation messages, as fast as their
    sockets take them, while the clients of 1..3 submit a fixed number of updates.
    Each target reads replica 4's socket only within its inbound budget
    (``[throttling] inbound_peer_*``): at most twice what the busier correct peer sent,
    or the floor, so the flooder meets back-pressure (its queues fill) instead of our
    CPU; it passes on replica 4's PO-Requests and reconciliation only within their lane
    budgets (``inbound_class_*``), holding the rest in replica 4's own queue; the
    correct peers are never held back; every update is delivered exactly once. (The
    clients and the flooder run at a lower CPU priority: they stand for other machines.)
    The flood is the gapped kind from its first frame (the flooder skips a frame for a
    target whose queue is full, and its send queues are short): each target holds a
    different part of replica 4's PO sequence, most of it beyond a gap."""
    from prime.proc.localcluster import Flooder, flood_pool

    c = cluster(workers=1)
    pool = flood_pool(c.keys, 4, 1000)
    c.start_all([1, 2, 3])
    c.wait_ordinal(1, 0, 20)
    flood = Flooder(c, 4, (1, 2, 3), pool, nice=10, sndhwm=16)
    try:
        loads = [c.load(i, inflight=4, count=400, duration=90, linger=1.0, grace=30, nice=10) for i in (1, 2, 3)]
        time.sleep(2)  # the budgets have re-rated from the cap to the relative bound
        before = {i: c.stats(i, "net") for i in (1, 2, 3)}
        flood.start()
        time.sleep(8)
        after = {i: c.stats(i, "net") for i in (1, 2, 3)}
        gapped = {i: c.stats(i, "engine").get("po_gapped", {}).get("4") for i in (1, 2, 3)}
        results = [c.result(e, 120) for e in loads]
    finally:
        flood.close()
    assert sum(r["own_delivered"] for r in results) == 3 * 400
    assert all(r["duplicates"] == 0 for r in results)
    assert flood.full > 0  # back-pressure reached the flooder
    # Gapped: every target holds many of replica 4's requests beyond the first one it
    # lacks (not acked: acks are for requests received in sequence), and the gaps begin
    # well before the 500 that a long send queue delivers to all alike.
    assert all(g is not None and g[0] >= 100 for g in gapped.values()), gapped
    assert min(g[1] for g in gapped.values()) < 400, gapped
    floor = 500  # conf/def.toml inbound_peer_floor_msgs_per_s
    for i in (1, 2, 3):
        span = after[i]["t"] - before[i]["t"]
        read = {p: after[i]["in_frames_by_peer"].get(p, 0) - before[i]["in_frames_by_peer"].get(p, 0)
                for p in ("1", "2", "3", "4")}
        honest = max(v for p, v in read.items() if p != "4" and p != str(i))
        budget = max(floor * span, 2 * honest) * 1.1 + 0.2 * 5000  # + one burst at the cap
        assert read["4"] <= budget, (i, read, span)
        assert read["4"] > 0.2 * floor * span, (i, read)  # it was flooding, and read
        throttled = after[i].get("in_throttled_by_peer", {})
        assert throttled.get("4", 0) > 0, (i, throttled)
        assert all(throttled.get(p, 0) == 0 for p in ("1", "2", "3")), (i, throttled)
        deferred = after[i].get("in_deferred_by_peer", {})
        assert deferred.get("4", 0) > 0, (i, deferred)  # its PO-Requests and recon waited
        # a correct peer's burst may wait a moment now and then, never materially
        assert all(deferred.get(p, 0) <= 0.02 * after[i]["in_frames_by_peer"].get(p, 0)
                   for p in ("1", "2", "3")), (i, deferred, after[i]["in_frames_by_peer"])
        lanes = after[i]["in_lane_rate_allowed"]
        assert lanes["recon"] == 100, lanes  # no correct peer sends reconciliation: the floor


def _closed_loop(c: LocalCluster, seconds: float) -> tuple[float, dict[int, dict[str, Any]]]:
    """Replicas 1..3's clients (4 in flight each, niced: other machines) for ``seconds``:
    their updates delivered per second, and each replica's engine stats before."""
    before = {i: c.stats(i, "engine") for i in (1, 2, 3)}
    loads = [c.load(i, inflight=4, duration=seconds, linger=0.5, grace=30, nice=10) for i in (1, 2, 3)]
    results = [c.result(e, seconds + 90) for e in loads]
    assert all(r["duplicates"] == 0 for r in results), results
    rate = sum(r["own_delivered"] for r in results) / max(r["elapsed_s"] for r in results)
    return rate, before


@pytest.mark.solo
def test_a_gapped_flood_keeps_the_correct_leader_and_most_of_the_rate(cluster: Any) -> None:
    """Issue 14's criterion, in one run: replicas 1..3 order their clients' updates for
    8 s without a flood, then 8 s while replica 4 floods them at full speed with validly
    signed PO-Requests and reconciliation (gapped from its first frame, as above). During
    the flood no replica suspects the correct leader (its turnaround stays under the
    bound), the view stays, and the clients keep at least 0.8 of the rate they had
    without it. The daemons run above other work (machines of their own), the clients
    and the flooder below it; bin/test runs this alone (``solo``). Measured so, 7 runs
    of perf/flood_bench.py gave 0.85 to 1.0 and no view change. (This test is the
    criterion, not the regression test of one fix: it also passed 3 of 3 times with the
    last two flood fixes reverted, on an idle machine; the figures in docs/hardening.md
    I14-1 were taken on a loaded one.)"""
    from prime.proc.localcluster import Flooder, flood_pool

    c = cluster(workers=1, priority=-20)
    pool = flood_pool(c.keys, 4, 1000)
    c.start_all([1, 2, 3])
    c.wait_ordinal(1, 0, 20)
    time.sleep(2)
    quiet, _ = _closed_loop(c, 8)
    flood = Flooder(c, 4, (1, 2, 3), pool, nice=10, sndhwm=16)
    try:
        flood.start()
        time.sleep(1)
        flooded, before = _closed_loop(c, 8)
        after = {i: c.stats(i, "engine") for i in (1, 2, 3)}
    finally:
        flood.close()
    assert flood.full > 0  # it flooded at full speed: its targets' queues filled
    suspicions = {i: after[i]["suspicions"] - before[i]["suspicions"] for i in (1, 2, 3)}
    assert suspicions == {1: 0, 2: 0, 3: 0}, suspicions
    assert {i: after[i]["view"] for i in (1, 2, 3)} == {i: before[i]["view"] for i in (1, 2, 3)}
    assert flooded >= 0.8 * quiet, (flooded, quiet)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def test_a_paused_flooder_cannot_fill_the_targets_memory(cluster: Any) -> None:
    """Replica 2 is Byzantine. With its own link key it opens 32 connections to its
    socket at replica 1 and sends 150 frames of 60 kB on each, as fast as they go:
    288 MB. Replica 1 reads it only within its budget (50 Mbit/s) and leaves the rest
    unread (back-pressure to the flooder); but "unread" must also be "not held":
    ZeroMQ takes frames off TCP into a connection's pipe up to its RCVHWM, inside the
    net process. Replica 1 admits at most ``peer_connection_count_max`` (2) of the 32
    connections (the others wait at the handshake, counted), each holding at most
    ``peer_queue_bytes`` (8 MiB), so its memory grows by less than 32 MB (it grew by
    274 MB before)."""
    import zmq
    from zmq.utils import z85

    c = cluster(workers=1)
    c.start_all([1])
    c.wait_log(1, "started:", 20)
    time.sleep(1.0)
    net_pid = c.children(1)["net"]
    before = _rss_mb(net_pid)
    mine = keyfiles.load_curve_keys(c.keys, 2, c.n)
    ctx = zmq.Context()
    try:
        socks = []
        for _ in range(32):
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.SNDHWM, 1000)
            s.setsockopt(zmq.CURVE_SECRETKEY, z85.encode(mine.secret))
            s.setsockopt(zmq.CURVE_PUBLICKEY, z85.encode(mine.public))
            s.setsockopt(zmq.CURVE_SERVERKEY, z85.encode(mine.peers[1]))
            s.connect(f"tcp://127.0.0.1:{c.base_port + 10 * 1 + 2 - 1}")  # replica 2's socket at 1
            socks.append(s)
        frame = b"\x96" + b"j" * 60_000
        time.sleep(0.5)  # handshakes
        for s in socks:
            for _ in range(150):
                s.send(frame, copy=False)
        time.sleep(3.0)
        grown = _rss_mb(net_pid) - before
        time.sleep(0.6)  # a stats line after the flood
        stats = c.stats(1, "net")
    finally:
        ctx.destroy(linger=0)
    counts = stats["counts"]
    assert counts.get("link:admitted", 0) == 2, counts
    assert counts.get("link:held:too_many_connections", 0) >= 30, counts
    assert stats["links_by_peer"]["2"]["used"] == 2, stats["links_by_peer"]
    assert counts.get("peer_in", 0) > 100, counts  # the admitted ones were read, within budget
    assert grown < 32, f"replica 1's net process grew by {grown:.0f} MB"


def _links_used(c: LocalCluster, i: int, peer: int) -> int:
    return int(c.stats(i, "net").get("links_by_peer", {}).get(str(peer), {}).get("used", -1))


def _wait_until(what: str, check: Any, timeout_s: float, c: LocalCluster) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            links = {i: (c.stats(i, "net").get("links_by_peer"),
                         {k: v for k, v in _net_counts(c, i).items() if k.startswith("link")})
                     for i in c.daemons}
            raise AssertionError(f"not within {timeout_s} s: {what}; links: {links}")
        time.sleep(0.1)


def test_a_correct_peer_that_drops_its_link_gets_back_in_with_one_slot(cluster: Any) -> None:
    """The strictest limit, ``peer_connection_count_max = 1``. Replica 4 (not the
    leader) is stopped (SIGSTOP) for 3 s while the others order on, then continued:
    it orders its own client's updates again on the link it had (one slot each way,
    nothing held). Then it is killed (SIGKILL) and restarted: every peer counts its
    old link closed, frees the slot once that link's frames are read, admits the
    new one, and replica 4 orders again. The other three keep ordering throughout,
    exactly once."""
    import signal

    c = cluster(workers=1, settings={"networking": {"peer_connection_count_max": 1}})
    c.start_all()
    loads = [c.load(i, inflight=4, duration=40, linger=1.0, grace=30) for i in (1, 2, 3)]
    c.wait_ordinal(1, 20, 30)
    pairs = [(i, j) for i in range(1, 5) for j in range(1, 5) if i != j]
    _wait_until("every link in one slot", lambda: all(_links_used(c, i, j) == 1 for i, j in pairs), 10, c)

    c.kill_group(4, signal.SIGSTOP)
    try:
        time.sleep(3.0)
        at_stop = c.ordinal(1)
        c.wait_ordinal(1, at_stop + 10, 20)  # the other three order on
    finally:
        c.kill_group(4, signal.SIGCONT)
    after_stop = c.result(c.load(4, inflight=2, duration=6, linger=1.5, grace=30), 60)
    assert after_stop["own_delivered"] > 0, after_stop

    counts = {i: _net_counts(c, i) for i in (1, 2, 3)}
    c.daemons[4].send_signal(signal.SIGKILL)  # the supervisor only: children follow it
    c.daemons[4].wait(5)
    assert c.wait_daemon_gone(4)["processes"] == []
    size = len(c.log(4))
    c.start(4)
    c.wait_log(4, "started:", 20, after=size)
    for i in (1, 2, 3):
        _wait_until(f"replica {i} admitted the restarted replica 4",
                    lambda: _net_counts(c, i).get("link:admitted", 0) > counts[i].get("link:admitted", 0)
                    and _links_used(c, i, 4) == 1, 15, c)
        assert _net_counts(c, i).get("link:closed", 0) > counts[i].get("link:closed", 0)
    after_kill = c.result(c.load(4, inflight=2, duration=6, linger=1.5, grace=30), 60)
    assert after_kill["own_delivered"] > 0, after_kill
    results = [c.result(e, 90) for e in loads]
    assert all(r["duplicates"] == 0 for r in results)
    assert all(r["own_delivered"] > 0 for r in results)
    for i in (1, 2, 3):
        assert _links_used(c, i, 4) == 1 and _links_used(c, 4, i) == 1, c.stats(i, "net")["links_by_peer"]
        assert not any(k.startswith("link:refused") for k in _net_counts(c, i)), _net_counts(c, i)


def test_a_peer_cannot_park_frames_in_our_dealer(cluster: Any) -> None:
    """Replica 2 is Byzantine and plays its own part in replica 1's link to it: it
    binds a CURVE ROUTER on its port for replica 1's frames, with its real link key,
    takes replica 1's DEALER connection, and sends frames back on it, 150 of 1 MB.
    Replica 1 never reads its DEALERs, so each frame would stay in the DEALER's pipe
    (before: up to 10000 frames of any size). The DEALER takes no frame over 4096
    bytes and at most one: replica 1's net process grows by less than 16 MB (it grew
    by 144 MB before)."""
    c = cluster(workers=1)
    mine = keyfiles.load_curve_keys(c.keys, 2, c.n)
    ctx = zmq.Context()
    try:
        router = ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        router.setsockopt(zmq.SNDHWM, 1000)
        router.setsockopt(zmq.CURVE_SERVER, 1)
        router.setsockopt(zmq.CURVE_SECRETKEY, z85.encode(mine.secret))
        router.bind(f"tcp://127.0.0.1:{c.base_port + 10 * 2 + 1 - 1}")  # replica 1's frames at 2
        c.start(1)
        c.wait_log(1, "started:", 20)
        net_pid = c.children(1)["net"]
        assert router.poll(20_000), "replica 1 sent nothing to replica 2"
        ident = router.recv_multipart()[0]
        time.sleep(0.5)
        before = _rss_mb(net_pid)
        frame = b"\x96" + b"d" * 1_000_000
        sent = 0
        for _ in range(150):
            try:
                router.send_multipart([ident, frame], zmq.NOBLOCK, copy=False)
                sent += 1
            except zmq.Again:
                break
        time.sleep(3.0)
        grown = _rss_mb(net_pid) - before
    finally:
        ctx.destroy(linger=0)
    assert sent > 0
    assert grown < 16, f"replica 1's net process grew by {grown:.0f} MB"


def test_a_peer_cannot_abort_the_net_process_with_a_ping_behind_a_full_pipe(cluster: Any) -> None:
    """Replica 4 is Byzantine (no daemon; f = 1). On one connection to its socket at
    replica 1 it floods, so replica 1 reads that socket only within replica 4's budget;
    on a second connection it sends frames until that connection's pipe is full, a ZMTP
    PING behind them and more frames in the same segment, and resets the connection,
    five times over. libzmq as released then aborts replica 1's net process when it
    reads that pipe (``Assertion failed: !_io_error``) and the supervisor stops the
    whole replica; with native/libzmq's patch the connection is just closed. Replica 1's
    processes stay the same and its client's updates are all ordered. Links are plain,
    so the hand-written ZMTP peer needs no CURVE; the bug is below the mechanism (a
    replica's own link key gets it past CURVE)."""
    from tests.rawzmtp import ping_and_reset

    c = cluster(settings={"networking": {"link_security": "none"}})
    c.start_all([1, 2, 3])
    before = c.children(1)
    load = c.load(1, inflight=4, count=200, duration=60, linger=0.5)
    c.wait_ordinal(1, 3, 20)
    port = c.base_port + 10 * 1 + 4 - 1  # replica 1's socket for replica 4's frames
    ctx = zmq.Context()
    flood = ctx.socket(zmq.DEALER)
    flood.setsockopt(zmq.LINGER, 0)
    flood.setsockopt(zmq.SNDHWM, 100_000)
    flood.connect(f"tcp://127.0.0.1:{port}")
    try:
        for _ in range(20_000):
            flood.send(b"junk")
        time.sleep(0.5)  # replica 1 is now reading this socket at replica 4's budget
        for _ in range(5):
            ping_and_reset("127.0.0.1", port, frames=200, payload=b"", settle_s=0.1)
        time.sleep(3.0)  # replica 1 reads on, the pipes of the reset connections included
    finally:
        ctx.destroy(linger=0)
    assert c.daemons[1].poll() is None, c.log(1)[-2000:]
    assert "Assertion failed" not in c.log(1), c.log(1)[-2000:]
    assert c.children(1) == before
    for name, pid in before.items():
        assert Path(f"/proc/{pid}").exists(), f"replica 1's {name} ({pid}) is gone"
    result = c.result(load, 90)
    assert result["own_delivered"] == 200
    net = c.stats(1, "net")["counts"]
    assert net.get("in:throttled_peer", 0) > 0, net  # the flood was read within its budget
