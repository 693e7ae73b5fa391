"""Hand-written scenarios, one per protocol rule, driving a single replica directly.

Each hardening test runs the same scenario twice: with the rule switched to the
literal C behaviour (``Params.legacy``) it must fail, and with our rule it must
pass. That proves both that the hole is real and that we closed it.
"""

from __future__ import annotations

import pytest

from prime import msgs, wire
from prime.core.order import pre_prepare_digest
from prime.core.preorder import request_digest
from tests.harness import Harness


def zero_pp(h: Harness, seq: int = 1, leader: int = 1):
    """A pre-prepare whose matrix makes nothing eligible (a no-op ordinal)."""
    return h.pre_prepare(seq, [None] * h.n, leader=leader)


# ----------------------------------------------------------------- H1 / H2


@pytest.mark.parametrize("legacy", [False, True])
def test_h1_commit_sent_when_pp_completes_after_prepares(legacy: bool) -> None:
    """H1: Prepares before the PP still lead to our Commit (C sends none on that path)."""
    h = Harness(me=4, legacy=frozenset({"H1"}) if legacy else frozenset())
    pp = zero_pp(h)
    for prep in h.votes(msgs.Prepare, pp, [2, 3]):
        h.feed(prep)
    assert not h.sent_messages(msgs.Commit)
    h.feed(pp)
    h.flush()
    commits = h.sent_messages(msgs.Commit)
    if legacy:
        assert commits == [], "the literal C behaviour sends no Commit here"
    else:
        assert [c.seq for c in commits] == [1]
        assert commits[0].digest == pre_prepare_digest(pp.msg)


@pytest.mark.parametrize("legacy", [False, True])
def test_h2_commits_before_pp_are_rechecked(legacy: bool) -> None:
    """H2: 2f+k+1 Commits that all precede the PP order the ordinal once the PP arrives."""
    h = Harness(me=4, legacy=frozenset({"H2"}) if legacy else frozenset())
    pp = zero_pp(h)
    for c in h.votes(msgs.Commit, pp, [1, 2, 3]):
        h.feed(c)
    h.feed(pp)
    h.flush()
    # Retransmitted duplicates change nothing in either mode.
    for c in h.votes(msgs.Commit, pp, [1, 2, 3]):
        h.feed(c)
    if legacy:
        assert h.delivered == [], "C leaves the ordinal unordered"
    else:
        assert [d.ordinal for d in h.delivered] == [1]
        assert h.delivered[0].updates == ()  # a no-op ordinal


# --------------------------------------------------------------------- H3


def _equivocation_setup(legacy: bool) -> tuple[Harness, object, object]:
    h = Harness(me=4, legacy=frozenset({"H3"}) if legacy else frozenset())
    client = h.n + 1
    version_a = h.po_request(2, 1, [h.update(client, 1, b"A")])
    version_b = h.po_request(2, 1, [h.update(client, 1, b"B")])
    h.feed(version_a)  # the originator shows us A...
    for acker in (1, 2, 3):  # ...and everyone else B, which gets the certificate
        h.feed(h.ack(acker, 2, 1, request_digest(version_b)))
    vec = h.vector(s2=(1, 1))
    rows = [h.po_aru(i, vec) for i in (1, 2, 3)] + [None]
    pp = h.pre_prepare(1, rows)
    h.feed(pp)
    for c in h.votes(msgs.Commit, pp, [1, 2, 3]):
        h.feed(c)
    h.flush()
    return h, version_a, version_b


def test_h3_uncertified_copy_is_never_executed() -> None:
    """H3: holding only the uncertified version, we wait; the certified one executes."""
    h, _, version_b = _equivocation_setup(legacy=False)
    assert h.delivered == []
    h.feed(version_b, via=3)  # arrives by retransmission or reconciliation
    assert h.delivered_payloads() == [[b"B"]]


def test_h3_literal_c_executes_the_wrong_version() -> None:
    """Without H3 the replica executes version A while the certificate is for B."""
    h, _, _ = _equivocation_setup(legacy=True)
    assert h.delivered_payloads() == [[b"A"]]


# --------------------------------------------------------------------- H4


