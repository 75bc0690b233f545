"""`whalescale bench multipath`: scheduler variants against references on emulated paths.

Each scenario is data: the links (`LinkSpec`s) and the events of a run (a path dies, a
path flaps, a path's rate changes: `RateChange`). For a scenario, one lab holds `left`
and `right` joined by the scenario's `EmulatedLinks`; on those same links, in one
sitting, run in turn:

- plain TCP on each link alone (the single-path references; the best of them is the
  "best single path" every goodput is also compared with);
- whalescale on the best single path only (both nodes list only that interface);
- whalescale over all paths, once per scheduler variant (`--scheduler wrr|lowrtt|blest`);
- kernel MPTCP over all paths (`mptcpize run iperf3`, see mptcp.py).

Every row is one iperf3 TCP flow left -> right for `seconds` with 0.2 s intervals (so a
stall shows) and the scenario's events replayed by a timer thread from the flow's start;
every whalescale row also carries one UDP flow at 90% of the sum of the path rates. After
each whalescale run both agents' `status --json` is read: the receiver's (right's)
reorder statistics (gaps skipped, late drops, added delay) and the paths as each side
sees them. An agent without multipath reports `"multipath": null` (shown as n/a). Every
row also pings, from left, right's address that its TCP flow uses (whalescale: the
tunnel's): 20 echoes before the flow (idle) and one every 0.1 s beside it (under load);
p50/p95 RTT and the echoes lost. `rtt-ratio.png` plots goodput against the paths' RTT
ratio.

With `repeat` > 1 each scenario runs that many times in a row; results.json keeps every
run, the report and plots show medians (`aggregate`) and each run's goodput.

The emulator's ceiling is measured first, in a lab of its own, and every scenario is
held to `CEILING_SHARE` of it (`ceiling_problems`): a scenario that would measure the
emulator is refused before anything runs. Output: `report.md`, `results.json` and PNG
plots in the folder given.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

from .. import plots
from ..lab.lab import Lab, lab_available
from ..lab.mesh import LabMesh
from ..lab.netns import Host
from ..lab.proc import Proc
from .links import (
    BenchError,
    EmulatedLinks,
    EmulatorCeiling,
    LinkSpec,
    ceiling_problems,
    measure_ceiling,
    ping_rtts_ms,
)
from .mptcp import MPTCP_PORT, MPTCPIZE, configure_mptcp, mptcp_available

VARIANTS = ("wrr", "lowrtt", "blest")
VARIANT_LABELS = {"wrr": "WRR", "lowrtt": "lowest-RTT-first", "blest": "BLEST"}
# Reference rows, by kind; `references` selects among them.
REF_TCP = "tcp-single"  # plain TCP on each link alone
REF_WS = "ws-single"  # whalescale on the best single path
REF_MPTCP = "mptcp"  # kernel MPTCP over all links
REFERENCES = (REF_TCP, REF_WS, REF_MPTCP)
INTERVAL_S = 0.2  # fine enough to time a stall against the 1 s target
STALL_SHARE = 0.1  # an interval below this share of the flow's mean counts as stalled
UDP_SHARE = 0.9  # the UDP flow's rate, as a share of the sum of path rates
UDP_LEN = 1200  # UDP payload bytes: fits the tunnel MTU with room for multipath trailers
IPERF_PORT = 5231
PING_IDLE_COUNT = 20  # echoes before the flow ...
PING_IDLE_INTERVAL_MS = 50.0  # ... this far apart
PING_LOAD_INTERVAL_S = 0.1  # echoes beside the flow, this far apart (plus their RTT)
PING_LOAD_BATCH = 10  # echoes per linkemu ping process beside the flow
PING_TIMEOUT_S = 1.0  # an echo without answer this long is lost
WS_PORT = 51820


# -- scenarios -------------------------------------------------------------------------------


@attrs.frozen
class Event:
    """At `at` (a share of the run), path `path` goes down or comes back up."""

    at: float
    path: int
    up: bool


@attrs.frozen
class RateChange:
    """At `at_s` seconds from the flow's start, path `path`'s rate becomes `rate_mbit` (its
    tbf, live; delay, jitter and loss stay the scenario's)."""

    at_s: float
    path: int
    rate_mbit: float


@attrs.frozen
class Scenario:
    name: str
    title: str
    links: tuple[LinkSpec, ...]
    # Events as shares of the run; `flap` (path, period_s, down_s) adds a path that goes
    # down for down_s every period_s (in seconds, whatever the run's length).
    events: tuple[Event, ...] = ()
    flap: tuple[int, float, float] | None = None
    # (path, period_s, rates): every period_s the path's rate becomes the next of `rates`,
    # round and round (a cellular link whose rate varies); the links' own rates are the
    # nominal ones (sums, shares, the UDP flow's rate).
    rate_cycle: tuple[int, float, tuple[float, ...]] | None = None

    @property
    def sum_mbit(self) -> float:
        return sum(s.rate_mbit or 0.0 for s in self.links)

    @property
    def has_events(self) -> bool:
        return bool(self.events or self.flap or self.rate_cycle)

    @property
    def peak_links(self) -> tuple[LinkSpec, ...]:
        """The links at the highest rate each reaches during a run (for the ceiling)."""
        if self.rate_cycle is None:
            return self.links
        path, _, rates = self.rate_cycle
        spec = self.links[path]
        peak = max((spec.rate_mbit or 0.0, *rates))
        return tuple(attrs.evolve(s, rate_mbit=peak) if k == path else s
                     for k, s in enumerate(self.links))

    def timeline(self, seconds: float) -> list[tuple[float, int, bool]]:
        """(seconds from the flow's start, path, up) in time order."""
        out = [(e.at * seconds, e.path, e.up) for e in self.events]
        if self.flap is not None:
            path, period, down = self.flap
            t = period / 2
            while t < seconds:
                out += [(t, path, False), (min(t + down, seconds), path, True)]
                t += period
        return sorted(out)

    def rate_timeline(self, seconds: float) -> list[RateChange]:
        """The run's rate changes in time order, ending at `seconds` with every changed
        path back to its nominal rate."""
        if self.rate_cycle is None:
            return []
        path, period, rates = self.rate_cycle
        out = []
        t, i = period, 0
        while t < seconds:
            out.append(RateChange(t, path, rates[i % len(rates)]))
            t, i = t + period, i + 1
        nominal = self.links[path].rate_mbit
        if out and nominal is not None:
            out.append(RateChange(seconds, path, nominal))
        return out

    def down_spans(self, seconds: float) -> list[tuple[int, float, float]]:
        """(path, from, to) in seconds: when a path is down during the run (for plots)."""
        spans, since = [], {}
        for t, path, up in self.timeline(seconds):
            if not up and path not in since:
                since[path] = t
            elif up and path in since:
                spans.append((path, since.pop(path), t))
        spans += [(p, t, seconds) for p, t in since.items()]
        return spans


def _paths(*specs: LinkSpec) -> tuple[LinkSpec, ...]:
    return tuple(specs)


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("equal", "equal paths (2 x 20 Mbit/s, RTT 10 ms)",
             _paths(LinkSpec(20, 5), LinkSpec(20, 5))),
    Scenario("ratio", "2:1 rates (40 + 20 Mbit/s, RTT 10 ms)",
             _paths(LinkSpec(40, 5), LinkSpec(20, 5))),
    Scenario("rtt", "20 ms vs 200 ms RTT (2 x 20 Mbit/s)",
             _paths(LinkSpec(20, 10), LinkSpec(20, 100))),
    Scenario("lossy", "one path 1% loss (2 x 20 Mbit/s, RTT 10 ms)",
             _paths(LinkSpec(20, 5), LinkSpec(20, 5, loss=0.01))),
    Scenario("dies", "path 1 dies at 40% of the run (2 x 20 Mbit/s, RTT 10 ms)",
             _paths(LinkSpec(20, 5), LinkSpec(20, 5)), events=(Event(0.4, 1, False),)),
    Scenario("flapping", "path 1 down 1 s in every 4 s (2 x 20 Mbit/s, RTT 10 ms)",
             _paths(LinkSpec(20, 5), LinkSpec(20, 5)), flap=(1, 4.0, 1.0)),
    # Wi-Fi + cellular pairs: the second path is the cellular one.
    Scenario("rtt-1-2", "10 ms vs 20 ms RTT (2 x 20 Mbit/s)",
             _paths(LinkSpec(20, 5), LinkSpec(20, 10))),
    Scenario("wifi-lte", "Wi-Fi + LTE: 10 ms vs 40 ms RTT (2 x 20 Mbit/s)",
             _paths(LinkSpec(20, 5), LinkSpec(20, 20))),
    Scenario("wifi-lte-jitter", "Wi-Fi + LTE with jitter: 30 Mbit/s RTT 8 ms + 20 Mbit/s "
             "RTT 50 ms, jitter 4 ms",
             _paths(LinkSpec(30, 4), LinkSpec(20, 25, jitter_ms=4))),
    Scenario("rtt-1-6", "10 ms vs 60 ms RTT, jitter 3 ms on the slow path (2 x 20 Mbit/s)",
             _paths(LinkSpec(20, 5), LinkSpec(20, 30, jitter_ms=3))),
    Scenario("rtt-1-10", "10 ms vs 100 ms RTT (2 x 20 Mbit/s)",
             _paths(LinkSpec(20, 5), LinkSpec(20, 50))),
    Scenario("slow-wide", "the slower path is the wider (15 Mbit/s RTT 10 ms + 30 Mbit/s "
             "RTT 40 ms)",
             _paths(LinkSpec(15, 5), LinkSpec(30, 20))),
    Scenario("lte-varies", "LTE rate changes every 3 s: 20 -> 8 -> 30 -> 12 Mbit/s, RTT "
             "50 ms, jitter 4 ms (+ 20 Mbit/s RTT 10 ms)",
             _paths(LinkSpec(20, 5), LinkSpec(20, 25, jitter_ms=4)),
             rate_cycle=(1, 3.0, (8, 30, 12, 20))),
)}  # fmt: skip


