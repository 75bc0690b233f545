"""What the NAT matrix reads from an agent's log (lab/natmatrix.py): when a pair went direct."""

from __future__ import annotations

import datetime

import pytest

from whalescale.lab.natmatrix import agent_up, went_direct

AGENT = "INFO whalescale.agent:"
LOG = f"""\
2026-12-03 13:00:00,900 {AGENT} node a (SHA256:x) up on ws0, mtu 1420, udp port 51820
2026-12-03 13:00:01,100 {AGENT} handshake with b at [100::3]:0: initiating (x)
2026-12-03 13:00:01,250 {AGENT} session with b established via [100::3]:0 (as initiator)
2026-12-03 13:00:01,300 {AGENT} session with c established via 203.0.113.9:51820 (as responder)
2026-12-03 13:00:02,500 {AGENT} peer b now at 203.0.113.2:51820 (was [100::3]:0)
"""


def stamp(text: str) -> float:
    return datetime.datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def test_a_relayed_session_goes_direct_when_it_moves_to_a_real_endpoint():
    assert went_direct(LOG, "b") == stamp("2026-12-03 13:00:02,500")
    assert went_direct(LOG, "c") == stamp("2026-12-03 13:00:01,300")
    assert went_direct(LOG, "d") is None
    assert went_direct(LOG.splitlines()[1] + "\n", "b") is None  # the relay alone


def test_when_the_agent_was_up():
    assert agent_up(LOG) == stamp("2026-12-03 13:00:00,900")
    assert agent_up(LOG.split("\n", 1)[1]) is None


def test_the_table_gets_the_alone_columns_only_when_measured():
    from whalescale.lab.natlab import Path
    from whalescale.lab.natmatrix import PAIRS, Cell, Matrix, render_side_by_side

    pair = PAIRS[0]
    ours = Matrix("whalescale", {pair: Cell(True, 2.5, Path.DIRECT, both_up_s=2.0)})
    nebula = Matrix("nebula", {pair: Cell(True, 0.9, Path.RELAYED)})
    assert "alone" not in render_side_by_side(ours, nebula).splitlines()[0]
    ours.cells[pair] = Cell(True, 2.5, Path.DIRECT, both_up_s=2.0, alone_s=0.74)
    nebula.cells[pair] = Cell(True, 0.9, Path.RELAYED, alone_s=0.61)
    header, _, row, *_ = render_side_by_side(ours, nebula).splitlines()
    assert header.endswith("| whalescale alone | nebula alone |")
    assert row.endswith("| 0.74 s | 0.61 s |")
    assert "direct 2.5 s (0.5 s after up)" in row


def test_the_footer_says_when_the_agents_were_up():
    from whalescale.lab.natlab import Path
    from whalescale.lab.natmatrix import PAIRS, Cell, Matrix, render_side_by_side

    cells = {PAIRS[0]: Cell(True, 2.5, Path.DIRECT, both_up_s=2.0)}
    assert "agents were up" not in render_side_by_side(Matrix("whalescale", cells),
                                                        Matrix("nebula", {}))
    ours = Matrix("whalescale", cells, [0.62, 1.0, 1.94])
    assert "whalescale's 3 agents were up 0.6-1.9 s after the start" in \
        render_side_by_side(ours, Matrix("nebula", {}))


def test_rounds_make_one_matrix_of_medians_and_mark_a_path_not_every_round_saw():
    from whalescale.lab.natlab import Path
    from whalescale.lab.natmatrix import PAIRS, Cell, Matrix, medians, render_side_by_side

    a, b = PAIRS[0], PAIRS[1]
    rounds = [
        Matrix("whalescale", {a: Cell(True, 1.6, Path.DIRECT, 1.5, 1.4, 0.3),
                              b: Cell(True, 2.0, Path.RELAYED, None, 1.7)}, [1.3, 1.7], 1),
        Matrix("whalescale", {a: Cell(True, 4.8, Path.DIRECT, 4.7, 1.9, 3.3),
                              b: Cell(True, 2.2, Path.DIRECT, 2.1, 1.8)}, [1.6, 1.9], 1),
        Matrix("whalescale", {a: Cell(True, 2.0, Path.DIRECT, 1.9, 1.8, 0.4),
                              b: Cell(True, 2.1, Path.RELAYED, None, 1.9)}, [1.5, 1.8], 1),
    ]
    got = medians(rounds)
    # after up: each round's 0.2 / 2.9 / 0.2 s, median 0.2 (not 2.0 - 1.8 of the medians)
    assert got.cells[a] == Cell(True, 2.0, Path.DIRECT, 1.9, pytest.approx(1.8), 0.4)
    assert str(got.cells[a]) == "direct 2.0 s (0.2 s after up)"
    assert got.cells[b].path is Path.RELAYED and got.cells[b].varied
    assert str(got.cells[b]).startswith("relayed* 2.1 s")
    assert got.cells[b].direct_s == 2.1  # the one round that went direct
    assert got.runs == 3 and medians(rounds[:1]) is rounds[0]
    footer = render_side_by_side(got, Matrix("nebula", {})).splitlines()[-1]
    assert "whalescale's 2 agents were up 1.3-1.9 s" in footer
    assert "median of 3 rounds" in footer
