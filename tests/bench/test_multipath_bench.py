"""`whalescale bench multipath` end to end, short: one scenario, one scheduler variant and
the single-path references, in real namespaces; the report, its plots and sane figures.

Sanity only, not performance: 3-second flows on two shared cores say little about a
scheduler, but every figure must be a number in its range and every file must be there.
"""

import json
import subprocess
import time
from pathlib import Path

import attrs
import pytest

from whalescale.bench import links, multipath
from whalescale.bench.links import EmulatorCeiling, LinkSpec
from whalescale.bench.multipath import (
    INTERVAL_S,
    REF_MPTCP,
    REF_TCP,
    REF_WS,
    SCENARIOS,
    Options,
    RateChange,
    Row,
    aggregate,
    check_scenarios,
    max_stall_s,
    percentile,
    plot,
    report_md,
    rtt_ratio_points,
    run_bench,
)
from whalescale.cli import build_parser
from whalescale.lab import Lab

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
                                      "--variant", "wrr", "--congestion", "cubic",
                                      "--repeat", "3"])
    assert (args.out, args.seconds, args.scenario, args.variant, args.congestion,
            args.repeat) == (Path("x"), 3.0, ["equal", "dies"], ["wrr"], "cubic", 3)
    assert build_parser().parse_args(["bench", "multipath"]).repeat == 1


def test_the_wifi_cellular_scenarios_follow_the_six_and_keep_their_rtts() -> None:
    names = list(SCENARIOS)
    assert names[:6] == ["equal", "ratio", "rtt", "lossy", "dies", "flapping"]
    assert names[6:] == ["rtt-1-2", "wifi-lte", "wifi-lte-jitter", "rtt-1-6", "rtt-1-10",
                         "slow-wide", "lte-varies"]
    rtts = {n: tuple(2 * ln.delay_ms for ln in SCENARIOS[n].links) for n in names[6:]}
    assert rtts == {"rtt-1-2": (10, 20), "wifi-lte": (10, 40), "wifi-lte-jitter": (8, 50),
                    "rtt-1-6": (10, 60), "rtt-1-10": (10, 100), "slow-wide": (10, 40),
                    "lte-varies": (10, 50)}
    assert SCENARIOS["wifi-lte-jitter"].links[1].jitter_ms == 4
    assert [ln.rate_mbit for ln in SCENARIOS["slow-wide"].links] == [15, 30]
    assert SCENARIOS["lte-varies"].sum_mbit == 40  # the nominal rates


def test_rate_changes_cycle_every_3_s_and_end_at_the_nominal_rate() -> None:
    scenario = SCENARIOS["lte-varies"]
    assert scenario.rate_timeline(13) == [
        RateChange(3.0, 1, 8), RateChange(6.0, 1, 30), RateChange(9.0, 1, 12),
        RateChange(12.0, 1, 20), RateChange(13, 1, 20)]
    short = scenario.rate_timeline(7)
    assert [(c.at_s, c.rate_mbit) for c in short] == [(3.0, 8), (6.0, 30), (7, 20)]
    assert scenario.timeline(13) == []  # no downs: nothing shaded
    assert SCENARIOS["wifi-lte"].rate_timeline(13) == []


def test_rate_changes_are_replayed_on_the_links_and_undone(monkeypatch) -> None:
    """`_events` drives EmulatedLinks.update with the nominal spec at the new rate, and
    leaves every link at its nominal spec."""
    calls: list[tuple[float, int, LinkSpec]] = []
    scenario = attrs.evolve(SCENARIOS["lte-varies"], rate_cycle=(1, 0.1, (8, 30)))

    class FakeLink:
        def __init__(self, spec: LinkSpec) -> None:
            self.spec, self.down = spec, False

    class FakeLinks:
        def __init__(self) -> None:
            self.links = [FakeLink(s) for s in scenario.links]

        def update(self, k: int, spec: LinkSpec) -> None:
            calls.append((time.monotonic(), k, spec))
            self.links[k].spec = spec

    start = time.monotonic()
    with multipath._events(FakeLinks(), scenario, 0.35):  # type: ignore[arg-type]
        time.sleep(1.0)
    nominal = scenario.links[1]
    assert [(k, spec) for _, k, spec in calls] == [
        (1, attrs.evolve(nominal, rate_mbit=8)), (1, attrs.evolve(nominal, rate_mbit=30)),
        (1, attrs.evolve(nominal, rate_mbit=8)), (1, nominal)]
    elapsed = [t - start for t, _, _ in calls]
    assert elapsed == sorted(elapsed)
    assert elapsed[0] >= 0.1 and elapsed[-1] >= 0.35  # not before their time


