"""LAN discovery, sans-I/O: LAN_HELLO broadcasts (bootstrap.py) so that two nodes behind
one router find each other without an anchor and talk over the LAN, not through a
hairpin in the router (anti-patterns 2.7).

A member's hello is answered with a WireGuard initiation to where it came from, and
a hello is padded to the initiation's size so that a forged one reflects 1:1 at most
(bootstrap.py). A legacy hello (a release before the padding, 36 bytes) is answered
with our own legacy hello instead, unicast: the old node recognises us and sends the
initiation itself (traversal.py), so mixed releases still meet on the LAN, one round
trip later.
New nodes broadcast only padded hellos; an old node counts them as malformed."""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Callable, Iterable

import attrs

from . import bootstrap
from .bootstrap import Addr

# A neighbour's hello triggers an initiation at most this often.
PUNCH_EVERY_S = 5.0


@attrs.frozen(slots=True)
class Neighbour:
    """A member heard on our LAN, due an answer."""

    node_id: bytes
    legacy: bool  # its hello was unpadded: too small to answer with an initiation


class LanDiscovery:
    def __init__(self, me: bytes, random_bytes: Callable[[int], bytes]) -> None:
        self.me = me
        self._random_bytes = random_bytes
        self.networks: list[ipaddress.IPv4Network] = []
        self.seen: dict[bytes, float] = {}  # member node ID -> when its last hello came
        self.counters: Counter[str] = Counter()

    def set_networks(self, lan: Iterable[tuple[str, int]]) -> None:
        """Our LAN addresses with their prefix lengths."""
        self.networks = [ipaddress.IPv4Network(f"{host}/{prefix}", strict=False)
                         for host, prefix in lan]

    def hellos(self, port: int) -> list[tuple[bytes, Addr]]:
        """A LAN_HELLO to the broadcast address of each of our LAN networks."""
        return [(bootstrap.encode_lan_hello(self.me, self._random_bytes(bootstrap.NONCE_BYTES)),
                 (str(network.broadcast_address), port))
                for network in self.networks
                if network.prefixlen <= 30]  # a point-to-point link has no broadcast

    def legacy_hello(self) -> bytes:
        """Our hello in the legacy form: the answer to a legacy hello, no larger than it."""
        return bootstrap.encode_lan_hello(
            self.me, self._random_bytes(bootstrap.NONCE_BYTES), padded=False)

    def receive(self, data: bytes, source: Addr, members: Iterable[bytes],
                now: float) -> Neighbour | None:
        """The member a neighbour's hello comes from, when it is time to contact it."""
        try:
            hello = bootstrap.decode(data)
        except bootstrap.MalformedBootstrap:
            self.counters["malformed"] += 1
            return None
        address = ipaddress.ip_address(source[0])
        if not any(address in network for network in self.networks):
            self.counters["not_from_lan"] += 1  # only neighbours may ask this
            return None
        assert isinstance(hello, bootstrap.LanHello)
        if hello.is_from(self.me):
            return None  # our own broadcast, looped back
        node_id = next((n for n in members if hello.is_from(n)), None)
        if node_id is None:
            self.counters["unknown"] += 1
            return None
        last, self.seen[node_id] = self.seen.get(node_id), now
        if last is not None and now - last < PUNCH_EVERY_S:
            return None
        if not hello.padded:
            self.counters["legacy"] += 1
        return Neighbour(node_id, legacy=not hello.padded)
