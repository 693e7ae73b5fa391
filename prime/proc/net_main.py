"""The net I/O process: every socket of the replica (``prime.net.sockets``).

Each peer has its own socket (``prime.net.sockets``) and its own inbound budget
(``[throttling] inbound_peer_*``): a peer out of tokens is not read until it has
some again, so its flood waits in its own connection at no cost to us and takes
nothing from the other peers. Inbound peer frames are size-checked first, then
tagged with the peer whose socket they came in on and routed by signer to a verify worker (or verified inline when
``workers = 0``); client updates from the application go the same way. Records
from the engine go out: SEND/BCAST to peers, DELIVER/NOTICE to the application.
Every frame dropped is counted by reason (``stats`` lines), none raises.

Traffic (``prime.net.transport``): outgoing frames pass the traffic classifier,
the per-class token buckets and the link emulator; inbound peer frames wait in
per-(class, peer) queues and enter the rings timely first, peers in turn, at most
``PEER_RING_DEPTH`` at a time. With ``link_security = "curve"`` only the replica whose
CURVE key the ZAP handler admits on a peer's socket can send on it, on at most
``peer_connection_count_max`` connections at a time, each holding at most
``peer_queue_bytes`` (``sockets.LinkAuth``, ``sockets.PeerSlots``): what one peer can
make this process hold is bounded, however it sends.

The application (``prime.app.protocol``): one at a time, for as long as its
connection exists (a dead application's connection closes at once on a unix
socket). Deliveries are sent without blocking; when its queue
(``app_sndhwm_messages``) is full the application has fallen too far behind: the
daemon stops sending and, once the queue has room, sends it a NOTICE with the
last ordinal it missed, carries on from the next whole ordinal, and asks the
engine (OVERRUN record) to introduce this replica's CLIENT_STATE_TRANSFER marker,
at whose ordinal the application takes a peer's state. Ordering never waits for
an application.
"""

from __future__ import annotations

import secrets
from collections import Counter, deque
import signal
import time
from typing import Any

import msgpack
import zmq

from prime.app import protocol as P
from prime.crypto.keys import load_curve_keys
from prime.net import sockets, traffic, transport
from prime.proc import frames as F
from prime.proc.context import ProcStats, ReplicaContext
from prime.proc.verifier import RecordVerifier

PEER_BATCH = 512  # frames read per socket per round before other work (application)
PEER_BATCH_EACH = 256  # frames read per peer socket per round (each peer has its own)
EVENTS, POLLIN = zmq.EVENTS, zmq.POLLIN
APP_RING_ROOM_MIN = 64  # ring room peers never take: the application's reserve
# Peer frames a ring may hold; the rest wait in the class/peer queues. A short ring
# would let the scheduler decide more of the order, but serving classes out of
# arrival order reorders one peer's frames, and at 128 the e2e ordering tests lost
# updates under load (issue 14 report): until the core is shown not to depend on
# per-peer order, peers may fill the ring up to the application's reserve.
PEER_RING_DEPTH = 1 << 30
# A lane's burst, in seconds at its rate: a correct peer's PO-Requests and
# reconciliation come in bursts (a batch of client updates, a catch-up answer) that a
# 200 ms burst deferred now and then (e2e flood test, full suite); the long-run rate,
# which is what bounds a flooder, is the same.
LANE_BURST_S = 1.0
HELD_POLL_MS = 20  # while a peer's handshake waits for a connection slot, look this often
IDLE_POLL_MAX_MS = 60_000  # a cap only: an idle net process wakes for its sockets and its stats line


def _route(raw: bytes, workers: int) -> int:
    """Worker index by signer, from the envelope's first field without decoding it
    (``[sender, ...]``: fixarray, then a positive fixint or uint8/uint16)."""
    if len(raw) < 3:
        return 0
    b = raw[1]
    if b < 0x80:
        return b % workers
    if b == 0xCC:
        return raw[2] % workers
    if b == 0xCD and len(raw) >= 4:
        return ((raw[2] << 8) | raw[3]) % workers
    return 0


