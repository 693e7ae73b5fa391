"""Suspect-leader: the order statistics on hand-made inputs, TAT challenges, suspicion,
NEW_LEADER votes and view pre-installation."""

from __future__ import annotations

from prime import msgs, wire
from prime.core.suspect import MAX_TAT_US, alpha, covered, kth_highest, tat_acceptable, tat_leader
from tests.harness import Harness


def test_kth_highest() -> None:
    """1-based rank from the top."""
    assert kth_highest([5, 1, 9, 3], 1) == 9
    assert kth_highest([5, 1, 9, 3], 2) == 5
    assert kth_highest([5, 1, 9, 3], 4) == 1


def test_q9_tat_leader_is_f_plus_k_plus_1_th_highest() -> None:
    """Q9 as decided: f Byzantine (or f+k faulty) reports cannot raise TAT_leader alone."""
    # N=4, f=1, k=0: one liar reporting 10 s changes nothing; two high reports do.
    assert tat_leader([10_000_000, 20_000, 21_000, 19_000], 1, 0) == 21_000
    assert tat_leader([10_000_000, 90_000, 21_000, 19_000], 1, 0) == 90_000
    # N=6, f=1, k=1: the 3rd highest.
    assert tat_leader([50, 40, 30, 20, 10, 0], 1, 1) == 30


def test_q10_alpha_is_f_plus_k_plus_1_th_highest_rtt() -> None:
    """Q10: the RTT within which f+k+1... replicas answer, self counted as 0."""
    assert alpha([0, 500, 700, MAX_TAT_US], 1, 0) == 700
    assert alpha([0, 500, MAX_TAT_US, MAX_TAT_US], 1, 0) == MAX_TAT_US  # not measured yet
    assert alpha([0, 1, 2, 3, 4, 5], 1, 1) == 3


def test_q11_tat_acceptable_floor() -> None:
    """Q11: the (f+k+1)-th highest alpha, never below MIN_RTT."""
    assert tat_acceptable([700, 800, 600, 900], 1, 0, 8_000) == 8_000
    assert tat_acceptable([70_000, 80_000, 60_000, 90_000], 1, 0, 8_000) == 80_000


def test_challenge_coverage() -> None:
    """A challenge is answered only by a PP at least as high in every row."""
    row = ((1, 2), (1, 3))
    assert covered((row, None), (row, None))
    assert covered((((1, 5), (1, 3)), row), (row, None))
    assert not covered((((1, 1), (1, 3)), None), (row, None))
    assert not covered((None, None), (row, None))


def _report_alphas(h: Harness, value_us: int) -> None:
    for j in (1, 2, 3):
        h.feed(h.sign(j, msgs.TatUb(1, value_us)))


def test_tat_challenge_sampled_when_pp_covers_it() -> None:
    """A non-leader's proof matrix starts a TAT challenge; the covering PP ends it as a sample."""
    h = Harness(me=3)
    vec = h.vector(s2=(1, 1))
    rows = [h.po_aru(i, vec) for i in (1, 2, 4)]
    for row in rows:
        h.feed(row)
    h.advance(10_000)
    assert h.sent_messages(msgs.ProofMatrix), "the matrix had news for the leader"
    assert len(h.replica.suspect.challenges) == 1
    h.advance(7_000)
    pp = h.pre_prepare(1, [rows[0], rows[1], None, rows[2]])
    h.feed(pp)
    assert not h.replica.suspect.challenges
    assert 7_000 <= h.replica.suspect.max_tat_us <= 20_000


