"""conf/def.toml + conf/address.config -> one frozen ``Config``.

``SCHEMA`` below is the single table of tunables: group, key, type, default,
allowed range and comment. Defaults (``default_config``), validation
(``load_config``) and the ``--check-config`` listing (``format_config``) are all
derived from it, and the per-group dataclasses are checked against it at import,
so the file, the code and the help text cannot drift apart. The groups follow
the original ``src/def.h`` (docs/protocol.md section 5).

An operator mistake stops start-up with one ``ConfigError`` line naming the
file, the key and what is allowed (docs/design.md section 7, "Errors and bad input"). After the
per-key checks, ``validate`` checks the relationships between keys listed in
``RULES``, each with its reason.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import itertools
import json
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from prime.errors import ConfigError
from prime.msgs import PAYLOAD_BYTES_MAX, SERVERS_MAX
from prime.wire import ENVELOPE_BYTES_MAX, MT_NUM_MAX

Value = bool | int | float | str


@dataclass(frozen=True, slots=True)
class Key:
    """One tunable. ``low``/``high`` bound a number (inclusive) or, for a string
    without ``choices``, its length. ``default`` None means derived (only
    ``system.n``, which is 3f+2k+1 unless the file sets it as a cross-check)."""

    group: str
    name: str
    kind: type
    default: Value | None
    low: int | float | None
    high: int | float | None
    comment: str
    choices: tuple[str, ...] = ()


_PORT_MAX: Final = 65535
PORTS_PER_REPLICA: Final = 10  # a replica uses port .. port+9 (conf/address.config) when N <= 10


def ports_per_replica(n: int) -> int:
    """Ports replica i uses from its first one: one per sender (``prime.net.sockets``),
    at least ten; ``base_port + ports_per_replica(N) * i`` when address.config gives none."""
    return max(PORTS_PER_REPLICA, n)

RING_FRAME_HEADER_BYTES: Final = 64  # room a ring slot keeps beside one whole message
UPDATE_OVERHEAD_BYTES: Final = 256  # an update's ids, stamps, Ed25519 signature, framing
PEER_QUEUE_FRAMES_MIN: Final = 16  # RCVHWM floor: frames a peer connection's queue holds at least
# A pre-prepare carries N signed PO-ARU rows of N (incarnation, seq) pairs: at most
# 18 msgpack bytes per pair plus ~200 bytes of row envelope (64-byte signature,
# header, framing) -- docs/protocol.md section 1.1 notes the same limit on N in the C layout.
_PAIR_BYTES_MAX: Final = 18
_ROW_OVERHEAD_BYTES: Final = 200
_SECOND_US: Final = 1_000_000
_HOUR_US: Final = 3600 * _SECOND_US

# The schema. One row per key, in file order; the comment is what --check-config
# prints beside the value (conf/def.toml has the longer story and the def.h origin).
# fmt: off
SCHEMA: Final[tuple[Key, ...]] = (
    # group, name, type, default, low, high, comment
    Key("system", "f", int, 1, 0, 10, "Byzantine replicas tolerated (def.h NUM_F)"),
    Key("system", "k", int, 0, 0, 15, "benign-unavailable replicas tolerated (def.h NUM_K)"),
    Key("system", "n", int, None, 1, SERVERS_MAX,
        "replicas N = 3f+2k+1; derived, or a cross-check if set (def.h NUM_SERVERS)"),
    Key("system", "num_clients", int, 150, 0, 100_000,
        "client ids are N+1..N+num_clients (def.h NUM_CLIENTS)"),
    Key("system", "update_size_bytes", int, 300, 1, PAYLOAD_BYTES_MAX,
        "payload bytes per benchmark update (def.h UPDATE_SIZE)"),
    Key("system", "benchmark_end_run_updates", int, 0, 0, 2**63 - 1,
        "exit after this many executed updates; 0 = never (def.h BENCHMARK_END_RUN)"),
    Key("system", "print_progress_ordinals", int, 100, 0, 2**31 - 1,
        "progress line every this many ordinals; 0 = never (def.h PRINT_PROGRESS)"),
    Key("system", "use_erasure_codes", bool, True, None, None,
        "reconciliation sends zfec parts, not whole requests (def.h USE_ERASURE_CODES)"),
    Key("system", "k_lat", float, 2.5, 1.0, 100.0,
        "K_lat in TAT_acceptable = K_lat*rtt + pre_prepare_period (def.h VARIABILITY_KLAT)"),
    Key("system", "gc_lag_ordinals", int, 1, 1, 1_000_000,
        "ordinal slots kept behind the ARU (def.h GC_LAG)"),
    Key("system", "max_po_in_flight", int, 20, 1, 100_000,
        "own un-executed PO-Requests before reading no more updates (def.h MAX_PO_IN_FLIGHT)"),
    Key("system", "po_request_bytes_max", int, 9000, 512, ENVELOPE_BYTES_MAX,
        "largest PO-Request on the wire (def.h PRIME_MAX_PACKET_SIZE)"),
    Key("system", "message_bytes_max", int, 65536, 1024, ENVELOPE_BYTES_MAX,
        "largest signed message sent or accepted (port)"),

    Key("networking", "base_port", int, 7100, 1024, _PORT_MAX - SERVERS_MAX * (SERVERS_MAX + 1),
        "replica i uses base_port+10*i .. +9 (N > 10: base_port+N*i .. +N-1) unless address.config gives a port"),
    Key("networking", "client_ipc_dir", str, "/tmp/prime", 1, 80,
        "folder of the daemon<->application unix sockets (absolute; short for sun_path)"),
    Key("networking", "workers", int, 1, 0, 64,
        "signature-verifier processes; 0 = verify inline in the net process"),
    Key("networking", "zmq_sndhwm_messages", int, 10_000, 1, 10_000_000,
        "ZeroMQ send high-water mark per socket"),
    Key("networking", "zmq_rcvhwm_messages", int, 10_000, 1, 10_000_000,
        "ZeroMQ receive high-water mark per socket"),
    Key("networking", "zmq_linger_ms", int, 0, 0, 60_000,
        "how long a closing ZeroMQ socket keeps unsent messages"),
    Key("networking", "ring_slot_count", int, 1024, 2, 1 << 20,
        "records a shared-memory ring between a replica's processes holds at most"),
    Key("networking", "ring_slot_size_bytes", int, 66_560, 1024 + RING_FRAME_HEADER_BYTES,
        ENVELOPE_BYTES_MAX + RING_FRAME_HEADER_BYTES,
        "largest ring record: one message plus the frame header"),
    Key("networking", "ring_capacity_bytes", int, 8 << 20, 4096, 1 << 30,
        "data bytes of each shared-memory ring (records are variable-sized)"),
    Key("networking", "app_sndhwm_messages", int, 20_000, 16, 10_000_000,
        "deliveries queued towards a slow application before it must transfer state"),
    Key("networking", "engine_batch_count_max", int, 64, 1, 65_536,
        "ring items the engine steps per round before it ticks"),
    Key("networking", "link_delay_ms", float, 0.0, 0.0, 10_000.0,
        "emulated one-way delay added to every outgoing message"),
    Key("networking", "link_jitter_ms", float, 0.0, 0.0, 10_000.0,
        "emulated uniform jitter, plus or minus, around link_delay_ms"),
    Key("networking", "link_loss", float, 0.0, 0.0, 1.0,
        "emulated fraction of outgoing messages dropped"),
    Key("networking", "link_bandwidth_bps", int, 0, 0, 10**12,
        "emulated bandwidth of every outgoing link; 0 = unlimited"),
    Key("networking", "link_security", str, "curve", None, None,
        "replica links: CurveZMQ authenticated encryption, or none (trusted LAN only)",
        choices=("curve", "none")),
    Key("networking", "peer_connection_count_max", int, 2, 1, 16,
        "connections one peer may hold on its socket (live or not read empty); more wait at the handshake"),
    Key("networking", "peer_queue_bytes", int, 8 << 20, 1 << 16, 1 << 30,
        "bytes ZeroMQ may hold for one peer connection: its RCVHWM = this / (2 * message_bytes_max)"),
    Key("networking", "tcp_keepalive_idle_s", int, 4, 1, 7200,
        "TCP keepalive on peer links: idle time before the first probe (a dead peer's link is reaped)"),
    Key("networking", "tcp_keepalive_interval_s", int, 1, 1, 600,
        "TCP keepalive: time between probes"),
    Key("networking", "tcp_keepalive_probe_count", int, 4, 1, 100,
        "TCP keepalive: unanswered probes before the link is closed"),
    Key("networking", "handshake_timeout_ms", int, 10_000, 100, 600_000,
        "a peer connection not through its (CURVE) handshake after this long is closed"),
    Key("networking", "libzmq_unpatched_ok", bool, False, None, None,
        "run on a libzmq without native/libzmq's patch, which a peer can abort (trusted networks only)"),

    Key("cryptography", "clients_sign_updates", bool, True, None, None,
        "verify client signatures on updates; false is unsafe (def.h CLIENTS_SIGN_UPDATES)"),
    Key("cryptography", "sig_debounce_us", int, 1000, 0, _SECOND_US,
        "Merkle batch signing debounce (def.h SIG_SEC/SIG_USEC)"),
    Key("cryptography", "sig_debounce_view_change_us", int, 250, 0, _SECOND_US,
        "signing debounce during a view change (def.h SIG_USEC / 4)"),
    Key("cryptography", "sig_batch_count_max", int, 128, 1, MT_NUM_MAX,
        "a batch this full is signed at once (def.h SIG_THRESHOLD)"),
    Key("cryptography", "threshold_modulus_bits", int, 2048, 512, 8192,
        "Shoup threshold RSA modulus size, even (C: 1024)"),
    Key("cryptography", "threshold_public_exponent", int, 65537, 3, 2**31 - 1,
        "threshold RSA public exponent, a prime > N (C: 17)"),

    Key("throttling", "throttle_outgoing", bool, False, None, None,
        "token-bucket throttling per traffic class (def.h THROTTLE_OUTGOING_MESSAGES)"),
    Key("throttling", "bandwidth_timely_bps", int, 100_000_000, 1, 10**12,
        "timely class rate (def.h MAX_OUTGOING_BANDWIDTH_TIMELY)"),
    Key("throttling", "bandwidth_bounded_bps", int, 100_000_000, 1, 10**12,
        "bounded class rate (def.h MAX_OUTGOING_BANDWIDTH_BOUNDED)"),
    Key("throttling", "bandwidth_recon_bps", int, 10_000_000, 1, 10**12,
        "reconciliation class rate (def.h MAX_OUTGOING_BANDWIDTH_RECON)"),
    Key("throttling", "tokens_max_bits", int, 900_000, 1, 10**12,
        "bucket depth per class (def.h MAX_TOKENS)"),
    Key("throttling", "throttle_tick_us", int, 1000, 1, _SECOND_US,
        "bucket refill and queue drain tick (def.h THROTTLE_SEND_SEC/USEC)"),
    Key("throttling", "randomize_sending", bool, False, None, None,
        "random destination order for queued broadcasts (def.h RANDOMIZE_SENDING)"),
    Key("throttling", "inbound_peer_msgs_per_s", int, 5000, 1, 10**9,
        "frames read per second from one peer, all classes (port: per-sender inbound bound)"),
    Key("throttling", "inbound_peer_bps", int, 50_000_000, 8, 10**12,
        "bits read per second from one peer (port: per-sender inbound bound)"),
    Key("throttling", "inbound_peer_burst_ms", int, 200, 1, 60_000,
        "burst a peer may send above its inbound rates, as time at those rates (port)"),
    Key("throttling", "inbound_peer_vs_others_ratio", float, 2.0, 0.0, 1000.0,
        "a peer's frame rate is at most this times the (f+1)-th busiest peer's; 0 = off (port)"),
    Key("throttling", "inbound_peer_floor_msgs_per_s", int, 500, 1, 10**9,
        "the relative bound never goes below this many frames per second (port)"),
    Key("throttling", "inbound_class_vs_others_ratio", float, 2.0, 0.0, 1000.0,
        "a peer's PO-Requests, other bounded frames and recon frames are each at most this "
        "times the (f+1)-th busiest peer's of that kind; 0 = off (port)"),
    Key("throttling", "inbound_po_request_floor_msgs_per_s", int, 100, 1, 10**9,
        "the PO-Request relative bound never goes below this many per second (port)"),
    Key("throttling", "inbound_bounded_floor_msgs_per_s", int, 200, 1, 10**9,
        "the bounded-class relative bound never goes below this many frames per second (port)"),
    Key("throttling", "inbound_recon_floor_msgs_per_s", int, 100, 1, 10**9,
        "the recon-class relative bound never goes below this many frames per second (port)"),

    Key("periodic", "pre_prepare_period_us", int, 20_000, 100, 10 * _SECOND_US,
        "leader pre-prepare period, the +delta of TAT_acceptable (def.h PRE_PREPARE_SEC/USEC)"),
    Key("periodic", "po_tick_us", int, 2000, 100, _SECOND_US,
        "pre-ordering cycle tick (def.h PO_PERIODICALLY_SEC/USEC)"),
    Key("periodic", "po_job_spacing_ticks", int, 3, 1, 1000,
        "PO ticks between periodic PO-Acks/PO-ARUs/matrices (def.h PO_*_PERIOD)"),
    Key("periodic", "send_po_requests_periodically", bool, False, None, None,
        "PO-Requests on the PO cycle, else at once (def.h SEND_PO_REQUESTS_PERIODICALLY)"),
    Key("periodic", "send_po_acks_periodically", bool, True, None, None,
        "PO-Acks on the PO cycle, else at once (def.h SEND_PO_ACKS_PERIODICALLY)"),
    Key("periodic", "send_po_aru_periodically", bool, True, None, None,
        "PO-ARUs on the PO cycle, else at once (def.h SEND_PO_ARU_PERIODICALLY)"),
    Key("periodic", "send_proof_matrix_periodically", bool, True, None, None,
        "proof matrices on the PO cycle, else at once (def.h SEND_PROOF_MATRIX_PERIODICALLY)"),
    Key("periodic", "retrans_period_us", int, _SECOND_US, 1000, _HOUR_US,
        "retransmission period of every phase; the PO retransmission rests while quiescent (def.h RETRANS_PERIOD_SEC/USEC)"),
    Key("periodic", "ord_cert_period_us", int, 2 * _SECOND_US, 1000, _HOUR_US,
        "ORD_CERT broadcast period, idle or not (def.h ORD_CERT_PERIODICALLY_SEC/USEC)"),

    Key("suspect_leader", "ping_period_us", int, 500_000, 1000, _HOUR_US,
        "RTT ping period; rests while quiescent and primed (def.h SUSPECT_PING_SEC/USEC)"),
    Key("suspect_leader", "tat_ub_period_us", int, 500_000, 1000, _HOUR_US,
        "TAT_UB broadcast period; rests with the pings (def.h SUSPECT_TAT_UB_SEC/USEC)"),
    Key("suspect_leader", "tat_measure_period_us", int, 20_000, 1000, _HOUR_US,
        "turnaround-time sampling period (def.h SUSPECT_TAT_MEASURE_SEC/USEC)"),
    Key("suspect_leader", "tat_measure_resend_us", int, 500_000, 1000, _HOUR_US,
        "TAT_MEASURE resend period while unchanged, none while quiescent (def.h SUSPECT_SEND_TATM_SEC/USEC)"),
    Key("suspect_leader", "min_rtt_us", int, 8000, 0, 10 * _SECOND_US,
        "floor of the rtt in TAT_acceptable (def.h MIN_RTT)"),
    Key("suspect_leader", "view_change_period_us", int, 500_000, 1000, _HOUR_US,
        "ping and TAT_UB period during a view change (def.h SUSPECT_VC_SEC/USEC)"),
    Key("suspect_leader", "new_leader_resend_us", int, _SECOND_US, 1000, _HOUR_US,
        "NEW_LEADER(_PROOF) resend period (def.h SUSPECT_NEW_LEADER_SEC/USEC)"),
    Key("suspect_leader", "ping_history", int, 10, 1, 1000,
        "pings remembered per peer to match pongs (def.h PING_HIST)"),
    Key("suspect_leader", "view_change_timeout_us", int, 5 * _SECOND_US, 100_000, _HOUR_US,
        "a view change not complete this long after pre-install moves on (ours; doubles per miss)"),

    Key("catchup", "catchup_period_us", int, _SECOND_US, 1000, _HOUR_US,
        "minimum spacing of catchup attempts (def.h PR_CATCHUP_PERIOD_SEC/USEC)"),
    Key("catchup", "catchup_epsilon_us", int, 20_000, 0, _HOUR_US,
        "grace delay before a catchup attempt (def.h PR_CATCHUP_EPSILON_SEC/USEC)"),
    Key("catchup", "catchup_history_ordinals", int, 64, 0, 10_000,
        "gap filled ordinal by ordinal (certificates on request); beyond it, jump (def.h CATCHUP_HISTORY)"),
    Key("catchup", "jump_gap_ordinals_min", int, 4, 1, 1_000_000,
        "jump only when at least this many ordinals behind (hardening H13)"),
    Key("catchup", "incarnation_slack_s", int, 60, 1, 86_400,
        "an incarnation may be this far ahead of the local clock (hardening H8)"),
    Key("catchup", "catchup_reply_bytes_max", int, 65_536, 1024, 1 << 20,
        "bytes of certificates in one answer to a CATCHUP_REQUEST (at least one is sent)"),
    Key("catchup", "catchup_peer_bytes_per_s", int, 262_144, 1024, 1 << 30,
        "bytes per second of answers to one peer's CATCHUP_REQUESTs (virtual-time token bucket)"),
    Key("catchup", "fetch_delay_us", int, 100_000, 1000, _HOUR_US,
        "blocked this long on a missing request or its acks, ask a peer (PO_FETCH; ours)"),
    Key("catchup", "fetch_retry_us", int, 100_000, 1000, _HOUR_US,
        "while still blocked, ask the next peer this often (ours)"),
    Key("catchup", "fetch_keep_requests_count", int, 4096, 16, 1 << 20,
        "executed requests kept with their certifying acks to answer PO_FETCH (ours)"),
    Key("catchup", "fetch_reply_bytes_max", int, 131_072, 1024, 1 << 22,
        "bytes of one PO_FETCH answer (ours)"),
    Key("catchup", "fetch_peer_bytes_per_s", int, 524_288, 1024, 1 << 30,
        "bytes per second of PO_FETCH answers one peer may draw (ours)"),

    Key("attacks", "delay_attack", bool, False, None, None,
        "the leader mounts the delay attack (def.h DELAY_ATTACK, docs/protocol.md section 6.1)"),
    Key("attacks", "delay_target_us", int, 20_000, 0, 10 * _SECOND_US,
        "matrix age a delaying leader waits for (def.h DELAY_TARGET)"),
    Key("attacks", "recon_attack", bool, False, None, None,
        "replicas 1..f mount the reconciliation attack (def.h RECON_ATTACK, docs/protocol.md section 6.2)"),

    Key("logging", "stats_interval_ms", int, 1000, 0, 3_600_000,
        "one line of counters per process this often (idle: within two intervals); 0 = never"),
    Key("logging", "level", str, "info", None, None, "log level",
        choices=("debug", "info", "warning", "error")),
)
# fmt: on


# ---------------------------------------------------------------------------
# The groups. Field names and types must equal SCHEMA's (checked at import);
# they have no defaults of their own, so every value comes through the schema.


@dataclass(frozen=True, slots=True)
class SystemConfig:
    f: int
    k: int
    n: int
    num_clients: int
    update_size_bytes: int
    benchmark_end_run_updates: int
    print_progress_ordinals: int
    use_erasure_codes: bool
    k_lat: float
    gc_lag_ordinals: int
    max_po_in_flight: int
    po_request_bytes_max: int
    message_bytes_max: int


@dataclass(frozen=True, slots=True)
class NetworkingConfig:
    base_port: int
    client_ipc_dir: str
    workers: int
    zmq_sndhwm_messages: int
    zmq_rcvhwm_messages: int
    zmq_linger_ms: int
    ring_slot_count: int
    ring_slot_size_bytes: int
    ring_capacity_bytes: int
    app_sndhwm_messages: int
    engine_batch_count_max: int
    link_delay_ms: float
    link_jitter_ms: float
    link_loss: float
    link_bandwidth_bps: int
    link_security: str
    peer_connection_count_max: int
    peer_queue_bytes: int
    tcp_keepalive_idle_s: int
    tcp_keepalive_interval_s: int
    tcp_keepalive_probe_count: int
    handshake_timeout_ms: int
    libzmq_unpatched_ok: bool


@dataclass(frozen=True, slots=True)
class CryptographyConfig:
    clients_sign_updates: bool
    sig_debounce_us: int
    sig_debounce_view_change_us: int
    sig_batch_count_max: int
    threshold_modulus_bits: int
    threshold_public_exponent: int


@dataclass(frozen=True, slots=True)
class ThrottlingConfig:
    throttle_outgoing: bool
    bandwidth_timely_bps: int
    bandwidth_bounded_bps: int
    bandwidth_recon_bps: int
    tokens_max_bits: int
    throttle_tick_us: int
    randomize_sending: bool
    inbound_peer_msgs_per_s: int
    inbound_peer_bps: int
    inbound_peer_burst_ms: int
    inbound_peer_vs_others_ratio: float
    inbound_peer_floor_msgs_per_s: int
    inbound_class_vs_others_ratio: float
    inbound_po_request_floor_msgs_per_s: int
    inbound_bounded_floor_msgs_per_s: int
    inbound_recon_floor_msgs_per_s: int


@dataclass(frozen=True, slots=True)
class PeriodicConfig:
    pre_prepare_period_us: int
    po_tick_us: int
    po_job_spacing_ticks: int
    send_po_requests_periodically: bool
    send_po_acks_periodically: bool
    send_po_aru_periodically: bool
    send_proof_matrix_periodically: bool
    retrans_period_us: int
    ord_cert_period_us: int


@dataclass(frozen=True, slots=True)
class SuspectLeaderConfig:
    ping_period_us: int
    tat_ub_period_us: int
    tat_measure_period_us: int
    tat_measure_resend_us: int
    min_rtt_us: int
    view_change_period_us: int
    new_leader_resend_us: int
    ping_history: int
    view_change_timeout_us: int


@dataclass(frozen=True, slots=True)
class CatchupConfig:
    catchup_period_us: int
    catchup_epsilon_us: int
    catchup_history_ordinals: int
    jump_gap_ordinals_min: int
    incarnation_slack_s: int
    catchup_reply_bytes_max: int
    catchup_peer_bytes_per_s: int
    fetch_delay_us: int
    fetch_retry_us: int
    fetch_keep_requests_count: int
    fetch_reply_bytes_max: int
    fetch_peer_bytes_per_s: int


@dataclass(frozen=True, slots=True)
class AttacksConfig:
    delay_attack: bool
    delay_target_us: int
    recon_attack: bool


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    stats_interval_ms: int
    level: str


@dataclass(frozen=True, slots=True)
class LinkConfig:
    """One ``[[links]]`` entry: emulation of the link between replicas ``a`` and
    ``b`` (both directions), replacing the ``link_*`` keys of ``[networking]``."""

    a: int
    b: int
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0
    bandwidth_bps: int = 0


# name -> (type, low, high) of the keys a [[links]] entry may set
_LINK_FIELDS: Final[dict[str, tuple[type, float, float]]] = {
    "a": (int, 1, SERVERS_MAX),
    "b": (int, 1, SERVERS_MAX),
    "delay_ms": (float, 0.0, 10_000.0),
    "jitter_ms": (float, 0.0, 10_000.0),
    "loss": (float, 0.0, 1.0),
    "bandwidth_bps": (int, 0, 10**12),
}


GROUPS: Final[dict[str, type]] = {
    "system": SystemConfig,
    "networking": NetworkingConfig,
    "cryptography": CryptographyConfig,
    "throttling": ThrottlingConfig,
    "periodic": PeriodicConfig,
    "suspect_leader": SuspectLeaderConfig,
    "catchup": CatchupConfig,
    "attacks": AttacksConfig,
    "logging": LoggingConfig,
}

SOURCE_DEFAULTS: Final = "<defaults>"


@dataclass(frozen=True, slots=True)
class Config:
    """The whole effective configuration. ``addresses`` maps every server id
    1..N to (ip, first port); ``def_path``/``address_path`` name the files it
    came from (``<defaults>`` for ``default_config``) so later checks can name them."""

    system: SystemConfig
    networking: NetworkingConfig
    cryptography: CryptographyConfig
    throttling: ThrottlingConfig
    periodic: PeriodicConfig
    suspect_leader: SuspectLeaderConfig
    catchup: CatchupConfig
    attacks: AttacksConfig
    logging: LoggingConfig
    addresses: dict[int, tuple[str, int]]
    def_path: str = SOURCE_DEFAULTS
    address_path: str = SOURCE_DEFAULTS
    links: tuple[LinkConfig, ...] = ()

    @property
    def f(self) -> int:
        return self.system.f

    @property
    def k(self) -> int:
        return self.system.k

    @property
    def n(self) -> int:
        """N = 3f+2k+1 replicas (docs/protocol.md section 1.1)."""
        return 3 * self.system.f + 2 * self.system.k + 1

    @property
    def quorum(self) -> int:
        """2f+k+1: any two such sets share a correct replica (docs/protocol.md section 1.2)."""
        return 2 * self.system.f + self.system.k + 1

    @property
    def client_ids(self) -> range:
        """Client ids, N+1 .. N+num_clients (they never collide with server ids)."""
        return range(self.n + 1, self.n + self.system.num_clients + 1)

    def validate(self) -> None:
        """Check the relationships between keys (``RULES``) and the addresses."""
        validate(self)


def _schema_matches_dataclasses() -> bool:
    names = [key.name for key in SCHEMA]
    assert len(names) == len(set(names)), "key names must be unique across groups"
    assert [key.group for key in SCHEMA] == sorted(
        (key.group for key in SCHEMA), key=list(GROUPS).index
    ), "SCHEMA rows are grouped in GROUPS order"
    for group, cls in GROUPS.items():
        declared = [(field.name, field.type) for field in dataclasses.fields(cls)]
        expected = [(key.name, key.kind.__name__) for key in SCHEMA if key.group == group]
        assert declared == expected, f"{cls.__name__} differs from SCHEMA[{group}]"
    for key in SCHEMA:
        assert key.kind in (bool, int, float, str), key
        assert key.default is None or _allowed(key, key.default), key
    return True


# ---------------------------------------------------------------------------
# Per-key checks.


def _describe_type(value: object) -> str:
    """TOML's name for a value's type, for error lines."""
    names = {bool: "a boolean", int: "an integer", float: "a float", str: "a string"}
    for kind, name in names.items():
        if type(value) is kind:
            return name
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return f"a {type(value).__name__}"


def describe_allowed(key: Key) -> str:
    """What the key accepts, e.g. ``an integer in 0..10``."""
    if key.kind is bool:
        return "true or false"
    if key.kind is str:
        if key.choices:
            return "one of " + ", ".join(json.dumps(choice) for choice in key.choices)
        return f"a string of {key.low}..{key.high} characters"
    kind = "an integer" if key.kind is int else "a number"
    return f"{kind} in {key.low}..{key.high}"


def _coerce(key: Key, value: object) -> Value | None:
    """The value as the key's type, or None if its type is wrong. TOML booleans
    are not integers here, and an integer is accepted where a float is expected."""
    if key.kind is float and type(value) is int:
        return float(value)
    if type(value) is key.kind:
        assert isinstance(value, bool | int | float | str)
        return value
    return None


def _allowed(key: Key, value: Value) -> bool:
    if key.kind is bool:
        return True
    if key.kind is str:
        assert isinstance(value, str)
        if key.choices:
            return value in key.choices
        assert key.low is not None and key.high is not None
        return key.low <= len(value) <= key.high
    assert isinstance(value, int | float) and key.low is not None and key.high is not None
    return key.low <= value <= key.high


def _render(value: object) -> str:
    """A value as TOML would spell it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _error(source: str, where: str, problem: str) -> ConfigError:
    return ConfigError(_one_line(f"{source}: {where}: {problem}"))


