"""Benchmark of Ed25519 signing (prime.crypto.sign) and Merkle batching (prime.crypto.merkle).

Measures, as medians over several interleaved repetitions in one run:

* signs/s and verifies/s of a 32-byte digest (what Prime signs: message digests and Merkle
  roots) through our wrappers, PyNaCl's high-level ``nacl.signing`` API, PyNaCl's
  ``nacl.bindings`` and, when PyNaCl's shared object exports libsodium's symbols, the
  detached functions called through a cffi ABI-mode ``dlopen``;
* the same for a "floor": PyNaCl's compiled libsodium call on arguments prepared in
  advance, the least any wrapper can cost;
* the Python-side cost of each verify path alone, using a signature that libsodium rejects
  before any curve arithmetic (its S half is not canonical);
* Merkle batch signing, ``build_batch`` plus one signature per batch, for batches of 1, 16
  and 128 messages, in messages/s;
* per-message verification of a received batch, with and without the
  ``(signer, root, signature)`` cache docs/protocol.md section 4.2 recommends.

Times are CPU time of the benchmarking thread (``time.thread_time``), so other processes
on a shared machine do not inflate them. Candidates run interleaved (one short slice of
each per repetition), so a slow moment on a
shared machine hits all of them alike; comparisons with our wrapper are also given as the
median of per-repetition time ratios, which cancels drift between repetitions. Prints a
table and writes perf/results/sign_bench.json.

    python perf/sign_bench.py            # 101 repetitions of ~10 ms per candidate (~30 s)
    python perf/sign_bench.py --quick    # 31 repetitions of ~4 ms (~3 s)
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import nacl
import nacl.bindings
import nacl.exceptions
import nacl.signing

from prime.crypto import merkle, sign

DEFAULT_OUTPUT = ROOT / "perf" / "results" / "sign_bench.json"
DATA_SIZE_BYTES = 32  # a SHA-256 digest or Merkle root
LEAF_SIZE_BYTES = 100  # sender id + a small protocol message body
BATCH_SIZES = (1, 16, 128)

Operation = Callable[[], object]

# The cheapest conceivable call: PyNaCl's compiled libsodium stub on arguments prepared in
# advance, with one shared output buffer (which is not thread-safe, so not usable as is).
FLOOR = "floor: bare lib call"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="31 repetitions instead of 101")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON result file")
    args = parser.parse_args(argv)
    # Many short interleaved slices rather than a few long ones: on a shared machine the
    # speed drifts over seconds, and short slices spread each drift over every candidate.
    repetitions = 31 if args.quick else 101
    slice_s = 0.004 if args.quick else 0.01

    rng = random.Random(1)
    key = sign.SigningKey(rng.randbytes(sign.SEED_SIZE))
    data = rng.randbytes(DATA_SIZE_BYTES)

    report: dict[str, Any] = {
        "benchmark": "ed25519_and_merkle",
        "repetitions": repetitions,
        "slice_s_target": slice_s,
        "statistic": "median over interleaved repetitions (min and max alongside)",
        "clock": "time.thread_time (CPU time of the benchmarking thread)",
        "data_size_bytes": DATA_SIZE_BYTES,
        "leaf_size_bytes": LEAF_SIZE_BYTES,
        "python": platform.python_version(),
        "pynacl": nacl.__version__,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "sign": run_group(sign_candidates(key, data), repetitions, slice_s),
        "verify": run_group(verify_candidates(key, data), repetitions, slice_s),
        "verify_overhead": run_group(
            verify_candidates(key, data, reject_early=True), repetitions, slice_s
        ),
        "merkle_sign": bench_merkle_sign(key, rng, repetitions, slice_s),
        "merkle_verify": bench_merkle_verify(key, rng, repetitions, slice_s),
    }
    print_table(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


def sign_candidates(key: sign.SigningKey, data: bytes) -> dict[str, Operation]:
    """Every way of making the same 64-byte signature, checked equal before timing."""
    high_level = nacl.signing.SigningKey(key.seed)
    secret = key.seed + key.verify_key.public
    candidates: dict[str, Operation] = {
        "prime.crypto.sign": lambda: key.sign(data),
        "nacl.signing": lambda: high_level.sign(data).signature,
        "nacl.bindings": lambda: nacl.bindings.crypto_sign(data, secret)[: sign.SIGNATURE_SIZE],
    }
    sodium: Any = importlib.import_module("nacl._sodium")
    floor_buffer = sodium.ffi.new("unsigned char[]", sign.SIGNATURE_SIZE + len(data))

    def floor() -> bytes:
        sodium.lib.crypto_sign(floor_buffer, sodium.ffi.NULL, data, len(data), secret)
        result: bytes = sodium.ffi.buffer(floor_buffer, sign.SIGNATURE_SIZE)[:]
        return result

    candidates[FLOOR] = floor
    abi = _abi_detached()
    if abi is not None:
        abi_ffi, abi_lib = abi
        buffer = abi_ffi.new("unsigned char[]", sign.SIGNATURE_SIZE)

        def abi_sign() -> bytes:
            abi_lib.crypto_sign_detached(buffer, abi_ffi.NULL, data, len(data), secret)
            result: bytes = abi_ffi.buffer(buffer)[:]
            return result

        candidates["cffi ABI detached"] = abi_sign
    expected = key.sign(data)
    for name, operation in candidates.items():
        assert operation() == expected, name
    return candidates


def verify_candidates(
    key: sign.SigningKey, data: bytes, *, reject_early: bool = False
) -> dict[str, Operation]:
    """Every way of checking a signature; with ``reject_early`` the signature is invalid.

    The early-rejected signature has an S half of all 0xff bytes, which libsodium refuses
    before hashing or curve arithmetic, so its timing is the Python-side cost of the path.
    """
    signature = key.sign(data)
    if reject_early:
        signature = signature[:32] + b"\xff" * 32
    public = key.verify_key.public
    verify_key = key.verify_key
    high_level = nacl.signing.VerifyKey(public)

    def nacl_signing() -> bool:
        try:
            high_level.verify(data, signature)
        except nacl.exceptions.BadSignatureError:
            return False
        return True

    def nacl_bindings() -> bool:
        try:
            nacl.bindings.crypto_sign_open(signature + data, public)
        except nacl.exceptions.BadSignatureError:
            return False
        return True

    candidates: dict[str, Operation] = {
        "prime.crypto.sign": lambda: verify_key.verify(data, signature),
        "nacl.signing": nacl_signing,
        "nacl.bindings": nacl_bindings,
    }
    sodium: Any = importlib.import_module("nacl._sodium")
    signed = signature + data
    candidates[FLOOR] = lambda: (
        sodium.lib.crypto_sign_open(sodium.ffi.NULL, sodium.ffi.NULL, signed, len(signed), public)
        == 0
    )
    abi = _abi_detached()
    if abi is not None:
        _, abi_lib = abi
        candidates["cffi ABI detached"] = lambda: (
            abi_lib.crypto_sign_verify_detached(signature, data, len(data), public) == 0
        )
    for name, operation in candidates.items():
        assert operation() is (not reject_early), name
    return candidates


def _abi_detached() -> tuple[Any, Any] | None:
    """Open libsodium's detached functions through cffi ABI mode, if PyNaCl exports them.

    PyNaCl's compiled module does not declare them, so this is the only way to call them
    from PyNaCl's copy of libsodium; it is measured here to justify not using it.
    """
    try:
        # By name: neither module ships type stubs, and cffi returns Any anyway.
        cffi: Any = importlib.import_module("cffi")
        sodium: Any = importlib.import_module("nacl._sodium")
        ffi = cffi.FFI()
        ffi.cdef(
            "int crypto_sign_detached(unsigned char *, unsigned long long *,"
            " const unsigned char *, unsigned long long, const unsigned char *);"
            "int crypto_sign_verify_detached(const unsigned char *, const unsigned char *,"
            " unsigned long long, const unsigned char *);"
        )
        library = ffi.dlopen(sodium.__file__)
        library.crypto_sign_detached  # noqa: B018 - fail here if the symbol is hidden
        return ffi, library
    except (ImportError, OSError, AttributeError):
        return None


def bench_merkle_sign(
    key: sign.SigningKey, rng: random.Random, repetitions: int, slice_s: float
) -> list[dict[str, Any]]:
    """Time build_batch alone and build_batch plus the batch signature, per batch size."""
    candidates: dict[str, Operation] = {}
    for batch_size in BATCH_SIZES:
        leaves = [rng.randbytes(LEAF_SIZE_BYTES) for _ in range(batch_size)]

        def build(leaves: list[bytes] = leaves) -> object:
            return merkle.build_batch(leaves)

        def build_and_sign(leaves: list[bytes] = leaves) -> object:
            root, paths, mt_num = merkle.build_batch(leaves)
            return key.sign(root), paths, mt_num

        candidates[f"build {batch_size}"] = build
        candidates[f"build+sign {batch_size}"] = build_and_sign
    timings = run_group(candidates, repetitions, slice_s)
    rows = []
    for batch_size in BATCH_SIZES:
        built = timings[f"build {batch_size}"]
        signed = timings[f"build+sign {batch_size}"]
        rows.append(
            {
                "batch_size": batch_size,
                "build_us": built["us_per_op"],
                "build_and_sign_us": signed["us_per_op"],
                "messages_per_s": batch_size * signed["ops_per_s"],
                "messages_per_s_min": batch_size * signed["ops_per_s_min"],
                "messages_per_s_max": batch_size * signed["ops_per_s_max"],
            }
        )
    return rows


def bench_merkle_verify(
    key: sign.SigningKey, rng: random.Random, repetitions: int, slice_s: float
) -> list[dict[str, Any]]:
    """Time verifying every message of a received batch, one message at a time.

    "uncached" runs Ed25519 for every message; "cached" keeps ``(signer, root, signature)
    -> valid`` as docs/protocol.md section 4.2 advises, emptied at the start of each batch so every
    batch pays for exactly one Ed25519 verification, as a fresh batch from a peer would.
    """
    verify_key = key.verify_key
    candidates: dict[str, Operation] = {}
    for batch_size in BATCH_SIZES:
        leaves = [rng.randbytes(LEAF_SIZE_BYTES) for _ in range(batch_size)]
        root, paths, mt_num = merkle.build_batch(leaves)
        signature = key.sign(root)
        messages = [
            (leaf, index + 1, path) for index, (leaf, path) in enumerate(zip(leaves, paths))
        ]

        def roots_only(messages: list[Any] = messages, mt_num: int = mt_num) -> bool:
            return all(
                merkle.root_from_path(leaf, index, mt_num, path) is not None
                for leaf, index, path in messages
            )

        def uncached(
            messages: list[Any] = messages, mt_num: int = mt_num, signature: bytes = signature
        ) -> bool:
            valid = True
            for leaf, index, path in messages:
                batch_root = merkle.root_from_path(leaf, index, mt_num, path)
                valid &= batch_root is not None and verify_key.verify(batch_root, signature)
            return valid

        def cached(
            messages: list[Any] = messages, mt_num: int = mt_num, signature: bytes = signature
        ) -> bool:
            cache: dict[tuple[sign.VerifyKey, bytes, bytes], bool] = {}
            valid = True
            for leaf, index, path in messages:
                batch_root = merkle.root_from_path(leaf, index, mt_num, path)
                if batch_root is None:
                    valid = False
                    continue
                cache_key = (verify_key, batch_root, signature)
                known = cache.get(cache_key)
                if known is None:
                    known = cache[cache_key] = verify_key.verify(batch_root, signature)
                valid &= known
            return valid

        for name, operation in (
            ("root_from_path", roots_only),
            ("uncached", uncached),
            ("cached", cached),
        ):
            assert operation() is True
            candidates[f"{name} {batch_size}"] = operation
    timings = run_group(candidates, repetitions, slice_s)
    rows = []
    for batch_size in BATCH_SIZES:
        row: dict[str, Any] = {"batch_size": batch_size}
        for name in ("root_from_path", "uncached", "cached"):
            per_batch = timings[f"{name} {batch_size}"]
            row[f"{name}_us_per_message"] = per_batch["us_per_op"] / batch_size
            row[f"{name}_messages_per_s"] = per_batch["ops_per_s"] * batch_size
        rows.append(row)
    return rows


def run_group(
    candidates: dict[str, Operation], repetitions: int, slice_s: float
) -> dict[str, dict[str, float]]:
    """Time each candidate in interleaved slices; return per-op medians, minima and maxima.

    Each candidate's call count per slice is calibrated once so a slice lasts about
    ``slice_s``; the order of candidates rotates every repetition. ``time_ratio_to_first``
    is the median over repetitions of this candidate's time divided by the first
    candidate's time in the same repetition (our wrapper, in the sign and verify groups).
    """
    counts = {name: _calibrate(operation, slice_s) for name, operation in candidates.items()}
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    names = list(candidates)
    for repetition in range(repetitions):
        rotation = repetition % len(names)
        for name in names[rotation:] + names[:rotation]:
            samples[name].append(_time_per_call(candidates[name], counts[name]))
    baseline = samples[names[0]]
    results = {}
    for name, per_call_s in samples.items():
        median_s = statistics.median(per_call_s)
        ratios = [own / first for own, first in zip(per_call_s, baseline, strict=True)]
        results[name] = {
            "us_per_op": median_s * 1e6,
            "ops_per_s": 1 / median_s,
            "ops_per_s_min": 1 / max(per_call_s),
            "ops_per_s_max": 1 / min(per_call_s),
            # time relative to the group's first candidate in the same repetition
            "time_ratio_to_first": statistics.median(ratios),
            "calls_per_repetition": counts[name],
        }
    return results


def _calibrate(operation: Operation, slice_s: float) -> int:
    """Return how many calls of ``operation`` take about ``slice_s`` (at least 1)."""
    calls = 1
    while True:
        elapsed_s = _time_per_call(operation, calls) * calls
        if elapsed_s >= 0.02 or calls >= 1 << 24:
            return max(1, int(calls * slice_s / max(elapsed_s, 1e-9)))
        calls *= 4


def _time_per_call(operation: Operation, calls: int) -> float:
    """Run ``operation`` ``calls`` times and return the mean CPU seconds per call.

    CPU time of this thread, not wall time: the development machine is shared, and while
    another process holds the core, wall time grows but our thread's CPU time does not.
    Everything measured is single-threaded and never blocks, so the two agree on an idle
    machine.
    """
    loop = range(calls)
    start = time.thread_time()
    for _ in loop:
        operation()
    return (time.thread_time() - start) / calls


def print_table(report: dict[str, Any]) -> None:
    """Print the report as aligned text tables."""
    print(
        f"Ed25519 over {report['data_size_bytes']}-byte data, PyNaCl {report['pynacl']}, "
        f"Python {report['python']}; median of {report['repetitions']} interleaved "
        "repetitions [min..max]"
    )
    print("(time/ours: median over repetitions of this path's time over ours in the same one)")
    print(
        f"{'path':<21} {'signs/s':>9} {'us':>7} {'time/ours':>9}   "
        f"{'verifies/s':>10} {'us':>7} {'time/ours':>9}   {'verify overhead us':>18}"
    )
    for name in report["sign"]:
        signed, verified = report["sign"][name], report["verify"][name]
        overhead = report["verify_overhead"][name]
        print(
            f"{name:<21} {signed['ops_per_s']:>9.0f} {signed['us_per_op']:>7.2f} "
            f"{signed['time_ratio_to_first']:>9.3f}   "
            f"{verified['ops_per_s']:>10.0f} {verified['us_per_op']:>7.2f} "
            f"{verified['time_ratio_to_first']:>9.3f}   {overhead['us_per_op']:>18.3f}"
        )
    for name in report["sign"]:
        signed, verified = report["sign"][name], report["verify"][name]
        print(
            f"  spread {name:<21} signs/s [{signed['ops_per_s_min']:.0f}.."
            f"{signed['ops_per_s_max']:.0f}]  verifies/s [{verified['ops_per_s_min']:.0f}.."
            f"{verified['ops_per_s_max']:.0f}]"
        )
    print()
    print(f"Merkle batch signing ({report['leaf_size_bytes']}-byte leaves, one signature/batch)")
    print(f"{'batch':>5} {'build us':>9} {'build+sign us':>14} {'messages/s':>11}  [min..max]")
    for row in report["merkle_sign"]:
        print(
            f"{row['batch_size']:>5} {row['build_us']:>9.1f} {row['build_and_sign_us']:>14.1f} "
            f"{row['messages_per_s']:>11.0f}  [{row['messages_per_s_min']:.0f}.."
            f"{row['messages_per_s_max']:.0f}]"
        )
    print()
    print("Merkle per-message verification of a received batch (us per message, messages/s)")
    print(
        f"{'batch':>5} {'root_from_path':>15} {'uncached':>10} {'msgs/s':>9} "
        f"{'cached':>8} {'msgs/s':>9}"
    )
    for row in report["merkle_verify"]:
        print(
            f"{row['batch_size']:>5} {row['root_from_path_us_per_message']:>15.2f} "
            f"{row['uncached_us_per_message']:>10.2f} {row['uncached_messages_per_s']:>9.0f} "
            f"{row['cached_us_per_message']:>8.2f} {row['cached_messages_per_s']:>9.0f}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
