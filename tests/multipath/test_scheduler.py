"""Estimator and schedulers, driven with invented times from now = 0."""

from __future__ import annotations

from collections import Counter

import pytest

from whalescale.multipath.estimator import BandwidthEstimator, EstimatorParams
from whalescale.multipath.paths import (
    SATURATED_QUEUE_S,
    SATURATED_QUEUE_SHARE,
    Path,
    PathState,
)
from whalescale.multipath.scheduler import SCHEDULERS, SchedulerParams, WeightedRoundRobin
from whalescale.multipath.sender import HOLDOVER_MARGIN_S, RELEASE_EARLY_S, MultipathSender

MBIT = 125_000.0


def paths_with(rtts: dict[int, float]) -> dict[int, Path]:
    out = {}
    for pid, rtt in rtts.items():
        p = Path(pid, ("l", pid), ("r", pid), 1420, created_at=0.0)
        p.on_rtt_sample(rtt)
        p.rttvar = 0.0
        out[pid] = p
    return out


def estimator_with(weights_mbit: dict[int, float]) -> BandwidthEstimator:
    est = BandwidthEstimator(EstimatorParams(min_weight_bps=1.0))
    for pid, w in weights_mbit.items():
        est.add_path(pid, 0.0)
        est._paths[pid].weight_bps = w * MBIT  # a settled weight, as after many windows
    return est


def run(sched, n: int, now0: float = 0.0, gap: float = 1e-4) -> Counter:
    picks = Counter()
    for i in range(n):
        picks[sched.pick(1400, now0 + i * gap)[0]] += 1
    return picks


@pytest.mark.parametrize("weights", [{0: 10, 1: 10}, {0: 20, 1: 10}, {0: 30, 1: 10, 2: 5}])
def test_wrr_proportions_match_weights(weights):
    paths = paths_with({pid: 0.03 for pid in weights})
    sched = WeightedRoundRobin(paths, estimator_with(weights))
    picks = run(sched, 9000)
    total = sum(weights.values())
    for pid, w in weights.items():
        assert picks[pid] / 9000 == pytest.approx(w / total, abs=0.01)


def test_wrr_degraded_path_gets_reduced_share_failed_path_none():
    paths = paths_with({0: 0.03, 1: 0.03})
    sched = WeightedRoundRobin(paths, estimator_with({0: 10, 1: 10}))
    paths[1].state = PathState.DEGRADED
    paths[1].last_heard = -1.0  # quiet: not heard within a heartbeat interval
    picks = run(sched, 5000)
    assert picks[1] / 5000 == pytest.approx(0.25 / 1.25, abs=0.01)
    # Degraded for loss but heard as usual: the loss term alone cuts it (none here).
    paths[1].on_heard(0.5)
    assert run(sched, 500, now0=0.5)[1] / 500 == pytest.approx(0.5, abs=0.01)
    paths[1].state = PathState.FAILED
    sched.on_path_state(1, PathState.FAILED, 1.0)
    assert run(sched, 1000, now0=1.0)[1] == 0


def test_no_usable_path_gives_none():
    paths = paths_with({0: 0.03})
    paths[0].state = PathState.FAILED
    for cls in SCHEDULERS.values():
        assert cls(paths, estimator_with({0: 10})).pick(1400, 0.0) is None


def saturate(path: Path) -> None:
    """A standing queue on the path, just past what counts as saturated."""
    base = path.min_rtt or 0.0
    path.srtt = base + 1.1 * max(SATURATED_QUEUE_S, SATURATED_QUEUE_SHARE * base)
    assert path.saturated


@pytest.mark.parametrize("name", ["wrr", "blest"])
def test_reorder_depth_constraint_holds(name):
    # Equal base delay (100 ms RTT), but path 1 has a standing queue of 100 ms RTT: a
    # packet on it arrives 50 ms after one sent on path 0 at the same time. At 1 packet
    # per 0.1 ms on the fast path (10k packets/s), ~500 would overtake it.
    paths = paths_with({0: 0.1, 1: 0.1})
    paths[1].srtt = 0.2
    sched = SCHEDULERS[name](paths, estimator_with({0: 112, 1: 112}))
    budget = SchedulerParams().depth_budget
    picks = run(sched, 5000, gap=1e-4)
    # Once rates are measured the queued path is only used when it stays in budget.
    later = Counter()
    for i in range(5000):
        now = 0.5 + i * 1e-4
        pid, _ = sched.pick(1400, now)
        later[pid] += 1
        if pid == 1:
            allowed = sched.within_reach(sched.usable())
            assert sched.overtakers(paths[1], allowed, now, sched.target_delay(allowed),
                                    by_capacity=(name == "blest")) <= budget
    assert picks[0] > 0 and later[0] > later[1]


