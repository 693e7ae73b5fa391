"""A restarted originator's old incarnation and the proof ARU (docs/protocol.md 2.3.4,
docs/hardening.md I12-7).

When a replica learns of originator 6's new incarnation its ``cum_aru[6]`` restarts
there, and ``(2, j)`` sorts above every ``(1, j')``. With plain Q2, a faulty row
claiming ``(1, 9)`` for 6's old incarnation becomes the proof ARU as soon as 2f+k
rows are in incarnation 2: requests ``(6, 1, 2..9)``, which 6's previous life never
sent (or which were never certified), become eligible, no correct replica can
execute the ordinal, and the updates 6's clients gave it after its restart are
never delivered. Shown at one replica against ``Params.legacy`` "OLDTAIL".
"""

from __future__ import annotations

import pytest

from prime import msgs
from prime.core.preorder import request_digest
from prime.wire import Envelope
from tests.harness import Harness

RESTARTED = 6
FAULTY = 3


def certify(h: Harness, req: Envelope, inc: int) -> None:
    """Hand ``req`` to the replica with PO-Acks of four others (2f+k+1 = 4 at N=6)."""
    h.feed(req)
    for acker in (1, 3, 4, 5):
        h.feed(h.ack(acker, RESTARTED, req.msg.po[1], request_digest(req), inc=inc))


def order(h: Harness, seq: int, column: dict[int, tuple[int, int] | None]) -> None:
    """Order ordinal ``seq`` (leader 1's pre-prepare, Commits of 1, 3, 4, 5) whose matrix
    row ``i`` has ``column[i]`` as originator 6's entry (None: a null row); 6's own row
    is its previous life's (incarnation 1)."""
    rows: list[Envelope | None] = [None] * h.n
    for i, entry in column.items():
        if entry is not None:
            rows[i - 1] = h.po_aru(i, h.vector(s6=entry), num=seq)
    pp = h.pre_prepare(seq, rows)
    h.feed(pp)
    for c in h.votes(msgs.Commit, pp, [1, 3, 4, 5]):
        h.feed(c)


@pytest.mark.parametrize("old", [False, True], ids=["fixed", "legacy"])
def test_faulty_row_cannot_make_a_restarted_originators_old_tail_eligible(old: bool) -> None:
    h = Harness(f=1, k=1, me=2, legacy=frozenset({"OLDTAIL"}) if old else frozenset())
    client = h.n + 1
    # 6's previous life: request (1, 1), certified and ordered at ordinal 1.
    certify(h, h.po_request(RESTARTED, 1, [h.update(client, 1, b"before")]), inc=1)
    order(h, 1, {1: (1, 1), 3: (1, 1), 4: (1, 1), 5: (1, 1)})
    assert h.delivered_payloads() == [[b"before"]]
    # 6 restarts (incarnation 2): its NEW_INCARNATION marker, then an update its client
    # gave it right after the restart, both certified.
    marker = msgs.Update(RESTARTED, 2, 1, int(msgs.UpdateKind.NEW_INCARNATION), b"")
    certify(h, h.po_request(RESTARTED, 1, [h.sign(RESTARTED, marker)], inc=2), inc=2)
    after = h.update(client, 1, b"after restart", inc=2)
    certify(h, h.po_request(RESTARTED, 2, [after], inc=2), inc=2)
    # Ordinal 2: rows 1, 4 and 5 have moved to incarnation 2; faulty row 3 claims (1, 9);
    # 6's row is still its previous life's; ours is null.
    order(h, 2, {1: (2, 2), 3: (1, 9), 4: (2, 2), 5: (2, 2), RESTARTED: (1, 1)})
    pop = h.replica.ord.pop_of(2)
    # Plain: (1, 9), the faulty claim. Fixed: (2, 0), the old tail abandoned.
    assert pop is not None and pop[RESTARTED - 1] == ((1, 9) if old else (2, 0))
    order(h, 3, {1: (2, 2), 3: (2, 2), 4: (2, 2), 5: (2, 2), RESTARTED: (1, 1)})
    h.advance(3_000_000)  # fetch asks peers every 100 ms: nobody has (6, 1, 2..9)
    delivered = [p for payloads in h.delivered_payloads() for p in payloads]
    if old:
        assert h.replica.ord.aru == 1, "blocked on ordinal 2 for good"
        assert (RESTARTED, (1, 9)) in h.replica.ord.blocked_on
        assert b"after restart" not in delivered
        return
    assert h.replica.ord.aru == 3 and not h.replica.ord.blocked_on
    assert delivered == [b"before", b"after restart"]
