"""An idle replica sleeps (issue 12 item 4): its jobs run only while they have work.

A 4-replica simulated cluster orders some updates, settles, and then stays idle for
10 virtual seconds. Until issue 12 the core re-armed its PO-Ack, PO-ARU and
proof-matrix jobs every 6 ms and its pre-prepare and TAT jobs every 20 ms whether or
not they had anything to do: about 5,100 timer wake-ups per replica in those 10 s.
Now each of those jobs sleeps once it has no work (``replica.Periodic``) and only the
genuinely periodic timers remain, every 500 ms or slower. The "EAGER" legacy switch
restores the old re-arming: it is the negative control here (the same measurement
fails the bound with it), and the replay tests show that sleeping changes nothing a
busy replica sends, nor when.
"""

from __future__ import annotations

from collections import Counter

import pytest

from prime import msgs
from prime.core.params import Params
from prime.sim.cluster import Node, SimCluster, SimConfig
from prime.wire import Envelope
from prime.sim.scenarios import random_scenario

US = 1_000_000
IDLE_S = 10
# Jobs that used to run every few milliseconds and have nothing to do in an idle cluster.
SLEEPING_JOBS = ("po_ack", "po_aru", "proof_matrix", "pre_prepare", "ord_retrans")


def wakeup_bound(p: Params, seconds: int) -> int:
    """The most timer wake-ups an idle replica may have in ``seconds``.

    Only these jobs still run with nothing to order, each at most once per period
    (+1 for the window's edges): ping and TAT_UB (RTT measurement, every 500 ms), the
    TAT_MEASURE resend (500 ms, non-leaders), the PO retransmission (1 s: its PO_ARU is
    the keep-alive over loss) and the ORD certificate broadcast (2 s). Each may queue
    one message, signed when its batch timer fires: one more wake-up each. The replies
    a replica owes its n-1 peers, RTT_PONG to each ping and RTT_MEASURE to each pong,
    are batched the same way: 2(n-1) per ping period. With the defaults at N=4 over
    10 s: 80 job firings + 80 + 126 batches = 286 (measured: 130 at the leader, 170 at
    the others; it was 5,090 and 5,110)."""
    w = seconds * US
    periods = (
        p.ping_period_us,
        p.tat_ub_period_us,
        p.tat_measure_resend_us,
        p.retrans_period_us,
        p.ord_cert_period_us,
    )
    jobs = sum(w // period + 1 for period in periods)
    replies = 2 * (p.n - 1) * (w // p.ping_period_us + 1)
    return jobs + jobs + replies


def settled_cluster(legacy: frozenset[str] = frozenset()) -> SimCluster:
    """A 4-replica cluster that ordered 0.5 s of load and then had 2 s to settle
    (last Commits, certificates, retransmissions)."""
    cfg = SimConfig(f=1, k=0, seed=7, duration=0.5, clients=4, inflight=4)
    if legacy:
        cfg.params = {"legacy": legacy}
    cluster = SimCluster(cfg)
    summary = cluster.run()
    assert summary["ok"], summary["violations"]
    assert min(int(d) for d in summary["delivered"].values()) >= 300, summary["delivered"]
    cluster.run_until(cluster.now_us + 2 * US)
    return cluster


def idle_window(cluster: SimCluster, seconds: int) -> dict[int, tuple[int, Counter[str]]]:
    """Run ``seconds`` with no client load; per replica, its timer wake-ups and the
    firings per timer during that time."""
    before = {r: (n.replica.stats.timer_wakeups, Counter(n.replica.stats.timers_fired))
              for r, n in cluster.nodes.items()}
    cluster.run_until(cluster.now_us + seconds * US)
    out = {}
    for r, node in cluster.nodes.items():
        stats = node.replica.stats
        wakeups, fired = before[r]
        out[r] = (stats.timer_wakeups - wakeups, stats.timers_fired - fired)
    return out


def test_idle_replica_sleeps_between_genuinely_periodic_timers() -> None:
    cluster = settled_cluster()
    bound = wakeup_bound(cluster.params, IDLE_S)
    window = idle_window(cluster, IDLE_S)
    for r, (wakeups, fired) in sorted(window.items()):
        assert wakeups <= bound, (r, wakeups, bound, dict(fired))
        for job in SLEEPING_JOBS:
            assert fired[job] == 0, (r, job, dict(fired))
        # The TAT job wakes only for its resend (a non-leader), never at the leader.
        resends = IDLE_S * US // cluster.params.tat_measure_resend_us + 1
        assert fired["tat_measure"] <= (0 if r == 1 else resends), (r, dict(fired))
    assert not cluster.checker.violations


def test_eager_timers_fail_the_bound() -> None:
    """Negative control: with the jobs re-armed every period, as before issue 12, the
    same measurement is far over the bound (the test above can fail)."""
    cluster = settled_cluster(frozenset({"EAGER"}))
    bound = wakeup_bound(cluster.params, IDLE_S)
    window = idle_window(cluster, IDLE_S)
    for r, (wakeups, fired) in sorted(window.items()):
        assert wakeups > 10 * bound, (r, wakeups, bound)
        assert fired["po_ack"] >= IDLE_S * US // 6_000 - 1, (r, dict(fired))


def test_work_after_idleness_wakes_the_jobs_at_once() -> None:
    """Updates submitted after 10 idle seconds are ordered as fast as before the pause:
    the sleeping jobs wake when work arrives (had they waited for the 1 s
    retransmission, the first replies would take about a second)."""
    cluster = settled_cluster()
    busy = [x for c in cluster.clients for x in c.latencies_us]
    cluster.run_until(cluster.now_us + IDLE_S * US)
    done = {c.cid: len(c.latencies_us) for c in cluster.clients}
    cluster.resume_load(0.3)
    cluster.run_until(cluster.now_us + 2 * US)
    after = [x for c in cluster.clients for x in c.latencies_us[done[c.cid]:]]
    assert all(not c.outstanding for c in cluster.clients)
    assert len(after) >= 100, len(after)
    assert max(after) <= max(busy), (max(after), max(busy))
    assert not cluster.checker.violations


def _interesting_seeds(f: int, k: int) -> list[int]:
    """The first seed with each of: a Byzantine leader, a restart, a partition, loss, twins
    (scenario draws only, no runs), so the replays below cover view changes and
    retransmission."""
    wanted = {
        "byz_leader": lambda c: 1 in c.byz,
        "restart": lambda c: bool(c.restart),
        "partition": lambda c: bool(c.partitions),
        "loss": lambda c: c.loss > 0.02,
        "twins": lambda c: bool(c.twins),
    }
    seeds: list[int] = []
    for seed in range(200):
        cfg = random_scenario(seed, f=f, k=k)
        for name in [n for n, test in wanted.items() if test(cfg)]:
            del wanted[name]
            if seed not in seeds:
                seeds.append(seed)
        if not wanted:
            break
    return seeds


@pytest.mark.parametrize(("f", "k"), [(1, 0), (1, 1)], ids=["N4", "N6"])
def test_sleeping_jobs_change_nothing_a_busy_run_sends(f: int, k: int) -> None:
    """Seeded scenarios replay byte for byte with and without the old re-arming: every
    message and delivery, at the same virtual microsecond (the trace digest)."""
    seeds = _interesting_seeds(f, k)
    assert len(seeds) >= 3
    for seed in seeds:
        lazy = random_scenario(seed, f=f, k=k)
        eager = random_scenario(seed, f=f, k=k)
        eager.params = {"legacy": frozenset({"EAGER"})}
        a, b = SimCluster(lazy).run(), SimCluster(eager).run()
        assert a["ok"] and b["ok"], (seed, a["violations"], b["violations"])
        assert a["trace_sha256"] == b["trace_sha256"], f"seed {seed}: {a['replay']}"


# ------------------------------------------------------------------ quiescence
# docs/design.md section 10: once a replica is quiescent (nothing to order anywhere it
# can see) and primed (its suspicion bound is finite), its keep-alives rest: ping,
# TAT_UB, the TAT_MEASURE resend and the PO retransmission with its PO_ARU. Only the
# ORD certificate goes on (catch-up relies on it), repeated in the envelope it was
# signed in. "KEEPALIVE" (legacy) keeps them running, as the C code does.

KEEPALIVES = ("ping", "tat_ub", "po_retrans")


def test_quiescent_replicas_send_only_their_certificates() -> None:
    """A settled idle cluster: every replica is quiescent and rests its keep-alives; in
    10 s its only timer is the ORD certificate (every 2 s), and that is all it sends,
    without signing anything. Before (the "KEEPALIVE" negative control below, as the
    code was) each replica sent about 50 signed messages a second."""
    cluster = settled_cluster()
    p = cluster.params
    for r, node in cluster.nodes.items():
        assert node.replica.quiescent() and node.replica.suspect.keepalive_paused(), r
    sent0 = {r: n.replica.stats.messages_sent for r, n in cluster.nodes.items()}
    signed0 = {r: n.replica.stats.messages_signed for r, n in cluster.nodes.items()}
    window = idle_window(cluster, IDLE_S)
    certs = IDLE_S * US // p.ord_cert_period_us + 1
    for r, (wakeups, fired) in sorted(window.items()):
        replica = cluster.nodes[r].replica
        assert set(fired) <= {"ord_cert"} and fired["ord_cert"] <= certs, (r, dict(fired))
        assert wakeups <= certs, (r, wakeups)
        assert replica.stats.messages_sent - sent0[r] <= certs, r  # one broadcast each
        assert replica.stats.messages_signed == signed0[r], r  # the same signed envelope
        assert replica.quiescent(), r
    assert not cluster.checker.violations


def test_keepalive_legacy_keeps_them_running() -> None:
    """Negative control: with "KEEPALIVE" the same idle window has every keep-alive
    firing every period (the test above can fail)."""
    cluster = settled_cluster(frozenset({"KEEPALIVE"}))
    p = cluster.params
    window = idle_window(cluster, IDLE_S)
    for r, (_, fired) in sorted(window.items()):
        assert not cluster.nodes[r].replica.quiescent()
        assert fired["ping"] >= IDLE_S * US // p.ping_period_us - 1, (r, dict(fired))
        assert fired["tat_ub"] >= IDLE_S * US // p.tat_ub_period_us - 1, (r, dict(fired))
        assert fired["po_retrans"] >= IDLE_S * US // p.retrans_period_us - 1, (r, dict(fired))


def _slow_after_idle(legacy: frozenset[str]) -> tuple[SimCluster, int, list[int]]:
    """Leader 1 orders promptly, the cluster rests 10 s, then load returns and the leader
    delays every proof matrix (so every pre-prepare) by 300 ms from the first one.
    Returns the cluster, when load returned, and the suspicion bound each correct
    replica held at that moment (us)."""
    cfg = SimConfig(f=1, k=0, seed=11, duration=0.5, clients=4, inflight=4, byz={1: "delay"}, delay_ms=0.0)
    if legacy:
        cfg.params = {"legacy": legacy}
    cluster = SimCluster(cfg)
    summary = cluster.run()
    assert summary["ok"] and summary["view_changes"] == [], summary["replay"]
    cluster.run_until(cluster.now_us + (2 + IDLE_S) * US)
    resumed = cluster.now_us
    bounds = [cluster.nodes[r].replica.suspect.threshold_us() for r in (2, 3, 4)]
    cluster.cfg.delay_ms = 300.0
    cluster.resume_load(1.0)
    cluster.run_until(resumed + 3 * US)
    return cluster, resumed, bounds


def test_a_leader_slow_from_the_first_pre_prepare_after_idleness_is_suspected_at_once() -> None:
    """The suspicion bound survives the rest: RTT minima and TAT_UB reports are kept for
    the whole view, so at the moment load returns every replica holds a finite bound
    (the LAN's 40 ms), and a leader that delays its first pre-prepare is suspected,
    and the next view pre-installed everywhere, as fast as with the keep-alives
    running all along (no fresh pings needed): within 0.5 s of the first update."""
    times = {}
    for legacy in (frozenset(), frozenset({"KEEPALIVE"})):
        cluster, resumed, bounds = _slow_after_idle(legacy)
        assert all(b < 100_000 for b in bounds), bounds  # primed: the LAN bound, not "infinite"
        (vc,) = [v for v in cluster.view_change_log() if v["view"] == 2]
        assert vc["replicas"] == len(cluster.correct), vc
        preinstalled = vc["preinstalled_all_s"] * US - resumed
        assert 0 < preinstalled <= 500_000, (sorted(legacy), preinstalled)
        times[bool(legacy)] = preinstalled
    assert abs(times[False] - times[True]) <= 50_000, times


class _DeafToTatUb(Node):
    """A correct replica whose incoming TAT_UBs are lost until ``deaf_until_us``."""

    deaf_until_us = 0

    def incoming(self, via: int, env: Envelope) -> bool:
        return not (isinstance(env.msg, msgs.TatUb) and self.cluster.now_us < self.deaf_until_us)


def test_an_unprimed_replica_is_primed_by_resting_peers() -> None:
    """Replica 4 lost every TAT_UB until its peers rested: it cannot evaluate the
    suspicion rule, so it keeps pinging. The resting peers no longer broadcast TAT_UB,
    so they answer its pings with their TAT_UB too: it is primed within two ping
    periods of its links recovering, and then rests like the others."""
    cfg = SimConfig(f=1, k=0, seed=7, duration=0.5, clients=4, inflight=4)
    cluster = SimCluster(cfg)
    node = cluster.nodes[4]
    node.__class__ = _DeafToTatUb
    node.deaf_until_us = 3 * US
    summary = cluster.run()
    assert summary["ok"], summary["violations"]
    cluster.run_until(node.deaf_until_us)
    suspect = node.replica.suspect
    assert not suspect.primed() and not suspect.keepalive_paused()  # still pinging
    assert all(cluster.nodes[r].replica.suspect.keepalive_paused() for r in (1, 2, 3))
    cluster.run_until(node.deaf_until_us + 2 * cluster.params.ping_period_us)
    assert suspect.primed() and suspect.keepalive_paused()
    window = idle_window(cluster, IDLE_S)
    assert window[4][1]["ping"] == 0, dict(window[4][1])
    assert not cluster.checker.violations


def test_a_replica_cut_off_at_the_end_catches_up_while_the_others_rest() -> None:
    """Catch-up is as it was: replica 4 (no clients of its own), cut off during the last
    ordinals and until the others rest, catches up from the ORD certificates the
    resting replicas still broadcast, exactly when it does with every keep-alive
    running (the certificate period, 2 s, sets the pace)."""
    heal_us = 3 * US
    caught = {}
    for legacy in (frozenset(), frozenset({"KEEPALIVE"})):
        cfg = SimConfig(f=1, k=0, seed=5, duration=0.6, clients=3, inflight=4, client_homes=[1, 2, 3],
                        partitions=[f"1,2,3|4@0.4-{heal_us / US:g}"])
        if legacy:
            cfg.params = {"legacy": legacy}
        cluster = SimCluster(cfg)
        cluster.run_until(heal_us)
        target = cluster.nodes[1].replica.ord.aru
        assert cluster.nodes[4].replica.ord.aru < target  # it did miss ordinals
        assert all(cluster.nodes[r].replica.quiescent() != bool(legacy) for r in (1, 2, 3))
        at = None
        for step in range(1, 101):
            cluster.run_until(heal_us + step * 50_000)
            if cluster.nodes[4].replica.ord.aru >= target:
                at = step * 50_000
                break
        assert at is not None, (sorted(legacy), cluster.nodes[4].replica.ord.aru, target)
        caught[bool(legacy)] = at
        assert not cluster.checker.violations
    p = cluster.params
    assert caught[False] == caught[True] <= p.ord_cert_period_us + p.catchup_period_us, caught
