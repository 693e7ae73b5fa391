"""prime.net.traffic: classes, inbound fairness, token buckets, link emulation.

Time is simulated (``now`` is passed in), so the rate and delay statistics are
exact functions of the seeds and run in milliseconds."""

from __future__ import annotations

import random
import statistics

import pytest

from prime import msgs as M
from prime import wire
from prime.config import default_config
from prime.errors import ConfigError
from prime.net.traffic import (
    CLASS_OF_TAG,
    FairScheduler,
    LinkEmulator,
    LinkParams,
    Throttle,
    ThrottleSettings,
    TokenBucket,
    TrafficClass,
    class_of,
    counters,
    links_from_config,
    tag_of,
)

TIMELY, BOUNDED, RECON = TrafficClass.TIMELY, TrafficClass.BOUNDED, TrafficClass.RECON


# --- the table ---------------------------------------------------------------------------


def test_every_message_tag_has_exactly_one_class() -> None:
    """The literal table covers every registered message and nothing else."""
    assert set(CLASS_OF_TAG) == set(M.MESSAGES)


def test_original_split_of_classes() -> None:
    # the proof matrix is the TAT challenge: timely, as the original's T/6
    for tag in (M.T_PRE_PREPARE, M.T_PREPARE, M.T_COMMIT, M.T_TAT_MEASURE, M.T_RTT_PING,
                M.T_RTT_PONG, M.T_RTT_MEASURE, M.T_TAT_UB, M.T_NEW_LEADER, M.T_PROOF_MATRIX):
        assert CLASS_OF_TAG[tag] is TIMELY
    for tag in (M.T_PO_REQUEST, M.T_PO_ACK, M.T_PO_ARU):
        assert CLASS_OF_TAG[tag] is BOUNDED
    for tag in (M.T_RECON, M.T_CATCHUP_REQUEST, M.T_ORD_CERT):
        assert CLASS_OF_TAG[tag] is RECON


def _envelope(msg: M.Message, *, path: int = 0, sig: bytes = b"s" * 64) -> bytes:
    """Wire bytes shaped like a signed envelope (the signature is not checked here)."""
    import msgpack

    body = wire.encode_body(msg)
    return msgpack.packb([3, 1 if not path else 4, 0, sig, [b"d" * 32] * path, body], use_bin_type=True)


def test_tag_of_reads_the_tag_from_envelope_bytes() -> None:
    """The header walk agrees with the full decoder, with and without a Merkle path,
    and a long body (bin16/bin32 headers)."""
    commit = M.Commit(**{f.name: _sample(f.name) for f in M.Commit.__dataclass_fields__.values()})  # type: ignore[arg-type]
    raw = _envelope(commit)
    assert tag_of(raw) == M.T_COMMIT and class_of(raw) is TIMELY
    assert tag_of(_envelope(commit, path=3)) == M.T_COMMIT
    ping = M.CatchupRequest(aru=7)
    assert class_of(_envelope(ping, sig=b"x" * 70_000)) is RECON


def _sample(name: str) -> object:
    return {"view": 1, "seq": 2, "digest": b"\x00" * 32}.get(name, 1)


@pytest.mark.parametrize("raw", [b"", b"\x96", b"\x93\x01\x02\x03", b"\xc4\x05abc", b"\x96\x01\x01\x00\xc4\x40" + b"x" * 10])
def test_tag_of_never_raises_on_junk(raw: bytes) -> None:
    assert tag_of(raw) is None
    assert class_of(raw) is RECON


def test_tag_of_fuzz_never_raises() -> None:
    rng = random.Random(5)
    base = _envelope(M.CatchupRequest(aru=7))
    for _ in range(3000):
        raw = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        cut = bytes(raw[: rng.randint(0, len(raw))])
        result = tag_of(cut)
        assert result is None or 0 <= result < 0x80


# --- inbound fairness ---------------------------------------------------------------------


def test_scheduler_serves_classes_in_priority_order() -> None:
    s: FairScheduler[str] = FairScheduler(per_peer_max=10)
    s.push(RECON, 1, "r")
    s.push(BOUNDED, 1, "b")
    s.push(TIMELY, 2, "t")
    assert [s.pop()[2] for _ in range(3)] == ["t", "b", "r"]  # type: ignore[index]
    assert s.pop() is None


