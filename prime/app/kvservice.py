"""``bin/kv serve -i ID``: the replicated key-value store (``prime.app.kv``) as a service.

One process per replica: it is the application of daemon ID (``prime.app.client``)
and serves a small HTTP API on 127.0.0.1, port ``port_base + ID``:

    PUT    /kv/<key>            body = value; answers once the update is ordered and
                                applied here: {"ordinal": X, "stamp": [...]}
    DELETE /kv/<key>            the same, for a delete
    GET    /kv/<key>            the value (header X-Prime-Ordinal: as of which ordinal)
    GET    /status              last applied ordinal, data digest, transfers
    GET    /digest?ordinal=X    sha256 of our snapshot as of the end of X (peers vote)
    GET    /snapshot?ordinal=X  that snapshot (msgpack)

Reads are local: a GET answers from this replica's state as of the ordinal it
names, which may be behind another replica's.

State transfer (README "For application writers", rule 3). After a notice the
store stops applying; at our own marker X (the daemon's CLIENT_STATE_TRANSFER,
or our own ``sync`` when we attached late) a transfer thread asks every peer for
its snapshot digest at X and waits until f+1 distinct peers report the same one
(at least one of them is correct, so that is the correct state); then it fetches
the snapshot from those peers in turn and installs the first whose sha256 is that
digest. A Byzantine peer can only lie in the minority or serve bytes that fail the
check. Deliveries after X are held meanwhile and applied after the install.

Peers are told apart by their port on loopback; across machines their answers
would need signatures (or TLS) to count as distinct replicas.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prime.app import kv

KEY_BYTES_MAX = 1024
VALUE_BYTES_MAX = 4096  # one update must fit a PO-Request (po_request_bytes_max)
WRITE_TIMEOUT_S = 20.0  # a write not applied by then answers 504 (it may still apply later)
RESUBMIT_S = 5.0  # the same signed update again (same stamp: applied once)
PEER_TIMEOUT_S = 1.0
SNAPSHOT_BYTES_MAX = 256 << 20  # a longer answer is cut, fails the digest check, and the next peer is asked
HELD_MAX = 200_000  # ordinals held during a transfer before we give up and start again
PORT_OFFSET = 1000  # default port_base = [networking] base_port + 1000


def default_port_base(base_port: int) -> int:
    """Replica i's KV service listens on ``base_port + 1000 + i`` (8101.. for conf/def.toml)."""
    return base_port + PORT_OFFSET


# ------------------------------------------------------------------ the vote


@dataclass
class Vote:
    """One round of asking peers for their snapshot at X (for logs and tests)."""

    digests: dict[int, str | None] = field(default_factory=dict)  # peer -> digest (None: no answer)
    agreed: str | None = None
    rejected: list[int] = field(default_factory=list)  # peers whose snapshot failed the digest check
    source: int | None = None


def agree_and_fetch(
    peers: list[int],
    f: int,
    get_digest: Callable[[int], str | None],
    get_blob: Callable[[int], bytes | None],
) -> tuple[bytes | None, Vote]:
    """The snapshot f+1 distinct peers vouch for, checked against its digest; None if
    no digest has f+1 votes yet, or no voucher served matching bytes."""
    vote = Vote()
    for peer in peers:
        vote.digests[peer] = get_digest(peer)
    tally: dict[str, list[int]] = {}
    for peer, digest in vote.digests.items():
        if digest is not None:
            tally.setdefault(digest, []).append(peer)
    winners = [d for d, who in tally.items() if len(who) >= f + 1]
    if not winners:
        return None, vote
    # Two digests with f+1 votes each cannot happen with at most f liars among the
    # voters; should it, neither is trusted.
    if len(winners) > 1:
        return None, vote
    vote.agreed = winners[0]
    for peer in tally[vote.agreed]:
        blob = get_blob(peer)
        if blob is not None and kv.KvStore.snapshot_digest(blob) == vote.agreed:
            vote.source = peer
            return blob, vote
        vote.rejected.append(peer)
    return None, vote


