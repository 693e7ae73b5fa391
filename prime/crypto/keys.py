"""Key files: the layout ``bin/gen_keys`` writes and the loaders a replica uses.

Layout of a keys folder (keys/README.md says the same for operators)::

    manifest.json                 n, f, k, client range, modulus bits, creation time
    servers/server_<id>.key       32-byte Ed25519 seed, raw (private, mode 0600)
    servers/server_<id>.pub       32-byte Ed25519 public key, raw
    servers/server_<id>.curve_key 32-byte Curve25519 secret key of its links, raw (private, 0600)
    servers/server_<id>.curve_pub 32-byte Curve25519 public key of its links, raw
    clients/client_<id>.key       the same for client ids N+1 .. N+clients
    clients/client_<id>.pub
    threshold/public.json         Shoup threshold RSA public key and verification keys
    threshold/share_<id>.key      server <id>'s threshold key share, JSON (private, 0600)

Private files are created with mode 0600 from the start (``os.open``), and the
loaders refuse one that group or others may read, as ssh does: a key that others
could have copied no longer proves anything. Every problem with a file raises
``KeyFileError`` naming the file and the problem (docs/design.md section 7, "Errors and bad input").
The manifest is written last, so a folder with a manifest holds a complete set.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from prime.crypto import threshold
from prime.crypto.sign import PUBLIC_KEY_SIZE, SEED_SIZE, SigningKey, VerifyKey
from prime.errors import CryptoError, KeyFileError

MANIFEST_NAME: Final = "manifest.json"
MANIFEST_FORMAT: Final = "prime-keys-manifest/v1"
SERVERS_DIR: Final = "servers"
CLIENTS_DIR: Final = "clients"
THRESHOLD_DIR: Final = "threshold"
THRESHOLD_PUBLIC_NAME: Final = "public.json"
PRIVATE_MODE: Final = 0o600
PUBLIC_MODE: Final = 0o644
DIRECTORY_MODE: Final = 0o700
JSON_FILE_BYTES_MAX: Final = threshold.KEY_FILE_BYTES_MAX
RAW_FILE_BYTES_MAX: Final = 4096  # read cap for 32-byte raw keys, so a wrong size is reported


# --- Layout ---------------------------------------------------------------------------------


def server_key_path(keys_dir: str | Path, server_id: int) -> Path:
    return Path(keys_dir) / SERVERS_DIR / f"server_{server_id}.key"


def server_pub_path(keys_dir: str | Path, server_id: int) -> Path:
    return Path(keys_dir) / SERVERS_DIR / f"server_{server_id}.pub"


def server_curve_key_path(keys_dir: str | Path, server_id: int) -> Path:
    return Path(keys_dir) / SERVERS_DIR / f"server_{server_id}.curve_key"


def server_curve_pub_path(keys_dir: str | Path, server_id: int) -> Path:
    return Path(keys_dir) / SERVERS_DIR / f"server_{server_id}.curve_pub"


def client_key_path(keys_dir: str | Path, client_id: int) -> Path:
    return Path(keys_dir) / CLIENTS_DIR / f"client_{client_id}.key"


def client_pub_path(keys_dir: str | Path, client_id: int) -> Path:
    return Path(keys_dir) / CLIENTS_DIR / f"client_{client_id}.pub"


def threshold_public_path(keys_dir: str | Path) -> Path:
    return Path(keys_dir) / THRESHOLD_DIR / THRESHOLD_PUBLIC_NAME


def threshold_share_path(keys_dir: str | Path, server_id: int) -> Path:
    return Path(keys_dir) / THRESHOLD_DIR / f"share_{server_id}.key"


def manifest_path(keys_dir: str | Path) -> Path:
    return Path(keys_dir) / MANIFEST_NAME


def existing_key_files(keys_dir: str | Path) -> list[Path]:
    """Files of this layout present in ``keys_dir`` (what --force replaces)."""
    root = Path(keys_dir)
    found = [manifest_path(root)] if manifest_path(root).exists() else []
    patterns = {SERVERS_DIR: "server_*", CLIENTS_DIR: "client_*", THRESHOLD_DIR: "*"}
    for folder, pattern in patterns.items():
        if (root / folder).is_dir():
            found += sorted(path for path in (root / folder).glob(pattern) if path.is_file())
    return found


# --- The manifest ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyManifest:
    """What a keys folder was generated for."""

    n: int
    f: int
    k: int
    threshold: int  # 2f+k+1 shares make a threshold signature
    client_first: int  # N+1
    client_count: int
    modulus_bits: int
    public_exponent: int
    created_utc: str
    deterministic: bool  # generated from --seed: for tests only

    @property
    def client_ids(self) -> range:
        return range(self.client_first, self.client_first + self.client_count)

    def to_json(self) -> bytes:
        document = {
            "format": MANIFEST_FORMAT,
            "n": self.n,
            "f": self.f,
            "k": self.k,
            "threshold": self.threshold,
            "servers": [1, self.n],
            "clients": {"first": self.client_first, "count": self.client_count},
            "threshold_modulus_bits": self.modulus_bits,
            "threshold_public_exponent": self.public_exponent,
            "created_utc": self.created_utc,
            "deterministic": self.deterministic,
        }
        return (json.dumps(document, indent=2) + "\n").encode("utf-8")


def _manifest_invalid(document: dict[str, Any]) -> str | None:
    """The first problem with a parsed manifest, or None."""
    if document.get("format") != MANIFEST_FORMAT:
        return f"format is {document.get('format')!r}, expected {MANIFEST_FORMAT!r}"
    integers = ("n", "f", "k", "threshold", "threshold_modulus_bits", "threshold_public_exponent")
    for name in integers:
        value = document.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            return f"field {name!r} must be a non-negative integer"
    n, f, k = document["n"], document["f"], document["k"]
    if n != 3 * f + 2 * k + 1:
        return f"n = {n} is not 3f+2k+1 for f = {f}, k = {k}"
    if document["threshold"] != 2 * f + k + 1:
        return f"threshold = {document['threshold']} is not 2f+k+1 = {2 * f + k + 1}"
    if document.get("servers") != [1, n]:
        return f"field 'servers' must be [1, {n}]"
    clients = document.get("clients")
    if (
        not isinstance(clients, dict)
        or set(clients) != {"first", "count"}
        or clients["first"] != n + 1
        or not isinstance(clients["count"], int)
        or isinstance(clients["count"], bool)
        or clients["count"] < 0
    ):
        return f'field \'clients\' must be {{"first": {n + 1}, "count": C >= 0}}'
    if not isinstance(document.get("created_utc"), str):
        return "field 'created_utc' must be a string"
    if not isinstance(document.get("deterministic"), bool):
        return "field 'deterministic' must be true or false"
    return None


def load_manifest(keys_dir: str | Path) -> KeyManifest:
    path = manifest_path(keys_dir)
    data = _read(path, size_max=JSON_FILE_BYTES_MAX)
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise KeyFileError(f"{path}: corrupt: not valid JSON ({error})") from None
    if not isinstance(document, dict):
        raise KeyFileError(f"{path}: corrupt: expected a JSON object")
    reason = _manifest_invalid(document)
    if reason is not None:
        raise KeyFileError(f"{path}: corrupt: {reason}")
    return KeyManifest(
        n=document["n"],
        f=document["f"],
        k=document["k"],
        threshold=document["threshold"],
        client_first=document["clients"]["first"],
        client_count=document["clients"]["count"],
        modulus_bits=document["threshold_modulus_bits"],
        public_exponent=document["threshold_public_exponent"],
        created_utc=document["created_utc"],
        deterministic=document["deterministic"],
    )


# --- Loaders --------------------------------------------------------------------------------


def _read(path: Path, *, size_max: int, private: bool = False) -> bytes:
    """A regular file's bytes, at most ``size_max`` of them; a private file must not
    be accessible to group or others. Opened first and checked with fstat, so the
    file checked is the file read."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
    try:
        descriptor = os.open(path, flags)
    except FileNotFoundError:
        raise KeyFileError(f"{path}: missing (run bin/gen_keys, or pass --keys)") from None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise KeyFileError(
                f"{path}: is a symbolic link; key files must be regular files"
            ) from None
        raise KeyFileError(f"{path}: cannot open ({error.strerror})") from None
    with os.fdopen(descriptor, "rb") as file:
        status = os.fstat(file.fileno())
        if not stat.S_ISREG(status.st_mode):
            raise KeyFileError(f"{path}: not a regular file")
        mode = stat.S_IMODE(status.st_mode)
        if private and mode & 0o077:
            raise KeyFileError(
                f"{path}: private key file has mode {mode:04o}, readable by group or others; "
                f"refusing it (chmod 600 {path}, or regenerate if it may have leaked)"
            )
        data = file.read(size_max + 1)
    if len(data) > size_max:
        raise KeyFileError(f"{path}: larger than {size_max} bytes")
    return data