def test_the_peak_of_a_varying_rate_is_held_to_the_ceiling() -> None:
    ceiling = EmulatorCeiling(udp_pps=5000, udp_mbit=96, tcp_mbit=96, delay_ms=10,
                              ping_rtt_ms=20, probe_one_way_ms=10, probe_one_way_p99_ms=11)
    # nominal 40 Mbit/s fits under 48; the 30 Mbit/s step (50 in all) does not
    assert check_scenarios(["wifi-lte", "slow-wide"], ceiling) == []
    (problem,) = check_scenarios(["lte-varies"], ceiling)
    assert "50 Mbit/s" in problem


def test_ping_percentiles_are_nearest_rank_and_count_lost_echoes() -> None:
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 50) == 3.0
    assert percentile([float(i) for i in range(1, 21)], 95) == 19.0
    assert percentile([], 50) is None
    row = Row("x", REF_TCP)
    multipath._ping_into(row, "load", [10.0, None, 30.0, 20.0, None])
    assert (row.ping_load_p50_ms, row.ping_load_p95_ms, row.ping_load_lost) == (20.0, 30.0, 2)
    assert row.ping_load_rtts_ms == [10.0, None, 30.0, 20.0, None]


def _row(name: str, kind: str, goodput: float | None, best: float, ws: float | None,
         total: float, ping: float = 10.0) -> dict:
    row = Row(name, kind, goodput_mbit=goodput, retransmits=3, congestion="cubic",
              intervals_mbit=[goodput or 0.0] * 5, max_stall_s=0.0)
    if goodput is not None:
        row.of_sum, row.of_best = goodput / total, goodput / best
        row.of_ws_single = goodput / ws if ws else None
    multipath._ping_into(row, "idle", [ping] * 19 + [None])
    multipath._ping_into(row, "load", [ping * 3] * 30)
    return attrs.asdict(row)


def _run(name: str, run: int, ws_wrr: float, mptcp: float, best: float = 18.0) -> dict:
    scenario = SCENARIOS[name]
    total = scenario.sum_mbit
    return {"scenario": name, "title": scenario.title, "run": run,
            "links": [attrs.asdict(s) for s in scenario.links], "sum_mbit": total,
            "best_single_mbit": best, "best_path": 0,
            "rows": [_row("TCP path0 alone", REF_TCP, best, best, None, total),
                     _row("TCP path1 alone", REF_TCP, best / 2, best, None, total),
                     _row("whalescale best path alone", REF_WS, 17.0, best, 17.0, total),
                     _row("whalescale WRR", "variant", ws_wrr, best, 17.0, total),
                     _row("kernel MPTCP", REF_MPTCP, mptcp, best, None, total)]}


def _data(scenarios: list[dict], repeat: int) -> dict:
    return {"date": "2024-01-01T00:00:00+00:00",
            "machine": {"host": "h", "cpu": "c", "cpus": 2, "kernel": "6", "python": "3",
                        "congestion": "bbr"},
            "options": attrs.asdict(Options(seconds=4.0, congestion="cubic", repeat=repeat)),
            "scheduler_flag": True,
            "ceiling": {"udp_pps": 5e4, "udp_mbit": 600, "tcp_mbit": 900, "delay_ms": 10,
                        "ping_rtt_ms": 20.1, "probe_one_way_ms": 10.0,
                        "probe_one_way_p99_ms": 10.5, "mbit": 600},
            "scenarios": scenarios}


def test_repeated_runs_report_medians_and_every_runs_goodput() -> None:
    runs = [_run("wifi-lte", 0, 18.1, 30.0, best=18.0),
            _run("wifi-lte", 1, 19.0, 20.0, best=19.0),
            _run("wifi-lte", 2, 18.7, 25.0, best=17.0)]
    (agg,) = aggregate(runs)
    assert agg["runs"] == 3
    assert agg["best_single_mbit"] == 18.0
    rows = {r["name"]: r for r in agg["rows"]}
    wrr = rows["whalescale WRR"]
    assert wrr["goodputs_mbit"] == [18.1, 19.0, 18.7]
    assert wrr["goodput_mbit"] == 18.7
    # the median of each run's ratio, not the ratio of the medians (18.7 / 18 = 1.039)
    assert wrr["of_best"] == pytest.approx(18.1 / 18.0)
    assert rows["kernel MPTCP"]["of_best"] == pytest.approx(25.0 / 17.0)
    assert wrr["ping_load_p50_ms"] == 30.0 and wrr["ping_idle_lost"] == 1

    report = report_md(_data(runs, 3))
    assert report.count("## wifi-lte:") == 1
    assert "| Mbit/s per run |" in report
    assert "| whalescale WRR | 18.7 | 18.1 / 19.0 / 18.7 | " in report
    assert "median of 3 runs" in report
    assert "| ping idle p50 / p95 ms | ping load p50 / p95 ms | pings lost idle, load |" in report
    assert "| 10.0 / 10.0 | 30.0 / 30.0 | 1/20, 0/30 |" in report


