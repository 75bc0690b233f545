"""The shell of the mesh's DNS answers (node/dns_answer.py): sockets on each tunnel
address, port 53, UDP and TCP, and the registration with systemd-resolved (resolved.py).

Bound to the tunnel addresses, so the service is for the mesh (and this host); the
responder drops what comes from elsewhere. IP_FREEBIND lets a socket bind while its
address is still tentative (IPv6 duplicate address detection) or being added. A socket
that cannot bind (port 53 taken, no CAP_NET_BIND_SERVICE) is logged with what to do,
and everything else goes on: names are a convenience, the tunnel is the service.

`follow(addresses, suffix)` says what to serve (at start, and whenever the TUN is
configured anew: a reload may change our addresses or the suffix); one task converges
on it, so changes never race.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket

import trio

from ..config.schema import TunnelAddress
from ..node.dns_answer import DnsResponder
from . import resolved

log = logging.getLogger("whalescale.agent.names")

DNS_PORT = 53
_IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)  # Linux; Python names it from 3.13 on
MAX_QUERY_BYTES = 4096  # longer is cut, then malformed: a real query is under 300
MAX_TCP_CONNECTIONS = 32
MAX_QUERIES_PER_CONNECTION = 100
TCP_IDLE_S = 10.0  # RFC 7766 §6.2.3 suggests seconds, not minutes


class NameServer:
    def __init__(self, responder: DnsResponder, interface: str, port: int = DNS_PORT) -> None:
        self._responder = responder
        self._interface = interface
        self._port = port
        self._wanted: tuple[tuple[TunnelAddress, ...], str] = ((), "")
        self._changed = trio.Event()
        self._converging = False
        self._serving: dict[TunnelAddress, trio.CancelScope] = {}
        self._announced: tuple[tuple[TunnelAddress, ...], str] = ((), "")
        self._registered = False  # with systemd-resolved: revert on stop
        self._tcp_connections = trio.CapacityLimiter(MAX_TCP_CONNECTIONS)

    def follow(self, addresses: tuple[TunnelAddress, ...], suffix: str) -> None:
        """Serve on `addresses` and register them for `suffix`; cheap when nothing changed."""
        if (addresses, suffix) != self._wanted:
            self._wanted = (addresses, suffix)
            self._changed.set()

    async def settled(self) -> None:
        """Returns once the last `follow` is carried out: bound, registered or logged."""
        while self._changed.is_set() or self._converging:
            await trio.sleep(0.01)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        try:
            async with trio.open_nursery() as nursery:
                task_status.started()
                while True:
                    await self._changed.wait()
                    self._changed = trio.Event()
                    self._converging = True
                    await self._converge(nursery)
                    self._converging = False
        finally:
            if self._registered:
                with trio.CancelScope(shield=True):
                    why = await resolved.revert(self._interface)
                if why is not None:
                    log.warning("names: could not take back our DNS settings from "
                                "systemd-resolved (%s)", why)

    async def _converge(self, nursery: trio.Nursery) -> None:
        addresses, suffix = self._wanted
        for gone in [a for a in self._serving if a not in addresses]:
            self._serving.pop(gone).cancel()
        for address in addresses:
            if address not in self._serving:
                self._serving[address] = await nursery.start(self._serve_address, address)
        served = tuple(a for a in addresses if not self._serving[a].cancel_called)
        if (served, suffix) == self._announced or not served or not suffix:
            return  # (no suffix: a Mesh not from the loader; "~" would route every name)
        self._announced = (served, suffix)
        listed = ", ".join(_where(a, self._port) for a in served)
        why = await resolved.register(self._interface, list(served), suffix)
        self._registered = why is None
        if why is None:
            log.info("names: systemd-resolved asks %s for *.%s on %s", listed, suffix,
                     self._interface)
        else:
            first = served[0]
            log.info("names: *.%s served at %s; systemd-resolved did not take them (%s): "
                     "point a resolver at them, e.g. dnsmasq 'server=/%s/%s', unbound "
                     "'forward-zone: name: %s, forward-addr: %s', or 'nameserver %s' in "
                     "/etc/resolv.conf (other names are refused, so the next nameserver "
                     "answers them)", suffix, listed, why, suffix, first, suffix, first, first)

    async def _serve_address(self, address: TunnelAddress, *,
                             task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        """Serve one address until cancelled. Reports its scope, already cancelled when
        neither UDP nor TCP could bind (so nothing is registered for it)."""
        with trio.CancelScope() as scope:
            sockets = {}
            for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                try:
                    sockets[kind] = _bind(address, self._port, kind)
                except OSError as exc:
                    log.warning("names: cannot serve DNS on %s %s: %s", _where(address,
                                self._port), "udp" if kind == socket.SOCK_DGRAM else "tcp",
                                _advice(exc))
            if not sockets:
                scope.cancel()
                task_status.started(scope)
                return
            task_status.started(scope)
            async with trio.open_nursery() as nursery:
                if socket.SOCK_DGRAM in sockets:
                    nursery.start_soon(self._serve_udp, sockets[socket.SOCK_DGRAM])
                if socket.SOCK_STREAM in sockets:
                    listener = trio.SocketListener(sockets[socket.SOCK_STREAM])
                    nursery.start_soon(trio.serve_listeners, self._serve_tcp, [listener])

    async def _serve_udp(self, sock: trio.socket.SocketType) -> None:
        with sock:
            while True:
                try:
                    data, addr = await sock.recvfrom(MAX_QUERY_BYTES)
                except OSError as exc:  # (an ICMP error queued on the socket): read on
                    log.debug("names: reading a query: %s", exc)
                    continue
                reply = self._responder.answer_udp(data, ipaddress.ip_address(addr[0]))
                if reply is not None:
                    try:
                        await sock.sendto(reply, addr)
                    except OSError as exc:  # the asker went away: nothing to do about it
                        log.debug("names: no answer to %s: %s", addr[0], exc)

    async def _serve_tcp(self, stream: trio.SocketStream) -> None:
        """RFC 1035 §4.2.2 / RFC 7766: two-byte length, message; several per connection.
        Beyond MAX_TCP_CONNECTIONS a connection is closed at once."""
        async with stream:
            try:
                self._tcp_connections.acquire_nowait()
            except trio.WouldBlock:
                return
            try:
                source = ipaddress.ip_address(stream.socket.getpeername()[0])
                for _ in range(MAX_QUERIES_PER_CONNECTION):
                    with trio.move_on_after(TCP_IDLE_S):
                        length = int.from_bytes(await _receive_exactly(stream, 2))
                        reply = self._responder.answer_tcp(
                            await _receive_exactly(stream, length), source)
                        if reply is None:
                            return
                        await stream.send_all(len(reply).to_bytes(2) + reply)
                        continue
                    return  # idle, or a peer too slow to take its answer
            except (trio.BrokenResourceError, trio.ClosedResourceError, EOFError, OSError):
                return
            finally:
                self._tcp_connections.release()


async def _receive_exactly(stream: trio.SocketStream, count: int) -> bytes:
    data = bytearray()
    while len(data) < count:
        chunk = await stream.receive_some(count - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return bytes(data)


def _bind(address: TunnelAddress, port: int, kind: int) -> trio.socket.SocketType:
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_IP, _IP_FREEBIND, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if kind == socket.SOCK_STREAM:  # a restart must not wait out TIME_WAIT
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((str(address), port))
        if kind == socket.SOCK_STREAM:
            sock.listen(MAX_TCP_CONNECTIONS)
    except OSError:
        sock.close()
        raise
    return trio.socket.from_stdlib_socket(sock)


def _advice(exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return ("the port is taken (a DNS server listening on every address? bind it to "
                "its own addresses, e.g. dnsmasq 'bind-interfaces'); the tunnel works on, "
                "names are not served here")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return ("a port below 1024 needs CAP_NET_BIND_SERVICE (systemd: "
                "AmbientCapabilities= and CapabilityBoundingSet= CAP_NET_BIND_SERVICE); the "
                "tunnel works on; `whalescale hosts` gives an /etc/hosts block meanwhile")
    return f"{exc.strerror or exc}; the tunnel works on, names are not served here"


def _where(address: TunnelAddress, port: int) -> str:
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"
