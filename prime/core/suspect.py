"""Suspect-Leader: measure the leader, bound what is acceptable, replace a slow one
(docs/protocol.md section 2.5; DSN'08 section 4.4, "Suspect-Leader").

Each non-leader measures the leader's *turnaround time* (TAT): from sending a
proof matrix (a *TAT challenge*) to accepting a pre-prepare that covers it.
Independently, every replica measures round-trip times to every other replica
(RTT_PING / RTT_PONG / RTT_MEASURE) and derives what TAT it could itself offer
as leader (``alpha``, Q10, reported in TAT_UB). From the reports:

* ``TAT_leader`` (Q9): the TAT the replicas collectively measured;
* ``TAT_acceptable`` (Q11): the TAT a correct leader could offer, floored at
  ``min_rtt_us``;
* suspicion (Q12): ``TAT_leader > K_lat * TAT_acceptable`` (+ the pre-prepare
  period in normal operation). A suspecting replica broadcasts NEW_LEADER;
  ``2f+k+1`` matching votes pre-install the next view, and the NEW_LEADER_PROOF
  carries those votes to everyone else.

Open question 1 (docs/hardening.md OQ1), decided: ``TAT_leader`` is the
``(f+k+1)``-th *highest* reported value. The paper takes the ``(f+1)``-st
highest, so that the f Byzantine replicas cannot raise it alone while one
correct replica's measurement can; the C code takes the ``(f+k+1)``-th lowest,
which needs ``2f+k+1`` replicas to report at least that much and so lets a
leader starve up to ``f+k`` correct replicas unnoticed. Our choice generalises
the paper to ``k > 0``: the ``f`` Byzantine plus ``k`` benign-faulty replicas
(a partitioned replica genuinely sees a high TAT) cannot cause suspicion by
themselves, yet any ``f+k+1`` replicas that measured a slow leader can; the
same order statistic as Q10/Q11, so the bound compares like with like.

Invariants: all state here is per view and reset when a view is
(pre)installed; at most one stored NEW_LEADER per sender (the highest view);
the challenge FIFO is bounded (``challenges_max``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

from prime.core.quorum import compare_vectors
from prime.msgs import (
    NewLeader,
    NewLeaderProof,
    RttMeasure,
    RttPing,
    RttPong,
    TatMeasure,
    TatUb,
)
from prime.types import PoSeq
from prime.wire import Envelope

if TYPE_CHECKING:
    from prime.core.replica import Replica

MAX_TAT_US = 10**13  # "infinity" (C: MAX_TAT_TIME = 1e7 s)
CHALLENGES_MAX = 4096
Vectors = tuple[tuple[PoSeq, ...] | None, ...]


def kth_highest(values: Sequence[int], k: int) -> int:
    """The ``k``-th highest (1-based) of ``values``."""
    assert 1 <= k <= len(values)
    return sorted(values, reverse=True)[k - 1]


def tat_leader(reported: Sequence[int], f: int, k: int) -> int:
    """Q9 (decided above): the (f+k+1)-th highest reported TAT."""
    return kth_highest(reported, f + k + 1)


def alpha(rtt_min: Sequence[int], f: int, k: int) -> int:
    """Q10: the (f+k+1)-th highest of my per-peer minimum RTTs (self = 0)."""
    return kth_highest(rtt_min, f + k + 1)


def tat_acceptable(alphas: Sequence[int], f: int, k: int, min_rtt_us: int) -> int:
    """Q11: the (f+k+1)-th highest reported alpha, floored at ``min_rtt_us``."""
    return max(min_rtt_us, kth_highest(alphas, f + k + 1))


def covered(pp_rows: Vectors, challenge: Vectors) -> bool:
    """A challenge is covered if no row of the PP is lower-without-being-higher
    than the challenge's row (2.3.1 step 6; incomparable counts as covered)."""
    for cur, old in zip(pp_rows, challenge):
        if old is None:
            continue
        if cur is None:
            return False
        lower, higher = compare_vectors(cur, old)
        if lower and not higher:
            return False
    return True


