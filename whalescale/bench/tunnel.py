"""`whalescale bench tunnel`: our tunnel, wireguard-go and the raw veth, in one sitting.

Two namespaces joined by one veth. Each contender carries one iperf3 TCP flow
in turn on the same link, so the machine's noise hits them alike and the
ratio is what counts. The shared two cores also run both iperf3 ends.

With `firewall_rules`, whalescale runs twice in each round: as it is, then after a
reload gives the receiving node that many firewall rules, every one of which its
packets meet (the flow's allow rule comes last): what the firewall costs a tunnel.
"""

from __future__ import annotations

import json
import shutil
import statistics

from rich.console import Console
from rich.table import Table

from ..lab.iperf import IPERF_PORT, iperf_tcp
from ..lab.lab import Lab, lab_available
from ..lab.mesh import LabMesh, MeshNode
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
    # peers of each other, not of the mesh: out of the mesh file a reload rewrites (the
    # lab stops their processes)
    mesh.wireguard.clear()
    return wg_a.tunnel_addr, wg_b.tunnel_addr


def firewall_lines(count: int, source: str) -> list[str]:
    """`count` rules for the receiving node's [[node]] table: deny rules for other ports
    of `source`, then the allow rule its iperf3 flow matches."""
    rules = [f'{{ action = "deny", from = "{source}", proto = "tcp", ports = [{10000 + i}] }},'
             for i in range(count - 1)]
    rules.append(f'{{ action = "allow", from = "{source}", proto = "tcp", '
                 f'ports = [{IPERF_PORT}] }},')
    return ["firewall = [", *rules, "]"]


def _set_rules(mesh: LabMesh, receiver: MeshNode, lines: list[str]) -> None:
    """Give `receiver` these [[node]] lines by a reload (its sessions stay)."""
    if receiver.toml_lines != lines:
        receiver.toml_lines = lines
        mesh.write_mesh()
        mesh.reload(receiver.name)


def measure(seconds: int, repeat: int, firewall_rules: int = 0) -> dict[str, list[float]]:
    ruled = f"whalescale, {firewall_rules} firewall rules"
    results: dict[str, list[float]] = {"veth": [], "wireguard-go": [], "whalescale": [],
                                       **({ruled: []} if firewall_rules else {})}
    with Lab() as lab:
        a, b = lab.host("left"), lab.host("right")
        lab.link(a, b)
        mesh = LabMesh(lab, keepalive_s=0)
        node_a = mesh.add_node(a)
        node_b = mesh.add_node(b)
        mesh.start_all()
        wg_b_addr = _wireguard_go_pair(lab, mesh, a, b)[1]
        targets = {"veth": b.addr(), "wireguard-go": wg_b_addr, "whalescale": node_b.tunnel_addr,
                   ruled: node_b.tunnel_addr}
        for name in results:
            if not a.ping(targets[name], count=3, timeout=2.0):
                raise RuntimeError(f"bench: {name} path to {targets[name]} does not answer")
        rules = firewall_lines(firewall_rules, node_a.name) if firewall_rules else []
        for _ in range(repeat):
            for name in results:
                if name.startswith("whalescale"):
                    _set_rules(mesh, node_b, rules if name == ruled else [])
                results[name].append(iperf_tcp(a, b, targets[name], seconds).gbit_s)
        if firewall_rules:
            _set_rules(mesh, node_b, rules)
            firewall = mesh.status(node_b.name)["firewall"]
            if len(firewall["rules"]) != firewall_rules or not firewall["active"]:
                raise RuntimeError(f"bench: {node_b.name} did not take the rules: {firewall}")
    return results


def run_tunnel_bench(seconds: int = 10, as_json: bool = False, repeat: int = 1,
                     firewall_rules: int = 0) -> int:
    console = Console()
    reason = lab_available() or (None if shutil.which("wireguard-go") else "no wireguard-go")
    if reason:
        console.print(f"[red]whalescale bench tunnel: cannot run: {reason}")
        return 2
    results = measure(seconds, repeat, firewall_rules)
    medians = {name: statistics.median(v) for name, v in results.items()}
    ratio = medians["whalescale"] / medians["wireguard-go"]
    ruled = next((name for name in medians if "firewall" in name), None)
    firewall_ratio = medians[ruled] / medians["whalescale"] if ruled else None
    if as_json:
        print(json.dumps({"gbit_s": results, "median_gbit_s": medians,
                          "whalescale_vs_wireguard_go": ratio, "seconds": seconds,
                          **({"firewall_rules": firewall_rules,
                              "with_rules_vs_without": firewall_ratio} if ruled else {})}))
        return 0
    table = Table(title=f"iperf3 TCP, one flow, {seconds} s x {repeat}, one veth, two namespaces")
    table.add_column("path")
    table.add_column("Gbit/s (median)", justify="right")
    table.add_column("runs", justify="right")
    for name, runs in results.items():
        table.add_row(name, f"{medians[name]:.2f}", " ".join(f"{r:.2f}" for r in runs))
    console.print(table)
    console.print(f"whalescale / wireguard-go = [bold]{ratio:.2f}x[/]")
    if firewall_ratio is not None:
        console.print(f"whalescale with {firewall_rules} firewall rules / without = "
                      f"[bold]{firewall_ratio:.3f}[/]")
    return 0
