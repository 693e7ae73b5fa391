"""The replica: one door in (``step``), one door out (``take_actions``).

``Replica`` holds the shared machinery every sub-protocol uses (the clock, the
timer table, the signature batcher, the action list, counters) and routes each
verified message to its sub-protocol by a literal table (``_handlers``). It has
no sockets, clocks, threads or randomness of its own: time arrives as ``Tick``,
signing leaves as ``SignJob`` and returns as ``CryptoDone`` (docs/design.md section 2, "One
core, two drivers"; etcd raft's ``Step``/``Ready`` split).

Sub-protocols, one module each (docs/protocol.md section in brackets):
``preorder`` [2.2], ``order`` [2.3], ``recon`` [2.4], ``catchup`` and ``fetch`` [2.7].

Self-delivery (docs/protocol.md section 2.0): a message this replica broadcasts is, once
signed, also handed to its own handler, which is how its own PO-Acks, Prepares
and Commits are counted. A message addressed to one replica is applied locally
only when that replica is this one.
"""

from __future__ import annotations

import heapq
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

from prime import msgs, wire
from prime.core import actions as A
from prime.core.catchup import Catchup
from prime.core.fetch import Fetch
from prime.core.events import ClientUpdate, CryptoDone, Event, Inbound, ThresholdDone, Tick
from prime.core.order import Order
from prime.core.params import Params
from prime.core.preorder import PreOrder
from prime.core.quorum import leader_of
from prime.core.recon import Recon
from prime.core.suspect import SuspectLeader
from prime.core.viewchange import ViewChange
from prime.msgs import Message, NewLeaderProof

BROADCAST = 0  # destination: every replica (and apply locally)
LOCAL = -1  # destination: only this replica's own handler
# Timer heap entries, stale ones included. Every re-arm pushes one, so a periodic timer
# leaves one stale entry per period; past this the heap is rebuilt from the armed timers.
TIMER_HEAP_ENTRIES_MAX = 64
_AFTER_ALL = "\uffff"  # sorts after every timer name: "every timer due now has fired"

_log = logging.getLogger(__name__)


class _ReplicaLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Prefixes each record with the replica's id and its (event-supplied) time."""

    def __init__(self, logger: logging.Logger, replica: Replica) -> None:
        super().__init__(logger, {"server": replica.me})
        self.replica = replica

    def process(self, msg: object, kwargs: Any) -> tuple[object, Any]:
        r = self.replica
        return f"r{r.me} t={r.now_us / 1e6:.6f} v{r.view} {msg}", kwargs


@dataclass(slots=True)
class ViewChangeRecord:
    """When a view was pre-installed here and when its view change completed."""

    view: int
    preinstalled_us: int
    completed_us: int | None = None


@dataclass(slots=True)
class Periodic:
    """A job that runs every ``period_us`` while it has work, and sleeps otherwise.

    The C code (and this core until issue 12) re-armed the PO-Ack, PO-ARU,
    proof-matrix, pre-prepare, ordering-retransmission and TAT jobs unconditionally,
    so an idle replica woke every few milliseconds to find nothing to do. Here a
    job's timer is armed only while ``work_due()`` says its handler would do
    something: it returns the earliest time at which it would (``now`` or earlier:
    at its next firing), or None when nothing can change until an event does.
    Firings stay on the job's grid (the time it was set, or last fired, plus
    multiples of the period), as if it had kept firing uselessly, so a busy replica
    sends the same messages at the same times as before: only firings that would
    have done nothing are skipped. The "EAGER" legacy switch re-arms every period
    as before, and tests/unit/test_idle_timers.py checks that both replay the same
    runs.

    The keep-alives (ping, TAT_UB, the PO retransmission) are jobs of this kind too:
    their work is "every period unless the replica is quiescent" (``Replica.quiescent``),
    so they rest while it is, and resume on their grids, at the times they would have
    fired, once it has work again. Their handlers check the same condition, so a
    firing armed while there was work skips its sending if none is left, as the
    "EAGER" runs do."""

    period_us: int
    work_due: Callable[[], int | None]
    # A point of its grid (when set, then the last firing, + i * period_us), none of
    # whose points between it and the next firing has been skipped.
    grid_us: int = 0
    running: bool = False  # started and not cancelled


