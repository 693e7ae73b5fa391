"""Unit tests for prime.crypto.merkle: batch signing trees per docs/protocol.md section 4.2 with H9 hardening."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prime.crypto.merkle import (
    BATCH_SIZE_MAX,
    DIGEST_SIZE,
    batch_size_for,
    build_batch,
    digest,
    leaf_digest,
    root_from_path,
)
from prime.crypto.sign import SigningKey

SIGNER = SigningKey(bytes(range(32)))
Batch = tuple[bytes, list[tuple[bytes, ...]], int]


def reference_batch(leaves: Sequence[bytes]) -> Batch:
    """Build the tree literally as docs/protocol.md section 4.2 describes it, as an independent oracle.

    A full heap array (root 1, leaves m..2m-1), zero padding leaves, every inner node
    hashed, and the path read off by walking x -> x ^ 1 -> parent.
    """
    count = len(leaves)
    batch_size = 1
    while batch_size < count:
        batch_size *= 2
    nodes = [b""] * (2 * batch_size)
    for offset in range(batch_size):
        nodes[batch_size + offset] = (
            hashlib.sha256(b"\x00" + leaves[offset]).digest() if offset < count else bytes(32)
        )
    for node in range(batch_size - 1, 0, -1):
        nodes[node] = hashlib.sha256(b"\x01" + nodes[2 * node] + nodes[2 * node + 1]).digest()
    paths = []
    for mt_index in range(1, count + 1):
        node = batch_size - 1 + mt_index
        path = []
        while node > 1:
            path.append(nodes[node ^ 1])
            node //= 2
        paths.append(tuple(path))
    return nodes[1], paths, batch_size


def make_leaves(count: int, seed: int, size: int = 12) -> list[bytes]:
    """Return ``count`` distinct pseudo-random leaves (distinct, so no two subtrees are equal)."""
    rng = random.Random(seed)
    leaves = [
        count.to_bytes(2, "big") + index.to_bytes(2, "big") + rng.randbytes(size - 4)
        for index in range(count)
    ]
    assert len(set(leaves)) == count
    return leaves


def flip(data: bytes, position: int, mask: int = 0x01) -> bytes:
    """Return ``data`` with the byte at ``position`` XORed with ``mask``."""
    mutated = bytearray(data)
    mutated[position] ^= mask
    return bytes(mutated)


def roots_with_one_message_changed(
    leaves: Sequence[bytes],
    paths: Sequence[Sequence[bytes]],
    mt_num: int,
    changed_index: int,
    changed: tuple[bytes, int, int, Sequence[bytes]],
) -> list[bytes | None]:
    """Recompute every message's root when message ``changed_index`` carries ``changed``."""
    roots: list[bytes | None] = []
    for mt_index in range(1, len(leaves) + 1):
        if mt_index == changed_index:
            roots.append(root_from_path(*changed))
        else:
            leaf, path = leaves[mt_index - 1], paths[mt_index - 1]
            roots.append(root_from_path(leaf, mt_index, mt_num, path))
    return roots


def assert_only_message_fails(
    root: bytes, roots: Sequence[bytes | None], mt_index: int, what: str
) -> None:
    """Assert that exactly message ``mt_index`` no longer yields the signed root."""
    failing = [index + 1 for index, candidate in enumerate(roots) if candidate != root]
    assert failing == [mt_index], f"{what}: failing messages {failing}, expected [{mt_index}]"


