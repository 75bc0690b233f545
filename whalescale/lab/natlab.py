"""The NAT lab: one topology holding a node in every NAT situation of the matrix (issue 7).

Theory of operation:
- An "internet" namespace routes between public subnets (198.18.0.0/15, which the port
  mapper counts as public, unlike 10/8 and 100.64/10). Two anchors sit on it directly.
- Each situation is a `Site`: its node(s) behind gateway namespaces with nftables rules.
  Every gateway drops unsolicited new traffic arriving on its WAN side (`input` and
  `forward`), as real routers do; only a DNAT (full cone) or miniupnpd's own chains
  (upnp) let new inbound flows through.
- Masquerade rules match `ip saddr <lan>` so they never translate IPv6: the two IPv6
  sites route their fd00::/64 LANs unNATed (stateful filtering only).
- The same-LAN pair shares a bridge in its gateway, so LAN traffic between them can be
  counted there by the path classifier (`classify`, below).
- `Site.flush_conntrack` and `Site.readdress_wan` disturb a site for recovery tests.

Nothing here talks to addresses outside the namespaces the lab created.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum

from .closing import Closing
from .errors import LabError
from .lab import Lab
from .netns import Host, Link
from .proc import run
from .router import Router, miniupnpd_router

# The UDP port both VPNs listen on, so one DNAT serves either run (whalescale's default).
VPN_PORT = 51820
NFT_TABLE = "natlab"
COUNTER_TABLE = "natlab_paths"
ANCHORS = ("anchor-1", "anchor-2")
# The situations paired in the matrix, one node each, in table order.
SITUATIONS = ("public", "fullcone", "restricted", "symmetric", "cgnat", "upnp")
# Pairs of their own: two nodes on one LAN, two nodes with IPv6 behind symmetric NATs.
LAN_PAIR = ("lan-a", "lan-b")
V6_PAIR = ("v6-a", "v6-b")


class Nat(Enum):
    """How a gateway translates its LAN (nftables masquerade flavours)."""

    # Distinct values: Enum members with equal values would be one member.
    RESTRICTED = "restricted"  # masquerade keeps the source port: port-restricted cone
    SYMMETRIC = "symmetric"  # a new random port per flow
    FULLCONE = "fullcone"  # masquerade plus a static DNAT of VPN_PORT

    @property
    def statement(self) -> str:
        return "masquerade fully-random" if self is Nat.SYMMETRIC else "masquerade"


def nat_ruleset(nat: Nat, *, wan: str, lan_subnet: str, dnat_to: str | None = None) -> str:
    """The gateway's nftables rules (over several lines: nft rejects the one-line form);
    `dnat_to`: the LAN address a full cone forwards VPN_PORT to."""
    dnat_forward = f'        iifname "{wan}" ct status dnat accept\n' if dnat_to else ""
    dnat_chain = (
        f"""    chain prerouting {{
        type nat hook prerouting priority dstnat; policy accept;
        meta nfproto ipv4 iifname "{wan}" udp dport {VPN_PORT} dnat ip to {dnat_to}:{VPN_PORT}
    }}
"""
        if dnat_to
        else ""
    )
    return f"""\
