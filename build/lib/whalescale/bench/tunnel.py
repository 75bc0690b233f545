"""`whalescale bench tunnel`: our tunnel, wireguard-go and the raw veth, in one sitting.

Two namespaces joined by one veth. Each contender carries one iperf3 TCP flow
in turn on the same link, so the machine's noise hits them alike and the
ratio is what counts. The shared two cores also run both iperf3 ends.
"""

from __future__ import annotations

import json
import shutil
import statistics

from rich.console import Console
from rich.table import Table

from ..lab.iperf import iperf_tcp
from ..lab.lab import Lab, lab_available
from ..lab.mesh import LabMesh
from ..lab.netns import Host


def _wireguard_go_pair(lab: Lab, mesh: LabMesh, a: Host, b: Host) -> tuple[str, str]:
    """Two wireguard-go peers of each other; returns their tunnel addresses."""
    # whalescale's agents hold mesh.port in the same namespaces
    port = mesh.port + 1
    wg_a, wg_b = mesh.add_wireguard_go(a, port), mesh.add_wireguard_go(b, port)
    for wg in (wg_a, wg_b):
        wg.start(lab.tempdir)
    for wg, other in ((wg_a, wg_b), (wg_b, wg_a)):
        wg.add_peer(other.public_key, other.tunnel_addr, f"{other.host.addr()}:{other.port}")
    return wg_a.tunnel_addr, wg_b.tunnel_addr


def measure(seconds: int, repeat: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {"veth": [], "wireguard-go": [], "whalescale": []}
    with Lab() as lab:
        a, b = lab.host("left"), lab.host("right")
        lab.link(a, b)
        mesh = LabMesh(lab, keepalive_s=0)
        mesh.add_node(a)
        node_b = mesh.add_node(b)
        mesh.start_all()
        wg_b_addr = _wireguard_go_pair(lab, mesh, a, b)[1]
        targets = {"veth": b.addr(), "wireguard-go": wg_b_addr, "whalescale": node_b.tunnel_addr}
        for name, addr in targets.items():
            if not a.ping(addr, count=3, timeout=2.0):
                raise RuntimeError(f"bench: {name} path to {addr} does not answer")
        for _ in range(repeat):
            for name, addr in targets.items():
                results[name].append(iperf_tcp(a, b, addr, seconds).gbit_s)
    return results


def run_tunnel_bench(seconds: int = 10, as_json: bool = False, repeat: int = 1) -> int:
    console = Console()
    reason = lab_available() or (None if shutil.which("wireguard-go") else "no wireguard-go")
    if reason:
        console.print(f"[red]whalescale bench tunnel: cannot run: {reason}")
        return 2
    results = measure(seconds, repeat)
    medians = {name: statistics.median(v) for name, v in results.items()}
    ratio = medians["whalescale"] / medians["wireguard-go"]
    if as_json:
        print(json.dumps({"gbit_s": results, "median_gbit_s": medians,
                          "whalescale_vs_wireguard_go": ratio, "seconds": seconds}))
        return 0
    table = Table(title=f"iperf3 TCP, one flow, {seconds} s x {repeat}, one veth, two namespaces")
    table.add_column("path")
    table.add_column("Gbit/s (median)", justify="right")
    table.add_column("runs", justify="right")
    for name, runs in results.items():
        table.add_row(name, f"{medians[name]:.2f}", " ".join(f"{r:.2f}" for r in runs))
    console.print(table)
    console.print(f"whalescale / wireguard-go = [bold]{ratio:.2f}x[/]")
    return 0
