"""What `whalescale status` shows: built from the engine's state, as JSON-ready data."""

from __future__ import annotations

from typing import Any

from ..mesh.anchors import AnchorHealth, reachable
from ..nat.relay import channel_of_alias
from ..session.engine import Engine
from ..session.peer import Peer
from .addresses import Interface, is_lan

Addr = tuple[str, int]


def endpoint_text(addr: Addr | None) -> str | None:
    if addr is None:
        return None
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


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
                record_seq: int | None = None, scheduler: str = "wrr") -> dict[str, Any]:
    return {
        "name": peer.name,
        "kind": "whalescale" if peer.spec.whalescale else "wireguard",
        "anchor": anchor,
        "endpoint": endpoint_text(peer.endpoint),
        "path": path_kind(peer.endpoint, interfaces) if peer.endpoint else None,
        "session": peer.current is not None,
        "reachable": reachable(peer.last_received_at, now, peer.spec.keepalive_s),
        "last_handshake_s_ago": _ago(peer.last_handshake_at, now),
        "last_received_s_ago": _ago(peer.last_received_at, now),
        "rx_bytes": peer.rx_bytes,
        "tx_bytes": peer.tx_bytes,
        "record_seq": record_seq,  # its self-attested gossip record, if we hold one
        "multipath": peer.mp.status(scheduler) if peer.mp is not None else None,
    }


def build_status(*, node: str, fingerprint: str, interface: str, port: int, is_anchor: bool,
                 engine: Engine, anchor_keys: frozenset[bytes], health: AnchorHealth,
                 now: float, interfaces: list[Interface],
                 record_seqs: dict[str, int] | None = None,
                 scheduler: str = "wrr") -> dict[str, Any]:
    seqs = record_seqs or {}
    peers = [peer_status(p, p.spec.static_public in anchor_keys, now, interfaces,
                         seqs.get(p.name), scheduler)
             for p in engine.peers.values()]
    anchors_up = [p["name"] for p in peers if p["anchor"] and p["reachable"]]
    warnings = []
    if health is not AnchorHealth.OK:
        warnings.append(f"{health.value}: the mesh cannot re-converge if it goes; "
                        "run at least two anchors on different networks")
    return {
        "node": node,
        "fingerprint": fingerprint,
        "interface": interface,
        "port": port,
        "anchor": is_anchor,
        "anchors": {"health": health.value, "reachable": anchors_up,
                    "total": len(anchor_keys) + int(is_anchor)},
        "peers": sorted(peers, key=lambda p: (not p["anchor"], p["name"])),
        "drops": dict(engine.drops),
        "warnings": warnings,
    }
