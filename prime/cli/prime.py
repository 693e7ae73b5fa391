"""``bin/prime``: start one Prime replica, or check its configuration.

``prime -i ID`` starts the supervisor (``prime.proc.supervisor``), which runs the
replica as processes (docs/design.md section 9): network I/O, signature-verification
workers and the ordering engine. ``--check-config`` loads and validates conf/def.toml and the
address file, with ``-i`` also loads and cross-checks that server's key files,
prints the effective configuration and exits 0. Any operator mistake prints one
line naming the file and the key and exits 2.

Paths given on the command line are taken relative to the caller's working
directory; the defaults (conf/def.toml, keys/) resolve against the checkout, so
``bin/prime`` works from any directory.

The daemon refuses to run under ``python -O``: our asserts are the safety net
that stops a replica whose state broke an invariant, and stopping is safer than
diverging (docs/design.md section 7, "Errors and bad input").
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from prime.config import Config, format_config, load_config
from prime.crypto.keys import ServerKeys, load_curve_keys, load_server_keys
from prime.errors import ConfigError, KeyFileError

EXIT_OK = 0
EXIT_USAGE = 2
ROOT = Path(__file__).resolve().parents[2]


def run_replica(cfg: Config, server_id: int, keys_dir: Path, keys: ServerKeys) -> int:
    """Run replica ``server_id`` until it stops; returns the exit status."""
    from prime.proc.supervisor import Supervisor

    return Supervisor(cfg, server_id, keys, keys_dir).run()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prime",
        description=(
            "Run one Prime replica (a Byzantine fault-tolerant ordering daemon; "
            "N = 3f+2k+1 replicas), or check its configuration with --check-config."
        ),
        epilog=(
            "Typical use: bin/gen_keys once, then `bin/prime -i 1 --check-config`, then "
            "`bin/prime -i ID` on every replica. Exit status: 0 ok, 2 configuration or "
            "key-file error (one line on stderr naming the file and the key)."
        ),
    )
    parser.add_argument(
        "-i",
        "--id",
        dest="server_id",
        type=int,
        metavar="ID",
        help="this replica's server id, 1..N (required unless --check-config)",
    )
    parser.add_argument(
        "--conf", default=str(ROOT / "conf" / "def.toml"), help="tunables (default: %(default)s)"
    )
    parser.add_argument(
        "--address", default=None, help="address file (default: address.config beside --conf)"
    )
    parser.add_argument(
        "--keys", default=str(ROOT / "keys"), help="keys folder from bin/gen_keys (default: %(default)s)"
    )
    parser.add_argument(
        "--log-dir",
        default=None,
        help="write this replica's log (stderr of every process) to DIR/prime-ID.log",
    )
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="validate the configuration (and, with -i, this server's key files), "
        "print the effective configuration and exit",
    )
    return parser


def _fail(message: str) -> int:
    print(f"prime: {' '.join(message.split())}", file=sys.stderr)
    return EXIT_USAGE


def _load(args: argparse.Namespace) -> tuple[Config, ServerKeys | None]:
    cfg = load_config(args.conf, args.address)
    if args.server_id is None:
        return cfg, None
    if not 1 <= args.server_id <= cfg.n:
        raise ConfigError(
            f"{cfg.address_path}: -i {args.server_id} is not a server; allowed: 1..{cfg.n} "
            f"(N = 3f+2k+1 from {cfg.def_path})"
        )
    keys = load_server_keys(args.keys, args.server_id, f=cfg.f, k=cfg.k)
    if cfg.networking.link_security == "curve":
        load_curve_keys(args.keys, args.server_id, cfg.n)  # the net process loads them again
    return cfg, keys


def _keys_report(cfg: Config, server_id: int, keys_dir: str, keys: ServerKeys) -> str:
    manifest = keys.manifest
    summary = (
        f"# keys: {keys_dir} ok for server {server_id} (created {manifest.created_utc}, "
        f"threshold RSA {keys.threshold_public.n.bit_length()} bits, "
        f"{len(keys.verify_keys)} verify keys)"
    )
    lines = [summary]
    if manifest.deterministic:
        lines.append("# warning: keys were derived from gen_keys --seed: tests only")
    if manifest.client_count != cfg.system.num_clients:
        lines.append(
            f"# warning: keys cover {manifest.client_count} clients but [system] num_clients = "
            f"{cfg.system.num_clients}; updates from clients without keys will not verify"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    if sys.flags.optimize:
        return _fail(
            "refusing to run under python -O (or PYTHONOPTIMIZE): assertions are Prime's "
            "safety net against a replica whose state broke an invariant"
        )
    parser = _parser()
    args = parser.parse_args(argv)
    if args.server_id is None and not args.check_config:
        parser.error("-i ID is required (or pass --check-config)")
    try:
        cfg, keys = _load(args)
    except (ConfigError, KeyFileError) as error:
        return _fail(str(error))
    if args.check_config:
        output = format_config(cfg)
        if keys is not None:
            output += _keys_report(cfg, args.server_id, args.keys, keys)
        sys.stdout.write(output)
        return EXIT_OK
    assert keys is not None
    from prime.proc.supervisor import unsupported

    problem = unsupported(cfg)
    if problem:
        return _fail(problem)
    if not cfg.networking.libzmq_unpatched_ok:
        from prime.net import libzmq

        problem = libzmq.problem()
        if problem:
            return _fail(f"replica {args.server_id}: {problem}")
    from prime.net.sockets import PORTS_HINT, ports_in_use

    busy = ports_in_use(cfg, args.server_id)
    if busy:
        return _fail(f"replica {args.server_id}: port{'s' if len(busy) > 1 else ''} in use: "
                     f"{', '.join(busy)}; {PORTS_HINT}")
    if args.log_dir:
        try:
            log_dir = Path(args.log_dir)
            log_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(log_dir / f"prime-{args.server_id}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as error:
            return _fail(f"--log-dir {args.log_dir}: {error.strerror}")
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    return run_replica(cfg, args.server_id, Path(args.keys), keys)


if __name__ == "__main__":
    sys.exit(main())
