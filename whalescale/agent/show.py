"""`whalescale status` and `netcheck` for people: the agent's JSON as lines and tables.

Each report is built once as blocks (lines and grids of text) and rendered one of two
ways: rich tables on a terminal, or plain lines when stdout is a pipe or a file, so that
`whalescale status | grep NAME` finds a whole row: never cut at 80 columns, one line
per peer and per path. Nothing the agent reports is read as rich markup or emoji codes:
`[fd00::1]:51820` is text, not a tag.
"""

from __future__ import annotations

import sys
from typing import Any

import attrs
from rich.console import Console
from rich.table import Table
from rich.text import Text


@attrs.frozen
class Line:
    text: str
    style: str = ""  # rich style on a terminal; ignored in plain lines


@attrs.frozen
class Grid:
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    title: str | None = None


Block = Line | Grid


# ----- rendering ------------------------------------------------------------------------

def plain_lines(blocks: list[Block]) -> list[str]:
    """Blocks as plain text: a grid's columns padded to their widest cell, nothing cut."""
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Line):
            lines.append(block.text)
            continue
        if block.title is not None:
            lines.append(block.title)
        rows = (block.columns, *block.rows)
        widths = [max(len(row[i]) for row in rows) for i in range(len(block.columns))]
        lines.extend("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in rows)
    return lines


def print_rich(blocks: list[Block], console: Console) -> None:
    """Blocks as rich tables, on a `terminal_console`."""
    for block in blocks:
        if isinstance(block, Line):
            console.print(Text(block.text, style=block.style))
            continue
        table = Table(title=block.title)
        for column in block.columns:
            table.add_column(column, overflow="fold")  # wrap a long endpoint, never "…"
        for row in block.rows:
            table.add_row(*row)
        console.print(table)


def terminal_console(**options: Any) -> Console:
    """A console that prints text as it is: `[fd00::1]` is no markup tag, `:1234:` no
    emoji code, and no number is coloured."""
    return Console(markup=False, emoji=False, highlight=False, **options)


def emit(blocks: list[Block]) -> None:
    """Tables on a terminal, plain lines in a pipe, a file or an ssh without a tty."""
    if sys.stdout.isatty():
        print_rich(blocks, terminal_console())
    else:
        print("\n".join(plain_lines(blocks)))


# ----- what the reports say ---------------------------------------------------------------

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


def status_blocks(status: dict[str, Any]) -> list[Block]:
    """`whalescale status`: who we are, the anchors, the peers, their paths, drops."""
    role = "anchor" if status["anchor"] else "node"
    anchors = status["anchors"]
    # An anchor counts the others: it always reaches itself (`total` excludes it).
    which = "other anchors" if status["anchor"] else "anchors"
    blocks: list[Block] = [
        Line(f"{status['node']} ({role}, {status['fingerprint']}) on {status['interface']}, "
             f"udp {status['port']}", "bold"),
        Line(f"{which}: {len(anchors['reachable'])} of {anchors['total']} reachable "
             f"({anchors['health']})"),
    ]
    nat = status["nat"]
    if not status["anchor"]:
        seen = f", seen as {nat['observed']}" if nat["observed"] else ""
        mapped = f", port mapping {nat['port_mapping']}" if nat["port_mapping"] else ""
        blocks.append(Line(f"NAT: {nat['nat_type']}{seen}{mapped} (details: whalescale "
                           "netcheck)"))
    blocks += exit_lines(status["exit"])
    blocks += [Line(f"warning: {warning}", "yellow") for warning in status["warnings"]]
    blocks.append(Grid(
        ("peer", "kind", "endpoint", "path", "session", "last handshake", "rx", "tx"),
        tuple((f"{p['name']} (anchor)" if p["anchor"] else p["name"], p["kind"],
               p["endpoint"] or "-", p["path"] or "-",
               "up" if p["reachable"] else ("keys" if p["session"] else "-"),
               _age(p["last_handshake_s_ago"]), str(p["rx_bytes"]), str(p["tx_bytes"]))
              for p in status["peers"])))
    if status.get("routes"):
        blocks += route_blocks(status["routes"])
    for peer in status["peers"]:
        if peer["multipath"] and peer["multipath"]["paths"]:
            blocks += path_blocks(peer["name"], peer["multipath"])
    blocks += firewall_blocks(status.get("firewall"))
    if status["drops"]:
        blocks.append(Line("drops: " + ", ".join(f"{k} {v}"
                                                 for k, v in sorted(status["drops"].items()))))
    return blocks


def exit_lines(exit: dict[str, Any]) -> list[Block]:
    """Whether we send our default route through an exit node, and whether we are one."""
    lines: list[Block] = []
    if exit["via"]:
        dns = ", ".join(exit["dns"]) or "none found"
        crash = "kill switch" if exit["kill_switch"] else "fail-open"
        lines.append(Line(f"exit node: {exit['via']} (default route, DNS to {dns}; "
                          f"on a crash: {crash})"))
    if exit["offer"]:
        lines.append(Line("exit node: offered to the mesh (forwarding and masquerading)"))
    return lines


def route_blocks(routes: dict[str, Any]) -> list[Block]:
    """Our own subnet routes and whether we forward, then every route of the mesh: who
    carries it now and whether it goes into our tunnel."""
    blocks: list[Block] = []
    own = routes["own"] + [f"{n} (standby)" for n in routes["standby"]]
    if own:
        forwarding = ", ".join(f"{family} {'on' if on else 'OFF' if on is False else '?'}"
                               for family, on in routes["forwarding"].items())
        blocks.append(Line(f"our routes: {', '.join(own)}; forwarding {forwarding}"))
    if routes["mesh"]:
        # a primary's state only where we watch it (it has a standby, and it is not us)
        blocks.append(Grid(("route", "via", "primary", "standby", "here"), tuple(
            (r["network"], r["via"],
             r["primary"] + (f" ({r['primary_state']})" if r["primary_state"] else ""),
             r["standby"] or "-", "routed" if r["routed"] else f"not routed: {r['skip']}")
            for r in routes["mesh"])))
    return blocks


def path_blocks(name: str, mp: dict[str, Any]) -> list[Block]:
    """One peer's multipath paths (ids are ours, as sender) and its reorder buffer."""
    rows = []
    for path in mp["paths"]:
        srtt = "-" if path["srtt_ms"] is None else f"{path['srtt_ms']:.1f} ms"
        state = f"{path['state']} (backup)" if path.get("backup") else path["state"]
        rows.append((str(path["id"]), f"{path['local']} -> {path['remote']}", state,
                     f"{_si(path['weight'] * 8)}bit/s", srtt, f"{path['loss']:.1%}",
                     str(path["mtu"]), f"{_si(path['tx_bytes'])}B",
                     f"{_si(path['rx_bytes'])}B"))
    r = mp["reorder"]
    return [
        Grid(("path", "local -> remote", "state", "weight", "srtt", "loss", "mtu", "tx", "rx"),
             tuple(rows), title=f"{name}: {len(mp['paths'])} paths, {mp['scheduler']}, "
                                f"tunnel MTU {mp['mtu'] or '-'}"),
        Line(f"reorder: {r['released']} released, {r['gaps_skipped']} gaps skipped, "
             f"{r['late_drops']} late drops, max depth {r['max_depth']}, added delay "
             f"mean {r['added_delay_mean_ms']} ms, max {r['added_delay_max_ms']} ms"),
    ]


def firewall_blocks(firewall: dict[str, Any] | None) -> list[Block]:
    """The rules in force and what each dropped; nothing for a firewall that drops nothing
    (or an agent too old to report one)."""
    if firewall is None or not firewall["active"]:
        return []
    rows = [(str(r["index"]), r["rule"], str(r["drops"])) for r in firewall["rules"]]
    rows.append(("-", f"default: {firewall['default']}", str(firewall["default_drops"])))
    malformed = firewall["malformed_drops"]
    return [Grid(("#", "rule (first match decides)", "dropped"), tuple(rows),
                 title=f"firewall: {len(firewall['rules'])} rules, {firewall['flows']} flows "
                       "of ours tracked (their replies pass)"
                       + (f", {malformed} malformed packets dropped" if malformed else ""))]


def netcheck_blocks(status: dict[str, Any]) -> list[Block]:
    """What the node learned about its own connectivity (`whalescale netcheck`)."""
    nat = status["nat"]
    blocks: list[Block] = [
        Line(f"{status['node']} udp {status['port']}", "bold"),
        Line("addresses: " + (", ".join(status["addresses"]) or "none")),
    ]
    if status["anchor"]:
        blocks.append(Line("NAT type: none needed (an anchor: public by configuration)"))
    else:
        seen = f", anchors see us at {nat['observed']}" if nat["observed"] else ""
        blocks.append(Line(f"NAT type: {nat['nat_type']}{seen} "
                           f"({nat['anchors_answered']} anchors answered)"))
        if nat["port_preserved"] is not None:
            blocks.append(Line("port preserved by the NAT: "
                               + ("yes" if nat["port_preserved"] else "no")))
    mapping = (f"{nat['port_mapping']} ({nat['port_mapping_protocol']})"
               if nat["port_mapping"] else "none")
    blocks += [
        Line(f"port mapping: {mapping}"),
        Line("published endpoints: " + (", ".join(status["published"]) or "none")),
        Line("anchors reachable: " + (", ".join(nat["anchors_reachable"]) or "none")),
    ]
    blocks += [Line(f"  {name}: punch {state['punch'] or '-'}, relay {state['relay'] or '-'}")
               for name, state in sorted(nat["peers"].items())]
    if nat["relay_channels"] is not None:
        blocks.append(Line(f"relay channels open: {nat['relay_channels']}"))
    return blocks
