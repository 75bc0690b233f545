"""The trio shell of port mapping: one UDP socket to the gateway, one loop, no logic.

`run_port_mapping` reports `started()` at once, so it never holds up start-up; the
mapping arrives later through `on_mapping` (None when it is lost or removed). On
cancellation it removes the mapping under a shielded, bounded cancel scope.
"""

from __future__ import annotations

import math
import secrets
import socket
from collections.abc import Callable

import trio

from . import pcp
from .portmap import (
    Mapping,
    MappingAcquired,
    MappingLost,
    MappingRemoved,
    MappingRenewed,
    PortMapper,
    PortMapSettings,
    UpnpAdd,
    UpnpDelete,
)
from .upnp import UpnpClient, UpnpError

REMOVAL_TIMEOUT_S = 5.0


async def run_port_mapping(
    gateway: str,
    internal_port: int,
    on_mapping: Callable[[Mapping | None], None],
    *,
    settings: PortMapSettings | None = None,
    upnp: UpnpClient | None = None,
    task_status: trio.TaskStatus[PortMapper] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Keep UDP `internal_port` mapped on `gateway` until cancelled, then remove it."""
    if settings is None:
        settings = PortMapSettings(internal_port=internal_port)
    if upnp is None:
        upnp = UpnpClient()
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        # Connected: only the gateway's port 5351 can answer, and getsockname gives the
        # address the gateway sees, which PCP must carry (RFC 6887 section 8.1).
        await sock.connect((gateway, pcp.SERVER_PORT))
        client_address = sock.getsockname()[0]
        mapper = PortMapper(settings, client_address=client_address, nonce=secrets.token_bytes(12))
        task_status.started(mapper)
        try:
            mapper.start(trio.current_time())
            await _pump(mapper, sock, upnp, on_mapping)
        finally:
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + REMOVAL_TIMEOUT_S
                mapper.stop(trio.current_time())
                await _pump(mapper, sock, upnp, on_mapping)


async def _pump(
    mapper: PortMapper,
    sock: trio.socket.SocketType,
    upnp: UpnpClient,
    on_mapping: Callable[[Mapping | None], None],
) -> None:
    """Move datagrams, UPnP calls and timers between the core and the world until done."""
    while True:
        for datagram in mapper.datagrams_to_send():
            try:
                await sock.send(datagram)
            except OSError:
                mapper.drops["send failed"] += 1  # unreachable: the retry timer covers it
        requests = mapper.upnp_requests()
        for request in requests:
            await _run_upnp(mapper, upnp, request)
        for event in mapper.events():
            match event:
                case MappingAcquired(mapping) | MappingRenewed(mapping):
                    on_mapping(mapping)
                case MappingLost() | MappingRemoved():
                    on_mapping(None)
        if mapper.done:
            return
        if requests:
            continue  # a UPnP outcome may have produced datagrams or events to handle
        deadline = mapper.next_deadline()
        with trio.move_on_at(math.inf if deadline is None else deadline):
            try:
                data = await sock.recv(pcp.MAX_MESSAGE_BYTES)
            except OSError:
                # ICMP port unreachable on the connected socket: no server there.
                mapper.drops["icmp error"] += 1
                await trio.sleep_until(math.inf if deadline is None else deadline)
                continue
            mapper.receive_datagram(data, trio.current_time())
            continue
        mapper.handle_timer(trio.current_time())


async def _run_upnp(mapper: PortMapper, upnp: UpnpClient, request: UpnpAdd | UpnpDelete) -> None:
    match request:
        case UpnpAdd(internal_port, suggested_port, lifetime_s):
            try:
                address, port, lease_s = await trio.to_thread.run_sync(
                    upnp.add_udp_mapping, internal_port, suggested_port, lifetime_s,
                    abandon_on_cancel=True,
                )  # fmt: skip
            except UpnpError as exc:
                mapper.upnp_failed(str(exc), trio.current_time())
            else:
                mapper.upnp_mapped(address, port, lease_s, trio.current_time())
        case UpnpDelete(external_port):
            try:
                await trio.to_thread.run_sync(
                    upnp.delete_udp_mapping, external_port, abandon_on_cancel=True
                )
            except UpnpError:
                mapper.upnp_removed(trio.current_time(), confirmed=False)
            else:
                mapper.upnp_removed(trio.current_time())
