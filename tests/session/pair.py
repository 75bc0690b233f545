"""Two engines wired back to back, with a clock the test moves by hand."""

from __future__ import annotations

import ipaddress
import random
import struct

from whalescale.identity import Identity
from whalescale.session.engine import Engine, PeerSpec

A_ADDR = ("10.0.0.1", 51820)
B_ADDR = ("10.0.0.2", 51820)
A_TUNNEL = "100.96.0.1"
B_TUNNEL = "100.96.0.2"
WALL = 1_800_000_000.0


def ip_packet(src: str, dst: str, payload: bytes = b"hello") -> bytes:
    """A minimal IPv4/UDP packet; the engine only reads addresses and length."""
    udp = struct.pack(">HHHH", 1000, 2000, 8 + len(payload), 0) + payload
    header = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                         ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed)
    return header + udp


def make_engine(me: Identity, peers: list[tuple[str, Identity, str, tuple]], seed: int,
                *, spec_kw: dict | None = None, **kw) -> Engine:
    """`spec_kw` may say `whalescale=True`: the peers are then whalescale nodes."""
    rng = random.Random(seed)
    spec_kw = dict(spec_kw or {})
    whalescale = spec_kw.pop("whalescale", False)
    specs = [PeerSpec(name=name, static_public=ident.x25519_public,
                      allowed_ips=(ipaddress.ip_network(f"{tunnel}/32"),), endpoints=endpoints,
                      node_id=ident.public if whalescale else None, **spec_kw)
             for name, ident, tunnel, endpoints in peers]
    return Engine(me.x25519_private, me.x25519_public, specs, random_bytes=rng.randbytes,
                  wall_offset=WALL, **kw)


class Pair:
    """alice (initiator side, knows bob's endpoint) and bob (knows none of alice's)."""

    def __init__(self, seed: int = 1, alice_kw: dict | None = None, bob_kw: dict | None = None,
                 bob_knows_alice_endpoint: bool = False):
        self.alice_id = Identity.from_seed(bytes([seed]) * 32)
        self.bob_id = Identity.from_seed(bytes([seed + 1]) * 32)
        self.alice = make_engine(self.alice_id, [("bob", self.bob_id, B_TUNNEL, (B_ADDR,))],
                                 seed, **(alice_kw or {}))
        bob_endpoints = (A_ADDR,) if bob_knows_alice_endpoint else ()
        self.bob = make_engine(self.bob_id, [("alice", self.alice_id, A_TUNNEL, bob_endpoints)],
                               seed + 100, **(bob_kw or {}))
        self.now = 0.0
        self.wire: list[tuple[str, bytes]] = []  # every datagram, for inspection
        self.sent_to: list[tuple[str, tuple]] = []  # (sender, the address it sent to)
        self.lost: set[str] = set()  # senders whose datagrams the network drops

    def pump(self) -> None:
        """Deliver datagrams both ways until both outboxes are empty."""
        for _ in range(100):
            moved = False
            for src, dst, src_addr, name in ((self.alice, self.bob, A_ADDR, "alice"),
                                             (self.bob, self.alice, B_ADDR, "bob")):
                out, src.outbox = src.outbox, []
                for datagram, addr, _local in out:
                    moved = True
                    self.wire.append((name, datagram))
                    self.sent_to.append((name, addr))
                    if name not in self.lost:
                        dst.receive_datagram(datagram, src_addr, self.now)
            if not moved:
                return
        raise AssertionError("pump did not settle")

    def advance(self, seconds: float, step: float = 0.05) -> None:
        """Move the clock, firing timers of both engines at their deadlines."""
        end = self.now + seconds
        while True:
            deadlines = [d for d in (self.alice.next_deadline(), self.bob.next_deadline())
                         if d is not None and d <= end]
            if not deadlines:
                break
            self.now = max(self.now, min(deadlines))
            self.alice.handle_timer(self.now)
            self.bob.handle_timer(self.now)
            self.pump()
        self.now = end

    def alice_to_bob(self, payload: bytes = b"hello") -> bytes:
        packet = ip_packet(A_TUNNEL, B_TUNNEL, payload)
        self.alice.send_packets([packet], self.now)
        return packet

    def bob_to_alice(self, payload: bytes = b"hi") -> bytes:
        packet = ip_packet(B_TUNNEL, A_TUNNEL, payload)
        self.bob.send_packets([packet], self.now)
        return packet
