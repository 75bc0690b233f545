"""The previous release and this one over two paths of different delay: they still talk.

The wire changed in this release: data may leave without a multipath trailer (pings and
pure ACKs, which skip the steady delay), backup addresses travel in a new control message
(PATH_ANNOUNCE_BACKUP) and held packets keep the counter they took when they came. A node
of the previous release gets its package from `git archive` of that commit and runs
beside a node of this tree, in real namespaces.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.multipath.test_multipath_lab import multipath_status
from whalescale.bench.links import EmulatedLinks, LinkSpec
from whalescale.lab.iperf import iperf_tcp
from whalescale.lab.mesh import LabMesh

pytestmark = pytest.mark.lab

# The last commit before this release's multipath wire changes.
PREVIOUS_RELEASE = "46e4d6183ca0273909c5d8a7474064f0402e64fd"
# The last commit before announcements left out addresses whose interface is gone.
BEFORE_GONE_ADDRESSES = "c71b1c0aa487097e9dae6dca2c0446a8f45f40ad"
REPO = Path(__file__).resolve().parents[2]


def previous_release(into: Path, commit: str = PREVIOUS_RELEASE) -> Path:
    """The `whalescale` package of a previous release, unpacked under `into`."""
    archive = into / "previous.tar"
    result = subprocess.run(["git", "-C", str(REPO), "archive", "-o", str(archive),
                             commit, "whalescale"], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"cannot read the previous release {commit[:12]} from git "
                    f"(a shallow clone?): {result.stderr.strip()}")
    (into / "previous").mkdir()
    subprocess.run(["tar", "-xf", str(archive), "-C", str(into / "previous")], check=True)
    return into / "previous"


def test_the_previous_release_and_this_one_talk_over_unequal_paths(lab, tmp_path):
    old_tree = previous_release(tmp_path)
    bench = EmulatedLinks(lab, [LinkSpec(rate_mbit=20, delay_ms=5.0),
                                LinkSpec(rate_mbit=20, delay_ms=20.0)])
    mesh = LabMesh(lab, keepalive_s=5)
    old = mesh.add_node(bench.left, interfaces=["path0", "path1"])
    old.python_path = str(old_tree)
    new = mesh.add_node(bench.right, interfaces=["path0", "path1"],
                        endpoint=f"{bench.links[0].right_addr}:51820")
    mesh.start_all()
    assert not (old_tree / "whalescale" / "multipath" / "traffic.py").exists()  # the old code
    # Pings (trailer-less from the new node) both ways.
    assert old.host.ping(new.tunnel_addr, count=3), old.proc.log() if old.proc else ""
    assert new.host.ping(old.tunnel_addr, count=3)
    # A TCP flow each way: data, and ACKs that the new node sends without a trailer.
    to_old = iperf_tcp(new.host, old.host, old.tunnel_addr, 3)
    to_new = iperf_tcp(old.host, new.host, new.tunnel_addr, 3)
    assert to_old.gbit_s * 1000 > 5 and to_new.gbit_s * 1000 > 5, (to_old, to_new)
    status = multipath_status(mesh, "right")
    assert status["active"], status
    assert status["reorder"]["late_drops"] <= 5, status["reorder"]


def test_a_previous_release_talks_on_while_the_new_nodes_interface_comes_and_goes(lab, tmp_path):
    """This release announces its paths without an address whose interface is gone (and
    an empty announcement when all of a kind are); a previous release learns nothing from
    what is left out and finds those paths dead by their timeouts, as it always did."""
    old_tree = previous_release(tmp_path, BEFORE_GONE_ADDRESSES)
    bench = EmulatedLinks(lab, [LinkSpec(rate_mbit=20), LinkSpec(rate_mbit=20)])
    mesh = LabMesh(lab, keepalive_s=5)
    old = mesh.add_node(bench.left, interfaces=["path0", "path1"])
    old.python_path = str(old_tree)
    new = mesh.add_node(bench.right, interfaces=["path1"],
                        endpoint=f"{bench.links[0].right_addr}:51820")
    new.backup_interfaces = ("path0",)
    mesh.start_all()
    assert not (old_tree / "whalescale" / "netlink.py").exists()  # the old code
    assert old.host.ping(new.tunnel_addr, count=3), old.proc.log() if old.proc else ""
    new.host.run("ip", "link", "set", "path1", "down")  # its only primary: announced empty
    assert new.host.ping(old.tunnel_addr, count=3, timeout=2)  # over the backup
    assert old.host.ping(new.tunnel_addr, count=3, timeout=2)
    new.host.run("ip", "link", "set", "path1", "up")
    deadline = time.monotonic() + 10
    while not all(p["state"] == "healthy" for p in multipath_status(mesh, "right")["paths"]):
        assert time.monotonic() < deadline, multipath_status(mesh, "right")
        time.sleep(0.2)
    assert old.host.ping(new.tunnel_addr, count=3) and new.host.ping(old.tunnel_addr, count=3)
    assert new.proc is not None and "multipath: " in new.proc.log()
    assert "gone (interface down or address removed)" in new.proc.log()
