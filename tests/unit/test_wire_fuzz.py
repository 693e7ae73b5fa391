"""Fuzzing ``wire.decode``: no exception escapes it and it never allocates without bound.

Engine: atheris (libFuzzer, coverage-guided over ``prime.wire`` and ``prime.msgs``). It
installs and runs on python 3.11 here (atheris 3.0.0, manylinux wheel). libFuzzer ends the
process when it stops, so it runs in ``FUZZ_PROCESSES`` child processes (one per core, each
running this file as a script); each child counts what it decoded and writes the count to a
JSON file before it exits. libFuzzer's own mutations (bit flips, byte insert/delete, cross-over)
alternate with ``Mutator`` below, which adds what libFuzzer does not know about msgpack:
integer fields set to boundary values, fields of the wrong type or count, length prefixes
claiming 2**31 items or bytes, deeply nested array headers, truncation and splicing, and
values re-encoded in a wider msgpack form (the same value in non-canonical bytes).

If atheris is not installed (it is not a runtime dependency), the same ``Mutator`` runs alone
in this process, driven by a seeded ``random.Random`` (``run_seeded``; PRIME_FUZZ_ENGINE=seeded
forces it); the test prints which engine ran. Either way at least 100_000 inputs are decoded (``PRIME_FUZZ_INPUTS`` may raise
the count), seeded with a valid envelope of every message type from ``test_wire.py``, and
every result must be an ``Envelope`` or a reason string; an ``Envelope`` only for the exact
bytes our encoder makes of it (the codec accepts the canonical encoding only). A hypothesis
test adds shrinking random and mutated inputs, and a tracemalloc test bounds the memory that
inputs claiming huge lengths can make ``decode`` reserve.

Nothing from ``prime`` is imported at module level: a child must import ``prime.wire`` inside
``atheris.instrument_imports()`` for coverage feedback, which only works on a first import.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import random
import subprocess
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
FUZZ_INPUTS_MIN = 100_000
FUZZ_PROCESSES = 2  # the CI machine has two cores
FUZZ_INPUT_BYTES_MAX = 4096  # the largest seed is ~1.5 KiB; room to grow and splice
REASON_CHARS_MAX = 400  # a reason nests at most NESTING_DEPTH_MAX + 1 "name:field:" prefixes
HUGE_CLAIM_PEAK_BYTES_MAX = 10 * 1024 * 1024
ATHERIS_MUTATIONS_FRACTION = 0.4  # the rest are Mutator's msgpack-aware ones


def fuzz_inputs_target() -> int:
    return max(FUZZ_INPUTS_MIN, int(os.environ.get("PRIME_FUZZ_INPUTS", FUZZ_INPUTS_MIN)))


# ---------------------------------------------------------------------------
# The mutator: msgpack-aware mutations, shared by both engines.

BOUNDARY_INTS = (
    0, 1, 2, 3, 4, 31, 32, 127, 128, 255, 256, 257, 511, 512, 1023, 1024, 1025, 4096,
    2**15 - 1, 2**16 - 1, 2**16, 2**31 - 1, 2**31, 2**32 - 1, 2**32,
    2**63 - 1, 2**63, 2**64 - 1, -1, -32, -33, -128, -129, -(2**31), -(2**63),
)  # fmt: skip

# Headers whose length field claims far more than any input holds (bin, str, ext, array, map).
HUGE_CLAIMS = (
    b"\xc6\x80\x00\x00\x00",  # bin32, 2**31 bytes
    b"\xc6\xff\xff\xff\xff",  # bin32, 2**32 - 1 bytes
    b"\xc5\xff\xff",  # bin16
    b"\xdb\x80\x00\x00\x00",  # str32
    b"\xc9\x80\x00\x00\x00\x01",  # ext32
    b"\xdd\x80\x00\x00\x00",  # array32, 2**31 items
    b"\xdd\xff\xff\xff\xff",  # array32, 2**32 - 1 items
    b"\xdc\xff\xff",  # array16
    b"\xdf\x80\x00\x00\x00",  # map32
    b"\xde\xff\xff",  # map16
)
# Open arrays that msgpack preallocates before it sees their items (one level each).
NESTED_CLAIMS = (
    b"\xdc\x04\x00",
    b"\xdd\x00\x00\x04\x00",
    b"\xdc\x0c\x00",
    b"\xdc\x10\x00",
    b"\x9f",
)

OTHER_VALUES: tuple[Any, ...] = (
    None, True, False, 1.5, "", "x", b"", b"\x00" * 33, b"\xff" * 1025, [], [0], {},
    msgpack.ExtType(1, b"x"), 2**64 - 1, -1,
)  # fmt: skip


@dataclasses.dataclass
class Packed:
    """A bin whose content is itself msgpack (a body or an embedded envelope), opened up."""

    value: list[Any]


def open_up(obj: Any, depth: int = 0) -> Any:
    """The msgpack tree of ``obj`` with every bin that holds an array opened as ``Packed``."""
    if isinstance(obj, bytes) and depth < 8:
        try:
            inner = msgpack.unpackb(obj, use_list=True, raw=False, strict_map_key=False)
        except Exception:  # noqa: BLE001 - msgpack raises many types on garbage
            return obj
        return Packed(open_up(inner, depth + 1)) if isinstance(inner, list) else obj
    if isinstance(obj, list):
        return [open_up(x, depth) for x in obj]
    return obj


def close_up(obj: Any) -> Any:
    if isinstance(obj, Packed):
        return msgpack.packb(close_up(obj.value), use_bin_type=True)
    if isinstance(obj, list):
        return [close_up(x) for x in obj]
    return obj


def slots_of(tree: Any) -> list[tuple[list[Any], int]]:
    """Every (list, index) position in the opened tree, bodies and nested envelopes included."""
    out: list[tuple[list[Any], int]] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, Packed):
            node = node.value
        if isinstance(node, list):
            for i, child in enumerate(node):
                out.append((node, i))
                stack.append(child)
    return out


class Mutator:
    """Seeded mutations of msgpack envelopes; ``mutate`` never raises."""

    def __init__(self, seeds: list[bytes]) -> None:
        assert seeds
        self.seeds = seeds
        self.operations: list[Callable[[bytes, random.Random], bytes]] = [
            self.set_field,
            self.set_field,
            self.set_field,
            self.set_field,
            self.set_field,
            self.flip_bits,
            self.insert_bytes,
            self.delete_bytes,
            self.truncate,
            self.splice,
            self.insert_boundary_int,
            self.insert_huge_claim,
            self.insert_nested_claims,
            self.random_bytes,
            self.widen,
        ]

    def mutate(self, data: bytes, rng: random.Random) -> bytes:
        for _ in range(1 + (rng.random() < 0.25)):
            data = rng.choice(self.operations)(data, rng)
        return data[:FUZZ_INPUT_BYTES_MAX]

    def set_field(self, data: bytes, rng: random.Random) -> bytes:
        """Replace one field anywhere (envelope, body or nested body): boundary int, wrong
        type, dropped or duplicated item, or a byte string one byte off its length."""
        try:
            tree = open_up(msgpack.unpackb(data, use_list=True, raw=False, strict_map_key=False))
        except Exception:  # noqa: BLE001 - msgpack raises many types on garbage
            return self.flip_bits(data, rng)
        slots = slots_of(tree)
        if not slots:
            return self.flip_bits(data, rng)
        node, i = rng.choice(slots)
        old = node[i]
        choice = rng.randrange(5)
        if choice == 0:
            node[i] = rng.choice(BOUNDARY_INTS)
        elif choice == 1:
            node[i] = rng.choice(OTHER_VALUES)
        elif choice == 2:
            del node[i]
        elif choice == 3:
            node.insert(i, old)
        elif isinstance(old, bytes):
            node[i] = old[:-1] if old and rng.random() < 0.5 else old + b"\x00"
        else:
            node[i] = rng.choice(BOUNDARY_INTS)
        try:
            return bytes(msgpack.packb(close_up(tree), use_bin_type=True))
        except Exception:  # noqa: BLE001 - e.g. packing a value of an unknown type
            return data

    def widen(self, data: bytes, rng: random.Random) -> bytes:
        """Re-encode one value anywhere (envelope, body or nested envelope) in a wider
        msgpack form: the same value, non-canonical bytes (issue 11 item 7)."""
        try:
            tree = open_up(msgpack.unpackb(data, use_list=True, raw=False, strict_map_key=False))
        except Exception:  # noqa: BLE001 - msgpack raises many types on garbage
            return self.flip_bits(data, rng)
        target = rng.randrange(1 + len(slots_of(tree)))
        seen = [0]

        def pack(obj: Any) -> bytes:
            wide = seen[0] == target
            seen[0] += 1
            if isinstance(obj, Packed):
                inner = pack(obj.value)
                if wide:
                    return b"\xc6" + len(inner).to_bytes(4, "big") + inner
                return bytes(msgpack.packb(inner))
            if isinstance(obj, list):
                items = b"".join(pack(x) for x in obj)
                if wide:
                    return b"\xdd" + len(obj).to_bytes(4, "big") + items
                head = msgpack.packb([None] * len(obj))
                return head[: len(head) - len(obj)] + items
            if wide and type(obj) is int and -(2**63) <= obj < 2**64:
                if obj >= 0:
                    return b"\xcf" + obj.to_bytes(8, "big")
                return b"\xd3" + obj.to_bytes(8, "big", signed=True)
            if wide and isinstance(obj, bytes):
                return b"\xc6" + len(obj).to_bytes(4, "big") + obj
            return bytes(msgpack.packb(obj, use_bin_type=True))

        try:
            return pack(tree)
        except Exception:  # noqa: BLE001 - e.g. a value msgpack cannot pack
            return data

    @staticmethod
    def flip_bits(data: bytes, rng: random.Random) -> bytes:
        if not data:
            return bytes([rng.randrange(256)])
        out = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
        return bytes(out)

    @staticmethod
    def insert_bytes(data: bytes, rng: random.Random) -> bytes:
        at = rng.randint(0, len(data))
        chunk = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        return data[:at] + chunk + data[at:]

    @staticmethod
    def delete_bytes(data: bytes, rng: random.Random) -> bytes:
        if not data:
            return data
        at = rng.randrange(len(data))
        return data[:at] + data[at + rng.randint(1, 16) :]

    @staticmethod
    def truncate(data: bytes, rng: random.Random) -> bytes:
        return data[: rng.randint(0, max(0, len(data) - 1))]

    def splice(self, data: bytes, rng: random.Random) -> bytes:
        other = rng.choice(self.seeds)
        return data[: rng.randint(0, len(data))] + other[rng.randint(0, len(other)) :]

    @staticmethod
    def insert_boundary_int(data: bytes, rng: random.Random) -> bytes:
        packed = msgpack.packb(rng.choice(BOUNDARY_INTS))
        at = rng.randint(0, len(data))
        end = at + len(packed) if rng.random() < 0.5 else at  # overwrite or insert
        return data[:at] + packed + data[end:]

    @staticmethod
    def insert_huge_claim(data: bytes, rng: random.Random) -> bytes:
        claim = rng.choice(HUGE_CLAIMS)
        at = rng.randint(0, len(data))
        end = at + len(claim) if rng.random() < 0.5 else at
        return data[:at] + claim + data[end:]

    @staticmethod
    def insert_nested_claims(data: bytes, rng: random.Random) -> bytes:
        chunk = rng.choice(NESTED_CLAIMS) * rng.choice((2, 64, 1100))
        at = rng.randint(0, len(data))
        return data[:at] + chunk + data[at:]

    @staticmethod
    def random_bytes(data: bytes, rng: random.Random) -> bytes:
        return rng.randbytes(rng.randint(0, 256))


# ---------------------------------------------------------------------------
# Checking one result and counting.


def canonical_bytes(env: Any) -> bytes:
    """What our encoder makes of a decoded envelope: decode accepts only these bytes."""
    from prime import wire

    return wire.make_envelope(
        sender=env.sender,
        body=wire.encode_body(env.msg),
        msg=env.msg,
        sig=env.sig,
        mt_num=env.mt_num,
        mt_index=env.mt_index,
        path=env.path,
    ).raw


@dataclasses.dataclass
class FuzzStats:
    inputs: int = 0
    envelopes: int = 0
    reasons: Counter[str] = dataclasses.field(default_factory=Counter)

    def record(self, data: bytes, result: Any, envelope_type: type) -> None:
        """Count one decode result, failing on anything but an Envelope of ``data`` or a reason."""
        self.inputs += 1
        if type(result) is str:
            assert 0 < len(result) <= REASON_CHARS_MAX, result
            self.reasons[result.split(":", 1)[0]] += 1
        else:
            assert type(result) is envelope_type, f"decode returned {type(result)!r}"
            assert result.raw == data
            assert canonical_bytes(result) == data, "a non-canonical encoding decoded"
            self.envelopes += 1

    def to_json(self) -> dict[str, Any]:
        return {"inputs": self.inputs, "envelopes": self.envelopes, "reasons": dict(self.reasons)}

    def merge(self, other: dict[str, Any]) -> None:
        self.inputs += other["inputs"]
        self.envelopes += other["envelopes"]
        self.reasons.update(other["reasons"])


def seed_corpus() -> list[bytes]:
    """A valid envelope of every message type, plus a few edge seeds."""
    from tests.unit.test_wire import sample_envelopes

    seeds = [e.raw for _, e in sorted(sample_envelopes().items())]
    assert all(len(s) <= FUZZ_INPUT_BYTES_MAX for s in seeds)
    return seeds + [b"", b"\x96", b"\x90"]


# ---------------------------------------------------------------------------
# Engine 1: atheris, in child processes.


def run_atheris_child(job: dict[str, Any]) -> None:
    """Fuzz until ``job["inputs"]`` inputs were decoded, write the stats, exit. Never returns."""
    import atheris

    with atheris.instrument_imports(include=["prime"]):
        from prime import wire

    seeds = [p.read_bytes() for p in sorted(Path(job["seed_dir"]).iterdir())]
    mutator = Mutator(seeds)
    stats = FuzzStats()
    inputs = job["inputs"]

    def test_one_input(data: bytes) -> None:
        stats.record(data, wire.decode(data), wire.Envelope)
        if stats.inputs >= inputs:
            Path(job["stats_path"]).write_text(json.dumps(stats.to_json()))
            os._exit(0)  # libFuzzer would exit without running Python's exit handlers anyway

    def custom_mutator(data: bytes, size_max: int, seed: int) -> bytes:
        rng = random.Random(seed)
        if rng.random() < ATHERIS_MUTATIONS_FRACTION:
            return bytes(atheris.Mutate(data, size_max))
        return mutator.mutate(data, rng)[:size_max]

    argv = [
        sys.argv[0],
        f"-seed={job['seed']}",
        f"-max_len={FUZZ_INPUT_BYTES_MAX}",
        "-timeout=20",
        "-mutate_depth=2",  # deeper stacks of byte mutations almost never keep the framing
        "-rss_limit_mb=1024",
        f"-artifact_prefix={job['artifact_dir']}/",
        job["corpus_dir"],
    ]
    atheris.Setup(argv, test_one_input, custom_mutator=custom_mutator)
    atheris.Fuzz()
    raise AssertionError("atheris.Fuzz returned")


def run_atheris(tmp_path: Path, seeds: list[bytes], inputs: int) -> FuzzStats:
    seed_dir = tmp_path / "seeds"
    seed_dir.mkdir()
    for i, seed in enumerate(seeds):
        (seed_dir / f"{i:03d}").write_bytes(seed)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    children = []
    for k in range(FUZZ_PROCESSES):
        corpus_dir = tmp_path / f"corpus{k}"
        corpus_dir.mkdir()
        for seed_path in seed_dir.iterdir():
            (corpus_dir / seed_path.name).write_bytes(seed_path.read_bytes())
        job: dict[str, Any] = {
            "inputs": -(-inputs // FUZZ_PROCESSES),
            "seed": 1 + k,
            "seed_dir": str(seed_dir),
            "corpus_dir": str(corpus_dir),
            "artifact_dir": str(tmp_path),
            "stats_path": str(tmp_path / f"stats{k}.json"),
        }
        log = (tmp_path / f"child{k}.log").open("wb")
        cmd = [sys.executable, __file__, "--atheris-child", json.dumps(job)]
        children.append((job, log, subprocess.Popen(cmd, env=env, stdout=log, stderr=log)))
    stats = FuzzStats()
    for job, log, child in children:
        returncode = child.wait(timeout=280)
        log.close()
        output = Path(log.name).read_text(errors="replace")
        assert returncode == 0, f"fuzz child failed ({returncode}):\n{output[-6000:]}"
        stats.merge(json.loads(Path(job["stats_path"]).read_text()))
    return stats


# ---------------------------------------------------------------------------
# Engine 2: the seeded mutator alone, in this process.


def run_seeded(seeds: list[bytes], inputs: int, seed: int) -> FuzzStats:
    from prime import wire

    rng = random.Random(seed)
    mutator = Mutator(seeds)
    corpus = list(seeds)
    stats = FuzzStats()
    while stats.inputs < inputs:
        data = mutator.mutate(rng.choice(corpus), rng)
        result = wire.decode(data)
        stats.record(data, result, wire.Envelope)
        if type(result) is not str and len(corpus) < 4096:
            corpus.append(data)  # a valid mutant is a new starting point
    return stats


@pytest.mark.timeout(300)
def test_fuzz_decode_returns_envelope_or_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """At least 100_000 random and mutated inputs each decode to an Envelope or a reason."""
    inputs = fuzz_inputs_target()
    seeds = seed_corpus()
    started = time.perf_counter()
    forced = os.environ.get(
        "PRIME_FUZZ_ENGINE"
    )  # "atheris" or "seeded"; default: atheris if present
    if forced == "atheris" or (forced is None and importlib.util.find_spec("atheris") is not None):
        engine = f"atheris x{FUZZ_PROCESSES}"
        stats = run_atheris(tmp_path, seeds, inputs)
    else:
        engine = "seeded mutator"
        stats = run_seeded(seeds, inputs, seed=20240601)
    wall_s = time.perf_counter() - started
    with capsys.disabled():
        print(
            f"\nwire fuzz ({engine}): {stats.inputs} inputs in {wall_s:.1f} s, "
            f"{stats.envelopes} decoded, reasons {stats.reasons.most_common(12)}"
        )
    assert stats.inputs >= inputs >= FUZZ_INPUTS_MIN
    assert stats.envelopes > 0, "no mutant decoded: the seeds or the mutator are broken"
    assert len(stats.reasons) >= 10, "mutants reach too few distinct checks"


def test_seeded_engine_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """The fallback engine (used where atheris is missing) works and reaches many checks."""
    stats = run_seeded(seed_corpus(), 5_000, seed=7)
    assert stats.inputs == 5_000 and stats.envelopes > 0 and len(stats.reasons) >= 10


# ---------------------------------------------------------------------------
# Hypothesis: shrinking random and mutated inputs.


@settings(max_examples=400, deadline=None)
@given(raw=st.binary(max_size=2048))
def test_random_bytes_decode_to_envelope_or_reason(raw: bytes) -> None:
    """Arbitrary bytes decode to an Envelope or a reason, never an exception."""
    from prime import wire

    FuzzStats().record(raw, wire.decode(raw), wire.Envelope)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed_index=st.integers(0, 10_000),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
    cut=st.integers(0, 10_000) | st.none(),
    claim=st.sampled_from(HUGE_CLAIMS + NESTED_CLAIMS) | st.none(),
)
def test_mutated_valid_encodings_decode_to_envelope_or_reason(
    seed_index: int, edits: list[tuple[int, int]], cut: int | None, claim: bytes | None
) -> None:
    """Valid envelopes with overwritten bytes, a cut, or a huge length claim never raise."""
    from prime import wire

    seeds = seed_corpus()
    raw = bytearray(seeds[seed_index % len(seeds)])
    for at, value in edits:
        if raw:
            raw[at % len(raw)] = value
    if claim is not None:
        at = (cut or 0) % (len(raw) + 1)
        raw[at:at] = claim
    elif cut is not None:
        del raw[cut % (len(raw) + 1) :]
    FuzzStats().record(bytes(raw), wire.decode(bytes(raw)), wire.Envelope)


# ---------------------------------------------------------------------------
# Memory: inputs that claim huge lengths must not make decode reserve them.


def huge_claim_inputs(seeds: list[bytes]) -> list[bytes]:
    """Length claims alone, as every envelope part, inside bodies and rows, and nested deep."""
    from tests.unit.test_wire import raw_envelope

    rng = random.Random(5)
    out: list[bytes] = []
    for claim in HUGE_CLAIMS:
        padded = claim + b"\x00" * 64
        out += [claim, padded, b"\x96" + padded, b"\xdd\x00\x00\x00\x06" + padded]
        out.append(raw_envelope(padded))  # as the body
        out.append(raw_envelope([5, 1, 1, 0, [padded]]))  # as a pre-prepare row
        for s in seeds:
            out += [s[:at] + claim + s[at:] for at in (rng.randint(0, len(s)) for _ in range(3))]
    for header in NESTED_CLAIMS:
        for levels in (64, 1023, 1100):
            chain = header * levels
            out += [
                chain,
                chain + bytes(4096),
                raw_envelope(chain),
                raw_envelope(chain + bytes(4096)),
            ]
    out.append(NESTED_CLAIMS[0] * (1 << 18))  # ~768 KiB of nested claims, under size_max
    return out


def test_huge_length_claims_allocate_little() -> None:
    """Decoding inputs that claim 2**31 bytes or items, or nest such claims, stays under 10 MiB."""
    from prime import wire

    batch = huge_claim_inputs(seed_corpus())
    tracemalloc.start()
    try:
        baseline_bytes = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for raw in batch:
            FuzzStats().record(raw, wire.decode(raw), wire.Envelope)
        peak_bytes = tracemalloc.get_traced_memory()[1] - baseline_bytes
    finally:
        tracemalloc.stop()
    print(f"huge claims: {len(batch)} inputs, peak growth {peak_bytes / 2**20:.2f} MiB")
    assert peak_bytes < HUGE_CLAIM_PEAK_BYTES_MAX


def test_nested_array_claims_are_bounded_by_the_schema() -> None:
    """msgpack preallocates each open array, so decode caps array counts at what specs need."""
    from prime import msgs, wire

    counts_max = [
        s.count_max
        for c in msgs.MESSAGES.values()
        for _, s in c.SPECS
        if isinstance(s, msgs.TupleOf)
    ]
    assert wire.ARRAY_ITEMS_MAX == max(counts_max + [6, wire.PATH_DIGESTS_MAX])
    worst_bytes = 1024 * (wire.ARRAY_ITEMS_MAX * 8 + 64)  # msgpack keeps <= 1024 arrays open
    assert worst_bytes < HUGE_CLAIM_PEAK_BYTES_MAX


if __name__ == "__main__" and sys.argv[1:2] == ["--atheris-child"]:
    run_atheris_child(json.loads(sys.argv[2]))
