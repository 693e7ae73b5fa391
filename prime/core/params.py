"""The protocol parameters the core reads, as one frozen value.

Kept separate from ``prime.config`` so the core depends on nothing with files
or environment: ``Params.from_config`` adapts a loaded configuration, and the
simulator builds ``Params`` directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from prime.core.quorum import Quorums


# Besides the hardening items of docs/hardening.md section 2, two switches turn off our own
# additions: "EVIDENCE", suspecting a leader on two conflicting pre-prepares (the C
# code waits for the TAT to grow, which a two-faced leader avoids), and "RB", counting
# reliable-broadcast echoes and readies per payload (the C code binds an instance to
# the first payload it sees, so an originator that equivocates can stall it).
#
# Issue 11's fixes in pre-ordering and reconciliation have switches too, so their tests
# can show the attack working without them: "AMNESIA" (a restarted replica acks freely),
# "JUNK" (slots and recon parts created by peers are not charged per peer), "CERTSHIP"
# (reconciliation ships only the sender's own ack, not the certifying ones), "NOOPGC"
# (replayed NO_OP ordinals are never marked reconciled, so never collected),
# "REBUILD" (a rebuild tries the first 32 subsets of parts in arrival order, afresh) and
# "FETCH" (a replica blocked on a request or its acks never asks peers for them).
#
# "EAGER" re-arms every periodic job whether or not it has work, as the C code does (an
# idle replica then wakes every 6 ms); a run with it sends exactly what a run without it
# sends, at the same times (replica.Periodic; tests/unit/test_idle_timers.py).
# "KEEPALIVE" keeps the keep-alives (ping, TAT_UB, the TAT_MEASURE resend, the PO
# retransmission) running while the replica is quiescent, as the C code does
# (Replica.quiescent; tests/unit/test_idle_timers.py).
# "OLDTAIL" drops the incarnation clause of the proof ARU (quorum.matrix_pop): entries of
# an originator's new incarnation vouch for any sequence number of its old one.
LEGACY_ITEMS = frozenset(
    {"H1", "H2", "H3", "H4", "H5", "H6", "H7", "H8", "H11", "H12", "H13", "EVIDENCE", "RB"}
    | {"AMNESIA", "JUNK", "CERTSHIP", "NOOPGC", "REBUILD", "FETCH", "EAGER", "OLDTAIL", "KEEPALIVE"}
)


@dataclass(frozen=True, slots=True)
class Params:
    f: int = 1
    k: int = 0
    num_clients: int = 150
    max_po_in_flight: int = 20
    po_request_bytes_max: int = 9000
    gc_lag_ordinals: int = 1
    use_erasure_codes: bool = True
    # cryptography
    sig_debounce_us: int = 1000
    sig_batch_count_max: int = 128
    # periodic sending
    pre_prepare_period_us: int = 20_000
    po_tick_us: int = 2_000
    po_job_spacing_ticks: int = 3
    retrans_period_us: int = 1_000_000
    ord_cert_period_us: int = 2_000_000
    # suspect-leader
    k_lat: float = 2.5
    min_rtt_us: int = 8_000
    tat_measure_period_us: int = 20_000
    tat_measure_resend_us: int = 500_000
    ping_period_us: int = 500_000
    tat_ub_period_us: int = 500_000
    new_leader_resend_us: int = 1_000_000
    # a view change not complete this long after pre-install moves on to the next view
    # (doubling with every one in a row that misses it); see ViewChange.on_deadline
    view_change_timeout_us: int = 5_000_000
    ping_history: int = 10
    # catch-up
    catchup_period_us: int = 1_000_000
    catchup_epsilon_us: int = 20_000
    jump_gap_ordinals_min: int = 4
    catchup_history_ordinals: int = 64
    incarnation_slack_s: int = 60  # H8: an incarnation is a start time, at most this far ahead
    catchup_reply_count_max: int = 32  # certificates sent per CATCHUP_REQUEST
    # Issue 11 item 11: one small CATCHUP_REQUEST returns up to 32 signed certificates.
    # An answer holds at most this many bytes of records (always at least one record)...
    catchup_reply_bytes_max: int = 65_536
    # ...and each peer's answers, together, at most this many bytes per second of
    # (virtual) time: a token bucket per asker holding up to one full answer.
    catchup_peer_bytes_per_s: int = 262_144
    # bounds on what peers can make us store (every collection has a _max)
    # Request fetch (prime/core/fetch.py, issue 11 item 9): a replica blocked this long
    # on an ordered ordinal asks a peer for the requests and acks it lacks, then the
    # next peer every fetch_retry_us. Answers draw from a per-asker token bucket.
    fetch_delay_us: int = 100_000
    fetch_retry_us: int = 100_000
    fetch_keep_requests_max: int = 4_096  # executed requests kept to answer (and 64 ordinals)
    fetch_reply_bytes_max: int = 131_072
    fetch_peer_bytes_per_s: int = 524_288
    ordinal_window_max: int = 2_000  # ordinal slots accepted beyond ARU
    po_window_max: int = 4_000  # PO slots accepted beyond an originator's white line
    request_copies_max: int = 4  # distinct versions kept of one PO id (equivocation)
    # PO slots a peer's acks or recon parts may create before any request is held
    # (its oldest are evicted beyond this): a correct peer needs about its lead over us.
    po_unbacked_per_sender_max: int = 1_000
    # Reconciliation parts kept per sending peer, in number and bytes (oldest evicted).
    recon_parts_per_sender_max: int = 1_000
    recon_bytes_per_sender_max: int = 4 * 1024 * 1024
    # Erasure decodings tried per received event (more wait for the next part, ack or
    # retransmission tick): each new part is tried with the parts before it.
    recon_decodes_per_step_max: int = 64
    # simulator-only negative control: weaken every quorum by this much
    quorum_weaken_by: int = 0
    # test-only: hardening items (docs/hardening.md section 1) to switch OFF, reproducing the
    # literal C behaviour, so a test can show the hole is real ("H1", "H2", ...)
    legacy: frozenset[str] = frozenset()
    quorums: Quorums = field(init=False)

    def __post_init__(self) -> None:
        assert self.f >= 0 and self.k >= 0
        assert self.n <= 31, "bitmaps are 32-bit"
        assert self.gc_lag_ordinals >= 1, "slot ARU is the previous PP of ARU+1"
        assert self.sig_batch_count_max <= 256
        assert self.legacy <= LEGACY_ITEMS, self.legacy - LEGACY_ITEMS
        assert self.catchup_reply_bytes_max > 0 and self.catchup_peer_bytes_per_s > 0
        assert self.fetch_delay_us > 0 and self.fetch_retry_us > 0
        assert self.fetch_reply_bytes_max > 0 and self.fetch_peer_bytes_per_s > 0
        object.__setattr__(self, "quorums", Quorums(self.f, self.k, self.quorum_weaken_by))

    @property
    def n(self) -> int:
        return 3 * self.f + 2 * self.k + 1

    def with_(self, **changes: Any) -> Params:
        return replace(self, **changes)

    @classmethod
    def from_config(cls, cfg: Any) -> Params:
        """Adapt a ``prime.config.Config`` (duck-typed: groups of attributes)."""
        s, c, p, u, sl = cfg.system, cfg.cryptography, cfg.periodic, cfg.catchup, cfg.suspect_leader
        return cls(
            f=s.f,
            k=s.k,
            num_clients=s.num_clients,
            max_po_in_flight=s.max_po_in_flight,
            po_request_bytes_max=s.po_request_bytes_max,
            gc_lag_ordinals=s.gc_lag_ordinals,
            use_erasure_codes=s.use_erasure_codes,
            sig_debounce_us=c.sig_debounce_us,
            sig_batch_count_max=c.sig_batch_count_max,
            pre_prepare_period_us=p.pre_prepare_period_us,
            po_tick_us=p.po_tick_us,
            po_job_spacing_ticks=p.po_job_spacing_ticks,
            retrans_period_us=p.retrans_period_us,
            ord_cert_period_us=p.ord_cert_period_us,
            k_lat=s.k_lat,
            min_rtt_us=sl.min_rtt_us,
            tat_measure_period_us=sl.tat_measure_period_us,
            tat_measure_resend_us=sl.tat_measure_resend_us,
            ping_period_us=sl.ping_period_us,
            tat_ub_period_us=sl.tat_ub_period_us,
            new_leader_resend_us=sl.new_leader_resend_us,
            ping_history=sl.ping_history,
            view_change_timeout_us=sl.view_change_timeout_us,
            catchup_period_us=u.catchup_period_us,
            catchup_epsilon_us=u.catchup_epsilon_us,
            jump_gap_ordinals_min=u.jump_gap_ordinals_min,
            catchup_history_ordinals=u.catchup_history_ordinals,
            incarnation_slack_s=u.incarnation_slack_s,
            catchup_reply_bytes_max=u.catchup_reply_bytes_max,
            catchup_peer_bytes_per_s=u.catchup_peer_bytes_per_s,
            fetch_delay_us=u.fetch_delay_us,
            fetch_retry_us=u.fetch_retry_us,
            fetch_keep_requests_max=u.fetch_keep_requests_count,
            fetch_reply_bytes_max=u.fetch_reply_bytes_max,
            fetch_peer_bytes_per_s=u.fetch_peer_bytes_per_s,
        )
