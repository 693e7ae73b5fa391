"""Random scenarios for the many-seed tests: one seed -> one ``SimConfig``.

A scenario mixes network faults (loss, duplication, jitter-driven reordering,
a partition), up to ``k`` crashed replicas and up to ``f`` Byzantine replicas
of every behaviour (but the ``TARGETED`` ones of ``prime.sim.byzantine``), twins
(one identity run as two instances) included; a restarting replica gets the first
client, stops cleanly in half the runs, and a Byzantine replica alongside it may
attack the edge of its restart record (``amnesia-edge``). The same seed always yields
the same scenario, and the
scenario's own replay command reproduces the run.
"""

from __future__ import annotations

import random

from prime.sim.byzantine import BEHAVIOURS, TARGETED
from prime.sim.cluster import SimConfig


def random_scenario(seed: int, *, f: int, k: int, duration: float = 1.0) -> SimConfig:
    rng = random.Random(f"scenario/{seed}/{f}/{k}")
    n = 3 * f + 2 * k + 1
    ids = list(range(1, n + 1))
    byz: dict[int, str] = {}
    for _ in range(rng.randint(0, f)):
        candidates = [r for r in ids if r not in byz]
        # The leader (replica 1) is faulty in about one run in five.
        rid = 1 if rng.random() < 0.2 and 1 not in byz else rng.choice([r for r in candidates if r != 1])
        byz[rid] = rng.choice(sorted(set(BEHAVIOURS) - TARGETED))
    crash: dict[int, float] = {}
    for _ in range(rng.randint(0, k)):
        candidates = [r for r in ids if r not in byz and r not in crash]
        crash[rng.choice(candidates)] = round(rng.uniform(0.1, duration), 3)
    restart: dict[int, float] = {}
    if rng.random() < 0.25 and len(byz) + len(crash) < f + k:
        candidates = [r for r in ids if r not in byz and r not in crash]
        restart[rng.choice(candidates)] = round(rng.uniform(0.1, duration), 3)
    partitions: list[str] = []
    if rng.random() < 0.3:
        lonely = rng.choice(ids)
        rest = ",".join(str(r) for r in ids if r != lonely)
        start = round(rng.uniform(0.05, duration * 0.6), 3)
        end = round(start + rng.uniform(0.1, duration * 0.6), 3)
        sep = ">" if rng.random() < 0.3 else "|"
        partitions.append(f"{lonely}{sep}{rest}@{start}-{end}")
    twins: list[int] = []
    if rng.random() < 0.15 and len(byz) < f and len(byz) + len(crash) + len(restart) < f + k:
        # Drawn last, so the rest of every seed's scenario stays what it was.
        twins.append(rng.choice([r for r in ids if r not in byz and r not in crash and r not in restart]))
    clean_stop: list[int] = []
    if restart:
        # Drawn last too (issue 12 item 7): a restart is clean (the exact record is written
        # first) in half the runs, and a Byzantine replica alongside it attacks the edge of
        # the restarted replica's record in a third of them.
        clean_stop = [r for r in restart if rng.random() < 0.5]
        if byz and rng.random() < 0.3:
            byz[rng.choice(sorted(byz))] = "amnesia-edge"
    # Half the request floods send each request to a different subset of the others
    # (issue 14), from a generator of their own so no other draw of the seed changes.
    gapped = random.Random(f"scenario/{seed}/{f}/{k}/gapped")
    for rid in sorted(byz):
        if byz[rid] == "request-flood" and gapped.random() < 0.5:
            byz[rid] = "gapped-flood"
    return SimConfig(
        f=f,
        k=k,
        seed=seed,
        duration=duration,
        net="wan" if rng.random() < 0.2 else "lan",
        loss=0.0 if rng.random() < 0.5 else round(rng.uniform(0.0, 0.05), 3),
        duplicate=0.0 if rng.random() < 0.7 else 0.05,
        clients=2,
        inflight=2,
        byz=byz,
        crash=crash,
        restart=restart,
        partitions=partitions,
        twins=twins,
        clean_stop=clean_stop,
    )