def holds(sched, now: float = 0.0) -> dict[int, float]:
    """Path -> the hold of the packets the scheduler puts on it."""
    out = {}
    for i in range(50):
        pid, hold = sched.pick(1400, now + i * 1e-3)
        out[pid] = hold
    return out


def test_a_slower_path_carries_its_share_from_the_first_packet_and_the_fast_one_is_held():
    # Wi-Fi 10 ms and cellular 40 ms RTT: 15 ms more one way. Both carry their weight's
    # share at once (no waiting for the fast path to fill), and what goes on the fast
    # path is held 15 ms, so that both deliver at the cellular path's 20 ms.
    paths = paths_with({0: 0.010, 1: 0.040})
    sched = WeightedRoundRobin(paths, estimator_with({0: 20, 1: 10}))
    assert run(sched, 300, gap=0.01)[1] == pytest.approx(100, abs=2)
    assert holds(sched, 3.0) == {0: pytest.approx(0.015), 1: 0.0}


def test_a_path_more_than_50_ms_slower_one_way_is_left_out():
    # 20 vs 200 ms RTT: 90 ms more one way. Every held flow would live at its delay.
    paths = paths_with({0: 0.02, 1: 0.2})
    sched = WeightedRoundRobin(paths, estimator_with({0: 10, 1: 10}))
    assert run(sched, 100, gap=0.01)[1] == 0
    assert holds(sched, 1.0) == {0: 0.0}  # nothing to wait for
    # 10 vs 100 ms (45 ms more one way) is within the limit.
    paths = paths_with({0: 0.01, 1: 0.1})
    sched = WeightedRoundRobin(paths, estimator_with({0: 10, 1: 10}))
    assert run(sched, 100, gap=0.01)[1] == pytest.approx(50, abs=2)
    assert holds(sched, 1.0) == {0: pytest.approx(0.045), 1: 0.0}


def test_paths_of_similar_delay_share_and_a_hold_under_2_ms_is_none():
    paths = paths_with({0: 0.020, 1: 0.023})  # 1.5 ms more one way: measurement noise
    sched = WeightedRoundRobin(paths, estimator_with({0: 10, 1: 10}))
    assert run(sched, 200, gap=0.01)[1] == pytest.approx(100, abs=2)
    assert holds(sched, 2.0) == {0: 0.0, 1: 0.0}


def test_a_backup_path_is_used_only_while_no_other_path_is_usable():
    paths = paths_with({0: 0.02, 1: 0.01})
    paths[1].backup = True  # faster, but metered
    sched = WeightedRoundRobin(paths, estimator_with({0: 10, 1: 10}))
    assert run(sched, 100, gap=0.01)[1] == 0
    assert sched.fastest_usable(0.0) == 0
    paths[0].state = PathState.FAILED
    sched.on_path_state(0, PathState.FAILED, 1.0)
    assert run(sched, 100, now0=1.0, gap=0.01)[1] == 100
    assert sched.fastest_usable(1.0) == 1


def test_prompt_packets_leave_a_path_gone_quiet_before_it_is_declared_failed():
    paths = paths_with({0: 0.01, 1: 0.04})
    sched = WeightedRoundRobin(paths, estimator_with({0: 10, 1: 10}))
    assert sched.fastest_usable(0.05) == 0
    assert sched.fastest_usable(0.15) == 0  # a feedback may be late
    paths[1].on_heard(0.2)  # path 0 was last heard at 0: quiet for longer
    assert paths[0].state is PathState.HEALTHY and sched.fastest_usable(0.2) == 1


