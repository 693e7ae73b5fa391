"""Erasure coding of requests: any f+1 of N parts rebuild the request, bad input returns None."""

import itertools
import random

import pytest

from prime.crypto import erasure


@pytest.mark.parametrize(("f", "n"), [(1, 4), (1, 6), (2, 7)])
def test_any_f_plus_one_parts_rebuild(f: int, n: int) -> None:
    """Every subset of f+1 parts decodes to the original bytes, for odd and even lengths."""
    rng = random.Random(f * 100 + n)
    for length in (1, 2, 3, 299, 1000, 4097):
        raw = rng.randbytes(length)
        parts = erasure.encode(raw, data_parts=f + 1, total_parts=n)
        assert len(parts) == n and all(len(p) == erasure.part_size(length, f + 1) for p in parts)
        for subset in itertools.combinations(range(n), f + 1):
            got = erasure.decode({i: parts[i] for i in subset}, request_bytes=length, data_parts=f + 1, total_parts=n)
            assert got == raw, (length, subset)


def test_part_is_a_fraction_of_the_request() -> None:
    """Each part is about 1/(f+1) of the request: the bandwidth saving of erasure-coded recon."""
    raw = bytes(9000)
    parts = erasure.encode(raw, data_parts=2, total_parts=6)
    assert len(parts[0]) == 4500


def test_bad_parts_are_refused_or_mismatch() -> None:
    """Wrong sizes, indices or counts give None; a garbage part gives other bytes, never a raise."""
    raw = random.Random(1).randbytes(500)
    parts = erasure.encode(raw, data_parts=2, total_parts=4)
    kw = dict(request_bytes=500, data_parts=2, total_parts=4)
    assert erasure.decode({0: parts[0]}, **kw) is None
    assert erasure.decode({0: parts[0], 1: parts[1][:-1]}, **kw) is None
    assert erasure.decode({0: parts[0], 9: parts[1]}, **kw) is None
    assert erasure.decode({0: parts[0], 1: parts[1]}, request_bytes=0, data_parts=2, total_parts=4) is None
    garbage = erasure.decode({0: parts[0], 3: bytes(len(parts[3]))}, **kw)
    assert garbage is not None and garbage != raw