# -- results ---------------------------------------------------------------------------------


@attrs.define
class Row:
    """One contender in one scenario: a TCP flow, maybe a UDP flow, maybe agent stats."""

    name: str  # "whalescale WRR", "TCP path0 alone", "kernel MPTCP", ...
    kind: str  # "variant" or one of REFERENCES
    goodput_mbit: float | None = None
    retransmits: int | None = None
    congestion: str | None = None  # the sender's TCP congestion control, as iperf3 saw it
    intervals_mbit: list[float] = attrs.Factory(list)
    max_stall_s: float | None = None
    of_sum: float | None = None
    of_best: float | None = None
    # of whalescale on the best path alone: what the tunnel itself gives on one path
    # (the "never less than 95% of the best single path"; the plain-TCP share
    # above also counts the tunnel's own overhead, ~5% of a 1500-byte frame)
    of_ws_single: float | None = None
    udp_goodput_mbit: float | None = None
    udp_loss: float | None = None
    reorder: dict[str, Any] | None = None  # the receiver's reorder statistics
    multipath: dict[str, Any] = attrs.Factory(dict)  # node -> its "multipath" status
    # ICMP echoes left -> right to the row's address (whalescale: right's tunnel address)
    # before the flow (idle) and beside it (load); RTTs in ms, None: lost.
    ping_idle_p50_ms: float | None = None
    ping_idle_p95_ms: float | None = None
    ping_idle_lost: int | None = None
    ping_idle_rtts_ms: list[float | None] = attrs.Factory(list)
    ping_load_p50_ms: float | None = None
    ping_load_p95_ms: float | None = None
    ping_load_lost: int | None = None
    ping_load_rtts_ms: list[float | None] = attrs.Factory(list)
    note: str = ""


@attrs.define
class ScenarioResult:
    scenario: str
    title: str
    links: list[dict[str, Any]]
    sum_mbit: float
    best_single_mbit: float | None = None
    best_path: int = 0
    rows: list[Row] = attrs.Factory(list)
    run: int = 0  # 0 .. repeat - 1: results.json keeps every run of a scenario


# -- iperf3 ----------------------------------------------------------------------------------