def mutations_of_message(
    leaves: Sequence[bytes],
    paths: Sequence[Sequence[bytes]],
    mt_num: int,
    mt_index: int,
    choose: Callable[[int], Sequence[int]],
) -> list[tuple[str, tuple[bytes, int, int, Sequence[bytes]]]]:
    """List the mutations of one message's covered bytes, index, mt_num and path digests.

    ``choose(n)`` picks which of ``n`` positions to mutate: all of them in the exhaustive
    test, a sample in the large-batch test.
    """
    leaf, path = leaves[mt_index - 1], tuple(paths[mt_index - 1])
    mutations: list[tuple[str, tuple[bytes, int, int, Sequence[bytes]]]] = []
    for position in choose(len(leaf)):
        for mask in (0x01, 0x80, 0xFF):
            mutations.append(
                (
                    f"leaf byte {position}^{mask:#x}",
                    (flip(leaf, position, mask), mt_index, mt_num, path),
                )
            )
    for other_index in choose(mt_num):
        if other_index + 1 != mt_index:
            mutations.append((f"mt_index {other_index + 1}", (leaf, other_index + 1, mt_num, path)))
    for depth in range(9):
        other_num = 1 << depth
        if other_num == mt_num:
            continue
        mutations.append((f"mt_num {other_num} same path", (leaf, mt_index, other_num, path)))
        # A path of the length the new mt_num needs: cut, or extended with filler digests.
        fitted = (path + (bytes(32),) * depth)[:depth]
        fitted_index = min(mt_index, other_num)
        mutations.append(
            (f"mt_num {other_num} fitted path", (leaf, fitted_index, other_num, fitted))
        )
    for level, sibling in enumerate(path):
        for position in choose(DIGEST_SIZE):
            changed = path[:level] + (flip(sibling, position),) + path[level + 1 :]
            mutations.append((f"path[{level}] byte {position}", (leaf, mt_index, mt_num, changed)))
    return mutations


def check_every_mutation_fails_only_its_message(
    leaves: Sequence[bytes], choose_messages: Sequence[int], choose: Callable[[int], Sequence[int]]
) -> int:
    """Run ``mutations_of_message`` on the chosen messages; return how many were checked."""
    root, paths, mt_num = build_batch(leaves)
    checked = 0
    for mt_index in choose_messages:
        for what, changed in mutations_of_message(leaves, paths, mt_num, mt_index, choose):
            roots = roots_with_one_message_changed(leaves, paths, mt_num, mt_index, changed)
            assert_only_message_fails(root, roots, mt_index, f"n={len(leaves)} i={mt_index} {what}")
            checked += 1
    return checked


def test_known_answers() -> None:
    """The digests are SHA-256 with the H9 prefixes byte for byte, pinned by literal values."""
    assert DIGEST_SIZE == 32 and BATCH_SIZE_MAX == 256
    assert digest(b"").hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert leaf_digest(b"").hex() == (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )
    assert leaf_digest(b"abc") == hashlib.sha256(b"\x00abc").digest()
    assert leaf_digest(b"abc") != digest(b"abc")
    left, right = leaf_digest(b"a"), leaf_digest(b"b")
    assert build_batch([b"a", b"b"])[0] == hashlib.sha256(b"\x01" + left + right).digest()


@pytest.mark.parametrize(
    ("count", "expected"),
    [
        (1, 1),
        (2, 2),
        (3, 4),
        (4, 4),
        (5, 8),
        (8, 8),
        (9, 16),
        (127, 128),
        (128, 128),
        (129, 256),
        (256, 256),
    ],
)
def test_batch_size_for_rounds_up_to_power_of_two(count: int, expected: int) -> None:
    """mt_num is the count rounded up to a power of two, as in docs/protocol.md section 4.2 step 1."""
    assert batch_size_for(count) == expected


@pytest.mark.parametrize("count", [0, -1, 257, 1024])
def test_batch_size_for_rejects_out_of_range(count: int) -> None:
    """Counts outside 1..256 are batcher bugs and raise ValueError."""
    with pytest.raises(ValueError):
        batch_size_for(count)


@pytest.mark.parametrize("count", [True, 2.0, None, "4"])
def test_batch_size_for_rejects_non_int(count: Any) -> None:
    """A count that is not an int (bool included) raises TypeError."""
    with pytest.raises(TypeError):
        batch_size_for(count)


