"""Ed25519 signatures for replicas and clients (docs/protocol.md section 4.1), on the cheapest call path.

Prime signs every protocol message, so this module sits on the hot path: a replica signs
one Merkle root per batch (docs/protocol.md section 4.2) and verifies at least one signature per
received batch. libsodium's Ed25519 costs about 22 us to sign and 64 us to verify a
32-byte root on the development machine; the Python call path around it adds between 0.5
and 3 us depending on how it is called, and that part is the one we control.

Choice of call path, measured by ``perf/sign_bench.py`` (CPython 3.11.7, PyNaCl 1.6.2,
32-byte data, CPU time, medians of 101 interleaved repetitions on a shared 2-core VM;
"time/ours" is the median per-repetition ratio to our wrapper, which cancels drift;
"verify overhead" is the whole Python-side cost, timed with a signature whose S half is
not canonical, which libsodium rejects before any curve arithmetic):

===========================================  =======  =========  ==========  =========  ========
path                                         signs/s  time/ours  verifies/s  time/ours  overhead
===========================================  =======  =========  ==========  =========  ========
``nacl.signing`` (high-level API)             39 498      1.103      15 059      1.032   2.36 us
``nacl.bindings.crypto_sign`` / ``_open``     41 868      1.042      15 207      1.021   1.94 us
``crypto_sign_detached`` via cffi ABI         43 915      0.997      15 449      1.002   0.69 us
this module (``lib.crypto_sign``/``_open``)   43 585      1.000      15 497      1.000   0.63 us
floor: bare ``lib`` call, shared buffer       44 205      0.981      15 521      0.996   0.51 us
===========================================  =======  =========  ==========  =========  ========

* ``nacl.signing`` builds a ``SignedMessage`` per signature and raises an exception per bad
  signature; ``nacl.bindings`` allocates an output buffer and calls ``ensure()`` per call.
  Together that is 2 to 4 per cent of an operation, which we skip by calling PyNaCl's
  compiled ``lib.crypto_sign``/``lib.crypto_sign_open`` stubs directly.
* PyNaCl's compiled ``nacl._sodium`` does not declare ``crypto_sign_detached`` or
  ``crypto_sign_verify_detached``. Reaching them needs a second, ABI-mode ``FFI`` that
  ``dlopen``s PyNaCl's private shared object, which works only while that object happens
  to export libsodium's symbols, and whose libffi dispatch measured no faster than our
  path (0.69 against 0.63 us of verify overhead; an isolated micro-benchmark gave 0.65
  against 0.47 us). Fragile and no faster, so not used.
* Verification needs no buffer at all: libsodium's ``crypto_sign_ed25519_open`` accepts
  ``m == NULL`` and ``mlen_p == NULL`` (``crypto_sign/ed25519/ref10/open.c`` checks both),
  so ``crypto_sign_open(NULL, NULL, signature || data, ...)`` is exactly
  ``crypto_sign_verify_detached`` plus one concatenation, which is cheap for the 32-byte
  digests and roots Prime signs. It is also thread-safe, having no shared state.
* Signing writes ``signature || data`` into an output buffer. In an isolated
  micro-benchmark the Python-side cost around the C call was 0.93 us with a fresh
  ``ffi.new`` per call, 0.65 us with a per-thread buffer and 0.45 us with one shared
  buffer. A shared buffer is wrong, because cffi releases the GIL during the call and two
  threads would mix their signatures, so each thread keeps one preallocated scratch
  buffer (``threading.local``). The buffer is taken out of its slot while in use, so a
  nested call in the same thread (a signal handler that signs) allocates its own instead
  of overwriting ours. Messages longer than ``SIGN_SCRATCH_BYTES_MAX`` get a buffer of
  their own, so one large message does not pin a large buffer per thread.

Keys: ``SigningKey`` is built from the 32-byte seed that ``bin/gen_keys`` stores; libsodium's
64-byte secret key (seed followed by the public key) is derived once in the constructor.
Errors follow docs/design.md section 7: a bad key length is an operator or programmer mistake and raises
``CryptoError``; a bad *signature* is peer input and only makes ``verify`` return False.
"""

from __future__ import annotations

import hmac
import importlib
import secrets
import threading
from typing import Any

import nacl.bindings

from prime.errors import CryptoError

# PyNaCl's compiled cffi module ships no type stubs, and cffi returns Any in any case (the
# reason docs/design.md section 8 relaxes mypy for cffi twins). Importing it by name keeps mypy --strict
# clean without an ignore comment; the objects and the call cost are the same.
_sodium: Any = importlib.import_module("nacl._sodium")
_ffi: Any = _sodium.ffi
_lib: Any = _sodium.lib

SIGNATURE_SIZE = 64
PUBLIC_KEY_SIZE = 32
SEED_SIZE = 32
SECRET_KEY_SIZE = 64  # libsodium's expanded form: seed || public key

# Messages up to this size are signed through the per-thread scratch buffer. Everything
# Prime signs on the hot path is a 32-byte digest or Merkle root, so 4 KiB covers it with
# room to spare, and a thread never holds more than this much scratch.
SIGN_SCRATCH_BYTES_MAX = 4096

# Pin our constants to libsodium's: a mismatch would mean a different signature scheme, and
# every length check in this module (and every wire-format check elsewhere) relies on them.
assert _lib.crypto_sign_bytes() == SIGNATURE_SIZE
assert _lib.crypto_sign_publickeybytes() == PUBLIC_KEY_SIZE
assert _lib.crypto_sign_secretkeybytes() == SECRET_KEY_SIZE
assert SEED_SIZE + PUBLIC_KEY_SIZE == SECRET_KEY_SIZE