def _duplicated_row_pp(h: Harness):
    """A faulty leader copies replica 3's row into positions 2 and 4."""
    vec = h.vector(s3=(1, 1))
    row3 = h.po_aru(3, vec)
    row1 = h.po_aru(1, vec)
    return h.pre_prepare(1, [row1, row3, row3, row3])


def test_h4_duplicated_rows_rejected_by_codec_and_core() -> None:
    """H4: rows are positional; a row signed by another replica is refused twice over."""
    h = Harness(me=4)
    pp = _duplicated_row_pp(h)
    assert wire.decode(pp.raw) == "pre_prepare:row_signer"
    h.feed(pp)  # bypassing the codec, the core still refuses it
    assert h.replica.stats.dropped["pre_prepare:rows"] == 1
    assert h.replica.ord.history.get(1) is None or h.replica.ord.history[1].pp is None


def test_h4_literal_c_inflates_eligibility() -> None:
    """Without H4 one correct replica's row counts three times and makes its request eligible."""
    h = Harness(me=4, legacy=frozenset({"H4"}))
    h.feed(_duplicated_row_pp(h))
    slot = h.replica.ord.history[1]
    assert slot.pop[2] == (1, 1), "eligible with only replicas 1 (faulty) and 3 vouching"


# --------------------------------------------------------------------- H6


def _forged_ord_cert(h: Harness) -> wire.Envelope:
    """Replica 3 alone fabricates a certificate: its own PP and copies of its own Commit."""
    vec = h.vector(s3=(1, 500))
    pp = h.sign(3, msgs.PrePrepare(40, 1, 0, (None, None, h.po_aru(3, vec), None)))
    commit = h.sign(3, msgs.Commit(40, 1, pre_prepare_digest(pp.msg)))
    cert = msgs.OrdCert(1, 40, 1, 1, pp, (commit, commit, commit))
    return h.sign(3, cert)


def test_h6_forged_ord_cert_rejected() -> None:
    """H6: a certificate needs the leader's PP and distinct signers; a forgery is dropped."""
    h = Harness(me=4)
    forged = _forged_ord_cert(h)
    assert wire.decode(forged.raw) == "ord_cert:duplicate_signer"
    h.feed(forged)
    h.advance(4_000_000)
    assert h.replica.stats.dropped["ord_cert:invalid"] == 1
    assert h.replica.stats.jumps == 0 and h.transfers == []


def test_h6_literal_c_jumps_to_a_forgery() -> None:
    """Without H6 one Byzantine replica makes a lagging correct replica jump to ordinal 40."""
    h = Harness(me=4, legacy=frozenset({"H6"}))
    h.feed(_forged_ord_cert(h))
    h.advance(4_000_000)  # asks twice in vain first (ordinal 1 is not decided here)
    assert h.replica.stats.jumps == 1 and h.transfers == [40]


def test_valid_ord_cert_for_next_ordinal_fills_without_jump() -> None:
    """A genuine certificate for ARU+1 is installed as a commit certificate: no gap, no state transfer."""
    h = Harness(me=4)
    pp = zero_pp(h)
    commits = tuple(h.votes(msgs.Commit, pp, [1, 2, 3]))
    h.feed(h.sign(2, msgs.OrdCert(1, 1, 1, 1, pp, commits)))
    h.advance(100_000)
    assert [d.ordinal for d in h.delivered] == [1]
    assert h.transfers == [] and h.replica.stats.jumps == 0


def test_valid_ord_cert_far_ahead_jumps_and_requests_state_transfer() -> None:
    """A genuine certificate beyond the catch-up history makes the replica jump and notify its application."""
    h = Harness(me=4, catchup_history_ordinals=4)
    pp = h.pre_prepare(9, [None] * h.n)
    commits = tuple(h.votes(msgs.Commit, pp, [1, 2, 3]))
    h.feed(h.sign(2, msgs.OrdCert(1, 9, 1, 1, pp, commits)))
    h.advance(100_000)
    assert h.transfers == [9] and h.replica.ord.aru == 9


def test_h13_small_gap_waits_before_jumping() -> None:
    """H13: a peer two ordinals ahead does not trigger a jump at the first attempt."""
    h = Harness(me=4, catchup_history_ordinals=0)
    pp = h.pre_prepare(2, [None] * h.n)
    commits = tuple(h.votes(msgs.Commit, pp, [1, 2, 3]))
    h.feed(h.sign(2, msgs.OrdCert(1, 2, 1, 1, pp, commits)))
    h.advance(100_000)
    assert h.transfers == []
    h.advance(1_100_000)  # still stuck a whole catch-up period later: now jump
    assert h.transfers == [2]


