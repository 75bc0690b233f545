"""Two TUNs in two namespaces, relayed by this process, carrying a real TCP echo of 4 MB.

Run as `python -m tests.tun.relay_in_netns NS_A NS_B OFFLOAD` (root; the namespaces exist).
Node A (10.77.0.1, TUN wsa) is the client, node B (10.77.0.2, TUN wsb) the echo server; the
relay moves `read_batch` output of one TUN into `write_batch` of the other. Prints JSON: what
crossed, a sample of packets read, GSO frames written, drops, and whether the echo matched.
"""

import ctypes
import json
import os
import select
import socket
import sys
import threading
import time

from whalescale.tun import segment
from whalescale.tun.device import TunDevice

MTU = 1420
PORT = 5201
DATA = bytes(range(251)) * (4 * 1024 * 1024 // 251)
SAMPLE = 300


CLONE_NEWNET = 0x40000000


def setns(name: str) -> None:
    """Move this thread into a named network namespace (os.setns is Python 3.12)."""
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {name}")
    finally:
        os.close(fd)


def serve_echo(listener: socket.socket) -> None:
    conn, _ = listener.accept()
    with conn:
        while chunk := conn.recv(65536):
            conn.sendall(chunk)


def run_client(client: socket.socket, received: bytearray) -> None:
    client.connect(("10.77.0.2", PORT))
    sender = threading.Thread(target=lambda: (client.sendall(DATA), client.shutdown(1)))
    sender.start()
    while chunk := client.recv(65536):
        received += chunk
    sender.join()


def main(ns_a: str, ns_b: str, offload: bool) -> None:
    # Sockets, TUNs and netlink belong to the namespace current when they are created.
    setns(ns_a)
    tun_a = TunDevice.open("wsa", offload=offload)
    tun_a.configure(["10.77.0.1/32"], {"10.77.0.2/32": MTU})
    client = socket.socket()
    setns(ns_b)
    tun_b = TunDevice.open("wsb", offload=offload)
    tun_b.configure(["10.77.0.2/32"], {"10.77.0.1/32": MTU})
    listener = socket.create_server(("10.77.0.2", PORT))

    received = bytearray()
    threading.Thread(target=serve_echo, args=(listener,), daemon=True).start()
    client_thread = threading.Thread(target=run_client, args=(client, received), daemon=True)
    client_thread.start()

    peer = {tun_a.fileno(): (tun_a, tun_b), tun_b.fileno(): (tun_b, tun_a)}
    sample: list[str] = []
    packets_read = gso_frames_written = 0
    deadline = time.monotonic() + 60
    while client_thread.is_alive() and time.monotonic() < deadline:
        readable, _, _ = select.select(list(peer), [], [], 0.2)
        for fd in readable:
            source, sink = peer[fd]
            packets = source.read_batch(MTU)
            packets_read += len(packets)
            if len(sample) < SAMPLE:
                sample += [p.hex() for p in packets if len(p) > 100][: SAMPLE - len(sample)]
            if sink.offload:
                gso_frames_written += sum(f[1] != 0 for f in segment.coalesce(packets))
            sink.write_batch(packets)

    print(
        json.dumps(
            {
                "offload": [tun_a.offload, tun_b.offload],
                "echo_ok": bytes(received) == DATA,
                "received": len(received),
                "packets_read": packets_read,
                "sample": sample,
                "gso_frames_written": gso_frames_written,
                "drops": {**tun_a.drops, **tun_b.drops},
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3] == "offload")
