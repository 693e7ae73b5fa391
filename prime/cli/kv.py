"""``bin/kv``: the replicated key-value service and its command-line client.

    bin/kv serve -i 1                 # the KV application of daemon 1 (bin/prime -i 1)
    bin/kv put greeting hello -r 2    # through replica 2's service; prints the ordinal
    bin/kv get greeting -r 3          # read replica 3's copy
    bin/kv del greeting
    bin/kv status -r 4                # last applied ordinal, digest, state transfers

Replica i's service listens on 127.0.0.1, port ``--port-base`` + i; the default
port base is ``[networking] base_port`` of ``--conf`` plus 1000 (8100 with
conf/def.toml, so replica 1 serves on 8101). Exit status: 0 ok, 1 the service
or daemon is unreachable, refused us, or the key is not there, 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, NoReturn

ROOT = Path(__file__).resolve().parents[2]
CLIENT_TIMEOUT_S = 30.0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"kv: {message} (bin/kv --help)\n")
        sys.exit(2)


class Usage(Exception):
    """Bad usage found after parsing (exit 2)."""


class Failed(Exception):
    """The service or daemon said no, or could not be reached (exit 1)."""


def _replica_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a replica id is a number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"a replica id is >= 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--conf", default=str(ROOT / "conf" / "def.toml"),
                        help="the cluster's def.toml (default: %(default)s)")
    common.add_argument("--port-base", type=int, default=None,
                        help="replica i's service is on 127.0.0.1:PORT_BASE+i (default: [networking] "
                        "base_port + 1000, i.e. 8101.. with conf/def.toml)")
    p = _Parser(
        prog="kv",
        description="A replicated key-value store on Prime: each replica's service is the application "
        "of its daemon; writes are ordered by Prime and applied at every replica.",
        epilog="Examples: bin/kv serve -i 1 (next to bin/prime -i 1); bin/kv put colour blue -r 2; "
        "bin/kv get colour -r 3; bin/kv del colour; bin/kv status -r 4. Exit status: 0 ok, 1 "
        "unreachable, refused or not found, 2 bad usage.",
    )
    sub = p.add_subparsers(dest="command", metavar="{serve,put,get,del,status}")
    sub.required = True
    s = sub.add_parser("serve", parents=[common], help="attach to daemon ID and serve its HTTP API",
                       description="Attach the KV application to daemon -i ID and serve PUT/GET/DELETE "
                       "/kv/<key>, GET /status, /digest?ordinal=X and /snapshot?ordinal=X on loopback.")
    s.add_argument("-i", "--id", type=_replica_id, required=True, help="the daemon's (replica's) id")
    s.add_argument("--keys", default=str(ROOT / "keys"), help="keys folder (default: %(default)s)")
    s.add_argument("--wait-s", type=float, default=60.0,
                   help="how long to wait for the daemon to come up (default 60)")
    for name, what in (("put", "store VALUE under KEY"), ("get", "print KEY's value"),
                       ("del", "delete KEY"), ("status", "print the replica's status as JSON")):
        c = sub.add_parser(name, parents=[common], help=what, description=f"{what[0].upper()}{what[1:]} "
                           "through one replica's KV service.")
        if name != "status":
            c.add_argument("key", help="the key (any text)")
        if name == "put":
            c.add_argument("value", help="the value (text)")
        c.add_argument("-r", "--replica", type=_replica_id, default=1,
                       help="which replica's service to talk to (default 1)")
    return p


def _port_base(args: argparse.Namespace) -> tuple[int, int, int]:
    """(port base, N, f) from the flags and the configuration."""
    from prime.app.kvservice import default_port_base
    from prime.config import load_config

    cfg = load_config(args.conf)
    base = args.port_base if args.port_base is not None else default_port_base(cfg.networking.base_port)
    if not (1024 <= base + 1 and base + cfg.n <= 65535):
        raise Usage(f"--port-base {base} puts ports outside 1024..65535")
    return base, cfg.n, cfg.system.f


def serve(args: argparse.Namespace) -> int:
    from prime.app.client import AppError, Application, BadClientId, Refused
    from prime.app.kvservice import KvService
    from prime.app.protocol import socket_path
    from prime.config import load_config

    base, n, f = _port_base(args)
    if args.id > n:
        raise Usage(f"-i {args.id}: replica ids are 1..{n} in {args.conf}")
    stopping = {"now": False}
    service: list[KvService] = []

    def stop(signum: int, frame: Any) -> None:
        stopping["now"] = True
        if service:
            service[0].stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    deadline = time.monotonic() + args.wait_s
    said = False
    # Attach the moment the daemon's socket appears: the ordinals it delivers before
    # we attach never reach us, and then only peers can give us the state (start the
    # KV services with, or before, their daemons).
    sock = socket_path(load_config(args.conf).networking.client_ipc_dir, args.id)
    while True:
        if not sock.exists():
            if stopping["now"]:
                return 0
            if time.monotonic() >= deadline:
                raise Failed(f"no daemon socket {sock} within {args.wait_s:g} s; "
                             f"is bin/prime -i {args.id} running with this --conf?")
            if not said:
                print(f"kv {args.id}: waiting for daemon {args.id}", file=sys.stderr, flush=True)
                said = True
            time.sleep(0.02)
            continue
        try:
            app = Application.connect(args.id, conf=args.conf, keys=args.keys, connect_timeout_s=2.0)
            break
        except (Refused, BadClientId) as error:
            raise Failed(f"daemon {args.id} refused us: {error}") from None
        except AppError as error:
            if stopping["now"]:
                return 0
            if time.monotonic() >= deadline:
                raise Failed(f"daemon {args.id} did not answer within {args.wait_s:g} s ({error}); "
                             f"is bin/prime -i {args.id} running with this --conf?") from None
            if not said:
                print(f"kv {args.id}: waiting for daemon {args.id}", file=sys.stderr, flush=True)
                said = True
            time.sleep(0.5)
    try:
        try:
            svc = KvService(args.id, n=n, f=f, app=app, port_base=base,
                            log=lambda line: print(line, file=sys.stderr, flush=True))
        except OSError as error:
            raise Failed(f"cannot listen on 127.0.0.1:{base + args.id}: {error.strerror}") from None
        service.append(svc)
        if stopping["now"]:
            svc.stopping.set()
        print(f"kv {args.id}: serving http://127.0.0.1:{base + args.id} as the application of daemon "
              f"{args.id} (client {app.client_id})", file=sys.stderr, flush=True)
        svc.serve_forever()
    finally:
        app.close()
    print(f"kv {args.id}: stopped", file=sys.stderr, flush=True)
    return 0


def _request(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes, dict[str, str]]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=CLIENT_TIMEOUT_S) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read(), dict(error.headers)
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise Failed(f"no KV service at 127.0.0.1:{port} ({reason}); start it with bin/kv serve") from None


def _error_text(body: bytes) -> str:
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return body.decode("utf-8", "replace").strip() or "no details"


def client(args: argparse.Namespace) -> int:
    base, n, _ = _port_base(args)
    if args.replica > n:
        raise Usage(f"-r {args.replica}: replica ids are 1..{n} in {args.conf}")
    port = base + args.replica
    where = f"replica {args.replica}"
    if args.command == "status":
        code, body, _ = _request(port, "GET", "/status")
        if code != 200:
            raise Failed(f"{where}: {_error_text(body)}")
        print(json.dumps(json.loads(body), indent=1))
        return 0
    path = "/kv/" + urllib.parse.quote(args.key.encode("utf-8"), safe="")
    if args.command == "get":
        code, body, headers = _request(port, "GET", path)
        if code == 404:
            raise Failed(f"{args.key}: not found at {where} (as of ordinal {headers.get('X-Prime-Ordinal', '?')})")
        if code != 200:
            raise Failed(f"{where}: {_error_text(body)}")
        sys.stdout.buffer.write(body + b"\n")
        return 0
    method = "PUT" if args.command == "put" else "DELETE"
    code, body, _ = _request(port, method, path, args.value.encode("utf-8") if args.command == "put" else None)
    if code != 200:
        raise Failed(f"{where}: {_error_text(body)}")
    answer = json.loads(body)
    verb = "put" if args.command == "put" else "deleted"
    print(f"{verb} {args.key} at ordinal {answer['ordinal']} ({where})")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from prime.errors import ConfigError, KeyFileError

    try:
        return serve(args) if args.command == "serve" else client(args)
    except (Usage, ConfigError, KeyFileError) as error:
        print(f"kv: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    except Failed as error:
        print(f"kv: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
