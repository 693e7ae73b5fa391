"""Unit tests for prime.crypto.sign: Ed25519 through the low-overhead libsodium path."""

from __future__ import annotations

import threading
from typing import Any

import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prime.crypto.sign import (
    PUBLIC_KEY_SIZE,
    SEED_SIZE,
    SIGN_SCRATCH_BYTES_MAX,
    SIGNATURE_SIZE,
    SigningKey,
    VerifyKey,
)
from prime.errors import CryptoError

# RFC 8032 section 7.1, TEST 1 (empty message) and TEST 2 (one byte).
RFC8032_VECTORS = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        (
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
            "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        ),
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        (
            "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
            "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"
        ),
    ),
]


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey(bytes(range(SEED_SIZE)))


def test_constants_match_libsodium() -> None:
    """The exported sizes are Ed25519's, which every wire-format length check depends on."""
    assert (SIGNATURE_SIZE, PUBLIC_KEY_SIZE, SEED_SIZE) == (64, 32, 32)


@pytest.mark.parametrize(
    ("seed_hex", "public_hex", "message_hex", "signature_hex"), RFC8032_VECTORS
)
def test_rfc8032_vectors(
    seed_hex: str, public_hex: str, message_hex: str, signature_hex: str
) -> None:
    """Our wrappers produce and accept the RFC 8032 known-answer signatures."""
    signing_key = SigningKey(bytes.fromhex(seed_hex))
    assert signing_key.verify_key.public == bytes.fromhex(public_hex)
    signature = signing_key.sign(bytes.fromhex(message_hex))
    assert signature == bytes.fromhex(signature_hex)
    assert VerifyKey(bytes.fromhex(public_hex)).verify(bytes.fromhex(message_hex), signature)


def test_round_trip(key: SigningKey) -> None:
    """A signature made by a key verifies under its verify key, for short and long data."""
    for data in (b"", b"x", bytes(32), b"prime" * 1000):
        signature = key.sign(data)
        assert isinstance(signature, bytes) and len(signature) == SIGNATURE_SIZE
        assert key.verify_key.verify(data, signature) is True


def test_matches_pynacl_high_level_api() -> None:
    """The fast path gives byte-identical signatures and keys to nacl.signing."""
    for index in range(20):
        seed = bytes([index]) * SEED_SIZE
        data = bytes(range(index * 7 % 256)) * 3
        reference = nacl.signing.SigningKey(seed)
        ours = SigningKey(seed)
        assert ours.verify_key.public == bytes(reference.verify_key)
        assert ours.sign(data) == reference.sign(data).signature


def test_message_larger_than_scratch_buffer(key: SigningKey) -> None:
    """Messages around and above the per-thread scratch size sign correctly."""
    for size in (SIGN_SCRATCH_BYTES_MAX - 1, SIGN_SCRATCH_BYTES_MAX, SIGN_SCRATCH_BYTES_MAX + 1):
        data = bytes(size)
        signature = key.sign(data)
        assert signature == nacl.signing.SigningKey(key.seed).sign(data).signature
        assert key.verify_key.verify(data, signature)
    # The scratch buffer still works after the large-message path.
    assert key.verify_key.verify(b"after", key.sign(b"after"))


def test_bytes_like_input(key: SigningKey) -> None:
    """bytearray and memoryview inputs are treated like the equal bytes, never as forgeries."""
    data = b"bytes-like"
    signature = key.sign(data)
    # Deliberately outside the declared types: callers holding a decoder's buffer must not
    # get a wrong answer.
    assert key.sign(bytearray(data)) == signature  # type: ignore[arg-type]
    assert key.sign(memoryview(data)) == signature  # type: ignore[arg-type]
    assert key.verify_key.verify(bytearray(data), bytearray(signature))  # type: ignore[arg-type]
    assert key.verify_key.verify(memoryview(data), memoryview(signature))  # type: ignore[arg-type]


def test_wrong_key_fails(key: SigningKey) -> None:
    """A signature does not verify under a different key."""
    other = SigningKey(bytes([0xAA]) * SEED_SIZE)
    signature = key.sign(b"payload")
    assert other.verify_key.verify(b"payload", signature) is False


