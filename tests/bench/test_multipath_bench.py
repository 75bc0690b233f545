"""`whalescale bench multipath` end to end, short: one scenario, one scheduler variant and
the single-path references, in real namespaces; the report, its plots and sane figures.

Sanity only, not performance: 3-second flows on two shared cores say little about a
scheduler, but every figure must be a number in its range and every file must be there.
"""

import json
import subprocess
from pathlib import Path

import attrs
import pytest

from whalescale.bench import links, multipath
from whalescale.bench.links import EmulatorCeiling
from whalescale.bench.multipath import (
    INTERVAL_S,
    REF_TCP,
    REF_WS,
    SCENARIOS,
    Options,
    check_scenarios,
    max_stall_s,
    run_bench,
)
from whalescale.cli import build_parser
from whalescale.lab import Lab

pytestmark = pytest.mark.lab

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SECONDS = 3.0


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def test_max_stall_counts_the_longest_run_of_near_empty_intervals() -> None:
    assert max_stall_s([10, 10, 0, 0, 10, 0, 10], interval_s=0.5) == 1.0
    assert max_stall_s([10, 10, 0, 0, 10, 0, 10]) == pytest.approx(2 * INTERVAL_S)
    assert max_stall_s([10, 10, 10]) == 0.0
    assert max_stall_s([]) == 0.0


def test_flapping_timeline_downs_and_ups_within_the_run() -> None:
    timeline = SCENARIOS["flapping"].timeline(10)
    assert timeline == [(2.0, 1, False), (3.0, 1, True), (6.0, 1, False), (7.0, 1, True)]
    assert SCENARIOS["dies"].down_spans(10) == [(1, 4.0, 10)]


def test_scenarios_that_would_measure_the_emulator_are_refused() -> None:
    slow = EmulatorCeiling(udp_pps=5000, udp_mbit=60, tcp_mbit=70, delay_ms=10,
                           ping_rtt_ms=20, probe_one_way_ms=10, probe_one_way_p99_ms=11)
    problems = check_scenarios(["equal", "ratio"], slow)
    assert any(p.startswith("scenario ratio:") and "60 Mbit/s" in p for p in problems)
    fast = attrs.evolve(slow, udp_mbit=1000, tcp_mbit=1000)
    assert check_scenarios(list(SCENARIOS), fast) == []


def test_cli_takes_scenarios_and_variants() -> None:
    args = build_parser().parse_args(["bench", "multipath", "--out", "x", "--seconds", "3",
                                      "--scenario", "equal", "--scenario", "dies",
                                      "--variant", "wrr", "--congestion", "cubic"])
    assert (args.out, args.seconds, args.scenario, args.variant, args.congestion) == (
        Path("x"), 3.0, ["equal", "dies"], ["wrr"], "cubic")


def test_one_short_scenario_writes_a_sane_report(lab_skip_reason: None, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    prefixes: list[str] = []  # of the labs this bench makes (other tests may run labs too)

    class RecordedLab(Lab):
        def __init__(self, prefix: str | None = None) -> None:
            super().__init__(prefix)
            prefixes.append(self.prefix)

    monkeypatch.setattr(multipath, "Lab", RecordedLab)
    monkeypatch.setattr(links, "Lab", RecordedLab)  # measure_ceiling's own lab
    out = tmp_path / "report"
    options = Options(seconds=SECONDS, scenarios=("equal",), variants=("wrr",),
                      references=(REF_TCP, REF_WS), ceiling_seconds=1.0, congestion="cubic")
    data = run_bench(out, options, log=lambda _: None)
    assert len(prefixes) == 2  # the ceiling's and the scenario's
    assert not [ns for ns in namespaces() if ns.startswith(tuple(prefixes))]  # torn down

    report = (out / "report.md").read_text()
    assert "## equal" in report
    assert "| of ws alone |" in report
    assert "emulator ceiling" in report
    assert "TCP congestion control of every flow (the sender's): cubic" in report
    for png in ("goodput.png", "throughput.png"):
        assert (out / png).read_bytes().startswith(PNG_MAGIC)
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(data))

    assert data["ceiling"]["mbit"] > 2 * SCENARIOS["equal"].sum_mbit
    (scenario,) = data["scenarios"]
    rows = {r["name"]: r for r in scenario["rows"]}
    assert set(rows) == {"TCP path0 alone", "TCP path1 alone", "whalescale best path alone",
                         "whalescale WRR"}
    total = scenario["sum_mbit"]
    assert 0 < scenario["best_single_mbit"] <= 0.6 * total  # one 20 of 40 Mbit/s
    for name, row in rows.items():
        assert row["note"] == "" or "no --scheduler" in row["note"], (name, row["note"])
        assert 0.1 * total / 2 < row["goodput_mbit"] <= 1.1 * total, name
        assert row["of_sum"] == pytest.approx(row["goodput_mbit"] / total)
        assert 0 < row["of_best"] < 2.5
        assert row["retransmits"] >= 0
        assert row["congestion"] == "cubic", name  # tunnelled flows too
        assert 0 <= row["max_stall_s"] <= SECONDS
        assert len(row["intervals_mbit"]) >= SECONDS / INTERVAL_S - 1
    for name in ("whalescale WRR", "whalescale best path alone"):
        row = rows[name]
        assert 0 < row["udp_goodput_mbit"] <= 1.1 * total
        assert 0 <= row["udp_loss"] <= 1
        assert row["of_ws_single"] == pytest.approx(
            row["goodput_mbit"] / rows["whalescale best path alone"]["goodput_mbit"])
        if row["reorder"] is not None:  # an agent without multipath reports none
            for key in ("gaps_skipped", "late_drops"):
                assert row["reorder"][key] >= 0