class SuspectLeader:
    """Suspect-leader state and handlers of one replica (all reset per view)."""

    def __init__(self, replica: Replica) -> None:
        self.r = replica
        self.reset_for_view()
        self.votes: dict[int, Envelope] = {}  # newest NEW_LEADER per sender
        self.voted_view = 0  # the highest view we voted for
        self.suspicions = 0  # statistic: how often this replica suspected a leader

    def reset_for_view(self) -> None:
        n = self.r.n
        self.challenges: deque[tuple[Vectors, int]] = deque()
        self.max_tat_us = 0
        self.tat_max_change = False
        self.last_tat_measure_sent_us = -(10**15)
        self.reported_tats = [0] * (n + 1)
        self.tat_leader_us = 0
        self.ping_seq = 0
        self.pings: dict[int, tuple[int, int]] = {}  # slot -> (ping_seq, sent_us)
        # When we last answered each peer's ping (on_rtt_ping): at most one pong per half
        # ping period per peer, so a ping flood does not make us sign a pong per ping.
        self.ponged_us: list[int | None] = [None] * (n + 1)
        # The newest of our pings each peer's pong was measured for: one RTT_MEASURE per
        # peer and ping, however often a faulty peer repeats its pong.
        self.measured_seq = [0] * (n + 1)
        self.rtt_min = [MAX_TAT_US] * (n + 1)
        self.rtt_min[self.r.me] = 0
        self.alpha_us = MAX_TAT_US
        self.alphas = [MAX_TAT_US] * (n + 1)
        self.tat_acceptable_us = MAX_TAT_US
        self.leader_suspected = False
        self.my_vote: Envelope | None = None

    # ----------------------------------------------------------------- timers

    def start_view(self) -> None:
        """Arm the periodic timers when a view is (pre)installed (2.8)."""
        now = self.r.now_us
        self.r.set_timer("tat_measure", now + 10_000)
        self.r.set_timer("ping", now)
        self.r.set_timer("tat_ub", now + 20_000)

    def tat_measure_due(self) -> int | None:
        """When the TAT job next has something to do, mirroring its handler: sample a
        running stopwatch once the sample would exceed ``max_tat_us``, send a changed
        maximum at once, else resend it every ``tat_measure_resend_us``. A leader in
        normal operation measures nothing; so between challenges a non-leader wakes
        only for the resend."""
        r = self.r
        if r.view_change_done and r.is_leader:
            return None
        if self.tat_max_change:
            return r.now_us
        if r.quiescent():
            return None  # the resend is a keep-alive: it rests with the others
        due = self.last_tat_measure_sent_us + r.p.tat_measure_resend_us
        if not r.view_change_done:
            started = r.vc.proof_sent_us
        else:
            started = self.challenges[0][1] if self.challenges else None
        if started is not None:
            due = min(due, started + self.max_tat_us + 1)  # _sample raises the maximum
        return due

    def quiescent(self) -> bool:
        """No TAT stopwatch runs (no challenge waits for a pre-prepare), no changed
        maximum waits to be sent, and we do not suspect the leader."""
        return not self.challenges and not self.tat_max_change and not self.leader_suspected

    def primed(self) -> bool:
        """We can evaluate the suspicion rule (Q12): enough TAT_UB reports came in for a
        finite ``TAT_acceptable``. The RTT figures behind it are kept for the whole view,
        so a replica that rests keeps them for the moment load returns."""
        return self.tat_acceptable_us < MAX_TAT_US

    def keepalive_paused(self) -> bool:
        """Ping and TAT_UB rest while the replica is quiescent and primed: they measure
        and report round-trip minima over the view, which resting loses nothing of, and
        nothing is ordered meanwhile that a leader could delay. An unprimed replica keeps
        pinging (after start-up or a view change), and the resting ones answer its pings
        with their TAT_UB as well (``on_rtt_ping``), so it gets primed and rests too."""
        return self.primed() and self.r.quiescent()

    def keepalive_due(self) -> int | None:
        """The ping and TAT_UB jobs (``replica.Periodic``): due at every firing unless
        paused."""
        return None if self.keepalive_paused() else self.r.now_us

    def on_tat_measure_timeout(self) -> None:
        p = self.r.p
        if not self.r.view_change_done:
            started = self.r.vc.proof_sent_us  # the VC stopwatch: VC_PROOF sent, no REPLAY yet
            if started is not None:
                self._sample(self.r.now_us - started)
        elif self.r.is_leader:
            return
        elif self.challenges:
            self._sample(self.r.now_us - self.challenges[0][1])  # oldest unanswered counts too
        due = self.r.now_us - self.last_tat_measure_sent_us >= p.tat_measure_resend_us
        if self.tat_max_change or (due and not self.r.quiescent()):
            self.tat_max_change = False
            self.last_tat_measure_sent_us = self.r.now_us
            self.r.sign_and_send(TatMeasure(self.r.view, self.max_tat_us))

    def on_ping_timeout(self) -> None:
        if self.keepalive_paused():  # a firing armed while there was work may find none left
            return
        self.ping_seq += 1
        self.pings[self.ping_seq % self.r.p.ping_history] = (self.ping_seq, self.r.now_us)
        self.r.sign_and_send(RttPing(self.r.view, self.ping_seq))

    def on_tat_ub_timeout(self) -> None:
        if self.keepalive_paused():  # a firing armed while there was work may find none left
            return
        self.r.sign_and_send(TatUb(self.r.view, self.alpha_us))

    def on_new_leader_timeout(self) -> None:
        if self.my_vote is not None and self.my_vote.msg.new_view > self.r.view:
            self.r.forward(self.my_vote)
            self.r.set_timer("new_leader", self.r.now_us + self.r.p.new_leader_resend_us)

    # ------------------------------------------------------------- TAT (2.5.1)

    def on_proof_matrix_sent(self, rows: Vectors) -> None:
        """A TAT challenge: the matrix just sent to the leader, and when."""
        if len(self.challenges) >= CHALLENGES_MAX:
            self.challenges.popleft()
        self.challenges.append((rows, self.r.now_us))

    def on_pp_accepted(self, rows: Vectors) -> None:
        """Pop every challenge the accepted pre-prepare covers; each is a TAT sample."""
        while self.challenges and covered(rows, self.challenges[0][0]):
            _, start = self.challenges.popleft()
            self._sample(self.r.now_us - start)

    def _sample(self, tat_us: int) -> None:
        if tat_us > self.max_tat_us:
            self.max_tat_us = tat_us
            self.tat_max_change = True

    def on_tat_measure(self, via: int, env: Envelope) -> None:
        msg: TatMeasure = env.msg
        j = env.sender
        if msg.view != self.r.view or not 1 <= j <= self.r.n:
            return
        if msg.max_tat_us > self.reported_tats[j]:
            self.reported_tats[j] = msg.max_tat_us
        self.tat_leader_us = tat_leader(self.reported_tats[1:], self.r.p.f, self.r.p.k)
        self.check_suspicion()

    # ------------------------------------------------------------- RTT (2.5.2)

    def on_rtt_ping(self, via: int, env: Envelope) -> None:
        msg: RttPing = env.msg
        j = env.sender
        if msg.view != self.r.view or j == self.r.me or not 1 <= j <= self.r.n:
            return
        # RTT_PING is timely, in no inbound lane, and each answer is a signed message: a
        # correct peer pings once per ping_period_us, so one answer per half period per
        # peer answers all of its pings, and a flood of pings draws no more than that.
        last = self.ponged_us[j]
        if last is not None and self.r.now_us - last < self.r.p.ping_period_us // 2:
            self.r.drop("rtt_ping:rate")
            return
        self.ponged_us[j] = self.r.now_us
        self.r.sign_and_send(RttPong(j, self.r.view, msg.ping_seq), dest=j)
        if self.alpha_us < MAX_TAT_US and self.keepalive_paused():
            # We rest, so our TAT_UB is not broadcast: a peer still pinging may lack it
            # (it started, or lost our last one) and cannot get primed without it.
            self.r.sign_and_send(TatUb(self.r.view, self.alpha_us), dest=j)

    def on_rtt_pong(self, via: int, env: Envelope) -> None:
        msg: RttPong = env.msg
        j = env.sender
        if msg.view != self.r.view or msg.dest != self.r.me or not 1 <= j <= self.r.n:
            return
        sent = self.pings.get(msg.ping_seq % self.r.p.ping_history)
        if sent is None or sent[0] != msg.ping_seq:
            return  # stale: the window moved on
        if msg.ping_seq <= self.measured_seq[j]:
            self.r.drop("rtt_pong:repeat")  # measured already (or a newer ping was)
            return
        self.measured_seq[j] = msg.ping_seq
        rtt = self.r.now_us - sent[1]
        self.r.sign_and_send(RttMeasure(j, self.r.view, rtt), dest=j)

    def on_rtt_measure(self, via: int, env: Envelope) -> None:
        msg: RttMeasure = env.msg
        j = env.sender
        if msg.view != self.r.view or msg.dest != self.r.me or not 1 <= j <= self.r.n:
            return
        if msg.rtt_us < self.rtt_min[j]:
            self.rtt_min[j] = msg.rtt_us
        was_infinite = self.alpha_us >= MAX_TAT_US
        self.alpha_us = alpha(self.rtt_min[1:], self.r.p.f, self.r.p.k)
        if was_infinite and self.alpha_us < MAX_TAT_US:
            self.r.sign_and_send(TatUb(self.r.view, self.alpha_us))

    def on_tat_ub(self, via: int, env: Envelope) -> None:
        msg: TatUb = env.msg
        j = env.sender
        if msg.view != self.r.view or not 1 <= j <= self.r.n:
            return
        if msg.alpha_us < self.alphas[j]:
            self.alphas[j] = msg.alpha_us
        p = self.r.p
        self.tat_acceptable_us = tat_acceptable(self.alphas[1:], p.f, p.k, p.min_rtt_us)
        self.check_suspicion()

    # ------------------------------------------------- suspicion (2.5.3)

    def threshold_us(self) -> int:
        """Q12: K_lat x TAT_acceptable, plus the PP period in normal operation."""
        bound = int(self.r.p.k_lat * self.tat_acceptable_us)
        if self.r.view_change_done:
            bound += self.r.p.pre_prepare_period_us
        return bound

    def check_suspicion(self) -> None:
        if self.leader_suspected or self.tat_acceptable_us >= MAX_TAT_US:
            return
        if self.tat_leader_us > self.threshold_us():
            self.suspect()

    def suspect(self, reason: str = "") -> None:
        """Vote for the next view: NEW_LEADER, signed alone so proofs can carry it."""
        if self.leader_suspected:
            return
        self.leader_suspected = True
        self.suspicions += 1
        self.r.log.info(
            "suspect leader %d of view %d: %s",
            self.r.leader, self.r.view,
            reason or f"TAT {self.tat_leader_us} us > {self.threshold_us()} us",
        )
        self._vote(self.r.view + 1)

    def _vote(self, new_view: int) -> None:
        if new_view <= self.voted_view:
            return
        self.voted_view = new_view
        self.r.sign_direct(NewLeader(new_view))
        self.r.set_timer("new_leader", self.r.now_us + self.r.p.new_leader_resend_us)

    def on_equivocation(self, what: str = "pre-prepares") -> None:
        """Two validly signed, different pre-prepares (or REPLAYs) from the leader for one
        ordinal (view): proof of misbehaviour, so no need to wait for the TAT to grow.
        Two REPLAYs count during the view change too: they split the replicas, and the
        view-change stopwatch stops at the first REPLAY, so nothing else would notice."""
        if "EVIDENCE" in self.r.p.legacy:
            return
        if self.r.view_change_done or what == "REPLAYs":
            self.suspect(f"two conflicting {what}")

    # ------------------------------------------- NEW_LEADER and its proof

    def on_new_leader(self, via: int, env: Envelope) -> None:
        """Count votes for a next view; ``2f+k+1`` matching ones pre-install it (Q7)."""
        msg: NewLeader = env.msg
        j = env.sender
        if not 1 <= j <= self.r.n:
            return
        if j == self.r.me and via == self.r.me:
            self.my_vote = env  # our own vote, back from signing
        if msg.new_view <= self.r.view:
            return
        prev = self.votes.get(j)
        if prev is not None and prev.msg.new_view >= msg.new_view:
            return
        self.votes[j] = env
        self._join_if_f_plus_one_ahead()
        matching = sorted(
            (e for e in self.votes.values() if e.msg.new_view == msg.new_view),
            key=lambda e: e.sender,
        )
        if len(matching) == self.r.q.certificate:
            self.r.preinstall(msg.new_view, NewLeaderProof(msg.new_view, tuple(matching)))

    def _join_if_f_plus_one_ahead(self) -> None:
        """f+1 replicas vote for views above ours: at least one correct replica suspects,
        so we vote too, for the highest view f+1 of them reached (liveness amplification,
        as PBFT's f+1 view-change rule; the f Byzantine alone cannot trigger it)."""
        ahead = sorted(
            (e.msg.new_view for e in self.votes.values() if e.msg.new_view > self.r.view), reverse=True
        )
        need = self.r.q.one_correct
        if len(ahead) >= need:
            self._vote(ahead[need - 1])

    def on_new_leader_proof(self, via: int, env: Envelope) -> None:
        """A proof lets a replica that did not suspect, or lagged views, jump to the new view."""
        msg: NewLeaderProof = env.msg
        if msg.new_view <= self.r.view:
            return
        signers = {v.sender for v in msg.votes}
        distinct = len(signers) == len(msg.votes) or "H6" in self.r.p.legacy  # C: count only
        if len(msg.votes) != self.r.q.certificate or not distinct:
            self.r.drop("new_leader_proof:votes")  # H6: distinct signers, exact quorum
            return
        if not all(1 <= s <= self.r.n for s in signers):
            self.r.drop("new_leader_proof:signer")
            return
        self.r.preinstall(msg.new_view, NewLeaderProof(msg.new_view, msg.votes))

    def on_view_preinstalled(self) -> None:
        """Per-view state starts over; votes for later views are kept."""
        self.reset_for_view()
        self.votes = {j: e for j, e in self.votes.items() if e.msg.new_view > self.r.view}
        self.r.cancel_timer("new_leader")
        self.start_view()

    def collection_sizes(self) -> dict[str, int]:
        return {
            "tat_challenges": len(self.challenges),
            "pings": len(self.pings),
            "new_leader_votes": len(self.votes),
        }
