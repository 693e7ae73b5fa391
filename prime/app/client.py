"""The application library: talk to your own daemon (``bin/prime -i ID``).

    app = Application.connect(1, conf="conf/def.toml", keys="keys")
    app.submit(b"payload")                 # signed with this client's key, queued
    for item in app.stream(timeout=1.0):   # Ordinal(...) or StateTransferNeeded(...)
        ...

What the stream holds, and what an application must do with it, is the contract
in README ("For application writers") and ``prime.app.kv``: every ordinal 1, 2,
3, ... in order, each with its events (every replica's clients, not only
yours), ``Ordinal.events`` empty for a no-op, markers (``kind`` NEW_INCARNATION,
CLIENT_STATE_TRANSFER) included; ``StateTransferNeeded(J)`` when the daemon
jumped over ordinals up to J, or when this application fell so far behind that
the daemon stopped queueing for it (then J is the last ordinal it missed).

One application per daemon: a second one is refused (``Refused``). If the
daemon restarts, the library attaches again by itself; ``reconnect()`` does it by
hand. Submissions go through a bounded queue (``queue_max`` messages, ZeroMQ's
high-water mark): ``submit`` blocks up to ``timeout_s`` when it is full and then
raises ``QueueFull``; ordering never waits for an application.

Client ids are N+1 .. N+num_clients; by default replica i's application is
client N+i. The client incarnation is the start time in microseconds, so a
restarted application's stamps ``(client, incarnation, seq)`` are always new.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgpack
import zmq

from prime import wire
from prime.app import protocol as P
from prime.auth import Ed25519Scheme, Signer
from prime.msgs import Update, UpdateKind

_ROOT = Path(__file__).resolve().parents[2]
_DELIVER_HEAD = 9  # u64 ordinal, u8 last


class AppError(Exception):
    """The daemon refused us or could not be reached."""


class Refused(AppError):
    pass


class QueueFull(AppError):
    pass


class BadClientId(AppError):
    """The client id is not one of this configuration's clients."""


@dataclass(frozen=True, slots=True)
class Event:
    """One ordered event: an update (``kind == 0``) or a daemon marker."""

    client: int
    incarnation: int
    seq: int
    kind: int
    payload: bytes

    @property
    def stamp(self) -> tuple[int, int, int]:
        return (self.client, self.incarnation, self.seq)


@dataclass(frozen=True, slots=True)
class Ordinal:
    """Ordinal ``ordinal`` executed: its events in order (none: a no-op)."""

    ordinal: int
    events: tuple[Event, ...]


@dataclass(frozen=True, slots=True)
class StateTransferNeeded:
    """Ordinals up to ``ordinal`` will never reach this application: follow the
    state-transfer part of the contract. ``at_attach``: they went by before this
    application attached (otherwise the daemon jumped, or we fell too far behind)."""

    ordinal: int
    at_attach: bool = False


Item = Ordinal | StateTransferNeeded


