"""Exit nodes, the node's side: which peer takes our default route, whether we offer
ourselves as one, and what a crash must leave (issue 17 item 2). Sans-I/O: the shell
carries the decision out (agent/exit_routes.py for the user, agent/nft.py for the
exit).

Cryptokey routing is the tunnel's half, as wg-quick's `AllowedIPs = 0.0.0.0/0, ::/0`: the
exit peer's allowed IPs gain both default networks, so what the kernel routes into the
TUN by default goes to it, and replies from any source are accepted from it alone. The
engine matches the longest prefix, so every other peer keeps its own addresses and
routes; the default networks never enter the main table (routes.py leaves them out):
the shell puts them in a table of its own, behind policy rules.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

import attrs

from ..config import Mesh, Node
from ..session.engine import PeerSpec
from .effects import ConfigureExit

DEFAULT_NETWORKS = (ipaddress.IPv4Network("0.0.0.0/0"), ipaddress.IPv6Network("::/0"))


class ExitChoiceError(ValueError):
    """`--exit-node NAME` names no other node that offers itself as an exit."""


def choose_exit(mesh: Mesh, me: Node, name: str) -> Mesh:
    """The mesh with our entry's `exit_node` set to `name` (`whalescale up --exit-node`
    overrides the file for this run), checked as the loader checks the key; "" is no
    exit node for this run (and so no kill switch), as in `tailscale up --exit-node=`."""
    target = mesh.node_by_name(name)
    if name and (target is None or target is me or not target.exit):
        offering = ", ".join(n.name for n in mesh.nodes if n.exit and n is not me) or "none"
        raise ExitChoiceError(f"--exit-node {name!r} is not another node with exit = true "
                              f"in the mesh file (those offering: {offering})")
    chosen = attrs.evolve(me, exit_node=name or None)
    return attrs.evolve(mesh, nodes=tuple(chosen if n is me else n for n in mesh.nodes))


def with_default_routes(specs: Iterable[PeerSpec], exit_node: str | None) -> list[PeerSpec]:
    """`specs`, the exit peer's allowed IPs extended by both default networks."""
    return [attrs.evolve(spec, allowed_ips=spec.allowed_ips + DEFAULT_NETWORKS)
            if spec.name == exit_node else spec for spec in specs]


def exit_config(me: Node, mtus: dict[str, int]) -> ConfigureExit:
    """What the shell must set up: the default route through the exit peer (at its
    tunnel's MTU) with or without a kill switch, and our own offer."""
    via = me.exit_node if me.exit_node in mtus else None
    return ConfigureExit(via=via, mtu=mtus.get(via, 0) if via else 0,
                         kill_switch=me.kill_switch and via is not None, offer=me.exit)


def status(config: ConfigureExit) -> dict[str, object]:
    return {"via": config.via, "kill_switch": config.kill_switch, "offer": config.offer}
