"""Shoup threshold RSA: the typed Python twin of ``native/tshare.h``.

Implements the scheme of V. Shoup, "Practical Threshold Signatures" (Eurocrypt 2000),
as docs/protocol.md section 4.3 prescribes for the view-change proof:

* Dealing (Shoup's Protocol 1, "the dealer"): ``n = pq`` with safe primes
  ``p = 2p'+1`` and ``q = 2q'+1``, ``m = p'q'``, ``d = e^-1 mod m`` for a prime
  ``e > players``. A random polynomial ``F`` of degree ``threshold - 1`` over ``Z_m``
  with ``F(0) = d`` gives player ``i`` the key share ``s_i = F(i)``. The verification
  keys are a random square ``v`` and ``v_i = v^{s_i}``.
* Signature share ("generating a signature share"): ``x_i = x^{2 Delta s_i}`` with ``Delta = players!``
  and ``x`` the full-domain hash of the message into ``Z_n`` (docs/protocol.md section 4.3; docs/hardening.md FDH).
* Proof of correctness ("proof of correctness"): a Fiat-Shamir proof, with SHA-256 as ``H'``,
  that ``log_{x~}(x_i^2) = log_v(v_i)`` where ``x~ = x^{4 Delta}``. It lets a combiner
  identify and skip a bad share (docs/hardening.md H7).
* Combining ("combining shares"): for a set ``S`` of ``threshold`` share indices the integer
  Lagrange coefficients ``lambda_{0,j} = Delta * prod_{j' != j} j' / (j' - j)`` give
  ``w = prod x_j^{2 lambda_{0,j}}`` with ``w^e = x^{4 Delta^2}``; with
  ``4 Delta^2 a + e b = 1`` the signature is ``y = w^a x^b``, a plain RSA signature:
  ``y^e = x (mod n)``.

All exponentiations run in C (GMP, through cffi); exponentiations with a secret
exponent use ``mpz_powm_sec``. Errors are ``prime.errors.CryptoError`` subclasses,
except that key files which do not parse raise ``prime.errors.KeyFileError``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from prime.errors import BadSignature, CryptoError, KeyFileError

try:
    # A compiled extension, invisible to mypy (its errors are ignored in pyproject.toml).
    from prime.crypto._tshare import ffi, lib  # type: ignore[import-not-found,unused-ignore]
except ImportError as exc:  # pragma: no cover - depends on the build
    raise ImportError(
        "prime.crypto._tshare is not built: run `python prime/crypto/_build.py` "
        "or `pip install -e .` from the repository root"
    ) from exc

log = logging.getLogger(__name__)

PLAYERS_MAX = 64  # Delta = 64! has 296 bits, so share exponents stay near the modulus size
MODULUS_BITS_MIN = 512  # tests only; docs/protocol.md section 4.3 recommends >= 2048
MODULUS_BITS_MAX = 8192
PUBLIC_EXPONENT_MAX = 2**64  # e is a small prime > players (C Prime used 17)
CHALLENGE_BITS = 256  # L1 in Shoup's proof: the output size of H' (SHA-256)
NONCE_EXTRA_BITS = 2 * CHALLENGE_BITS  # r has L(n) + 2 L1 bits, as in Shoup's proof
FDH_EXTRA_BYTES = 16  # hash 128 bits more than n, so reducing mod n has bias <= 2^-128
SAFE_PRIME_WINDOW = 4096  # candidates per ts_safe_prime_step call (~30 ms at 1024 bits)
SAFE_PRIME_STEPS_MAX = 100_000  # > 100 times the expected steps even at 4096-bit primes
PROGRESS_EVERY_STEPS = 32  # one progress line per this many search steps
KEY_FILE_BYTES_MAX = 1 << 20

FDH_TAG = b"prime/threshold-rsa/fdh/v1"
PROOF_TAG = b"prime/threshold-rsa/share-proof/v1"
NONCE_TAG = b"prime/threshold-rsa/proof-nonce/v1"
DEAL_TAG = b"prime/threshold-rsa/deal/v1"
PUBLIC_KEY_FORMAT = "prime-threshold-rsa-public-key/v1"
KEY_SHARE_FORMAT = "prime-threshold-rsa-key-share/v1"

SHARE_ENCODING_VERSION = 1
SHARE_HEADER = struct.Struct(">BHHHH")  # version, index, len(value), len(proof_c), len(proof_z)
PROOF_Z_BITS_SLACK = NONCE_EXTRA_BITS + 1  # z = s_i c + r < 2^(L(n) + 2 L1 + 1)
SHARE_PROOF_Z_BYTES_MAX = (MODULUS_BITS_MAX + PROOF_Z_BITS_SLACK + 7) // 8

assert PLAYERS_MAX < 2**16, "a share index must fit the u16 of SHARE_HEADER"
assert SHARE_PROOF_Z_BYTES_MAX < 2**16, "proof lengths must fit the u16s of SHARE_HEADER"
assert PUBLIC_EXPONENT_MAX < 2 ** (MODULUS_BITS_MIN // 2 - 2), "e must never divide m"

_STATUS_REASONS = {
    lib.TS_ERR_ARGUMENT: "argument out of range",
    lib.TS_ERR_SIZE: "result larger than its buffer",
    lib.TS_ERR_NO_MEMORY: "out of memory",
    lib.TS_ERR_NOT_INVERTIBLE: "element is not invertible",
}


# --- Keys and shares ------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class PublicKey:
    """The group key: RSA modulus and exponent, plus Shoup's verification keys."""

    n: int
    e: int
    players: int
    threshold: int
    v: int
    verification_keys: tuple[int, ...]  # v_i = v^{s_i} for i = 1..players

    def __post_init__(self) -> None:
        reason = _public_key_invalid(self)
        if reason is not None:
            raise CryptoError(f"invalid threshold public key: {reason}")

    def __repr__(self) -> str:
        return (
            f"PublicKey(n_bits={self.n.bit_length()}, e={self.e}, players={self.players}, "
            f"threshold={self.threshold})"
        )

    def to_bytes(self) -> bytes:
        """Serializes to self-describing JSON (integers in hex, a ``format`` field)."""
        return _dump_document(_public_key_fields(self))

    @classmethod
    def from_bytes(cls, data: bytes) -> PublicKey:
        """Parses ``to_bytes`` output; raises KeyFileError on anything malformed."""
        what = "threshold public key"
        return _public_key_from_document(_load_document(data, PUBLIC_KEY_FORMAT, what), what)