_KEYS: Final[dict[tuple[str, str], Key]] = {(key.group, key.name): key for key in SCHEMA}
_KEY_BY_NAME: Final[dict[str, Key]] = {key.name: key for key in SCHEMA}


def _check_value(source: str, key: Key, value: object) -> Value:
    where = f"[{key.group}] {key.name} = {_render(value)}"
    coerced = _coerce(key, value)
    if coerced is None:
        raise _error(
            source, where, f"wrong type ({_describe_type(value)}); allowed: {describe_allowed(key)}"
        )
    if not _allowed(key, coerced):
        raise _error(source, where, f"out of range; allowed: {describe_allowed(key)}")
    return coerced


def _unknown_key(source: str, group: str, name: str) -> ConfigError:
    group_names = [key.name for key in SCHEMA if key.group == group]
    close = difflib.get_close_matches(name, group_names, n=1)
    elsewhere = _KEY_BY_NAME.get(name)
    if elsewhere is not None:
        hint = f"it belongs in [{elsewhere.group}]"
    elif close:
        hint = f"did you mean {close[0]}?"
    else:
        hint = "allowed: " + ", ".join(group_names)
    return _error(source, f"[{group}] {name}", f"unknown key; {hint}")


def _check_tables(source: str, document: Mapping[str, object]) -> dict[tuple[str, str], Value]:
    """Every (group, key) of a parsed def.toml, type- and range-checked."""
    values: dict[tuple[str, str], Value] = {}
    for group, table in document.items():
        if group == "links":
            continue  # [[links]]: checked by _parse_links once N is known
        if group not in GROUPS:
            if not isinstance(table, dict):
                known = _KEY_BY_NAME.get(group)
                hint = f"it belongs in [{known.group}]" if known else "put keys under a [group]"
                raise _error(source, group, f"key outside any group; {hint}")
            close = difflib.get_close_matches(group, list(GROUPS), n=1)
            hint = f"did you mean [{close[0]}]?" if close else ""
            allowed = ", ".join(f"[{name}]" for name in GROUPS)
            raise _error(source, f"[{group}]", f"unknown group; {hint} allowed: {allowed}")
        if not isinstance(table, dict):
            raise _error(source, f"[{group}]", f"must be a table, not {_describe_type(table)}")
        for name, value in table.items():
            key = _KEYS.get((group, name))
            if key is None:
                raise _unknown_key(source, group, name)
            values[(group, name)] = _check_value(source, key, value)
    return values