def _read_exact(path: Path, size: int, what: str, *, private: bool) -> bytes:
    data = _read(path, size_max=RAW_FILE_BYTES_MAX, private=private)
    if len(data) != size:
        raise KeyFileError(f"{path}: wrong size: {len(data)} bytes, expected a {size}-byte {what}")
    return data


def _load_signing(key_path: Path, pub_path: Path) -> SigningKey:
    seed = _read_exact(key_path, SEED_SIZE, "Ed25519 seed", private=True)
    try:
        key = SigningKey(seed)
    except CryptoError as error:
        raise KeyFileError(f"{key_path}: corrupt: {error}") from None
    if pub_path.exists():
        public = _read_exact(pub_path, PUBLIC_KEY_SIZE, "Ed25519 public key", private=False)
        if public != key.verify_key.public:
            raise KeyFileError(f"{key_path}: does not match {pub_path} (keys from two runs?)")
    return key


def _load_verify(path: Path) -> VerifyKey:
    public = _read_exact(path, PUBLIC_KEY_SIZE, "Ed25519 public key", private=False)
    try:
        return VerifyKey(public)
    except CryptoError as error:
        raise KeyFileError(f"{path}: corrupt: {error}") from None


def load_signing_key(keys_dir: str | Path, server_id: int) -> SigningKey:
    """Server ``server_id``'s Ed25519 key (checked against its .pub if present)."""
    return _load_signing(server_key_path(keys_dir, server_id), server_pub_path(keys_dir, server_id))