def _decided(h: Harness, seq: int):
    pp = h.pre_prepare(seq, [None] * h.n)
    return h.sign(2, msgs.OrdCert(1, seq, 1, 1, pp, tuple(h.votes(msgs.Commit, pp, [1, 2, 3]))))


def test_small_gap_asks_for_certificates_and_fills_without_state_transfer() -> None:
    """Behind by a few ordinals, a replica asks the peer and executes each missed ordinal."""
    h = Harness(me=4)
    h.feed(_decided(h, 3))  # peer 2 is at ordinal 3; we are at 0
    h.advance(100_000)
    requests = [(dest, env.msg) for dest, env in h.sent if isinstance(env.msg, msgs.CatchupRequest)]
    assert requests == [(2, msgs.CatchupRequest(0))]
    for seq in (2, 1):  # answers may arrive in any order
        h.feed(_decided(h, seq))
    assert [d.ordinal for d in h.delivered] == [1, 2, 3]
    assert h.transfers == [] and h.replica.stats.jumps == 0


def test_catchup_request_answered_with_kept_certificates() -> None:
    """A replica answers a CATCHUP_REQUEST with its certificates above the asker's ARU."""
    h = Harness(me=2)
    for seq in (1, 2, 3):
        pp = h.pre_prepare(seq, [None] * h.n)
        h.feed(pp)
        for c in h.votes(msgs.Commit, pp, [1, 3, 4]):
            h.feed(c)
    assert [d.ordinal for d in h.delivered] == [1, 2, 3]
    h.feed(h.sign(4, msgs.CatchupRequest(1)))
    h.flush()
    answers = [env.msg for dest, env in h.sent if dest == 4 and isinstance(env.msg, msgs.OrdCert)]
    assert [a.seq for a in answers] == [2, 3] and all(a.flag == 2 for a in answers)
    h.feed(h.sign(4, msgs.CatchupRequest(1)))  # an immediate repeat is rate-limited
    assert h.replica.stats.dropped["catchup_request:rate"] == 1


# ------------------------------------------------------- ordering rules


def test_pp_from_non_leader_or_wrong_view_dropped() -> None:
    """Only leader(view) may pre-prepare, and only in the current view."""
    h = Harness(me=4)
    h.feed(zero_pp(h, leader=2))
    h.feed(h.pre_prepare(1, [None] * h.n, view=2, leader=2))
    assert h.replica.stats.dropped["pre_prepare:view_or_leader"] == 2
    assert h.sent_messages(msgs.Prepare) == []


def test_prepare_from_leader_does_not_count() -> None:
    """The leader's PP is its vote; a Prepare signed by the leader is ignored (Q3)."""
    h = Harness(me=4)
    pp = zero_pp(h)
    h.feed(pp)
    for prep in h.votes(msgs.Prepare, pp, [1, 2]):
        h.feed(prep)
    slot = h.replica.ord.history[1]
    assert sorted(slot.prepares) == [2] and not slot.prepare_cert
    assert h.replica.stats.dropped["prepare:view_or_leader"] == 1


def test_backward_progress_pp_gets_no_prepare() -> None:
    """S5: a PP whose proof-ARU goes backwards is not prepared."""
    h = Harness(me=4)
    high = h.vector(s2=(1, 1))
    pp1 = h.pre_prepare(1, [h.po_aru(i, high) for i in (1, 2, 3)] + [None])
    pp2 = h.pre_prepare(2, [None] * h.n)
    h.feed(pp1)
    h.feed(pp2)
    h.flush()
    assert [p.seq for p in h.sent_messages(msgs.Prepare)] == [1]
    assert h.replica.stats.backward_progress_rejected == 1


def test_flood_each_new_pp_once() -> None:
    """A non-leader re-broadcasts each new pre-prepare exactly once, unchanged."""
    h = Harness(me=4)
    pp = zero_pp(h)
    h.feed(pp)
    h.feed(pp, via=2)
    flooded = [env for dest, env in h.sent if dest == 0 and env.raw == pp.raw]
    assert len(flooded) == 1