def test_flooding_peer_gets_no_more_than_its_share() -> None:
    """Peer 2 offers 100 messages a round, peers 3 and 4 two each; the scheduler is
    drained at 6 a round (a fair share is 2 each). The honest peers get all of their
    messages, each served within the round it arrived; the flooder gets only what
    they leave (work-conserving), and its excess is refused and counted, never lost
    silently. With one FIFO instead, the honest messages would wait behind
    thousands of the flooder's."""
    s: FairScheduler[tuple[int, int]] = FairScheduler(per_peer_max=64)
    served: dict[int, int] = {2: 0, 3: 0, 4: 0}
    offered_honest = refused_flood = 0
    worst_wait = 0
    for rnd in range(1000):
        for i in range(100):
            if not s.push(BOUNDED, 2, (rnd, i)):
                refused_flood += 1
        for peer in (3, 4):
            for _ in range(2):
                assert s.push(BOUNDED, peer, (rnd, 0))
                offered_honest += 1
        for _ in range(6):
            got = s.pop()
            assert got is not None
            _, peer, (sent_round, _) = got
            served[peer] += 1
            if peer != 2:
                worst_wait = max(worst_wait, rnd - sent_round)
    assert served[3] == served[4] == 2000 == offered_honest // 2  # all, in time
    assert worst_wait == 0
    assert served[2] == 6000 - offered_honest  # the leftover capacity, no more
    assert s.dropped[BOUNDED] == refused_flood == 100 * 1000 - served[2] - len(s)


def test_round_robin_among_backlogged_peers_is_exact() -> None:
    s: FairScheduler[int] = FairScheduler(per_peer_max=1000)
    for peer in (1, 2, 3):
        for i in range(300 if peer == 1 else 30):
            s.push(RECON, peer, peer)
    first = [s.pop()[1] for _ in range(90)]  # type: ignore[index]
    assert first.count(1) == first.count(2) == first.count(3) == 30


def test_timely_from_an_honest_peer_overtakes_a_recon_flood() -> None:
    s: FairScheduler[str] = FairScheduler(per_peer_max=10_000)
    for _ in range(5000):
        s.push(RECON, 2, "junk")
    s.push(TIMELY, 3, "prepare")
    assert s.pop() == (TIMELY, 3, "prepare")


# --- throttling -----------------------------------------------------------------------------


def _settings(enabled: bool = True, queue_max: int = 1000) -> ThrottleSettings:
    cfg = default_config(throttle_outgoing=enabled, bandwidth_timely_bps=2_000_000,
                         bandwidth_bounded_bps=1_000_000, bandwidth_recon_bps=500_000,
                         tokens_max_bits=200_000, message_bytes_max=20_000, throttle_tick_us=1000)
    return ThrottleSettings.from_config(cfg.throttling, queue_max)


def test_per_class_rates_within_ten_percent_under_saturation() -> None:
    """Each class is offered far more than its rate for 5 simulated seconds; the bits
    released per class stay within 10% of its setting, and every item offered is
    either released, still queued, or refused and counted."""
    settings = _settings()
    t: Throttle[int] = Throttle(settings, now=0.0)
    rng = random.Random(1)
    sizes = {TIMELY: 300, BOUNDED: 1200, RECON: 9000}
    offered = {c: 0 for c in TrafficClass}
    released_bits = {c: 0 for c in TrafficClass}
    seconds, tick = 5.0, settings.tick_s
    now = 0.0
    while now < seconds:
        for cls, size in sizes.items():
            for _ in range(rng.randint(1, 4)):
                offered[cls] += 1
                t.submit(cls, size, 8 * size)
        for cls, size in t.release(now):
            released_bits[cls] += 8 * size
        now += tick
    for cls in TrafficClass:
        rate = released_bits[cls] / seconds
        assert abs(rate - settings.rate_bps[cls]) <= 0.10 * settings.rate_bps[cls], (cls, rate)
        assert t.sent_bits[cls] == released_bits[cls]
        assert offered[cls] == t.sent_items[cls] + len(t.queues[cls]) + t.dropped[cls]
        assert t.dropped[cls] > 0 and t.throttled[cls] > 0  # it was saturated


def test_queued_items_are_sent_later_not_lost() -> None:
    """A burst beyond the bucket waits and drains at the rate, all of it."""
    settings = _settings()
    t: Throttle[int] = Throttle(settings, now=0.0)
    for i in range(100):
        assert t.submit(RECON, i, 8 * 5000)  # 4 Mbit total at 0.5 Mbit/s
    out: list[int] = []
    now = 0.0
    while t.waiting():
        out += [item for _, item in t.release(now)]
        now += settings.tick_s
    assert out == list(range(100))
    assert 7.0 < now < 8.2  # (4 Mbit - 0.2 Mbit bucket) / 0.5 Mbit/s = 7.6 s


