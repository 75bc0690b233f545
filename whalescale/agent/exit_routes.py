"""Using an exit node, the shell's side: policy routing the way wg-quick does it.

    30570: to <each resolver> lookup 30579            DNS goes to the exit, even a LAN resolver
    30571: lookup main suppress_prefixlength 0        the LAN, the mesh, the anchors stay
    30572: not fwmark 0x7773 lookup 30579             everything else that is not ours
    table 30579: default dev ws0 metric 1 (and, with the kill switch, unreachable default)

The agent's own UDP sockets carry firewall mark 0x7773 (SO_MARK, `mark`), so its
encrypted traffic never enters the tunnel it carries; the main table's more specific
routes (connected networks, a route to an anchor) win over our table for everyone
(suppress_prefixlength 0 ignores only main's default). Same rules for IPv4 and IPv6.

Table and mark 0x7773 (30579, "ws" in ASCII) differ from wg-quick's 51820 so both can run
on one host; our rules are the ones at our three priorities that look up our table (or
main, suppressing the default), and every route in our table is ours.

What each way of stopping leaves:
- a clean stop removes exactly what `apply` added (`apply(None)`): rules, table;
- a crash (kill -9) leaves the rules, but the TUN goes with the process and the kernel
  drops its routes, so table 30579 is empty and lookups fall through to main: fail-open,
  with nothing to undo. With the kill switch the table also holds `unreachable default`
  (no device, so it survives) and everything but the LAN is unreachable until the agent
  starts again (and converges) or stops cleanly;
- every start converges on what it wants, removing the leftovers of a crash.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Iterable
from pathlib import Path

from ..netlink import (
    RT_TABLE_MAIN,
    RTN_UNICAST,
    RTN_UNREACHABLE,
    Netlink,
    NetlinkError,
    Route,
    Rule,
)
from ..node.effects import ConfigureExit

log = logging.getLogger("whalescale.agent")

TABLE = 0x7773
FWMARK = 0x7773
PRIORITY_RESOLVERS, PRIORITY_SUPPRESS, PRIORITY_TABLE = 30570, 30571, 30572
TUNNEL_METRIC = 1
BLOCK_METRIC = 0x7773  # behind the tunnel's route: it decides only once that is gone
SO_MARK = getattr(socket, "SO_MARK", 36)
RESOLV_CONF = Path("/etc/resolv.conf")
# systemd-resolved's upstream servers, when /etc/resolv.conf names only its stub
RESOLVED_UPSTREAMS = Path("/run/systemd/resolve/resolv.conf")
# A kernel built without IPv6 has no IPv6 rules to set, and no IPv6 to leak.
_FAMILIES = ((socket.AF_INET, socket.AF_INET6) if Path("/proc/sys/net/ipv6").exists()
             else (socket.AF_INET,))
_DEFAULT = {socket.AF_INET: ipaddress.ip_network("0.0.0.0/0"),
            socket.AF_INET6: ipaddress.ip_network("::/0")}

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class ExitRoutingError(OSError):
    """The kernel refused a rule or route (which, and why)."""


def mark(sock: socket.socket) -> None:
    """Mark the agent's own socket: its traffic bypasses the exit's table."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_MARK, FWMARK)
    except PermissionError:  # SO_MARK needs CAP_NET_ADMIN, as the TUN does
        log.warning("cannot mark our UDP sockets (no CAP_NET_ADMIN): using an exit node "
                    "would route our own encrypted traffic into the tunnel")


def nameservers(text: str) -> list[Address]:
    """The resolvers a resolv.conf names (scoped IPv6 ones without their scope)."""
    found = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            try:
                found.append(ipaddress.ip_address(fields[1].split("%")[0]))
            except ValueError:
                continue
    return found


def resolvers(resolv_conf: Path = RESOLV_CONF,
              upstreams: Path = RESOLVED_UPSTREAMS) -> list[Address]:
    """Where this host's DNS queries go: resolv.conf's servers; behind a local stub
    (systemd-resolved's 127.0.0.53), the stub's upstreams. Loopback ones are left out:
    they answer on this host."""
    def read(path: Path) -> list[Address]:
        try:
            return nameservers(path.read_text())
        except OSError:
            return []

    found = read(resolv_conf)
    if found and all(a.is_loopback for a in found):
        found += read(upstreams)
    return list(dict.fromkeys(a for a in found if not a.is_loopback))