def _parse_links(source: str, raw: object, n: int) -> tuple[LinkConfig, ...]:
    """``[[links]]`` entries: known keys of the right type and range, ``a`` and ``b``
    distinct replicas 1..N, each pair once, jitter <= delay."""
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(entry, dict) for entry in raw):
        raise _error(source, "links", "must be an array of tables: [[links]] a = 1 b = 2 delay_ms = 10.0")
    out: list[LinkConfig] = []
    seen: dict[frozenset[int], int] = {}
    for number, entry in enumerate(raw, start=1):
        here = f"[[links]] #{number}"
        values: dict[str, int | float] = {}
        for name, value in entry.items():
            spec = _LINK_FIELDS.get(name)
            if spec is None:
                allowed = ", ".join(_LINK_FIELDS)
                raise _error(source, f"{here} {name}", f"unknown key; allowed: {allowed}")
            kind, low, high = spec
            if kind is float and type(value) is int:
                value = float(value)
            if type(value) is not kind:
                raise _error(
                    source, f"{here} {name} = {_render(value)}",
                    f"wrong type ({_describe_type(value)}); allowed: "
                    f"{'an integer' if kind is int else 'a number'} in {low}..{high}",
                )
            if not low <= value <= high:
                raise _error(source, f"{here} {name} = {_render(value)}", f"out of range; allowed: {low}..{high}")
            values[name] = value
        for name in ("a", "b"):
            if name not in values:
                raise _error(source, f"{here} {name}", "missing; a link names its two replicas a and b")
            if values[name] > n:
                raise _error(source, f"{here} {name} = {values[name]}", f"no such replica; N = {n}")
        if values["a"] == values["b"]:
            raise _error(source, f"{here} b = {values['b']}", "a link joins two different replicas")
        if values.get("jitter_ms", 0.0) > values.get("delay_ms", 0.0):
            raise _error(
                source, f"{here} jitter_ms = {_render(values['jitter_ms'])}",
                "must be <= delay_ms (the emulated delay cannot be negative)",
            )
        pair = frozenset((int(values["a"]), int(values["b"])))
        if pair in seen:
            raise _error(source, f"{here} a, b", f"the pair is already set by [[links]] #{seen[pair]}")
        seen[pair] = number
        out.append(LinkConfig(**values))  # type: ignore[arg-type]
    return tuple(out)


