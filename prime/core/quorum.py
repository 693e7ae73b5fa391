"""Quorum sizes and the order statistics of docs/protocol.md section 1.2, as pure functions.

Every threshold the protocol uses is computed here from ``(f, k)`` so that a
deliberately weakened quorum (the simulator's negative control) changes it in
exactly one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from prime.types import PO_ZERO, PoSeq


@dataclass(frozen=True, slots=True)
class Quorums:
    """The thresholds of docs/protocol.md section 1.2 for one ``(f, k)``.

    Computed once at construction, not per use: the core reads them for every
    PO-Ack part and every Prepare and Commit."""

    f: int
    k: int
    weaken_by: int = 0  # > 0 only in the simulator's negative control
    n: int = field(init=False)
    certificate: int = field(init=False)
    """Q1, Q4, Q6, Q7, Q13, Q15, Q16, Q17, Q19: 2f+k+1."""
    prepare: int = field(init=False)
    """Q3, Q18: 2f+k matching Prepares from non-leaders (the PP is the leader's vote)."""
    eligibility_rank: int = field(init=False)
    """Q2: 1-based rank, in ascending order, of the proof-ARU element (f+k+1)."""
    one_correct: int = field(init=False)
    """Q14, Q21: f+1 (at least one correct replica)."""

    def __post_init__(self) -> None:
        f, k, weaken_by = self.f, self.k, self.weaken_by
        set_field = object.__setattr__  # the dataclass is frozen
        set_field(self, "n", 3 * f + 2 * k + 1)
        set_field(self, "certificate", 2 * f + k + 1 - weaken_by)
        set_field(self, "prepare", 2 * f + k - weaken_by)
        set_field(self, "eligibility_rank", f + k + 1 + weaken_by)
        set_field(self, "one_correct", f + 1)


def leader_of(view: int, n: int) -> int:
    """``leader(v) = v mod N`` with 0 mapped to N (view 1 -> replica 1)."""
    r = view % n
    return n if r == 0 else r


def proof_aru(column: Sequence[PoSeq], rank: int) -> PoSeq:
    """Q2: the ``rank``-th smallest (1-based) of one originator's column.

    With ``rank = f+k+1`` at least ``2f+k+1`` rows vouch for the result, hence at
    least ``f+k+1`` correct replicas hold every request up to it."""
    assert 1 <= rank <= len(column), (rank, len(column))
    return sorted(column)[rank - 1]


def matrix_pop(
    rows: Sequence[Sequence[PoSeq] | None], n: int, q: Quorums, *, plain: bool = False
) -> tuple[PoSeq, ...]:
    """proof_aru for every originator ``1..n`` of a matrix of ``cum_aru`` vectors
    (row ``None`` = null row = all zero). Index ``s-1`` holds originator ``s``.

    Q2, with the incarnation rule of docs/protocol.md section 2.3.4: in each column
    the ``eligibility_rank``-th smallest entry ``v``, unless ``v`` is in an incarnation
    (not ``(0, 0)``) and at least f+1 entries are in a later one; then ``(i, 0)``, ``i``
    being the (f+1)-th largest incarnation in the column. Why: a replica that learns
    of an originator's new incarnation restarts its ``cum_aru`` there (2.2.1 step 4),
    and ``(2, 0)`` sorts
    above every ``(1, j)`` although that replica certified nothing of incarnation 1
    beyond what it had. Plain Q2 then lets f Byzantine rows claiming ``(1, J)`` make
    the old incarnation's uncertified (or never sent) tail eligible: no correct
    replica can execute it, all of them stall on that ordinal and jump over it, and
    the updates of the ordinals they skip, those the restarted replica's clients
    submitted included, are delivered nowhere. With the rule, ``(i, j)`` (j >= 1) is
    eligible only if fewer than f+1 of the 2f+k+1 entries at or above it are in a
    newer incarnation, so at least f+k+1 entries, k+1 of them correct, certified it
    in incarnation ``i`` itself; ``(i, 0)`` (the old tail abandoned) needs f+1 entries
    in incarnation ``i`` or later, so a correct replica saw the originator sign a
    request of incarnation ``i``. The result still never decreases when rows grow
    (S5): an entry leaving ``v``'s incarnation moves above it. ``plain`` is the rule
    without the incarnation clause (``Params.legacy`` "OLDTAIL", for the tests that
    show the attack)."""
    rank = q.eligibility_rank
    switch = q.one_correct  # entries in a newer incarnation that abandon the older tail
    cols: list[list[PoSeq]] = [[] for _ in range(n)]
    for row in rows:
        if row is None:
            for c in cols:
                c.append(PO_ZERO)
        else:
            for s in range(n):
                cols[s].append(row[s] if s < len(row) else PO_ZERO)
    out: list[PoSeq] = []
    for c in cols:
        c.sort()
        v = c[rank - 1]
        newer = c[-switch]  # the (f+1)-th largest entry: its incarnation is the (f+1)-th largest
        # v[0] == 0: v is (0, 0), nothing eligible yet, and no older tail to abandon.
        out.append((newer[0], 0) if newer[0] > v[0] > 0 and not plain else v)
    return tuple(out)


def compare_vectors(cur: Sequence[PoSeq], prev: Sequence[PoSeq]) -> tuple[bool, bool]:
    """Entry-wise comparison (docs/protocol.md section 2.2.3): ``(some_lower, some_higher)``."""
    lower = higher = False
    for a, b in zip(cur, prev):
        if a < b:
            lower = True
        elif a > b:
            higher = True
    return lower, higher
