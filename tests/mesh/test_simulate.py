"""The gossip core in simulated time: convergence and bandwidth after churn.

These are properties of the algorithm on a seeded topology (deterministic), not
timing tests: every second here is simulated.
"""

from __future__ import annotations

import pytest

from whalescale.mesh.simulate import (
    TARGET_BYTES_PER_NODE_S,
    TARGET_CONVERGENCE_S,
    build_topology,
    main,
    simulate,
)


def test_fifty_nodes_converge_fast_and_cheaply():
    result = simulate(nodes=50, churn=0.1, seed=1, duration_s=900)
    assert result.churned == 5
    assert result.convergence_s is not None
    assert result.convergence_s < 5.0  # well inside the 30 s target
    assert result.bytes_per_node_s_first_30s < TARGET_BYTES_PER_NODE_S / 2
    # Afterwards only root digests on the slow timer: a few bytes a second.
    assert result.bytes_per_node_s_steady < 2.0
    assert not {"bad_signature", "malformed", "rate_limited"} & result.counters.keys()


def test_same_seed_same_run():
    assert simulate(nodes=30, seed=7, duration_s=120) == simulate(nodes=30, seed=7,
                                                                    duration_s=120)


@pytest.mark.parametrize("seed", [1, 2])
def test_two_hundred_nodes_ten_percent_churn_meet_the_target(seed):
    result = simulate(nodes=200, churn=0.1, seed=seed, duration_s=600)
    assert result.convergence_s is not None and result.convergence_s < TARGET_CONVERGENCE_S
    assert result.bytes_per_node_s_first_30s < TARGET_BYTES_PER_NODE_S


def test_topology_gives_every_node_its_degree_and_anchors_many_links():
    import random

    names = ["anchor0", "anchor1", *(f"n{i}" for i in range(98))]
    links = build_topology(names, random.Random(1), degree=8, anchors=2, anchor_fraction=0.3)
    degree = {n: sum(n in link for link in links) for n in names}
    assert min(degree[n] for n in names[2:]) >= 8
    assert min(degree["anchor0"], degree["anchor1"]) >= 30


def test_cli_prints_the_figures(capsys):
    assert main(["--nodes", "20", "--seed", "3", "--duration", "60"]) == 0
    out = capsys.readouterr().out
    assert "converged" in out and "bytes/node/s" in out
