"""TunDevice against the real kernel: a TCP echo between two namespaces through two TUNs."""

import json
import re
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


CONVERGE = """
import sys
from whalescale.tun.device import TunDevice
tun = TunDevice.open("wsconv0")
tun.configure(["100.96.0.1/32", "fd77::1/128"], {"100.96.0.2/32": 1420, "100.96.0.3/32": 1420})
tun.configure(["100.96.0.9/32", "fd77::1/128"],
              {"100.96.0.3/32": 1428, "100.96.1.0/24": 1380, "fd77::2/128": 1380})
import subprocess
print(subprocess.run(["ip", "-o", "addr", "show", "dev", "wsconv0"], capture_output=True,
                     text=True).stdout)
print(subprocess.run(["ip", "-o", "route", "show", "dev", "wsconv0"], capture_output=True,
                     text=True).stdout)
print(subprocess.run(["ip", "-o", "-6", "route", "show", "dev", "wsconv0"], capture_output=True,
                     text=True).stdout)
print(subprocess.run(["ip", "-o", "link", "show", "dev", "wsconv0"], capture_output=True,
                     text=True).stdout)
"""


def test_configure_converges_on_the_wanted_addresses_and_routes(lab: Lab) -> None:
    host = lab.host("conv")
    out = host.run(sys.executable, "-c", CONVERGE, timeout=30).stdout
    assert "100.96.0.9/32" in out and "100.96.0.1/32" not in out and "fd77::1/128" in out
    assert "100.96.0.2 " not in out
    assert "100.96.0.3 " in out and "100.96.1.0/24 " in out and "fd77::2 " in out
    # each route carries its own MTU; the device the largest
    assert re.search(r"100\.96\.0\.3 .*mtu 1428", out)
    assert re.search(r"100\.96\.1\.0/24 .*mtu 1380", out)
    assert re.search(r"fd77::2 .*mtu 1380", out)
    assert re.search(r"wsconv0: .* mtu 1428 ", out)


# A TUN device node of mode 0600, bound over /dev/net/tun in a mount namespace of its own
# (the machine's stays as it is), then an unprivileged user opens it: what a DynamicUser=
# service meets on a machine without udev.
_DENIED_SCRIPT = """\
set -e
mknod -m 0600 "$1/tun" c 10 200
mount --bind "$1/tun" /dev/net/tun
exec setpriv --reuid=65534 --regid=65534 --clear-groups "$2" -c '
from whalescale.tun.device import TunDevice
TunDevice.open("wsdenied0")'
"""


def test_a_tun_device_the_user_cannot_open_is_one_line_saying_why_and_what_to_do(
    lab_skip_reason: None, tmp_path: Path,
) -> None:
    tmp_path.chmod(0o755)
    result = subprocess.run(
        ["unshare", "--mount", "sh", "-c", _DENIED_SCRIPT, "sh", str(tmp_path), sys.executable],
        capture_output=True, text=True, timeout=30, env={"PYTHONPATH": str(ROOT)},
    )
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("whalescale.tun.device.TunError: [Errno 13] cannot open "
                           "/dev/net/tun (mode 0600, owner uid 0) as uid 65534: "), last
    assert "chmod 0666 /dev/net/tun" in last and "z /dev/net/tun 0666 - - -" in last