table inet {NFT_TABLE}
delete table inet {NFT_TABLE}
table inet {NFT_TABLE} {{
    chain input {{
        type filter hook input priority filter; policy accept;
        # Without this a peer's punch reaches the gateway itself, conntrack confirms that
        # entry and our LAN host then gets another external port (lab.md).
        iifname "{wan}" ct state new drop
    }}
    chain forward {{
        type filter hook forward priority filter; policy accept;
{dnat_forward}        iifname "{wan}" ct state new drop
    }}
{dnat_chain}    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr {lan_subnet} oifname "{wan}" {nat.statement}
    }}
}}
"""


def _ifname(link: Link, host: Host) -> str:
    return link.a_ifname if host is link.a else link.b_ifname


@dataclass
class Site:
    """One situation: its nodes, the gateways in front of them (innermost first) and
    the IPv4 address the internet sees them at (`public_addr`, updated by
    `readdress_wan`). The situation names the site; the same-LAN site is "lan", the
    IPv6 sites are named after their one node ("v6-a", "v6-b")."""

    situation: str
    nodes: list[Host]
    gateways: list[Host] = field(default_factory=list)
    wan: Link | None = None  # the outermost gateway's link to the internet
    public_addr: str = ""
    addr: dict[str, str] = field(default_factory=dict)  # node name -> its own IPv4
    addr6: dict[str, str] = field(default_factory=dict)  # node name -> its own IPv6
    bridge_host: Host | None = None  # where same-LAN traffic can be counted
    router: Router | None = None

    def flush_conntrack(self) -> None:
        """Make every gateway of the site forget its mappings (a NAT reboot)."""
        for gateway in self.gateways:
            # Exit 1 with "0 flow entries" is not a failure.
            gateway.run("conntrack", "-F", check=False)

    def readdress_wan(self, new_ip: str) -> None:
        """Give the outermost gateway a new public address in its WAN subnet (an ISP
        renumbering); the kernel drops masquerade entries of the old address itself."""
        if self.wan is None:
            raise LabError(f"site {self.situation} has no gateway to readdress")
        gateway = self.gateways[-1]
        net = ipaddress.ip_network(f"{self.public_addr}/{self.wan.prefixlen}", strict=False)
        if ipaddress.ip_address(new_ip) not in net or new_ip == self.wan.addr_of(self.wan.a):
            raise LabError(f"{new_ip} is not a free address in {net}")
        self.public_addr = gateway.readdress(new_ip)
        self.flush_conntrack()


class NatLab(Closing):
    """The topology on a `Lab`; `close` stops miniupnpd (the lab tears down the rest)."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.inet = lab.internet()
        self.sites: dict[str, Site] = {}
        self.anchors: dict[str, Host] = {}
        self._subnet = 0
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for site in self.sites.values():
            if site.router is not None:
                site.router.close()

    # -- building ---------------------------------------------------------------------

    def _next(self) -> int:
        self._subnet += 1
        return self._subnet

    def _public_link(self, host: Host, *, v6: bool = False) -> Link:
        """`host` on its own public subnet to the internet, routed through it."""
        link = self.lab.link(self.inet, host, subnet=f"198.18.{self._next()}.0/24", v6=v6)
        host.route_via(link)
        return link

    def _lan_link(self, gateway: Host, host: Host, subnet: str, *, v6: bool = False) -> Link:
        link = self.lab.link(gateway, host, subnet=subnet, v6=v6)
        host.route_via(link)
        return link

    def _gateway(self, name: str, *, v6: bool = False) -> tuple[Host, Link]:
        gateway = self.lab.host(name)
        gateway.set_forwarding(True)
        return gateway, self._public_link(gateway, v6=v6)

    def _build(self) -> None:
        for name in ANCHORS:
            anchor = self.lab.host(name)
            self._public_link(anchor, v6=True)
            self.anchors[name] = anchor
        public = self.lab.host("public")
        self._public_link(public)
        self._add(Site("public", [public], public_addr=public.addr(),
                       addr={"public": public.addr()}))
        self._nat_site("fullcone", Nat.FULLCONE)
        self._nat_site("restricted", Nat.RESTRICTED)
        self._nat_site("symmetric", Nat.SYMMETRIC)
        self._cgnat_site()
        self._upnp_site()
        self._lan_site()
        for name in V6_PAIR:
            self._nat_site(name, Nat.SYMMETRIC, v6=True)

    def _add(self, site: Site) -> None:
        self.sites[site.situation] = site

    def _nat_site(self, name: str, nat: Nat, *, v6: bool = False) -> Site:
        """`name` behind its own gateway `gw-<name>` doing `nat`."""
        gateway, wan = self._gateway(f"gw-{name}", v6=v6)
        node = self.lab.host(name)
        lan = self._lan_link(gateway, node, f"192.168.{self._next()}.0/24", v6=v6)
        if v6:
            # The internet routes the node's IPv6 LAN to its gateway: no NAT66.
            lan_net6 = ipaddress.ip_network(f"{lan.addr_of(node, v6=True)}/64", strict=False)
            self.inet.route_via(wan, str(lan_net6))
        gateway.nft(nat_ruleset(
            nat, wan=_ifname(wan, gateway), lan_subnet=f"{lan.a_addr}/{lan.prefixlen}",
            dnat_to=node.addr() if nat is Nat.FULLCONE else None))
        site = Site(name, [node], [gateway], wan, wan.addr_of(gateway), {name: node.addr()})
        if v6:
            site.addr6[name] = lan.addr_of(node, v6=True)
        self._add(site)
        return site

    def _cgnat_site(self) -> None:
        """Home NAT behind a carrier NAT, 100.64.0.0/10 between them (RFC 6598)."""
        carrier, wan = self._gateway("gw-carrier")
        home = self.lab.host("gw-home")
        home.set_forwarding(True)
        shared = self._lan_link(carrier, home, f"100.64.{self._next()}.0/24")
        node = self.lab.host("cgnat")
        lan = self._lan_link(home, node, f"192.168.{self._next()}.0/24")
        home.nft(nat_ruleset(Nat.RESTRICTED, wan=_ifname(shared, home),
                             lan_subnet=f"{lan.a_addr}/{lan.prefixlen}"))
        carrier.nft(nat_ruleset(Nat.RESTRICTED, wan=_ifname(wan, carrier),
                                lan_subnet=f"{shared.a_addr}/{shared.prefixlen}"))
        self._add(Site("cgnat", [node], [home, carrier], wan, wan.addr_of(carrier),
                       {"cgnat": node.addr()}))

    def _upnp_site(self) -> None:
        """The node behind miniupnpd (UPnP IGD, NAT-PMP, PCP) on a public-looking WAN
        subnet (its mapper refuses private external addresses)."""
        node = self.lab.host("upnp")
        router = miniupnpd_router(self.lab, [node], name="gw-upnp",
                                  wan_subnet=f"198.18.{self._next()}.0/24")
        self._add(Site("upnp", [node], [router.gateway], router.wan,
                       router.wan.addr_of(router.gateway), {"upnp": node.addr()}, router=router))

    def _lan_site(self) -> None:
        """lan-a and lan-b on one bridge in their masquerading gateway."""
        gateway, wan = self._gateway("gw-lan")
        subnet = ipaddress.ip_network(f"192.168.{self._next()}.0/24")
        gw_addr, *node_addrs = (str(a) for a in list(subnet.hosts())[:3])
        gateway.run("ip", "link", "add", "br0", "type", "bridge")
        gateway.run("ip", "addr", "add", f"{gw_addr}/24", "dev", "br0")
        gateway.run("ip", "link", "set", "br0", "up")
        site = Site("lan", [], [gateway], wan, wan.addr_of(gateway), bridge_host=gateway)
        for name, addr in zip(LAN_PAIR, node_addrs, strict=True):
            node = self.lab.host(name)
            # A veth of our own (not Lab.link): both ends share the bridge's subnet. Its
            # ends are created inside their namespaces, so the names cannot clash.
            port = f"p-{name}"
            run(["ip", "link", "add", "name", port, "netns", gateway.netns, "type", "veth",
                 "peer", "name", "eth0", "netns", node.netns])
            gateway.run("ip", "link", "set", port, "master", "br0", "up")
            node.run("ip", "addr", "add", f"{addr}/24", "dev", "eth0")
            node.run("ip", "link", "set", "eth0", "up")
            node.default_route(gw_addr)
            site.nodes.append(node)
            site.addr[name] = addr
        gateway.nft(nat_ruleset(Nat.RESTRICTED, wan=_ifname(wan, gateway),
                                lan_subnet=str(subnet)))
        self._add(site)

    # -- lookups ----------------------------------------------------------------------

    def site_of(self, node: str) -> Site:
        for site in self.sites.values():
            if any(host.name == node for host in site.nodes):
                return site
        raise LabError(f"no site holds a node {node!r}")

    def node(self, name: str) -> Host:
        site = self.site_of(name)
        return next(host for host in site.nodes if host.name == name)

    def nodes(self) -> list[Host]:
        return [host for site in self.sites.values() for host in site.nodes]

    def anchor_addrs(self) -> list[str]:
        return [anchor.addr() for anchor in self.anchors.values()]

    def anchor_addrs6(self) -> list[str]:
        return [anchor.addr6() for anchor in self.anchors.values()]