def _derive_n(source: str, values: Mapping[tuple[str, str], Value]) -> int:
    """N = 3f+2k+1, checked against the 32-bit replica bitmaps and against an
    explicit ``n`` if the file has one."""
    f = values.get(("system", "f"), _KEYS[("system", "f")].default)
    k = values.get(("system", "k"), _KEYS[("system", "k")].default)
    assert isinstance(f, int) and isinstance(k, int)
    n = 3 * f + 2 * k + 1
    if n > SERVERS_MAX:
        raise _error(
            source,
            f"[system] f = {f}, k = {k}",
            f"N = 3f+2k+1 = {n} replicas; allowed: N <= {SERVERS_MAX} "
            "(replica bitmaps are 32-bit, docs/protocol.md section 1.1)",
        )
    given = values.get(("system", "n"))
    if given is not None and given != n:
        raise _error(
            source, f"[system] n = {given}", f"must equal 3f+2k+1 = {n} (f = {f}, k = {k})"
        )
    return n


def _build(source: str, values: Mapping[tuple[str, str], Value]) -> Config:
    """Groups from checked values and schema defaults; addresses left empty."""
    n = _derive_n(source, values)
    groups: dict[str, Any] = {}
    for group, cls in GROUPS.items():
        kwargs: dict[str, Value] = {}
        for key in SCHEMA:
            if key.group != group:
                continue
            value = n if key.default is None else values.get((group, key.name), key.default)
            kwargs[key.name] = value
        groups[group] = cls(**kwargs)
    return Config(addresses={}, **groups)