def test_slow_leader_suspected_and_view_preinstalled() -> None:
    """TAT_leader above K_lat*TAT_acceptable + PP period: NEW_LEADER; 2f+k+1 votes pre-install view 2."""
    h = Harness(me=3)
    _report_alphas(h, 1_000)  # TAT_acceptable = max(8 ms, 1 ms) = 8 ms; bound 2.5*8+20 = 40 ms
    for j in (1, 2):
        h.feed(h.sign(j, msgs.TatMeasure(1, 39_000)))
    assert not h.replica.suspect.leader_suspected
    h.feed(h.sign(4, msgs.TatMeasure(1, 45_000)))
    h.feed(h.sign(2, msgs.TatMeasure(1, 45_000)))
    assert h.replica.suspect.leader_suspected
    votes = h.sent_messages(msgs.NewLeader)
    assert votes == [msgs.NewLeader(2)]
    for j in (2, 4):
        h.feed(h.sign(j, msgs.NewLeader(2)))
    assert h.replica.view == 2 and not h.replica.view_change_done
    h.flush()
    (proof,) = h.sent_messages(msgs.NewLeaderProof)
    assert proof.new_view == 2 and sorted(v.sender for v in proof.votes) == [2, 3, 4]


def test_new_leader_proof_moves_a_replica_that_did_not_suspect() -> None:
    """A valid proof of 2f+k+1 votes pre-installs the view; a proof with a repeated signer does not."""
    h = Harness(me=3)
    votes = tuple(h.sign(j, msgs.NewLeader(2)) for j in (1, 2, 4))
    dup = msgs.NewLeaderProof(2, (votes[0], votes[0], votes[1]))
    bad = h.sign(4, dup)
    assert wire.decode(bad.raw) == "new_leader_proof:duplicate_signer"
    h.feed(bad)
    assert h.replica.view == 1 and h.replica.stats.dropped["new_leader_proof:votes"] == 1
    h.feed(h.sign(4, msgs.NewLeaderProof(2, votes)))
    assert h.replica.view == 2


def test_no_suspicion_before_tat_acceptable_is_known() -> None:
    """Until enough TAT_UB reports arrive, TAT_acceptable is infinite and nobody is suspected."""
    h = Harness(me=3)
    for j in (1, 2, 4):
        h.feed(h.sign(j, msgs.TatMeasure(1, 5_000_000)))
    assert not h.replica.suspect.leader_suspected


def test_a_ping_flood_draws_one_pong_per_half_ping_period() -> None:
    """RTT_PING is timely (no inbound lane), and each one answered costs us a signed
    RTT_PONG: a faulty replica flooding pings at its whole read budget made us sign and
    send a pong for each (review: 200 pings in 10 ms drew 200 pongs). A correct peer
    pings once per ``ping_period_us``, so answering a sender at most once per half
    period answers every correct ping and bounds the flood's pongs."""
    h = Harness(me=3)
    period = h.p.ping_period_us
    for i in range(200):
        h.feed(h.sign(4, msgs.RttPing(1, 1000 + i)))
    h.flush()
    pongs = [m for m in h.sent_messages(msgs.RttPong) if m.dest == 4]
    assert len(pongs) == 1, len(pongs)
    # a correct pinger, one ping per period: every ping answered
    for i in range(4):
        h.advance(period)
        h.feed(h.sign(2, msgs.RttPing(1, i + 1)))
    h.flush()
    assert len([m for m in h.sent_messages(msgs.RttPong) if m.dest == 2]) == 4


def test_repeated_pongs_for_one_ping_draw_one_measure() -> None:
    """Each RTT_PONG for one of our pings makes us sign an RTT_MEASURE: a faulty replica
    repeating its pong for the same ping made us sign one per copy (review: 100 copies
    drew 100 measures). One measure per peer and ping."""
    h = Harness(me=3)
    h.advance(h.p.ping_period_us)  # our ping goes out
    pings = h.sent_messages(msgs.RttPing)
    assert pings
    seq = pings[-1].ping_seq
    h.advance(1_000)
    for _ in range(100):
        h.feed(h.sign(4, msgs.RttPong(3, 1, seq)))
    h.feed(h.sign(2, msgs.RttPong(3, 1, seq)))  # another peer's pong for it still counts
    h.flush()
    measures = h.sent_messages(msgs.RttMeasure)
    assert len([m for m in measures if m.dest == 4]) == 1, len(measures)
    assert len([m for m in measures if m.dest == 2]) == 1