@pytest.mark.parametrize("count", [0, 257])
def test_build_batch_rejects_bad_counts(count: int) -> None:
    """An empty batch or one beyond the validator's 256 cannot be built."""
    with pytest.raises(ValueError):
        build_batch([b"m"] * count)


def test_single_message_batch() -> None:
    """A batch of one has mt_num 1, an empty path, and the leaf digest as its root."""
    root, paths, mt_num = build_batch([b"only"])
    assert (root, paths, mt_num) == (leaf_digest(b"only"), [()], 1)
    assert root_from_path(b"only", 1, 1, ()) == root


def test_build_batch_matches_reference_for_all_sizes() -> None:
    """The optimised builder equals the literal 4.2 tree for every batch size 1..256."""
    for count in range(1, BATCH_SIZE_MAX + 1):
        leaves = make_leaves(count, seed=count)
        root, paths, mt_num = build_batch(leaves)
        assert (root, paths, mt_num) == reference_batch(leaves), count
        assert all(type(path) is tuple for path in paths)
        assert all(len(node) == DIGEST_SIZE for path in paths for node in path)


def test_every_message_verifies_alone_for_all_sizes() -> None:
    """Each message of every batch size 1..256 rebuilds the root and verifies the signature."""
    verify_key = SIGNER.verify_key
    for count in range(1, BATCH_SIZE_MAX + 1):
        leaves = make_leaves(count, seed=1000 + count)
        root, paths, mt_num = build_batch(leaves)
        signature = SIGNER.sign(root)
        # Like the verifier docs/protocol.md section 4.2 recommends, run Ed25519 once per distinct
        # rebuilt root (batch-mates repeat identical bytes), but decide every message
        # from its own rebuilt root, never from the one build_batch returned.
        verified: dict[bytes, bool] = {}
        for offset, (leaf, path) in enumerate(zip(leaves, paths)):
            rebuilt = root_from_path(leaf, offset + 1, mt_num, path)
            assert rebuilt is not None, (count, offset + 1)
            if rebuilt not in verified:
                verified[rebuilt] = verify_key.verify(rebuilt, signature)
            assert verified[rebuilt], (count, offset + 1)
            assert rebuilt == root, (count, offset + 1)
        assert list(verified) == [root]


def test_mutations_fail_exactly_that_message_exhaustive_small() -> None:
    """Batches of 1..16: changing any covered byte, index, mt_num or path fails only that one."""
    checked = 0
    for count in range(1, 17):
        leaves = make_leaves(count, seed=count)
        # choose=range mutates every position: every byte, every index, every digest byte.
        checked += check_every_mutation_fails_only_its_message(leaves, range(1, count + 1), range)
    assert checked > 20_000  # guards against the helper silently generating nothing


def test_mutations_fail_exactly_that_message_sampled_large() -> None:
    """For larger batches, sampled mutations of sampled messages fail only that message."""
    rng = random.Random(20240601)
    for count in (17, 64, 100, 128, 129, 256):
        leaves = make_leaves(count, seed=count, size=40)
        messages = sorted({1, count, rng.randrange(1, count + 1)})

        def sample(n: int) -> list[int]:
            return sorted(rng.sample(range(n), min(n, 3)))

        assert check_every_mutation_fails_only_its_message(leaves, messages, sample) > 0


def test_padding_positions_cannot_be_claimed() -> None:
    """A message placed at an unused (padding) index never yields the signed root."""
    leaves = make_leaves(5, seed=5)
    root, _, mt_num = build_batch(leaves)
    assert mt_num == 8
    for mt_index in (6, 7, 8):
        # The honest siblings of the padding leaf: everything but its own digest is real.
        leaf_node = mt_num - 1 + mt_index
        honest = [_node_of(leaves, (leaf_node >> level) ^ 1) for level in range(3)]
        for leaf in (b"", bytes(32), bytes(64), leaves[0], leaves[4]):
            assert root_from_path(leaf, mt_index, mt_num, honest) != root