def test_execution_order_and_every_event_delivered() -> None:
    """Events execute by originator, then PO seq, then position; a client update re-introduced by
    another replica is delivered again (the application's client table suppresses it)."""
    h = Harness(me=4)
    c = h.n + 1
    u1, u2 = h.update(c, 1, b"one"), h.update(c, 2, b"two")
    r2 = h.po_request(2, 1, [u2])
    r3 = h.po_request(3, 1, [u1, u2])  # replica 3 replays u2 as well
    for req in (r2, r3):
        h.feed(req)
        for acker in (1, 2, 3):
            h.feed(h.ack(acker, req.sender, 1, request_digest(req)))
    vec = h.vector(s2=(1, 1), s3=(1, 1))
    pp = h.pre_prepare(1, [h.po_aru(i, vec) for i in (1, 2, 3)] + [None])
    h.feed(pp)
    for commit in h.votes(msgs.Commit, pp, [1, 2, 3]):
        h.feed(commit)
    assert h.delivered_payloads() == [[b"two", b"one", b"two"]]
    assert h.delivered[0].requests == ((2, 1, 1), (3, 1, 1))


def test_garbage_collection_frees_executed_slots() -> None:
    """Executed ordinals and their PO slots are collected, keeping GC_LAG ordinals."""
    h = Harness(me=4)
    c = h.n + 1
    for seq in range(1, 6):
        req = h.po_request(2, seq, [h.update(c, seq)])
        h.feed(req)
        for acker in (1, 2, 3):
            h.feed(h.ack(acker, 2, seq, request_digest(req)))
        vec = h.vector(s2=(1, seq))
        pp = h.pre_prepare(seq, [h.po_aru(i, vec, num=seq) for i in (1, 2, 3)] + [None])
        h.feed(pp)
        for commit in h.votes(msgs.Commit, pp, [1, 2, 3]):
            h.feed(commit)
    assert [d.ordinal for d in h.delivered] == [1, 2, 3, 4, 5]
    assert sorted(h.replica.ord.history) == [5]
    assert all((1, s) not in h.replica.po.history[2] for s in range(1, 5))
    assert h.replica.po.white_line[2] == (1, 4)


# ---------------------------------------------------------- pre-ordering


def test_client_update_duplicates_and_bad_signer_dropped() -> None:
    """Intake drops a repeated client stamp and an update signed by someone else."""
    h = Harness(me=4)
    c = h.n + 1
    u = h.update(c, 1)
    h.client_update(u)
    h.client_update(u)
    forged = h.sign(c + 1, msgs.Update(c, 1, 2, 0, b"x"))  # claims client c, signed by c+1
    h.client_update(forged)
    assert h.replica.stats.dropped["update:duplicate"] == 1
    assert h.replica.stats.dropped["update:signer"] == 1


def test_flow_control_caps_requests_in_flight() -> None:
    """L8: at most max_po_in_flight own PO-Requests are un-executed."""
    h = Harness(me=4, max_po_in_flight=2, po_request_bytes_max=200)
    c = h.n + 1
    for seq in range(1, 11):
        h.client_update(h.update(c, seq, b"p" * 64))
    h.flush()
    requests = h.sent_messages(msgs.PoRequest)
    assert len(requests) == 2, "one NEW_INCARNATION request plus one client request"
    assert h.replica.po.in_flight() == 2
    assert len(h.replica.po.update_queue) > 0


def test_incarnation_hold_acks_only_first_requests() -> None:
    """Until our own NEW_INCARNATION executes, we acknowledge only other replicas' seq-1 requests."""
    h = Harness(me=4)
    c = h.n + 1
    h.feed(h.po_request(2, 1, [h.update(c, 1)]))
    h.feed(h.po_request(2, 2, [h.update(c, 2)]))
    h.advance(20_000)
    acked = {(p.originator, p.po) for a in h.sent_messages(msgs.PoAck) for p in a.parts}
    assert (2, (1, 1)) in acked and (2, (1, 2)) not in acked


