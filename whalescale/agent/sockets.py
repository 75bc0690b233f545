"""The agent's UDP sockets: one per address family on the mesh port (WireGuard, the
bootstrap protocol and LAN discovery share it), and one per local address a node lists
for multipath, bound to its interface."""

from __future__ import annotations

import errno
import logging
import socket
from collections import Counter
from collections.abc import Iterable

from . import addresses, steering, udp
from .exit_routes import mark

log = logging.getLogger("whalescale.agent")

Addr = tuple[str, int]


class Sockets:
    def __init__(self) -> None:
        self.default: dict[int, socket.socket] = {}  # by family: sends, takes transport data
        self.control: dict[int, socket.socket] = {}  # by family: the rest (steering.py)
        self.paths: dict[Addr, socket.socket] = {}  # by local address
        self.device_of: dict[Addr, str] = {}  # a path socket's interface

    def open(self, port: int, interfaces: tuple[str, ...], backup_interfaces: tuple[str, ...]
             ) -> tuple[tuple[Addr, ...], frozenset[Addr]]:
        """Bind them all; OSError (a busy port, a missing interface) says what failed.
        Returns the path sockets' addresses, and which of them are backups."""
        self._open_port("0.0.0.0", port, socket.AF_INET)
        # LAN discovery broadcasts its hellos from the mesh port (nat/bootstrap.py)
        self.default[socket.AF_INET].setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        try:
            self._open_port("::", port, socket.AF_INET6)
        except OSError as exc:
            log.info("no IPv6 socket (%s); IPv4 only", exc.strerror)
        for name, interface in addresses.addresses_of(interfaces + backup_interfaces):
            local = (str(interface.ip), port)
            family = socket.AF_INET6 if interface.version == 6 else socket.AF_INET
            self.paths[local] = udp.open_udp(local[0], local[1], family, device=name)
            self.device_of[local] = name
        backups = frozenset(a for a, dev in self.device_of.items() if dev in backup_interfaces)
        for sock in [*self.default.values(), *self.control.values(), *self.paths.values()]:
            mark(sock)  # our encrypted traffic never goes through an exit node's tunnel
        return tuple(self.paths), backups

    def _open_port(self, host: str, port: int, family: socket.AddressFamily) -> None:
        data, control = steering.open_port(host, port, family)
        self.default[family] = data
        if control is not None:
            self.control[family] = control

    def send(self, groups: Iterable[tuple[Addr, Addr | None, list[bytes]]],
             drops: Counter[str]) -> None:
        """Each destination's datagrams as one batch (UDP GSO), from the path socket named
        or the default socket of the family; what cannot go is counted in `drops`."""
        for addr, local, datagrams in groups:
            if local is not None:
                sock = self.paths.get(local)
            else:
                sock = self.default.get(socket.AF_INET6 if ":" in addr[0] else socket.AF_INET)
            if sock is None:
                drops["no_socket"] += len(datagrams)
                continue
            try:
                udp.send_batch(sock, datagrams, addr)
            except OSError as exc:  # unreachable from this socket, ...: UDP promises nothing
                drops[f"send_{errno.errorcode.get(exc.errno or 0, 'error')}"] += len(datagrams)

    def close(self) -> None:
        for sock in [*self.default.values(), *self.control.values(), *self.paths.values()]:
            sock.close()
        self.default.clear()
        self.control.clear()
        self.paths.clear()
        self.device_of.clear()
