"""Subnet routes (networks behind nodes): which we route into the tunnel, who carries
each now, and whether we forward for our own.

Rules this file keeps:
- Cryptokey routing always follows the mesh file: a node's routes are in its allowed
  IPs (`carried`), so traffic to them goes to it and traffic from sources in them is
  accepted from it only, on every node. Only our kernel route into the TUN may be
  skipped (`decide`): for our own routes, with `accept_routes = false`, or when one of
  our interfaces is on that network (a laptop at home must not tunnel its own LAN).
  A node that skips a route still accepts packets from it through its router: a host
  on that LAN may talk to our tunnel address, and the answer leaves by our own LAN.
- A network with a standby is carried by the standby only while its primary is
  unreachable from here (standby.py); the kernel routes do not change on a switch.
- Forwarding is host policy (the Ansible role and the NixOS module set the sysctls):
  we only ask whether it is on, and warn when our routes need it and it is off.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import attrs

from ..config import Mesh, Node
from ..config.schema import Network
from .local import Interface
from .standby import PrimaryState, StandbyWatch

OWN = "ours: we forward for it"
NOT_ACCEPTING = "accept_routes = false"


@attrs.frozen
class Route:
    network: Network
    primary: str
    standby: str | None = None


def mesh_routes(mesh: Mesh) -> list[Route]:
    standbys = {net: n.name for n in mesh.nodes for net in n.standby_routes}
    return [Route(net, n.name, standbys.get(net)) for n in mesh.nodes for net in n.routes]


def decide(route: Route, me: Node, interfaces: Iterable[Interface]) -> str | None:
    """Why we do not route `route` into our TUN, or None: we do."""
    if me.name in (route.primary, route.standby):
        return OWN
    if not me.accept_routes:
        return NOT_ACCEPTING
    net = route.network
    inside = next((i for i in interfaces if i.version == net.version
                   and i.network.overlaps(net)), None)
    if inside is not None:
        return f"we sit in it: our address {inside} is on that network"
    return None


def carried(node: Node, failed_over: frozenset[Network]) -> tuple[Network, ...]:
    """The networks `node` carries now: its routes, less those its standby took over,
    and its standby routes whose primary is unreachable."""
    return (tuple(n for n in node.routes if n not in failed_over)
            + tuple(n for n in node.standby_routes if n in failed_over))


def _listed(networks: Iterable[Network]) -> str:
    return ", ".join(map(str, networks))


class Subnets:
    """Our view of the mesh's subnet routes; the node feeds it and drains `log_lines`."""

    def __init__(self, mesh: Mesh, me: Node, now: float = 0.0) -> None:
        self.log_lines: list[tuple[int, str]] = []
        self.watch = StandbyWatch()
        self._interfaces: list[Interface] = []
        self._skips: dict[Network, str | None] = {}
        self.forwarding: dict[str, bool | None] = {"ipv4": None, "ipv6": None}
        self.set_mesh(mesh, me, now)

    # ----- what changes them -----------------------------------------------------------

    def set_mesh(self, mesh: Mesh, me: Node, now: float) -> None:
        self.mesh, self.me = mesh, me
        self.routes = mesh_routes(mesh)
        self.watch.watch({r.primary for r in self.routes
                          if r.standby is not None and r.primary != me.name}, now)
        self._decide()

    def set_interfaces(self, interfaces: list[Interface]) -> bool:
        """Our addresses changed: True when a route into the TUN comes or goes."""
        self._interfaces = list(interfaces)
        return self._decide()

    def _decide(self) -> bool:
        """Each route accepted or skipped; says so once per change."""
        skips = {r.network: decide(r, self.me, self._interfaces) for r in self.routes}
        changed = False
        for route in self.routes:
            skip = skips[route.network]
            if route.network in self._skips and self._skips[route.network] == skip:
                continue
            changed = True
            via = f"{route.primary}" + (f" (standby {route.standby})" if route.standby else "")
            self.log_lines.append((logging.INFO, (
                f"{route.network} via {via}: routed into the tunnel" if skip is None
                else f"{route.network} via {via}: not routed into the tunnel ({skip})")))
        for net in self._skips.keys() - skips.keys():
            changed = True
            self.log_lines.append((logging.INFO, f"{net}: no longer in the mesh file"))
        self._skips = skips
        return changed

    def set_forwarding(self, ipv4: bool | None, ipv6: bool | None) -> None:
        """The OS's answer to CheckForwarding; warns for each family our routes need."""
        self.forwarding = {"ipv4": ipv4, "ipv6": ipv6}
        for text in self.warnings():
            self.log_lines.append((logging.WARNING, text))

    # ----- primary/standby ---------------------------------------------------------------

    def failed_over(self) -> frozenset[Network]:
        """The networks their standby carries now (their primary is unreachable)."""
        down = self.watch.down()
        return frozenset(r.network for r in self.routes
                         if r.standby is not None and r.primary in down)

    def check(self, heard: Callable[[str], float | None], now: float) -> bool:
        """Judge the watched primaries; True when a network changed hands."""
        switches = self.watch.check(heard, now)
        for switch in switches:
            nets = [r for r in self.routes if r.primary == switch.primary and r.standby]
            standbys = ", ".join(sorted({r.standby or "" for r in nets}))
            listed = _listed(r.network for r in nets)
            if switch.state is PrimaryState.DOWN:
                line = (f"primary {switch.primary} unreachable ({switch.reason}): standby "
                        f"{standbys} carries {listed}")
            else:
                line = (f"primary {switch.primary} back ({switch.reason}): it carries "
                        f"{listed} again, standby {standbys} stands down")
            self.log_lines.append((logging.WARNING if switch.state is PrimaryState.DOWN
                                   else logging.INFO, line))
        return bool(switches)

    # ----- what they give -----------------------------------------------------------------

    def own(self) -> tuple[Network, ...]:
        return self.me.routes + self.me.standby_routes

    def skipped(self) -> frozenset[Network]:
        """Routes kept out of our TUN (cryptokey routing still has them)."""
        return frozenset(net for net, skip in self._skips.items() if skip is not None)

    def warnings(self) -> list[str]:
        """Forwarding our routes need but the host has off."""
        out = []
        for family, key, sysctl in (("ipv4", 4, "net.ipv4.ip_forward"),
                                    ("ipv6", 6, "net.ipv6.conf.all.forwarding")):
            nets = [n for n in self.own() if n.version == key]
            if nets and self.forwarding[family] is False:
                out.append(f"{family} forwarding is off ({sysctl} = 0): this node cannot "
                           f"forward for its routes {_listed(nets)}; turn it on with "
                           f"`sysctl -w {sysctl}=1` and keep it in /etc/sysctl.d/")
        return out

    def status(self) -> dict[str, object]:
        down = self.watch.down()
        states = self.watch.states()
        return {
            "own": [str(n) for n in self.me.routes],
            "standby": [str(n) for n in self.me.standby_routes],
            "forwarding": dict(self.forwarding),
            "mesh": [{
                "network": str(r.network),
                "primary": r.primary,
                "standby": r.standby,
                "via": r.standby if r.standby and r.primary in down else r.primary,
                "primary_state": states[r.primary].value if r.primary in states else None,
                "routed": self._skips.get(r.network) is None,
                "skip": self._skips.get(r.network),
            } for r in self.routes],
        }