class Application:
    def __init__(
        self,
        server_id: int,
        ipc_path: Path,
        n: int,
        *,
        client_id: int | None = None,
        signer: Signer | None = None,
        queue_max: int = 1000,
        connect_timeout_s: float = 5.0,
    ) -> None:
        self.server_id = server_id
        self.n = n
        self.ipc_path = ipc_path
        self.client_id = client_id if client_id is not None else n + server_id
        self.signer = signer
        self.incarnation = time.time_ns() // 1000
        self.seq = 0
        self.queue_max = queue_max
        self.connect_timeout_s = connect_timeout_s
        self.token: bytes | None = None
        self.next_ordinal = 1
        self._parts: dict[int, list[Event]] = {}
        self._zctx = zmq.Context.instance()
        self._sock: zmq.Socket | None = None  # type: ignore[type-arg]
        self._last_send = 0.0
        self.reattached = 0
        self._attach()

    # ------------------------------------------------------------ set-up

    @classmethod
    def connect(
        cls,
        server_id: int,
        *,
        conf: str | Path | None = None,
        keys: str | Path | None = None,
        client_id: int | None = None,
        queue_max: int = 1000,
        connect_timeout_s: float = 5.0,
    ) -> Application:
        """Attach to replica ``server_id``'s daemon, with the configuration (and, if
        ``clients_sign_updates``, this client's key) the daemon uses."""
        from prime.config import load_config
        from prime.crypto.keys import load_client_signing_key

        cfg = load_config(conf or _ROOT / "conf" / "def.toml")
        cid = client_id if client_id is not None else cfg.n + server_id
        if cid not in cfg.client_ids:
            raise BadClientId(f"client id {cid} is not in {cfg.client_ids.start}..{cfg.client_ids.stop - 1}")
        signer = None
        if cfg.cryptography.clients_sign_updates:
            key = load_client_signing_key(keys or _ROOT / "keys", cid)
            signer = Signer(Ed25519Scheme({cid: key}, {}), cid)
        return cls(
            server_id,
            P.socket_path(cfg.networking.client_ipc_dir, server_id),
            cfg.n,
            client_id=cid,
            signer=signer,
            queue_max=queue_max,
            connect_timeout_s=connect_timeout_s,
        )

    def _attach(self) -> None:
        if self._sock is not None:
            self._sock.close(0)
        sock = self._zctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, self.queue_max)
        # Bounded both ways: deliveries we have not read push back on the daemon, which
        # then tells us we fell behind instead of growing anyone's memory.
        sock.setsockopt(zmq.RCVHWM, self.queue_max)
        sock.connect(f"ipc://{self.ipc_path}")
        self._sock = sock
        deadline = time.monotonic() + self.connect_timeout_s
        sock.send_multipart([P.HELLO, msgpack.packb([P.VERSION, self.token])])
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not sock.poll(min(left, 0.5) * 1000):
                if left <= 0:
                    raise AppError(f"no answer from the daemon at {self.ipc_path}")
                sock.send_multipart([P.HELLO, msgpack.packb([P.VERSION, self.token])])
                continue
            parts = sock.recv_multipart()
            if parts[0] == P.WELCOME:
                _version, _server, _n, token, next_ordinal = msgpack.unpackb(parts[1])
                self.token = token
                if next_ordinal > self.next_ordinal:
                    # Ordinals before next_ordinal went by while no application (or
                    # not this session) was attached: they will never reach us.
                    self._pending_notice = next_ordinal - 1
                    self.next_ordinal = next_ordinal
                self._last_send = time.monotonic()
                return
            if parts[0] == P.REFUSED:
                sock.close(0)
                self._sock = None
                raise Refused(parts[1].decode("utf-8", "replace"))
            # deliveries queued before the welcome are for a previous session: drop

    def reconnect(self) -> None:
        """Attach again (with our token, so we take our own place back at once)."""
        self._attach()
        self.reattached += 1

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.send_multipart([P.BYE], zmq.NOBLOCK)
            except zmq.ZMQError:
                pass
            self._sock.close(0)
            self._sock = None

    def __enter__(self) -> Application:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ submit

    def make_update(self, payload: bytes) -> bytes:
        """A signed UPDATE envelope for ``payload`` with the next stamp."""
        self.seq += 1
        u = Update(self.client_id, self.incarnation, self.seq, int(UpdateKind.APP), payload)
        if self.signer is not None:
            return self.signer.sign_one(u).raw
        body = wire.encode_body(u)  # clients_sign_updates = false: unsigned (benchmarks)
        return wire.make_envelope(sender=self.client_id, body=body, msg=u, sig=bytes(64)).raw

    def submit(self, payload: bytes, *, timeout_s: float = 5.0) -> tuple[int, int, int]:
        """Sign and queue one update; returns its stamp ``(client, incarnation, seq)``."""
        raw = self.make_update(payload)
        self._send([P.SUBMIT, raw], timeout_s)
        return (self.client_id, self.incarnation, self.seq)

    def submit_many(self, payloads: list[bytes], *, timeout_s: float = 5.0) -> list[tuple[int, int, int]]:
        """Sign and queue several updates in one message."""
        raws = []
        stamps = []
        for p in payloads:
            raws.append(self.make_update(p))
            stamps.append((self.client_id, self.incarnation, self.seq))
        self._send([P.SUBMIT, *raws], timeout_s)
        return stamps

    def send_raw(self, raws: list[bytes], *, timeout_s: float = 5.0) -> None:
        """Queue already signed updates (``make_update``), e.g. to resubmit one."""
        self._send([P.SUBMIT, *raws], timeout_s)

    def _send(self, parts: list[bytes], timeout_s: float) -> None:
        assert self._sock is not None, "closed"
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self._sock.send_multipart(parts, zmq.NOBLOCK)
                self._last_send = time.monotonic()
                return
            except zmq.Again:
                if time.monotonic() >= deadline:
                    raise QueueFull(f"{self.queue_max} messages queued towards the daemon") from None
                time.sleep(0.001)

    # ------------------------------------------------------------ stream

    _pending_notice: int | None = None

    def poll(self, timeout_s: float = 0.0) -> list[Item]:
        """Whatever arrived within ``timeout_s`` (at least one item if any came)."""
        assert self._sock is not None, "closed"
        sock: zmq.Socket = self._sock  # type: ignore[type-arg]
        out: list[Item] = []
        if self._pending_notice is not None:
            out.append(StateTransferNeeded(self._pending_notice, at_attach=True))
            self._pending_notice = None
        deadline = time.monotonic() + timeout_s
        while True:
            now = time.monotonic()
            if now - self._last_send >= P.PING_PERIOD_S:
                try:
                    sock.send_multipart([P.PING], zmq.NOBLOCK)
                    self._last_send = now
                except zmq.Again:
                    pass
            wait = 0.0 if out else max(0.0, min(deadline - now, P.PING_PERIOD_S))
            if not sock.poll(wait * 1000):
                if out or time.monotonic() >= deadline:
                    return out
                continue
            while True:
                try:
                    parts = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self._on_message(parts, out)
                sock = self._sock  # a REFUSED makes us attach again, on a new socket
                if len(out) >= 4096:
                    return out

    def stream(self, timeout_s: float | None = None) -> Iterator[Item]:
        """Items until ``timeout_s`` passes with nothing new (forever if None)."""
        while True:
            items = self.poll(P.PING_PERIOD_S if timeout_s is None else timeout_s)
            if not items and timeout_s is not None:
                return
            yield from items

    def _on_message(self, parts: list[bytes], out: list[Item]) -> None:
        kind = parts[0]
        if kind == P.DELIVER and len(parts) == 3 and len(parts[1]) == _DELIVER_HEAD:
            ordinal = int.from_bytes(parts[1][:8], "big")
            last = parts[1][8]
            events = [Event(*e) for e in msgpack.unpackb(parts[2])]
            if last:
                held = self._parts.pop(ordinal, None)
                if held is not None:
                    events = held + events
                if ordinal < self.next_ordinal - 1:
                    return  # already seen (a reconnect can repeat nothing, but be safe)
                self.next_ordinal = ordinal + 1
                out.append(Ordinal(ordinal, tuple(events)))
            else:
                self._parts.setdefault(ordinal, []).extend(events)
        elif kind == P.NOTICE:
            ordinal = msgpack.unpackb(parts[1])
            self._parts.clear()
            self.next_ordinal = max(self.next_ordinal, ordinal + 1)
            out.append(StateTransferNeeded(ordinal))
        elif kind == P.REFUSED:
            # The daemon forgot us (it restarted): attach again.
            self._attach()
            self.reattached += 1
        elif kind == P.WELCOME:
            pass
