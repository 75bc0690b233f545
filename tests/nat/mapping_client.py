"""A LAN host's side of the lab tests, run inside its namespace: map a UDP port, report.

Usage: mapping_client.py GATEWAY PORT PROTOCOL[,PROTOCOL...]

Prints one line per step, which the test waits for in the log:
  mapped <protocol> <external address> <external port> <seconds to mapping>
  received <payload> from <address>
  unmapped
Runs until SIGTERM, then removes the mapping (the driver's cancellation path).
"""

from __future__ import annotations

import signal
import socket
import sys

import trio

from whalescale.nat.driver import run_port_mapping
from whalescale.nat.portmap import Mapping, PortMapSettings, Protocol
from whalescale.nat.upnp import UpnpClient


async def main(gateway: str, port: int, protocols: tuple[Protocol, ...]) -> None:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await sock.bind(("0.0.0.0", port))
    started = trio.current_time()

    def on_mapping(mapping: Mapping | None) -> None:
        if mapping is None:
            print("unmapped", flush=True)
            return
        elapsed = trio.current_time() - started
        print(
            f"mapped {mapping.protocol.value} {mapping.external_address} "
            f"{mapping.external_port} {elapsed:.3f}",
            flush=True,
        )

    async def echo_received() -> None:
        while True:
            data, source = await sock.recvfrom(2048)
            print(f"received {data.decode(errors='replace')} from {source[0]}", flush=True)

    settings = PortMapSettings(
        internal_port=port, lifetime_s=600, protocols=protocols, accept_private_external=True
    )
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(echo_received)
            await nursery.start(
                lambda task_status: run_port_mapping(
                    gateway, port, on_mapping, settings=settings,
                    upnp=UpnpClient(discover_delay_ms=500), task_status=task_status,
                )
            )  # fmt: skip
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break
    print("exited", flush=True)


if __name__ == "__main__":
    chosen = tuple(Protocol(name) for name in sys.argv[3].split(","))
    trio.run(main, sys.argv[1], int(sys.argv[2]), chosen)
