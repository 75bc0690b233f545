"""The roaming table (`whalescale lab roam`): medians per VPN, a dash where a VPN never
answered; the command itself runs nebula and is not part of the suite."""

from whalescale.lab.roam import EVENTS, Run, render


def test_the_table_gives_medians_per_vpn_and_a_dash_for_what_never_came():
    gaps = {e.name: 1.0 for e in EVENTS}
    found = [Run("nebula", 1.0, gaps), Run("whalescale", 2.0, gaps | {"moves": 0.2}),
             Run("nebula", 3.0, {}), Run("whalescale", None, gaps | {"moves": 0.4})]
    table = render(found)
    assert table.splitlines()[0] == ("| what (median of 2 runs, and their range) | nebula "
                                     "| whalescale |")
    assert "| first answer from start | 2.00 s (1.00-3.00) | 2.00 s |" in table
    moved = next(line for line in table.splitlines() if "peer-a sending" in line
                 and "moves" in line)
    assert moved.endswith("| 1.00 s | 0.30 s (0.20-0.40) |")
    assert len([line for line in table.splitlines() if "longest gap" in line]) == len(EVENTS)


def test_a_vpn_with_no_figure_gets_a_dash():
    assert "| first answer from start | - |" in render([Run("whalescale", None, {})])