def test_lowrtt_fills_the_fastest_first():
    # Equal base delays (no hold); path 0 has the longer queue, so path 1 is fastest.
    paths = paths_with({0: 0.02, 1: 0.02})
    paths[0].srtt = 0.05
    saturate(paths[1])  # full, so that the slower path may take the overflow
    sched = SCHEDULERS["lowrtt"](paths, estimator_with({0: 10, 1: 10}))
    # 1 packet per ms = 1.4 MB/s: path 1 takes its 1.25 MB/s, path 0 the rest.
    picks = run(sched, 5000, gap=1e-3)
    assert picks[1] > picks[0] > 0
    assert picks[1] / 5000 == pytest.approx(1.25 / 1.4, abs=0.05)


def settled_path(est: BandwidthEstimator, weight_mbit: float, pid: int = 0) -> None:
    """A path long out of slow start, weighted `weight_mbit`."""
    est.add_path(pid, -10.0)
    est._paths[pid].weight_bps = weight_mbit * MBIT
    est._paths[pid].slow_start = False


def test_hysteresis_keeps_weight_within_20_percent():
    est = BandwidthEstimator(EstimatorParams(min_weight_bps=MBIT))
    settled_path(est, 10)
    est.on_acked(0, int(9.0 * MBIT), 0.5)  # 9 x 1.25: 12.5 % more than its weight
    assert est.update(1.0) == {}
    est.on_acked(0, int(1.0 * MBIT), 1.2)  # now 10 x 1.25: 25 % more
    assert est.update(1.2) == {0: pytest.approx(12.5 * MBIT)}


# A 1 s window of reports every 50 ms may hold one report more (5 %).
WINDOW_EDGE = 0.06


def deliver(est: BandwidthEstimator, rates: dict[int, tuple[float, float]], t0: float,
            t1: float, saturated: frozenset[int] = frozenset()) -> None:
    """From t0 to t1, path p is offered rates[p][0] Mbit/s and delivers rates[p][1];
    feedback every 50 ms."""
    for step in range(round(t0 / 0.05), round(t1 / 0.05)):
        now = (step + 1) * 0.05
        sent = {}
        for pid, (offered, delivered) in rates.items():
            est.on_acked(pid, int(delivered * MBIT * 0.05), now)
            seen = est._paths[pid].sent  # the bytes-sent totals the estimator was given
            sent[pid] = (seen[-1][1] if seen else 0) + int(offered * MBIT * 0.05)
        est.update(now, saturated, sent)


def test_a_path_keeps_its_capacity_when_it_carries_less_because_it_was_given_less():
    # A path that carried 20 Mbit/s is given 5 for seconds (the inner TCP backed off, or
    # the loss term cut its share) and delivers all of it: it is still offered what it
    # showed, plus a quarter. Before, a path that looked saturated meanwhile was weighted
    # at what it carried, and carried less for it.
    est = BandwidthEstimator()
    settled_path(est, 25)
    deliver(est, {0: (22, 20)}, 0.0, 3.0)
    assert est.weight(0) == pytest.approx(25 * MBIT, rel=WINDOW_EDGE)
    deliver(est, {0: (5, 5)}, 3.0, 6.0, saturated=frozenset({0}))
    assert est.weight(0) == pytest.approx(25 * MBIT, rel=WINDOW_EDGE)
    # Offered more than it delivers: that is what it carries.
    deliver(est, {0: (20, 10)}, 6.0, 8.0)
    assert est.weight(0) == pytest.approx(10 * 1.25 * MBIT, rel=WINDOW_EDGE)


def test_a_path_with_room_is_offered_a_quarter_more_than_it_carried_and_grows_into_it():
    # Given a steady 10 Mbit/s (its share) and delivering it: weighted 12.5, no more (the
    # rule before kept every probe a path not saturated was granted: a clean 30 Mbit/s
    # path was weighted for 62 beside a jittery one weighted at what it carried).
    est = BandwidthEstimator()
    settled_path(est, 12.5)
    deliver(est, {0: (10, 10)}, 0.0, 5.0)
    assert est.weight(0) == pytest.approx(12.5 * MBIT, rel=WINDOW_EDGE)
    # Given what its weight offers and delivering it, it grows a quarter at a time.
    for step in range(100, 200):
        rate = est.weight(0) / MBIT
        deliver(est, {0: (rate, rate)}, step * 0.05, (step + 1) * 0.05)
    assert est.weight(0) > 2 * 12.5 * MBIT


