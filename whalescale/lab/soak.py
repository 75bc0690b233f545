"""The long soak (issue 15): a mesh under steady load while it is reloaded, rekeyed and
has a node killed, for half an hour; what it costs the flows that do not involve the
killed node, and whether the agents' memory grows.

Theory of operation: scenarios/nat-relay.toml (two anchors, peer-a and peer-b behind
symmetric NATs, relayed through an anchor). Three iperf3 TCP flows run the whole time,
each paced (`RATE`): peer-a -> peer-b over the relay, peer-a -> anchor-2 and anchor-1 ->
anchor-2 direct. Every `reload_every_s` one agent in turn gets SIGHUP; every
`restart_every_s` peer-b's agent is killed (SIGKILL) and started again; sessions rekey
every two minutes by themselves, under load, as they do. At the end: per flow, the
longest run of iperf3's half-second intervals that carried nothing (a stall), and per
agent that ran throughout, its RSS growth from the end of the first minute.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass

from .errors import LabError
from .lab import Lab
from .mesh import LabMesh
from .proc import Proc, rss_mib
from .scenario import SCENARIO_DIR, build, load, start_mesh

RATE = "10M"
INTERVAL_S = 0.5
WARM_UP_S = 60.0
CONNECT_TIMEOUT_S = 30.0
KILLED = "peer-b"
FLOWS = (("peer-a", "peer-b"), ("peer-a", "anchor-2"), ("anchor-1", "anchor-2"))


@dataclass
class SoakResult:
    minutes: float
    reloads: int
    restarts: int
    longest_stall_s: dict[str, float | None]  # flow -> seconds (None: the flow broke)
    mean_mbit_s: dict[str, float | None]
    rss_growth_mib: dict[str, float]


def _flow_name(flow: tuple[str, str]) -> str:
    return f"{flow[0]} -> {flow[1]}"


def _start_flows(mesh: LabMesh, seconds: float) -> list[tuple[Proc, Proc]]:
    procs = []
    for port, (client, server) in enumerate(FLOWS, 5301):
        addr = mesh.nodes[server].tunnel_addr
        srv = mesh.nodes[server].host.spawn("iperf3", "-s", "-1", "--forceflush", "-B", addr,
                                            "-p", str(port))
        if not srv.wait_for_log(r"Server listening", 10):
            raise LabError(f"iperf3 server on {server} did not start: {srv.log()}")
        cli = mesh.nodes[client].host.spawn(
            "iperf3", "-c", addr, "-p", str(port), "-t", str(int(seconds)), "-b", RATE,
            "-i", str(INTERVAL_S), "-J")
        procs.append((srv, cli))
    return procs


def _stall(report: dict) -> tuple[float, float]:
    """(longest run of empty intervals in seconds, mean Mbit/s) of an iperf3 report."""
    longest = run = 0.0
    for interval in report["intervals"]:
        summed = interval["sum"]
        if summed["bytes"] == 0:
            run += summed["seconds"]
            longest = max(longest, run)
        else:
            run = 0.0
    return longest, report["end"]["sum_received"]["bits_per_second"] / 1e6


def run_soak(minutes: float = 30.0, reload_every_s: float = 30.0,
             restart_every_s: float = 300.0) -> SoakResult:
    seconds = minutes * 60
    scenario = load(SCENARIO_DIR / "nat-relay.toml")
    with Lab() as lab:
        mesh = start_mesh(lab, scenario, build(lab, scenario))
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while not mesh.nodes["peer-a"].host.ping(mesh.nodes["peer-b"].tunnel_addr, timeout=1):
            if time.monotonic() > deadline:
                raise LabError("peer-a does not reach peer-b over the relay")
        flows = _start_flows(mesh, seconds)
        started = time.monotonic()
        names = list(mesh.nodes)
        rss0: dict[str, float] = {}
        reloads = restarts = 0
        next_reload, next_restart = reload_every_s, restart_every_s
        while (elapsed := time.monotonic() - started) < seconds:
            if not rss0 and elapsed >= WARM_UP_S:
                rss0 = {n: rss_mib(mesh.nodes[n].proc.pid) for n in names if n != KILLED}
            if elapsed >= next_reload:
                name = names[reloads % len(names)]
                proc = mesh.nodes[name].proc
                if proc is not None:
                    os.kill(proc.pid, signal.SIGHUP)
                reloads += 1
                next_reload += reload_every_s
            if elapsed >= next_restart:
                proc = mesh.nodes[KILLED].proc
                if proc is not None:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.stop()
                mesh.start(KILLED)
                mesh.wait_up(KILLED)
                restarts += 1
                next_restart += restart_every_s
            time.sleep(0.5)
        rss = {n: rss_mib(mesh.nodes[n].proc.pid) - rss0.get(n, 0.0) for n in rss0}
        stalls: dict[str, float | None] = {}
        rates: dict[str, float | None] = {}
        for flow, (srv, cli) in zip(FLOWS, flows, strict=True):
            cli.wait_for_log(r'"end"', 60)
            cli.stop()
            srv.stop()
            try:
                stalls[_flow_name(flow)], rates[_flow_name(flow)] = _stall(json.loads(cli.log()))
            except (ValueError, KeyError):  # iperf3 gave up: the connection broke
                stalls[_flow_name(flow)] = rates[_flow_name(flow)] = None
        return SoakResult(minutes, reloads, restarts, stalls, rates, rss)


def render(result: SoakResult) -> str:
    rows = [f"Soak: {result.minutes:g} min, {result.reloads} reloads (SIGHUP, each agent in "
            f"turn), {KILLED} killed and restarted {result.restarts} times, flows paced at "
            f"{RATE}bit/s.", "", "| flow | longest stall | mean |", "|---|--:|--:|"]
    for flow, stall in result.longest_stall_s.items():
        rate = result.mean_mbit_s[flow]
        note = " (involves the killed node)" if KILLED in flow else ""
        rows.append(f"| {flow}{note} | {'broke' if stall is None else f'{stall:.1f} s'} | "
                    f"{'-' if rate is None else f'{rate:.1f} Mbit/s'} |")
    rows += ["", "| agent | RSS growth after the first minute |", "|---|--:|"]
    rows += [f"| {name} | {growth:+.1f} MiB |" for name, growth in result.rss_growth_mib.items()]
    return "\n".join(rows)