class Net:
    def __init__(self, ctx: ReplicaContext) -> None:
        cfg = ctx.cfg
        self.ctx = ctx
        self.me = ctx.me
        self.size_max = cfg.system.message_bytes_max
        self.stats = ProcStats(ctx.me, "net", cfg.logging.stats_interval_ms / 1000)
        self.counts = self.stats.counts
        self.zctx = zmq.Context(io_threads=1)
        # link_security = "curve": the ZAP handler is bound before the ROUTER can take a connection
        self.curve = load_curve_keys(ctx.keys_dir, ctx.me, cfg.n) if cfg.networking.link_security == "curve" else None
        net = cfg.networking
        self.auth = sockets.LinkAuth(
            self.zctx, self.curve, ctx.me, self.counts, connections_max=net.peer_connection_count_max,
            handshake_timeout_s=net.handshake_timeout_ms / 1000,
        ) if self.curve else None
        self.routers = sockets.peer_routers(self.zctx, cfg, ctx.me, self.curve, self.auth)
        self.peer_order = list(self.routers)  # rotated each round: nobody is always read first
        th = cfg.throttling
        self.budgets = traffic.PeerBudgets(
            self.peer_order, th.inbound_peer_msgs_per_s, th.inbound_peer_bps, th.inbound_peer_burst_ms / 1000,
            time.monotonic(), f=cfg.system.f, vs_others=th.inbound_peer_vs_others_ratio,
            floor_msgs_per_s=th.inbound_peer_floor_msgs_per_s,
        )
        self.paused: dict[int, float] = {}  # peer -> when its budget allows reading it again
        self.class_paused: Counter[int] = Counter()  # times a peer was left unread for a full queue
        self.poller = zmq.Poller()
        self.dealers = sockets.peer_dealers(self.zctx, cfg, ctx.me, self.curve)
        self.dealer_list = list(self.dealers.values())
        self.app = sockets.app_router(self.zctx, cfg, ctx.ipc_path)
        self.workers = ctx.workers
        self.inline = RecordVerifier(ctx, self.counts) if self.workers == 0 else None
        self.from_engine = ctx.to_net
        # application session
        self.app_id: bytes | None = None
        self.app_token = b""
        self.app_overrun_at: int | None = None  # first ordinal not sent to the app
        self.last_ordinal_sent = 0
        self.pending_notice: bytes | None = None
        self.app_pending: deque[tuple[bytes, bytes]] = deque()
        self.overrun_unsent: bytes | None = None
        # traffic classes, throttling, link emulation, inbound fairness (prime.net.transport)
        self.out = transport.Outbound(cfg, ctx.me, self.dealers, self.counts, time.monotonic(),
                                      seed=secrets.randbits(64))
        self.lane_budgets = traffic.InboundBudgets(
            self.peer_order,
            {traffic.Lane.PO_REQUEST: (th.inbound_class_vs_others_ratio, th.inbound_po_request_floor_msgs_per_s),
             traffic.Lane.BOUNDED: (th.inbound_class_vs_others_ratio, th.inbound_bounded_floor_msgs_per_s),
             traffic.Lane.RECON: (th.inbound_class_vs_others_ratio, th.inbound_recon_floor_msgs_per_s)},
            f=cfg.system.f, cap=th.inbound_peer_msgs_per_s,
            burst_s=max(LANE_BURST_S, th.inbound_peer_burst_ms / 1000), now=time.monotonic(),
        )
        self.inbound = transport.Inbound(self.lane_budgets)

    # --------------------------------------------------------------- loop

    def run(self) -> None:
        poller = self.poller
        for router in self.routers.values():
            poller.register(router, zmq.POLLIN)
        poller.register(self.from_engine.bell.fileno(), zmq.POLLIN)
        for sock in self.auth.sockets() if self.auth is not None else []:
            poller.register(sock, zmq.POLLIN)
        app_registered = False
        auth_sockets = set(self.auth.sockets()) if self.auth is not None else set()
        # What the last poll said is readable (None: look at everything). An idle replica
        # pays for the one socket that woke it, a busy one for one poll per round, never
        # for a failed non-blocking read on every socket it has.
        ready: set[Any] | None = None
        while True:
            busy = self.read_peers(ready)
            if self.auth is not None and (ready is None or self.auth.waiting()
                                          or not auth_sockets.isdisjoint(ready)):
                busy |= self.auth.serve(time.monotonic())
            if self.overrun_unsent is not None:
                rec, self.overrun_unsent = self.overrun_unsent, None
                if not (self.ctx.to_workers or self.ctx.to_engine)[0].put(rec):
                    self.overrun_unsent = rec
            if self.app_pending:
                busy |= self.forward_app_pending()
            if not self.app_pending and (ready is None or self.app in ready):
                busy |= self.read_app()  # (not while updates wait for ring room)
            busy |= self.write_out()
            busy |= self.out.pump(time.monotonic())
            for ring in self.ctx.to_workers or self.ctx.to_engine:
                ring.flush()
            now = time.monotonic()
            if self.stats.due(now):  # also when busy: a flood must not hide the counters
                self.stats.emit(now, self._stats_extra())
            want_app = not self.app_pending
            if want_app != app_registered:
                if want_app:
                    poller.register(self.app, zmq.POLLIN)
                else:
                    poller.unregister(self.app)
                app_registered = want_app
            if busy:
                # Look again at once, at what is readable now (one poll without waiting
                # is cheaper than a failed read on every socket).
                ready = {sock for sock, _ in poller.poll(0)}
                continue
            if self.from_engine.sleep_ready():
                # Idle: sleep until a socket, the engine or the stats line needs us.
                stats_wait = self.stats.wake_in_s(now)
                timeout = IDLE_POLL_MAX_MS if stats_wait is None else min(IDLE_POLL_MAX_MS, int(stats_wait * 1000) + 1)
                if not want_app:
                    timeout = min(timeout, 100)
                wait = self.out.wait_s(now)
                if wait is not None:  # throttled or emulated frames fall due
                    timeout = min(timeout, int(wait * 1000) + 1)
                inbound_wait = self.inbound.wait_s()
                if inbound_wait is not None:  # peer frames wait for ring room or their class budget
                    timeout = min(timeout, int(inbound_wait * 1000) + 1)
                if self.auth is not None and self.auth.waiting():  # handshakes wait for a slot
                    timeout = min(timeout, HELD_POLL_MS)
                if self.paused:  # a peer over its budget is read again when it has tokens
                    timeout = min(timeout, int(max(0.0, min(self.paused.values()) - now) * 1000) + 1)
                ready = {sock for sock, _ in poller.poll(timeout)}
            else:
                ready = None
            self.from_engine.awake()

    def forward_app_pending(self) -> bool:
        """Updates from the application wait here, never dropped, until their ring has
        room (meanwhile the application socket is not read: back-pressure)."""
        pending = self.app_pending
        moved = False
        while pending:
            rec, raw = pending[0]
            if self.inline is not None:
                if not self.inline.check(rec):
                    pending.popleft()
                    continue
                ring = self.ctx.to_engine[0]
                if not ring.put(rec):
                    break
            elif not self.ctx.to_workers[_route(raw, self.workers)].put(rec):
                break
            pending.popleft()
            moved = True
        return moved

    def _forward(self, rec: bytes, raw: bytes) -> None:
        if self.inline is not None:
            if self.inline.check(rec) and not self.ctx.to_engine[0].put(rec):
                self.counts["drop:engine_ring_full"] += 1
            return
        ring = self.ctx.to_workers[_route(raw, self.workers)]
        if not ring.put(rec):
            self.counts["drop:worker_ring_full"] += 1

    # -------------------------------------------------------------- peers

    def read_peers(self, ready: set[Any] | None = None) -> bool:
        """Read every peer's socket (those in ``ready`` if given), each within its own
        budget (``PeerBudgets``); a peer out of tokens is left unread (and out of the
        poller) until it has some again."""
        counts = self.counts
        size_max = self.size_max
        push = self.inbound.push
        full = self.inbound.full
        budgets = self.budgets
        now = time.monotonic()
        if self.paused:
            self._resume(now)
        order = self.peer_order
        order.append(order.pop(0))
        got = 0
        routers = self.routers
        for via in order:
            if via in self.paused or (ready is not None and routers[via] not in ready):
                continue
            allowed, byte_room = budgets.allowed(via, now)
            if allowed <= 0:
                self._pause(via, now)
                continue
            if full(via):  # its frames wait for their class budget: read no more of it
                counts["in:class_queue_full"] += 1
                self._pause(via, now, self.inbound.class_wait(via))
                continue
            sock = routers[via]
            frames = nbytes = 0
            for _ in range(min(PEER_BATCH_EACH, allowed)):
                # Ask before reading: a failed non-blocking read raises, and a raised
                # zmq.Again costs ten times this question.
                if nbytes >= byte_room or not sock.getsockopt(EVENTS) & POLLIN:
                    break
                try:
                    parts = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                frames += 1
                if len(parts) != 2:
                    counts["drop:peer:frame_count"] += 1
                    continue
                raw = parts[1]
                nbytes += len(raw)
                if len(raw) > size_max:
                    counts["drop:peer:oversize"] += 1
                    continue
                if not raw:
                    counts["drop:peer:empty"] += 1
                    continue
                push(via, raw)
                if full(via):
                    # One of its queues reached its bound (frames) or half of it (bytes):
                    # read no more of it this round, so nothing it sent is refused (the
                    # rest waits in its socket; next round pauses it, ``Inbound.class_wait``).
                    break
            if frames:
                counts["peer_in"] += frames
                budgets.charge(via, frames, nbytes)
                got += frames
        forwarded = self.inbound.drain(self.peer_ring_room, self._forward_peer, now)
        return got > 0 or forwarded

    def _pause(self, via: int, now: float, wait: float | None = None) -> None:
        """Leave ``via``'s socket unread (out of the poller) for ``wait`` seconds (default:
        until its read budget has tokens again)."""
        self.paused[via] = now + (self.budgets.ready_in(via) if wait is None else wait)
        self.poller.unregister(self.routers[via])
        if wait is None:  # out of read budget
            self.counts["in:throttled_peer"] += 1
            self.budgets.paused[via] += 1
        else:  # a queue full (counted as in:class_queue_full): apart, so a correct peer
            # whose frames wait for ring room is not shown as throttled like a flooder
            self.class_paused[via] += 1

    def _resume(self, now: float) -> None:
        for via, at in list(self.paused.items()):
            if at <= now:
                del self.paused[via]
                self.poller.register(self.routers[via], zmq.POLLIN)

    def peer_ring_room(self) -> int:
        """Records the peers may add: at most PEER_RING_DEPTH in a ring, and never the
        application's reserve (APP_RING_ROOM_MIN), so a peer flood cannot lock the
        application out; the rest waits in the per-peer queues, where timely
        traffic overtakes it and its excess is refused, counted."""
        rings = self.ctx.to_workers or self.ctx.to_engine
        return min(r.free_records() - max(APP_RING_ROOM_MIN, r.records_max - PEER_RING_DEPTH) for r in rings)

    def _forward_peer(self, via: int, cls: int, raw: bytes) -> None:
        self._forward(F.B_PEER + bytes((via, cls)) + raw, raw)

    def _stats_extra(self) -> dict[str, object]:
        return {
            "app_attached": self.app_id is not None,
            "traffic": transport.stats(self.out, self.inbound),
            "in_throttled_by_peer": {str(p): n for p, n in sorted(self.budgets.paused.items())},
            "in_rate_allowed": round(max(self.budgets.rate_now.values(), default=0)),
            "in_frames_by_peer": {str(p): n for p, n in sorted(self.budgets.read.items())},
            "in_class_by_peer": {str(p): n for p, n in sorted(self.inbound.by_peer.items())},
            "in_class_paused_by_peer": {str(p): n for p, n in sorted(self.class_paused.items())},
            "in_deferred_by_peer": {str(p): n for p, n in sorted(self.lane_budgets.deferred.items())},
            "in_lane_rate_allowed": {lane.name.lower(): round(r) for lane, r in self.lane_budgets.rate_now.items()},
            "links_by_peer": self.auth.stats(time.monotonic()) if self.auth is not None else {},
        }

    # -------------------------------------------------------- application

    def read_app(self) -> bool:
        app = self.app
        counts = self.counts
        got = 0
        for _ in range(PEER_BATCH):
            try:
                parts = app.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            got += 1
            if len(parts) < 2:
                counts["drop:app:frame_count"] += 1
                continue
            ident, kind = parts[0], parts[1]
            if kind == P.HELLO:
                self.on_hello(ident, parts[2:])
                continue
            if ident != self.app_id:
                counts["drop:app:not_attached"] += 1
                self._send_app_to(ident, [P.REFUSED, b"not attached: send HELLO first"])
                continue
            if kind == P.SUBMIT:
                for raw in parts[2:]:
                    if len(raw) > self.size_max or not raw:
                        counts["drop:app:update_size"] += 1
                        continue
                    counts["app_updates_in"] += 1
                    self.app_pending.append((F.B_CLIENT + raw, raw))
                if self.forward_app_pending() is False and self.app_pending:
                    counts["app_backpressure"] += 1
                if self.app_pending:
                    break
            elif kind == P.BYE:
                self.app_id = None
            elif kind != P.PING:
                counts["drop:app:unknown_kind"] += 1
        return got > 0

    def on_hello(self, ident: bytes, rest: list[bytes]) -> None:
        token = None
        try:
            version, token = msgpack.unpackb(rest[0]) if rest else (None, None)
        except Exception:
            version = None
        if version != P.VERSION:
            self.counts["drop:app:bad_hello"] += 1
            self._send_app_to(ident, [P.REFUSED, b"unsupported protocol version"])
            return
        held = self.app_id is not None and self.app_id != ident and self._app_alive()
        if held and not (token and token == self.app_token):
            self.counts["app_refused"] += 1
            self._send_app_to(
                ident,
                [P.REFUSED, b"another application is attached to replica %d" % self.me],
            )
            return
        self.app_id = ident
        self.app_token = secrets.token_bytes(16)
        self.counts["app_attached"] += 1
        welcome = [P.VERSION, self.me, self.ctx.cfg.n, self.app_token, self.last_ordinal_sent + 1]
        self._send_app_to(ident, [P.WELCOME, msgpack.packb(welcome)])
        if self.pending_notice is not None and self._send_app_to(ident, [P.NOTICE, self.pending_notice]):
            self.pending_notice = None

    def _send_app_to(self, ident: bytes, parts: list[bytes]) -> bool:
        try:
            self.app.send_multipart([ident, *parts], zmq.NOBLOCK)
            return True
        except zmq.ZMQError as error:  # EAGAIN (queue full) or EHOSTUNREACH (gone)
            if error.errno == zmq.EHOSTUNREACH and ident == self.app_id:
                self.counts["app_gone"] += 1
                self.app_id = None
            return False

    def _app_alive(self) -> bool:
        """Whether the attached application's connection still exists. ZeroMQ drops a
        peer's routing id when its connection closes (the process exited), and a
        ROUTER_MANDATORY send to it then fails with EHOSTUNREACH; a full queue (EAGAIN)
        means alive but slow. A busy application keeps its place however long it
        does not read."""
        if self.app_id is None:
            return False
        try:
            self.app.send_multipart([self.app_id, P.PING], zmq.NOBLOCK)
        except zmq.ZMQError as error:
            if error.errno == zmq.EHOSTUNREACH:
                self.counts["app_gone"] += 1
                self.app_id = None
                return False
        return True

    def to_app(self, parts: list[bytes], ordinal: int, last: bool) -> None:
        """Send one delivery part, or note that the application fell behind."""
        counts = self.counts
        if self.app_id is None:
            counts["app_deliveries_unattached"] += 1
            self.last_ordinal_sent = ordinal if last else ordinal - 1
            return
        if self.app_overrun_at is not None:
            # Behind: at the end of an ordinal, once there is room, tell it the last
            # ordinal it missed; deliveries resume with the next whole ordinal.
            self.last_ordinal_sent = ordinal if last else ordinal - 1
            if last and self._send_app_to(self.app_id, [P.NOTICE, msgpack.packb(ordinal)]):
                counts["app_overrun_notices"] += 1
                self.app_overrun_at = None
                self._overrun_told(ordinal)
            return
        if self._send_app_to(self.app_id, parts):
            if last:
                self.last_ordinal_sent = ordinal
            return
        if self.app_id is None:  # it went away
            self.last_ordinal_sent = ordinal if last else ordinal - 1
            return
        counts["app_overrun"] += 1
        self.app_overrun_at = ordinal
        self.last_ordinal_sent = ordinal if last else ordinal - 1

    def _overrun_told(self, ordinal: int) -> None:
        """The application has its NOTICE: ask the engine for our state-transfer marker."""
        rec = F.B_OVERRUN + ordinal.to_bytes(8, "big")
        ring = (self.ctx.to_workers or self.ctx.to_engine)[0]
        if not ring.put(rec):
            self.overrun_unsent = rec  # retried each round until it fits

    # -------------------------------------------------------------- output

    def write_out(self) -> bool:
        records = self.from_engine.get_batch(4096)
        if not records:
            return False
        counts = self.counts
        dealers = self.dealers
        for rec in records:
            kind = rec[0]
            if kind == F.BCAST:
                self.out.submit(None, rec[1:])
                counts["bcast_out"] += 1
            elif kind == F.SEND:
                if rec[1] not in dealers:
                    counts["drop:out:bad_dest"] += 1
                    continue
                self.out.submit(rec[1], rec[2:])
                counts["send_out"] += 1
            elif kind == F.DELIVER:
                ordinal, last = F.DELIVER_HEAD.unpack_from(rec, 1)

                head = rec[1:1 + F.DELIVER_HEAD.size]
                body = rec[1 + F.DELIVER_HEAD.size:]
                self.to_app([P.DELIVER, head, body], ordinal, bool(last))
            elif kind == F.NOTICE:
                counts["state_transfer_notices"] += 1
                if self.app_id is None or not self._send_app_to(self.app_id, [P.NOTICE, rec[1:]]):
                    self.pending_notice = rec[1:]  # for the next application that attaches
            else:
                counts["drop:out:unknown_kind"] += 1
        return True

    def close(self) -> None:
        try:
            self.ctx.ipc_path.unlink()
        except OSError:
            pass


def net_main(ctx: ReplicaContext) -> int:
    net = Net(ctx)

    def _stop(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _stop)
    try:
        net.run()
    except SystemExit:
        pass
    finally:
        net.close()
        net.stats.emit(time.monotonic(), net._stats_extra())
    return 0