@dataclass(frozen=True)
class KeyShare:
    """Player ``index``'s secret share ``s_i = F(i)`` and the group's public key."""

    index: int
    secret: int = field(repr=False)
    public: PublicKey

    def __post_init__(self) -> None:
        if not _is_int(self.index) or not _is_int(self.secret):
            raise CryptoError("invalid key share: index and secret must be integers")
        if not isinstance(self.public, PublicKey):
            raise CryptoError("invalid key share: public must be a PublicKey")
        if not 1 <= self.index <= self.public.players:
            raise CryptoError(
                f"invalid key share: index {self.index} not in 1..{self.public.players}"
            )
        if not 0 <= self.secret < self.public.n:
            raise CryptoError("invalid key share: secret out of range")

    def to_bytes(self) -> bytes:
        """Serializes to self-describing JSON that embeds the public key."""
        return _dump_document(
            {
                "format": KEY_SHARE_FORMAT,
                "index": self.index,
                "secret": _hex(self.secret),
                "public": _public_key_fields(self.public),
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> KeyShare:
        """Parses ``to_bytes`` output; raises KeyFileError if it is malformed or if the
        secret does not match its verification key ``v_i = v^{s_i}``."""
        what = "threshold key share"
        document = _load_document(data, KEY_SHARE_FORMAT, what)
        _expect_fields(document, {"format", "index", "secret", "public"}, what)
        public_document = document["public"]
        if not isinstance(public_document, dict):
            raise KeyFileError(f"{what}: field 'public' must be an object")
        public = _public_key_from_document(public_document, f"{what}, field 'public'")
        index = _int_field(document, "index", what)
        secret = _hex_field(document, "secret", what)
        try:
            share = cls(index=index, secret=secret, public=public)
        except CryptoError as exc:
            raise KeyFileError(f"{what}: {exc}") from exc
        expected = public.verification_keys[index - 1]
        if _powm(public.v, secret, public.n, secret=True) != expected:
            raise KeyFileError(
                f"{what}: secret does not match verification key {index} (corrupt or mismatched)"
            )
        return share


@dataclass(frozen=True)
class SignatureShare:
    """Player ``index``'s share ``x_i`` of a signature, with Shoup's proof ``(c, z)``."""

    index: int
    value: int
    proof_c: int
    proof_z: int

    def __post_init__(self) -> None:
        reason = _share_shape_invalid(self)
        if reason is not None:
            raise CryptoError(f"invalid signature share: {reason}")

    def to_bytes(self) -> bytes:
        """Encodes as a fixed header (version, index, three lengths) plus three minimal
        big-endian integers."""
        value, proof_c, proof_z = _be(self.value), _be(self.proof_c), _be(self.proof_z)
        header = SHARE_HEADER.pack(
            SHARE_ENCODING_VERSION, self.index, len(value), len(proof_c), len(proof_z)
        )
        return header + value + proof_c + proof_z

    @classmethod
    def from_bytes(cls, data: bytes) -> SignatureShare:
        """Decodes ``to_bytes`` output; raises CryptoError on malformed or non-canonical
        input, so every share has exactly one encoding."""
        if not isinstance(data, bytes | bytearray) or len(data) < SHARE_HEADER.size:
            raise CryptoError("signature share: too short or not bytes")
        version, index, value_len, c_len, z_len = SHARE_HEADER.unpack_from(data)
        if version != SHARE_ENCODING_VERSION:
            raise CryptoError(f"signature share: unknown encoding version {version}")
        if len(data) != SHARE_HEADER.size + value_len + c_len + z_len:
            raise CryptoError("signature share: length does not match its header")
        offset = SHARE_HEADER.size
        fields = []
        for length in (value_len, c_len, z_len):
            chunk = bytes(data[offset : offset + length])
            if chunk[:1] == b"\x00":
                raise CryptoError("signature share: integer with a leading zero byte")
            fields.append(int.from_bytes(chunk, "big"))
            offset += length
        return cls(index=index, value=fields[0], proof_c=fields[1], proof_z=fields[2])


# --- The scheme -----------------------------------------------------------------------------


def deal(
    players: int,
    threshold: int,
    modulus_bits: int = 2048,
    *,
    e: int = 65537,
    seed: bytes | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[PublicKey, list[KeyShare]]:
    """Trusted dealer of Shoup's Protocol 1: returns the public key and the shares, in
    index order. A ``seed`` makes the result deterministic (tests, benchmarks); without
    one, randomness comes from ``os.urandom``. ``progress`` receives short human lines
    while the safe primes are searched."""
    reason = _deal_arguments_invalid(players, threshold, modulus_bits, e)
    if reason is not None:
        raise CryptoError(f"deal: {reason}")
    report = progress if progress is not None else _ignore_progress
    random = _RandomBytes(seed, DEAL_TAG)
    prime_bits = modulus_bits // 2
    p = _search_safe_prime(prime_bits, random, "safe prime 1/2", report)
    q = p
    while q == p:
        q = _search_safe_prime(prime_bits, random, "safe prime 2/2", report)
    n = p * q
    assert n.bit_length() == modulus_bits, "both primes have their two top bits set"
    m = (p // 2) * (q // 2)  # p'q': the order of the group of squares Q_n
    d = _invert(e, m)
    coefficients = [d] + [random.below(m) for _ in range(threshold - 1)]
    share_secrets = [
        _evaluate_polynomial(coefficients, at=i, modulus=m) for i in range(1, players + 1)
    ]
    v = _random_square(n, random)
    report(f"computing {players} verification keys")
    public = PublicKey(
        n=n,
        e=e,
        players=players,
        threshold=threshold,
        v=v,
        verification_keys=tuple(_powm(v, s, n, secret=True) for s in share_secrets),
    )
    shares = [KeyShare(index=i, secret=s, public=public) for i, s in enumerate(share_secrets, 1)]
    return public, shares


def hash_to_zn(pub: PublicKey, message: bytes) -> int:
    """Full-domain hash of ``message`` into ``Z_n`` (docs/protocol.md section 4.3; docs/hardening.md FDH): SHA-256 in
    counter mode over a domain tag, the modulus and the message, stretched to
    ``FDH_EXTRA_BYTES`` more than ``n`` and reduced mod ``n``."""
    if not isinstance(message, bytes | bytearray | memoryview):
        raise CryptoError(f"message must be bytes, not {type(message).__name__}")
    modulus = _be(pub.n)
    prefix = hashlib.sha256(FDH_TAG)
    prefix.update(struct.pack(">H", len(modulus)) + modulus)
    prefix.update(struct.pack(">Q", len(message)) + message)
    length = len(modulus) + FDH_EXTRA_BYTES
    blocks = []
    for counter in range((length + 31) // 32):
        block = prefix.copy()
        block.update(struct.pack(">I", counter))
        blocks.append(block.digest())
    return int.from_bytes(b"".join(blocks)[:length], "big") % pub.n


def sign_share(
    share: KeyShare, message: bytes, *, nonce_seed: bytes | None = None
) -> SignatureShare:
    """Makes player ``share.index``'s signature share ``x_i = x^{2 Delta s_i}`` and its
    proof of correctness (Shoup's Protocol 1).

    The proof nonce ``r`` comes from ``os.urandom``. With ``nonce_seed`` it is derived
    from the seed, the secret and the message together, so tests are deterministic and
    reusing a seed for another message still does not reveal the secret."""
    pub = share.public
    n = pub.n
    x = hash_to_zn(pub, message)
    value = _powm(x, 2 * _delta(pub.players) * share.secret, n, secret=True)
    x_tilde = _powm(x, 4 * _delta(pub.players), n, secret=False)
    nonce_bits = n.bit_length() + NONCE_EXTRA_BITS
    if nonce_seed is None:
        r = _RandomBytes(None, NONCE_TAG).bits(nonce_bits)
    else:
        personal = _be(share.secret) + hashlib.sha256(message).digest()
        r = _RandomBytes(nonce_seed + personal, NONCE_TAG).bits(nonce_bits)
    v_commit = _powm(pub.v, r, n, secret=True)
    x_commit = _powm(x_tilde, r, n, secret=True)
    proof_c = _challenge(pub, share.index, x_tilde, value * value % n, v_commit, x_commit)
    return SignatureShare(
        index=share.index, value=value, proof_c=proof_c, proof_z=share.secret * proof_c + r
    )


def verify_share(pub: PublicKey, message: bytes, share: SignatureShare) -> bool:
    """Checks a share's proof of correctness (Shoup's Protocol 1): recomputes
    ``v^z v_i^-c`` and ``x~^z x_i^-2c`` and compares the challenge. Never raises."""
    if _share_invalid(pub, share) is not None or not isinstance(message, bytes):
        return False
    n = pub.n
    x = hash_to_zn(pub, message)
    x_tilde = _powm(x, 4 * _delta(pub.players), n, secret=False)
    value_squared = share.value * share.value % n
    verification_key = pub.verification_keys[share.index - 1]
    try:
        v_commit = _multi_powm([(pub.v, share.proof_z), (verification_key, -share.proof_c)], n)
        x_commit = _multi_powm([(x_tilde, share.proof_z), (value_squared, -share.proof_c)], n)
    except CryptoError:
        return False  # x_i or v_i shares a factor with n
    expected = _challenge(pub, share.index, x_tilde, value_squared, v_commit, x_commit)
    return share.proof_c == expected


def combine(
    pub: PublicKey,
    message: bytes,
    shares: Iterable[SignatureShare],
    *,
    verify_shares: bool = True,
) -> bytes:
    """Combines the first ``pub.threshold`` acceptable shares (distinct indices in
    1..players and, with ``verify_shares``, a valid proof) into an RSA signature
    (Shoup's Protocol 1). Bad shares are logged and skipped (docs/hardening.md H7). Returns
    ``y`` as big-endian bytes of the modulus length, after checking ``y^e = x``."""
    chosen = _choose_shares(pub, message, shares, verify_shares=verify_shares)
    if len(chosen) < pub.threshold:
        raise CryptoError(f"need {pub.threshold} valid shares, have {len(chosen)}")
    n = pub.n
    delta = _delta(pub.players)
    indices = sorted(chosen)
    w = _multi_powm(
        [(chosen[j].value, 2 * _lagrange_at_zero(indices, j, delta)) for j in indices], n
    )
    # w^e = x^{4 Delta^2}; gcd(4 Delta^2, e) = 1 because e is an odd prime > players.
    exponent_of_x = 4 * delta * delta
    a = _invert(exponent_of_x % pub.e, pub.e)
    b, remainder = divmod(1 - exponent_of_x * a, pub.e)
    assert remainder == 0 and exponent_of_x * a + pub.e * b == 1
    x = hash_to_zn(pub, message)
    signature = _be(_multi_powm([(w, a), (x, b)], n), length=_modulus_bytes(pub))
    if not verify(pub, message, signature):
        raise BadSignature("combined signature does not verify (a share without a valid proof?)")
    return signature


def combine_encoded(
    pub: PublicKey, message: bytes, encoded: Iterable[bytes], *, verify_shares: bool = True
) -> bytes | None:
    """``combine`` over shares as they travel (``SignatureShare.to_bytes``), as a driver
    answers the core's combine job: a malformed share is skipped like one whose proof
    fails (H7), and too few good shares give None instead of raising."""
    shares = []
    for raw in encoded:
        try:
            shares.append(SignatureShare.from_bytes(raw))
        except CryptoError:
            continue
    try:
        return combine(pub, message, shares, verify_shares=verify_shares)
    except CryptoError:
        return None


def verify(pub: PublicKey, message: bytes, signature: bytes) -> bool:
    """Checks an ordinary RSA signature: ``y^e = hash_to_zn(message) (mod n)``. Never raises."""
    if not isinstance(signature, bytes) or not isinstance(message, bytes):
        return False
    if len(signature) != _modulus_bytes(pub):
        return False
    y = int.from_bytes(signature, "big")
    if y >= pub.n:
        return False
    return _powm(y, pub.e, pub.n, secret=False) == hash_to_zn(pub, message)


# --- Scheme helpers -------------------------------------------------------------------------


@lru_cache(maxsize=PLAYERS_MAX)
def _delta(players: int) -> int:
    """Delta = players!, which makes every Lagrange coefficient an integer (Shoup, Protocol 1)."""
    return math.factorial(players)


def _lagrange_at_zero(indices: Sequence[int], j: int, delta: int) -> int:
    """lambda^S_{0,j} = Delta * prod_{j' in S, j' != j} (0 - j') / (j - j'), an integer."""
    numerator, denominator = delta, 1
    for other in indices:
        if other != j:
            numerator *= other
            denominator *= other - j
    quotient, remainder = divmod(numerator, denominator)
    assert remainder == 0, "Delta = players! makes the coefficient integral"
    return quotient


def _challenge(
    pub: PublicKey, index: int, x_tilde: int, value_squared: int, v_commit: int, x_commit: int
) -> int:
    """H'(v, x~, v_i, x_i^2, v^r, x~^r) of Shoup's proof, with SHA-256 and a domain
    tag, the modulus and the index bound in; every element is fixed-length."""
    length = _modulus_bytes(pub)
    digest = hashlib.sha256(PROOF_TAG)
    digest.update(struct.pack(">HH", length, index))
    for element in (
        pub.n,
        pub.v,
        x_tilde,
        pub.verification_keys[index - 1],
        value_squared,
        v_commit,
        x_commit,
    ):
        digest.update(_be(element, length=length))
    return int.from_bytes(digest.digest(), "big")


def _choose_shares(
    pub: PublicKey, message: bytes, shares: Iterable[SignatureShare], *, verify_shares: bool
) -> dict[int, SignatureShare]:
    """The first ``threshold`` acceptable shares, by index; stops verifying once enough."""
    chosen: dict[int, SignatureShare] = {}
    for share in shares:
        if len(chosen) == pub.threshold:
            break
        reason = _share_invalid(pub, share)
        if reason is None and share.index in chosen:
            reason = "duplicate index"
        if reason is None and verify_shares and not verify_share(pub, message, share):
            reason = "proof of correctness fails"
        if reason is not None:
            log.warning(
                "threshold share skipped: %s (index %s)", reason, getattr(share, "index", "?")
            )
            continue
        chosen[share.index] = share
    return chosen


def _search_safe_prime(
    bits: int, random: _RandomBytes, label: str, report: Callable[[str], None]
) -> int:
    """Calls ts_safe_prime_step with fresh random starts until it finds a safe prime."""
    out = ffi.new("unsigned char[]", (bits + 7) // 8)
    covered = ffi.new("size_t *")
    candidates = 0
    for step in range(1, SAFE_PRIME_STEPS_MAX + 1):
        start = random.bytes((bits + 7) // 8)
        status = lib.ts_safe_prime_step(
            *_arg(start), bits, SAFE_PRIME_WINDOW, out, len(out), covered
        )
        candidates += covered[0]
        if status == lib.TS_OK:
            report(f"found {label} ({bits} bits) after {candidates} candidates")
            prime = _result(out)
            assert prime.bit_length() == bits and prime % 2 == 1
            return prime
        if status != lib.TS_NOT_FOUND:
            _ensure(status, "safe prime search")
        if step % PROGRESS_EVERY_STEPS == 0:
            report(f"searching {label}: {candidates} candidates")
    raise CryptoError(f"no {bits}-bit safe prime after {candidates} candidates")


def _random_square(n: int, random: _RandomBytes) -> int:
    """A random element of Q_n, which generates Q_n with overwhelming probability."""
    while True:
        r = random.below(n)
        if r > 1 and math.gcd(r, n) == 1:
            return r * r % n


def _evaluate_polynomial(coefficients: Sequence[int], *, at: int, modulus: int) -> int:
    """F(at) mod modulus by Horner's rule; coefficients[0] is F(0)."""
    result = 0
    for coefficient in reversed(coefficients):
        result = (result * at + coefficient) % modulus
    return result


def _ignore_progress(line: str) -> None:
    """Default progress sink."""


class _RandomBytes:
    """Randomness for the dealer and the proofs: ``os.urandom``, or (given a seed) a
    deterministic SHA-256 counter-mode stream for tests and benchmarks."""

    def __init__(self, seed: bytes | None, tag: bytes) -> None:
        if seed is not None and not isinstance(seed, bytes):
            raise CryptoError("seed must be bytes or None")
        self._key = None if seed is None else hashlib.sha256(tag + seed).digest()
        self._counter = 0

    def bytes(self, count: int) -> bytes:
        if self._key is None:
            return os.urandom(count)
        blocks = []
        for _ in range((count + 31) // 32):
            blocks.append(hashlib.sha256(self._key + struct.pack(">Q", self._counter)).digest())
            self._counter += 1
        return b"".join(blocks)[:count]

    def bits(self, count: int) -> int:
        """A uniform integer in [0, 2^count)."""
        return int.from_bytes(self.bytes((count + 7) // 8), "big") >> (-count % 8)

    def below(self, bound: int) -> int:
        """A uniform integer in [0, bound), by rejection sampling."""
        assert bound > 0
        while True:
            candidate = self.bits(bound.bit_length())
            if candidate < bound:
                return candidate


# --- Validation -----------------------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _deal_arguments_invalid(players: int, threshold: int, modulus_bits: int, e: int) -> str | None:
    if not all(_is_int(value) for value in (players, threshold, modulus_bits, e)):
        return "players, threshold, modulus_bits and e must be integers"
    if not 1 <= players <= PLAYERS_MAX:
        return f"players {players} not in 1..{PLAYERS_MAX}"
    if not 1 <= threshold <= players:
        return f"threshold {threshold} not in 1..players ({players})"
    if modulus_bits % 2 or not MODULUS_BITS_MIN <= modulus_bits <= MODULUS_BITS_MAX:
        return (
            f"modulus_bits {modulus_bits} must be even and in "
            f"{MODULUS_BITS_MIN}..{MODULUS_BITS_MAX}"
        )
    return _public_exponent_invalid(e, players)


def _public_exponent_invalid(e: int, players: int) -> str | None:
    if not 2 < e < PUBLIC_EXPONENT_MAX or e <= players or not _is_probable_prime(e):
        return f"e = {e} must be an odd prime with players ({players}) < e < 2^64"
    return None


def _public_key_invalid(key: PublicKey) -> str | None:
    integers = (key.n, key.e, key.players, key.threshold, key.v)
    if not all(_is_int(value) for value in integers):
        return "n, e, players, threshold and v must be integers"
    if not isinstance(key.verification_keys, tuple) or not all(
        _is_int(value) for value in key.verification_keys
    ):
        return "verification_keys must be a tuple of integers"
    if key.n % 2 == 0 or not MODULUS_BITS_MIN <= key.n.bit_length() <= MODULUS_BITS_MAX:
        return f"n must be odd with {MODULUS_BITS_MIN}..{MODULUS_BITS_MAX} bits"
    if not 1 <= key.players <= PLAYERS_MAX:
        return f"players {key.players} not in 1..{PLAYERS_MAX}"
    if not 1 <= key.threshold <= key.players:
        return f"threshold {key.threshold} not in 1..players ({key.players})"
    if len(key.verification_keys) != key.players:
        return f"{len(key.verification_keys)} verification keys for {key.players} players"
    if not all(1 < value < key.n for value in (key.v, *key.verification_keys)):
        return "v and the verification keys must lie in 2..n-1"
    return _public_exponent_invalid(key.e, key.players)


def _share_shape_invalid(share: SignatureShare) -> str | None:
    """Checks what a share can check without the public key (types and sizes)."""
    if not all(
        _is_int(value) for value in (share.index, share.value, share.proof_c, share.proof_z)
    ):
        return "fields must be integers"
    if not 1 <= share.index <= PLAYERS_MAX:
        return f"index {share.index} not in 1..{PLAYERS_MAX}"
    if min(share.value, share.proof_c, share.proof_z) < 0:
        return "negative field"
    if share.value.bit_length() > MODULUS_BITS_MAX:
        return "value too large"
    if share.proof_c.bit_length() > CHALLENGE_BITS:
        return "proof_c too large"
    if share.proof_z.bit_length() > MODULUS_BITS_MAX + PROOF_Z_BITS_SLACK:
        return "proof_z too large"
    return None


def _share_invalid(pub: PublicKey, share: object) -> str | None:
    """Checks a share's ranges against the public key, before any arithmetic."""
    if not isinstance(share, SignatureShare):
        return "not a SignatureShare"
    if not 1 <= share.index <= pub.players:
        return f"index not in 1..{pub.players}"
    if not 0 < share.value < pub.n:
        return "value not in 1..n-1"
    if share.proof_z.bit_length() > pub.n.bit_length() + PROOF_Z_BITS_SLACK:
        return "proof_z too large"
    return None


# --- Key files ------------------------------------------------------------------------------

_HEX = re.compile(r"[0-9a-f]{1,4096}")


def _hex(value: int) -> str:
    return format(value, "x")


def _public_key_fields(key: PublicKey) -> dict[str, Any]:
    return {
        "format": PUBLIC_KEY_FORMAT,
        "n": _hex(key.n),
        "e": key.e,
        "players": key.players,
        "threshold": key.threshold,
        "v": _hex(key.v),
        "verification_keys": [_hex(value) for value in key.verification_keys],
    }


def _public_key_from_document(document: dict[str, Any], what: str) -> PublicKey:
    if document.get("format") != PUBLIC_KEY_FORMAT:
        raise KeyFileError(
            f"{what}: format is {document.get('format')!r}, expected {PUBLIC_KEY_FORMAT!r}"
        )
    _expect_fields(
        document, {"format", "n", "e", "players", "threshold", "v", "verification_keys"}, what
    )
    verification_keys = document["verification_keys"]
    if not isinstance(verification_keys, list):
        raise KeyFileError(f"{what}: field 'verification_keys' must be a list")
    try:
        return PublicKey(
            n=_hex_field(document, "n", what),
            e=_int_field(document, "e", what),
            players=_int_field(document, "players", what),
            threshold=_int_field(document, "threshold", what),
            v=_hex_field(document, "v", what),
            verification_keys=tuple(
                _hex_value(value, f"verification_keys[{i}]", what)
                for i, value in enumerate(verification_keys)
            ),
        )
    except CryptoError as exc:
        raise KeyFileError(f"{what}: {exc}") from exc


def _dump_document(document: dict[str, Any]) -> bytes:
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8")


def _load_document(data: bytes, expected_format: str, what: str) -> dict[str, Any]:
    """Parses a JSON key file and checks its ``format`` field."""
    if not isinstance(data, bytes | bytearray):
        raise KeyFileError(f"{what}: expected bytes, got {type(data).__name__}")
    if len(data) > KEY_FILE_BYTES_MAX:
        raise KeyFileError(f"{what}: {len(data)} bytes, more than {KEY_FILE_BYTES_MAX}")
    try:
        document = json.loads(bytes(data).decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise KeyFileError(f"{what}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise KeyFileError(f"{what}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    if not isinstance(document, dict):
        raise KeyFileError(f"{what}: expected a JSON object")
    if document.get("format") != expected_format:
        raise KeyFileError(
            f"{what}: format is {document.get('format')!r}, expected {expected_format!r}"
        )
    return document


def _expect_fields(document: dict[str, Any], names: set[str], what: str) -> None:
    missing, unknown = names - document.keys(), document.keys() - names
    if missing:
        raise KeyFileError(f"{what}: missing field(s) {', '.join(sorted(missing))}")
    if unknown:
        raise KeyFileError(f"{what}: unknown field(s) {', '.join(sorted(unknown))}")


def _int_field(document: dict[str, Any], name: str, what: str) -> int:
    value = document[name]
    if not _is_int(value):
        raise KeyFileError(f"{what}: field {name!r} must be an integer")
    assert isinstance(value, int)
    return value


def _hex_field(document: dict[str, Any], name: str, what: str) -> int:
    return _hex_value(document[name], name, what)


def _hex_value(value: object, name: str, what: str) -> int:
    if not isinstance(value, str) or _HEX.fullmatch(value) is None:
        raise KeyFileError(f"{what}: field {name!r} must be a lowercase hex string")
    return int(value, 16)


# --- The C boundary (native/tshare.h) -------------------------------------------------------


def _ensure(status: int, operation: str) -> None:
    """Turns a ts_status from C into an exception; the one place that does."""
    if status == lib.TS_OK:
        return
    reason = _STATUS_REASONS.get(status, f"unknown status {status}")
    raise CryptoError(f"{operation}: {reason}")


def _modulus_bytes(pub: PublicKey) -> int:
    return (pub.n.bit_length() + 7) // 8


def _be(value: int, *, length: int | None = None) -> bytes:
    """Big-endian bytes of value >= 0: minimal length (0 -> b"") unless length is given."""
    assert value >= 0
    if length is None:
        length = (value.bit_length() + 7) // 8
    return value.to_bytes(length, "big")


def _arg(value: int | bytes) -> tuple[bytes, int]:
    """A number as the (pointer, length) pair of native/tshare.h."""
    data = value if isinstance(value, bytes) else _be(value)
    return data, len(data)


def _result(out: Any) -> int:
    return int.from_bytes(ffi.buffer(out), "big")


def _powm(base: int, exponent: int, modulus: int, *, secret: bool) -> int:
    """base^exponent mod modulus; secret exponents go to mpz_powm_sec."""
    assert 0 <= base and 0 <= exponent and 1 < modulus and (modulus % 2 == 1 or not secret)
    out = ffi.new("unsigned char[]", _arg(modulus)[1])
    function = lib.ts_powm_sec if secret else lib.ts_powm
    status = function(*_arg(base), *_arg(exponent), *_arg(modulus), out, len(out))
    _ensure(status, "modular exponentiation")
    return _result(out)


def _multi_powm(terms: Sequence[tuple[int, int]], modulus: int) -> int:
    """prod base^exponent mod modulus over (base, exponent) terms with public exponents;
    a negative exponent inverts its base (CryptoError if it is not invertible)."""
    assert 1 < modulus and all(base >= 0 for base, _ in terms)
    modulus_len = _arg(modulus)[1]
    width = max([1, *((abs(exponent).bit_length() + 7) // 8 for _, exponent in terms)])
    bases = b"".join(_be(base % modulus, length=modulus_len) for base, _ in terms)
    exponents = b"".join(_be(abs(exponent), length=width) for _, exponent in terms)
    negative = ffi.new("int[]", [int(exponent < 0) for _, exponent in terms])
    out = ffi.new("unsigned char[]", modulus_len)
    status = lib.ts_multi_powm(
        len(terms), bases, modulus_len, exponents, width, negative, *_arg(modulus), out, len(out)
    )
    _ensure(status, "multi-exponentiation")
    return _result(out)


def _invert(value: int, modulus: int) -> int:
    """value^-1 mod modulus (CryptoError if gcd(value, modulus) != 1)."""
    assert value >= 0 and modulus > 1
    out = ffi.new("unsigned char[]", _arg(modulus)[1])
    _ensure(lib.ts_invert(*_arg(value), *_arg(modulus), out, len(out)), "modular inverse")
    return _result(out)


def _is_probable_prime(value: int) -> bool:
    assert value >= 0
    is_prime = ffi.new("int *")
    _ensure(lib.ts_probable_prime(*_arg(value), is_prime), "primality test")
    return bool(is_prime[0])