def test_two_full_paths_are_weighted_by_their_rates_whichever_looks_saturated():
    # Wi-Fi delivers 28 Mbit/s and LTE 19 of more each is given; LTE alone is flagged
    # saturated (its jitter reads as queue): the split is the rates' ratio.
    est = BandwidthEstimator()
    for pid in (0, 1):
        settled_path(est, 10, pid)
    deliver(est, {0: (33, 28), 1: (22, 19)}, 0.0, 3.0, saturated=frozenset({1}))
    assert est.weight(0) / est.weight(1) == pytest.approx(28 / 19, rel=WINDOW_EDGE)


def test_a_path_back_from_an_outage_resumes_the_capacity_it_had_shown():
    """Restarted at the minimum weight, a path back from a 1 s outage took 2.6 s of the
    flapping bench's 3 s up to regrow (CUBIC: 65% of the sum, 71% before)."""
    est = BandwidthEstimator()
    settled_path(est, 10)
    deliver(est, {0: (22, 20)}, 0.0, 3.0)
    est.restart_path(0, 4.0)
    assert est.weight(0) == pytest.approx(25 * MBIT, rel=WINDOW_EDGE)
    deliver(est, {0: (22, 20)}, 4.0, 6.0)  # the same link: kept
    assert est.weight(0) == pytest.approx(25 * MBIT, rel=WINDOW_EDGE)
    # Back narrower: offered its weight, it delivers 8, and within a window that is
    # what it is weighted by.
    est.restart_path(0, 7.0)
    deliver(est, {0: (25, 8)}, 7.0, 8.2)
    assert est.weight(0) == pytest.approx(8 * 1.25 * MBIT, rel=WINDOW_EDGE)


def test_a_path_that_never_carried_anything_comes_back_like_a_new_one():
    est = BandwidthEstimator()
    est.add_path(0, 0.0)
    est.restart_path(0, 5.0)
    assert est.weight(0) == est.params.min_weight_bps
    assert est.ramp_cap_bps(0, 5.0) == est.params.min_weight_bps


def test_the_sender_restarts_a_paths_estimate_when_it_comes_back_not_when_it_fails():
    sender = steady_sender()
    sender.estimator._paths[0].capacity_bps = 20 * MBIT
    fast = sender.paths[0]
    fast.last_heard = -1.0
    sender.handle_timer(0.001)
    assert fast.state is PathState.FAILED
    assert sender.estimator._paths[0].capacity_bps == 20 * MBIT
    fast.on_heard(1.0)
    sender.handle_timer(1.0)
    assert fast.state is PathState.DEGRADED
    assert sender.estimator.weight(0) == pytest.approx(25 * MBIT)
    assert sender.estimator._paths[0].added_at == 1.0  # its windows start at the return


def test_new_path_starts_at_minimum_weight_and_ramps():
    params = EstimatorParams()
    est = BandwidthEstimator(params)
    est.add_path(0, 0.0)
    assert est.weight(0) == params.min_weight_bps
    weights = []
    for step in range(1, 81):  # 4 s: 4-fold a second reaches 50x in 2.8 s
        now = step * 0.05
        est.on_acked(0, int(50 * MBIT * 0.05), now)  # a 50 Mbit/s path, fully used
        est.update(now, saturated=frozenset({0}))
        weights.append(est.weight(0))
    assert weights == sorted(weights)
    # Ramp: at most ramp_factor-fold per window of age.
    for step, w in enumerate(weights, start=1):
        assert w <= est.params.min_weight_bps * params.ramp_factor ** (step * 0.05) * 1.0001
    assert weights[-1] == pytest.approx(50 * MBIT * (1 + params.probe_gain), rel=0.2)


def sent(sender: MultipathSender, now: float, n: int = 1):
    """Send n packets now; the `Send`s of those that left (not held)."""
    out = []
    for _ in range(n):
        out += [s.send for s in sender.send(b"x", 1400, now)]
    return out


