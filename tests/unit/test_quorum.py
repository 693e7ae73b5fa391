"""Quorum sizes, proof_aru (Q2), leader rotation and the recon designated senders (Q20)."""

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


def test_matrix_pop_null_rows_count_as_zero() -> None:
    """Null rows are all-zero rows, so two null rows of four hold eligibility at zero."""
    rows = [((1, 5), (1, 2)), None, None, ((1, 7), (1, 9))]
    assert matrix_pop(rows, 2, 2) == ((0, 0), (0, 0))
    rows = [((1, 5), (1, 2)), ((1, 4), (1, 4)), None, ((1, 7), (1, 9))]
    assert matrix_pop(rows, 2, 2) == ((1, 4), (1, 2))


def test_matrix_pop_orders_incarnation_first() -> None:
    """A newer incarnation outranks any sequence number of an older one."""
    rows = [((2, 1),), ((1, 50),), ((2, 3),), ((1, 60),)]
    assert matrix_pop(rows, 1, 2) == ((1, 60),)
    assert matrix_pop(rows, 1, 3) == ((2, 1),)


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
