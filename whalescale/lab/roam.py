"""Roaming side by side with nebula (issue 13): how long a flow through the tunnel goes
unanswered when the path under it changes.

Theory of operation: scenarios/nat-anchor.toml (one public anchor, peer-a and peer-b each
behind its own port-restricted NAT) is built once. Nebula runs on it first (the anchor
as lighthouse and relay), then whalescale; each connects peer-a and peer-b, then meets
each disturbance in turn while a prober (`gaps.py`) sends through the tunnel every 0.1 s
and reports the longest time without an answer:

- `moves`: peer-a moves to a new address behind its NAT (a laptop joining another
  network), while peer-a sends, and again while only peer-b sends;
- `rebinding`: peer-a's gateway gets a new public address and forgets its mappings
  (invisible to peer-a), while peer-a sends, and again under a one-way stream from
  peer-b (peer-a then receives nothing and has nothing to answer);
- `nat-flush`: both gateways forget their NAT state (`conntrack -F`).

Each VPN gets the same disturbances in the same order on the same topology; its
processes are stopped by their ids before the next runs.
"""

from __future__ import annotations

import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from . import gaps
from .errors import LabError
from .lab import Lab
from .mesh import LabMesh
from .natlab import VPN_PORT
from .nebula import NebulaMesh
from .netns import Host
from .scenario import SCENARIO_DIR, build, load, mesh_of

PROBE_S = 8.0  # per disturbance: 1.5 s before it, the rest to recover
DISTURB_AFTER_S = 1.5
CONNECT_TIMEOUT_S = 30.0
ECHO_PORT = 7200


@dataclass(frozen=True)
class Event:
    name: str
    text: str
    sender: str  # who probes; the other end echoes
    disturb: Callable[[dict[str, Host]], object]
    one_way: bool = False  # the sender streams, nothing answers: measured where it arrives


def _flush(hosts: dict[str, Host]) -> None:
    for gateway in ("gateway-a", "gateway-b"):
        hosts[gateway].run("conntrack", "-F")


def rebind(gateway: Host) -> str:
    """A NAT rebinding: the gateway's new public address, and its mappings gone (kept,
    they would still carry the old flows out from the old address); returns it."""
    new = gateway.readdress()
    gateway.run("conntrack", "-F")
    return new


EVENTS = (
    Event("moves", "peer-a moves (new address behind its NAT), peer-a sending", "peer-a",
          lambda hosts: hosts["peer-a"].readdress()),
    Event("moves-silent", "peer-a moves, only peer-b sending", "peer-b",
          lambda hosts: hosts["peer-a"].readdress()),
    Event("rebinding", "peer-a's gateway gets a new public address, peer-a sending",
          "peer-a", lambda hosts: rebind(hosts["gateway-a"])),
    Event("rebinding-one-way", "peer-a's gateway gets a new public address, peer-b "
          "streaming to peer-a (nothing answers)", "peer-b",
          lambda hosts: rebind(hosts["gateway-a"]), one_way=True),
    Event("nat-flush", "both gateways forget their NAT state, peer-a sending", "peer-a",
          _flush),
)
OTHER = {"peer-a": "peer-b", "peer-b": "peer-a"}


@dataclass
class Run:
    vpn: str
    connect_s: float | None
    longest_gap_s: dict[str, float]


def _connect(hosts: dict[str, Host], addr: str, started: float) -> float | None:
    while time.monotonic() - started < CONNECT_TIMEOUT_S:
        if hosts["peer-a"].ping(addr, count=1, timeout=0.2):
            return time.monotonic() - started
    return None


def longest_gaps(hosts: dict[str, Host], tunnel: dict[str, str],
                 events: tuple[Event, ...] = EVENTS) -> dict[str, float]:
    """Each event in turn under a flow through the tunnel: its longest gap, by name."""
    longest = {}
    for port, event in enumerate(events, ECHO_PORT):
        target = OTHER[event.sender]
        if event.one_way:
            receiver = measured = gaps.start_sink(hosts[target], tunnel[target], port, PROBE_S)
            gaps.start_stream(hosts[event.sender], tunnel[target], port, PROBE_S)
        else:
            receiver = gaps.start_echo(hosts[target], tunnel[target], port)
            measured = gaps.start_probe(hosts[event.sender], tunnel[target], port, PROBE_S)
        time.sleep(DISTURB_AFTER_S)
        event.disturb(hosts)
        longest[event.name] = gaps.result(measured, PROBE_S + 20)["longest_gap_s"]
        receiver.stop()
    return longest