def test_sender_numbers_packets_and_counts_bad_feedback():
    sender = MultipathSender(0.0)
    sender.add_path(0, ("l", 0), ("r", 0), 1420, 0.0)
    sender.add_path(1, ("l", 1), ("r", 1), 1280, 0.0)
    assert sender.mtu == 1280
    sends = sent(sender, 0.0, 4)
    assert [s.counter for s in sends] == [0, 1, 2, 3]
    assert sorted(s.path_seq for s in sends if s.path_id == 0) == list(
        range(sum(s.path_id == 0 for s in sends)))
    sender.on_feedback(b"junk", 0, 0.01)
    assert sender.counters["feedback_malformed"] == 1


def test_sender_names_a_path_in_data_paths_while_its_last_packet_may_be_under_way():
    sender = MultipathSender(0.0)
    for pid in (0, 1):
        path = sender.add_path(pid, ("l", pid), ("r", pid), 1420, 0.0)
        path.on_rtt_sample(0.02)
        path.rttvar = 0.0
    assert {s.path_id for s in sent(sender, 0.0, 4)} == {0, 1}
    # Path 1 turns out 200 ms RTT: the harm rule leaves it out from now on.
    slow = sender.paths[1]
    slow.srtt = slow.min_rtt = 0.2
    # Its last packet left at 0: owd 100 ms, less the fast path's 10, plus the margin.
    holdover = 0.1 - 0.01 + HOLDOVER_MARGIN_S
    assert sent(sender, holdover - 0.001)[0].data_paths == 0b11
    (last,) = sent(sender, holdover + 0.001)
    assert (last.path_id, last.data_paths) == (0, 0b01)
    slow.state = PathState.FAILED
    assert sent(sender, holdover + 0.002)[0].data_paths == 0b01


def steady_sender() -> MultipathSender:
    """Wi-Fi (10 ms RTT) and cellular (40 ms), equal weights: path 0's packets are
    held 15 ms."""
    sender = MultipathSender(0.0, estimator=EstimatorParams(min_weight_bps=10 * MBIT))
    for pid, rtt in ((0, 0.010), (1, 0.040)):
        path = sender.add_path(pid, ("l", pid), ("r", pid), 1420, 0.0)
        path.on_rtt_sample(rtt)
        path.rttvar = 0.0
    return sender


def test_held_packets_leave_at_their_release_time_in_the_order_they_came():
    sender = steady_sender()
    now = [s for s in sender.send("a", 1400, 0.0)] + [s for s in sender.send("b", 1400, 0.0)]
    # One goes on the slow path at once, one waits 15 ms for the fast path.
    assert [(s.item, s.send.path_id, s.send.counter) for s in now] == [("b", 1, 1)] or \
        [(s.item, s.send.path_id, s.send.counter) for s in now] == [("a", 1, 0)]
    held_item = "a" if now[0].item == "b" else "b"
    assert sender.next_deadline() == pytest.approx(0.015)
    assert sender.release(0.015 - RELEASE_EARLY_S - 1e-6) == []
    (late,) = sender.release(0.015 - RELEASE_EARLY_S)  # due this soon: batched with now
    assert (late.item, late.send.path_id, late.send.path_seq) == (held_item, 0, 0)
    assert late.send.counter == (0 if held_item == "a" else 1)
    # While path 0 has packets held, every packet names it in data_paths: they are
    # older data it will still deliver.
    sender.send("c", 1400, 0.02)
    slow = [s.send for s in sender.send("d", 1400, 0.02)]
    assert all(s.data_paths & 0b01 for s in slow)


def test_held_packets_of_a_failed_path_leave_at_once_on_another():
    sender = steady_sender()
    for i in range(6):
        sender.send(i, 1400, 0.0)
    assert len(sender.delay_line) == 3
    fast = sender.paths[0]
    fast.last_heard = -1.0  # silent for 4 heartbeat intervals: FAILED at the next look
    sender.handle_timer(0.001)
    assert fast.state is PathState.FAILED
    out = sender.release(0.001)
    assert [s.item for s in out] == [0, 2, 4] or [s.item for s in out] == [1, 3, 5]
    assert {s.send.path_id for s in out} == {1}
    assert len(sender.delay_line) == 0


