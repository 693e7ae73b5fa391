"""ZeroMQ sockets of one replica: the peer mesh and the application socket.

Peers: replica ``i`` binds one ROUTER *per peer*: the frames of peer ``j`` arrive
on ``port_i + j - 1`` (``port_i`` from ``conf/address.config``), and replica
``j`` connects one DEALER to that port of every peer. A socket per sender is what
makes the inbound bounds per sender cost nothing: the net process stops reading
the socket of a peer that used up its budget (``[throttling] inbound_peer_*``),
ZeroMQ's high-water mark fills, TCP's window closes, and the flood queues up and
is dropped at the flooder, not at us. (With one shared ROUTER the net process
would have to read, and pay for, every frame of the flood to find the others'.)

``ROUTER_HANDOVER`` lets a restarted peer take its connection back at once.
High-water marks bound memory towards a slow or dead peer; ``IMMEDIATE`` keeps a
DEALER from queueing for a peer that is not connected; sends never block: a full
queue drops the frame, counted, and the protocol retransmits. ``MAXMSGSIZE``
makes ZeroMQ cut a connection that sends a frame far beyond ``message_bytes_max``
(frames between one and two times the bound are read and counted as oversized).

With ``link_security = "none"`` the port is the only thing that names the peer,
and anyone who can reach it can claim to be that peer. The envelopes are still
verified, but what arrives on peer ``j``'s port is read within ``j``'s inbound
budget: whoever connects there (as often as it likes: the ROUTER reads its
connections in turn) spends ``j``'s budget and can starve ``j``'s own frames, a
correct leader's included. Hence "none" only on a network nobody else reaches.

With ``link_security = "curve"`` every peer link is CurveZMQ (authenticated,
encrypted): each DEALER knows its peer's public key, each ROUTER is a CURVE server
in its own ZAP domain (``prime-peer-<j>``), and the ZAP handler (``LinkAuth``,
served from the net process's own loop, no thread) admits on peer ``j``'s socket
the public key of replica ``j`` and nothing else. A refused handshake is counted
and none of its bytes are read.

Memory per sender. A peer left unread is not free: ZeroMQ's io thread keeps taking
its frames off TCP into that connection's pipe until the pipe's RCVHWM, and the
frames of a closed connection stay in its pipe until read. So the ROUTER's RCVHWM
is ``peer_queue_bytes / (2 * message_bytes_max)`` (``peer_rcvhwm``: the largest
frame read is twice the bound), and with CURVE a peer may hold at most
``peer_connection_count_max`` connections on its socket, a closed one counting until
the socket has been read empty (``PeerSlots``): a further handshake with its key
waits in ``LinkAuth`` (not refused: a refused CURVE client never retries) until a
slot is free, or until the handshake timeout closes it. One peer can then make us
hold at most ``peer_connection_count_max * peer_queue_bytes`` (plus one frame being
decoded per connection), however much it sends and on however many connections.
A peer that restarts closes its old connection (its kernel does), and TCP
keepalive (``tcp_keepalive_*``) reaps the link of a peer whose host or network
died, so a correct peer gets its slot back; the spare slot of the default
``peer_connection_count_max = 2`` lets it in at once meanwhile. Not ZMTP
heartbeats: libzmq as released aborts the process (``Assertion failed: !_io_error``,
``stream_engine_base.cpp``) when a heartbeat PING is sent, or a peer's PING
answered, on a connection whose pipe is full (input stopped) and whose TCP
connection has just failed, which the small RCVHWM makes likely; seen in a
SIGSTOP/SIGCONT test. A peer can do that on purpose, so we run on a patched
libzmq (``prime/net/libzmq.py``, ``native/libzmq/``). With
``link_security = "none"`` there is no handshake to hold: each connection is
bounded by the RCVHWM, but their number only by the file descriptors (trusted
networks only, as above).

DEALERs only send: a peer could still write to our DEALER's pipe from its ROUTER,
so their RCVHWM is 1 and their ``MAXMSGSIZE`` ``DEALER_FRAME_MAX`` (a correct
ROUTER sends them nothing but handshake commands).
"""

from __future__ import annotations

from collections import Counter, deque
from pathlib import Path

import zmq
from zmq.utils import z85
from zmq.utils.monitor import recv_monitor_message

from prime.config import Config
from prime.errors import StartupError
from prime.crypto.keys import CurveKeys