# -- the path classifier ---------------------------------------------------------------


class Path(Enum):
    """How two nodes' tunnel traffic travelled, as the lab's own counters saw it."""

    DIRECT = "direct"  # public address <-> public address over IPv4
    LAN = "lan"  # private addresses on the shared LAN
    IPV6 = "ipv6"  # IPv6 between the two nodes
    RELAYED = "relayed"  # each node <-> an anchor, nothing between the two
    NONE = "none"  # no ping answered
    UNKNOWN = "unknown"  # pings answered, but on no path the counters watch


def _both_ways(src: Iterable[str], dst: Iterable[str], counter: str, family: str) -> str:
    """Rules counting packets from any of `src` to any of `dst` in `<counter>_out` and
    back in `<counter>_in`: a path carries traffic only if it does so both ways (packets
    to a NAT that drops them still pass the internet router and its counters)."""
    src_set, dst_set = ", ".join(src), ", ".join(dst)
    return (f'        {family} saddr {{ {src_set} }} {family} daddr {{ {dst_set} }} '
            f'counter name "{counter}_out"\n'
            f'        {family} saddr {{ {dst_set} }} {family} daddr {{ {src_set} }} '
            f'counter name "{counter}_in"\n')


def _counter_names(paths: Iterable[str]) -> list[str]:
    return [f"{path}_{way}" for path in paths for way in ("out", "in")]


