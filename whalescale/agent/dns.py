"""Looking up the mesh file's host names: the system resolver (so /etc/hosts, nsswitch
and resolv.conf apply, as for every other program on the host), in a worker thread so
that a slow DNS server never holds up the tunnel."""

from __future__ import annotations

import socket

import trio

LOOKUP_TIMEOUT_S = 10.0


async def lookup(name: str) -> tuple[list[str] | None, str]:
    """(addresses of `name`, A and AAAA in the resolver's order; None and why if none)."""
    with trio.move_on_after(LOOKUP_TIMEOUT_S):
        try:
            infos = await trio.socket.getaddrinfo(name, None, type=socket.SOCK_DGRAM)
        except OSError as exc:  # socket.gaierror: no such name, no DNS server, ...
            return None, exc.strerror or str(exc)
        # an IPv6 link-local answer carries its scope as "%eth0"; the node wants addresses
        return list(dict.fromkeys(str(info[4][0]).split("%")[0] for info in infos)), ""
    return None, f"no answer within {LOOKUP_TIMEOUT_S:g} s"