def _whalescale(mesh: LabMesh, hosts: dict[str, Host]) -> Run:
    for name in mesh.nodes:  # a cold start every run: no last-known-good cache
        shutil.rmtree(mesh.state_dir(name), ignore_errors=True)
    tunnel = {name: node.tunnel_addr for name, node in mesh.nodes.items()}
    started = time.monotonic()
    try:
        for name in mesh.nodes:
            mesh.start(name)
        connect = _connect(hosts, tunnel["peer-b"], started)
        if connect is None:
            raise LabError("whalescale: peer-a never reached peer-b")
        return Run("whalescale", connect, longest_gaps(hosts, tunnel))
    finally:
        for node in mesh.nodes.values():
            if node.proc is not None:
                node.proc.stop()


def _nebula(mesh: NebulaMesh, hosts: dict[str, Host]) -> Run:
    tunnel = {node.name: node.tunnel_addr for node in mesh.nodes.values()}
    started = time.monotonic()
    try:
        mesh.start_all()
        connect = _connect(hosts, tunnel["peer-b"], started)
        if connect is None:
            raise LabError("nebula: peer-a never reached peer-b")
        return Run("nebula", connect, longest_gaps(hosts, tunnel))
    finally:
        mesh.stop()


def run_roam(*, runs: int = 1, with_nebula: bool = True) -> list[Run]:
    """Build the scenario and both VPNs' keys once, then `runs` rounds of nebula (unless
    told not to) and whalescale on it."""
    scenario = load(SCENARIO_DIR / "nat-anchor.toml")
    found: list[Run] = []
    with Lab() as lab:
        hosts = build(lab, scenario)
        ours = mesh_of(lab, scenario, hosts)
        nebula = NebulaMesh(lab, VPN_PORT)
        nebula.add_lighthouse(hosts["anchor"], hosts["anchor"].addr())
        for name in ("peer-a", "peer-b"):
            nebula.add_node(hosts[name])
        nebula.prepare()
        for _ in range(runs):
            if with_nebula:
                found.append(_nebula(nebula, hosts))
            found.append(_whalescale(ours, hosts))
    return found


def render(found: list[Run]) -> str:
    """Medians over the runs, one row per disturbance, one column per VPN."""
    vpns = list(dict.fromkeys(r.vpn for r in found))

    def median(vpn: str, pick: Callable[[Run], float | None]) -> str:
        values = [v for r in found if r.vpn == vpn and (v := pick(r)) is not None]
        if not values:
            return "-"
        spread = f" ({min(values):.2f}-{max(values):.2f})" if len(values) > 1 else ""
        return f"{statistics.median(values):.2f} s{spread}"

    runs = sum(1 for r in found if r.vpn == "whalescale")
    rows = [f"| what (median of {runs} runs, and their range) | {' | '.join(vpns)} |",
            "|---|" + "--:|" * len(vpns),
            "| first answer from start | "
            + " | ".join(median(v, lambda r: r.connect_s) for v in vpns) + " |"]
    for event in EVENTS:
        rows.append(f"| longest gap: {event.text} | " + " | ".join(
            median(v, lambda r, e=event.name: r.longest_gap_s.get(e)) for v in vpns) + " |")
    rows += ["", "Longest gap: the longest time without an answer to a UDP datagram sent "
             f"through the tunnel every {gaps.EVERY_S:g} s (one-way: without a datagram "
             "where the stream arrives; scenarios/nat-anchor.toml: one "
             "anchor, two port-restricted NATs; keepalive 5 s). The disturbances come in "
             "this order in each run, each on the state the one before left."]
    return "\n".join(rows)
