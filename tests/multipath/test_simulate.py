"""The multipath core in simulated time: properties of the algorithm on seeded
scenarios (deterministic), not timing tests; every second here is simulated."""

from __future__ import annotations

import pytest

from whalescale.multipath.simulate import SCENARIOS, best_single_path, main, simulate

TCP_SCENARIOS = [name for name, sc in SCENARIOS.items() if sc.flow == "tcp"]


def test_equal_paths_reach_ninety_percent_of_the_sum():
    result = simulate(SCENARIOS["equal"], "wrr", seed=1)
    assert result.fraction >= 0.90
    assert result.reorder.max_depth <= 128


@pytest.mark.parametrize("name", TCP_SCENARIOS)
def test_default_scheduler_never_worse_than_the_best_single_path(name):
    sc = SCENARIOS[name]
    result = simulate(sc, "wrr", seed=1)
    assert result.goodput_Bps >= 0.95 * best_single_path(sc, seed=1).goodput_Bps
    assert result.reorder.max_depth <= 128


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