# ---------------------------------------------------------------------------
# Relationships between keys, checked by validate(). Each row: the keys it
# reads, the requirement, and the reason.


def _is_prime(number: int) -> bool:
    if number < 2:
        return False
    divisor = 2
    while divisor * divisor <= number:  # bounded: number < 2**31, so < 46341 steps
        if number % divisor == 0:
            return False
        divisor += 1
    return True


def pre_prepare_bytes_estimate(n: int) -> int:
    """Upper estimate of a pre-prepare's size: N signed PO-ARU rows of N pairs."""
    return n * (n * _PAIR_BYTES_MAX + _ROW_OVERHEAD_BYTES)


@dataclass(frozen=True, slots=True)
class Rule:
    keys: tuple[str, ...]  # "group.name"
    holds: Callable[[Config], bool]
    requirement: str
    reason: str


# fmt: off
RULES: Final[tuple[Rule, ...]] = (
    Rule(("cryptography.sig_debounce_view_change_us", "cryptography.sig_debounce_us"),
         lambda c: c.cryptography.sig_debounce_view_change_us <= c.cryptography.sig_debounce_us,
         "sig_debounce_view_change_us must be <= sig_debounce_us",
         "a view change signs sooner than normal operation, never later (docs/protocol.md section 4.2)"),
    Rule(("cryptography.threshold_modulus_bits",),
         lambda c: c.cryptography.threshold_modulus_bits % 2 == 0,
         "threshold_modulus_bits must be even",
         "the modulus is the product of two safe primes of half its size"),
    Rule(("cryptography.threshold_public_exponent", "system.n"),
         lambda c: _is_prime(c.cryptography.threshold_public_exponent)
         and c.cryptography.threshold_public_exponent > c.n,
         "threshold_public_exponent must be a prime > N",
         "Shoup's combination needs gcd(4*(N!)^2, e) = 1 (docs/protocol.md section 4.3)"),
    Rule(("catchup.catchup_epsilon_us", "catchup.catchup_period_us"),
         lambda c: c.catchup.catchup_epsilon_us < c.catchup.catchup_period_us,
         "catchup_epsilon_us must be < catchup_period_us",
         "the grace delay of an attempt has to end before the next attempt is due"),
    Rule(("system.po_request_bytes_max", "system.message_bytes_max"),
         lambda c: c.system.po_request_bytes_max <= c.system.message_bytes_max,
         "po_request_bytes_max must be <= message_bytes_max",
         "a PO-Request is a message, and reconciliation forwards it whole"),
    Rule(("system.update_size_bytes", "system.po_request_bytes_max"),
         lambda c: c.system.update_size_bytes + UPDATE_OVERHEAD_BYTES
         <= c.system.po_request_bytes_max,
         f"update_size_bytes + {UPDATE_OVERHEAD_BYTES} must be <= po_request_bytes_max",
         "a PO-Request must hold at least one signed update"),
    Rule(("system.message_bytes_max", "system.n"),
         lambda c: pre_prepare_bytes_estimate(c.n) <= c.system.message_bytes_max,
         f"message_bytes_max must be >= N*(N*{_PAIR_BYTES_MAX} + {_ROW_OVERHEAD_BYTES})",
         "a pre-prepare carries N signed PO-ARU rows of N pairs (docs/protocol.md section 2.3.1)"),
    Rule(("networking.ring_slot_size_bytes", "system.message_bytes_max"),
         lambda c: c.networking.ring_slot_size_bytes
         >= c.system.message_bytes_max + RING_FRAME_HEADER_BYTES,
         f"ring_slot_size_bytes must be >= message_bytes_max + {RING_FRAME_HEADER_BYTES}",
         "a ring slot holds one whole message and its frame header"),
    Rule(("networking.ring_capacity_bytes", "networking.ring_slot_size_bytes"),
         lambda c: c.networking.ring_capacity_bytes >= 2 * c.networking.ring_slot_size_bytes + 16
         and c.networking.ring_capacity_bytes % 8 == 0,
         "ring_capacity_bytes must be a multiple of 8 and >= 2 * ring_slot_size_bytes + 16",
         "a ring must hold two of its largest records, 8-byte aligned"),
    Rule(("throttling.tokens_max_bits", "system.message_bytes_max"),
         lambda c: c.throttling.tokens_max_bits >= 8 * c.system.message_bytes_max,
         "tokens_max_bits must be >= 8 * message_bytes_max",
         "a bucket shallower than the largest message could never send it"),
    Rule(("networking.link_jitter_ms", "networking.link_delay_ms"),
         lambda c: c.networking.link_jitter_ms <= c.networking.link_delay_ms,
         "link_jitter_ms must be <= link_delay_ms",
         "the emulated delay, link_delay_ms plus or minus the jitter, cannot be negative"),
    Rule(("networking.peer_queue_bytes", "system.message_bytes_max"),
         lambda c: c.networking.peer_queue_bytes >= PEER_QUEUE_FRAMES_MIN * 2 * c.system.message_bytes_max,
         f"peer_queue_bytes must be >= {2 * PEER_QUEUE_FRAMES_MIN} * message_bytes_max",
         f"a peer connection's queue must hold {PEER_QUEUE_FRAMES_MIN} frames of the largest size read "
         "(2 x message_bytes_max), or a correct peer at full load would wait on it"),
    Rule(("networking.handshake_timeout_ms", "networking.tcp_keepalive_idle_s",
          "networking.tcp_keepalive_interval_s", "networking.tcp_keepalive_probe_count"),
         lambda c: c.networking.handshake_timeout_ms > 1000 * (
             c.networking.tcp_keepalive_idle_s
             + c.networking.tcp_keepalive_interval_s * c.networking.tcp_keepalive_probe_count),
         "handshake_timeout_ms must be > 1000 * (tcp_keepalive_idle_s + tcp_keepalive_interval_s"
         " * tcp_keepalive_probe_count)",
         "a peer's reconnection waits at the handshake while its dead link is reaped by TCP keepalive"),
    Rule(("networking.client_ipc_dir",),
         lambda c: c.networking.client_ipc_dir.startswith("/"),
         "client_ipc_dir must be an absolute path",
         "the daemon and its application may run from different folders"),
    Rule(("periodic.retrans_period_us", "periodic.po_tick_us", "periodic.po_job_spacing_ticks"),
         lambda c: c.periodic.retrans_period_us
         >= c.periodic.po_tick_us * c.periodic.po_job_spacing_ticks,
         "retrans_period_us must be >= po_tick_us * po_job_spacing_ticks",
         "retransmitting faster than the normal PO cycle only doubles the traffic"),
)
# fmt: on