ZAP_ENDPOINT = "inproc://zeromq.zap.01"  # fixed by the ZAP specification (RFC 27)
ZAP_DOMAIN_PREFIX = b"prime-peer-"  # + the peer's id: the one key admitted on that socket

OVERSIZE_FACTOR = 2  # frames up to this many times message_bytes_max are read, then dropped
DEALER_FRAME_MAX = 4096  # a DEALER receives only handshake commands
HELD_PER_PEER_MAX = 64  # handshakes waiting for a slot per peer; past this, left to time out
SLOT_MARGIN_S = 1.0  # added to the handshake timeout: event delivery and loop delays


def peer_endpoint(cfg: Config, server_id: int, sender: int, *, bind: bool) -> str:
    """Where ``server_id`` takes the frames of ``sender``: its first port + sender - 1."""
    ip, port = cfg.addresses[server_id]
    return f"tcp://{'*' if bind and ip in ('0.0.0.0',) else ip}:{port + sender - 1}"


def zap_domain(peer: int) -> bytes:
    return ZAP_DOMAIN_PREFIX + b"%d" % peer


def peer_rcvhwm(cfg: Config) -> int:
    """Frames one peer connection's pipe holds: ``peer_queue_bytes`` over the largest
    frame ZeroMQ reads (``OVERSIZE_FACTOR * message_bytes_max``); the config keeps it
    at ``PEER_QUEUE_FRAMES_MIN`` or more."""
    return max(1, cfg.networking.peer_queue_bytes // (OVERSIZE_FACTOR * cfg.system.message_bytes_max))


def _common(sock: zmq.Socket, cfg: Config) -> None:  # type: ignore[type-arg]
    net = cfg.networking
    sock.setsockopt(zmq.LINGER, net.zmq_linger_ms)
    sock.setsockopt(zmq.SNDHWM, net.zmq_sndhwm_messages)
    sock.setsockopt(zmq.HANDSHAKE_IVL, net.handshake_timeout_ms)
    sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
    sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, net.tcp_keepalive_idle_s)
    sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, net.tcp_keepalive_interval_s)
    sock.setsockopt(zmq.TCP_KEEPALIVE_CNT, net.tcp_keepalive_probe_count)


def peer_routers(ctx: zmq.Context, cfg: Config, me: int, curve: CurveKeys | None = None,  # type: ignore[type-arg]
                 auth: LinkAuth | None = None) -> dict[int, zmq.Socket]:  # type: ignore[type-arg]
    """One ROUTER per peer (its frames only); with ``curve``, pass the ``LinkAuth``
    bound on ``ctx``: it watches each ROUTER before it is bound, so that it sees
    every connection accepted (a connection it missed would never be counted)."""
    out = {}
    for peer in range(1, cfg.n + 1):
        if peer == me:
            continue
        sock = ctx.socket(zmq.ROUTER)
        _common(sock, cfg)
        sock.setsockopt(zmq.RCVHWM, peer_rcvhwm(cfg))
        if curve is None:
            sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        else:
            sock.setsockopt(zmq.CURVE_SERVER, 1)
            sock.setsockopt(zmq.CURVE_SECRETKEY, z85.encode(curve.secret))
            sock.setsockopt(zmq.ZAP_DOMAIN, zap_domain(peer))
            sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)  # no ZAP handler: refuse, never admit
        sock.setsockopt(zmq.MAXMSGSIZE, OVERSIZE_FACTOR * cfg.system.message_bytes_max)
        if auth is not None:
            auth.watch(sock, peer)
        endpoint = peer_endpoint(cfg, me, peer, bind=True)
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as error:
            sock.close(0)
            for other in out.values():
                other.close(0)
            raise StartupError(f"replica {me} cannot listen on {endpoint} (its port for peer {peer}): "
                               f"{error.strerror}; {PORTS_HINT}") from None
        out[peer] = sock
    return out


PORTS_HINT = ("is another bin/prime with this id running? A replica's ports come from its line in "
              "address.config or from [networking] base_port")


def ports_in_use(cfg: Config, me: int) -> list[str]:
    """The endpoints among replica ``me``'s peer ports that cannot be bound now (checked
    before the daemon forks, so an operator gets one line, not a dying child)."""
    import socket

    busy = []
    for peer in range(1, cfg.n + 1):
        if peer == me:
            continue
        ip, port = cfg.addresses[me]
        port += peer - 1
        with socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as ZeroMQ binds
            try:
                s.bind((ip, port))
            except OSError as error:
                busy.append(f"{ip}:{port} ({error.strerror})")
    return busy