# sodium_init() picks the CPU-specific implementations; PyNaCl runs it once per process on
# import of nacl.bindings, and calling it again is a no-op (ffi.init_once).
nacl.bindings.sodium_init()

_NULL: Any = _ffi.NULL


class _SignScratch(threading.local):
    """One output buffer per thread for ``SigningKey.sign`` (see the module docstring)."""

    def __init__(self) -> None:
        self.buffer: Any = _ffi.new("unsigned char[]", SIGNATURE_SIZE + SIGN_SCRATCH_BYTES_MAX)


_scratch = _SignScratch()


class VerifyKey:
    """An Ed25519 public key: checks signatures and never raises on hostile input."""

    __slots__ = ("_public",)

    def __init__(self, public: bytes) -> None:
        """Keep ``public``; a wrong length is a key-file or programmer error, not peer input."""
        if not isinstance(public, (bytes, bytearray, memoryview)):
            raise CryptoError(f"verify key must be bytes, not {type(public).__name__}")
        public = bytes(public)
        if len(public) != PUBLIC_KEY_SIZE:
            raise CryptoError(f"verify key must be {PUBLIC_KEY_SIZE} bytes, got {len(public)}")
        self._public = public

    @property
    def public(self) -> bytes:
        """The 32-byte encoded public key, as stored in key files."""
        return self._public

    def verify(self, data: bytes, signature: bytes) -> bool:
        """Return whether ``signature`` is this key's Ed25519 signature over ``data``.

        Both arguments usually come from a peer, so anything wrong with them (wrong length,
        wrong type, forged, non-canonical) yields False rather than an exception: docs/design.md section 7
        treats malformed input as routine traffic. libsodium also rejects small-order keys
        and non-canonical encodings here, so no separate key validation is needed.
        """
        try:
            if len(signature) != SIGNATURE_SIZE:
                return False
            if type(signature) is not bytes:
                # cffi accepts only bytes for a const pointer; a bytearray signature must
                # not turn into a false "forged" answer.
                signature = bytes(signature)
            signed = signature + data
            status: int = _lib.crypto_sign_open(_NULL, _NULL, signed, len(signed), self._public)
            return status == 0
        except (TypeError, ValueError):
            return False

    def __eq__(self, other: object) -> bool:
        """Compare in constant time, as PyNaCl does, so a comparison leaks no key prefix."""
        if not isinstance(other, VerifyKey):
            return NotImplemented
        return hmac.compare_digest(self._public, other._public)

    def __hash__(self) -> int:
        """Hash the public key, so keys can index signature caches."""
        return hash(self._public)

    def __repr__(self) -> str:
        return f"VerifyKey({self._public.hex()})"


class SigningKey:
    """An Ed25519 private key built from a 32-byte seed; its repr never shows the seed."""

    __slots__ = ("_secret", "_seed", "_verify_key")

    def __init__(self, seed: bytes) -> None:
        """Derive libsodium's secret key and the public key from ``seed`` once, up front."""
        if not isinstance(seed, (bytes, bytearray, memoryview)):
            raise CryptoError(f"signing seed must be bytes, not {type(seed).__name__}")
        seed = bytes(seed)
        if len(seed) != SEED_SIZE:
            raise CryptoError(f"signing seed must be {SEED_SIZE} bytes, got {len(seed)}")
        public = _ffi.new("unsigned char[]", PUBLIC_KEY_SIZE)
        secret = _ffi.new("unsigned char[]", SECRET_KEY_SIZE)
        if _lib.crypto_sign_seed_keypair(public, secret, seed) != 0:
            raise CryptoError("crypto_sign_seed_keypair failed")
        self._seed = seed
        self._secret: bytes = _ffi.buffer(secret, SECRET_KEY_SIZE)[:]
        self._verify_key = VerifyKey(_ffi.buffer(public, PUBLIC_KEY_SIZE)[:])
        assert self._secret[:SEED_SIZE] == seed
        assert self._secret[SEED_SIZE:] == self._verify_key.public

    @classmethod
    def generate(cls) -> SigningKey:
        """Make a key from a fresh seed from the operating system's CSPRNG."""
        return cls(secrets.token_bytes(SEED_SIZE))

    @property
    def seed(self) -> bytes:
        """The 32-byte seed, which is what key files store."""
        return self._seed

    @property
    def verify_key(self) -> VerifyKey:
        """The matching public key."""
        return self._verify_key

    def sign(self, data: bytes) -> bytes:
        """Return the 64-byte detached Ed25519 signature over ``data``.

        Ed25519 is deterministic, so signing the same bytes twice gives the same signature;
        tests and the simulator rely on that.
        """
        if type(data) is not bytes:
            data = bytes(data)  # cffi accepts only bytes for a const pointer
        data_size = len(data)
        local = _scratch
        buffer = local.buffer
        claimed = buffer is not None and data_size <= SIGN_SCRATCH_BYTES_MAX
        if claimed:
            local.buffer = None  # a nested call in this thread now allocates its own
        else:
            buffer = _ffi.new("unsigned char[]", SIGNATURE_SIZE + data_size)
        status = _lib.crypto_sign(buffer, _NULL, data, data_size, self._secret)
        signature: bytes = _ffi.buffer(buffer, SIGNATURE_SIZE)[:]
        if claimed:
            local.buffer = buffer
        if status != 0:
            raise CryptoError("crypto_sign failed")
        return signature

    def __eq__(self, other: object) -> bool:
        """Compare seeds in constant time."""
        if not isinstance(other, SigningKey):
            return NotImplemented
        return hmac.compare_digest(self._seed, other._seed)

    def __hash__(self) -> int:
        """Hash the public half only, so the hash says nothing about the seed."""
        return hash(self._verify_key)

    def __repr__(self) -> str:
        return f"SigningKey(verify_key={self._verify_key.public.hex()})"
