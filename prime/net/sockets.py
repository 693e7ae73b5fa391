"""ZeroMQ sockets of one replica: the peer mesh and the application socket.

Peers: each replica binds one ROUTER on the first of its ports
(``conf/address.config``) and connects one DEALER to every peer's ROUTER, with
its server id as the routing id, so a frame arrives tagged with the peer that
sent it. (Routing ids are not authenticated without CurveZMQ; nothing here trusts
them beyond naming the ``via`` of an ``Inbound``, whose envelope is verified.)
``ROUTER_HANDOVER`` lets a restarted peer take its id back at once. High-water
marks bound memory towards a slow or dead peer; ``IMMEDIATE`` keeps a DEALER
from queueing for a peer that is not connected; sends never block: a full queue
drops the frame, counted, and the protocol retransmits. ``MAXMSGSIZE`` makes
ZeroMQ cut a connection that sends a frame far beyond ``message_bytes_max``
(frames between one and two times the bound are read and counted as oversized).
"""

from __future__ import annotations

from pathlib import Path

import zmq

from prime.config import Config

OVERSIZE_FACTOR = 2  # frames up to this many times message_bytes_max are read, then dropped


def peer_endpoint(cfg: Config, server_id: int, *, bind: bool) -> str:
    ip, port = cfg.addresses[server_id]
    return f"tcp://{'*' if bind and ip in ('0.0.0.0',) else ip}:{port}"


def _common(sock: zmq.Socket, cfg: Config) -> None:  # type: ignore[type-arg]
    net = cfg.networking
    sock.setsockopt(zmq.LINGER, net.zmq_linger_ms)
    sock.setsockopt(zmq.SNDHWM, net.zmq_sndhwm_messages)
    sock.setsockopt(zmq.RCVHWM, net.zmq_rcvhwm_messages)


def peer_router(ctx: zmq.Context, cfg: Config, me: int) -> zmq.Socket:  # type: ignore[type-arg]
    sock = ctx.socket(zmq.ROUTER)
    _common(sock, cfg)
    sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
    sock.setsockopt(zmq.MAXMSGSIZE, OVERSIZE_FACTOR * cfg.system.message_bytes_max)
    sock.bind(peer_endpoint(cfg, me, bind=True))
    return sock


def peer_dealers(ctx: zmq.Context, cfg: Config, me: int) -> dict[int, zmq.Socket]:  # type: ignore[type-arg]
    out = {}
    for peer in range(1, cfg.n + 1):
        if peer == me:
            continue
        sock = ctx.socket(zmq.DEALER)
        _common(sock, cfg)
        sock.setsockopt(zmq.ROUTING_ID, b"%d" % me)
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        sock.connect(peer_endpoint(cfg, peer, bind=False))
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