def peer_dealers(ctx: zmq.Context, cfg: Config, me: int, curve: CurveKeys | None = None) -> dict[int, zmq.Socket]:  # type: ignore[type-arg]
    out = {}
    for peer in range(1, cfg.n + 1):
        if peer == me:
            continue
        sock = ctx.socket(zmq.DEALER)
        _common(sock, cfg)
        sock.setsockopt(zmq.RCVHWM, 1)  # never read: see the module docstring
        sock.setsockopt(zmq.MAXMSGSIZE, DEALER_FRAME_MAX)
        if curve is None:
            sock.setsockopt(zmq.ROUTING_ID, b"%d" % me)
        else:
            sock.setsockopt(zmq.CURVE_SECRETKEY, z85.encode(curve.secret))
            sock.setsockopt(zmq.CURVE_PUBLICKEY, z85.encode(curve.public))
            sock.setsockopt(zmq.CURVE_SERVERKEY, z85.encode(curve.peers[peer]))
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        sock.connect(peer_endpoint(cfg, peer, me, bind=False))
        out[peer] = sock
    return out


def app_router(ctx: zmq.Context, cfg: Config, path: Path) -> zmq.Socket:  # type: ignore[type-arg]
    """The local application socket (one application; see ``prime.app.protocol``)."""
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, cfg.networking.app_sndhwm_messages)
    sock.setsockopt(zmq.RCVHWM, cfg.networking.zmq_rcvhwm_messages)
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a full or gone application raises, never blocks
    sock.setsockopt(zmq.MAXMSGSIZE, OVERSIZE_FACTOR * cfg.system.message_bytes_max)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        path.unlink()  # a daemon killed earlier left it behind
    sock.bind(f"ipc://{path}")
    return sock


class PeerSlots:
    """Connections one peer holds on its socket, for admitting its next one (pure:
    fed the socket monitor's events and the times they were seen; no sockets).

    ZeroMQ's monitor names a connection (its file descriptor) when it is accepted and
    when it closes, but not when its handshake succeeds. What is known for sure: a
    connection still open ``young_s`` (the handshake timeout plus a margin) after it
    was accepted went through its handshake, i.e. was admitted with this peer's key
    (ZeroMQ closes it otherwise); a younger one may have, but only if a handshake
    succeeded (or was admitted) since. So ``used`` is an upper bound of the connections
    holding frames, never less: the old ones, plus the young ones up to the recent
    successes and admissions, plus the closed ones that may have been authenticated
    and whose frames may still wait (a closed connection's pipe keeps them until
    read), until ``drained``: the socket was seen with nothing to read. A connection
    that never gets through the handshake (anyone's: an unknown key, junk) counts only
    while young and only against recent successes, so it cannot take a correct
    peer's slot for longer than ``young_s``.
    """

    def __init__(self, limit: int, young_s: float) -> None:
        self.limit = limit
        self.young_s = young_s
        self.live: dict[int, float] = {}  # fd -> when its ACCEPTED was seen
        self.successes: deque[float] = deque()  # handshakes succeeded, last young_s
        self.pending: deque[float] = deque()  # admitted, success not seen yet, last young_s
        self.undrained = 0  # closed, maybe authenticated, socket not seen empty since

    def accepted(self, fd: int, now: float) -> None:
        self.live[fd] = now

    def succeeded(self, now: float) -> None:
        self.successes.append(now)
        if self.pending:
            self.pending.popleft()

    def admitted(self, now: float) -> None:
        self.pending.append(now)

    def disconnected(self, fd: int, now: float) -> bool:
        """A connection closed; True if it may have held frames (it counts until
        ``drained``)."""
        seen = self.live.pop(fd, None)
        if seen is None:
            return False
        self._expire(now)
        if now - seen > self.young_s or self.successes or self.pending:
            self.undrained += 1
            return True
        return False

    def drained(self) -> None:
        """The socket has nothing to read: every closed connection's pipe is empty."""
        self.undrained = 0

    def used(self, now: float, *, asking: bool = True) -> int:
        """Slots taken, upper bound. ``asking``: one young connection is the one now
        asking to be admitted, not through its handshake, so not counted."""
        self._expire(now)
        old = sum(1 for seen in self.live.values() if now - seen > self.young_s)
        young = len(self.live) - old - (1 if asking else 0)
        return old + min(max(0, young), len(self.successes) + len(self.pending)) + self.undrained

    def may_admit(self, now: float) -> bool:
        return self.used(now) < self.limit

    def _expire(self, now: float) -> None:
        for times in (self.successes, self.pending):
            while times and now - times[0] > self.young_s:
                times.popleft()