def load_client_signing_key(keys_dir: str | Path, client_id: int) -> SigningKey:
    """Client ``client_id``'s Ed25519 key (client ids are > N)."""
    return _load_signing(client_key_path(keys_dir, client_id), client_pub_path(keys_dir, client_id))


def load_verify_keys(keys_dir: str | Path) -> dict[int, VerifyKey]:
    """Public keys of every server 1..N and every client the manifest lists, by id."""
    manifest = load_manifest(keys_dir)
    keys = {
        server: _load_verify(server_pub_path(keys_dir, server))
        for server in range(1, manifest.n + 1)
    }
    for client in manifest.client_ids:
        keys[client] = _load_verify(client_pub_path(keys_dir, client))
    assert len(keys) == manifest.n + manifest.client_count
    return keys


def load_threshold_public(keys_dir: str | Path) -> threshold.PublicKey:
    path = threshold_public_path(keys_dir)
    data = _read(path, size_max=JSON_FILE_BYTES_MAX)
    try:
        return threshold.PublicKey.from_bytes(data)
    except (KeyFileError, CryptoError) as error:
        raise KeyFileError(f"{path}: corrupt: {error}") from None


def load_threshold_share(keys_dir: str | Path, server_id: int) -> threshold.KeyShare:
    """Server ``server_id``'s threshold key share (which embeds the public key)."""
    path = threshold_share_path(keys_dir, server_id)
    data = _read(path, size_max=JSON_FILE_BYTES_MAX, private=True)
    try:
        share = threshold.KeyShare.from_bytes(data)
    except (KeyFileError, CryptoError) as error:
        raise KeyFileError(f"{path}: corrupt: {error}") from None
    if share.index != server_id:
        raise KeyFileError(f"{path}: holds the share of server {share.index}, not {server_id}")
    return share


@dataclass(frozen=True, slots=True)
class ServerKeys:
    """Everything one replica needs, loaded and cross-checked."""

    manifest: KeyManifest
    signing_key: SigningKey
    verify_keys: dict[int, VerifyKey]
    threshold_public: threshold.PublicKey
    threshold_share: threshold.KeyShare


