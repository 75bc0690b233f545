"""`whalescale lab demo`: a local mesh in network namespaces, measured, then removed."""

from __future__ import annotations

import itertools
import subprocess
import time

from rich.console import Console
from rich.table import Table

from .iperf import iperf_tcp
from .lab import Lab, lab_available
from .mesh import LabMesh


def _names(count: int) -> list[str]:
    return ["anchor1"] + [f"peer{i}" for i in range(1, count)]


def run_demo(nodes: int = 3, seconds: int = 5) -> int:
    console = Console()
    reason = lab_available()
    if reason:
        console.print(f"[red]whalescale lab demo: cannot run: {reason}")
        return 2
    if nodes < 2:
        console.print("[red]whalescale lab demo: --nodes must be at least 2")
        return 2
    lab = Lab()
    try:
        with lab:
            return _demo(lab, console, nodes, seconds)
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130
    finally:
        console.print(_teardown_report(lab))


def _demo(lab: Lab, console: Console, nodes: int, seconds: int) -> int:
    console.print(f"[bold]lab {lab.prefix}[/]: {nodes} nodes, each in its own network "
                  "namespace, routed through an 'internet' namespace")
    hosts = lab.star(_names(nodes))
    mesh = LabMesh(lab)
    for i, host in enumerate(hosts.values()):
        # Only the anchor has a static endpoint: the peers find each other by gossip.
        mesh.add_node(host, anchor=(i == 0), static_endpoint=(i == 0))
    started = time.monotonic()
    mesh.start_all()
    console.print(f"agents up in {time.monotonic() - started:.2f} s from one mesh file "
                  f"({mesh.mesh_path}); only the anchor has an endpoint in it, the peers "
                  "find each other through signed gossip")

    names = list(mesh.nodes)
    reach = Table(title="who reaches whom (ICMP echo through ws0)")
    reach.add_column("from \\ to")
    for name in names:
        reach.add_column(name, justify="center")
    failures = 0
    for src in names:
        row = []
        for dst in names:
            if src == dst:
                row.append("-")
                continue
            ok = mesh.nodes[src].host.ping(mesh.nodes[dst].tunnel_addr, count=3, timeout=2.0)
            failures += not ok
            row.append("[green]yes" if ok else "[red]NO")
        reach.add_row(src, *row)
    console.print(reach)

    handshakes = Table(title="handshakes (initiator: initiation sent -> response read)")
    for column in ("node", "peer", "role", "time"):
        handshakes.add_column(column)
    for src in names:
        for peer, role, ms in mesh.nodes[src].handshakes():
            handshakes.add_row(src, peer, role, f"{ms:.1f} ms" if ms is not None else "")
    console.print(handshakes)

    a, b = mesh.nodes[names[0]], mesh.nodes[names[1]]
    result = iperf_tcp(a.host, b.host, b.tunnel_addr, seconds)
    console.print(f"iperf3 TCP {a.name} -> {b.name} through the tunnel, {seconds} s: "
                  f"[bold]{result.gbit_s:.2f} Gbit/s[/], {result.retransmits} retransmits")
    pairs = len(list(itertools.permutations(names, 2)))
    console.print(f"{pairs - failures}/{pairs} directed pairs reach each other")
    return 0 if failures == 0 else 1


def _teardown_report(lab: Lab) -> str:
    procs = [p for h in lab.hosts.values() for p in h.procs]
    alive = [p for p in procs if p.alive()]
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    left = [line.split()[0] for line in listing.splitlines()
            if line.strip() and line.startswith(lab.prefix)]
    if alive or left:
        return f"[red]teardown incomplete: {len(alive)} processes, namespaces {sorted(left)}"
    return (f"teardown: {len(procs)} processes stopped, {len(lab.hosts)} namespaces and "
            "their links removed")
