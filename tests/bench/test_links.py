"""The bench's emulated links in real namespaces: delay, loss, rate, a dying path, the
kernel-MPTCP reference and the emulator's own ceiling.

Tolerances are wide on purpose: the two cores run both hosts' tools, the emulators and
whatever else the machine does, and a scheduling hiccup adds delay, never removes it.
"""

import statistics

import pytest

from whalescale.bench.links import (
    EmulatedLinks,
    EmulatorCeiling,
    LinkSpec,
    ceiling_problems,
    measure_ceiling,
    ping_rtts_ms,
    udp_probe,
)
from whalescale.bench.mptcp import mptcp_available, mptcp_reference
from whalescale.lab import Lab
from whalescale.lab.iperf import iperf_tcp

pytestmark = pytest.mark.lab


def replies(rtts: list[float | None]) -> list[float]:
    return [r for r in rtts if r is not None]


def test_each_link_round_trip_is_twice_its_one_way_delay(lab: Lab) -> None:
    bench = EmulatedLinks(lab, [LinkSpec(delay_ms=5), LinkSpec(delay_ms=25)])
    for link in bench.links:
        # Left pings right's address on link k, which only link k reaches.
        rtts = replies(ping_rtts_ms(bench.left, link.right_addr, count=10))
        assert len(rtts) == 10
        wanted = 2 * link.spec.delay_ms
        assert wanted <= statistics.median(rtts) < wanted * 1.15 + 2


def test_loss_and_jitter_as_asked_without_reordering(lab: Lab) -> None:
    bench = EmulatedLinks(lab, [LinkSpec(delay_ms=2, loss=0.1),
                                LinkSpec(delay_ms=10, jitter_ms=4)])  # fmt: skip
    lossy, jittery = bench.links
    # 500 probes one way: binomial sd is 1.3 points, so 6..14 % is about 3 sd.
    result = udp_probe(bench.left, bench.right, lossy.right_addr, count=500, interval_ms=1)
    assert 0.06 <= result.loss <= 0.14
    stats = bench.emulator_stats(0)
    # the emulator dropped what went missing, give or take a few frames: the kernel
    # itself drops the odd probe while the first address resolution is pending (its
    # queue holds 3), and the emulator's loss also hits the odd ARP or IPv6 neighbour
    # frame crossing the link meanwhile
    missing = 500 - result.received
    assert missing - 3 <= stats["left"]["lost"] <= missing + 3  # type: ignore[index]

    # Resolve the neighbour first: probes queued behind a pending ARP request leave in a
    # burst once it is answered, behind any that slipped past it (seen: 9 of 200).
    assert bench.left.ping(jittery.right_addr, count=3, timeout=1.0)
    result = udp_probe(bench.left, bench.right, jittery.right_addr, count=200, interval_ms=2)
    assert result.received == 200
    assert result.reordered == 0
    delays = sorted(result.one_way_ms)
    assert delays[0] >= 6 - 0.1
    assert delays[-1] - delays[0] > 4  # the delay does vary


def test_tbf_holds_tcp_to_the_link_rate(lab: Lab) -> None:
    bench = EmulatedLinks(lab, [LinkSpec(rate_mbit=20, delay_ms=5)])
    mbit = iperf_tcp(bench.left, bench.right, bench.links[0].right_addr, 3).gbit_s * 1000
    assert 17 <= mbit <= 20.5


def test_a_link_set_down_stops_only_that_link_and_comes_back(lab: Lab) -> None:
    # One emulated link and one bridged one: both ways of going down.
    bench = EmulatedLinks(lab, [LinkSpec(delay_ms=1), LinkSpec()])
    for k in (0, 1):
        down, other = bench.links[k], bench.links[1 - k]
        bench.set_down(k)
        assert replies(ping_rtts_ms(bench.left, down.right_addr, count=3, timeout_s=0.3)) == []
        assert len(replies(ping_rtts_ms(bench.left, other.right_addr, count=3))) == 3
        bench.set_up(k)
        # The neighbour entry that failed while the link was down may cost the first echo.
        assert len(replies(ping_rtts_ms(bench.left, down.right_addr, count=4))) >= 3


def test_update_gives_a_bridged_link_its_delay(lab: Lab) -> None:
    bench = EmulatedLinks(lab, [LinkSpec()])
    link = bench.links[0]
    assert link.proc is None
    bench.update(0, LinkSpec(delay_ms=15))
    rtts = replies(ping_rtts_ms(bench.left, link.right_addr, count=5))
    assert 30 <= statistics.median(rtts) < 36


def test_kernel_mptcp_beats_the_best_single_path(lab: Lab) -> None:
    if (reason := mptcp_available()) is not None:
        pytest.skip(reason)
    bench = EmulatedLinks(lab, [LinkSpec(rate_mbit=40, delay_ms=2),
                                LinkSpec(rate_mbit=20, delay_ms=2)])  # fmt: skip
    ref = mptcp_reference(bench, seconds=4)
    assert 35 <= ref.single_path_mbit[0] <= 40.5
    assert 17 <= ref.single_path_mbit[1] <= 20.5
    # Seen: ~95 % of the sum; the brief's bridged links gave 97 %.
    assert ref.mptcp_mbit > 1.2 * ref.best_single_mbit


def test_the_emulator_measures_its_own_ceiling() -> None:
    ceiling = measure_ceiling(seconds=1.5, delay_ms=10)
    assert ceiling.udp_pps > 5_000
    assert ceiling.tcp_mbit > 50
    assert 20 <= ceiling.ping_rtt_ms < 25
    assert 10 <= ceiling.probe_one_way_ms < 12.5
    assert ceiling_problems([LinkSpec(rate_mbit=ceiling.mbit, delay_ms=10)], ceiling)
    assert not ceiling_problems([LinkSpec(rate_mbit=ceiling.mbit / 4, delay_ms=10)], ceiling)


def test_a_scenario_near_the_ceiling_is_flagged() -> None:
    ceiling = EmulatorCeiling(udp_pps=50_000, udp_mbit=600, tcp_mbit=400, delay_ms=10,
                              ping_rtt_ms=20, probe_one_way_ms=10, probe_one_way_p99_ms=11)
    specs = [LinkSpec(rate_mbit=150, delay_ms=10), LinkSpec(rate_mbit=100, delay_ms=100)]
    assert ceiling_problems(specs, ceiling) == [
        "emulated links sum to 250 Mbit/s, over 50% of the emulator's ceiling (400 Mbit/s)"
    ]
    assert ceiling_problems([LinkSpec(rate_mbit=900)], ceiling) == []  # bridged: kernel speed
    assert ceiling_problems([LinkSpec(loss=0.01)], ceiling) == [
        "link 0: emulated without a rate; the emulator is the limit"
    ]