def load_server_keys(keys_dir: str | Path, server_id: int, *, f: int, k: int) -> ServerKeys:
    """Load server ``server_id``'s keys and check that they were made for this
    configuration (f, k) and belong together."""
    manifest = load_manifest(keys_dir)
    where = manifest_path(keys_dir)
    if (manifest.f, manifest.k) != (f, k):
        raise KeyFileError(
            f"{where}: keys were generated for f = {manifest.f}, k = {manifest.k} (N = "
            f"{manifest.n}) but the configuration has f = {f}, k = {k}; rerun bin/gen_keys"
        )
    if not 1 <= server_id <= manifest.n:
        raise KeyFileError(f"{where}: server {server_id} is not in 1..{manifest.n}")
    public = load_threshold_public(keys_dir)
    share = load_threshold_share(keys_dir, server_id)
    public_path = threshold_public_path(keys_dir)
    if (public.players, public.threshold) != (manifest.n, manifest.threshold):
        raise KeyFileError(
            f"{public_path}: a ({public.players}, {public.threshold}) sharing, but the manifest "
            f"says ({manifest.n}, {manifest.threshold})"
        )
    if share.public != public:
        raise KeyFileError(
            f"{threshold_share_path(keys_dir, server_id)}: belongs to another threshold key "
            f"than {public_path}"
        )
    return ServerKeys(
        manifest=manifest,
        signing_key=load_signing_key(keys_dir, server_id),
        verify_keys=load_verify_keys(keys_dir),
        threshold_public=public,
        threshold_share=share,
    )


CURVE_KEY_SIZE: Final = 32


def curve_public_of(secret: bytes) -> bytes:
    """The Curve25519 public key of a 32-byte secret (libzmq's own derivation)."""
    import zmq
    from zmq.utils import z85

    return bytes(z85.decode(zmq.curve_public(z85.encode(secret))))


@dataclass(frozen=True, slots=True)
class CurveKeys:
    """One replica's CurveZMQ key pair for its links and every replica's public key
    (raw 32 bytes each; ``peers`` maps server id -> public key, itself included)."""

    secret: bytes
    public: bytes
    peers: dict[int, bytes]


def load_curve_keys(keys_dir: str | Path, server_id: int, n: int) -> CurveKeys:
    """Server ``server_id``'s link key pair (checked to belong together) and the link
    public keys of servers 1..n, which must be distinct."""
    secret_path = server_curve_key_path(keys_dir, server_id)
    secret = _read_exact(secret_path, CURVE_KEY_SIZE, "Curve25519 secret key", private=True)
    peers = {
        server: _read_exact(
            server_curve_pub_path(keys_dir, server), CURVE_KEY_SIZE, "Curve25519 public key",
            private=False,
        )
        for server in range(1, n + 1)
    }
    public = curve_public_of(secret)
    if peers[server_id] != public:
        raise KeyFileError(
            f"{secret_path}: does not match {server_curve_pub_path(keys_dir, server_id)} "
            "(keys from two runs?)"
        )
    if len(set(peers.values())) != n:
        raise KeyFileError(f"{Path(keys_dir) / SERVERS_DIR}: two servers have the same curve_pub")
    return CurveKeys(secret=secret, public=public, peers=peers)


# --- Writing (bin/gen_keys) -----------------------------------------------------------------


def _write(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode`` from the start (never chmod afterwards, so a
    private key is never briefly readable); fails if the file exists."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    descriptor = os.open(path, flags, mode)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def write_private(path: Path, data: bytes) -> None:
    _write(path, data, PRIVATE_MODE)


def write_public(path: Path, data: bytes) -> None:
    _write(path, data, PUBLIC_MODE)


def make_layout(keys_dir: str | Path) -> None:
    """Create the folder and its sub-folders (mode 0700 where we create them)."""
    root = Path(keys_dir)
    root.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
    for folder in (SERVERS_DIR, CLIENTS_DIR, THRESHOLD_DIR):
        (root / folder).mkdir(mode=DIRECTORY_MODE, exist_ok=True)


def remove_files(paths: Iterable[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