def _iperf(client: Host, server: Host, addr: str, seconds: float, *extra: str,
           wrapper: tuple[str, ...] = (), port: int = IPERF_PORT,
           bind: bool = True) -> dict[str, Any]:
    """One iperf3 run client -> server; its JSON report."""
    bound = ("-B", addr) if bind else ()
    proc = server.spawn(*wrapper, "iperf3", "-s", "-1", "--forceflush", *bound, "-p", str(port))
    try:
        if not proc.wait_for_log(r"Server listening", 10):
            raise BenchError(f"iperf3 server did not start:\n{proc.log()}")
        out = client.run(*wrapper, "iperf3", "-c", addr, "-p", str(port), "-t", str(seconds),
                         "-i", str(INTERVAL_S), "-J", "--get-server-output", *extra,
                         check=False,
                         timeout=seconds + 40).stdout  # fmt: skip
    finally:
        proc.stop()
    try:
        report = json.loads(out)
    except json.JSONDecodeError as exc:
        raise BenchError(f"iperf3 gave no JSON: {out[-500:]!r}") from exc
    if "error" in report:
        raise BenchError(f"iperf3: {report['error']}")
    return dict(report)


def max_stall_s(intervals: list[float], interval_s: float = INTERVAL_S) -> float:
    """The longest run of intervals below STALL_SHARE of the mean, in seconds."""
    if not intervals:
        return 0.0
    floor = STALL_SHARE * sum(intervals) / len(intervals)
    longest = run = 0
    for value in intervals:
        run = run + 1 if value < floor else 0
        longest = max(longest, run)
    return longest * interval_s


def _tcp_into(row: Row, report: dict[str, Any]) -> None:
    end = report["end"]
    row.goodput_mbit = end["sum_received"]["bits_per_second"] / 1e6
    row.retransmits = int(end["sum_sent"].get("retransmits", 0))
    row.congestion = end.get("sender_tcp_congestion")
    # The receiver's intervals when the server sent them (what arrived when, not what
    # the sender pushed into its socket buffer), else the sender's.
    server = report.get("server_output_json") or {}
    intervals = server.get("intervals") or report["intervals"]
    row.intervals_mbit = [i["sum"]["bits_per_second"] / 1e6 for i in intervals]
    row.max_stall_s = max_stall_s(row.intervals_mbit)


def _udp_into(row: Row, report: dict[str, Any]) -> None:
    end = report["end"]
    summary = end.get("sum_received") or end["sum"]
    total = end["sum"]
    row.udp_goodput_mbit = summary["bits_per_second"] / 1e6
    packets = total.get("packets") or 0
    row.udp_loss = total.get("lost_packets", 0) / packets if packets else None