class LinkAuth:
    """ZAP handler for the peer ROUTERs plus their monitors, all read without
    blocking from the net process's loop (``serve``).

    On peer ``j``'s socket (ZAP domain ``prime-peer-<j>``) it admits a CURVE client
    exactly when its public key is replica ``j``'s, with ``j`` as User-Id, and while
    ``j`` has a free connection slot (``PeerSlots``); a request with ``j``'s key
    beyond that waits here (``link:held:too_many_connections``) and is answered when
    a slot frees, or dropped unanswered once the handshake timeout has closed its
    connection (``link:refused:too_many_connections``). It is never refused outright:
    a CURVE client refused at the handshake stops reconnecting, and a correct peer
    whose dead connection is still being reaped must get in afterwards. Everything
    else is refused with ZAP status 400 (another replica's key: ``wrong_peer``).
    The handler is a ROUTER, not a REP, so that it can hold requests and answer them
    in any order. Counts ``link:admitted``, ``link:refused:<reason>``,
    ``link:closed`` (a connection that may have been authenticated closed) and the
    ROUTER's failed handshakes (``link:handshake_failed:<kind>``: a peer without
    CURVE, a wrong server key, garbage), so an operator sees who knocks.
    """

    MONITOR_EVENTS = (zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED
                      | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                      | zmq.EVENT_HANDSHAKE_FAILED_AUTH)

    def __init__(self, ctx: zmq.Context, curve: CurveKeys, me: int, counts: Counter[str], *,  # type: ignore[type-arg]
                 connections_max: int = 2, handshake_timeout_s: float = 10.0) -> None:
        self.ids = {public: server for server, public in curve.peers.items() if server != me}
        self.counts = counts
        self.ctx = ctx
        self.zap = ctx.socket(zmq.ROUTER)
        self.zap.setsockopt(zmq.LINGER, 0)
        self.zap.bind(ZAP_ENDPOINT)
        self.keys = {server: public for public, server in self.ids.items()}
        self.handshake_timeout_s = handshake_timeout_s
        young_s = handshake_timeout_s + SLOT_MARGIN_S
        self.slots = {peer: PeerSlots(connections_max, young_s) for peer in self.keys}
        self.held: dict[int, deque[tuple[float, list[bytes]]]] = {peer: deque() for peer in self.keys}
        self.routers: dict[int, zmq.Socket] = {}  # type: ignore[type-arg]
        self.monitors: list[tuple[int, zmq.Socket]] = []  # type: ignore[type-arg]

    def watch(self, router: zmq.Socket, peer: int) -> None:  # type: ignore[type-arg]
        """Monitor ``peer``'s ROUTER; call before it is bound (events before our end
        of the monitor is connected are lost). The monitor's queue is unbounded
        (RCVHWM 0): a lost event would leave a connection counted for ever, or not
        at all."""
        endpoint = f"inproc://prime-link-monitor-{peer}"
        router.monitor(endpoint, self.MONITOR_EVENTS)
        monitor = self.ctx.socket(zmq.PAIR)
        monitor.setsockopt(zmq.LINGER, 0)
        monitor.setsockopt(zmq.RCVHWM, 0)
        monitor.connect(endpoint)
        self.routers[peer] = router
        self.monitors.append((peer, monitor))

    def sockets(self) -> list[zmq.Socket]:  # type: ignore[type-arg]
        return [self.zap, *(monitor for _, monitor in self.monitors)]

    def waiting(self) -> bool:
        """Handshakes wait for a slot, or a closed connection's pipe may not be read
        empty yet: ``serve`` again soon, whatever the poller says."""
        return any(self.held.values()) or any(slots.undrained for slots in self.slots.values())

    def serve(self, now: float) -> bool:
        """Take every monitor event, answer every pending ZAP request, and admit what
        waited if its peer has a slot now."""
        did = False
        for peer, monitor in self.monitors:
            slots = self.slots[peer]
            while True:
                try:
                    event = recv_monitor_message(monitor, zmq.NOBLOCK)
                except zmq.Again:
                    break
                did = True
                kind, value = event["event"], event["value"]
                if kind == zmq.EVENT_ACCEPTED:
                    slots.accepted(value, now)
                elif kind == zmq.EVENT_DISCONNECTED:
                    if slots.disconnected(value, now):
                        self.counts["link:closed"] += 1
                elif kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    slots.succeeded(now)
                else:
                    name = {
                        zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "no_detail",
                        zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "protocol",
                        zmq.EVENT_HANDSHAKE_FAILED_AUTH: "auth",
                    }.get(kind, "other")
                    self.counts[f"link:handshake_failed:{name}"] += 1
        while True:
            try:
                request = self.zap.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            did = True
            self._request(request, now)
        for peer, held in self.held.items():
            slots = self.slots[peer]
            if slots.undrained and not self.routers[peer].getsockopt(zmq.EVENTS) & zmq.POLLIN:
                slots.drained()
            if held:
                did |= self._admit_held(peer, held, now)
        return did

    def _request(self, frames: list[bytes], now: float) -> None:
        try:
            cut = frames.index(b"") + 1  # the routing envelope, then the ZAP request
        except ValueError:
            self.counts["link:refused:bad_zap_request"] += 1
            return
        envelope, request = frames[:cut], frames[cut:]
        peer, answer = self._check(request)
        if answer is not None:
            self.zap.send_multipart(envelope + answer)
            return
        assert peer is not None
        held = self.held[peer]
        if not held and self.slots[peer].may_admit(now):
            self._admit(peer, envelope + request, now)
            return
        self.counts["link:held:too_many_connections"] += 1
        if len(held) >= HELD_PER_PEER_MAX:  # its handshake times out; the client retries
            self.counts["link:refused:too_many_connections"] += 1
            return
        held.append((now, envelope + request))

    def _admit_held(self, peer: int, held: deque[tuple[float, list[bytes]]], now: float) -> bool:
        did = False
        while held and now - held[0][0] > self.handshake_timeout_s:
            held.popleft()  # its connection was closed by the handshake timeout
            self.counts["link:refused:too_many_connections"] += 1
            did = True
        slots = self.slots[peer]
        while held and slots.may_admit(now):
            self._admit(peer, held.popleft()[1], now)
            did = True
        return did

    def _admit(self, peer: int, frames: list[bytes], now: float) -> None:
        cut = frames.index(b"") + 1
        self.slots[peer].admitted(now)
        self.counts["link:admitted"] += 1
        self.zap.send_multipart(frames[:cut] + [b"1.0", frames[cut + 1], b"200", b"OK", b"%d" % peer, b""])

    def _check(self, request: list[bytes]) -> tuple[int | None, list[bytes] | None]:
        """(peer, None) for a request with peer's key on peer's socket; else (None,
        the refusal)."""
        # version, request id, domain, address, identity, mechanism, credentials...
        if len(request) < 6 or request[0] != b"1.0":
            self.counts["link:refused:bad_zap_request"] += 1
            return None, [b"1.0", request[1] if len(request) > 1 else b"", b"500", b"bad request", b"", b""]
        request_id, domain, mechanism = request[1], request[2], request[5]
        expected = self._peer_of_domain(domain)
        if expected is None or mechanism != b"CURVE" or len(request) != 7:
            self.counts["link:refused:mechanism"] += 1
            return None, [b"1.0", request_id, b"400", b"CURVE only", b"", b""]
        server = self.ids.get(request[6])
        if server is None:
            self.counts["link:refused:unknown_key"] += 1
            return None, [b"1.0", request_id, b"400", b"unknown key", b"", b""]
        if server != expected:  # a replica knocking on another replica's socket
            self.counts["link:refused:wrong_peer"] += 1
            return None, [b"1.0", request_id, b"400", b"not this peer's socket", b"", b""]
        return server, None

    def _peer_of_domain(self, domain: bytes) -> int | None:
        if not domain.startswith(ZAP_DOMAIN_PREFIX):
            return None
        tail = domain[len(ZAP_DOMAIN_PREFIX):]
        return int(tail) if tail.isdigit() and int(tail) in self.keys else None

    def stats(self, now: float) -> dict[str, dict[str, int]]:
        """Per peer: connection slots used (upper bound) and handshakes waiting."""
        return {str(peer): {"used": slots.used(now, asking=False), "held": len(self.held[peer])}
                for peer, slots in sorted(self.slots.items())}

    def close(self) -> None:
        for router in self.routers.values():
            try:
                router.disable_monitor()
            except zmq.ZMQError:
                pass
        for sock in self.sockets():
            sock.close(0)
