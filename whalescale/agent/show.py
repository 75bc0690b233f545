"""`whalescale status` for people: the agent's JSON as tables."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    return f"{seconds / 60:.0f} min ago"


def _si(value: float) -> str:
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= factor:
            return f"{value / factor:.1f} {prefix}"
    return f"{value:.0f} "


def print_status(status: dict[str, Any]) -> None:
    console = Console()
    role = "anchor" if status["anchor"] else "node"
    console.print(f"[bold]{status['node']}[/] ({role}, {status['fingerprint']}) on "
                  f"{status['interface']}, udp {status['port']}")
    anchors = status["anchors"]
    console.print(f"anchors: {len(anchors['reachable'])} of {anchors['total']} reachable "
                  f"({anchors['health']})")
    nat = status["nat"]
    if not status["anchor"]:
        seen = f", seen as {nat['observed']}" if nat["observed"] else ""
        mapped = f", port mapping {nat['port_mapping']}" if nat["port_mapping"] else ""
        console.print(f"NAT: {nat['nat_type']}{seen}{mapped} (details: whalescale netcheck)")
    for warning in status["warnings"]:
        console.print(f"[yellow]warning: {warning}")
    table = Table()
    for column in ("peer", "kind", "endpoint", "path", "session", "last handshake",
                   "rx", "tx"):
        table.add_column(column)
    for peer in status["peers"]:
        name = f"{peer['name']} (anchor)" if peer["anchor"] else peer["name"]
        table.add_row(name, peer["kind"], peer["endpoint"] or "-", peer["path"] or "-",
                      "up" if peer["reachable"] else ("keys" if peer["session"] else "-"),
                      _age(peer["last_handshake_s_ago"]), f"{peer['rx_bytes']}",
                      f"{peer['tx_bytes']}")
    console.print(table)
    for peer in status["peers"]:
        if peer["multipath"] and peer["multipath"]["paths"]:
            _print_paths(console, peer["name"], peer["multipath"])
    if status["drops"]:
        console.print("drops: " + ", ".join(f"{k} {v}" for k, v in sorted(status["drops"].items())))


def _print_paths(console: Console, name: str, mp: dict[str, Any]) -> None:
    """One peer's multipath paths (ids are ours, as sender) and its reorder buffer."""
    table = Table(title=f"{name}: {len(mp['paths'])} paths, {mp['scheduler']}, "
                        f"tunnel MTU {mp['mtu'] or '-'}")
    for column in ("path", "local -> remote", "state", "weight", "srtt", "loss", "mtu",
                   "tx", "rx"):
        table.add_column(column)
    for path in mp["paths"]:
        srtt = "-" if path["srtt_ms"] is None else f"{path['srtt_ms']:.1f} ms"
        state = f"{path['state']} (backup)" if path.get("backup") else path["state"]
        table.add_row(str(path["id"]), f"{path['local']} -> {path['remote']}", state,
                      f"{_si(path['weight'] * 8)}bit/s", srtt, f"{path['loss']:.1%}",
                      str(path["mtu"]), f"{_si(path['tx_bytes'])}B", f"{_si(path['rx_bytes'])}B")
    console.print(table)
    r = mp["reorder"]
    console.print(f"reorder: {r['released']} released, {r['gaps_skipped']} gaps skipped, "
                  f"{r['late_drops']} late drops, max depth {r['max_depth']}, added delay "
                  f"mean {r['added_delay_mean_ms']} ms, max {r['added_delay_max_ms']} ms")


def print_netcheck(status: dict[str, Any]) -> None:
    """What the node learned about its own connectivity (`whalescale netcheck`)."""
    nat = status["nat"]
    console = Console()
    console.print(f"[bold]{status['node']}[/] udp {status['port']}")
    console.print("addresses: " + (", ".join(status["addresses"]) or "none"))
    if status["anchor"]:
        console.print("NAT type: none needed (an anchor: public by configuration)")
    else:
        seen = f", anchors see us at {nat['observed']}" if nat["observed"] else ""
        console.print(f"NAT type: {nat['nat_type']}{seen} "
                      f"({nat['anchors_answered']} anchors answered)")
        if nat["port_preserved"] is not None:
            console.print(f"port preserved by the NAT: {'yes' if nat['port_preserved'] else 'no'}")
    mapping = (f"{nat['port_mapping']} ({nat['port_mapping_protocol']})"
               if nat["port_mapping"] else "none")
    console.print(f"port mapping: {mapping}")
    console.print("published endpoints: " + (", ".join(status["published"]) or "none"))
    console.print("anchors reachable: " + (", ".join(nat["anchors_reachable"]) or "none"))
    for name, state in sorted(nat["peers"].items()):
        console.print(f"  {name}: punch {state['punch'] or '-'}, relay {state['relay'] or '-'}")
    if nat["relay_channels"] is not None:
        console.print(f"relay channels open: {nat['relay_channels']}")