def _value_of(cfg: Config, dotted: str) -> object:
    group, name = dotted.split(".")
    if dotted == "system.n":
        return cfg.n
    return getattr(getattr(cfg, group), name)


def _render_keys(cfg: Config, dotted_keys: tuple[str, ...]) -> str:
    parts: list[str] = []
    last_group = ""
    for dotted in dotted_keys:
        group, name = dotted.split(".")
        prefix = "" if group == last_group else f"[{group}] "
        parts.append(f"{prefix}{name} = {_render(_value_of(cfg, dotted))}")
        last_group = group
    return ", ".join(parts)


def validate(cfg: Config) -> None:
    """Raise ConfigError (naming the file and keys) unless every rule holds and
    every server 1..N has an address."""
    assert cfg.system.n == cfg.n, "system.n is always the derived N"
    for rule in RULES:
        if not rule.holds(cfg):
            raise _error(
                cfg.def_path, _render_keys(cfg, rule.keys), f"{rule.requirement} ({rule.reason})"
            )
    missing = [server for server in range(1, cfg.n + 1) if server not in cfg.addresses]
    if missing:
        raise _error(
            cfg.address_path,
            f"server {missing[0]}",
            f"missing; N = {cfg.n} needs a line for every server 1..{cfg.n}",
        )
    assert sorted(cfg.addresses) == list(range(1, cfg.n + 1))