@contextmanager
def _events(bench: EmulatedLinks, scenario: Scenario, seconds: float) -> Iterator[None]:
    """Replay the scenario's events (downs, ups, rate changes) from now on, in a thread;
    every path is up again and at its nominal spec at the end of the run window (so the
    flows' closing exchanges get through) and on exit."""
    nominal = list(scenario.links)

    def set_link(path: int, up: bool) -> None:
        if up and bench.links[path].down:
            bench.set_up(path)
        elif not up and not bench.links[path].down:
            bench.set_down(path)

    def set_rate(path: int, rate_mbit: float) -> None:
        bench.update(path, attrs.evolve(nominal[path], rate_mbit=rate_mbit))

    actions: list[tuple[float, int, Any]] = [
        (at, 0, lambda path=path, up=up: set_link(path, up))
        for at, path, up in scenario.timeline(seconds)]
    actions += [(c.at_s, 1, lambda c=c: set_rate(c.path, c.rate_mbit))
                for c in scenario.rate_timeline(seconds)]
    actions += [(seconds, 2, lambda k=k: set_link(k, True)) for k in range(len(bench.links))]
    actions.sort(key=lambda a: a[:2])
    stop = threading.Event()
    errors: list[BaseException] = []

    def replay() -> None:
        start = time.monotonic()
        for at, _, action in actions:
            if stop.wait(max(0.0, start + at - time.monotonic())):
                return
            try:
                action()
            except BaseException as exc:  # reported by the bench thread
                errors.append(exc)
                return

    thread = threading.Thread(target=replay, name=f"events-{scenario.name}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)
        for k, link in enumerate(bench.links):
            if link.spec != nominal[k]:
                bench.update(k, nominal[k])
            if link.down:
                bench.set_up(k)
    if errors:
        raise BenchError(f"scenario {scenario.name}: an event failed: {errors[0]}")


# -- pings beside the flows ------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    """The nearest-rank `q` percentile (0 < q <= 100) of `values`; None for none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def _ping_into(row: Row, when: str, rtts: list[float | None]) -> None:
    """Row's ping_<when>_* fields from echo RTTs (None: lost)."""
    answered = [r for r in rtts if r is not None]
    setattr(row, f"ping_{when}_rtts_ms", list(rtts))
    setattr(row, f"ping_{when}_p50_ms", percentile(answered, 50))
    setattr(row, f"ping_{when}_p95_ms", percentile(answered, 95))
    setattr(row, f"ping_{when}_lost", len(rtts) - len(answered))


def _note(row: Row, note: str) -> None:
    row.note = f"{row.note}; {note}" if row.note else note


def _idle_ping(row: Row, src: Host, addr: str) -> None:
    """PING_IDLE_COUNT echoes at PING_IDLE_INTERVAL_MS before the flow; a failure is noted
    on the row (the flow still runs)."""
    try:
        _ping_into(row, "idle", ping_rtts_ms(src, addr, PING_IDLE_COUNT,
                                             PING_IDLE_INTERVAL_MS, PING_TIMEOUT_S))
    except Exception as exc:
        _note(row, f"idle ping failed: {str(exc).splitlines()[0][:120] if str(exc) else exc!r}")


@contextmanager
def _load_ping(row: Row, src: Host, addr: str, seconds: float) -> Iterator[None]:
    """Echoes every PING_LOAD_INTERVAL_S (plus each one's RTT: linkemu's ping waits for the
    answer) from now for `seconds`, in a thread, in batches of PING_LOAD_BATCH; into row on
    exit."""
    rtts: list[float | None] = []
    errors: list[BaseException] = []
    stop = threading.Event()
    deadline = time.monotonic() + seconds

    def pinger() -> None:
        interval_ms = 1000 * PING_LOAD_INTERVAL_S
        while not stop.is_set():
            count = min(PING_LOAD_BATCH, int((deadline - time.monotonic()) /
                                             PING_LOAD_INTERVAL_S))
            if count < 1:
                return
            try:
                rtts.extend(ping_rtts_ms(src, addr, count, interval_ms, PING_TIMEOUT_S))
            except BaseException as exc:  # noted on the row by the bench thread
                errors.append(exc)
                return

    thread = threading.Thread(target=pinger, name="load-ping", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()  # heeded between batches: a flow that ended early ends it soon too
        thread.join(seconds + 30)
    if errors:
        error = str(errors[0]).splitlines()[0][:120] if str(errors[0]) else repr(errors[0])
        _note(row, f"load ping failed: {error}")
    if rtts:
        _ping_into(row, "load", rtts)


# -- whalescale runs -------------------------------------------------------------------------


def scheduler_supported() -> bool:
    """Whether this agent takes `--scheduler` (multipath wired in)."""
    out = subprocess.run([sys.executable, "-m", "whalescale", "up", "--help"],
                         capture_output=True, text=True, timeout=30, check=False).stdout
    return "--scheduler" in out


def _status(host: Host, mesh: LabMesh, name: str) -> dict[str, Any]:
    result = host.run(sys.executable, "-m", "whalescale", "status", "--json", "--state-dir",
                      str(mesh.state_dir(name)), check=False, timeout=20)
    if result.returncode != 0:
        return {}
    return dict(json.loads(result.stdout))


def _peer_multipath(status: dict[str, Any], peer: str) -> dict[str, Any] | None:
    for p in status.get("peers", []):
        if p.get("name") == peer:
            mp = p.get("multipath")
            return dict(mp) if isinstance(mp, dict) else None
    return None


class WhalescalePair:
    """Agents on left and right of an `EmulatedLinks`, restarted for each row with the
    interfaces and scheduler it asks for."""

    def __init__(self, lab: Lab, bench: EmulatedLinks, with_scheduler: bool) -> None:
        self.bench = bench
        self.with_scheduler = with_scheduler
        self.mesh = LabMesh(lab, port=WS_PORT, keepalive_s=5)
        self.left = self.mesh.add_node(bench.left)
        self.right = self.mesh.add_node(bench.right)

    @contextmanager
    def running(self, paths: list[int], scheduler: str | None) -> Iterator[None]:
        """Both agents up, using the interfaces of `paths`; right's endpoint is its address
        on the first of them (left's likewise); stopped on exit."""
        links = [self.bench.links[k] for k in paths]
        ifaces = tuple(ln.link.a_ifname for ln in links)
        self.left.interfaces = self.right.interfaces = ifaces
        self.left.endpoint = f"{links[0].left_addr}:{WS_PORT}"
        self.right.endpoint = f"{links[0].right_addr}:{WS_PORT}"
        self.mesh.write_mesh()
        extra = ("--scheduler", scheduler) if scheduler and self.with_scheduler else ()
        procs: list[Proc] = []
        try:
            for node in (self.left, self.right):
                procs.append(self.mesh.start(node.name, *extra))
            for node in (self.left, self.right):
                self.mesh.wait_up(node.name)
            self._wait_session()
            yield
        finally:
            for proc in procs:
                proc.stop()

    def _wait_session(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.bench.left.ping(self.right.tunnel_addr, count=1, timeout=1.0):
                return
        raise BenchError(f"no session between the agents within {timeout:g} s:\n"
                         f"{self.left.proc.log() if self.left.proc else ''}")

    def status(self) -> dict[str, dict[str, Any] | None]:
        """node -> its "multipath" status for the other node (None: none)."""
        return {
            "left": _peer_multipath(_status(self.bench.left, self.mesh, "left"), "right"),
            "right": _peer_multipath(_status(self.bench.right, self.mesh, "right"), "left"),
        }


def _ws_row(pair: WhalescalePair, scenario: Scenario, row: Row, paths: list[int],
            scheduler: str | None, seconds: float, options: Options) -> None:
    bench = pair.bench
    with pair.running(paths, scheduler):
        addr = pair.right.tunnel_addr
        _idle_ping(row, bench.left, addr)
        with _events(bench, scenario, seconds), _load_ping(row, bench.left, addr, seconds):
            report = _iperf(bench.left, bench.right, addr, seconds, *options.tcp_args)
        _tcp_into(row, report)
        mp = pair.status()
        row.multipath = {k: v for k, v in mp.items() if v is not None}
        receiver = mp.get("right")
        row.reorder = dict(receiver.get("reorder") or {}) if receiver else None
        if options.udp:
            rate = UDP_SHARE * sum(bench.links[k].spec.rate_mbit or 0 for k in paths)
            udp_seconds = max(3.0, seconds / 2)
            with _events(bench, scenario, udp_seconds):
                report = _iperf(bench.left, bench.right, pair.right.tunnel_addr, udp_seconds,
                                "-u", "-b", f"{rate:.1f}M", "-l", str(UDP_LEN))
            _udp_into(row, report)


# -- the run ---------------------------------------------------------------------------------


@attrs.frozen
class Options:
    seconds: float = 10.0
    scenarios: tuple[str, ...] = tuple(SCENARIOS)
    variants: tuple[str, ...] = VARIANTS
    references: tuple[str, ...] = REFERENCES
    udp: bool = True
    ceiling_seconds: float = 2.0
    seed: int = 1
    # The TCP congestion control of every flow (plain, tunnelled, MPTCP), set on the
    # sending socket (iperf3 -C); None: the machine's default.
    congestion: str | None = None
    repeat: int = 1  # runs of each scenario, one after the other (the report: medians)

    @property
    def tcp_args(self) -> tuple[str, ...]:
        return ("-C", self.congestion) if self.congestion else ()


def _guarded(row: Row, what: str, action: Any) -> None:
    """Run one row; a failure is noted on the row rather than ending the bench."""
    try:
        action()
    except Exception as exc:  # one failed row must not lose the others
        row.note = f"{what} failed: {str(exc).splitlines()[0][:200] if str(exc) else exc!r}"


def run_scenario(scenario: Scenario, options: Options, with_scheduler: bool,
                 log: Any = print) -> ScenarioResult:
    seconds = options.seconds
    result = ScenarioResult(scenario.name, scenario.title,
                            [attrs.asdict(s) for s in scenario.links], scenario.sum_mbit)
    with Lab() as lab:
        bench = EmulatedLinks(lab, list(scenario.links), seed=options.seed)
        n = len(bench.links)
        singles: list[float | None] = [None] * n
        if REF_TCP in options.references:
            for k, link in enumerate(bench.links):
                log(f"  {scenario.name}: plain TCP on path{k} alone")
                row = Row(f"TCP path{k} alone", REF_TCP)

                def tcp(k: int = k, row: Row = row, addr: str = link.right_addr) -> None:
                    _idle_ping(row, bench.left, addr)
                    with (_events(bench, scenario, seconds),
                          _load_ping(row, bench.left, addr, seconds)):
                        report = _iperf(bench.left, bench.right, addr, seconds,
                                        *options.tcp_args)
                    _tcp_into(row, report)

                _guarded(row, "iperf3", tcp)
                singles[k] = row.goodput_mbit
                result.rows.append(row)
        measured = [(g, k) for k, g in enumerate(singles) if g is not None]
        if measured:
            best, result.best_path = max(measured)
            result.best_single_mbit = best
        else:  # nothing measured: the highest nominal rate, then the lowest delay
            result.best_path = max(range(n), key=lambda k: (scenario.links[k].rate_mbit or 0,
                                                            -scenario.links[k].delay_ms))
        pair = WhalescalePair(lab, bench, with_scheduler)
        if REF_WS in options.references:
            k = result.best_path
            log(f"  {scenario.name}: whalescale on path{k} alone")
            row = Row("whalescale best path alone", REF_WS)
            _guarded(row, "whalescale", lambda row=row, k=k: _ws_row(
                pair, scenario, row, [k], None, seconds, options))
            result.rows.append(row)
        for variant in options.variants:
            log(f"  {scenario.name}: whalescale {variant} over {n} paths")
            row = Row(f"whalescale {VARIANT_LABELS.get(variant, variant)}", "variant")
            if not with_scheduler:
                row.note = "agent has no --scheduler: ran its default"
            _guarded(row, "whalescale", lambda row=row, variant=variant: _ws_row(
                pair, scenario, row, list(range(n)), variant, seconds, options))
            result.rows.append(row)
        if REF_MPTCP in options.references:
            row = Row("kernel MPTCP", REF_MPTCP)
            reason = mptcp_available()
            if reason:
                row.note = f"not run: {reason}"
            else:
                log(f"  {scenario.name}: kernel MPTCP over {n} paths")

                def mptcp(row: Row = row) -> None:
                    configure_mptcp(bench)
                    addr = bench.links[0].right_addr
                    _idle_ping(row, bench.left, addr)
                    with (_events(bench, scenario, seconds),
                          _load_ping(row, bench.left, addr, seconds)):
                        report = _iperf(bench.left, bench.right, addr, seconds,
                                        *options.tcp_args, wrapper=(MPTCPIZE, "run"),
                                        port=MPTCP_PORT, bind=False)
                    _tcp_into(row, report)

                _guarded(row, "MPTCP", mptcp)
            result.rows.append(row)
    ws_single = next((r.goodput_mbit for r in result.rows if r.kind == REF_WS), None)
    for row in result.rows:
        if row.goodput_mbit is not None:
            row.of_sum = row.goodput_mbit / result.sum_mbit if result.sum_mbit else None
            if result.best_single_mbit:
                row.of_best = row.goodput_mbit / result.best_single_mbit
            if ws_single and row.kind in ("variant", REF_WS):
                row.of_ws_single = row.goodput_mbit / ws_single
    return result


def check_scenarios(names: list[str] | tuple[str, ...], ceiling: EmulatorCeiling) -> list[str]:
    """Why the named scenarios cannot run against this ceiling (empty: they can)."""
    problems = []
    for name in names:
        for problem in ceiling_problems(list(SCENARIOS[name].peak_links), ceiling):
            problems.append(f"scenario {name}: {problem}")
    return problems


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    congestion = Path("/proc/sys/net/ipv4/tcp_congestion_control")
    return {"host": platform.node(), "kernel": platform.release(), "cpu": cpu,
            "cpus": os.cpu_count(), "python": platform.python_version(),
            "congestion": congestion.read_text().strip() if congestion.exists() else None}


def run_bench(out: Path, options: Options, log: Any = print) -> dict[str, Any]:
    """The whole bench: ceiling, every scenario, report, plots. Returns results.json's data.
    Raises BenchError when a scenario would measure the emulator."""
    unknown = [s for s in options.scenarios if s not in SCENARIOS]
    if unknown:
        raise BenchError(f"unknown scenario(s) {', '.join(unknown)}; "
                         f"known: {', '.join(SCENARIOS)}")
    started = datetime.datetime.now(datetime.UTC)
    log(f"measuring the emulator's ceiling ({options.ceiling_seconds:g} s floods)")
    ceiling = measure_ceiling(seconds=options.ceiling_seconds)
    log(f"  ceiling {ceiling.mbit:.0f} Mbit/s (UDP {ceiling.udp_mbit:.0f}, "
        f"TCP {ceiling.tcp_mbit:.0f}); a scenario may use half")
    problems = check_scenarios(options.scenarios, ceiling)
    if problems:
        raise BenchError("refusing to run: the emulator would be the bottleneck:\n  "
                         + "\n  ".join(problems))
    with_scheduler = scheduler_supported()
    if not with_scheduler:
        log("  note: this agent has no --scheduler (multipath not wired in yet)")
    results = []
    for name in options.scenarios:
        for run in range(options.repeat):
            log(f"scenario {name}: {SCENARIOS[name].title}"
                + (f" (run {run + 1} of {options.repeat})" if options.repeat > 1 else ""))
            result = run_scenario(SCENARIOS[name], options, with_scheduler, log)
            result.run = run
            results.append(result)
    data = {
        "date": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "options": attrs.asdict(options),
        "scheduler_flag": with_scheduler,
        "ceiling": {**attrs.asdict(ceiling), "mbit": ceiling.mbit},
        "scenarios": [attrs.asdict(r) for r in results],
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(data, indent=2) + "\n")
    plot(data, out)
    (out / "report.md").write_text(report_md(data))
    return data


# -- report ----------------------------------------------------------------------------------


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _median(values: list[Any]) -> Any:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def aggregate_row(runs: list[dict[str, Any] | None]) -> dict[str, Any]:
    """One row of the report from the same row in each run (None: not in that run): every
    number the median over the runs that have it (a ratio's median is of the ratios of
    each run), the reorder statistics likewise key by key; lists and the rest from the
    first run; `goodputs_mbit` lists each run's goodput (None: not measured)."""
    present = [r for r in runs if r is not None]
    out = dict(present[0])
    for key, first in present[0].items():
        values = [r.get(key) for r in present]
        if any(_is_number(v) for v in values):
            out[key] = _median(values)
        elif key == "reorder" and isinstance(first, dict):
            dicts = [v for v in values if isinstance(v, dict)]
            out[key] = {k: _median([d.get(k) for d in dicts]) if _is_number(v) else v
                        for k, v in first.items()}
    out["goodputs_mbit"] = [r.get("goodput_mbit") if r else None for r in runs]
    out["note"] = "; ".join(dict.fromkeys(r["note"] for r in present if r.get("note")))
    return out


def aggregate(scenarios: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """results.json's runs, one entry per scenario (in first-run order) with `runs` (how
    many), the median best single path and `aggregate_row`'s rows."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for s in scenarios:
        groups.setdefault(s["scenario"], []).append(s)
    out = []
    for runs in groups.values():
        agg = {k: v for k, v in runs[0].items() if k != "rows"}
        agg["runs"] = len(runs)
        agg["best_single_mbit"] = _median([r["best_single_mbit"] for r in runs])
        names = list(dict.fromkeys(row["name"] for r in runs for row in r["rows"]))
        agg["rows"] = [aggregate_row([next((row for row in r["rows"] if row["name"] == name),
                                           None) for r in runs]) for name in names]
        out.append(agg)
    return out


def rtt_ratio(s: dict[str, Any]) -> float | None:
    """The RTT ratio (slowest path's / fastest's) of a two-path scenario without events
    whose delays differ, or 1 for "equal"; None for any other scenario."""
    scenario = SCENARIOS.get(s["scenario"])
    delays = [ln["delay_ms"] for ln in s["links"]]
    if scenario is None or scenario.has_events or len(delays) != 2 or min(delays) <= 0:
        return None
    ratio = max(delays) / min(delays)
    return ratio if ratio != 1 or s["scenario"] == "equal" else None


def rtt_ratio_points(scenarios: list[dict[str, Any]]) -> dict[str, list[tuple[float, float,
                                                                               str]]]:
    """Line label -> (RTT ratio, goodput / best single path, scenario) by ratio, from
    `aggregate`'s scenarios: whalescale's WRR row (else its first variant row) and kernel
    MPTCP."""
    lines: dict[str, list[tuple[float, float, str]]] = {}
    for s in scenarios:
        ratio = rtt_ratio(s)
        if ratio is None:
            continue
        variants = [r for r in s["rows"] if r["kind"] == "variant"]
        ws = next((r for r in variants if r["name"] == f"whalescale {VARIANT_LABELS['wrr']}"),
                  variants[0] if variants else None)
        mptcp = next((r for r in s["rows"] if r["kind"] == REF_MPTCP), None)
        for row in (ws, mptcp):
            if row is not None and row.get("of_best") is not None:
                lines.setdefault(row["name"], []).append((ratio, row["of_best"],
                                                          s["scenario"]))
    return {label: sorted(points) for label, points in lines.items()}


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None, fmt: str = "{:.1f}") -> str:
    return "n/a" if x is None else fmt.format(x)


def _reorder(row: dict[str, Any], key: str, fmt: str = "{:g}") -> str:
    reorder = row.get("reorder")
    if not reorder or reorder.get(key) is None:
        return "n/a"
    return fmt.format(reorder[key])


def _ping(row: dict[str, Any], when: str) -> str:
    p50, p95 = row.get(f"ping_{when}_p50_ms"), row.get(f"ping_{when}_p95_ms")
    return "n/a" if p50 is None else f"{p50:.1f} / {_num(p95)}"


def _ping_lost(row: dict[str, Any]) -> str:
    def one(when: str) -> str:
        lost, sent = row.get(f"ping_{when}_lost"), len(row.get(f"ping_{when}_rtts_ms") or ())
        return "n/a" if lost is None else f"{lost:.0f}/{sent}"

    return f"{one('idle')}, {one('load')}"


def congestion_text(data: dict[str, Any]) -> str:
    """The congestion control asked for (or the machine's default) and what the senders'
    iperf3 reported."""
    o, m = data["options"], data["machine"]
    asked = o.get("congestion") or m.get("congestion") or "the machine default"
    seen = sorted({r["congestion"] for s in data["scenarios"] for r in s["rows"]
                   if r.get("congestion")})
    return f"{asked} (iperf3 reported: {', '.join(seen)})" if seen else asked


def _links_text(s: dict[str, Any]) -> str:
    text = ", ".join(
        f"path{k}: {ln['rate_mbit']:g} Mbit/s, RTT {2 * ln['delay_ms']:g} ms"
        + (f", jitter {ln['jitter_ms']:g} ms" if ln.get("jitter_ms") else "")
        + (f", loss {100 * ln['loss']:g}%" if ln["loss"] else "")
        for k, ln in enumerate(s["links"]))
    scenario = SCENARIOS.get(s["scenario"])
    if scenario is not None and scenario.rate_cycle is not None:
        path, period, rates = scenario.rate_cycle
        steps = " -> ".join(f"{r:g}" for r in (s["links"][path]["rate_mbit"], *rates))
        text += f"; path{path}'s rate every {period:g} s: {steps} ... Mbit/s"
    return text


def report_md(data: dict[str, Any]) -> str:
    c, m, o = data["ceiling"], data["machine"], data["options"]
    scenarios = aggregate(data["scenarios"])
    repeat = max((s["runs"] for s in scenarios), default=1)
    lines = [
        "# whalescale multipath bench", "",
        f"- date: {data['date']}",
        f"- machine: {m['host']}, {m['cpu'] or 'unknown CPU'} x {m['cpus']}, "
        f"Linux {m['kernel']}, Python {m['python']}",
        f"- each flow: {o['seconds']:g} s, iperf3 TCP single flow left -> right, "
        f"{INTERVAL_S:g} s intervals; UDP at {UDP_SHARE:.0%} of the rates used "
        f"({'on' if o['udp'] else 'off'})",
        f"- TCP congestion control of every flow (the sender's): {congestion_text(data)}",
        f"- emulator ceiling (measured first, one link, no delay): "
        f"**{c['mbit']:.0f} Mbit/s** (UDP {c['udp_mbit']:.0f} Mbit/s = "
        f"{c['udp_pps'] / 1000:.0f} kpps, TCP {c['tcp_mbit']:.0f} Mbit/s); with "
        f"{c['delay_ms']:g} ms asked: ping RTT {c['ping_rtt_ms']:.2f} ms, one-way "
        f"{c['probe_one_way_ms']:.2f} ms (p99 {c['probe_one_way_p99_ms']:.2f}). "
        f"Every scenario stays under half of it.",
        "- scheduler variants: " + ("chosen with --scheduler" if data["scheduler_flag"] else
                                    "**this agent has no --scheduler: every variant ran its "
                                    "default**"),
    ]
    if repeat > 1:
        lines.append(f"- {repeat} runs of each scenario, one after the other: every figure "
                     "is the median over the runs (a share's median is of each run's "
                     "share); \"Mbit/s per run\" lists each run's goodput")
    lines += [
        "",
        "Columns: goodput; as a share of the sum of the path rates, of the best single "
        "path (plain TCP, measured on the same links in the same run) and of whalescale on "
        "that path alone (the same tunnel, so the same overhead); inner-TCP "
        "retransmits; the longest stall (intervals under 10% of the flow's mean); the "
        "receiver's reorder buffer (gaps skipped, late drops, added delay mean/max) from "
        "`whalescale status --json`; the UDP flow's goodput and loss; ICMP echo RTT p50 / "
        f"p95 left -> right to the row's address (whalescale: the tunnel's), idle "
        f"({PING_IDLE_COUNT} echoes {PING_IDLE_INTERVAL_MS:g} ms apart before the flow) "
        f"and under load (one every {PING_LOAD_INTERVAL_S:g} s plus its RTT, beside the "
        f"TCP flow), and the echoes lost of those sent (no answer in {PING_TIMEOUT_S:g} s). "
        "n/a: not measured or not reported (an agent without multipath reports none).",
        "", "![goodput](goodput.png)", "", "![throughput over time](throughput.png)", "",
        "Goodput against the paths' RTT ratio (two-path scenarios without events), as a "
        "multiple of the best single path (plain TCP on the best link); congestion control "
        f"{congestion_text(data)}:", "", "![goodput vs RTT ratio](rtt-ratio.png)", "",
    ]
    per_run = repeat > 1
    for s in scenarios:
        lines += [f"## {s['scenario']}: {s['title']}", "",
                  f"{_links_text(s)}; sum {s['sum_mbit']:g} Mbit/s; best single path: "
                  f"path{s['best_path']} ({_num(s['best_single_mbit'])} Mbit/s"
                  + (f", median of {s['runs']} runs" if s["runs"] > 1 else "") + ")", "",
                  "| row | Mbit/s " + ("| Mbit/s per run " if per_run else "")
                  + "| of sum | of best | of ws alone | retrans | max stall s "
                  "| gaps skipped | late drops | added delay ms | UDP Mbit/s | UDP loss "
                  "| ping idle p50 / p95 ms | ping load p50 / p95 ms | pings lost idle, load "
                  "| note |",
                  "|---|--:|" + ("--:|" if per_run else "")
                  + "--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|"]
        for r in s["rows"]:
            delay = (f"{_reorder(r, 'added_delay_mean_ms', '{:.1f}')} / "
                     f"{_reorder(r, 'added_delay_max_ms', '{:.1f}')}")
            runs = (" / ".join(_num(g) for g in r["goodputs_mbit"]) + " | ") if per_run else ""
            lines.append(
                f"| {r['name']} | {_num(r['goodput_mbit'])} | {runs}{_pct(r['of_sum'])} | "
                f"{_pct(r['of_best'])} | {_pct(r['of_ws_single'])} | "
                f"{_num(r['retransmits'], '{:.0f}')} | "
                f"{_num(r['max_stall_s'], '{:.1f}')} | {_reorder(r, 'gaps_skipped')} | "
                f"{_reorder(r, 'late_drops')} | {delay} | "
                f"{_num(r['udp_goodput_mbit'])} | {_pct(r['udp_loss'])} | "
                f"{_ping(r, 'idle')} | {_ping(r, 'load')} | {_ping_lost(r)} | {r['note']} |")
        lines.append("")
    return "\n".join(lines)


def plot(data: dict[str, Any], out: Path) -> None:
    """goodput.png (share of the sum per scenario and row), throughput.png (each
    scenario's flows over time in its first run, path outages shaded, rate changes as
    dashed lines) and rtt-ratio.png (`rtt_ratio_points`). Medians over repeated runs."""
    plt = plots.pyplot()  # matplotlib, lazily: only the plots need it (the `plots` extra)

    scenarios = aggregate(data["scenarios"])
    names = []  # row names in first-seen order; the per-link TCP rows stay apart
    for s in scenarios:
        for r in s["rows"]:
            if r["name"] not in names:
                names.append(r["name"])
    repeat = max((s["runs"] for s in scenarios), default=1)
    medians = f", median of {repeat} runs" if repeat > 1 else ""
    fig, ax = plt.subplots(figsize=(max(6.0, 1.8 * len(scenarios) + 2), 4.5))
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        xs, ys = [], []
        for j, s in enumerate(scenarios):
            row = next((r for r in s["rows"] if r["name"] == name), None)
            if row is not None and row["of_sum"] is not None:
                xs.append(j - 0.4 + width * (i + 0.5))
                ys.append(100 * row["of_sum"])
        ax.bar(xs, ys, width, label=name)
    ax.set_xticks(range(len(scenarios)), [s["scenario"] for s in scenarios])
    ax.set_ylabel("TCP goodput, % of the sum of path rates")
    ax.axhline(100, color="grey", lw=0.8, ls=":")
    ax.set_title(f"single-flow goodput, {data['options']['seconds']:g} s per flow{medians}")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "goodput.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(len(scenarios), 1, figsize=(8, 2.6 * len(scenarios)),
                             squeeze=False)
    seconds = data["options"]["seconds"]
    for ax, s in zip(axes[:, 0], scenarios, strict=True):
        scenario = SCENARIOS.get(s["scenario"])
        if scenario is not None:
            for i, (path, t0, t1) in enumerate(scenario.down_spans(seconds)):
                ax.axvspan(t0, t1, color="red", alpha=0.12,
                           label=f"path{path} down" if i == 0 else None)
            for i, change in enumerate(scenario.rate_timeline(seconds)[:-1]):
                ax.axvline(change.at_s, color="purple", lw=0.8, ls="--",
                           label=f"path{change.path} rate change" if i == 0 else None)
                ax.annotate(f"{change.rate_mbit:g}", (change.at_s, 0), fontsize=6,
                            color="purple", xytext=(2, 2), textcoords="offset points")
        for r in s["rows"]:
            ys = r["intervals_mbit"]
            if ys:
                ax.stairs(ys, [INTERVAL_S * i for i in range(len(ys) + 1)],
                          label=r["name"], lw=1.2)
        ax.axhline(s["sum_mbit"], color="grey", lw=0.8, ls=":")
        ax.set_title(s["title"] + (f" (run 1 of {s['runs']})" if s["runs"] > 1 else ""),
                     fontsize=9)
        ax.set_ylabel("Mbit/s")
        ax.set_xlim(0, seconds)
        ax.legend(fontsize=6, ncol=3, loc="lower left")
    axes[-1, 0].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 5))
    lines = rtt_ratio_points(scenarios)
    ratios = sorted({x for points in lines.values() for x, _, _ in points})
    ax.axhline(1.0, color="black", lw=1.2, ls="--",
               label="best single path (plain TCP on the best link)")
    # Each scenario a marker, labelled (whalescale's on the right, MPTCP's on the left);
    # the line goes through the mean of the scenarios of one ratio.
    styles = (("tab:blue", 6, "left"), ("tab:orange", -6, "right"))
    for (label, points), (color, dx, ha) in zip(lines.items(), styles, strict=False):
        by_ratio: dict[float, list[float]] = {}
        for x, y, _ in points:
            by_ratio.setdefault(x, []).append(y)
        xs = sorted(by_ratio)
        ax.plot(xs, [statistics.fmean(by_ratio[x]) for x in xs], lw=1.8, color=color,
                label=label)
        ax.plot([x for x, _, _ in points], [y for _, y, _ in points], "o", color=color)
        for x, y, name in points:
            ax.annotate(name, (x, y), fontsize=7, color=color, xytext=(dx, 0),
                        textcoords="offset points", ha=ha, va="center")
    if ratios:
        ax.set_xscale("log")
        ticks = sorted({round(r) for r in ratios})
        ax.set_xticks(ticks, [f"1:{t}" for t in ticks])
        ax.minorticks_off()
        ax.set_xlim(min(ratios) / 1.6, max(ratios) * 1.6)
    else:
        ax.text(0.5, 0.5, "no two-path scenario without events in this run",
                ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("RTT ratio, fastest path : slowest path")
    ax.set_ylabel("goodput / best single path")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.set_title(f"multipath goodput vs RTT ratio, TCP {congestion_text(data)}, "
                 f"{seconds:g} s flows{medians}", fontsize=9)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(out / "rtt-ratio.png", dpi=110)
    plt.close(fig)


def run_multipath_bench(out: Path, seconds: float = 10.0, scenarios: list[str] | None = None,
                        variants: list[str] | None = None, congestion: str | None = None,
                        repeat: int = 1) -> int:
    """The CLI's entry: 0 on a report, 2 when the bench cannot or must not run."""
    reason = lab_available() or (None if _has("iperf3") else "no iperf3") or plots.missing()
    if reason:
        print(f"whalescale bench multipath: cannot run: {reason}", file=sys.stderr)
        return 2
    bad = [v for v in variants or () if v not in VARIANTS]
    if bad:
        print(f"whalescale bench multipath: unknown variant(s) {', '.join(bad)}; "
              f"known: {', '.join(VARIANTS)}", file=sys.stderr)
        return 2
    if repeat < 1:
        print(f"whalescale bench multipath: --repeat {repeat}: at least 1", file=sys.stderr)
        return 2
    available = Path("/proc/sys/net/ipv4/tcp_available_congestion_control").read_text().split()
    if congestion and congestion not in available:
        print(f"whalescale bench multipath: congestion control {congestion!r} is not "
              f"available here ({' '.join(available)})", file=sys.stderr)
        return 2
    options = Options(seconds=seconds, scenarios=tuple(scenarios or SCENARIOS),
                      variants=tuple(variants or VARIANTS), congestion=congestion,
                      repeat=repeat)
    try:
        run_bench(out, options, log=lambda m: print(m, flush=True))
    except BenchError as exc:
        print(f"whalescale bench multipath: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out / 'report.md'}, {out / 'results.json'}, {out / 'goodput.png'}, "
          f"{out / 'throughput.png'}, {out / 'rtt-ratio.png'}")
    return 0


def _has(tool: str) -> bool:
    import shutil

    return shutil.which(tool) is not None
