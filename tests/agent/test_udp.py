"""UDP batching: GSO runs on send, GRO splitting on receive, fallback when GSO is refused."""

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from whalescale.agent import udp
from whalescale.lab import Lab

ROOT = Path(__file__).resolve().parents[2]

# Run inside a fresh namespace: its own loopback, nothing else listening. Prints JSON.
SEND_40_OVER_LOOPBACK = """
import json, socket, subprocess, sys, time
from whalescale.agent import udp
from whalescale.lab import Lab

family = socket.AF_INET6 if sys.argv[1] == "6" else socket.AF_INET
host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
receiver = udp.open_udp(host, 51820, family)
sender = udp.open_udp(host, 0, family)
datagrams = [bytes([i]) * 1200 for i in range(39)] + [b"last" * 175]
sent = udp.send_batch(sender, datagrams, receiver.getsockname()[:2])
got = []
deadline = time.monotonic() + 5
while len(got) < len(datagrams) and time.monotonic() < deadline:
    got += udp.recv_batch(receiver, 1 << 20)
print(json.dumps({
    "sent": sent,
    "exact": [d for d, _ in got] == datagrams,
    "count": len(got),
    "from_sender": all(a[1] == sender.getsockname()[1] for _, a in got),
    "gso_refused": sender in udp._gso_refused,
}))
"""


@pytest.fixture
def namespace(lab: Lab) -> str:
    return lab.host("udp").netns


@pytest.mark.lab
@pytest.mark.parametrize("version", ["4", "6"])
def test_forty_datagrams_arrive_as_forty(namespace: str, version: str) -> None:
    done = subprocess.run(
        ["ip", "netns", "exec", namespace, sys.executable, "-c", SEND_40_OVER_LOOPBACK, version],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    report = json.loads(done.stdout)
    assert report == {
        "sent": 40,
        "exact": True,
        "count": 40,
        "from_sender": True,
        "gso_refused": False,
    }


class RecordingSocket:
    """Stands in for a socket: records calls; sendmsg fails with `gso_errno` if set."""

    def __init__(self, gso_errno: int | None = None) -> None:
        self.gso_errno = gso_errno
        self.calls: list[tuple[str, int]] = []

    def sendmsg(self, buffers: list[bytes], ancdata: object, flags: int, address: object) -> int:
        if self.gso_errno is not None:
            raise OSError(self.gso_errno, os.strerror(self.gso_errno))
        self.calls.append(("sendmsg", len(buffers)))
        return sum(map(len, buffers))

    def sendto(self, data: bytes, address: object) -> int:
        self.calls.append(("sendto", len(data)))
        return len(data)


@pytest.mark.parametrize(
    ("sizes", "calls"),
    [
        ([1200] * 3 + [500], [("sendmsg", 4)]),
        ([1200, 500, 1200], [("sendmsg", 2), ("sendto", 1200)]),
        ([500, 1200], [("sendto", 500), ("sendto", 1200)]),
        ([1200] * 70, [("sendmsg", 54), ("sendmsg", 16)]),  # 54 x 1200 fill 64 KB
        ([100] * 70, [("sendmsg", 64), ("sendmsg", 6)]),  # at most 64 segments
    ],
)
def test_send_batch_groups_runs(sizes: list[int], calls: list[tuple[str, int]]) -> None:
    sock = RecordingSocket()

    sent = udp.send_batch(sock, [bytes(n) for n in sizes], ("192.0.2.1", 51820))  # type: ignore[arg-type]

    assert (sent, sock.calls) == (len(sizes), calls)


def test_send_batch_stops_trying_gso_after_eio() -> None:
    sock = RecordingSocket(gso_errno=errno.EIO)
    datagrams = [bytes(1200)] * 3

    assert udp.send_batch(sock, datagrams, ("192.0.2.1", 51820)) == 3  # type: ignore[arg-type]
    sock.gso_errno = None
    assert udp.send_batch(sock, datagrams, ("192.0.2.1", 51820)) == 3  # type: ignore[arg-type]

    assert sock.calls == [("sendto", 1200)] * 6


def test_send_batch_retries_gso_after_other_refusals() -> None:
    sock = RecordingSocket(gso_errno=errno.EINVAL)
    datagrams = [bytes(1200)] * 2

    udp.send_batch(sock, datagrams, ("192.0.2.1", 51820))  # type: ignore[arg-type]
    sock.gso_errno = None
    udp.send_batch(sock, datagrams, ("192.0.2.1", 51820))  # type: ignore[arg-type]

    assert sock.calls == [("sendto", 1200), ("sendto", 1200), ("sendmsg", 2)]
