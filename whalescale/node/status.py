"""What `whalescale status` shows of the node's peers, as JSON-ready data."""

from __future__ import annotations

from typing import Any

from ..session.peer import Peer
from ..wire.port import channel_of_alias, endpoint_text
from .local import Interface, is_lan

Addr = tuple[str, int]


def path_kind(addr: Addr, interfaces: list[Interface]) -> str:
    """How a peer is reached: through an anchor's relay, over a directly connected
    network, over IPv6, or directly across IPv4."""
    if channel_of_alias(addr):
        return "relayed"
    if is_lan(addr[0], interfaces):
        return "lan"
    return "ipv6" if ":" in addr[0] else "direct"


def _ago(then: float | None, now: float) -> float | None:
    return None if then is None else round(now - then, 3)


def peer_status(peer: Peer, anchor: bool, now: float, interfaces: list[Interface],
                record_seq: int | None, scheduler: str) -> dict[str, Any]:
    return {
        "name": peer.name,
        "kind": "whalescale" if peer.spec.whalescale else "wireguard",
        "anchor": anchor,
        "endpoint": endpoint_text(peer.endpoint) if peer.endpoint else None,
        # No path kind until the peer has answered there: an endpoint not yet heard from
        # is only a candidate (a never-reached IPv6 endpoint is no "ipv6" path).
        "path": (path_kind(peer.endpoint, interfaces)
                 if peer.endpoint and peer.last_received_at is not None else None),
        "session": peer.current is not None,
        "reachable": peer.reachable(now),
        "last_handshake_s_ago": _ago(peer.last_handshake_at, now),
        "last_received_s_ago": _ago(peer.last_received_at, now),
        "rx_bytes": peer.rx_bytes,
        "tx_bytes": peer.tx_bytes,
        "rx_packets": peer.rx_packets,
        "tx_packets": peer.tx_packets,
        "record_seq": record_seq,  # its self-attested gossip record, if we hold one
        "multipath": peer.mp.status(scheduler) if peer.mp is not None else None,
    }