def _http_get(port: int, path: str, timeout_s: float, max_bytes: int) -> bytes | None:
    """A peer's answer, at most ``max_bytes`` (a Byzantine peer's endless body is cut)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout_s) as r:
            return r.read(max_bytes)
    except (urllib.error.URLError, OSError, ValueError):
        return None


# ---------------------------------------------------------------- the service


@dataclass
class _Write:
    payload: bytes
    done: threading.Event = field(default_factory=threading.Event)
    stamp: tuple[int, int, int] | None = None
    raw: bytes = b""
    submitted: float = 0.0
    first: float = 0.0
    ordinal: int | None = None


class KvService:
    """The store, the stream from the daemon and the HTTP server of one replica."""

    def __init__(self, replica: int, *, n: int, f: int, app: Any, port_base: int,
                 log: Callable[[str], None] = print) -> None:
        self.replica = replica
        self.n, self.f = n, f
        self.app = app  # prime.app.client.Application (owned by the main loop's thread)
        self.port_base = port_base
        self.log = log
        self.store = kv.KvStore(replica, client=app.client_id)
        self.lock = threading.Lock()  # the store, between the main loop and HTTP threads
        self.requests: queue.Queue[_Write] = queue.Queue()
        self.pending: dict[tuple[int, int, int], _Write] = {}
        self.held: list[Any] = []
        self.target: int | None = None  # the ordinal X whose state we are fetching
        self.generation = 0
        self.results: queue.Queue[tuple[int, int, bytes, Vote]] = queue.Queue()
        self.transfers = 0
        self.last_transfer: dict[str, Any] | None = None
        self.stopping = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", port_base + replica), _handler(self))
        self.server.daemon_threads = True

    # ---------------------------------------------------------- main loop

    def serve_forever(self) -> None:
        http = threading.Thread(target=self.server.serve_forever, name="kv-http", daemon=True)
        http.start()
        try:
            while not self.stopping.is_set():
                self._step()
        finally:
            self.stopping.set()
            self.server.shutdown()
            self.server.server_close()
            for w in self.pending.values():
                w.done.set()

    def _step(self) -> None:
        from prime.app.client import Ordinal, StateTransferNeeded

        now = time.monotonic()
        while True:
            try:
                w = self.requests.get_nowait()
            except queue.Empty:
                break
            w.raw = self.app.make_update(w.payload)
            w.stamp = (self.app.client_id, self.app.incarnation, self.app.seq)
            w.first = w.submitted = now
            self.app.send_raw([w.raw])
            self.pending[w.stamp] = w
        for w in list(self.pending.values()):
            if now - w.first >= WRITE_TIMEOUT_S:
                del self.pending[w.stamp]  # type: ignore[arg-type]
                w.done.set()  # ordinal None: the handler answers 504
            elif now - w.submitted >= RESUBMIT_S:
                w.submitted = now
                self.app.send_raw([w.raw])
        for item in self.app.poll(0.01):
            if isinstance(item, StateTransferNeeded):
                self._on_notice(item.ordinal, item.at_attach)
            elif isinstance(item, Ordinal):
                self._on_ordinal(item)
        while True:
            try:
                generation, x, blob, vote = self.results.get_nowait()
            except queue.Empty:
                break
            if generation == self.generation and self.target == x:
                self._install(x, blob, vote)

    def _on_notice(self, ordinal: int, at_attach: bool) -> None:
        with self.lock:
            self.store.on_state_transfer_needed(ordinal)
        self.held.clear()
        self.target = None
        self.generation += 1
        self.log(f"kv {self.replica}: state transfer needed (ordinals up to {ordinal} "
                 f"{'went by before we attached' if at_attach else 'skipped'})")
        if at_attach:
            # No daemon marker will come for ordinals that went by before we attached:
            # order our own sync and take the state as of its ordinal.
            self.app.send_raw([self.app.make_update(kv.sync(time.time_ns()))])

    def _on_ordinal(self, item: Any) -> None:
        if self.target is not None:
            self.held.append(item)
            if len(self.held) > HELD_MAX:
                self.log(f"kv {self.replica}: {HELD_MAX} ordinals held during a transfer; starting again")
                self._on_notice(item.ordinal, True)
            return
        with self.lock:
            want = self.store.apply(item.ordinal, item.events)
        if want is not None:
            self._start_transfer(want[1])
            return
        self._answer_writes(item.ordinal)

    def _answer_writes(self, ordinal: int) -> None:
        if not self.pending:
            return
        with self.lock:
            done = [s for s in self.pending if s in self.store.applied]
        for s in done:
            w = self.pending.pop(s)
            w.ordinal = ordinal
            w.done.set()

    # ------------------------------------------------------ state transfer

    def _start_transfer(self, x: int) -> None:
        self.target = x
        self.generation += 1
        self.log(f"kv {self.replica}: fetching the state as of ordinal {x} from f+1={self.f + 1} agreeing peers")
        threading.Thread(target=self._fetch, args=(self.generation, x), name="kv-transfer", daemon=True).start()

    def _fetch(self, generation: int, x: int) -> None:
        peers = [p for p in range(1, self.n + 1) if p != self.replica]

        def digest(peer: int) -> str | None:
            body = _http_get(self.port_base + peer, f"/digest?ordinal={x}", PEER_TIMEOUT_S, 4096)
            try:
                d = json.loads(body)["digest"] if body else None
            except (ValueError, KeyError, TypeError):
                return None
            return d if isinstance(d, str) and len(d) == 64 else None

        def blob(peer: int) -> bytes | None:
            return _http_get(self.port_base + peer, f"/snapshot?ordinal={x}", 10.0, SNAPSHOT_BYTES_MAX)

        last_log = time.monotonic()
        while not self.stopping.is_set() and generation == self.generation:
            got, vote = agree_and_fetch(peers, self.f, digest, blob)
            if got is not None:
                self.results.put((generation, x, got, vote))
                return
            if time.monotonic() - last_log >= 5.0:
                last_log = time.monotonic()
                hint = ""
                if all(d is None for d in vote.digests.values()):
                    # Every peer lacks the state too: typically all services attached after
                    # their daemons had ordered something, so no replica holds it.
                    hint = ("; no peer has it (are they transferring too? start the KV services "
                            "with or before their daemons)")
                self.log(f"kv {self.replica}: no f+1 agreement on ordinal {x} yet: {vote.digests}"
                         + (f", bad snapshots from {vote.rejected}" if vote.rejected else "") + hint)
            self.stopping.wait(0.2)

    def _install(self, x: int, blob: bytes, vote: Vote) -> None:
        with self.lock:
            try:
                self.store.restore(blob)
            except Exception as error:  # f+1 vouched for it, so only a bug gets here
                self.log(f"kv {self.replica}: snapshot for {x} does not load ({error}); asking again")
                self._start_transfer(x)
                return
            self.store.ordinal = x
        self.target = None
        self.transfers += 1
        liars = sorted(p for p, d in vote.digests.items() if d is not None and d != vote.agreed)
        self.last_transfer = {"ordinal": x, "source": vote.source, "digest": vote.agreed,
                              "outvoted": liars, "bad_snapshots": vote.rejected}
        self.log(f"kv {self.replica}: installed the state as of ordinal {x} from replica {vote.source} "
                 f"({sum(d == vote.agreed for d in vote.digests.values())} peers agree"
                 + (f"; outvoted {liars}" if liars else "") + ")")
        self._answer_writes(x)
        held, self.held = self.held, []
        for item in held:
            if item.ordinal > x:
                self._on_ordinal(item)

    # ------------------------------------------------------------- queries

    def write(self, payload: bytes) -> _Write:
        w = _Write(payload)
        self.requests.put(w)
        w.done.wait(WRITE_TIMEOUT_S + 1.0)
        return w

    def status(self) -> dict[str, Any]:
        with self.lock:
            return {
                "replica": self.replica,
                "ordinal": self.store.ordinal,
                "digest": self.store.digest(),
                "keys": len(self.store.data),
                "transferring": self.store.transferring,
                "transfers": self.transfers,
                "last_transfer": self.last_transfer,
                "pending_writes": len(self.pending),
            }


def _handler(service: KvService) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "prime-kv"
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # one line per request would drown the service's own lines

        def _send(self, code: int, body: bytes, ctype: str = "application/json",
                  headers: dict[str, str] | None = None) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def _json(self, code: int, obj: Any) -> None:
            self._send(code, (json.dumps(obj) + "\n").encode())

        def _error(self, code: int, text: str) -> None:
            self.close_connection = True  # a body we did not read must not become the next request
            self._json(code, {"error": text})

        def _key(self, path: str) -> bytes | None:
            key = urllib.parse.unquote_to_bytes(path[len("/kv/"):])
            if not key or len(key) > KEY_BYTES_MAX:
                self._error(400, f"the key must be 1..{KEY_BYTES_MAX} bytes")
                return None
            return key

        def _ordinal_arg(self, query: str) -> int | None:
            try:
                x = int(urllib.parse.parse_qs(query)["ordinal"][0])
            except (KeyError, ValueError, IndexError):
                self._error(400, "give ?ordinal=X")
                return None
            return x

        def do_GET(self) -> None:  # noqa: N802
            url = urllib.parse.urlsplit(self.path)
            if url.path == "/status":
                self._json(200, service.status())
            elif url.path.startswith("/kv/"):
                key = self._key(url.path)
                if key is None:
                    return
                with service.lock:
                    busy = service.store.transferring
                    value = service.store.data.get(key)
                    ordinal = service.store.ordinal
                if busy:
                    self._error(503, "state transfer in progress")
                elif value is None:
                    self._send(404, b"", headers={"X-Prime-Ordinal": str(ordinal)})
                else:
                    self._send(200, value, "application/octet-stream", {"X-Prime-Ordinal": str(ordinal)})
            elif url.path in ("/digest", "/snapshot"):
                x = self._ordinal_arg(url.query)
                if x is None:
                    return
                with service.lock:
                    blob = service.store.snapshot_at(x)
                if blob is None:
                    self._error(404, f"no snapshot as of ordinal {x} (not reached yet, or no marker there)")
                elif url.path == "/digest":
                    self._json(200, {"ordinal": x, "digest": kv.KvStore.snapshot_digest(blob)})
                else:
                    self._send(200, blob, "application/octet-stream")
            else:
                self._error(404, "paths: /kv/<key>, /status, /digest?ordinal=X, /snapshot?ordinal=X")

        def _do_write(self, delete: bool) -> None:
            url = urllib.parse.urlsplit(self.path)
            if not url.path.startswith("/kv/"):
                self._error(404, "write to /kv/<key>")
                return
            key = self._key(url.path)
            if key is None:
                return
            try:
                length = int(self.headers.get("Content-Length", "0"))
            except ValueError:
                length = -1
            if length < 0 or length > VALUE_BYTES_MAX:
                self._error(400, f"the value must be 0..{VALUE_BYTES_MAX} bytes")
                return
            value = self.rfile.read(length) if length else b""
            w = service.write(kv.delete(key) if delete else kv.put(key, value))
            if w.ordinal is None:
                self._error(504, f"not applied within {WRITE_TIMEOUT_S:g} s (it may still be ordered later)")
            else:
                self._json(200, {"ordinal": w.ordinal, "stamp": list(w.stamp or ())})

        def do_PUT(self) -> None:  # noqa: N802
            self._do_write(False)

        def do_DELETE(self) -> None:  # noqa: N802
            self._do_write(True)

    return Handler