def test_po_aru_rule_ignores_inconsistent_and_older() -> None:
    """A summary that is lower in one entry and higher in another is ignored (2.2.3)."""
    h = Harness(me=4)
    h.feed(h.po_aru(2, h.vector(s1=(1, 2), s2=(1, 2)), num=1))
    h.feed(h.po_aru(2, h.vector(s1=(1, 1), s2=(1, 5)), num=2))
    assert h.replica.po.cum_acks[2].msg.num == 1
    assert h.replica.stats.dropped["po_aru:inconsistent"] == 1
    h.feed(h.po_aru(2, h.vector(s1=(1, 3), s2=(1, 3)), num=3))
    assert h.replica.po.cum_acks[2].msg.num == 3


@pytest.mark.parametrize("erasure", [False, True], ids=["whole", "erasure"])
def test_reconciliation_ships_to_replicas_lacking_the_request(erasure: bool) -> None:
    """A designated sender ships an eligible request (or its own part of it) to a replica with
    no evidence of holding it."""
    h = Harness(me=2, use_erasure_codes=erasure)
    c = h.n + 1
    req = h.po_request(3, 1, [h.update(c, 1)])
    h.feed(req)
    for acker in (1, 2, 3):
        h.feed(h.ack(acker, 3, 1, request_digest(req)))
    vec = h.vector(s3=(1, 1))
    pp = h.pre_prepare(1, [h.po_aru(i, vec) for i in (1, 2, 3)] + [None])
    h.feed(pp)
    h.flush()
    # With it goes our ack: acks lost on the way are never re-sent once the request executed,
    # and the receiver needs 2f+k+1 of them to accept (or rebuild) the certified version.
    acks_to_4 = [env.msg for dest, env in h.sent if dest == 4 and isinstance(env.msg, msgs.PoAck) and env.sender == 2]
    assert [(p.originator, p.po, p.digest) for a in acks_to_4 for p in a.parts] == [(3, (1, 1), request_digest(req))]
    # And the others' signed acks that certify it, forwarded unchanged (issue 11, item 9).
    assert sorted(env.sender for dest, env in h.sent if dest == 4 and isinstance(env.msg, msgs.PoAck) and env.sender != 2) == [1, 3]
    if not erasure:
        forwarded = [dest for dest, env in h.sent if env.raw == req.raw]
        assert forwarded == [4], "replica 4 has not acknowledged it; 1 has, 3 is its originator"
        return
    recon = [(dest, env.msg) for dest, env in h.sent if isinstance(env.msg, msgs.Recon)]
    assert [dest for dest, _ in recon] == [4]
    (part,) = recon[0][1].parts
    assert (part.originator, part.po, part.part_index, part.request_bytes) == (3, (1, 1), 1, len(req.raw))
    assert len(part.data) == -(-len(req.raw) // 2), "one of f+1 = 2 data parts"


def _parts(h: Harness, req, senders: list[int], garbage: int | None = None):
    from prime.crypto import erasure

    parts = erasure.encode(req.raw, data_parts=2, total_parts=h.n)
    out = []
    for s in senders:
        data = bytes(len(parts[s - 1])) if s == garbage else parts[s - 1]
        part = msgs.ReconPart(req.sender, req.msg.po, s - 1, len(req.raw), data)
        out.append(h.sign(s, msgs.Recon((part,))))
    return out


def test_recon_rebuilds_only_the_certified_request_despite_a_garbage_part() -> None:
    """H3/H9: f+1 parts including a garbage one never yield a request; with a third part the
    certified request is rebuilt and executes."""
    h = Harness(me=4)
    c = h.n + 1
    req = h.po_request(3, 1, [h.update(c, 1, b"payload")])
    for acker in (1, 2, 3):
        h.feed(h.ack(acker, 3, 1, request_digest(req)))
    vec = h.vector(s3=(1, 1))
    pp = h.pre_prepare(1, [h.po_aru(i, vec) for i in (1, 2, 3)] + [None])
    h.feed(pp)
    for commit in h.votes(msgs.Commit, pp, [1, 2, 3]):
        h.feed(commit)
    first, second, third = _parts(h, req, [1, 2, 3], garbage=2)
    h.feed(first)
    h.feed(second)
    assert h.delivered == [] and h.replica.stats.recon_bad_rebuilds >= 1
    h.feed(third)
    assert h.replica.stats.recon_rebuilt == 1
    assert h.delivered_payloads() == [[b"payload"]]


def test_recon_part_with_foreign_index_is_dropped() -> None:
    """A sender may contribute only its own part index (so one Byzantine sender counts once)."""
    h = Harness(me=4)
    req = h.po_request(3, 1, [h.update(h.n + 1, 1)])
    (env,) = _parts(h, req, [1])
    forged = h.sign(2, env.msg)  # replica 2 relays replica 1's part as its own message
    h.feed(forged)
    assert h.replica.stats.dropped["recon:part_index"] == 1


# ------------------------------------------------------- view-change rules


@pytest.mark.parametrize("legacy", [False, True])
def test_h12_jumping_leader_never_reproposes_used_ordinals(legacy: bool) -> None:
    """H12: a leader that already assigned ordinals up to 8 and then jumps to a certificate for
    ordinal 5 keeps assigning from 9; the C code restarts at 6 and re-proposes used ordinals."""
    h = Harness(me=1, catchup_history_ordinals=0, legacy=frozenset({"H12"}) if legacy else frozenset())
    h.replica.ord.seq = 9  # PPs 1..8 are out; none executed here yet
    pp = h.pre_prepare(5, [None] * h.n)
    commits = tuple(h.votes(msgs.Commit, pp, [2, 3, 4]))
    h.feed(h.sign(2, msgs.OrdCert(1, 5, 1, 1, pp, commits)))
    h.sent.clear()
    h.advance(1_100_000)
    assert h.replica.stats.jumps == 1 and h.replica.ord.aru == 5
    proposed = sorted({m.seq for m in h.sent_messages(msgs.PrePrepare)})
    assert proposed, "the leader went on proposing"
    if legacy:
        assert proposed[0] == 6, "the C code re-proposed an ordinal it had already used"
    else:
        assert proposed[0] >= 9


@pytest.mark.parametrize("legacy", [False, True])
def test_h5_old_execution_does_not_stop_view_change_retransmission(legacy: bool) -> None:
    """H5: executing an ordinal of the old view during an unfinished view change must not stop
    the NEW_LEADER_PROOF/RB/VIEW retransmissions (the C code stops them)."""
    h = Harness(me=3, legacy=frozenset({"H5"}) if legacy else frozenset())
    votes = tuple(h.sign(j, msgs.NewLeader(2)) for j in (1, 2, 4))
    h.feed(h.sign(4, msgs.NewLeaderProof(2, votes)))
    assert h.replica.view == 2 and not h.replica.view_change_done
    pp = h.pre_prepare(1, [None] * h.n)  # ordinal 1, decided in view 1, arrives as a certificate
    commits = tuple(h.votes(msgs.Commit, pp, [1, 2, 4]))
    h.feed(h.sign(2, msgs.OrdCert(1, 1, 1, 1, pp, commits)))
    h.advance(100_000)
    assert [d.ordinal for d in h.delivered] == [1]
    h.sent.clear()
    h.advance(2_100_000)
    resent = [env.msg for _, env in h.sent if isinstance(env.msg, (msgs.NewLeaderProof, msgs.RbInit))]
    if legacy:
        assert resent == [], "the C code fell silent"
    else:
        assert resent, "we keep retransmitting until an ordinal executes in view 2"


def test_h14_no_ordinal_waits_forever_after_a_jump() -> None:
    """H14: an ordinal blocked on a missing request is abandoned by a jump; the next ordinal
    waits only for its own requests and executes as soon as they arrive; the late request of
    the abandoned ordinal changes nothing."""
    h = Harness(me=4, catchup_history_ordinals=0)
    c = h.n + 1
    reqs = {s: h.po_request(2, s, [h.update(c, s, b"r%d" % s)]) for s in (1, 2, 3)}
    for acker in (1, 2, 3):
        h.feed(h.ack(acker, 2, 1, request_digest(reqs[1])))
    pp1 = h.pre_prepare(1, [h.po_aru(i, h.vector(s2=(1, 1))) for i in (1, 2, 3)] + [None])
    h.feed(pp1)
    for commit in h.votes(msgs.Commit, pp1, [1, 2, 3]):
        h.feed(commit)
    assert h.replica.ord.blocked_on == {(2, (1, 1))} and h.delivered == []
    # Peers went on to ordinal 5 (requests 1 and 2 of replica 2 executed there): jump.
    pp5 = h.pre_prepare(5, [h.po_aru(i, h.vector(s2=(1, 2)), num=5) for i in (1, 2, 3)] + [None])
    h.feed(h.sign(2, msgs.OrdCert(1, 5, 1, 1, pp5, tuple(h.votes(msgs.Commit, pp5, [1, 2, 3])))))
    h.advance(100_000)
    assert h.transfers == [5] and h.replica.ord.blocked_on == set()
    pp6 = h.pre_prepare(6, [h.po_aru(i, h.vector(s2=(1, 3)), num=6) for i in (1, 2, 3)] + [None])
    h.feed(pp6)
    for commit in h.votes(msgs.Commit, pp6, [1, 2, 3]):
        h.feed(commit)
    assert h.replica.ord.blocked_on == {(2, (1, 3))}
    h.feed(reqs[1])  # the abandoned ordinal's request arrives late: ignored
    for acker in (1, 2, 3):
        h.feed(h.ack(acker, 2, 3, request_digest(reqs[3])))
    h.feed(reqs[3])
    assert [d.ordinal for d in h.delivered] == [6]
    assert h.delivered_payloads() == [[b"r3"]]


def test_unordered_pre_prepare_is_reflooded_by_non_leaders() -> None:
    """A replica cut off during the leader's flood must still get the PP if the leader dies:
    every non-leader re-floods the PP of an ordinal not yet ordered with its retransmissions,
    and stops once the ordinal is ordered."""
    h = Harness(me=4)
    pp = h.pre_prepare(1, [None] * h.n)
    h.feed(pp)
    h.sent.clear()
    h.advance(h.p.retrans_period_us + 1)
    assert any(env.raw == pp.raw for _, env in h.sent), "the PP is flooded again"
    for commit in h.votes(msgs.Commit, pp, [1, 2, 3]):
        h.feed(commit)
    assert h.replica.ord.history.get(1) is None or h.replica.ord.history[1].ordered
    h.sent.clear()
    h.advance(h.p.retrans_period_us + 1)
    assert not any(env.raw == pp.raw for _, env in h.sent)


def test_cum_aru_advances_over_certified_requests_when_an_older_one_executes() -> None:
    """Our own request 1 never got its quorum of acks here (one was lost) but was ordered on
    the others' evidence; request 2 was certified meanwhile. Executing request 1 must move
    cum_aru over request 2 too: nothing else would (its acks are all in), our PO_ARU would
    never show it, and with one replica crashed it could never become eligible."""
    h = Harness(me=4)
    c = h.n + 1
    h.client_update(h.update(c, 1, b"one"))
    h.flush()
    h.client_update(h.update(c, 2, b"two"))
    h.flush()
    own = {env.msg.po[1]: env for _, env in h.sent if isinstance(env.msg, msgs.PoRequest)}
    assert sorted(own) == [1, 2, 3]  # 1 announces the incarnation, 2 and 3 carry the updates
    for acker in (1, 2, 3):
        h.feed(h.ack(acker, 4, 3, request_digest(own[3])))
    for seq in (1, 2):
        h.feed(h.ack(1, 4, seq, request_digest(own[seq])))  # 2 and 3's acks were lost
    assert h.replica.po.cum_aru[4] == (1, 0)
    pp = h.pre_prepare(1, [h.po_aru(i, h.vector(s4=(1, 2))) for i in (1, 2, 3)] + [None])
    h.feed(pp)
    for commit in h.votes(msgs.Commit, pp, [1, 2, 3]):
        h.feed(commit)
    assert h.delivered_payloads() == [[b"one"]]
    # The next ordinal garbage-collects ordinal 1's requests (gc_lag_ordinals = 1).
    pp2 = h.pre_prepare(2, [h.po_aru(i, h.vector(s4=(1, 2)), num=2) for i in (1, 2, 3)] + [None])
    h.feed(pp2)
    for commit in h.votes(msgs.Commit, pp2, [1, 2, 3]):
        h.feed(commit)
    assert [d.ordinal for d in h.delivered] == [1, 2]
    assert h.replica.po.cum_aru[4] == (1, 3)