def test_timely_released_before_bounded_and_recon() -> None:
    t: Throttle[str] = Throttle(_settings(enabled=False), now=0.0)
    t.submit(RECON, "r", 8)
    t.submit(BOUNDED, "b", 8)
    t.submit(TIMELY, "t", 8)
    assert [item for _, item in t.release(0.0)] == ["t", "b", "r"]


def test_disabled_throttle_passes_everything_at_once() -> None:
    t: Throttle[int] = Throttle(_settings(enabled=False), now=0.0)
    for i in range(500):
        t.submit(RECON, i, 8 * 60_000)
    assert len(t.release(0.0)) == 500 and t.throttled[RECON] == 0


def test_full_queue_refuses_and_counts() -> None:
    t: Throttle[int] = Throttle(_settings(queue_max=3), now=0.0)
    assert [t.submit(TIMELY, i, 8) for i in range(5)] == [True, True, True, False, False]
    assert t.dropped[TIMELY] == 2


def test_bucket_lets_an_oversized_message_through_when_full_then_repays() -> None:
    b = TokenBucket(rate_bps=1000, depth_bits=500, now=0.0)
    assert b.take(2000)  # full bucket: goes, leaving a debt
    assert not b.take(1)
    b.refill(1.4)
    assert not b.take(1)  # debt 1500 not yet repaid (1400 refilled)
    b.refill(1.6)
    assert b.take(50)


def test_next_release_predicts_when_tokens_suffice() -> None:
    settings = _settings()
    t: Throttle[int] = Throttle(settings, now=0.0)
    t.submit(RECON, 1, 200_000)
    t.submit(RECON, 2, 100_000)
    t.release(0.0)
    at = t.next_release(0.0)
    assert at is not None and abs(at - 0.2) < 1e-9  # 100 kbit at 0.5 Mbit/s
    assert t.release(at - 1e-4) == []
    assert t.release(at) == [(RECON, 2)]


# --- link emulation -----------------------------------------------------------------------


def _drain(link: LinkEmulator[int], sends: list[tuple[float, int, int]], step: float = 0.0001) -> dict[int, float]:
    """Send (time, dest, item) and return item -> release time."""
    released: dict[int, float] = {}
    sends = sorted(sends)
    now, i = 0.0, 0
    while i < len(sends) or link.waiting():
        while i < len(sends) and sends[i][0] <= now:
            link.send(sends[i][1], sends[i][2], 100, sends[i][0])
            i += 1
        for _, item in link.due(now):
            released[item] = now
        now += step
    return released


def test_delay_and_jitter_statistics() -> None:
    """40 ms +- 5 ms on one link, frames 20 ms apart: mean 40 ms, spread uniform
    over +-5 ms (standard deviation 5/sqrt(3)), never outside the bounds."""
    link: LinkEmulator[int] = LinkEmulator({2: LinkParams(40.0, 5.0)}, random.Random(7), queue_max=10_000)
    sends = [(0.02 * i, 2, i) for i in range(2000)]
    released = _drain(link, sends)
    delays = [(released[i] - t) * 1000 for t, _, i in sends]
    assert abs(statistics.mean(delays) - 40.0) < 0.3
    assert abs(statistics.pstdev(delays) - 5 / 3 ** 0.5) < 0.3
    assert 34.9 <= min(delays) and max(delays) <= 45.2


def test_links_are_independent_and_fifo() -> None:
    link: LinkEmulator[int] = LinkEmulator(
        {2: LinkParams(10.0, 9.0), 3: LinkParams(50.0)}, random.Random(3), queue_max=10_000
    )
    sends = [(0.0005 * i, 2 if i % 2 else 3, i) for i in range(400)]
    released = _drain(link, sends)
    for dest in (2, 3):
        items = [i for _, d, i in sends if d == dest]
        times = [released[i] for i in items]
        assert times == sorted(times)  # TCP cannot reorder
    assert all(released[i] - t >= 0.0499 for t, d, i in sends if d == 3)


