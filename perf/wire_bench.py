"""Benchmark of the msgpack codec (prime.wire): envelopes encoded and decoded per second.

Cases, each a complete signed envelope with a dummy 64-byte signature:

* ``po_ack_10``: a PO_ACK with 10 parts (Merkle position 3 of 16);
* ``pre_prepare_4`` / ``pre_prepare_6``: a PRE_PREPARE whose N = 4 or 6 rows are PO_ARUs of
  N entries, each a directly signed envelope of its own replica (decoding checks every row);
* ``po_request_10x300``: a PO_REQUEST carrying 10 UPDATE envelopes of 300 payload bytes.

"encode" is what a sender does once its message exists: ``encode_body`` plus
``make_envelope`` (embedded envelopes are already bytes and are copied, not re-encoded).
"decode" is ``wire.decode`` of the envelope bytes, nested envelopes included.

Times are CPU time of the benchmarking thread (``time.thread_time``), so other processes on
a shared machine do not inflate them. Operations run in short interleaved slices and each
rate is the median over repetitions (min and max alongside). Prints a table and writes
perf/results/wire_bench.json.

    python perf/wire_bench.py            # 51 repetitions of ~20 ms per operation (~10 s)
    python perf/wire_bench.py --quick    # 11 repetitions of ~5 ms (~1 s)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import msgpack

from prime import msgs, wire
from prime.msgs import AckPart, PoAck, PoAru, PoRequest, PrePrepare, Update, UpdateKind

DEFAULT_OUTPUT = ROOT / "perf" / "results" / "wire_bench.json"
SIG = bytes(range(64))
UPDATE_PAYLOAD_BYTES = 300

Operation = Callable[[], object]


def envelope(msg: Any, *, sender: int, mt_num: int = 1, mt_index: int = 1) -> wire.Envelope:
    path = tuple(bytes([0xD0 + k]) * msgs.DIGEST_SIZE for k in range(mt_num.bit_length() - 1))
    return wire.make_envelope(
        sender=sender,
        body=wire.encode_body(msg),
        msg=msg,
        sig=SIG,
        mt_num=mt_num,
        mt_index=mt_index,
        path=path,
    )


def po_ack(parts_count: int) -> PoAck:
    parts = tuple(
        AckPart(originator=1 + i % 6, po=(1, 1000 + i), digest=bytes([i]) * msgs.DIGEST_SIZE)
        for i in range(parts_count)
    )
    return PoAck(parts=parts)


def pre_prepare(servers_count: int) -> PrePrepare:
    rows = tuple(
        envelope(
            PoAru(
                incarnation=1,
                num=500 + i,
                cum_aru=tuple((1, 900 + j) for j in range(servers_count)),
            ),
            sender=i,
        )
        for i in range(1, servers_count + 1)
    )
    return PrePrepare(seq=12345, view=7, sent_us=1_700_000_000_000_000, rows=rows)


def po_request(updates_count: int) -> PoRequest:
    updates = tuple(
        envelope(
            Update(
                client=100 + i,
                incarnation=1,
                seq=i + 1,
                kind=UpdateKind.APP,
                payload=bytes([i]) * UPDATE_PAYLOAD_BYTES,
            ),
            sender=100 + i,
        )
        for i in range(updates_count)
    )
    return PoRequest(po=(1, 77), updates=updates)


def cases() -> dict[str, tuple[Any, int, int]]:
    """name -> (message, mt_num, mt_index) of its outer envelope."""
    return {
        "po_ack_10": (po_ack(10), 16, 3),
        "pre_prepare_4": (pre_prepare(4), 1, 1),
        "pre_prepare_6": (pre_prepare(6), 1, 1),
        "po_request_10x300": (po_request(10), 4, 4),
    }


def operations(name: str, msg: Any, mt_num: int, mt_index: int) -> dict[str, Operation]:
    """Encode and decode of one case, checked to agree with each other before timing."""
    env = envelope(msg, sender=2, mt_num=mt_num, mt_index=mt_index)
    raw, path = env.raw, env.path

    def encode() -> bytes:
        body = wire.encode_body(msg)
        return wire.make_envelope(
            sender=2, body=body, msg=msg, sig=SIG, mt_num=mt_num, mt_index=mt_index, path=path
        ).raw

    def decode() -> object:
        return wire.decode(raw)

    decoded = decode()
    assert isinstance(decoded, wire.Envelope), f"{name}: {decoded}"
    assert decoded.msg == msg and encode() == raw, name
    return {f"{name}/encode": encode, f"{name}/decode": decode}


def calibrate(operation: Operation, slice_s: float) -> int:
    """Calls per slice so that one slice takes about ``slice_s`` of CPU time."""
    calls = 1
    while True:
        started = time.thread_time()
        for _ in range(calls):
            operation()
        elapsed = time.thread_time() - started
        if elapsed >= slice_s / 4:
            return max(1, round(calls * slice_s / elapsed))
        calls *= 4


def run(candidates: dict[str, Operation], repetitions: int, slice_s: float) -> dict[str, Any]:
    calls = {name: calibrate(op, slice_s) for name, op in candidates.items()}
    rates: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repetitions):
        for name, op in candidates.items():
            n = calls[name]
            started = time.thread_time()
            for _ in range(n):
                op()
            elapsed = time.thread_time() - started
            rates[name].append(n / elapsed if elapsed > 0 else float("inf"))
    out = {}
    for name, values in rates.items():
        median = statistics.median(values)
        out[name] = {
            "ops_per_s": median,
            "us_per_op": 1e6 / median,
            "ops_per_s_min": min(values),
            "ops_per_s_max": max(values),
            "calls_per_repetition": calls[name],
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="11 repetitions instead of 51")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON result file")
    args = parser.parse_args(argv)
    repetitions = 11 if args.quick else 51
    slice_s = 0.005 if args.quick else 0.02

    candidates: dict[str, Operation] = {}
    sizes: dict[str, int] = {}
    for name, (msg, mt_num, mt_index) in cases().items():
        candidates.update(operations(name, msg, mt_num, mt_index))
        sizes[name] = len(envelope(msg, sender=2, mt_num=mt_num, mt_index=mt_index).raw)
    timings = run(candidates, repetitions, slice_s)

    results = {}
    for name, size in sizes.items():
        encode, decode = timings[f"{name}/encode"], timings[f"{name}/decode"]
        results[name] = {"envelope_bytes": size, "encode": encode, "decode": decode}
    report: dict[str, Any] = {
        "benchmark": "wire_codec",
        "repetitions": repetitions,
        "slice_s_target": slice_s,
        "statistic": "median over interleaved repetitions (min and max alongside)",
        "clock": "time.thread_time (CPU time of the benchmarking thread)",
        "python": platform.python_version(),
        "msgpack": ".".join(map(str, msgpack.version)),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "results": results,
    }

    print(f"{'case':<20}{'bytes':>8}{'encode/s':>12}{'decode/s':>12}{'decode us':>11}")
    for name, r in results.items():
        print(
            f"{name:<20}{r['envelope_bytes']:>8}{r['encode']['ops_per_s']:>12,.0f}"
            f"{r['decode']['ops_per_s']:>12,.0f}{r['decode']['us_per_op']:>11.1f}"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    shown = args.output.relative_to(ROOT) if args.output.is_relative_to(ROOT) else args.output
    print(f"wrote {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