@dataclass(slots=True)
class Stats:
    """Plain counters: deterministic, so the simulator can check them."""

    dropped: Counter[str] = field(default_factory=Counter)
    timers_fired: Counter[str] = field(default_factory=Counter)  # by timer name
    timer_wakeups: int = 0  # ticks that fired at least one timer (idle: a few a second)
    sign_jobs: int = 0
    messages_signed: int = 0
    messages_sent: int = 0
    pre_prepares_sent: int = 0
    ordinals_executed: int = 0
    updates_delivered: int = 0
    equivocations_seen: int = 0
    backward_progress_rejected: int = 0
    recon_requests_sent: int = 0
    recon_bytes_sent: int = 0
    recon_rebuilt: int = 0
    recon_bad_rebuilds: int = 0
    jumps: int = 0
    replayed_filled: int = 0  # replayed ordinals installed from f+1 matching records
    view_change_timeouts: int = 0  # view changes not complete within their bound
    amnesia_acks_withheld: int = 0  # acks a restarted replica held back (preorder)


class Replica:
    """One Prime replica's protocol state machine."""

    def __init__(
        self,
        params: Params,
        me: int,
        *,
        incarnation: int = 1,
        recovering: bool = False,
        acked_record: tuple[tuple[int, int, int, int], ...] | None = None,
        log: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
    ) -> None:
        assert 1 <= me <= params.n, (me, params.n)
        assert incarnation >= 1
        self.p = params
        self.me = me
        self.n = params.n
        self.q = params.quorums
        self.incarnation = incarnation
        # True when this incarnation replaces an earlier one whose state (the acks it
        # sent) is lost: a restart. The driver knows; the core cannot (preorder: amnesia).
        self.recovering = recovering
        # What the driver kept of our earlier lives (``A.Persist``): per originator, a bound
        # on every PO id we ever acked (preorder.RecordEntry); None if unknown (no earlier
        # life, or lost).
        assert acked_record is None or len(acked_record) == params.n + 1
        self.acked_record = acked_record
        self.log = log or _ReplicaLog(_log, self)
        self.now_us = 0
        self.view = 1
        self.view_change_done = True
        self.stats = Stats()
        self.started = False
        self._actions: list[A.Action] = []
        self._timers: dict[str, int] = {}  # armed timers: name -> deadline
        # (deadline, name) for every armed timer, plus stale entries of re-armed or
        # cancelled ones, which are skipped: the next deadline is O(1) to find.
        self._timer_heap: list[tuple[int, str]] = []
        self._sign_queue: list[tuple[Message, bytes, int]] = []
        self._sign_jobs: dict[int, tuple[int, ...]] = {}
        self._job_seq = 0
        self.po = PreOrder(self)
        self.ord = Order(self)
        self.recon = Recon(self)
        self.catchup = Catchup(self)
        self.fetch = Fetch(self)
        self.suspect = SuspectLeader(self)
        self.vc = ViewChange(self)
        self._threshold_jobs: dict[int, tuple[str, tuple[int, int, int]]] = {}
        self.view_changes: list[ViewChangeRecord] = []
        self.new_leader_proof: NewLeaderProof | None = None
        self.executed_in_view = True
        self._timer_handlers: dict[str, Callable[[], None]] = {
            "sign_batch": self._on_sign_batch_timeout,
            "po_ack": self.po.on_po_ack_timeout,
            "po_aru": self.po.on_po_aru_timeout,
            "proof_matrix": self.po.on_proof_matrix_timeout,
            "po_retrans": self.po.on_retrans_timeout,
            "pre_prepare": self.ord.on_pre_prepare_timeout,
            "ord_retrans": self.ord.on_retrans_timeout,
            "ord_cert": self.catchup.on_ord_cert_timeout,
            "catchup": self.catchup.on_catchup_timeout,
            "po_fetch": self.fetch.on_timeout,
            "tat_measure": self.suspect.on_tat_measure_timeout,
            "ping": self.suspect.on_ping_timeout,
            "tat_ub": self.suspect.on_tat_ub_timeout,
            "new_leader": self.suspect.on_new_leader_timeout,
            "new_leader_proof": self._on_new_leader_proof_timeout,
            "vc_retrans": self.vc.on_retrans_timeout,
            "vc_deadline": self.vc.on_deadline,
        }
        # The jobs that repeat only while they have work (Periodic); the others re-arm
        # themselves: sign_batch and fetch only exist with work, the ORD certificate is
        # genuinely periodic (catch-up relies on it), and the view-change timers last
        # only as long as one. Ping, TAT_UB and the PO retransmission (its PO_ARU is a
        # keep-alive) run while there is work and rest while the replica is quiescent.
        spacing = params.po_tick_us * params.po_job_spacing_ticks
        self._periodic: dict[str, Periodic] = {
            "po_ack": Periodic(spacing, self.po.ack_due),
            "po_aru": Periodic(spacing, self.po.aru_due),
            "proof_matrix": Periodic(spacing, self.po.matrix_due),
            "pre_prepare": Periodic(params.pre_prepare_period_us, self.ord.pre_prepare_due),
            "ord_retrans": Periodic(params.retrans_period_us, self.ord.retrans_due),
            "tat_measure": Periodic(params.tat_measure_period_us, self.suspect.tat_measure_due),
            # The keep-alives: every period while there is work, asleep while the replica
            # is quiescent (``quiescent``; docs/design.md section 10).
            "ping": Periodic(params.ping_period_us, self.suspect.keepalive_due),
            "tat_ub": Periodic(params.tat_ub_period_us, self.suspect.keepalive_due),
            "po_retrans": Periodic(params.retrans_period_us, self.po.retrans_due),
        }
        self._eager = "EAGER" in params.legacy
        self._keepalive_always = "KEEPALIVE" in params.legacy
        # Running jobs not armed at the earliest point of their grid (asleep, or armed for
        # a later point): the only ones _wake_periodic asks, so a busy replica asks few.
        self._sleeping: dict[str, Periodic] = {}
        self._wake_stale = False  # a step since the last _wake_periodic may have given work
        # The literal dispatch table: message tag -> handler(via, env).
        self._handlers: dict[int, Callable[[int, wire.Envelope], None]] = {
            msgs.T_UPDATE: self.po.on_own_stamped_update,
            msgs.T_PO_REQUEST: self.po.on_po_request,
            msgs.T_PO_ACK: self.po.on_po_ack,
            msgs.T_PO_ARU: self.po.on_po_aru_message,
            msgs.T_PROOF_MATRIX: self.po.on_proof_matrix,
            msgs.T_PRE_PREPARE: self.ord.on_pre_prepare,
            msgs.T_PREPARE: self.ord.on_prepare,
            msgs.T_COMMIT: self.ord.on_commit,
            msgs.T_ORD_CERT: self.catchup.on_ord_cert,
            msgs.T_RECON: self.recon.on_recon,
            msgs.T_CATCHUP_REQUEST: self.catchup.on_catchup_request,
            msgs.T_REPLAYED: self.catchup.on_replayed,
            msgs.T_PO_FETCH: self.fetch.on_po_fetch,
            msgs.T_TAT_MEASURE: self.suspect.on_tat_measure,
            msgs.T_RTT_PING: self.suspect.on_rtt_ping,
            msgs.T_RTT_PONG: self.suspect.on_rtt_pong,
            msgs.T_RTT_MEASURE: self.suspect.on_rtt_measure,
            msgs.T_TAT_UB: self.suspect.on_tat_ub,
            msgs.T_NEW_LEADER: self.suspect.on_new_leader,
            msgs.T_NEW_LEADER_PROOF: self.suspect.on_new_leader_proof,
            msgs.T_RB_INIT: self.vc.on_rb_init,
            msgs.T_RB_ECHO: self.vc.on_rb_echo,
            msgs.T_RB_READY: self.vc.on_rb_ready,
            msgs.T_REPORT: self.vc.on_own_payload,
            msgs.T_PC_SET: self.vc.on_own_payload,
            msgs.T_VC_LIST: self.vc.on_vc_list,
            msgs.T_VC_PARTIAL_SIG: self.vc.on_vc_partial_sig,
            msgs.T_VC_PROOF: self.vc.on_vc_proof,
            msgs.T_REPLAY: self.vc.on_replay,
            msgs.T_REPLAY_PREPARE: self.vc.on_replay_prepare,
            msgs.T_REPLAY_COMMIT: self.vc.on_replay_commit,
        }

    # ------------------------------------------------------------------ doors

    def step(self, event: Event) -> None:
        """Feed one event. Effects accumulate until ``take_actions``."""
        match event:
            case Tick(now_us):
                assert now_us >= self.now_us, "time never runs backwards"
                # Jobs given work since the last tick are armed on their grid as of
                # then, before the clock moves (the driver may not have asked us).
                if self._wake_stale:
                    self._wake_periodic((self.now_us, _AFTER_ALL))
                self.now_us = now_us
                if not self.started:
                    self._start()
                self._fire_due_timers()  # wakes sleeping jobs after each handler
                return
            case Inbound(via, env):
                if self.started:
                    self.on_inbound(via, env)
                else:
                    self.drop("inbound:not_started")  # peers retransmit
            case ClientUpdate(env):
                if self.started:
                    self.po.on_client_update(env)
                else:
                    self.drop("client_update:not_started")  # drivers tick before feeding
            case CryptoDone(job_id, envelopes):
                self._on_signed(job_id, envelopes)
            case ThresholdDone(job_id, result):
                self._on_threshold_done(job_id, result)
            case _:
                raise AssertionError(f"unknown event {event!r}")
        self._wake_stale = True  # sleeping jobs are asked before the clock moves

    def take_actions(self) -> list[A.Action]:
        out, self._actions = self._actions, []
        return out

    def clean_stop_record(self) -> tuple[tuple[int, int, int, int], ...]:
        """For a clean stop (the daemon's SIGTERM, the simulator's clean restarts): the
        exact record of what we acked, with the inherited gate bounds still carried. The
        driver writes it durably, as an ``A.Persist``, and stops; the next life then
        withholds nothing this one did not ack (docs/hardening.md I11-3)."""
        return self.po.clean_stop_record()

    def next_deadline_us(self) -> int | None:
        """When the driver must next ``Tick`` this replica (None: no timer).

        Idle, that is only the ORD certificate broadcast (every ``ord_cert_period_us``)
        once the replica is quiescent, and the keep-alives (every 500 ms or slower)
        until then."""
        if self._wake_stale:
            self._wake_periodic((self.now_us, _AFTER_ALL))
        self._drop_stale_timer_entries()
        heap = self._timer_heap
        return heap[0][0] if heap else None

    def quiescent(self) -> bool:
        """Nothing to order anywhere this replica can see: no update queued or request in
        flight of its own, nothing received, acked or certified that is not executed, no
        ordinal above its ARU, no TAT stopwatch running, no reconciliation, fetch or
        catch-up under way, the view installed, and the restart record cut back to what
        was acked. Then its keep-alives (ping, TAT_UB, the TAT_MEASURE resend and the PO
        retransmission with its PO_ARU) have nothing to keep alive and rest; the first
        event that gives it work ends this, and they resume on their grids (``Periodic``).
        A function of state only (no clock), so the simulator replays it exactly.

        What ends it: a peer's request, ack, recon part, pre-prepare or vote, a
        certificate ahead of us, a client update. Junk a faulty peer leaves behind (a
        slot its acks created, a vote for an ordinal nobody orders) keeps a replica out
        of it until that is evicted: that costs the keep-alives, as before, never
        correctness. "KEEPALIVE" (legacy) keeps them running always, as the C code does."""
        if self._keepalive_always or not self.view_change_done:
            return False
        return (self.suspect.quiescent() and self.po.quiescent() and self.ord.quiescent()
                and self.recon.quiescent() and self.catchup.quiescent())

    @property
    def leader(self) -> int:
        return leader_of(self.view, self.n)

    @property
    def is_leader(self) -> bool:
        return self.leader == self.me

    # ------------------------------------------------------------ lifecycle

    def _start(self) -> None:
        """First tick: arm the periodic timers and announce our incarnation."""
        self.started = True
        tick = self.p.po_tick_us
        spacing = tick * self.p.po_job_spacing_ticks
        # Three PO jobs round-robin on the PO tick, each at most every `spacing`; they
        # (and pre_prepare, ord_retrans, tat_measure) go to sleep at their first firing
        # without work and wake when work comes (Periodic).
        self.set_timer("po_ack", self.now_us + tick)
        self.set_timer("po_aru", self.now_us + 2 * tick)
        self.set_timer("proof_matrix", self.now_us + 3 * tick)
        assert spacing >= tick
        self.set_timer("po_retrans", self.now_us + self.p.retrans_period_us)
        self.set_timer("ord_retrans", self.now_us + self.p.retrans_period_us)
        if self.is_leader:
            self.set_timer("pre_prepare", self.now_us + self.p.pre_prepare_period_us)
        self.suspect.start_view()
        self.po.announce_incarnation()

    # ------------------------------------------------------- views (2.5.3)

    def preinstall(self, new_view: int, proof: NewLeaderProof) -> None:
        """Pre-install ``new_view``: stop leading the old one, reset per-view state,
        carry the proof to everyone every second, and start the view change.

        The view change itself (docs/protocol.md section 2.6) is the next sub-protocol; until it
        lands, a pre-installed view does not order anything."""
        assert new_view > self.view, (new_view, self.view)
        self.log.info("pre-install view %d (leader %d)", new_view, leader_of(new_view, self.n))
        self.cancel_timer("pre_prepare")
        self.view = new_view
        self.view_change_done = False
        self.view_changes.append(ViewChangeRecord(new_view, self.now_us))
        self.suspect.on_view_preinstalled()
        self.new_leader_proof = proof
        self.executed_in_view = False
        self.sign_and_send(proof)
        self.set_timer("new_leader_proof", self.now_us + self.p.new_leader_resend_us)
        self.vc.start()

    def adopt_view(self, view: int) -> None:
        """Move straight into ``view``, proven installed by a valid ORD certificate of it
        (2.7 jump steps 2 and 6): a replica that was away while the others changed
        views rejoins without finishing a view change of its own."""
        assert view >= self.view
        if view == self.view:
            if self.view_change_done:
                return
            self.view_changes[-1].completed_us = self.now_us
        else:
            self.view = view
            self.view_changes.append(ViewChangeRecord(view, self.now_us, self.now_us))
            self.suspect.on_view_preinstalled()
        self.log.info("adopt view %d from a certificate", view)
        self.cancel_timer("pre_prepare")
        self.view_change_done = True
        self.executed_in_view = True
        self.vc.reset()
        self.vc.timeouts_in_row = 0
        committed = self.vc.committed
        if committed is not None and committed.replay.msg.view < view:
            # The adopted view's own replay kept whatever that replay decided, if it ever
            # executed: that view's decisions now speak for those ordinals.
            self.vc.committed = None
        self.cancel_timer("new_leader_proof")
        self.cancel_timer("vc_retrans")
        self.cancel_timer("vc_deadline")
        # Slots of older views that nothing ordered are dead: the view's own pre-prepares,
        # Prepares and Commits for those ordinals must find them free (item 15); what
        # the view decided there comes by catch-up.
        self.ord.purge_before_view(view)
        if self.is_leader:
            self.ord.seq = max(self.ord.seq, self.ord.aru + 1)  # H12
            self.ord.should_send_pp = True
            self.set_timer("pre_prepare", self.now_us)

    def finish_view_change(self, start_seq: int) -> None:
        """The replay executed: normal operation resumes in this view (2.6.5 steps 4-5)."""
        self.view_change_done = True
        self.view_changes[-1].completed_us = self.now_us
        self.log.info("view %d installed at ordinal %d", self.view, start_seq)
        # RB and VIEW retransmissions go on until an ordinal executes in this view, so a
        # replica still missing state (the new leader, say) can finish too (2.8).
        if self.is_leader:
            self.ord.seq = max(self.ord.seq, start_seq, self.ord.aru + 1)  # H12
            self.ord.should_send_pp = True
            self.set_timer("pre_prepare", self.now_us)
        else:
            self.po.challenge_new_leader(self.ord.pop_of(start_seq - 1))

    def request_threshold(
        self,
        op: str,
        statement: bytes,
        context: tuple[int, int, int],
        shares: tuple[tuple[int, bytes], ...] = (),
        *,
        verify_shares: bool = True,
    ) -> None:
        """Ask the driver for a threshold share or combination (answered by ThresholdDone)."""
        self._job_seq += 1
        self._threshold_jobs[self._job_seq] = (op, context)
        self.emit(A.ThresholdJob(self._job_seq, op, statement, shares, verify_shares))

    def _on_threshold_done(self, job_id: int, result: bytes | None) -> None:
        job = self._threshold_jobs.pop(job_id, None)
        assert job is not None, f"unknown threshold job {job_id}"
        op, context = job
        if op == "share":
            self.vc.on_share_done(context, result)
        else:
            self.vc.on_combine_done(context, result)

    def _on_new_leader_proof_timeout(self) -> None:
        # Until an ordinal executes in this view, so replicas that were away learn it (2.8).
        if self.new_leader_proof is not None and not self.executed_in_view:
            self.sign_and_send(self.new_leader_proof)
            self.set_timer("new_leader_proof", self.now_us + self.p.new_leader_resend_us)

    # ---------------------------------------------------------------- timers

    def set_timer(self, name: str, at_us: int) -> None:
        """Arm (or re-arm, replacing) a one-shot timer; a periodic job (``Periodic``)
        starts, or starts over, with its next firing at ``at_us``."""
        assert name in self._timer_handlers, name
        per = self._periodic.get(name)
        if per is not None:
            per.running = True
            per.grid_us = at_us
            self._sleeping.pop(name, None)
        self._arm(name, at_us)

    def _arm(self, name: str, at_us: int) -> None:
        """Put ``name`` in the timer table at ``at_us`` (a periodic job keeps its grid)."""
        if self._timers.get(name) == at_us:
            return  # armed already, and its heap entry is live
        self._timers[name] = at_us
        heapq.heappush(self._timer_heap, (at_us, name))
        if len(self._timer_heap) > TIMER_HEAP_ENTRIES_MAX:
            # In place: _fire_due_timers holds the list while handlers re-arm timers.
            self._timer_heap[:] = [(at, n) for n, at in self._timers.items()]
            heapq.heapify(self._timer_heap)

    def cancel_timer(self, name: str) -> None:
        """Disarm a timer; a periodic job stays stopped until set again."""
        self._timers.pop(name, None)
        per = self._periodic.get(name)
        if per is not None:
            per.running = False
            self._sleeping.pop(name, None)

    def timer_armed(self, name: str) -> bool:
        return name in self._timers

    def _drop_stale_timer_entries(self) -> None:
        """Pop heap entries of timers since re-armed or cancelled, so the top is live."""
        heap, timers = self._timer_heap, self._timers
        while heap and timers.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)

    def _fire_due_timers(self) -> None:
        heap, timers, now = self._timer_heap, self._timers, self.now_us
        periodic = self._periodic
        self._drop_stale_timer_entries()
        if heap and heap[0][0] <= now:
            self.stats.timer_wakeups += 1
        while True:
            # Deterministic order: by deadline, then by name (the heap's tuple order).
            self._drop_stale_timer_entries()
            if not heap or heap[0][0] > now:
                return
            key = heapq.heappop(heap)
            name = key[1]
            del timers[name]
            self.stats.timers_fired[name] += 1
            self._timer_handlers[name]()
            per = periodic.get(name)
            if per is not None and per.running and name not in timers:
                self._sleeping.pop(name, None)
                self._rearm_periodic(name, per)
            # A handler may have given a sleeping job work: one still due at this
            # instant fires in this loop if it sorts after this timer, as it would have.
            self._wake_periodic(key)

    @staticmethod
    def _grid_at_or_after(grid_us: int, period_us: int, at_us: int) -> int:
        """The first point of the grid ``grid_us + i * period_us`` (i >= 0) not before ``at_us``."""
        if at_us <= grid_us:
            return grid_us
        return grid_us + -(-(at_us - grid_us) // period_us) * period_us

    def _rearm_periodic(self, name: str, per: Periodic) -> None:
        """After a firing: the next one a period later, if the job has work by then."""
        per.grid_us = self.now_us + per.period_us
        due = self.now_us if self._eager else per.work_due()
        if due is None or due > per.grid_us:
            self._sleeping[name] = per
        if due is not None:
            self._arm(name, self._grid_at_or_after(per.grid_us, per.period_us, due))

    def _wake_periodic(self, after: tuple[int, str]) -> None:
        """Arm every sleeping job that has work, at the grid point it would have done it.

        ``after`` is the last (deadline, name) fired at this instant: grid points up to
        it have passed (firings without work, skipped). Only jobs in ``_sleeping`` are
        asked: one armed at its earliest possible point cannot be armed earlier."""
        self._wake_stale = False
        if not self._sleeping:
            return
        now, timers = self.now_us, self._timers
        for name, per in list(self._sleeping.items()):
            due = per.work_due()
            if due is None:
                continue
            earliest = self._grid_at_or_after(per.grid_us, per.period_us, now)
            if earliest == now and (now, name) <= after:
                earliest += per.period_us
            at = self._grid_at_or_after(earliest, per.period_us, due)
            armed = timers.get(name)
            if armed is None or at < armed:
                self._arm(name, at)
            if at == earliest:
                del self._sleeping[name]  # armed as early as it can be

    # ------------------------------------------------------------ dispatch

    def on_inbound(self, via: int, env: wire.Envelope) -> None:
        """Route one verified envelope to its sub-protocol."""
        handler = self._handlers.get(env.msg.TAG)
        if handler is None:
            self.drop("unhandled_tag:" + env.msg.NAME)
            return
        handler(via, env)

    def drop(self, reason: str) -> None:
        """Count (never raise on) peer input that is malformed or out of place."""
        self.stats.dropped[reason] += 1

    # -------------------------------------------------------------- output

    def emit(self, action: A.Action) -> None:
        if isinstance(action, (A.Send, A.Broadcast)):
            self.stats.messages_sent += 1
        self._actions.append(action)

    def forward(self, env: wire.Envelope, dest: int = BROADCAST) -> None:
        """Send an already signed envelope on, unchanged (flooding, recon, retransmit)."""
        if dest == BROADCAST:
            self.emit(A.Broadcast(env))
        elif dest != self.me:
            self.emit(A.Send(dest, env))

    def sign_and_send(self, msg: Message, dest: int = BROADCAST) -> None:
        """Queue ``msg`` for the next Merkle batch (docs/protocol.md section 4.2).

        The batch is released when ``sig_batch_count_max`` messages wait or the
        oldest has waited ``sig_debounce_us`` (a cap on age rather than the C
        code's pure debounce, hardening H10)."""
        assert dest == BROADCAST or dest == LOCAL or 1 <= dest <= self.n
        self._sign_queue.append((msg, wire.encode_body(msg), dest))
        if len(self._sign_queue) >= self.p.sig_batch_count_max:
            self._release_sign_batch()
        elif not self.timer_armed("sign_batch"):
            self.set_timer("sign_batch", self.now_us + self.p.sig_debounce_us)

    def sign_direct(self, msg: Message, dest: int = BROADCAST) -> None:
        """Sign ``msg`` on its own right away (messages others embed)."""
        body = wire.encode_body(msg)
        self._issue_sign_job(((msg, body, dest),), direct=True)

    def _on_sign_batch_timeout(self) -> None:
        if self._sign_queue:
            self._release_sign_batch()

    def _release_sign_batch(self) -> None:
        batch, self._sign_queue = self._sign_queue, []
        self.cancel_timer("sign_batch")
        self._issue_sign_job(tuple(batch), direct=False)

    def _issue_sign_job(self, batch: tuple[tuple[Message, bytes, int], ...], direct: bool) -> None:
        self._job_seq += 1
        self._sign_jobs[self._job_seq] = tuple(dest for _, _, dest in batch)
        self.stats.sign_jobs += 1
        self.stats.messages_signed += len(batch)
        self.emit(
            A.SignJob(
                self._job_seq,
                tuple(m for m, _, _ in batch),
                tuple(b for _, b, _ in batch),
                direct,
            )
        )

    def _on_signed(self, job_id: int, envelopes: tuple[wire.Envelope, ...]) -> None:
        dests = self._sign_jobs.pop(job_id, None)
        assert dests is not None, f"unknown sign job {job_id}"
        assert len(dests) == len(envelopes), "a sign job answers every message"
        for env, dest in zip(envelopes, dests):
            assert env.sender == self.me
            if dest == BROADCAST:
                self.emit(A.Broadcast(env))
                self.on_inbound(self.me, env)
            elif dest == LOCAL or dest == self.me:
                self.on_inbound(self.me, env)
            else:
                self.emit(A.Send(dest, env))
                if env.msg.TAG == msgs.T_RECON:
                    self.stats.recon_bytes_sent += len(env.raw)

    # ----------------------------------------------------------- invariants

    def invariants(self) -> None:
        """Our own rules; a failure here is a bug in this code, not a peer's fault."""
        self.po.invariants()
        self.ord.invariants()
        assert len(self._sign_queue) < self.p.sig_batch_count_max
        assert len(self._timers) <= len(self._timer_heap) <= TIMER_HEAP_ENTRIES_MAX
        assert len(self._sign_jobs) <= 4096, "sign jobs are answered"

    def collection_sizes(self) -> dict[str, int]:
        """Sizes of every growing collection (the simulator asserts they stay bounded)."""
        sizes = {"sign_queue": len(self._sign_queue), "sign_jobs": len(self._sign_jobs)}
        sizes.update(self.po.collection_sizes())
        sizes.update(self.ord.collection_sizes())
        sizes.update(self.recon.collection_sizes())
        sizes.update(self.catchup.collection_sizes())
        sizes.update(self.fetch.collection_sizes())
        sizes.update(self.suspect.collection_sizes())
        sizes.update(self.vc.collection_sizes())
        return sizes
