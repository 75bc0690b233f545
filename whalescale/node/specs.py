"""From the mesh file to the engine's view of peers: who I am, whom I talk to."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from ..config import Endpoint, Mesh, Node
from ..config.load import DEFAULT_KEEPALIVE_S
from ..config.schema import Network
from ..identity import Identity, x25519_public_from_ed25519
from ..session.engine import PeerSpec
from .subnets import carried

Addr = tuple[str, int]


class NotInMesh(LookupError):
    """Our key has no entry in the mesh file."""


def own_node(mesh: Mesh, identity: Identity) -> Node:
    node = mesh.node_by_key(identity.public)
    if node is None:
        raise NotInMesh(
            "this node's public key is not in the mesh file; add a [[node]] entry with "
            f"public_key = \"{identity.public_b64}\""
        )
    return node


def _host_networks(addresses: tuple) -> tuple:
    return tuple(ipaddress.ip_network(a) for a in addresses)


def peer_specs(mesh: Mesh, me: Node,
               expand: Callable[[tuple[Endpoint, ...]], tuple[Addr, ...]],
               failed_over: frozenset[Network] = frozenset()) -> list[PeerSpec]:
    """Every other node and every vanilla WireGuard peer, as the engine needs them;
    `expand` turns endpoints into addresses (names as they resolved, names.py). A node's
    allowed IPs hold the networks it carries (subnets.py): `failed_over` are those its
    standby carries now.

    Anchors keep each other alive even in a mesh without keepalives (`keepalive_s = 0`):
    they are where everyone else recovers, so their sessions must never lapse."""
    specs = [
        PeerSpec(
            name=node.name,
            static_public=x25519_public_from_ed25519(node.public_key),
            allowed_ips=_host_networks(node.addresses) + carried(node, failed_over),
            endpoints=expand(node.endpoints),
            keepalive_s=float(mesh.keepalive_s
                              or (DEFAULT_KEEPALIVE_S if me.anchor and node.anchor else 0)),
            node_id=node.public_key,
            anchor=node.anchor,
        )
        for node in mesh.nodes
        if node is not me
    ]
    specs += [
        PeerSpec(
            name=wg.name,
            static_public=wg.public_key,
            allowed_ips=_host_networks(wg.addresses) + tuple(wg.allowed_ips),
            endpoints=expand((wg.endpoint,)) if wg.endpoint else (),
            keepalive_s=float(wg.keepalive_s),
        )
        for wg in mesh.wireguard
    ]
    return specs