def _node_of(leaves: Sequence[bytes], node: int) -> bytes:
    """Return heap node ``node`` of the 4.2 tree over ``leaves`` (zero-padded to mt_num)."""
    batch_size = batch_size_for(len(leaves))
    height = batch_size.bit_length() - node.bit_length()
    first_leaf = node << height
    covered = [
        leaf_digest(leaves[leaf - batch_size]) if leaf - batch_size < len(leaves) else bytes(32)
        for leaf in range(first_leaf, first_leaf + (1 << height))
    ]
    while len(covered) > 1:
        covered = [
            hashlib.sha256(b"\x01" + covered[i] + covered[i + 1]).digest()
            for i in range(0, len(covered), 2)
        ]
    return covered[0]


def test_node_helper_matches_reference() -> None:
    """The padding test's node helper agrees with the reference tree (it is part of the oracle)."""
    leaves = make_leaves(5, seed=5)
    root, paths, _ = reference_batch(leaves)
    assert _node_of(leaves, 1) == root
    assert _node_of(leaves, 13) == bytes(32)
    assert paths[4][0] == _node_of(leaves, 13)


@pytest.mark.parametrize(
    ("mt_index", "mt_num", "path_length"),
    [
        (0, 4, 2),
        (-1, 4, 2),
        (5, 4, 2),
        (2, 1, 0),
        (1, 0, 0),
        (0, 1, 0),  # index range
        (1, 3, 2),
        (1, 5, 2),
        (1, 6, 2),
        (1, 7, 3),
        (1, 100, 7),
        (1, 255, 8),  # not 2^k
        (1, 512, 9),
        (1, 1024, 10),
        (1, 2**40, 40),  # above 256
        (1, -4, 2),
    ],
)
def test_rejects_bad_index_and_mt_num(mt_index: int, mt_num: int, path_length: int) -> None:
    """mt_index 0 or > mt_num, non-power-of-two mt_num, and mt_num > 256 give None (H9)."""
    path = [bytes(32)] * path_length
    assert root_from_path(b"leaf", mt_index, mt_num, path) is None


def test_rejects_wrong_path_length_and_digest_sizes() -> None:
    """A path of the wrong length, or with any 31- or 33-byte digest, gives None."""
    leaves = make_leaves(8, seed=8)
    root, paths, mt_num = build_batch(leaves)
    path = list(paths[2])
    assert root_from_path(leaves[2], 3, mt_num, path) == root
    assert root_from_path(leaves[2], 3, mt_num, path[:-1]) is None
    assert root_from_path(leaves[2], 3, mt_num, path + [bytes(32)]) is None
    assert root_from_path(leaves[2], 3, mt_num, []) is None
    for level in range(len(path)):
        for bad in (path[level][:31], path[level] + b"\x00", b""):
            changed = path[:level] + [bad] + path[level + 1 :]
            assert root_from_path(leaves[2], 3, mt_num, changed) is None


@pytest.mark.parametrize(
    ("leaf", "mt_index", "mt_num", "path"),
    [
        ("text", 1, 1, ()),
        (None, 1, 1, ()),
        (b"leaf", True, 1, ()),
        (b"leaf", 1, True, ()),
        (b"leaf", 1.0, 2, (bytes(32),)),
        (b"leaf", 1, 2.0, (bytes(32),)),
        (b"leaf", "1", 2, (bytes(32),)),
        (b"leaf", 1, 2, None),
        (b"leaf", 1, 2, 5),
        (b"leaf", 1, 2, ("x" * 32,)),
        (b"leaf", 1, 2, ([0] * 32,)),
        (b"leaf", 1, 2, (None,)),
        (b"leaf", 1, 2, "a"),
    ],
)
def test_wrong_types_return_none(leaf: Any, mt_index: Any, mt_num: Any, path: Any) -> None:
    """Arguments of the wrong type give None, never an exception (they come from peers)."""
    assert root_from_path(leaf, mt_index, mt_num, path) is None


