"""The TUN's routes, and the MTU each carries.

One route per mesh prefix at the mesh's MTU, and one per address a peer owns at that
peer's tunnel MTU: a multipath session carries what its narrowest usable path allows
(probed, less the trailer), which may be more or less than the mesh's. TCP takes its
MSS from the route, so one device serves peers of different MTUs.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..config import Mesh
from ..config.schema import Network
from ..multipath.link import TRAILER_SIZE
from ..session.peer import Peer


def tunnel_mtu(peer: Peer, mesh_mtu: int, announcing: bool) -> int:
    """The multipath link's MTU once it routes; before, the mesh's, less the trailer
    when we announce paths (the link will route soon, with the trailer)."""
    if peer.mp is not None and peer.mp.mtu is not None:
        return peer.mp.mtu
    return mesh_mtu - (TRAILER_SIZE if peer.mp is not None and announcing else 0)


def peer_mtus(peers: Iterable[Peer], mesh_mtu: int, announcing: bool) -> dict[str, int]:
    return {peer.name: tunnel_mtu(peer, mesh_mtu, announcing) for peer in peers}


def table(mesh: Mesh, peers: Iterable[Peer], mtus: dict[str, int],
          skipped: frozenset[Network] = frozenset()) -> dict[str, int]:
    """Network -> MTU, as TunDevice.configure takes them. Never a default route: an exit
    node's goes to a table of its own (exit_node.py), never over the host's. `skipped`:
    subnet routes that stay out of the TUN though a peer carries them (subnets.py)."""
    out = {str(net): mesh.mtu for net in mesh.prefixes}
    for peer in peers:
        out.update((str(net), mtus[peer.name]) for net in peer.spec.allowed_ips
                   if net.prefixlen and net not in skipped)
    return out
