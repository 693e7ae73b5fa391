"""Connection slots per peer (``prime.net.sockets.PeerSlots``, ``LinkAuth``): a peer
may hold at most ``peer_connection_count_max`` connections on its socket, a closed one
counting until the socket was read empty; a connection that never gets through the
handshake cannot take a correct peer's slot for longer than the handshake timeout.

The first tests feed ``PeerSlots`` events by hand; the last ones run a real CURVE
ROUTER and ``LinkAuth`` in this process (loopback TCP, bounded waits)."""

from __future__ import annotations

import socket
import time
from collections import Counter

import pytest
import zmq
from zmq.utils import z85

from prime.crypto.keys import CurveKeys
from prime.net.sockets import PeerSlots, LinkAuth, zap_domain

YOUNG = 10.0


def test_an_admitted_connection_takes_its_slot_at_once() -> None:
    s = PeerSlots(1, YOUNG)
    s.accepted(20, 0.0)
    assert s.may_admit(0.1)  # fd 20 is the one asking
    s.admitted(0.1)
    s.accepted(21, 0.2)  # a second connection asks before the first's success is seen
    assert not s.may_admit(0.2)
    s.succeeded(0.3)
    assert not s.may_admit(0.3)
    assert s.used(0.3, asking=False) == 1


def test_an_old_connection_counts_for_sure_and_a_closed_one_until_drained() -> None:
    s = PeerSlots(1, YOUNG)
    s.accepted(20, 0.0)
    s.admitted(0.0)
    s.succeeded(0.0)
    assert s.used(50.0, asking=False) == 1  # old: it got through the handshake
    assert s.disconnected(20, 50.0)  # its pipe may hold frames
    s.accepted(21, 50.1)
    assert not s.may_admit(50.1)  # the closed one's frames are not read yet
    s.drained()
    assert s.may_admit(50.1)


def test_junk_connections_never_take_a_correct_peers_slot() -> None:
    """An outsider opens handshakes that never succeed (unknown key, garbage): with no
    success or admission among the young connections they count for nothing, and they
    close without being counted as undrained."""
    s = PeerSlots(1, YOUNG)
    for fd in range(30, 60):
        s.accepted(fd, 1.0)
    s.accepted(61, 2.0)  # the correct peer asks
    assert s.may_admit(2.0)
    for fd in range(30, 60):
        assert not s.disconnected(fd, 3.0)
    assert s.undrained == 0


def test_recent_success_makes_young_connections_count_until_the_window_ends() -> None:
    """Which young connection succeeded is unknown (the monitor does not say), so each
    recent success is charged to the young connections still open: safe for memory;
    at worst a correct peer waits ``young_s``."""
    s = PeerSlots(1, YOUNG)
    s.accepted(20, 0.0)  # junk, still handshaking
    s.accepted(21, 0.0)
    s.admitted(0.1)
    s.succeeded(0.2)  # 21's, but the event does not say
    assert not s.disconnected(99, 0.3)  # unknown fd: ignored
    assert s.disconnected(21, 0.5)  # may have been the authenticated one
    s.drained()
    s.accepted(22, 0.6)
    assert not s.may_admit(0.6)  # 20 may be the authenticated one
    assert not s.may_admit(5.0)
    assert s.disconnected(20, 8.0)  # closed by the handshake timeout (charged: a success is recent)
    s.drained()
    assert s.may_admit(8.1)
    s.accepted(23, 8.2)
    s.accepted(24, 8.2)
    assert not s.may_admit(8.3)  # one of 23, 24 asks; the other may hold the recent success
    assert s.may_admit(0.3 + YOUNG)  # the success aged out: young ones count for nothing


def test_the_slot_count_is_an_upper_bound_in_random_schedules() -> None:
    """Random schedules of authenticated and junk connections: ``used`` is never below
    the truth (connections through the handshake, plus closed authenticated ones not
    drained), which is what bounds memory."""
    import random

    rnd = random.Random(7)
    for _ in range(300):
        s = PeerSlots(2, YOUNG)
        now = 0.0
        live: dict[int, bool] = {}  # fd -> authenticated
        undrained_truth = 0
        fd = 10
        for _ in range(60):
            now += rnd.choice((0.01, 0.5, 3.0, 12.0))
            # a handshaking connection older than the handshake timeout is closed by ZeroMQ
            action = rnd.random()
            if action < 0.35:
                fd += 1
                s.accepted(fd, now)
                if rnd.random() < 0.5 and s.may_admit(now):
                    s.admitted(now)
                    if rnd.random() < 0.9:
                        s.succeeded(now)
                        live[fd] = True
                    else:
                        s.disconnected(fd, now)  # closed after admission, before success
                else:
                    live[fd] = False
            elif action < 0.65 and live:
                victim = rnd.choice(sorted(live))
                if live.pop(victim):
                    undrained_truth += 1
                s.disconnected(victim, now)
            elif action < 0.8:
                s.drained()
                undrained_truth = 0
            for junk in [f for f, auth in live.items() if not auth]:
                if rnd.random() < 0.5:  # junk dies within the handshake timeout
                    del live[junk]
                    s.disconnected(junk, now)
            truth = sum(live.values()) + undrained_truth
            assert s.used(now, asking=False) >= truth, (live, undrained_truth, s.__dict__)


# ------------------------------------------------------------ real sockets