# ---------------------------------------------------------------------------
# address.config: `server_id ip [port]` per line, `#` comments.


def parse_addresses(
    source: str, text: str, *, n: int, base_port: int
) -> dict[int, tuple[str, int]]:
    """Servers 1..n -> (ip, first port). Lines for ids above n are checked and
    ignored; ids, ips and ports must be well formed and ids unique."""
    seen: dict[int, int] = {}  # server id -> line number
    entries: dict[int, tuple[str, int, int]] = {}  # server id -> (ip, port, line)
    for line_number, raw_line in enumerate(text.splitlines(), start=1):
        tokens = raw_line.split("#", 1)[0].split()
        if not tokens:
            continue
        where = f"line {line_number}"
        if len(tokens) not in (2, 3):
            raise _error(
                source, where, f"malformed {raw_line.strip()!r}; allowed: `server_id ip [port]`"
            )
        server = _parse_int(source, where, "server id", tokens[0], 1, SERVERS_MAX)
        where = f"line {line_number}: server {server}"
        if server in seen:
            raise _error(source, where, f"listed twice (first on line {seen[server]})")
        seen[server] = line_number
        try:
            ip = str(ipaddress.ip_address(tokens[1]))
        except ValueError:
            raise _error(
                source, where, f"bad ip {tokens[1]!r}; allowed: an IPv4 or IPv6 address"
            ) from None
        span = ports_per_replica(n)
        port_max = _PORT_MAX - span + 1
        port = (
            _parse_int(source, where, "port", tokens[2], 1, port_max)
            if len(tokens) == 3
            else base_port + span * server
        )
        entries[server] = (ip, port, line_number)
    servers = {server: entry for server, entry in entries.items() if server <= n}
    _check_port_overlap(source, servers, ports_per_replica(n))
    return {server: (ip, port) for server, (ip, port, _) in sorted(servers.items())}


