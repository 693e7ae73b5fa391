"""``bin/gen_keys``: the offline dealer. Writes every key a cluster needs.

For the configuration in conf/def.toml (N = 3f+2k+1) it makes an Ed25519 key pair
per server 1..N and per client N+1..N+clients, and a Shoup threshold RSA key
dealt as an (N, 2f+k+1) sharing (docs/protocol.md sections 4.1 and 4.3), then a manifest. The
layout is in ``prime.crypto.keys`` and keys/README.md. Finding the two safe
primes is the slow part (seconds to minutes at 2048 bits); the dealer reports
its progress and the total time is printed at the end.

``--seed HEX`` derives every key from the seed, for tests and reproducible
benchmarks only: anyone who knows the seed knows every private key.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import struct
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from prime.config import load_config
from prime.crypto import keys as keyfiles
from prime.crypto import threshold
from prime.crypto.sign import SigningKey
from prime.errors import ConfigError, CryptoError, KeyFileError

SEED_TAG = b"prime/gen_keys/v1"
CLIENTS_MAX = 100_000  # the [system] num_clients bound
EXIT_USAGE = 2


def _derived_seed(seed: bytes, role: bytes, identifier: int) -> bytes:
    """A 32-byte Ed25519 seed for (role, id) from the master seed; domain-separated."""
    material = SEED_TAG + b"\0" + role + b"\0" + struct.pack(">I", identifier) + seed
    return hashlib.sha256(material).digest()


def _signing_key(seed: bytes | None, role: bytes, identifier: int) -> SigningKey:
    if seed is None:
        return SigningKey.generate()
    return SigningKey(_derived_seed(seed, role, identifier))


def _parse_seed(text: str) -> bytes:
    try:
        seed = bytes.fromhex(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not hex: {text!r}") from None
    if not seed:
        raise argparse.ArgumentTypeError("empty seed")
    return seed


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gen_keys",
        description=(
            "Generate Prime's keys: Ed25519 key pairs for servers 1..N and clients "
            "N+1..N+C, and a Shoup threshold RSA key shared (N, 2f+k+1) among the servers. "
            "N, f, k, C and the modulus size come from the configuration."
        ),
        epilog="Private files are created with mode 0600. Existing keys are kept unless --force.",
    )
    parser.add_argument("--conf", default="conf/def.toml", help="tunables (default: %(default)s)")
    parser.add_argument(
        "--address", default=None, help="address file (default: address.config beside --conf)"
    )
    parser.add_argument("--out", default="keys", help="folder to write (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="replace existing keys in --out")
    parser.add_argument(
        "--bits",
        type=int,
        default=None,
        help="threshold RSA modulus size (default: [cryptography] threshold_modulus_bits)",
    )
    parser.add_argument(
        "--seed",
        type=_parse_seed,
        default=None,
        metavar="HEX",
        help="derive every key from this seed (tests only: the seed reveals every key)",
    )
    parser.add_argument(
        "--clients",
        type=int,
        default=None,
        metavar="C",
        help="number of client key pairs (default: [system] num_clients)",
    )
    return parser


def _say(line: str) -> None:
    print(f"gen_keys: {line}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.conf, args.address)
    except ConfigError as error:
        print(f"gen_keys: {error}", file=sys.stderr)
        return EXIT_USAGE
    bits = cfg.cryptography.threshold_modulus_bits if args.bits is None else args.bits
    if bits % 2 or not threshold.MODULUS_BITS_MIN <= bits <= threshold.MODULUS_BITS_MAX:
        parser.error(
            f"--bits {bits}: allowed: an even number in "
            f"{threshold.MODULUS_BITS_MIN}..{threshold.MODULUS_BITS_MAX}"
        )
    clients = cfg.system.num_clients if args.clients is None else args.clients
    if not 0 <= clients <= CLIENTS_MAX:
        parser.error(f"--clients {clients}: allowed: 0..{CLIENTS_MAX}")
    out = Path(args.out)
    existing = keyfiles.existing_key_files(out)
    if existing and not args.force:
        print(
            f"gen_keys: {out} already holds keys ({existing[0]} and {len(existing) - 1} more); "
            "refusing to overwrite them. Pass --force to replace them.",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        seconds = _generate(
            cfg.f,
            cfg.k,
            clients,
            bits,
            cfg.cryptography.threshold_public_exponent,
            args.seed,
            out,
            existing,
        )
    except (CryptoError, KeyFileError, OSError) as error:
        print(f"gen_keys: failed: {error}", file=sys.stderr)
        return 1
    print(
        f"gen_keys: wrote {cfg.n} server and {clients} client key pairs and a "
        f"({cfg.n}, {cfg.quorum}) threshold RSA key of {bits} bits to {out} in {seconds:.2f} s"
    )
    return 0


def _generate(
    f: int,
    k: int,
    clients: int,
    bits: int,
    exponent: int,
    seed: bytes | None,
    out: Path,
    existing: list[Path],
) -> float:
    """Make every key in memory first (the slow threshold dealing included), then
    replace the old files and write the manifest last. Returns the elapsed seconds."""
    started = time.perf_counter()
    n, quorum = 3 * f + 2 * k + 1, 2 * f + k + 1
    if seed is not None:
        _say("deterministic keys from --seed: for tests only")
    _say(
        f"dealing the ({n}, {quorum}) threshold RSA key: searching two {bits // 2}-bit safe primes"
    )
    threshold_seed = (
        None if seed is None else hashlib.sha256(SEED_TAG + b"\0threshold\0" + seed).digest()
    )
    public, shares = threshold.deal(n, quorum, bits, e=exponent, seed=threshold_seed, progress=_say)
    assert [share.index for share in shares] == list(range(1, n + 1))
    servers = {server: _signing_key(seed, b"server", server) for server in range(1, n + 1)}
    # CurveZMQ link keys (link_security = "curve"): any 32 bytes are a Curve25519 secret
    curve = {
        server: os.urandom(32) if seed is None else _derived_seed(seed, b"curve", server)
        for server in range(1, n + 1)
    }
    client_ids = range(n + 1, n + 1 + clients)
    client_keys = {client: _signing_key(seed, b"client", client) for client in client_ids}

    keyfiles.remove_files([keyfiles.manifest_path(out)])  # an incomplete set has no manifest
    keyfiles.remove_files(existing)
    keyfiles.make_layout(out)
    for server, key in servers.items():
        keyfiles.write_private(keyfiles.server_key_path(out, server), key.seed)
        keyfiles.write_public(keyfiles.server_pub_path(out, server), key.verify_key.public)
        keyfiles.write_private(keyfiles.server_curve_key_path(out, server), curve[server])
        keyfiles.write_public(
            keyfiles.server_curve_pub_path(out, server), keyfiles.curve_public_of(curve[server])
        )
    for client, key in client_keys.items():
        keyfiles.write_private(keyfiles.client_key_path(out, client), key.seed)
        keyfiles.write_public(keyfiles.client_pub_path(out, client), key.verify_key.public)
    keyfiles.write_public(keyfiles.threshold_public_path(out), public.to_bytes())
    for share in shares:
        keyfiles.write_private(keyfiles.threshold_share_path(out, share.index), share.to_bytes())
    manifest = keyfiles.KeyManifest(
        n=n,
        f=f,
        k=k,
        threshold=quorum,
        client_first=n + 1,
        client_count=clients,
        modulus_bits=bits,
        public_exponent=exponent,
        created_utc=datetime.now(UTC).isoformat(timespec="seconds"),
        deterministic=seed is not None,
    )
    keyfiles.write_public(keyfiles.manifest_path(out), manifest.to_json())
    return time.perf_counter() - started


if __name__ == "__main__":
    sys.exit(main())