def _keys() -> tuple[CurveKeys, bytes]:
    """Replica 1's CurveKeys (peers 1, 2, 3) and replica 2's secret key."""
    pairs = {i: zmq.curve_keypair() for i in (1, 2, 3)}
    raw = {i: (z85.decode(p), z85.decode(s)) for i, (p, s) in pairs.items()}
    me = CurveKeys(secret=raw[1][1], public=raw[1][0], peers={i: raw[i][0] for i in raw})
    return me, raw[2][1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pump(auth: LinkAuth, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        auth.serve(time.monotonic())
        time.sleep(0.005)


@pytest.fixture
def linked() -> object:
    ctx = zmq.Context()
    me, secret2 = _keys()
    counts: Counter[str] = Counter()
    auth = LinkAuth(ctx, me, 1, counts, connections_max=1, handshake_timeout_s=2.0)
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.setsockopt(zmq.CURVE_SERVER, 1)
    router.setsockopt(zmq.CURVE_SECRETKEY, z85.encode(me.secret))
    router.setsockopt(zmq.ZAP_DOMAIN, zap_domain(2))
    router.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
    router.setsockopt(zmq.HANDSHAKE_IVL, 2000)
    auth.watch(router, 2)
    port = _free_port()
    router.bind(f"tcp://127.0.0.1:{port}")

    def dealer() -> zmq.Socket:  # type: ignore[type-arg]
        d = ctx.socket(zmq.DEALER)
        d.setsockopt(zmq.LINGER, 0)
        d.setsockopt(zmq.CURVE_SECRETKEY, z85.encode(secret2))
        d.setsockopt(zmq.CURVE_PUBLICKEY, z85.encode(me.peers[2]))
        d.setsockopt(zmq.CURVE_SERVERKEY, z85.encode(me.public))
        d.setsockopt(zmq.RECONNECT_IVL, 50)
        d.connect(f"tcp://127.0.0.1:{port}")
        return d

    yield ctx, auth, router, dealer, counts, port
    auth.close()
    ctx.destroy(linger=0)


def _read_all(router: zmq.Socket) -> list[bytes]:  # type: ignore[type-arg]
    got = []
    while router.poll(100):
        got.append(router.recv_multipart()[1])
    return got


def test_one_key_many_connections_only_the_limit_gets_in(linked: object) -> None:
    """Replica 2's key on five connections, limit 1: one is admitted and its frames
    read; the other four wait at the handshake (held, counted) and none of their
    frames reach the socket."""
    ctx, auth, router, dealer, counts, _ = linked  # type: ignore[misc]
    socks = [dealer() for _ in range(5)]
    for n, d in enumerate(socks):
        d.send(b"from %d" % n)
    _pump(auth, 0.8)
    got = _read_all(router)
    assert len(got) == 1, got
    assert counts["link:admitted"] == 1, counts
    assert counts["link:held:too_many_connections"] == 4, counts
    assert auth.stats(time.monotonic())["2"] == {"used": 1, "held": 4}


def test_a_closed_connection_frees_its_slot_once_read_and_the_next_gets_in(linked: object) -> None:
    """The admitted connection closes with frames unread: the waiting one stays out
    until the socket is read empty, then is admitted (a correct peer's reconnection)."""
    ctx, auth, router, dealer, counts, _ = linked  # type: ignore[misc]
    first = dealer()
    for n in range(5):
        first.send(b"old %d" % n)
    _pump(auth, 0.5)
    second = dealer()
    second.send(b"new")
    _pump(auth, 0.5)
    assert counts["link:admitted"] == 1 and counts["link:held:too_many_connections"] == 1, counts
    first.close(0)
    _pump(auth, 0.5)
    assert counts["link:closed"] == 1, counts
    assert counts["link:admitted"] == 1, counts  # five frames still wait in its pipe
    assert len(_read_all(router)) == 5
    _pump(auth, 0.5)
    assert counts["link:admitted"] == 2, counts
    assert _read_all(router) == [b"new"]


def test_a_held_handshake_times_out_and_the_client_retries_until_it_gets_in(linked: object) -> None:
    """Past the handshake timeout a held request is dropped (counted as refused): its
    connection was closed by ZeroMQ, and the client, which saw a timeout and not a
    refusal, reconnects; once the slot is free it gets in."""
    ctx, auth, router, dealer, counts, _ = linked  # type: ignore[misc]
    first = dealer()
    first.send(b"a")
    _pump(auth, 0.4)
    second = dealer()
    second.send(b"b")
    _pump(auth, 2.6)
    assert counts["link:refused:too_many_connections"] >= 1, counts
    assert _read_all(router) == [b"a"]
    first.close(0)
    _pump(auth, 3.0)
    assert _read_all(router) == [b"b"]


def test_junk_handshakes_do_not_lock_the_peer_out(linked: object) -> None:
    """An outsider holds 20 TCP connections open on the peer's socket (no handshake):
    the peer's own connection is admitted at once."""
    ctx, auth, router, dealer, counts, port = linked  # type: ignore[misc]
    junk = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
    try:
        _pump(auth, 0.3)
        d = dealer()
        d.send(b"ok")
        _pump(auth, 0.5)
        assert _read_all(router) == [b"ok"]
        assert counts["link:admitted"] == 1 and counts["link:held:too_many_connections"] == 0, counts
    finally:
        for s in junk:
            s.close()
