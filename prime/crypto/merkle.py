"""Merkle-tree batch signatures (docs/protocol.md section 4.2) with SHA-256 and domain separation (docs/hardening.md H9).

A replica signs a whole batch of outgoing messages with one Ed25519 signature over the
root of a Merkle tree whose leaves are the messages, and appends to each message the
sibling digests on its leaf's path to the root. A receiver rebuilds the root from one
message alone (``root_from_path``) and checks the batch signature on it, so batch-mates
are never needed, and a message copied into a PC_SET or ORD_CERT stays verifiable.

Tree layout, exactly as in 4.2: for ``count`` messages the tree has ``mt_num`` leaves,
``count`` rounded up to a power of two. Nodes use heap numbering (root 1, children of
``x`` are ``2x`` and ``2x + 1``), leaves are nodes ``mt_num .. 2*mt_num - 1``, and message
``mt_index`` (1-based, queue order) is leaf ``mt_num - 1 + mt_index``. The path lists the
sibling of each node from the leaf up to (not including) the root, leaf level first; the
sibling of ``x`` is ``x ^ 1``. A batch of one has ``mt_num = 1``, an empty path, and the
leaf digest as its root.

Hashing (H9 hardening; the C code used SHA-1 with no prefixes):

* leaf digest  = SHA-256(0x00 || leaf_bytes)
* inner digest = SHA-256(0x01 || left || right)
* an unused leaf (padding up to ``mt_num``) is 32 zero bytes, not hashed; inner nodes above
  unused leaves are still hashed normally (docs/protocol.md section 4.2).

The prefixes make leaf and inner preimages disjoint (first byte 0x00 versus 0x01), so the
bytes of an inner node, ``left || right``, cannot be presented as a 64-byte message that
hashes to the same node, and a subtree root cannot be passed off as a leaf. Padding cannot
be claimed either: a message at an unused position would need a leaf digest of all zeros,
that is, a SHA-256 preimage.

The validator's limits (H9): ``mt_num`` must be a power of two in ``1 .. BATCH_SIZE_MAX``,
``1 <= mt_index <= mt_num``, the path must have exactly ``log2(mt_num)`` digests, and each
must be ``DIGEST_SIZE`` bytes. ``root_from_path`` returns None for anything else, never an
exception, because all of it arrives from peers. ``mt_num`` is not itself hashed: it is
bound by the path length, since a shorter or longer path would have to turn a leaf into an
inner node or the reverse, which the prefixes forbid. ``mt_index`` is bound by the left or
right order at each level. The only way two indices give the same root is when the two
subtrees being swapped are equal, in which case the covered bytes are identical too (up
to a SHA-256 collision), so such a swap changes nothing a receiver acts on.

Senders cut batches at ``SIG_THRESHOLD`` = 128 (docs/protocol.md section 4.2); only the
validator accepts up to 256, so this module accepts up to ``BATCH_SIZE_MAX`` = 256
everywhere and leaves the sender's cap to the batcher's configuration.

Speed: ``build_batch`` runs once per signed batch in the signing process and
``root_from_path`` once per received message, so both hash with ``hashlib.sha256``
(OpenSSL) on flat lists, one list per tree level, and never build a node object. Each
digest starts from a copy of a hash state that has already absorbed its prefix, which is
cheaper than constructing a hash object and concatenating the prefix (measured numbers
next to ``_LEAF_STATE``). Subtrees made only of padding are not hashed: their digests are
precomputed in ``_PADDING_DIGESTS`` and are exactly what hashing them would give.
Measured in ``perf/sign_bench.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from hashlib import sha256

DIGEST_SIZE = 32
BATCH_SIZE_MAX = 256
DEPTH_MAX = 8  # log2(BATCH_SIZE_MAX): the longest path a validator accepts

_LEAF_PREFIX = b"\x00"
_INNER_PREFIX = b"\x01"
_PADDING_LEAF = bytes(DIGEST_SIZE)

# Literal table from mt_num to path length. Membership is the validator's power-of-two
# check, so there is no arithmetic on untrusted integers before the range is known.
_PATH_LENGTH_BY_BATCH_SIZE: dict[int, int] = {1 << depth: depth for depth in range(DEPTH_MAX + 1)}

assert sha256().digest_size == DIGEST_SIZE
assert 1 << DEPTH_MAX == BATCH_SIZE_MAX
assert max(_PATH_LENGTH_BY_BATCH_SIZE) == BATCH_SIZE_MAX
assert len(_LEAF_PREFIX) == len(_INNER_PREFIX) == 1 and _LEAF_PREFIX != _INNER_PREFIX


def _padding_digests() -> tuple[bytes, ...]:
    """Return the digest of an all-padding subtree of each height 0 .. DEPTH_MAX.

    Height 0 is the unhashed zero leaf; each higher one is an ordinary inner node over
    two copies of the one below, exactly as a naive full-tree build would compute it.
    """
    digests = [_PADDING_LEAF]
    for _ in range(DEPTH_MAX):
        below = digests[-1]
        digests.append(sha256(_INNER_PREFIX + below + below).digest())
    return tuple(digests)


_PADDING_DIGESTS = _padding_digests()

# Hash states with the prefix already absorbed. Copying one is cheaper than constructing a
# new OpenSSL hash object (about 0.46 us against 0.55 us per digest, measured), and it
# avoids concatenating the prefix onto every message. Copies never modify the original,
# so sharing them between threads is safe.
_LEAF_STATE = sha256(_LEAF_PREFIX)
_INNER_STATE = sha256(_INNER_PREFIX)


def digest(data: bytes) -> bytes:
    """Plain SHA-256 of ``data``: the message digest ``H`` of docs/protocol.md section 4.1 (no prefix)."""
    return sha256(data).digest()


def leaf_digest(leaf_bytes: bytes) -> bytes:
    """The Merkle leaf digest SHA-256(0x00 || leaf_bytes) of one batched message."""
    state = _LEAF_STATE.copy()
    state.update(leaf_bytes)
    return state.digest()


def batch_size_for(count: int) -> int:
    """Return ``mt_num`` for ``count`` messages: ``count`` rounded up to a power of two.

    ``count`` outside ``1 .. BATCH_SIZE_MAX`` is a batcher bug, so it raises ValueError
    (and a count that is not an int raises TypeError).
    """
    if not isinstance(count, int) or isinstance(count, bool):
        raise TypeError(f"batch count must be an int, not {type(count).__name__}")
    if not 1 <= count <= BATCH_SIZE_MAX:
        raise ValueError(f"batch count {count} outside 1..{BATCH_SIZE_MAX}")
    batch_size = 1 << (count - 1).bit_length()
    assert batch_size in _PATH_LENGTH_BY_BATCH_SIZE
    assert count <= batch_size < 2 * count
    return batch_size


def build_batch(leaves: Sequence[bytes]) -> tuple[bytes, list[tuple[bytes, ...]], int]:
    """Build the tree over ``leaves`` and return ``(root, paths, mt_num)``.

    ``paths[i]`` is the sibling path of message ``i + 1`` (``mt_index = i + 1``), leaf
    level first, ready to append to that message. The caller signs ``root`` once.
    """
    count = len(leaves)
    batch_size = batch_size_for(count)
    depth = _PATH_LENGTH_BY_BATCH_SIZE[batch_size]
    level: list[bytes] = []
    append = level.append
    start_leaf = _LEAF_STATE.copy
    for leaf in leaves:
        state = start_leaf()
        state.update(leaf)
        append(state.digest())
    levels = []
    start_inner = _INNER_STATE.copy
    for height in range(depth):
        # Only nodes that cover at least one message are hashed. With an odd number of
        # them, the last one's sibling covers padding only, and its digest is precomputed.
        if len(level) & 1:
            level.append(_PADDING_DIGESTS[height])
        levels.append(level)
        pairs = iter(level)
        level = []
        append = level.append
        for left, right in zip(pairs, pairs):
            state = start_inner()
            state.update(left)
            state.update(right)
            append(state.digest())
    assert len(level) == 1
    return level[0], _sibling_paths(levels, count), batch_size


def _sibling_paths(levels: list[list[bytes]], count: int) -> list[tuple[bytes, ...]]:
    """Return each message's sibling path from the per-height node lists of ``build_batch``.

    Builds one column per height (for every message, the sibling of its ancestor at that
    height) and zips the columns, so the tuples are made in C rather than in one Python
    step per message and height. A column repeats each sibling once per message below
    it; the repetition is done with slice assignments or list multiplication, whichever
    needs fewer Python-level steps (at most about the square root of ``count``).
    """
    if not levels:
        return [()] * count
    columns = []
    for height, level in enumerate(levels):
        node_count = len(level)
        assert node_count % 2 == 0  # build_batch padded every level it kept
        swapped = level[:]
        swapped[0::2] = level[1::2]
        swapped[1::2] = level[0::2]
        repeat = 1 << height  # messages below one node at this height
        if repeat == 1:
            column = swapped
        elif repeat <= node_count:
            column = [_PADDING_LEAF] * (node_count * repeat)
            for offset in range(repeat):
                column[offset::repeat] = swapped
        else:
            column = []
            for node in swapped:
                column += [node] * repeat
        assert len(column) >= count
        columns.append(column)
    # Columns are longer than count where they cover padding; zip stops at the shortest
    # and the slice drops a path for the padding leaf that pairs with an odd last message.
    paths = list(zip(*columns))[:count]
    assert len(paths) == count
    return paths


def root_from_path(
    leaf_bytes: bytes, mt_index: int, mt_num: int, path: Sequence[bytes]
) -> bytes | None:
    """Fold ``path`` into the root that message ``mt_index`` of ``mt_num`` claims, or None.

    Everything here comes from a peer, so any violation of the H9 limits in the module
    docstring (and any argument of the wrong type) gives None, never an exception. The
    caller then checks the batch signature on the returned root.
    """
    if type(mt_num) is not int or type(mt_index) is not int:
        return None  # bool is an int subclass, and True must not pass as mt_num = 1
    depth = _PATH_LENGTH_BY_BATCH_SIZE.get(mt_num)
    if depth is None or not 1 <= mt_index <= mt_num:
        return None
    try:
        if len(path) != depth:
            return None
        node = mt_num - 1 + mt_index  # heap number of the leaf
        state = _LEAF_STATE.copy()
        state.update(leaf_bytes)
        running = state.digest()
        start_inner = _INNER_STATE.copy
        for sibling in path:
            if len(sibling) != DIGEST_SIZE:
                return None
            state = start_inner()
            if node & 1:  # odd heap numbers are right children
                state.update(sibling)
                state.update(running)
            else:
                state.update(running)
                state.update(sibling)
            running = state.digest()
            node >>= 1
    except TypeError:
        return None  # a non-bytes leaf or sibling, or a path that is not a sequence
    assert node == 1
    return running
