"""TunDevice against the real kernel: a TCP echo between two namespaces through two TUNs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tun.packets import assert_checksums_valid
from whalescale.lab import Lab

ROOT = Path(__file__).resolve().parents[2]
MTU = 1420

pytestmark = pytest.mark.lab


@pytest.fixture
def two_namespaces(lab: Lab) -> tuple[str, str]:
    """Two fresh, empty network namespaces of the lab, deleted at its teardown."""
    return lab.host("a").netns, lab.host("b").netns


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