def test_a_heartbeat_marks_below_the_packets_its_path_still_holds():
    sender = steady_sender()
    for i in range(4):
        sender.send(i, 1400, 0.0)
    first_held = sender.delay_line.first_counter(0)
    beats = {b.path_id: b for b in sender.handle_timer(0.101)}  # nothing left for 0.1 s
    assert beats[0].counter_mark == first_held < sender.next_counter
    assert beats[1].counter_mark == sender.next_counter


def carry(est: BandwidthEstimator, pid: int, t0: float, t1: float,
          saturated: bool = False) -> None:
    """The path delivers all it is given (its weight): only probing can grow it."""
    for step in range(round(t0 / 0.05), round(t1 / 0.05)):
        now = (step + 1) * 0.05
        est.on_acked(pid, int(est.weight(pid) * 0.05), now)
        est.update(now, frozenset({pid}) if saturated else frozenset())


def test_a_new_path_doubles_its_weight_each_half_window_until_it_first_saturates():
    fresh, settled = BandwidthEstimator(), BandwidthEstimator()
    fresh.add_path(0, 0.0)
    settled.add_path(0, 0.0)
    carry(fresh, 0, 0.0, 2.0)
    assert fresh.weight(0) >= 8 * fresh.params.min_weight_bps  # probe_gain alone: 2.4x
    carry(settled, 0, 0.0, 1.0, saturated=True)  # saturated at once: no slow start
    carry(settled, 0, 1.0, 2.0)
    assert settled.weight(0) < fresh.weight(0) / 2


def test_loss_every_path_shows_leaves_the_split_alone_a_paths_own_loss_does_not():
    paths = paths_with({0: 0.02, 1: 0.02})
    sched = WeightedRoundRobin(paths, estimator_with({0: 10, 1: 10}))
    # The inner TCP's congestion loss on both, one a little noisier: about even.
    paths[0].steady_loss, paths[1].steady_loss = 0.03, 0.04
    assert run(sched, 5000)[1] / 5000 == pytest.approx(0.5, abs=0.03)
    # A lossy path beside a clean one with room: 1 % of its own leaves it about 4 % of its
    # weight (a loss-limited inner TCP would lose more than the path adds).
    paths[0].steady_loss, paths[1].steady_loss = 0.0, 0.01
    assert run(sched, 5000, now0=1.0)[1] / 5000 == pytest.approx(1 / 27, abs=0.01)


def test_a_paths_own_loss_is_cut_gently_while_the_cleanest_path_is_full():
    # The clean path has a standing queue at the queue tolerance: the flow fills it in spite
    # of the loss it sees, so it is limited by capacity, not by loss (BBR on the lossy
    # pair), and the lossy path's capacity is worth its loss: 1 % of its own leaves it
    # 1 / (1 + (1 / 1.2)^2) of its weight, not 4 %. (Both queue alike: the queue term
    # leaves the split alone.)
    paths = paths_with({0: 0.02, 1: 0.02})
    sched = WeightedRoundRobin(paths, estimator_with({0: 10, 1: 10}))
    for p in paths.values():
        p.srtt = p.min_rtt + SchedulerParams().queue_tolerance_s
    paths[0].steady_loss, paths[1].steady_loss = 0.0, 0.01
    kept = 1 / (1 + (1 / 1.2) ** 2)
    assert run(sched, 5000)[1] / 5000 == pytest.approx(kept / (1 + kept), abs=0.01)


def test_an_idle_path_does_not_grow_its_weight():
    # The slow path of 20 vs 200 ms: skipped by the harm rule, it delivers heartbeats only.
    est = BandwidthEstimator()
    est.add_path(0, 0.0)
    for step in range(1, 101):
        est.on_acked(0, 40, step * 0.05)
        est.update(step * 0.05)
    assert est.weight(0) == est.params.min_weight_bps


