"""Quorum sizes, proof_aru (Q2), leader rotation and the recon designated senders (Q20)."""

import random

import pytest

from prime.core.quorum import Quorums, compare_vectors, leader_of, matrix_pop, proof_aru
from prime.core.recon import designated_senders


@pytest.mark.parametrize(
    ("f", "k", "cert", "prep", "rank"), [(1, 0, 3, 2, 2), (1, 1, 4, 3, 3), (2, 1, 6, 5, 4)]
)
def test_quorum_sizes_match_protocol_table(f: int, k: int, cert: int, prep: int, rank: int) -> None:
    """The thresholds equal docs/protocol.md section 1.2 for N=4, N=6 and N=9."""
    q = Quorums(f, k)
    assert (q.n, q.certificate, q.prepare, q.eligibility_rank) == (3 * f + 2 * k + 1, cert, prep, rank)
    # Two certificate quorums intersect in at least f+1 replicas (one correct).
    assert 2 * q.certificate - q.n >= f + 1


def test_leader_rotation() -> None:
    """leader(v) = v mod N with 0 mapped to N."""
    assert [leader_of(v, 4) for v in range(1, 10)] == [1, 2, 3, 4, 1, 2, 3, 4, 1]


def test_proof_aru_takes_rank_f_plus_k_plus_1() -> None:
    """With N=4 (rank 2), the second smallest entry is eligible: 3 rows vouch for it."""
    column = [(1, 9), (1, 3), (1, 5), (1, 0)]
    assert proof_aru(column, 2) == (1, 3)
    assert proof_aru(column, 1) == (1, 0)


N4 = Quorums(1, 0)  # rank 2 of 4
N6 = Quorums(1, 1)  # rank 3 of 6


def test_matrix_pop_null_rows_count_as_zero() -> None:
    """Null rows are all-zero rows, so two null rows of four hold eligibility at zero."""
    rows = [((1, 5), (1, 2)), None, None, ((1, 7), (1, 9))]
    assert matrix_pop(rows, 2, N4) == ((0, 0), (0, 0))
    rows = [((1, 5), (1, 2)), ((1, 4), (1, 4)), None, ((1, 7), (1, 9))]
    assert matrix_pop(rows, 2, N4) == ((1, 4), (1, 2))


def test_matrix_pop_orders_incarnation_first() -> None:
    """A newer incarnation outranks any sequence number of an older one: with 3 rows of
    4 in incarnation 2 the proof ARU is in incarnation 2."""
    rows = [((2, 1),), ((1, 50),), ((2, 3),), ((2, 2),)]
    assert matrix_pop(rows, 1, N4) == ((2, 1),)


@pytest.mark.parametrize("plain", [False, True], ids=["fixed", "legacy"])
def test_matrix_pop_new_incarnation_rows_do_not_vouch_for_the_old_tail(plain: bool) -> None:
    """Originator 1 restarted: rows 1 and 3 are in its incarnation 2 (their cum_aru
    restarted there, docs/protocol.md 2.2.1 step 4), row 4 claims (1, 60) in the old
    one, row 2 is at (1, 50). Plain Q2 takes (1, 60): the rows of incarnation 2 vouch
    for it though none certified anything of incarnation 1 past what it had, so one
    faulty row makes (1, 51..60) eligible, which may never have been sent. With f+1
    rows in incarnation 2, the old tail is abandoned instead: (2, 0)."""
    rows = [((2, 1),), ((1, 50),), ((2, 3),), ((1, 60),)]
    assert matrix_pop(rows, 1, N4, plain=plain) == (((1, 60),) if plain else ((2, 0),))
    # N=6, the column of ordinal 12 in the simulator run that lost updates (restarted
    # replica 6, replica 3 faulty): rows 1, 2, 5 moved to incarnation 2.
    column = [(2, 3), (2, 1), (1, 26), (1, 15), (2, 1), (1, 15)]
    want = (1, 26) if plain else (2, 0)
    assert matrix_pop([(v,) for v in column], 1, N6, plain=plain) == (want,)
    # One row in the new incarnation (possibly a faulty one) abandons nothing.
    column = [(3, 9), (1, 20), (1, 20), (1, 20), (1, 20), (1, 18)]
    assert matrix_pop([(v,) for v in column], 1, N6) == ((1, 20),)


def test_matrix_pop_is_monotone_and_never_vouches_past_what_one_incarnation_certified() -> None:
    """Random columns growing step by step (entries move up within their incarnation or
    to a newer one, as rows do; (0, 0) is the only entry of incarnation 0): the proof
    ARU never goes down (S5), and a proof ARU (i, j) with j >= 1 always has f+k+1
    entries in incarnation i at or above it. (Plain Q2 breaks the second on 4,524 of
    these 10,800 steps.)"""

    for q in (N4, N6, Quorums(2, 1)):
        rng = random.Random(f"pop/{q.f}/{q.k}")
        for _ in range(300):
            column = [(rng.randint(0, 1), rng.randint(0, 5)) for _ in range(q.n)]
            column = [(0, 0) if inc == 0 else (inc, seq) for inc, seq in column]
            before = matrix_pop([(v,) for v in column], 1, q)[0]
            for _ in range(12):
                r = rng.randrange(q.n)
                inc, seq = column[r]
                if inc and rng.random() < 0.6:
                    column[r] = (inc, seq + rng.randint(1, 4))
                else:  # (0, 0), "nothing yet", only ever leaves incarnation 0
                    column[r] = (inc + rng.randint(1, 2), rng.randint(0, 3))
                pop = matrix_pop([(v,) for v in column], 1, q)[0]
                assert pop >= before, (column, before, pop)
                if pop[1] >= 1:
                    same = sum(1 for v in column if v[0] == pop[0] and v >= pop)
                    assert same >= q.f + q.k + 1, (column, pop)
                before = pop


def test_compare_vectors() -> None:
    """Entry-wise comparison reports lower and higher independently."""
    assert compare_vectors([(1, 2), (1, 3)], [(1, 2), (1, 3)]) == (False, False)
    assert compare_vectors([(1, 3), (1, 3)], [(1, 2), (1, 3)]) == (False, True)
    assert compare_vectors([(1, 1), (1, 4)], [(1, 2), (1, 3)]) == (True, True)


def test_designated_senders_are_lowest_ids_holding_it() -> None:
    """Q20: the first 2f+k+1 replicas (ascending id) whose row reaches the target."""
    column = [(1, 2), (1, 5), (1, 5), (1, 9), (1, 5), (1, 6)]
    assert designated_senders(column, (1, 5), 4) == [2, 3, 4, 5]
    assert designated_senders(column, (1, 9), 4) == [4]