def _counters(host: Host, family: str) -> dict[str, int]:
    out = host.run("nft", "-j", "list", "counters", "table", family, COUNTER_TABLE).stdout
    return {item["counter"]["name"]: item["counter"]["packets"]
            for item in json.loads(out)["nftables"] if "counter" in item}


def _load_counters(host: Host, family: str, names: list[str], rules: str) -> None:
    counters = "".join(f"    counter {name} {{\n    }}\n" for name in names)
    host.nft(f"""\
table {family} {COUNTER_TABLE}
delete table {family} {COUNTER_TABLE}
table {family} {COUNTER_TABLE} {{
{counters}    chain forward {{
        type filter hook forward priority -300; policy accept;
{rules}    }}
}}
""")


def classify(natlab: NatLab, a: str, b: str, ping: Callable[[], tuple[int, int]]) -> Path:
    """The path between nodes `a` and `b` during `ping()`, which sends pings and returns
    (sent, answered). Counters: on the internet router (public addresses, IPv6 addresses,
    each node with the anchors) and, for a shared LAN, on its bridge.

    A path "carries" the pings when it counted, each way, at least half a packet per
    answered ping (each answered ping is one packet each way; keepalives add a few).
    Pings answered over no single watched path (e.g. requests direct, replies relayed)
    give UNKNOWN.
    """
    site_a, site_b = natlab.site_of(a), natlab.site_of(b)
    anchors, anchors6 = natlab.anchor_addrs(), natlab.anchor_addrs6()
    rules = ""
    if site_a is not site_b:
        rules += _both_ways([site_a.public_addr], [site_b.public_addr], "direct", "ip")
    if a in site_a.addr6 and b in site_b.addr6:
        rules += _both_ways([site_a.addr6[a]], [site_b.addr6[b]], "ipv6", "ip6")
    for name, site, counter in ((a, site_a, "relay_a"), (b, site_b, "relay_b")):
        rules += _both_ways([site.public_addr], anchors, counter, "ip")
        if name in site.addr6:
            rules += _both_ways([site.addr6[name]], anchors6, counter, "ip6")
    _load_counters(natlab.inet, "inet",
                   _counter_names(["direct", "ipv6", "relay_a", "relay_b"]), rules)
    bridge = site_a.bridge_host if site_a is site_b else None
    if bridge is not None:
        _load_counters(bridge, "bridge", _counter_names(["lan"]),
                       _both_ways([site_a.addr[a]], [site_b.addr[b]], "lan", "ip"))
    _sent, answered = ping()
    if answered == 0:
        return Path.NONE
    seen = _counters(natlab.inet, "inet")
    if bridge is not None:
        seen.update(_counters(bridge, "bridge"))

    def carries(path: str) -> bool:
        need = max(1, answered // 2)
        return seen.get(f"{path}_out", 0) >= need and seen.get(f"{path}_in", 0) >= need

    for path, counter in ((Path.IPV6, "ipv6"), (Path.LAN, "lan"), (Path.DIRECT, "direct")):
        if carries(counter):
            return path
    if carries("relay_a") and carries("relay_b"):
        return Path.RELAYED
    return Path.UNKNOWN
