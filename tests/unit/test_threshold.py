"""Unit tests of Shoup threshold RSA (prime.crypto.threshold, native/tshare.c).

Keys are dealt once per module with a seed and a 512-bit modulus, so the suite stays fast;
the arithmetic does not depend on the modulus size.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prime.crypto import threshold
from prime.crypto.threshold import KeyShare, PublicKey, SignatureShare
from prime.errors import BadSignature, CryptoError, KeyFileError

MODULUS_BITS = 512
MESSAGE = b"view 7 | list 0b1011 | startSeq 42"
# (players, threshold): f=1,k=0 gives N=4, t=2f+k+1=3; f=1,k=1 gives N=6, t=4.
CONFIGURATIONS = [(4, 3), (6, 4)]


@dataclasses.dataclass(frozen=True)
class Dealt:
    public: PublicKey
    keys: list[KeyShare]
    shares: list[SignatureShare]  # honest shares of MESSAGE, in index order


@pytest.fixture(scope="module")
def dealt() -> dict[tuple[int, int], Dealt]:
    result = {}
    for players, t in CONFIGURATIONS:
        public, keys = threshold.deal(players, t, MODULUS_BITS, seed=f"test-{players}-{t}".encode())
        shares = [threshold.sign_share(key, MESSAGE, nonce_seed=b"test") for key in keys]
        result[(players, t)] = Dealt(public, keys, shares)
    return result


@pytest.fixture(params=CONFIGURATIONS, ids=lambda c: f"N={c[0]},t={c[1]}")
def keys(request: pytest.FixtureRequest, dealt: dict[tuple[int, int], Dealt]) -> Dealt:
    return dealt[request.param]


def honest_signature(keys: Dealt) -> bytes:
    return threshold.combine(keys.public, MESSAGE, keys.shares[: keys.public.threshold])


# --- Combining ------------------------------------------------------------------------------


def test_every_threshold_subset_combines_to_the_same_valid_signature(keys: Dealt) -> None:
    """Any t shares with distinct indices yield a signature that verifies, and it is always
    the same one (an RSA signature y with y^e = x is unique)."""
    t = keys.public.threshold
    signatures = set()
    for subset in itertools.combinations(keys.shares, t):
        signature = threshold.combine(keys.public, MESSAGE, subset)
        assert threshold.verify(keys.public, MESSAGE, signature)
        assert len(signature) == (keys.public.n.bit_length() + 7) // 8
        signatures.add(signature)
    assert len(signatures) == 1


def test_combine_accepts_shares_in_any_order_and_ignores_extras(keys: Dealt) -> None:
    """Combining all shares, in reverse order, gives the same signature as t of them."""
    reverse = threshold.combine(keys.public, MESSAGE, list(reversed(keys.shares)))
    assert reverse == honest_signature(keys)


@pytest.mark.parametrize("verify_shares", [True, False])
def test_every_smaller_subset_fails_to_combine(keys: Dealt, verify_shares: bool) -> None:
    """Any t-1 valid shares are refused with CryptoError (docs/protocol.md section 8, S9)."""
    t = keys.public.threshold
    for subset in itertools.combinations(keys.shares, t - 1):
        with pytest.raises(CryptoError, match=f"need {t} valid shares, have {t - 1}"):
            threshold.combine(keys.public, MESSAGE, subset, verify_shares=verify_shares)


@pytest.mark.parametrize("verify_shares", [True, False])
def test_duplicated_index_does_not_count_twice(keys: Dealt, verify_shares: bool) -> None:
    """t-1 valid shares plus a repeat of one of their indices (the same share, or a forged
    value under that index) cannot be combined."""
    t = keys.public.threshold
    valid = keys.shares[: t - 1]
    copied = valid[0]
    forged = dataclasses.replace(keys.shares[t - 1], index=valid[0].index)
    for extra in (copied, forged):
        with pytest.raises(CryptoError, match=f"need {t} valid shares, have {t - 1}"):
            threshold.combine(keys.public, MESSAGE, [*valid, extra], verify_shares=verify_shares)


CORRUPTIONS: dict[str, Callable[[SignatureShare, int], SignatureShare]] = {
    "value": lambda s, n: dataclasses.replace(s, value=s.value * 2 % n),
    "proof_c": lambda s, n: dataclasses.replace(s, proof_c=s.proof_c ^ 1),
    "proof_z": lambda s, n: dataclasses.replace(s, proof_z=s.proof_z + 1),
    "index": lambda s, n: dataclasses.replace(s, index=s.index % 4 + 1),
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_corrupted_share_is_rejected_and_skipped(keys: Dealt, corruption: str) -> None:
    """A share with a changed value, proof or index fails verify_share, and combine skips
    it: it succeeds with t other valid shares and refuses with only t-1 (docs/hardening.md H7)."""
    public, t = keys.public, keys.public.threshold
    bad = CORRUPTIONS[corruption](keys.shares[0], public.n)
    assert bad != keys.shares[0]
    assert not threshold.verify_share(public, MESSAGE, bad)
    others = [s for s in keys.shares if s.index != bad.index]
    assert threshold.combine(public, MESSAGE, [bad, *others[:t]]) == honest_signature(keys)
    with pytest.raises(CryptoError, match=f"need {t} valid shares, have {t - 1}"):
        threshold.combine(public, MESSAGE, [bad, *others[: t - 1]])


def test_negated_share_value_is_harmless(keys: Dealt) -> None:
    """Replacing x_i by n - x_i keeps the proof valid, since the proof speaks about x_i^2
    only (Shoup's proof of correctness), and combining raises shares to even powers, so
    the signature is unchanged."""
    public, t = keys.public, keys.public.threshold
    negated = dataclasses.replace(keys.shares[0], value=public.n - keys.shares[0].value)
    assert threshold.verify_share(public, MESSAGE, negated)
    signature = threshold.combine(public, MESSAGE, [negated, *keys.shares[1:t]])
    assert signature == honest_signature(keys)


def test_combine_without_share_checks_detects_a_bad_result(keys: Dealt) -> None:
    """With verify_shares=False a bad share is only caught by the final check, which
    raises BadSignature instead of returning a wrong signature."""
    t = keys.public.threshold
    bad = CORRUPTIONS["value"](keys.shares[0], keys.public.n)
    with pytest.raises(BadSignature):
        threshold.combine(keys.public, MESSAGE, [bad, *keys.shares[1:t]], verify_shares=False)


def test_share_of_another_message_is_rejected(keys: Dealt) -> None:
    """A valid share of one message does not verify, nor combine, for another message."""
    t = keys.public.threshold
    assert not threshold.verify_share(keys.public, MESSAGE + b"!", keys.shares[0])
    with pytest.raises(CryptoError, match=f"need {t} valid shares, have 0"):
        threshold.combine(keys.public, MESSAGE + b"!", keys.shares[:t])


def test_verify_share_accepts_every_honest_share(keys: Dealt) -> None:
    """Every honestly made share carries a proof that verifies."""
    assert all(threshold.verify_share(keys.public, MESSAGE, s) for s in keys.shares)


def test_verify_share_never_raises_on_garbage(keys: Dealt) -> None:
    """verify_share returns False for out-of-range fields and wrong types."""
    public, share = keys.public, keys.shares[0]
    cases: list[Any] = [
        dataclasses.replace(share, index=public.players + 1),
        dataclasses.replace(share, value=0),
        dataclasses.replace(share, value=public.n),
        dataclasses.replace(share, proof_z=1 << (public.n.bit_length() + 600)),
        "not a share",
        None,
    ]
    for case in cases:
        assert threshold.verify_share(public, MESSAGE, case) is False
    assert threshold.verify_share(public, "not bytes", share) is False  # type: ignore[arg-type]


def test_verify_rejects_wrong_message_and_wrong_signature(keys: Dealt) -> None:
    """verify accepts the signature on its message only, and never raises."""
    public = keys.public
    signature = honest_signature(keys)
    assert threshold.verify(public, MESSAGE, signature)
    assert not threshold.verify(public, MESSAGE + b"x", signature)
    flipped = bytes([signature[0] ^ 0x01]) + signature[1:]
    assert not threshold.verify(public, MESSAGE, flipped)
    assert not threshold.verify(public, MESSAGE, signature[1:])
    assert not threshold.verify(public, MESSAGE, signature + b"\x00")
    too_big = public.n.to_bytes(len(signature), "big")
    assert not threshold.verify(public, MESSAGE, too_big)
    assert not threshold.verify(public, MESSAGE, "text")  # type: ignore[arg-type]


def test_signature_from_another_key_is_rejected(dealt: dict[tuple[int, int], Dealt]) -> None:
    """A signature made under the N=4 key does not verify under the N=6 key."""
    four, six = dealt[(4, 3)], dealt[(6, 4)]
    signature = honest_signature(four)
    assert not threshold.verify(six.public, MESSAGE, signature)


# --- Dealing and signing ----------------------------------------------------------------------


def test_deal_is_deterministic_and_well_formed(keys: Dealt) -> None:
    """A seeded deal is reproducible, has an n of exactly the asked size, and each
    verification key is v^{s_i}."""
    public = keys.public
    again, again_keys = threshold.deal(
        public.players,
        public.threshold,
        MODULUS_BITS,
        seed=f"test-{public.players}-{public.threshold}".encode(),
    )
    assert again == public and again_keys == keys.keys
    assert public.n.bit_length() == MODULUS_BITS
    for key in keys.keys:
        assert pow(public.v, key.secret, public.n) == public.verification_keys[key.index - 1]


def test_deal_reports_progress() -> None:
    """deal sends short progress lines naming both safe primes."""
    lines: list[str] = []
    threshold.deal(3, 2, MODULUS_BITS, seed=b"progress", progress=lines.append)
    assert any("safe prime 1/2" in line for line in lines)
    assert any("safe prime 2/2" in line for line in lines)


def test_deal_without_seed_differs_each_time() -> None:
    """Without a seed the dealer draws from os.urandom, so two deals differ."""
    first, _ = threshold.deal(2, 2, MODULUS_BITS)
    second, _ = threshold.deal(2, 2, MODULUS_BITS)
    assert first.n != second.n


def test_single_player_key_signs() -> None:
    """The degenerate 1-of-1 case (Delta = 1, e = 3) still signs correctly."""
    public, keys = threshold.deal(1, 1, MODULUS_BITS, e=3, seed=b"one")
    share = threshold.sign_share(keys[0], MESSAGE)
    assert threshold.verify(public, MESSAGE, threshold.combine(public, MESSAGE, [share]))


@pytest.mark.parametrize(
    ("players", "t", "bits", "e", "reason"),
    [
        (0, 1, 512, 65537, "players 0"),
        (4, 5, 512, 65537, "threshold 5"),
        (4, 0, 512, 65537, "threshold 0"),
        (4, 3, 513, 65537, "modulus_bits"),
        (4, 3, 256, 65537, "modulus_bits"),
        (4, 3, 512, 65535, "odd prime"),
        (4, 3, 512, 3, "odd prime"),
        (4, 3, 512, 2, "odd prime"),
        (threshold.PLAYERS_MAX + 1, 3, 512, 65537, "players"),
    ],
)
def test_deal_rejects_bad_arguments(players: int, t: int, bits: int, e: int, reason: str) -> None:
    """deal checks its arguments (e must be a prime > players) before doing any work."""
    with pytest.raises(CryptoError, match=reason):
        threshold.deal(players, t, bits, e=e)


def test_nonce_seed_makes_shares_deterministic(keys: Dealt) -> None:
    """With a nonce_seed the share and proof repeat; without one the proof changes but
    the share value does not (x_i depends only on the key and the message)."""
    key = keys.keys[0]
    assert threshold.sign_share(key, MESSAGE, nonce_seed=b"test") == keys.shares[0]
    fresh = threshold.sign_share(key, MESSAGE)
    assert fresh.value == keys.shares[0].value and fresh.proof_z != keys.shares[0].proof_z
    assert threshold.verify_share(keys.public, MESSAGE, fresh)


def test_hash_to_zn_is_deterministic_and_in_range(keys: Dealt) -> None:
    """The full-domain hash is a function of the message, lands in Z_n and uses its
    whole range (it is not a short digest)."""
    public = keys.public
    values = [threshold.hash_to_zn(public, bytes([i])) for i in range(32)]
    assert values == [threshold.hash_to_zn(public, bytes([i])) for i in range(32)]
    assert len(set(values)) == 32 and all(0 <= x < public.n for x in values)
    assert max(values).bit_length() > MODULUS_BITS - 8


# --- Serialization ------------------------------------------------------------------------------


def test_key_and_share_serialization_round_trips(keys: Dealt) -> None:
    """PublicKey, KeyShare and SignatureShare survive to_bytes/from_bytes unchanged."""
    assert PublicKey.from_bytes(keys.public.to_bytes()) == keys.public
    for key in keys.keys:
        assert KeyShare.from_bytes(key.to_bytes()) == key
    for share in keys.shares:
        assert SignatureShare.from_bytes(share.to_bytes()) == share
    assert json.loads(keys.public.to_bytes())["format"] == threshold.PUBLIC_KEY_FORMAT


def test_key_share_repr_hides_the_secret(keys: Dealt) -> None:
    """Printing a KeyShare (or its public key) never shows the secret exponent."""
    key = keys.keys[0]
    text = repr(key)
    assert format(key.secret, "x") not in text and str(key.secret) not in text
    assert "secret" not in text and f"index={key.index}" in text


def _edit(document: dict[str, Any], path: tuple[str, ...], value: Any) -> bytes:
    target = document
    for name in path[:-1]:
        target = target[name]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return json.dumps(document).encode()


_DELETE = object()

PUBLIC_KEY_CORRUPTIONS = [
    (("n",), "zz", "field 'n' must be a lowercase hex string"),
    (("n",), "0x1f", "field 'n' must be a lowercase hex string"),
    (("n",), "10", "n must be odd"),
    (("e",), "65537", "field 'e' must be an integer"),
    (("e",), 65535, "odd prime"),
    (("threshold",), 9, "threshold 9"),
    (("players",), True, "field 'players' must be an integer"),
    (("verification_keys",), ["5"], "1 verification keys for"),
    (("verification_keys",), "5", "must be a list"),
    (("v",), "1", "v and the verification keys"),
    (("format",), "other/v9", "format is 'other/v9'"),
    (("n",), _DELETE, "missing field(s) n"),
    (("extra",), 1, "unknown field(s) extra"),
]


@pytest.mark.parametrize(("path", "value", "message"), PUBLIC_KEY_CORRUPTIONS)
def test_corrupt_public_key_file_raises_key_file_error(
    keys: Dealt, path: tuple[str, ...], value: Any, message: str
) -> None:
    """Each kind of damage to a public key file raises KeyFileError saying what is wrong."""
    data = _edit(json.loads(keys.public.to_bytes()), path, value)
    with pytest.raises(KeyFileError, match=f"^threshold public key: .*{re.escape(message)}"):
        PublicKey.from_bytes(data)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("secret",), "xyz", "field 'secret' must be a lowercase hex string"),
        (("index",), 0, "index 0 not in 1..4"),
        (("index",), 2, "secret does not match verification key 2"),
        (("public", "n"), "3", "field 'public'.*n must be odd with"),
        (("public",), [], "field 'public' must be an object"),
        (("format",), threshold.PUBLIC_KEY_FORMAT, "format is"),
    ],
)
def test_corrupt_key_share_file_raises_key_file_error(
    dealt: dict[tuple[int, int], Dealt], path: tuple[str, ...], value: Any, message: str
) -> None:
    """Each kind of damage to a key share file, including a secret that no longer matches
    its verification key, raises KeyFileError saying what is wrong."""
    key = dealt[(4, 3)].keys[0]
    data = _edit(json.loads(key.to_bytes()), path, value)
    with pytest.raises(KeyFileError, match=f"^threshold key share.*{message}"):
        KeyShare.from_bytes(data)


def test_tampered_secret_is_detected(keys: Dealt) -> None:
    """One changed hex digit of the secret makes the key share file fail to load."""
    key = keys.keys[1]
    document = json.loads(key.to_bytes())
    digit = document["secret"][-1]
    document["secret"] = document["secret"][:-1] + ("0" if digit != "0" else "1")
    with pytest.raises(KeyFileError, match="secret does not match verification key 2"):
        KeyShare.from_bytes(json.dumps(document).encode())


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not valid JSON"),
        (b"{", "not valid JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"n": "1"}', "format is None"),
    ],
)
def test_unparseable_key_files_raise_key_file_error(data: bytes, message: str) -> None:
    """Bytes that are not a JSON key document raise KeyFileError, never a bare error."""
    with pytest.raises(KeyFileError, match=message):
        PublicKey.from_bytes(data)
    with pytest.raises(KeyFileError, match=message):
        KeyShare.from_bytes(data)


def test_signature_share_encoding_is_compact(keys: Dealt) -> None:
    """A share encodes to a 9-byte header plus minimal big-endian integers."""
    share = keys.shares[0]
    modulus_bytes = MODULUS_BITS // 8
    proof_z_bytes_max = modulus_bytes + threshold.NONCE_EXTRA_BITS // 8 + 1
    assert len(share.to_bytes()) <= threshold.SHARE_HEADER.size + modulus_bytes + 32 + (
        proof_z_bytes_max
    )


def _malformed_share_encodings(data: bytes) -> dict[str, bytes]:
    version, index, value_len, c_len, z_len = threshold.SHARE_HEADER.unpack_from(data)
    body = data[threshold.SHARE_HEADER.size :]
    return {
        "leading zero": threshold.SHARE_HEADER.pack(version, index, value_len + 1, c_len, z_len)
        + b"\x00"
        + body,
        "version": bytes([version + 1]) + data[1:],
        "truncated": data[:-1],
        "trailing": data + b"\x00",
        "index 0": threshold.SHARE_HEADER.pack(version, 0, value_len, c_len, z_len) + body,
        "short header": data[:3],
    }


@pytest.mark.parametrize(
    "kind", ["leading zero", "version", "truncated", "trailing", "index 0", "short header"]
)
def test_malformed_share_encoding_raises_crypto_error(keys: Dealt, kind: str) -> None:
    """Non-canonical or damaged share encodings are refused with CryptoError, so every
    share has exactly one encoding."""
    bad = _malformed_share_encodings(keys.shares[0].to_bytes())[kind]
    with pytest.raises(CryptoError, match="signature share"):
        SignatureShare.from_bytes(bad)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_signature_share_decoder_raises_only_crypto_error(data: bytes) -> None:
    """Arbitrary bytes decode to a share or raise CryptoError, never anything else."""
    try:
        share = SignatureShare.from_bytes(data)
    except CryptoError:
        return
    assert SignatureShare.from_bytes(share.to_bytes()) == share


@settings(max_examples=100, deadline=None)
@given(position=st.integers(min_value=0), xor=st.integers(min_value=1, max_value=255))
def test_mutated_share_bytes_never_verify(
    dealt: dict[tuple[int, int], Dealt], position: int, xor: int
) -> None:
    """Flipping any byte of an encoded share makes it undecodable or unverifiable."""
    keys = dealt[(4, 3)]
    data = bytearray(keys.shares[0].to_bytes())
    data[position % len(data)] ^= xor
    try:
        share = SignatureShare.from_bytes(bytes(data))
    except CryptoError:
        return
    assert not threshold.verify_share(keys.public, MESSAGE, share)


# --- A realistic size ---------------------------------------------------------------------------


@pytest.mark.slow
def test_deal_sign_and_combine_at_1024_bits() -> None:
    """A seeded 1024-bit deal takes well under 20 s and its shares combine."""
    started = time.perf_counter()
    public, keys = threshold.deal(6, 4, 1024, seed=b"slow")
    elapsed_s = time.perf_counter() - started
    if elapsed_s > 20:
        pytest.skip(f"1024-bit deal took {elapsed_s:.1f} s on this machine")
    shares = [threshold.sign_share(key, MESSAGE) for key in keys[2:]]
    signature = threshold.combine(public, MESSAGE, shares)
    assert threshold.verify(public, MESSAGE, signature)
    assert len(signature) == 128