def test_flipped_bit_in_data_fails(key: SigningKey) -> None:
    """Flipping any single bit of the signed data makes verification return False."""
    data = bytes(range(32))
    signature = key.sign(data)
    for bit in range(len(data) * 8):
        mutated = bytearray(data)
        mutated[bit // 8] ^= 1 << (bit % 8)
        assert key.verify_key.verify(bytes(mutated), signature) is False


def test_flipped_bit_in_signature_fails(key: SigningKey) -> None:
    """Flipping any single bit of the signature makes verification return False."""
    data = b"root digest"
    signature = key.sign(data)
    for bit in range(SIGNATURE_SIZE * 8):
        mutated = bytearray(signature)
        mutated[bit // 8] ^= 1 << (bit % 8)
        assert key.verify_key.verify(data, bytes(mutated)) is False


@pytest.mark.parametrize("size", [0, 1, 32, 63, 65, 128])
def test_wrong_signature_length_fails(key: SigningKey, size: int) -> None:
    """A signature of any length other than 64 returns False, including a valid prefix."""
    data = b"data"
    signature = key.sign(data)
    candidate = (signature * 3)[:size]
    assert key.verify_key.verify(data, candidate) is False


@pytest.mark.parametrize(
    ("data", "signature"),
    [
        (None, bytes(64)),
        ("text", bytes(64)),
        (b"data", None),
        (b"data", "x" * 64),
        (b"data", 64),
        (12, bytes(64)),
        (b"data", [0] * 64),
    ],
)
def test_wrong_types_return_false(key: SigningKey, data: Any, signature: Any) -> None:
    """Arguments of the wrong type make verify return False rather than raise."""
    assert key.verify_key.verify(data, signature) is False


def test_degenerate_public_keys_reject_without_raising() -> None:
    """Small-order and non-canonical public keys are accepted as keys but verify nothing."""
    for public in (bytes(32), b"\x01" + bytes(31), b"\xff" * 32):
        verify_key = VerifyKey(public)
        assert verify_key.verify(b"", bytes(64)) is False


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_bad_key_lengths_raise_crypto_error(size: int) -> None:
    """A wrong-length seed or public key is a programmer error and raises CryptoError."""
    with pytest.raises(CryptoError):
        SigningKey(bytes(size))
    with pytest.raises(CryptoError):
        VerifyKey(bytes(size))


def test_non_bytes_keys_raise_crypto_error() -> None:
    """A key of the wrong type raises CryptoError, not a stray TypeError."""
    with pytest.raises(CryptoError):
        SigningKey("0" * 32)  # type: ignore[arg-type]
    with pytest.raises(CryptoError):
        VerifyKey(None)  # type: ignore[arg-type]


def test_repr_hides_seed() -> None:
    """Neither repr nor str of a signing key contains its seed."""
    seed = bytes(range(100, 132))
    signing_key = SigningKey(seed)
    for text in (repr(signing_key), str(signing_key)):
        assert seed.hex() not in text
        assert seed.hex()[:16] not in text
        assert signing_key.verify_key.public.hex() in text


def test_seed_round_trip_and_generate() -> None:
    """A key rebuilt from its seed is the same key; generated keys differ from each other."""
    first = SigningKey.generate()
    again = SigningKey(first.seed)
    assert again == first and again.verify_key == first.verify_key
    assert again.sign(b"m") == first.sign(b"m")
    second = SigningKey.generate()
    assert second != first and second.verify_key != first.verify_key


def test_verify_key_equality_and_hash() -> None:
    """Verify keys compare by value and hash consistently, so they can key caches."""
    seed = bytes([7]) * SEED_SIZE
    first = SigningKey(seed).verify_key
    second = VerifyKey(first.public)
    assert first == second and hash(first) == hash(second)
    assert len({first, second}) == 1
    assert first != VerifyKey(bytes([1]) * PUBLIC_KEY_SIZE)
    assert first != first.public  # a key is not equal to its raw bytes


def test_compare_uses_hmac_compare_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    """Key equality goes through hmac.compare_digest, so it runs in constant time."""
    calls: list[tuple[bytes, bytes]] = []

    def spy(left: bytes, right: bytes) -> bool:
        calls.append((left, right))
        return left == right

    monkeypatch.setattr("prime.crypto.sign.hmac.compare_digest", spy)
    public = SigningKey(bytes(SEED_SIZE)).verify_key.public
    assert VerifyKey(public) == VerifyKey(public)
    assert calls == [(public, public)]


def test_concurrent_signing_in_threads() -> None:
    """Threads signing at once each get their own correct signatures (per-thread scratch)."""
    keys = [SigningKey(bytes([index + 1]) * SEED_SIZE) for index in range(4)]
    failures: list[str] = []

    def worker(index: int) -> None:
        signing_key = keys[index]
        for round_index in range(300):
            data = bytes([index, round_index % 256]) * (1 + round_index % 40)
            signature = signing_key.sign(data)
            if not signing_key.verify_key.verify(data, signature):
                failures.append(f"thread {index} round {round_index}")

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=300), bit=st.integers(min_value=0))
def test_property_round_trip_and_any_bit_flip(data: bytes, bit: int) -> None:
    """For random data, the signature verifies and one flipped bit anywhere breaks it."""
    signing_key = SigningKey(bytes([3]) * SEED_SIZE)
    signature = signing_key.sign(data)
    assert signing_key.verify_key.verify(data, signature)
    signed = bytearray(signature + data)
    position = bit % (len(signed) * 8)
    signed[position // 8] ^= 1 << (position % 8)
    mutated_signature, mutated_data = bytes(signed[:SIGNATURE_SIZE]), bytes(signed[SIGNATURE_SIZE:])
    assert signing_key.verify_key.verify(mutated_data, mutated_signature) is False
