"""The multipath core in simulated time: properties of the algorithm on seeded
scenarios (deterministic), not timing tests; every second here is simulated."""

from __future__ import annotations

import pytest

from whalescale.multipath.simulate import SCENARIOS, best_single_path, main, simulate

TCP_SCENARIOS = [name for name, sc in SCENARIOS.items() if sc.flow == "tcp"]


def test_equal_paths_reach_ninety_percent_of_the_sum():
    result = simulate(SCENARIOS["equal"], "wrr", seed=1)
    assert result.fraction >= 0.90
    assert result.reorder.max_depth * 1400 <= 4 << 20


@pytest.mark.parametrize("name", TCP_SCENARIOS)
def test_default_scheduler_never_worse_than_the_best_single_path(name):
    sc = SCENARIOS[name]
    result = simulate(sc, "wrr", seed=1)
    assert result.goodput_Bps >= 0.95 * best_single_path(sc, seed=1).goodput_Bps
    assert result.reorder.max_depth * 1400 <= 4 << 20


def test_a_dying_path_stalls_the_flow_less_than_a_second():
    result = simulate(SCENARIOS["path_dies"], "wrr", seed=1)
    assert result.max_stall_s < 1.0
    late = result.timeline[200:]  # from 20 s: the survivor carries the flow alone
    assert sum(late) / len(late) >= 0.9 * SCENARIOS["path_dies"].paths[0].rate_Bps


def test_same_seed_same_run():
    sc = SCENARIOS["lossy_1pct"]
    assert simulate(sc, "wrr", seed=3) == simulate(sc, "wrr", seed=3)


def test_cli_prints_a_row_per_scheduler(capsys):
    assert main(["--scenario", "equal_udp"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in out[1:]] == ["wrr", "lowrtt", "blest", "best1"]


@pytest.mark.parametrize(("name", "floor"), [("wifi_lte", 1.5), ("wifi_lte_jitter", 1.3),
                                             ("rtt_1_10", 1.3)])
def test_unequal_delays_aggregate_well_beyond_the_fast_path_alone(name, floor):
    # Wi-Fi + cellular (10 vs 40 ms RTT; 8 vs 50 ms with 8 ms of jitter; 10 vs 100 ms):
    # the steady delay lets one flow use both. Before it, the fast path alone (1.0x).
    sc = SCENARIOS[name]
    result = simulate(sc, "wrr", seed=1)
    assert result.goodput_Bps >= floor * best_single_path(sc, seed=1).goodput_Bps
    assert result.reorder.late_drops == 0


def test_a_constant_rate_flow_over_unequal_delays_loses_under_5_percent():
    result = simulate(SCENARIOS["wifi_lte_udp"], "wrr", seed=1)
    assert result.fraction >= 0.95 * SCENARIOS["wifi_lte_udp"].udp_rate_fraction
