"""What `whalescale lab soak` reads from iperf3 and prints (the soak itself is a 30-minute
command, not part of the suite)."""

from whalescale.lab.soak import SoakResult, _stall, render


def interval(nbytes: int) -> dict:
    return {"sum": {"bytes": nbytes, "seconds": 0.5}}


def test_the_longest_run_of_empty_intervals_is_the_stall():
    report = {"intervals": [interval(9), interval(0), interval(0), interval(7), interval(0)],
              "end": {"sum_received": {"bits_per_second": 10e6}}}
    assert _stall(report) == (1.0, 10.0)


def test_the_table_marks_the_killed_nodes_flow_and_a_broken_one():
    table = render(SoakResult(30, 60, 6, {"peer-a -> peer-b": 4.0, "anchor-1 -> anchor-2": None},
                              {"peer-a -> peer-b": 9.9, "anchor-1 -> anchor-2": None},
                              {"anchor-1": 0.4}))
    assert "| peer-a -> peer-b (involves the killed node) | 4.0 s | 9.9 Mbit/s |" in table
    assert "| anchor-1 -> anchor-2 | broke | - |" in table
    assert "| anchor-1 | +0.4 MiB |" in table
