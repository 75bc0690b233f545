"""The mesh's names for its tunnel addresses: NAME.SUFFIX for every node and vanilla
WireGuard peer, read from the mesh file alone (no coordination server; every node
holds the same table). Served by the DNS responder (dns_answer.py) and printed by
`whalescale hosts` as an /etc/hosts block.

Not to be confused with names.py, which looks up the DNS names of *endpoints*.
"""

from __future__ import annotations

import ipaddress

import attrs

from ..config import Mesh
from ..config.schema import TunnelAddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@attrs.frozen
class TunnelNames:
    """`addresses`: "name.suffix" -> that entry's tunnel addresses, in mesh file order;
    `mesh_sources`: where a query may come from (see `from_mesh`)."""

    mesh: str
    suffix: str
    addresses: dict[str, tuple[TunnelAddress, ...]]
    mesh_sources: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    @classmethod
    def of(cls, mesh: Mesh) -> TunnelNames:
        entries = [*mesh.nodes, *mesh.wireguard]
        addresses = {f"{e.name}.{mesh.suffix}": e.addresses for e in entries}
        sources = [*mesh.prefixes,
                   *(ipaddress.ip_network(a) for e in entries for a in e.addresses),
                   *(net for n in mesh.nodes for net in (*n.routes, *n.standby_routes))]
        return cls(mesh.name, mesh.suffix, addresses, tuple(sources))

    def from_mesh(self, source: IPAddress) -> bool:
        """Whether a query from `source` may be answered: from inside the mesh (a tunnel
        address, a prefix, a network behind a node) or this host. Binding to the tunnel
        address is not enough: Linux takes a packet for any of its addresses on any
        interface (the weak host model), so a LAN neighbour could ask us through eth0."""
        if isinstance(source, ipaddress.IPv6Address) and source.ipv4_mapped is not None:
            source = source.ipv4_mapped
        return source.is_loopback or any(source in net for net in self.mesh_sources)

    def hosts_block(self) -> str:
        """An /etc/hosts block between marker lines (a script replaces what lies between
        them): each address with NAME.SUFFIX, and NAME as an alias (`ssh nas`)."""
        begin, end = (f"# {edge} whalescale mesh {self.mesh}" for edge in ("BEGIN", "END"))
        lines = [begin]
        for fqdn, addresses in self.addresses.items():
            short = fqdn.removesuffix(f".{self.suffix}")
            lines += [f"{address}\t{fqdn} {short}" for address in addresses]
        return "\n".join([*lines, end]) + "\n"
