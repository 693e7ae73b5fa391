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
"""

from __future__ import annotations

from collections import Counter
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


def peer_endpoint(cfg: Config, server_id: int, sender: int, *, bind: bool) -> str:
    """Where ``server_id`` takes the frames of ``sender``: its first port + sender - 1."""
    ip, port = cfg.addresses[server_id]
    return f"tcp://{'*' if bind and ip in ('0.0.0.0',) else ip}:{port + sender - 1}"


def zap_domain(peer: int) -> bytes:
    return ZAP_DOMAIN_PREFIX + b"%d" % peer


def _common(sock: zmq.Socket, cfg: Config) -> None:  # type: ignore[type-arg]
    net = cfg.networking
    sock.setsockopt(zmq.LINGER, net.zmq_linger_ms)
    sock.setsockopt(zmq.SNDHWM, net.zmq_sndhwm_messages)
    sock.setsockopt(zmq.RCVHWM, net.zmq_rcvhwm_messages)


def peer_routers(ctx: zmq.Context, cfg: Config, me: int, curve: CurveKeys | None = None) -> dict[int, zmq.Socket]:  # type: ignore[type-arg]
    """One ROUTER per peer (its frames only); with ``curve``, bind a ``LinkAuth`` on
    ``ctx`` first."""
    out = {}
    for peer in range(1, cfg.n + 1):
        if peer == me:
            continue
        sock = ctx.socket(zmq.ROUTER)
        _common(sock, cfg)
        if curve is None:
            sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        else:
            sock.setsockopt(zmq.CURVE_SERVER, 1)
            sock.setsockopt(zmq.CURVE_SECRETKEY, z85.encode(curve.secret))
            sock.setsockopt(zmq.ZAP_DOMAIN, zap_domain(peer))
            sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)  # no ZAP handler: refuse, never admit
        sock.setsockopt(zmq.MAXMSGSIZE, OVERSIZE_FACTOR * cfg.system.message_bytes_max)
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


class LinkAuth:
    """ZAP handler for the peer ROUTERs plus their handshake monitors, all read
    without blocking from the net process's loop (``serve``).

    On peer ``j``'s socket (ZAP domain ``prime-peer-<j>``) it admits a CURVE client
    exactly when its public key is replica ``j``'s, with ``j`` as User-Id; everything
    else is refused with ZAP status 400 (another replica's key: ``wrong_peer``).
    Counts ``link:admitted``, ``link:refused:<reason>`` and the ROUTER's failed
    handshakes (``link:handshake_failed:<kind>``: a peer without CURVE, a wrong server
    key, garbage), so an operator sees who knocks.
    """

    def __init__(self, ctx: zmq.Context, curve: CurveKeys, me: int, counts: Counter[str]) -> None:  # type: ignore[type-arg]
        self.ids = {public: server for server, public in curve.peers.items() if server != me}
        self.counts = counts
        self.zap = ctx.socket(zmq.REP)
        self.zap.setsockopt(zmq.LINGER, 0)
        self.zap.bind(ZAP_ENDPOINT)
        self.keys = {server: public for public, server in self.ids.items()}
        self.monitors: list[zmq.Socket] = []  # type: ignore[type-arg]

    def watch(self, router: zmq.Socket) -> None:  # type: ignore[type-arg]
        events = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                  | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
        self.monitors.append(router.get_monitor_socket(events))

    def sockets(self) -> list[zmq.Socket]:  # type: ignore[type-arg]
        return [self.zap, *self.monitors]

    def serve(self) -> bool:
        """Answer every pending ZAP request and count every handshake failure."""
        did = False
        while True:
            try:
                request = self.zap.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            did = True
            self.zap.send_multipart(self._answer(request))
        for monitor in self.monitors:
            while True:
                try:
                    event = recv_monitor_message(monitor, zmq.NOBLOCK)
                except zmq.Again:
                    break
                did = True
                kind = {
                    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "no_detail",
                    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "protocol",
                    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "auth",
                }.get(event["event"], "other")
                self.counts[f"link:handshake_failed:{kind}"] += 1
        return did

    def _answer(self, request: list[bytes]) -> list[bytes]:
        # version, request id, domain, address, identity, mechanism, credentials...
        if len(request) < 6 or request[0] != b"1.0":
            self.counts["link:refused:bad_zap_request"] += 1
            return [b"1.0", request[1] if len(request) > 1 else b"", b"500", b"bad request", b"", b""]
        request_id, domain, mechanism = request[1], request[2], request[5]
        expected = self._peer_of_domain(domain)
        if expected is None or mechanism != b"CURVE" or len(request) != 7:
            self.counts["link:refused:mechanism"] += 1
            return [b"1.0", request_id, b"400", b"CURVE only", b"", b""]
        server = self.ids.get(request[6])
        if server is None:
            self.counts["link:refused:unknown_key"] += 1
            return [b"1.0", request_id, b"400", b"unknown key", b"", b""]
        if server != expected:  # a replica knocking on another replica's socket
            self.counts["link:refused:wrong_peer"] += 1
            return [b"1.0", request_id, b"400", b"not this peer's socket", b"", b""]
        self.counts["link:admitted"] += 1
        return [b"1.0", request_id, b"200", b"OK", b"%d" % server, b""]

    def _peer_of_domain(self, domain: bytes) -> int | None:
        if not domain.startswith(ZAP_DOMAIN_PREFIX):
            return None
        tail = domain[len(ZAP_DOMAIN_PREFIX):]
        return int(tail) if tail.isdigit() and int(tail) in self.keys else None

    def close(self) -> None:
        for sock in self.sockets():
            sock.close(0)