def wanted_rules(resolver_addresses: Iterable[Address]) -> set[Rule]:
    rules = {Rule(family, PRIORITY_SUPPRESS, RT_TABLE_MAIN, suppress_prefixlen=0)
             for family in _FAMILIES}
    rules |= {Rule(family, PRIORITY_TABLE, TABLE, fwmark=FWMARK, invert=True)
              for family in _FAMILIES}
    rules |= {Rule(socket.AF_INET if a.version == 4 else socket.AF_INET6, PRIORITY_RESOLVERS,
                   TABLE, dst=ipaddress.ip_network(a)) for a in resolver_addresses}
    return rules


def wanted_routes(config: ConfigureExit, tun_index: int) -> set[Route]:
    routes = {Route(_DEFAULT[family], tun_index, TABLE, 0, None, config.mtu or None,
                    RTN_UNICAST, TUNNEL_METRIC) for family in _FAMILIES}
    if config.kill_switch:
        routes |= {Route(_DEFAULT[family], None, TABLE, 0, None, None, RTN_UNREACHABLE,
                         BLOCK_METRIC) for family in _FAMILIES}
    return routes


def _ours(rule: Rule) -> bool:
    return rule.priority in (PRIORITY_RESOLVERS, PRIORITY_SUPPRESS, PRIORITY_TABLE) and (
        rule.table == TABLE or (rule.table == RT_TABLE_MAIN and rule.suppress_prefixlen == 0))


def _key(route: Route) -> tuple:
    """What we compare of a route (the kernel adds proto, and more we do not set; an
    IPv6 unreachable route reads back on `lo`)."""
    oif = route.oif if route.kind == RTN_UNICAST else None
    return route.network, route.kind, oif, route.metric, route.mtu


class ExitRoutes:
    """Our rules and our table's routes, converged on what ConfigureExit asks."""

    def __init__(self, interface: str) -> None:
        self.interface = interface
        self.resolvers: list[Address] = []

    def apply(self, config: ConfigureExit | None) -> bool:
        """Converge: what `config` wants is added first (no moment without it), then
        what it does not want goes, leftovers of a crashed run included. None, or
        `config.via` None: nothing of ours stays. Whether any rule of ours went."""
        using = config is not None and config.via is not None
        self.resolvers = resolvers() if using else []
        try:
            with Netlink() as netlink:
                want_routes = (wanted_routes(config, socket.if_nametoindex(self.interface))
                               if config is not None and using else set())
                self._routes(netlink, want_routes)
                return self._rules(netlink, wanted_rules(self.resolvers) if using else set())
        except NetlinkError as exc:
            raise ExitRoutingError(exc.errno, f"exit node routing: {exc.strerror}") from exc

    @staticmethod
    def _rules(netlink: Netlink, want: set[Rule]) -> bool:
        have = {rule for family in _FAMILIES for rule in netlink.rules(family) if _ours(rule)}
        for rule in sorted(want - have, key=lambda r: r.priority):
            netlink.add_rule(rule)
        for rule in have - want:
            netlink.delete_rule(rule)
        return bool(have - want)

    @staticmethod
    def _routes(netlink: Netlink, want: set[Route]) -> None:
        have = {route for family in _FAMILIES
                for route in netlink.routes(family, (RTN_UNICAST, RTN_UNREACHABLE))
                if route.table == TABLE}
        have_keys = {_key(route) for route in have}
        for route in want:
            if _key(route) not in have_keys:
                netlink.replace_route(route.network, route.oif, mtu=route.mtu, table=TABLE,
                                      kind=route.kind, metric=route.metric)
        want_keys = {_key(route) for route in want}
        for route in have:
            if _key(route) not in want_keys:
                netlink.delete_route(route.network, route.oif, table=TABLE,
                                     metric=route.metric)
