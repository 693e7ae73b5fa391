"""The simulated network: per-link delays, loss, duplication, reordering, partitions.

All randomness comes from one ``random.Random`` seeded by the run's seed, and
it is consumed in a fixed order, so a run replays byte for byte. Reordering is
not a separate knob: it falls out of per-message jitter.

Delay models (one-way, microseconds):
* ``lan``: 150 us base + exponential jitter (mean 100 us), per link a base
  factor in [0.8, 1.2].
* ``wan``: a per-link base drawn once in [10 ms, 40 ms] + exponential jitter
  (mean 1 ms); a fraction of 1% of messages take an extra 5..20 ms (queueing).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Partition:
    """Drop messages from ``a`` to ``b`` (and ``b`` to ``a`` unless one-way) in a time window."""

    a: frozenset[int]
    b: frozenset[int]
    start_us: int
    end_us: int
    one_way: bool = False

    def blocks(self, src: int, dst: int, now_us: int) -> bool:
        if not self.start_us <= now_us < self.end_us:
            return False
        if src in self.a and dst in self.b:
            return True
        return not self.one_way and src in self.b and dst in self.a

    @classmethod
    def parse(cls, text: str) -> Partition:
        """``A,B|C,D@T1-T2`` (two-way) or ``A,B>C,D@T1-T2`` (A,B cannot reach C,D);
        times in virtual seconds."""
        try:
            groups, times = text.split("@")
            one_way = ">" in groups
            left, right = groups.split(">" if one_way else "|")
            t1, t2 = times.split("-")
            a = frozenset(int(x) for x in left.split(","))
            b = frozenset(int(x) for x in right.split(","))
            start, end = int(float(t1) * 1e6), int(float(t2) * 1e6)
        except ValueError as e:
            raise ValueError(f"bad partition {text!r}: expected A,B|C,D@T1-T2 ({e})") from None
        if end <= start or a & b:
            raise ValueError(f"bad partition {text!r}: empty window or overlapping groups")
        return cls(a, b, start, end, one_way)


@dataclass(slots=True)
class Network:
    """Decides, for each message, whether and when it arrives."""

    rng: random.Random
    model: str = "lan"
    loss: float = 0.0
    duplicate: float = 0.0
    partitions: list[Partition] = field(default_factory=list)
    _link_base_us: dict[tuple[int, int], float] = field(default_factory=dict)
    dropped: int = 0
    delivered: int = 0

    def __post_init__(self) -> None:
        if self.model not in ("lan", "wan"):
            raise ValueError(f"unknown delay model {self.model!r} (lan or wan)")
        if not 0.0 <= self.loss < 1.0 or not 0.0 <= self.duplicate < 1.0:
            raise ValueError("loss and duplicate are probabilities in [0, 1)")

    def _base_us(self, src: int, dst: int) -> float:
        key = (src, dst) if src < dst else (dst, src)
        base = self._link_base_us.get(key)
        if base is None:
            if self.model == "lan":
                base = 150.0 * self.rng.uniform(0.8, 1.2)
            else:
                base = self.rng.uniform(10_000.0, 40_000.0)
            self._link_base_us[key] = base
        return base

    def _delay_us(self, src: int, dst: int) -> int:
        base = self._base_us(src, dst)
        if self.model == "lan":
            return int(base + self.rng.expovariate(1 / 100.0))
        extra = self.rng.uniform(5_000.0, 20_000.0) if self.rng.random() < 0.01 else 0.0
        return int(base + self.rng.expovariate(1 / 1_000.0) + extra)

    def transit(self, src: int, dst: int, now_us: int) -> list[int]:
        """Arrival delays for one message (empty: lost; two: duplicated)."""
        for p in self.partitions:
            if p.blocks(src, dst, now_us):
                self.dropped += 1
                return []
        if self.loss and self.rng.random() < self.loss:
            self.dropped += 1
            return []
        delays = [self._delay_us(src, dst)]
        if self.duplicate and self.rng.random() < self.duplicate:
            delays.append(self._delay_us(src, dst))
        self.delivered += len(delays)
        return delays

    def faults_end_us(self) -> int:
        return max((p.end_us for p in self.partitions), default=0)