def test_loss_rate_and_counters() -> None:
    """2% loss over 50 000 frames: measured within 0.3% of it, all counted."""
    link: LinkEmulator[int] = LinkEmulator({2: LinkParams(loss=0.02)}, random.Random(11), queue_max=100_000)
    kept = sum(link.send(2, i, 100, 0.0) for i in range(50_000))
    assert abs(link.lost[2] / 50_000 - 0.02) < 0.003
    assert kept + link.lost[2] == 50_000
    assert len(link.due(0.0)) == kept and link.sent[2] == kept


def test_same_seed_same_losses() -> None:
    def run(seed: int) -> list[bool]:
        link: LinkEmulator[int] = LinkEmulator({2: LinkParams(loss=0.3)}, random.Random(seed), 100)
        return [link.send(2, i, 1, 0.0) for i in range(50)]

    assert run(4) == run(4) and run(4) != run(5)


def test_bandwidth_limits_a_saturated_link_within_ten_percent() -> None:
    link: LinkEmulator[int] = LinkEmulator({2: LinkParams(bandwidth_bps=1_000_000)}, random.Random(1), 1_000_000)
    for i in range(3000):
        link.send(2, i, 1000, 0.0)  # 24 Mbit offered at once
    released = len(link.due(3.0))
    assert abs(released * 8000 / 3.0 - 1_000_000) <= 100_000


def test_queue_bound_refuses_and_counts() -> None:
    link: LinkEmulator[int] = LinkEmulator({2: LinkParams(delay_ms=100.0)}, random.Random(1), queue_max=5)
    assert sum(link.send(2, i, 1, 0.0) for i in range(8)) == 5 and link.refused[2] == 3
    assert counters(None, None, link)["drop:link:queue_full"] == 3  # type: ignore[arg-type]


# --- [[links]] configuration ----------------------------------------------------------------


def test_links_from_config_pairs_override_the_defaults() -> None:
    cfg = default_config(link_delay_ms=20.0, link_jitter_ms=1.0,
                         links=[{"a": 1, "b": 3, "delay_ms": 50, "loss": 0.02}])
    mine = links_from_config(cfg, 3)
    assert mine[1] == LinkParams(50.0, 0.0, 0.02, 0)
    assert mine[2] == mine[4] == LinkParams(20.0, 1.0, 0.0, 0)
    assert links_from_config(cfg, 1)[3] == mine[1]  # both directions
    assert 3 not in mine