def _parse_int(source: str, where: str, what: str, token: str, low: int, high: int) -> int:
    if not token.isdigit() or not low <= int(token) <= high:
        raise _error(source, where, f"bad {what} {token!r}; allowed: an integer in {low}..{high}")
    return int(token)


def _check_port_overlap(source: str, servers: Mapping[int, tuple[str, int, int]], span: int) -> None:
    """Two servers on one ip must not share any of their ``span`` ports."""
    ordered = sorted(servers.items(), key=lambda item: (item[1][0], item[1][1]))
    for (first, (ip_a, port_a, _)), (second, (ip_b, port_b, line_b)) in itertools.pairwise(ordered):
        if ip_a == ip_b and port_b < port_a + span:
            raise _error(
                source,
                f"line {line_b}: server {second}",
                f"ports {port_b}..{port_b + span - 1} overlap server "
                f"{first}'s {port_a}..{port_a + span - 1} on {ip_a}",
            )


# ---------------------------------------------------------------------------
# Public API.


def _read_text(source: str, path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _error(source, "cannot read", "no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise _error(source, "cannot read", str(error)) from None


def load_config(
    def_path: str | Path = "conf/def.toml", address_path: str | Path | None = None
) -> Config:
    """Load and validate def.toml and the address file (by default the
    ``address.config`` beside def.toml)."""
    def_file = Path(def_path)
    address_file = (
        def_file.parent / "address.config" if address_path is None else Path(address_path)
    )
    def_source, address_source = str(def_path), str(address_file)
    try:
        document = tomllib.loads(_read_text(def_source, def_file))
    except tomllib.TOMLDecodeError as error:
        raise _error(def_source, "invalid TOML", str(error)) from None
    values = _check_tables(def_source, document)
    cfg = dataclasses.replace(
        _build(def_source, values), def_path=def_source, address_path=address_source
    )
    cfg = dataclasses.replace(cfg, links=_parse_links(def_source, document.get("links"), cfg.n))
    addresses = parse_addresses(
        address_source,
        _read_text(address_source, address_file),
        n=cfg.n,
        base_port=cfg.networking.base_port,
    )
    cfg = dataclasses.replace(cfg, addresses=addresses)
    cfg.validate()
    return cfg


def default_config(f: int = 1, k: int = 0, **overrides: Any) -> Config:
    """The schema defaults without files, for the simulator and tests: servers
    1..N on 127.0.0.1. ``overrides`` name keys bare (``max_po_in_flight=5``) or
    group-qualified (``**{"periodic.pre_prepare_period_us": 10_000}``) and are
    checked exactly like file values."""
    links = overrides.pop("links", None)
    values: dict[tuple[str, str], Value] = {
        ("system", "f"): _check_value(SOURCE_DEFAULTS, _KEYS[("system", "f")], f),
        ("system", "k"): _check_value(SOURCE_DEFAULTS, _KEYS[("system", "k")], k),
    }
    for spec, value in overrides.items():
        group, _, name = spec.rpartition(".")
        key = _KEYS.get((group, name)) if group else _KEY_BY_NAME.get(name)
        if key is None:
            if group and group not in GROUPS:
                raise _error(
                    SOURCE_DEFAULTS,
                    f"[{group}]",
                    "unknown group; allowed: " + ", ".join(f"[{name}]" for name in GROUPS),
                )
            raise _unknown_key(SOURCE_DEFAULTS, group or "?", name)
        if (key.group, key.name) in values:
            raise _error(SOURCE_DEFAULTS, f"[{key.group}] {key.name}", "given twice")
        values[(key.group, key.name)] = _check_value(SOURCE_DEFAULTS, key, value)
    cfg = _build(SOURCE_DEFAULTS, values)
    base_port = cfg.networking.base_port
    addresses = {
        server: ("127.0.0.1", base_port + ports_per_replica(cfg.n) * server)
        for server in range(1, cfg.n + 1)
    }
    cfg = dataclasses.replace(
        cfg, addresses=addresses, links=_parse_links(SOURCE_DEFAULTS, links, cfg.n)
    )
    cfg.validate()
    return cfg


def format_config(cfg: Config) -> str:
    """The effective configuration as TOML, grouped, one commented line per key
    (values that differ from the default say so), then the addresses."""
    sizes = (
        f"# N = 3f+2k+1 = {cfg.n} replicas, quorum 2f+k+1 = {cfg.quorum}, "
        f"client ids {cfg.client_ids.start}..{cfg.client_ids.stop - 1}"
    )
    lines = [
        "# Prime effective configuration",
        f"# from {cfg.def_path} and {cfg.address_path}",
        sizes,
    ]
    for group in GROUPS:
        lines += ["", f"[{group}]"]
        for key in (key for key in SCHEMA if key.group == group):
            value = _value_of(cfg, f"{group}.{key.name}")
            note = key.comment
            if key.default is not None and value != key.default:
                note += f" [default {_render(key.default)}]"
            lines.append(f"{key.name} = {_render(value)}".ljust(40) + f" # {note}")
    for link in cfg.links:
        lines += ["", "[[links]]"] + [
            f"{name} = {_render(getattr(link, name))}" for name in _LINK_FIELDS
        ]
    lines += ["", "# addresses: server ip ports"]
    for server, (ip, port) in sorted(cfg.addresses.items()):
        lines.append(f"#   {server} {ip} {port}..{port + ports_per_replica(cfg.n) - 1}")
    return "\n".join(lines) + "\n"


assert _schema_matches_dataclasses()
