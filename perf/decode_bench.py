"""Benchmark: ``wire.decode`` against ``wire.decode_verified`` on realistic envelopes.

The engine rebuilds every peer and client record that a verify worker already decoded
and verified; ``decode_verified`` skips what the worker checked (canonical re-packing,
every field's bounds, ``invalid()``). Cases, each a complete envelope with a dummy
64-byte signature:

* ``po_request_25x300``: a PO_REQUEST carrying 25 client-signed UPDATE envelopes of 300
  payload bytes (Merkle position 3 of 8);
* ``po_ack_10``: a PO_ACK with 10 parts (position 5 of 16);
* ``pre_prepare_4``: a PRE_PREPARE whose N = 4 rows are signed PO_ARUs of 4 entries;
* ``prepare`` / ``commit``: one vote (position 2 of 4);
* ``update_300``: one client UPDATE of 300 payload bytes (a CLIENT record).

Before timing, both decoders' results are checked to be equal field by field. Times are
CPU time of the benchmarking thread (``time.thread_time``), so other processes on a
shared machine do not inflate them; operations run in short interleaved slices and each
figure is the median over repetitions (min and max alongside). ``speedup`` is
decode's median time over decode_verified's. Prints a table and writes
perf/results/decode_bench.json.

    python perf/decode_bench.py            # 51 repetitions of ~20 ms per operation (~15 s)
    python perf/decode_bench.py --quick    # 11 repetitions of ~5 ms (~1 s)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import msgpack

from perf.wire_bench import UPDATE_PAYLOAD_BYTES, envelope, po_ack, pre_prepare, run
from prime import wire
from prime.msgs import Commit, PoRequest, Prepare, Update, UpdateKind

DEFAULT_OUTPUT = ROOT / "perf" / "results" / "decode_bench.json"


def update(i: int) -> wire.Envelope:
    client = 100 + i
    msg = Update(client=client, incarnation=1, seq=i + 1, kind=UpdateKind.APP, payload=bytes([i]) * UPDATE_PAYLOAD_BYTES)
    return envelope(msg, sender=client)


def cases() -> dict[str, wire.Envelope]:
    digest = bytes(range(32))
    return {
        "po_request_25x300": envelope(PoRequest(po=(1, 77), updates=tuple(update(i) for i in range(25))), sender=2, mt_num=8, mt_index=3),
        "po_ack_10": envelope(po_ack(10), sender=2, mt_num=16, mt_index=5),
        "pre_prepare_4": envelope(pre_prepare(4), sender=1),
        "prepare": envelope(Prepare(seq=12345, view=7, digest=digest), sender=3, mt_num=4, mt_index=2),
        "commit": envelope(Commit(seq=12345, view=7, digest=digest), sender=3, mt_num=4, mt_index=2),
        "update_300": update(7),
    }


def same(a: Any, b: Any) -> bool:
    """Equal types and values at every level, nested envelopes field by field."""
    if type(a) is not type(b):
        return False
    if isinstance(a, wire.Envelope):
        names = ("sender", "mt_num", "mt_index", "sig", "path", "body", "raw", "msg")
        return all(same(getattr(a, n), getattr(b, n)) for n in names)
    if dataclasses.is_dataclass(a):
        return all(same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    if isinstance(a, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return bool(a == b)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="11 repetitions instead of 51")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON result file")
    args = parser.parse_args(argv)
    repetitions = 11 if args.quick else 51
    slice_s = 0.005 if args.quick else 0.02

    envs = cases()
    candidates = {}
    for name, env in envs.items():
        raw = env.raw
        checked, rebuilt = wire.decode(raw), wire.decode_verified(raw)
        assert isinstance(checked, wire.Envelope), f"{name}: {checked}"
        assert same(checked, rebuilt), f"{name}: decode_verified differs from decode"
        candidates[f"{name}/decode"] = lambda raw=raw: wire.decode(raw)
        candidates[f"{name}/decode_verified"] = lambda raw=raw: wire.decode_verified(raw)
    timings = run(candidates, repetitions, slice_s)

    results = {}
    for name, env in envs.items():
        checked, fast = timings[f"{name}/decode"], timings[f"{name}/decode_verified"]
        results[name] = {
            "envelope_bytes": len(env.raw),
            "decode": checked,
            "decode_verified": fast,
            "speedup": checked["us_per_op"] / fast["us_per_op"],
        }
    report: dict[str, Any] = {
        "benchmark": "decode_verified",
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

    print(f"{'case':<20}{'bytes':>8}{'decode us':>11}{'verified us':>13}{'speedup':>9}")
    for name, r in results.items():
        print(
            f"{name:<20}{r['envelope_bytes']:>8}{r['decode']['us_per_op']:>11.1f}"
            f"{r['decode_verified']['us_per_op']:>13.1f}{r['speedup']:>8.1f}x"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    shown = args.output.relative_to(ROOT) if args.output.is_relative_to(ROOT) else args.output
    print(f"wrote {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