@pytest.mark.parametrize(
    "links, words",
    [
        ([{"a": 1, "b": 9}], "[[links]] #1 b = 9: no such replica"),
        ([{"a": 1, "b": 1}], "[[links]] #1 b = 1: a link joins two different replicas"),
        ([{"a": 1}], "[[links]] #1 b: missing"),
        ([{"a": 1, "b": 2, "delay": 3}], "[[links]] #1 delay: unknown key"),
        ([{"a": 1, "b": 2, "loss": 2.0}], "[[links]] #1 loss = 2.0: out of range"),
        ([{"a": 1, "b": 2, "delay_ms": "10"}], '[[links]] #1 delay_ms = "10": wrong type'),
        ([{"a": 1, "b": 2, "jitter_ms": 5.0}], "[[links]] #1 jitter_ms = 5.0: must be <= delay_ms"),
        ([{"a": 1, "b": 2}, {"a": 2, "b": 1}], "[[links]] #2 a, b: the pair is already set by [[links]] #1"),
        ({"a": 1}, "links: must be an array of tables"),
    ],
)
def test_bad_links_stop_with_one_line_naming_the_key(links: object, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        default_config(links=links)
    message = str(caught.value)
    assert "\n" not in message and words in message, message


# --- inbound, per sender (PeerBudgets) --------------------------------------------------


def _read(b: "PeerBudgets", peer: int, now: float, want: int, size: int = 100) -> int:
    """Read as a net process would: what the budget allows, up to ``want`` frames."""
    frames, room = b.allowed(peer, now)
    n = 0
    while n < min(want, frames) and n * size < room:  # the net process's read loop
        n += 1
    if n:
        b.charge(peer, n, n * size)
    return n


def test_a_peer_is_held_to_the_absolute_cap_whatever_it_offers() -> None:
    from prime.net.traffic import PeerBudgets

    b = PeerBudgets([2, 3, 4], msgs_per_s=1000, bps=10**9, burst_s=0.1, now=0.0)
    got = sum(_read(b, 4, t / 1000, 10_000) for t in range(0, 5000))  # 5 s, a read per ms
    assert 5000 <= got <= 5000 + 100 + 1, got  # rate x time + one burst
    assert _read(b, 2, 5.0, 50) == 50  # the others' budgets are their own


def test_the_bits_budget_holds_big_frames() -> None:
    from prime.net.traffic import PeerBudgets

    b = PeerBudgets([2], msgs_per_s=10**6, bps=8 * 100_000, burst_s=0.1, now=0.0)  # 100 kB/s
    got = sum(_read(b, 2, t / 1000, 10, size=9000) for t in range(0, 2000))
    assert 200_000 // 9000 <= got <= (200_000 + 10_000) // 9000 + 2, got


def test_relative_bound_tracks_the_f_plus_1th_busiest_peer_not_the_flooder() -> None:
    """N=4, f=1: peers 2 and 3 send 300 frames/s, peer 4 floods. After the first window
    peer 4 is held to ratio x 300 (the 2nd busiest: a correct peer), and its flood never
    raises that reference; the correct peers are never held back."""
    from prime.net.traffic import PeerBudgets

    b = PeerBudgets([2, 3, 4], msgs_per_s=100_000, bps=10**12, burst_s=0.05, now=0.0,
                    f=1, vs_others=2.0, floor_msgs_per_s=100)
    flood = honest = 0
    offered_honest = 0
    for ms in range(0, 6000):
        t = ms / 1000
        for p in (2, 3):
            if ms % 10 < 3:  # 300 frames/s, in bursts of one per ms
                offered_honest += 1
                honest += _read(b, p, t, 1)
        got = _read(b, 4, t, 10_000)
        if ms >= 2000:
            flood += got
    assert honest == offered_honest  # never throttled
    assert b.paused[2] == b.paused[3] == 0
    rate = flood / 4.0
    assert 500 <= rate <= 2 * 300 * 1.1, rate
    assert b.rate_now[4] == 600


def test_relative_bound_never_below_its_floor_nor_above_the_cap() -> None:
    from prime.net.traffic import PeerBudgets

    b = PeerBudgets([2, 3, 4], msgs_per_s=800, bps=10**12, burst_s=0.05, now=0.0,
                    f=1, vs_others=2.0, floor_msgs_per_s=200)
    for ms in range(0, 3000):  # everyone idle but the flooder
        _read(b, 4, ms / 1000, 10_000)
    assert b.rate_now[4] == 200
    for ms in range(3000, 6000):  # correct peers busy at 1000/s: 2x = 2000, capped at 800
        for p in (2, 3):
            _read(b, p, ms / 1000, 1)
        _read(b, 4, ms / 1000, 10_000)
    assert b.rate_now[4] == 800


# --- per-(sender, lane) inbound budgets --------------------------------------------------


def _po_request(sender: int, seq: int) -> bytes:
    return _envelope(M.PoRequest((1, seq), ()), sig=b"%d" % sender + b"s" * 63)


def _recon(sender: int, i: int) -> bytes:
    part = M.ReconPart(originator=1, po=(1, i), part_index=0, request_bytes=10, data=b"r")
    return _envelope(M.Recon((part,)), sig=b"%d" % sender + b"s" * 63)


def _prepare(sender: int, seq: int) -> bytes:
    return _envelope(M.Prepare(1, seq, b"d" * 32), sig=b"%d" % sender + b"s" * 63)


def test_lane_of_frames() -> None:
    from prime.net.traffic import Lane, lane_of

    assert lane_of(tag_of(_po_request(2, 1)), BOUNDED) == Lane.PO_REQUEST
    assert lane_of(M.T_PO_ACK, BOUNDED) == Lane.BOUNDED
    assert lane_of(tag_of(_recon(2, 1)), RECON) == Lane.RECON
    assert lane_of(tag_of(_prepare(2, 1)), TIMELY) is None


def test_a_po_request_flood_is_held_to_twice_a_correct_peers_rate_and_timely_passes() -> None:
    """N=4, f=1, at replica 1: peers 2 and 3 each send 100 PO-Requests and 300 prepares
    a second; peer 4 offers 2,000 PO-Requests and 2,000 reconciliation frames a second
    plus the same prepares. After the first window peer 4 gets at most 2 x 100
    PO-Requests/s and the recon floor; every frame of peers 2 and 3, and every prepare
    of peer 4, goes through at once."""
    from prime.net import transport
    from prime.net.traffic import InboundBudgets, Lane

    budgets = InboundBudgets([2, 3, 4], {Lane.PO_REQUEST: (2.0, 50), Lane.BOUNDED: (2.0, 200),
                                         Lane.RECON: (2.0, 100)}, f=1, cap=5000, burst_s=0.2, now=0.0)
    inbound = transport.Inbound(budgets)
    honest = {p: [_po_request(p, 1)] + [_prepare(p, i) for i in range(3)] for p in (2, 3)}
    flood = [x for i in range(1000) for x in (_po_request(4, i), _recon(4, i))] + [_prepare(4, 1)]
    from collections import Counter

    total: Counter[tuple[int, int]] = Counter()
    offered: Counter[int] = Counter()
    cursor = {2: 0, 3: 0, 4: 0}
    for ms in range(0, 6000):
        now = ms / 1000
        for p in (2, 3):
            if ms % 10 < 4:  # 400 frames/s: 100 PO-Requests, 300 prepares
                inbound.push(p, honest[p][cursor[p] % 4])
                cursor[p] += 1
                offered[p] += ms >= 1000
        for _ in range(4):
            if not inbound.full(4):
                inbound.push(4, flood[cursor[4] % len(flood)])
                cursor[4] += 1
        got = Counter()
        inbound.drain(lambda: 10**6, lambda via, cls, raw: got.update([(via, tag_of(raw))]), now)
        if ms >= 1000:  # after the first window
            total.update(got)
        for p in (2, 3):  # nothing of a correct peer waits
            assert sum(inbound.sched.waiting(c, k) for c in TrafficClass for k in (p, -p)) == 0
    for p in (2, 3):
        assert total[(p, M.T_PO_REQUEST)] + total[(p, M.T_PREPARE)] == offered[p]
        assert budgets.deferred[p] == 0
    po_rate = total[(4, M.T_PO_REQUEST)] / 5.0
    recon_rate = total[(4, M.T_RECON)] / 5.0
    assert 2 * 100 * 0.9 <= po_rate <= 2 * 100 * 1.1, po_rate
    assert 100 * 0.9 <= recon_rate <= 100 * 1.1, recon_rate
    assert total[(4, M.T_PREPARE)] > 0  # its timely traffic is not in a lane
    assert budgets.rate_now[Lane.PO_REQUEST] == pytest.approx(200, rel=0.05)
    assert budgets.rate_now[Lane.RECON] == 100
    assert budgets.deferred[4] > 0
    assert inbound.full(4)  # its queue is at its bound: the net stops reading it


def test_a_gated_peer_does_not_block_others_of_its_class() -> None:
    """A peer whose next frame is over its lane budget is passed over: the next peer of
    the same class, and the lower classes, are served."""
    sched: FairScheduler[str] = FairScheduler(per_peer_max=10)
    sched.push(BOUNDED, 4, "flood")
    sched.push(BOUNDED, 2, "honest")
    sched.push(RECON, 3, "recon")
    gate = lambda peer, item: peer != 4  # noqa: E731
    assert sched.pop(gate) == (BOUNDED, 2, "honest")
    assert sched.pop(gate) == (RECON, 3, "recon")
    assert sched.pop(gate) is None
    assert len(sched) == 1 and sched.head(BOUNDED, 4) == "flood"
    assert sched.pop() == (BOUNDED, 4, "flood")


def test_a_peers_queue_is_bounded_in_bytes_too() -> None:
    """Big frames: a peer's queue of a class holds at most per_peer_bytes_max bytes
    (refused beyond, counted); it reports full from half of that, so the net process
    stops reading it before it refuses anything; other peers are untouched."""
    sched: FairScheduler[str] = FairScheduler(per_peer_max=1000, per_peer_bytes_max=100_000)
    accepted = sum(sched.push(BOUNDED, 4, f"big{i}", 30_000) for i in range(10))
    assert accepted == 3 and sched.dropped[BOUNDED] == 7
    assert sched.full(4) and not sched.full(2)
    assert sched.push(BOUNDED, 2, "small", 100)
    assert sched.pop() == (BOUNDED, 4, "big0")
    assert sched.pop() == (BOUNDED, 2, "small")
    assert sched.push(BOUNDED, 4, "big10", 30_000)  # room again after a pop


def test_a_frame_the_classifier_reads_differently_from_the_codec_is_refused_by_the_codec() -> None:
    """Tag tricks: the net process classifies by ``tag_of`` (header bytes), the worker by
    decoding. A faulty sender that encodes a PO-Request's tag, its body's array header or
    the envelope's header in a longer form makes ``tag_of`` read no tag (RECON lane, past
    the PO-Request lane budget); the codec accepts only the canonical encoding, so such a
    frame is dropped by the worker, never handled as a PO-Request. On a canonical frame
    both read the same tag."""
    import msgpack

    def signed(msg: M.Message, sender: int) -> bytes:  # well-formed (the signature is not checked)
        return wire.make_envelope(sender=sender, body=wire.encode_body(msg), msg=msg, sig=b"s" * 64).raw

    upd = M.Update(client=7, incarnation=1, seq=1, kind=M.UpdateKind.APP, payload=b"set k v")
    update_env = wire.decode(signed(upd, 7))
    assert not isinstance(update_env, str), update_env
    raw = signed(M.PoRequest((1, 1), (update_env,)), 2)
    env = wire.decode(raw)
    assert not isinstance(env, str), env
    assert tag_of(raw) == M.T_PO_REQUEST and type(env.msg) is M.MESSAGES[M.T_PO_REQUEST]
    outer = msgpack.unpackb(raw)
    body = outer[5]
    assert body[0] == 0x90 | (body[0] & 0x0F) and body[1] == M.T_PO_REQUEST  # fixarray, fixint tag
    tricks = {
        "tag as uint8": body[:1] + bytes([0xCC, body[1]]) + body[2:],
        "tag as int8": body[:1] + bytes([0xD0, body[1]]) + body[2:],
        "body as array16": bytes([0xDC, 0, body[0] & 0x0F]) + body[1:],
    }
    for name, trick in tricks.items():
        assert msgpack.unpackb(trick)[0] == M.T_PO_REQUEST, name  # msgpack reads a PO-Request
        forged = msgpack.packb(outer[:5] + [trick], use_bin_type=True)
        if name.startswith("tag"):  # the classifier reads no tag: RECON, past the PO-Request lane
            assert tag_of(forged) is None and class_of(forged) is RECON, name
        else:  # it reads the same tag as msgpack
            assert tag_of(forged) == M.T_PO_REQUEST, name
        assert isinstance(wire.decode(forged), str), name  # the worker drops it
    head = bytes([0xDC, 0, 6]) + raw[1:]  # the envelope as array16
    assert tag_of(head) == M.T_PO_REQUEST and isinstance(wire.decode(head), str)


def test_inbound_wait_is_the_time_to_the_next_lane_batch_when_only_gated_frames_wait() -> None:
    """The net process sleeps ``Inbound.wait_s()`` when nothing else is due: with only a
    flooder's over-budget frames waiting it must be the time until its lane budget holds
    a batch (``InboundBudgets.QUANTUM_S`` of its rate: no 1 ms polls while they wait, and
    not one wake-up per frame, which woke the net process, a worker and the engine once
    per flooded frame), and a drain then moves exactly what the budget allows."""
    from prime.net import transport
    from prime.net.traffic import InboundBudgets, Lane

    budgets = InboundBudgets([2, 3, 4], {Lane.PO_REQUEST: (2.0, 100), Lane.BOUNDED: (2.0, 200),
                                         Lane.RECON: (2.0, 100)}, f=1, cap=5000, burst_s=0.2, now=0.0)
    inbound = transport.Inbound(budgets)
    assert inbound.wait_s() is None
    moved: list[int] = []
    now = 0.0
    for i in range(1024):  # a second of flood: the budgets re-rate to the floor (100/s)
        inbound.push(4, _po_request(4, i))
    inbound.drain(lambda: 10**6, lambda via, cls, raw: moved.append(via), 0.0)
    for i in range(100):
        inbound.push(4, _po_request(4, 2000 + i))
    now = 1.0
    inbound.drain(lambda: 10**6, lambda via, cls, raw: moved.append(via), now)
    assert budgets.rate_now[Lane.PO_REQUEST] == 100
    waiting = len(inbound.sched)
    assert waiting > 0
    wait = inbound.wait_s()
    batch = round(100 * InboundBudgets.QUANTUM_S)  # 5 frames at 100 a second
    assert wait is not None and 1 / 100 < wait <= InboundBudgets.QUANTUM_S + 1e-9, wait
    before = len(moved)
    inbound.drain(lambda: 10**6, lambda via, cls, raw: moved.append(via), now + wait * 0.5)
    assert len(moved) == before + batch // 2  # a frame whose token came goes when the net is awake
    inbound.drain(lambda: 10**6, lambda via, cls, raw: moved.append(via), now + wait + 1e-9)
    assert len(moved) == before + batch  # and by then the batch, at the lane's rate
    assert inbound.wait_s() == pytest.approx(InboundBudgets.QUANTUM_S)  # next batch
    # a timely frame of a correct peer waiting only for ring room: look again at once
    inbound.push(2, _prepare(2, 1))
    assert inbound.wait_s() == 0.0


def test_a_frame_waiting_for_its_lane_budget_is_counted_deferred_once() -> None:
    """``in_deferred_by_peer`` counts frames that waited, not how often the net process
    asked (it drains every round, every millisecond or so while frames wait): one frame
    over its budget through 100 rounds is one (before: 100)."""
    from prime.net import transport
    from prime.net.traffic import InboundBudgets, Lane

    budgets = InboundBudgets([2, 3, 4], {Lane.PO_REQUEST: (2.0, 1)}, f=1, cap=1, burst_s=1.0, now=0.0)
    inbound = transport.Inbound(budgets)
    inbound.push(4, _po_request(4, 1))
    inbound.push(4, _po_request(4, 2))
    moved: list[int] = []
    for ms in range(100):
        inbound.drain(lambda: 10**6, lambda via, cls, raw: moved.append(via), ms / 10_000)
    assert moved == [4]  # the first went on the bucket's one token; the second waits
    assert budgets.deferred[4] == 1, budgets.deferred
    inbound.push(4, _po_request(4, 3))
    inbound.drain(lambda: 10**6, lambda via, cls, raw: moved.append(via), 0.5)
    assert budgets.deferred[4] == 1  # still the same frame at the head


def test_a_senders_acks_do_not_wait_behind_its_po_requests() -> None:
    """A correct replica that alone has clients sends PO-Requests above the floor its
    silent peers set; they wait for their lane budget, but its acks and ARUs, queued
    after them, go on at once (they have a queue of their own). (Review of issue 14:
    with one queue its PO_ACK waited 0.2 s behind 40 PO-Requests.)"""
    from collections import Counter

    from prime.net import transport
    from prime.net.traffic import InboundBudgets, Lane

    budgets = InboundBudgets([2, 3, 4], {Lane.PO_REQUEST: (2.0, 100), Lane.BOUNDED: (2.0, 200),
                                         Lane.RECON: (2.0, 100)}, f=1, cap=5000, burst_s=0.2, now=0.0)
    inbound = transport.Inbound(budgets)
    ack = _envelope(M.PoAck((M.AckPart(1, (1, 1), b"d" * 32),)), sig=b"2" + b"s" * 63)
    budgets.tick(1.5)  # a window of silence: the PO-Request lane is at its floor
    for i in range(200):
        inbound.push(2, _po_request(2, i))
    inbound.push(2, ack)
    got: Counter[int | None] = Counter()
    inbound.drain(lambda: 10**6, lambda via, cls, raw: got.update([tag_of(raw)]), 1.5)
    assert got[M.T_PO_ACK] == 1
    assert 0 < got[M.T_PO_REQUEST] < 200  # the rest wait for their budget


def test_a_peer_out_of_read_budget_is_read_again_in_a_batch_not_a_frame_at_a_time() -> None:
    """A peer held to its read budget (``PeerBudgets``) is left unread until it has
    ``PAUSE_QUANTUM_S`` of its rate in tokens: at a flooder's 500 frames a second, one
    wake-up of the net process per 10 frames, where it was one per frame (the net
    process then handed each frame on alone, waking a worker and the engine for it)."""
    from prime.net.traffic import PeerBudgets

    b = PeerBudgets([2, 3, 4], msgs_per_s=500, bps=10**9, burst_s=1.0, now=0.0)
    allowed, _ = b.allowed(4, 0.0)
    b.charge(4, allowed, 100 * allowed)  # it spent its budget
    assert b.allowed(4, 0.0)[0] == 0
    wait = b.ready_in(4)
    assert wait == pytest.approx(PeerBudgets.PAUSE_QUANTUM_S)
    assert b.allowed(4, wait + 1e-9)[0] == round(500 * PeerBudgets.PAUSE_QUANTUM_S)  # a batch of 10
    b.charge(4, 10, 1000)
    assert b.ready_in(4) == pytest.approx(PeerBudgets.PAUSE_QUANTUM_S)