def test_bytes_like_path_digests_accepted() -> None:
    """Path digests that are memoryviews of the right bytes (zero-copy decoding) still verify."""
    leaves = make_leaves(4, seed=4)
    root, paths, mt_num = build_batch(leaves)
    views = [memoryview(node) for node in paths[1]]
    leaf = memoryview(leaves[1])
    assert root_from_path(leaf, 2, mt_num, views) == root  # type: ignore[arg-type]


def test_domain_separation_leaf_cannot_pose_as_inner_node() -> None:
    """A 64-byte leaf equal to left || right of an inner node does not hash to that node."""
    leaves = make_leaves(4, seed=44)
    root, paths, _ = build_batch(leaves)
    left, right = leaf_digest(leaves[0]), leaf_digest(leaves[1])
    inner = hashlib.sha256(b"\x01" + left + right).digest()
    assert paths[2][1] == inner  # node 2 is message 3's second sibling
    assert leaf_digest(left + right) != inner
    # So the inner node's children cannot be replayed as one message one level up...
    assert root_from_path(left + right, 1, 2, (paths[0][1],)) != root
    # ...and a two-leaf root cannot be replayed as a one-message batch either.
    two_root, _, _ = build_batch(leaves[:2])
    assert root_from_path(left + right, 1, 1, ()) != two_root


def test_domain_separation_inner_cannot_pose_as_leaf() -> None:
    """An inner digest presented as a leaf's bytes at a shallower depth does not reach the root."""
    leaves = make_leaves(8, seed=88)
    root, _, _ = build_batch(leaves)
    left, right = _node_of(leaves, 4), _node_of(leaves, 5)
    # Claim node 2 (= H(0x01 || node4 || node5)) is a leaf of a 2-message batch.
    assert root_from_path(left + right, 1, 2, (_node_of(leaves, 3),)) != root
    assert root_from_path(b"\x01" + left + right, 1, 2, (_node_of(leaves, 3),)) != root


@settings(max_examples=80, deadline=None)
@given(
    leaves=st.lists(st.binary(max_size=48), min_size=1, max_size=64),
    data=st.data(),
)
def test_property_random_batches(leaves: list[bytes], data: st.DataObject) -> None:
    """Random batches match the reference, every message verifies, a mutation fails only its own."""
    root, paths, mt_num = build_batch(leaves)
    assert (root, paths, mt_num) == reference_batch(leaves)
    signature = SIGNER.sign(root)
    for offset, (leaf, path) in enumerate(zip(leaves, paths)):
        assert root_from_path(leaf, offset + 1, mt_num, path) == root
    assert SIGNER.verify_key.verify(root, signature)

    mt_index = data.draw(st.integers(min_value=1, max_value=len(leaves)), label="mt_index")
    leaf, path = leaves[mt_index - 1], paths[mt_index - 1]
    if data.draw(st.booleans(), label="mutate_leaf") or not path:
        extra = data.draw(st.binary(min_size=1, max_size=4), label="appended")
        position = data.draw(st.integers(min_value=0, max_value=len(leaf)), label="position")
        changed_leaf = leaf[:position] + extra + leaf[position:]  # insertion: length changes too
        changed: tuple[bytes, int, int, Sequence[bytes]] = (changed_leaf, mt_index, mt_num, path)
    else:
        level = data.draw(st.integers(min_value=0, max_value=len(path) - 1), label="level")
        position = data.draw(st.integers(min_value=0, max_value=DIGEST_SIZE - 1), label="byte")
        mask = data.draw(st.integers(min_value=1, max_value=255), label="mask")
        changed_path = path[:level] + (flip(path[level], position, mask),) + path[level + 1 :]
        changed = (leaf, mt_index, mt_num, changed_path)
    roots = roots_with_one_message_changed(leaves, paths, mt_num, mt_index, changed)
    assert_only_message_fails(root, roots, mt_index, "hypothesis mutation")
    mutated_root = roots[mt_index - 1]
    assert mutated_root is None or not SIGNER.verify_key.verify(mutated_root, signature)
