"""What the node asks of the shell: everything it cannot do without I/O.

Datagrams and TUN packets have their own drains (node.py); these are the rest,
in the order they arose: lines for the log, LKG cache writes, an answered ping,
a question for the OS, the TUN's routes, the exit node's routing.
"""

from __future__ import annotations

import attrs

from ..mesh.controller import Contact, StoredRecord

Addr = tuple[str, int]


@attrs.frozen
class Log:
    level: int  # logging's levels
    message: str


@attrs.frozen
class Pong:
    """A PONG came back (the nonce of `Node.ping`), at `at`, from `endpoint`."""

    nonce: bytes
    at: float
    endpoint: str  # as status writes it
    path: str  # relayed, lan, ipv6 or direct


@attrs.frozen
class FindRoutes:
    """Which local address routes to each target? Answer with `Node.probe(routes, now)`."""

    targets: tuple[Addr, ...]


@attrs.frozen
class Resolve:
    """Look these DNS names up (A and AAAA) without blocking; answer each with
    `Node.set_resolved(name, addresses or None, now, error)`."""

    names: tuple[str, ...]


@attrs.frozen
class CheckForwarding:
    """Is IP forwarding on (net.ipv4.ip_forward, net.ipv6.conf.all.forwarding)? Answer
    with `Node.set_forwarding(ipv4, ipv6, now)` (None: could not be read)."""


@attrs.frozen
class ConfigureTun:
    """Give the TUN these addresses and routes (network -> MTU)."""

    addresses: tuple[str, ...]
    routes: dict[str, int]


@attrs.frozen
class ConfigureExit:
    """Send our default route (IPv4 and IPv6) through the TUN to peer `via` (None: keep
    the host's), at `mtu`; with `kill_switch`, block it rather than restore it if the
    agent dies. `offer`: forward and masquerade the mesh's traffic as an exit node."""

    via: str | None
    mtu: int
    kill_switch: bool
    offer: bool


Effect = (Log | Pong | FindRoutes | Resolve | CheckForwarding | ConfigureTun | ConfigureExit
          | Contact
          | StoredRecord)
