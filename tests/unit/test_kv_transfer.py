"""The KV application's state transfer: the f+1 digest vote (``agree_and_fetch``), the
``sync`` marker of an application that attached late, and snapshots bounded per source."""

from __future__ import annotations

from prime.app import kv
from prime.app.kvservice import agree_and_fetch
from prime.msgs import Update, UpdateKind

APP = int(UpdateKind.APP)


def _store_with(items: dict[bytes, bytes], ordinal: int = 7) -> bytes:
    s = kv.KvStore(1)
    for n, (k, v) in enumerate(items.items(), 1):
        s.apply(n, (Update(5, 1, n, APP, kv.put(k, v)),))
    s.ordinal = ordinal
    return s.snapshot()


GOOD = _store_with({b"a": b"1", b"b": b"2"})
BAD = _store_with({b"a": b"evil"})
D_GOOD = kv.KvStore.snapshot_digest(GOOD)
D_BAD = kv.KvStore.snapshot_digest(BAD)


def _peers(digests: dict[int, str | None], blobs: dict[int, bytes | None]):  # type: ignore[no-untyped-def]
    asked: list[int] = []

    def get_blob(p: int) -> bytes | None:
        asked.append(p)
        return blobs.get(p)

    return (lambda p: digests.get(p)), get_blob, asked


def test_a_forged_digest_in_the_minority_is_outvoted() -> None:
    """f=1: the forger (peer 2, asked first for the snapshot if it were trusted) reports
    the digest of its own forged snapshot; peers 3 and 4 agree on the real one."""
    get_d, get_b, asked = _peers({2: D_BAD, 3: D_GOOD, 4: D_GOOD}, {2: BAD, 3: GOOD, 4: GOOD})
    blob, vote = agree_and_fetch([2, 3, 4], 1, get_d, get_b)
    assert blob == GOOD and vote.agreed == D_GOOD and vote.source == 3
    assert 2 not in asked


def test_a_peer_that_votes_right_but_serves_forged_bytes_is_skipped() -> None:
    get_d, get_b, asked = _peers({2: D_GOOD, 3: D_GOOD, 4: None}, {2: BAD, 3: GOOD})
    blob, vote = agree_and_fetch([2, 3, 4], 1, get_d, get_b)
    assert blob == GOOD and vote.rejected == [2] and vote.source == 3 and asked == [2, 3]


def test_no_install_without_f_plus_1_agreeing_peers() -> None:
    """One answer, or two that differ, are not enough at f=1: a lone Byzantine peer
    (or a lone correct one that a Byzantine contradicts) decides nothing."""
    for digests in ({2: D_BAD, 3: None, 4: None}, {2: D_BAD, 3: D_GOOD, 4: None}):
        get_d, get_b, asked = _peers(digests, {2: BAD, 3: GOOD})
        blob, vote = agree_and_fetch([2, 3, 4], 1, get_d, get_b)
        assert blob is None and vote.agreed is None and asked == []
    # f+1 peers vouch for a digest but none serves matching bytes: nothing installed
    get_d, get_b, _ = _peers({2: D_GOOD, 3: D_GOOD, 4: None}, {2: BAD, 3: None})
    assert agree_and_fetch([2, 3, 4], 1, get_d, get_b)[0] is None


def test_f2_needs_three_votes() -> None:
    peers = [2, 3, 4, 5, 6, 7]
    two_liars = {2: D_BAD, 3: D_BAD, 4: D_GOOD, 5: D_GOOD, 6: None, 7: None}
    get_d, get_b, _ = _peers(two_liars, {p: (BAD if p < 4 else GOOD) for p in peers})
    assert agree_and_fetch(peers, 2, get_d, get_b)[0] is None
    two_liars[6] = D_GOOD
    get_d, get_b, _ = _peers(two_liars, {p: (BAD if p < 4 else GOOD) for p in peers})
    assert agree_and_fetch(peers, 2, get_d, get_b)[0] == GOOD


def test_a_late_application_takes_its_own_sync_as_its_marker() -> None:
    """The application of replica 1 (client 5) attached late: after the notice it
    applies nothing until its own sync is delivered at X, and asks for the state as
    of X; replica 2's store snapshots at X when it applies that sync."""
    me = kv.KvStore(1, client=5)
    peer = kv.KvStore(2, client=6)
    me.on_state_transfer_needed(3)
    o4 = (Update(6, 1, 1, APP, kv.put(b"k", b"v")),)
    o5 = (Update(6, 1, 2, APP, kv.put(b"k2", b"v2")), Update(5, 9, 1, APP, kv.sync(42)))
    for o, ups in ((4, o4), (5, o5)):
        assert peer.apply(o, ups) is None
    assert me.apply(4, o4) is None and me.data == {}
    assert me.apply(5, o5) == (5, 5)
    blob = peer.snapshot_at(5)
    assert blob is not None and peer.snapshot_at(4) is None
    me.restore(blob)
    assert me.data == {b"k": b"v", b"k2": b"v2"} and not me.transferring
    # someone else's sync never ends our transfer
    other = kv.KvStore(3, client=7)
    other.on_state_transfer_needed(1)
    assert other.apply(5, o5) is None and other.transferring


def test_snapshots_are_bounded_per_source() -> None:
    """A client that floods sync ops evicts only its own snapshots, never the one a
    jumped replica's marker made."""
    s = kv.KvStore(1)
    marker = Update(4, 2, 1, int(UpdateKind.CLIENT_STATE_TRANSFER), b"")
    s.apply(1, (marker,))
    for n in range(2, 200):
        s.apply(n, (Update(9, 1, n, APP, kv.sync(n)),))
    assert s.snapshot_at(1) is not None
    assert len(s.snapshots) == 1 + kv.SNAPSHOTS_PER_SOURCE
    assert s.snapshot_at(199) is not None and s.snapshot_at(100) is None
