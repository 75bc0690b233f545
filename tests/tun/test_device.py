"""TunDevice against the real kernel: a TCP echo between two namespaces through two TUNs."""

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.tun.packets import assert_checksums_valid

ROOT = Path(__file__).resolve().parents[2]
MTU = 1420

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/dev/net/tun"),
    reason="needs root and /dev/net/tun",
)


@pytest.fixture
def two_namespaces() -> Iterator[tuple[str, str]]:
    """Two fresh, empty network namespaces, deleted afterwards whatever happens."""
    names = [f"wstest{secrets.token_hex(3)}{side}" for side in "ab"]
    created = []
    try:
        for name in names:
            subprocess.run(["ip", "netns", "add", name], check=True)
            created.append(name)
        yield names[0], names[1]
    finally:
        for name in created:
            subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.mark.parametrize("offload", ["offload", "plain"])
def test_tcp_echo_crosses_two_relayed_tuns(two_namespaces: tuple[str, str], offload: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tests.tun.relay_in_netns", *two_namespaces, offload],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
    )
    report = json.loads(done.stdout)

    assert report["offload"] == [offload == "offload"] * 2
    assert report["echo_ok"], f"echo returned {report['received']} bytes"
    assert report["drops"] == {}
    # Everything read is a plain IP packet within the MTU, checksums complete.
    assert report["sample"]
    for packet in map(bytes.fromhex, report["sample"]):
        assert len(packet) <= MTU
        assert_checksums_valid(packet)
    if offload == "offload":
        # Merged super-packets were written, and the kernel took them: the echo matched.
        assert report["gso_frames_written"] > 0