def test_a_path_that_queues_more_than_the_others_gets_less():
    # Equal base delays; path 1's packets arrive 15 ms after path 0's (its queue): at the
    # tolerance its weight is halved, so it carries a third, until it catches up.
    paths = paths_with({0: 0.02, 1: 0.02})
    sched = WeightedRoundRobin(paths, estimator_with({0: 10, 1: 10}))
    paths[1].srtt = 0.02 + SchedulerParams().queue_tolerance_s
    assert run(sched, 3000)[1] / 3000 == pytest.approx(1 / 3, abs=0.01)
    paths[0].srtt = paths[1].srtt  # both queue alike: no one's fault
    assert run(sched, 3000, now0=1.0)[1] / 3000 == pytest.approx(0.5, abs=0.01)


def report_loss(path, lost_share: float, now: float, packets: int = 100) -> None:
    """One feedback report: `packets` more arrived on the path, a share of them lost."""
    lost = round(packets * lost_share)
    path.on_report(path._acked_packets + packets - lost, path._acked_bytes + 1400 * packets,
                   path._acked_lost + lost, now)


def test_congestion_loss_that_moves_between_paths_leaves_the_split_alone():
    """A constant-rate flow at 96 % of two equal links: each in turn loses a few percent
    while the other is short of its share. Cut by the last few reports' loss, the split
    swung ~55:45 every 0.4 s and kept both queues full (the UDP bench row lost 8 %); the
    loss over seconds is about even, and the split stays even. A path's own 1 % stays."""
    paths = paths_with({0: 0.02, 1: 0.02})
    sched = WeightedRoundRobin(paths, estimator_with({0: 10, 1: 10}))
    shares = []
    for step in range(80):  # 4 s of reports, every 50 ms
        losing = (step // 8) % 2  # 0.4 s each
        report_loss(paths[losing], 0.06, step * 0.05)
        report_loss(paths[1 - losing], 0.0, step * 0.05)
        if step >= 40:
            shares.append(run(sched, 500, now0=step * 0.05)[1] / 500)
    assert paths[0].loss_rate > 0.03 or paths[1].loss_rate > 0.03  # health sees it now
    assert max(shares) - min(shares) < 0.06 and min(shares) > 0.44
    for step in range(80, 200):  # then path 1 loses 1 % of its own, path 0 nothing
        report_loss(paths[0], 0.0, step * 0.05)
        report_loss(paths[1], 0.01, step * 0.05)
    assert run(sched, 2000, now0=10.0)[1] / 2000 < 0.1


def test_a_path_failing_or_coming_back_forgets_every_paths_steady_loss():
    """The loss each path saw was congestion under the old split: kept, the path that
    carried everything during an outage was cut to nothing for 2 s once the other came
    back at 0 % (the flapping bench row: the remaining path carried 0.5 Mbit/s)."""
    sender = steady_sender()
    for path in sender.paths.values():
        path.steady_loss = 0.04
    fast = sender.paths[0]
    fast.last_heard = -1.0  # silent for 4 heartbeat intervals: FAILED at the next look
    sender.handle_timer(0.001)
    assert fast.state is PathState.FAILED
    assert [p.steady_loss for p in sender.paths.values()] == [0.0, 0.0]
    sender.paths[1].steady_loss = 0.05  # carrying everything meanwhile
    fast.on_heard(1.0)  # back
    sender.handle_timer(1.0)
    assert fast.state is PathState.DEGRADED and sender.paths[1].steady_loss == 0.0


def test_after_a_path_comes_back_the_split_follows_the_fast_loss_for_a_while():
    """Just after a return the path that carried everything is still congested: its
    fast loss moves the split onto the returning path at once (BBR over the flapping
    pair: 28.9 against 26.6 Mbit/s with the split left to the estimator's ramp)."""
    paths = paths_with({0: 0.010, 1: 0.010})
    sched = WeightedRoundRobin(paths, estimator_with({0: 10, 1: 10}))
    paths[1].loss_rate = 0.08  # the one that stayed: congestion from the outage
    assert run(sched, 2000)[1] / 2000 == pytest.approx(0.5, abs=0.03)  # steady: both 0
    sched.on_usable_changed(1.0)
    assert run(sched, 2000, now0=1.1)[1] / 2000 < 0.05
    # Once the steady loss has had its 2 s, it decides again.
    assert run(sched, 2000, now0=3.1)[1] / 2000 == pytest.approx(0.5, abs=0.03)