def test_a_single_run_reports_without_per_run_columns_and_plots_the_rtt_ratio(
        tmp_path: Path) -> None:
    runs = [_run("equal", 0, 30.0, 28.0), _run("wifi-lte", 0, 20.0, 22.0),
            _run("rtt-1-10", 0, 15.0, 19.0), _run("dies", 0, 12.0, 14.0),
            _run("lte-varies", 0, 16.0, 17.0), _run("ratio", 0, 40.0, 41.0)]
    data = _data(runs, 1)
    report = report_md(data)
    assert "per run" not in report and "median" not in report
    assert "| whalescale WRR | 20.0 | 50.0% | 111.1% | 117.6% | 3 | 0.0 |" in report
    assert "![goodput vs RTT ratio](rtt-ratio.png)" in report
    assert "TCP congestion control of every flow (the sender's): cubic (iperf3 reported: " \
           "cubic)" in report
    assert "path1: 20 Mbit/s, RTT 50 ms, jitter 4 ms; path1's rate every 3 s: " \
           "20 -> 8 -> 30 -> 12 -> 20 ... Mbit/s" in report

    lines = rtt_ratio_points(aggregate(data["scenarios"]))
    # events ("dies", "lte-varies") and equal delays ("ratio") are left out
    assert lines == {"whalescale WRR": [(1.0, 30 / 18, "equal"), (4.0, 20 / 18, "wifi-lte"),
                                        (10.0, 15 / 18, "rtt-1-10")],
                     "kernel MPTCP": [(1.0, 28 / 18, "equal"), (4.0, 22 / 18, "wifi-lte"),
                                      (10.0, 19 / 18, "rtt-1-10")]}
    plot(data, tmp_path)
    for png in ("goodput.png", "throughput.png", "rtt-ratio.png"):
        assert (tmp_path / png).read_bytes().startswith(PNG_MAGIC)


def test_the_rtt_ratio_line_falls_back_to_the_first_variant() -> None:
    run = _run("rtt-1-2", 0, 20.0, 22.0)
    for row in run["rows"]:
        if row["name"] == "whalescale WRR":
            row["name"] = "whalescale BLEST"
    lines = rtt_ratio_points(aggregate([run]))
    assert set(lines) == {"whalescale BLEST", "kernel MPTCP"}
    assert lines["whalescale BLEST"] == [(2.0, 20 / 18, "rtt-1-2")]


@pytest.mark.lab
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
    assert "| ping idle p50 / p95 ms | ping load p50 / p95 ms |" in report
    for png in ("goodput.png", "throughput.png", "rtt-ratio.png"):
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
        # RTT 10 ms idle; under load a queue (tbf's 20 ms, more in the tunnel) may add
        assert 9 < row["ping_idle_p50_ms"] <= row["ping_idle_p95_ms"] < 200, name
        assert len(row["ping_idle_rtts_ms"]) == multipath.PING_IDLE_COUNT
        assert row["ping_idle_lost"] <= 2, name
        assert 9 < row["ping_load_p50_ms"] <= row["ping_load_p95_ms"] < 1000, name
        assert len(row["ping_load_rtts_ms"]) >= multipath.PING_LOAD_BATCH, name
        assert row["ping_load_lost"] == row["ping_load_rtts_ms"].count(None), name
    for name in ("whalescale WRR", "whalescale best path alone"):
        row = rows[name]
        assert 0 < row["udp_goodput_mbit"] <= 1.1 * total
        assert 0 <= row["udp_loss"] <= 1
        assert row["of_ws_single"] == pytest.approx(
            row["goodput_mbit"] / rows["whalescale best path alone"]["goodput_mbit"])
        if row["reorder"] is not None:  # an agent without multipath reports none
            for key in ("gaps_skipped", "late_drops"):
                assert row["reorder"][key] >= 0
