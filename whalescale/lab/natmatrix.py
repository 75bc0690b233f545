"""The NAT connectivity matrix (issue 7): every pair of situations on one `NatLab`, for
whalescale and for nebula, each run alone on the topology.

Theory of operation: one prober per pair is started first and waits, ready, for time
zero (so starting 19 Python probers costs neither VPN any CPU); at time zero all nodes
of one VPN start at once and every prober starts pinging the second node's tunnel
address from the first node until a reply comes or `CONNECT_TIMEOUT_S` passes, and
reports when. Then, one pair at a
time (so no other pair's pings reach the counters), `natlab.classify` sends
`CLASSIFY_PINGS` pings and reads the lab's own counters to tell how they travelled;
neither VPN's claims are trusted. Finally the VPN's processes are stopped by their ids.

Pairs of one situation with itself need a second node of that situation: for
port-restricted and symmetric NATs other nodes serve (`SAME_KIND_PAIRS`); the others
(public, full cone, CGNAT, UPnP with themselves) are left out (`SKIPPED_PAIRS`).

Run as a script inside a lab namespace, this module is the prober:
`python -m whalescale.lab.natmatrix first ADDR T0 TIMEOUT_S` prints "ready", waits for
the wall-clock time T0, then prints the seconds from T0 to the first answered ping;
`... count ADDR N` prints "sent answered" for N pings.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import itertools
import os
import re
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from typing import Literal

from .errors import LabError
from .icmp import ping
from .mesh import LabMesh
from .natlab import LAN_PAIR, SITUATIONS, V6_PAIR, VPN_PORT, NatLab, Path, classify
from .nebula import NebulaMesh
from .netns import Host
from .proc import Proc

Vpn = Literal["nebula", "whalescale"]
Pair = tuple[str, str]

# Same-situation cells from nodes the topology already has: lan-a sits behind a plain
# masquerade (a port-restricted cone), v6-a behind a symmetric IPv4 NAT (and only it
# has IPv6 of the two).
SAME_KIND_PAIRS: dict[Pair, str] = {
    ("restricted", "lan-a"): "restricted <-> restricted",
    ("symmetric", "v6-a"): "symmetric <-> symmetric",
}
PAIRS: list[Pair] = [*itertools.combinations(SITUATIONS, 2), *SAME_KIND_PAIRS, LAN_PAIR,
                     V6_PAIR]
SKIPPED_PAIRS: list[Pair] = [(s, s) for s in SITUATIONS
                             if all(s not in pair for pair in SAME_KIND_PAIRS)]
CONNECT_TIMEOUT_S = 30.0
PING_TIMEOUT_S = 1.0
PROBERS_READY_S = 5.0  # started and waiting before time zero (19 on a busy 2-core host)
PAIR_READY_S = 2.0  # one prober, started before a pair's time zero
PROBE_EVERY_S = 0.1  # the first-reply prober's pace (a late reply still counts when it comes)
CLASSIFY_PINGS = 10
_FIRST = re.compile(r"first reply after ([\d.]+) s|(no reply)")
_UP = re.compile(r"^(\S+ \S+) INFO whalescale\.agent: node \S+ \(\S+\) up on ", re.MULTILINE)
# An agent's log line saying its session with a peer runs on a real (not relay) endpoint.
_DIRECT = re.compile(r"^(\S+ \S+) INFO whalescale\.agent: (?:session with (\S+) established via "
                     r"(\S+) |peer (\S+) now at (\S+) )", re.MULTILINE)


def _expected(a: str, b: str) -> Path:
    """What the issue expects of whalescale for the pair (see DESIGN.md's plan table):
    direct when one side is open (public, full cone, mapped by UPnP/NAT-PMP/PCP), direct
    by simultaneous punching between cones, relayed once a symmetric NAT meets anything
    that is not open."""
    if (a, b) == LAN_PAIR:
        return Path.LAN
    if (a, b) == V6_PAIR:
        return Path.IPV6
    open_sides = {"public", "fullcone", "upnp"}
    if a in open_sides or b in open_sides:
        return Path.DIRECT
    if "symmetric" in (a, b):
        return Path.RELAYED
    return Path.DIRECT  # restricted <-> cgnat: both cones


EXPECTED_WHALESCALE: dict[Pair, Path] = {pair: _expected(*pair) for pair in PAIRS}


@dataclass(frozen=True, slots=True)
class Cell:
    """One pair's outcome: answered at all, seconds from start, the path counted."""

    connected: bool
    first_ping_s: float | None
    path: Path
    direct_s: float | None = None  # when the first node's session went direct (whalescale)
    both_up_s: float | None = None  # when the later of the two agents said it was up
    alone_s: float | None = None  # first ping when the pair started alone (connect_alone)
    varied: bool = False  # of several rounds (`medians`), not all saw `path`

    def __str__(self) -> str:
        path = self.path.value + ("*" if self.varied else "")
        if not self.connected or self.first_ping_s is None:
            return path
        after_up = ("" if self.both_up_s is None
                    else f" ({self.first_ping_s - self.both_up_s:.1f} s after up)")
        return f"{path} {self.first_ping_s:.1f} s{after_up}"

    def direct_text(self) -> str:
        return "-" if self.direct_s is None else f"{self.direct_s:.1f} s"

    def alone_text(self) -> str:
        return "-" if self.alone_s is None else f"{self.alone_s:.2f} s"  # judged to 0.3 s


@dataclass
class Matrix:
    vpn: Vpn
    cells: dict[Pair, Cell]
    # When each of the VPN's agents logged it was up, from the start of all of them
    # (whalescale): how long start-up alone took on this machine.
    agents_up_s: list[float] = field(default_factory=list)
    runs: int = 1  # rounds this matrix is the median of (`medians`)

    def paths(self) -> dict[Pair, Path]:
        return {pair: cell.path for pair, cell in self.cells.items()}


def medians(rounds: list[Matrix]) -> Matrix:
    """One matrix of several rounds of the same VPN: each cell's times are the medians of
    the rounds that measured them ("after up" the median of each round's, not the
    difference of two medians); its path the one most rounds saw, marked `varied` when
    not all did."""
    if len(rounds) == 1:
        return rounds[0]

    def median(values: list[float | None]) -> float | None:
        seen = [v for v in values if v is not None]
        return statistics.median(seen) if seen else None

    cells = {}
    for pair in rounds[0].cells:
        each = [r.cells[pair] for r in rounds if pair in r.cells]
        paths = collections.Counter(cell.path for cell in each)
        first = median([cell.first_ping_s for cell in each])
        after_up = median([None if c.first_ping_s is None or c.both_up_s is None
                           else c.first_ping_s - c.both_up_s for c in each])
        cells[pair] = Cell(
            all(cell.connected for cell in each), first, paths.most_common(1)[0][0],
            median([cell.direct_s for cell in each]),
            None if first is None or after_up is None else first - after_up,
            median([cell.alone_s for cell in each]), varied=len(paths) > 1)
    return Matrix(rounds[0].vpn, cells, sorted(t for r in rounds for t in r.agents_up_s),
                  len(rounds))


# -- one VPN's nodes --------------------------------------------------------------------


@dataclass
class _Overlay:
    """A VPN ready to start (keys, certificates, configs written): each node's tunnel
    address, and how to start (every node, or the ones named) and stop its processes
    (`stop` also forgets what a node learned, so the next start is cold)."""

    tunnel_addr: dict[str, str]
    start: Callable[[Collection[str] | None], None]
    stop: Callable[[], None]
    wait_up: Callable[[Collection[str]], None]
    direct_at: Callable[[str, str], float | None] = lambda a, b: None  # wall clock
    up_at: Callable[[str], float | None] = lambda name: None  # wall clock


def _nebula(natlab: NatLab) -> _Overlay:
    mesh = NebulaMesh(natlab.lab, VPN_PORT)
    for anchor in natlab.anchors.values():
        mesh.add_lighthouse(anchor, anchor.addr())
    for host in natlab.nodes():
        mesh.add_node(host)
    mesh.prepare()

    def start(names: Collection[str] | None) -> None:
        mesh.start_all(names)
        mesh.wait_up(names)

    return _Overlay({n.name: n.tunnel_addr for n in mesh.nodes.values()}, start, mesh.stop,
                    mesh.wait_up)


def _whalescale(natlab: NatLab) -> _Overlay:
    mesh = LabMesh(natlab.lab, port=VPN_PORT)
    for anchor in natlab.anchors.values():
        mesh.add_node(anchor, anchor=True)  # static endpoint: its public address
    for host in natlab.nodes():
        mesh.add_node(host, static_endpoint=False)
    mesh.write_mesh()

    def start(names: Collection[str] | None) -> None:
        # Not LabMesh.start_all: it waits for each agent in turn while the clock runs.
        for name in mesh.nodes if names is None else names:
            mesh.start(name)

    def stop() -> None:
        for name, node in mesh.nodes.items():
            if node.proc is not None:
                node.proc.stop()
                node.proc = None
            shutil.rmtree(mesh.state_dir(name), ignore_errors=True)  # the LKG cache

    def wait_up(names: Collection[str]) -> None:
        for name in names:
            mesh.wait_up(name)

    def direct_at(a: str, b: str) -> float | None:
        proc = mesh.nodes[a].proc
        return None if proc is None else went_direct(proc.log(), b)

    def up_at(name: str) -> float | None:
        proc = mesh.nodes[name].proc
        return None if proc is None else agent_up(proc.log())

    return _Overlay({n.name: n.tunnel_addr for n in mesh.nodes.values()}, start, stop,
                    wait_up, direct_at, up_at)


def agent_up(log: str) -> float | None:
    """The wall-clock time an agent's log says it was up (serving)."""
    found = _UP.search(log)
    return None if found is None else _log_time(found[1])


def _log_time(stamp: str) -> float:
    return datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def went_direct(log: str, peer: str) -> float | None:
    """The wall-clock time of the first line of an agent's log that puts its session
    with `peer` on a real endpoint (the relay alias is in 100::/64)."""
    for m in _DIRECT.finditer(log):
        name, endpoint = (m[2], m[3]) if m[2] else (m[4], m[5])
        if name == peer and not endpoint.startswith("[100::"):
            return _log_time(m[1])
    return None


OVERLAYS: dict[Vpn, Callable[[NatLab], _Overlay]] = {
    "nebula": _nebula,
    "whalescale": _whalescale,
}


# -- probing ---------------------------------------------------------------------------


def _prober(*args: str) -> list[str]:
    return [sys.executable, "-m", "whalescale.lab.natmatrix", *args]


def _first_reply(proc: Proc) -> float | None:
    """Seconds to the first answer reported by a `first` prober (which exits after)."""
    proc.wait_for_log(_FIRST.pattern, CONNECT_TIMEOUT_S + 15)
    proc.stop()
    match = _FIRST.search(proc.log())
    return float(match[1]) if match and match[1] else None


def _count_pings(host: Host, addr: str) -> tuple[int, int]:
    out = host.run(*_prober("count", addr, str(CLASSIFY_PINGS)),
                   timeout=CLASSIFY_PINGS * PING_TIMEOUT_S + 15).stdout.split()
    return int(out[0]), int(out[1])


def run_matrix(natlab: NatLab, vpn: Vpn, *, settle_s: float = 0.0,
               overlay: _Overlay | None = None) -> Matrix:
    """Start `vpn` on every node and anchor at once, measure every pair, stop `vpn`.

    `settle_s`: how long to wait after the last first reply before classifying, to see
    the path a pair settles on rather than the one it starts with. `overlay`: the VPN's
    nodes when already made (a lab makes each VPN's keys and files once)."""
    overlay = overlay or OVERLAYS[vpn](natlab)
    for site in natlab.sites.values():  # cold NATs: nothing left of the run before
        site.flush_conntrack()
    t0 = time.time() + PROBERS_READY_S
    try:
        probers = {
            (a, b): natlab.node(a).spawn(
                *_prober("first", overlay.tunnel_addr[b], repr(t0),
                         str(CONNECT_TIMEOUT_S)),
                log_path=natlab.lab.tempdir / f"{vpn}-probe-{a}-{b}.log")
            for a, b in PAIRS
        }
        for proc in probers.values():
            proc.wait_for_log("ready", max(0.0, t0 - time.time()))
        if time.time() > t0:
            raise LabError(f"the probers were not ready within {PROBERS_READY_S} s")
        time.sleep(t0 - time.time())
        overlay.start(None)
        firsts = {pair: _first_reply(proc) for pair, proc in probers.items()}
        time.sleep(settle_s)
        cells: dict[Pair, Cell] = {}
        for (a, b), first in firsts.items():
            if first is None:
                cells[(a, b)] = Cell(False, None, Path.NONE)
                continue
            path = classify(natlab, a, b,
                            lambda a=a, b=b: _count_pings(natlab.node(a), overlay.tunnel_addr[b]))
            direct_at = overlay.direct_at(a, b)
            ups = [overlay.up_at(a), overlay.up_at(b)]
            cells[(a, b)] = Cell(True, first, path,
                                 None if direct_at is None else direct_at - t0,
                                 None if None in ups else max(ups) - t0)
        ups_all = [overlay.up_at(name) for name in overlay.tunnel_addr]
        return Matrix(vpn, cells, sorted(up - t0 for up in ups_all if up is not None))
    finally:
        overlay.stop()


def connect_alone(natlab: NatLab, vpn: Vpn, overlay: _Overlay | None = None
                  ) -> dict[Pair, float | None]:
    """Seconds from start to the first answered ping for each pair started alone, cold,
    into a mesh of running anchors: nothing else of `vpn` runs, the anchors (started
    afresh for each pair, then waited for) know nothing of the pair, no cache, the NATs'
    connection tracking flushed. On this 2-core machine starting every node at once
    (run_matrix) makes start-up CPU-bound; a real node has its host's CPU to itself and
    finds its anchors running, as here."""
    overlay = overlay or OVERLAYS[vpn](natlab)
    out: dict[Pair, float | None] = {}
    try:
        for a, b in PAIRS:
            for site in natlab.sites.values():
                site.flush_conntrack()
            overlay.start(list(natlab.anchors))
            overlay.wait_up(list(natlab.anchors))
            t0 = time.time() + PAIR_READY_S
            prober = natlab.node(a).spawn(
                *_prober("first", overlay.tunnel_addr[b], repr(t0), str(CONNECT_TIMEOUT_S)),
                log_path=natlab.lab.tempdir / f"{vpn}-alone-{a}-{b}-{t0:.3f}.log")
            if not prober.wait_for_log("ready", PAIR_READY_S) or time.time() > t0:
                raise LabError(f"the prober for {a} <-> {b} was not ready within "
                               f"{PAIR_READY_S} s")
            time.sleep(t0 - time.time())
            try:
                overlay.start([a, b])
                out[(a, b)] = _first_reply(prober)
            finally:
                overlay.stop()
    finally:
        overlay.stop()
    return out


def run_matrices(*, with_nebula: bool = True, alone: bool = False, runs: int = 1
                 ) -> tuple[list[Matrix], list[Matrix]]:
    """Build the NAT lab, run nebula (unless told not to) then whalescale on it, `runs`
    rounds, tear down; each VPN's matrix of every round (`medians` makes one of them).
    Without nebula the reference list is empty. `alone`: then, in each round, time each
    pair started alone (`connect_alone`), into the cells' `alone_s`."""
    from .lab import Lab

    with Lab() as lab, NatLab(lab) as natlab:
        vpns: list[Vpn] = ["nebula", "whalescale"] if with_nebula else ["whalescale"]
        overlays = {vpn: OVERLAYS[vpn](natlab) for vpn in vpns}
        rounds: dict[Vpn, list[Matrix]] = {vpn: [] for vpn in vpns}
        for _ in range(runs):
            matrices = {vpn: run_matrix(natlab, vpn, overlay=overlays[vpn]) for vpn in vpns}
            for vpn in vpns if alone else ():
                times = connect_alone(natlab, vpn, overlays[vpn])
                matrices[vpn].cells = {pair: replace(cell, alone_s=times.get(pair))
                                       for pair, cell in matrices[vpn].cells.items()}
            for vpn in vpns:
                rounds[vpn].append(matrices[vpn])
        return rounds["whalescale"], rounds.get("nebula", [])


def render_side_by_side(ours: Matrix, nebula: Matrix) -> str:
    """A markdown table: each pair, whalescale's cell, what the issue expects, nebula's."""
    alone = any(cell.alone_s is not None for cell in ours.cells.values())
    rows = [
        "| pair | whalescale | went direct | expected | nebula 1.6.1 |"
        + (" whalescale alone | nebula alone |" if alone else ""),
        "|---|---|---|---|---|" + ("---|---|" if alone else ""),
    ]
    for pair in PAIRS:
        label = f"{pair[0]} <-> {pair[1]}"
        if pair in SAME_KIND_PAIRS:
            label += f" ({SAME_KIND_PAIRS[pair]})"
        got = ours.cells.get(pair)
        mark = "" if got is not None and got.path is EXPECTED_WHALESCALE[pair] else " (!)"
        direct = got.direct_text() if got is not None else "-"
        theirs = nebula.cells.get(pair)
        row = (f"| {label} | {got}{mark} | {direct} | "
               f"{EXPECTED_WHALESCALE[pair].value} | {theirs or '-'} |")
        if alone:
            row += (f" {got.alone_text() if got else '-'} |"
                    f" {theirs.alone_text() if theirs else '-'} |")
        rows.append(row)
    skipped = ", ".join(f"{a}<->{b}" for a, b in SKIPPED_PAIRS)
    rows += ["", f"Times: seconds from starting all nodes to the first answered ping "
                 f"(a ping every {PROBE_EVERY_S:g} s, timeout {CONNECT_TIMEOUT_S:.0f} s); went "
                 "direct: when the first node's session left the relay or started direct, from "
                 "its log; after up: since the later of the two agents logged it was up "
                 "(start-up is CPU-bound here: every agent starts at once on this machine"
                 + ("" if not ours.agents_up_s else
                    f"; whalescale's {len(ours.agents_up_s) // ours.runs} agents were up "
                    f"{ours.agents_up_s[0]:.1f}-{ours.agents_up_s[-1]:.1f} s after the start, "
                    f"on {os.cpu_count()} cores") + "). "
                 + ("" if ours.runs == 1 else
                    f"Every time is the median of {ours.runs} rounds; *: not every round "
                    "saw this path, the one most did is shown. ")
                 + ("Alone: the pair started alone, cold (no cache, the NATs' connection "
                    "tracking flushed), into running anchors that know nothing of it: what "
                    "a node starting on its own host sees. " if alone else "") +
                 "Paths: the lab's nftables counters "
                 f"during {CLASSIFY_PINGS} pings. (!): not what the issue expects. "
                 f"Not run (one node per situation): {skipped}."]
    return "\n".join(rows)


# -- the prober, run inside a lab namespace ---------------------------------------------


def _probe_first(addr: str, t0: float, timeout_s: float) -> str:
    print("ready", flush=True)
    time.sleep(max(0.0, t0 - time.time()))
    deadline = t0 + timeout_s
    while time.time() < deadline:
        try:
            if ping(addr, 1, PROBE_EVERY_S):
                return f"first reply after {time.time() - t0:.3f} s"
        except OSError:
            time.sleep(PROBE_EVERY_S)  # no tunnel interface or route yet
    return "no reply"


def _probe_count(addr: str, count: int) -> str:
    answered = 0
    for _ in range(count):
        with contextlib.suppress(OSError):  # no route: counts as unanswered
            answered += ping(addr, 1, PING_TIMEOUT_S)
    return f"{count} {answered}"


if __name__ == "__main__":
    if sys.argv[1] == "first":
        print(_probe_first(sys.argv[2], float(sys.argv[3]), float(sys.argv[4])), flush=True)
    else:
        print(_probe_count(sys.argv[2], int(sys.argv[3])), flush=True)
