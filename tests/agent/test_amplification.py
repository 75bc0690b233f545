"""A stranger on an agent's LAN sends it each pre-handshake message: nothing comes back
larger than what was sent (issue 15; the core's test is tests/node/test_amplification.py).
And the padding that takes keeps the previous release's LAN discovery working."""

from __future__ import annotations

import json
import sys
import time

import pytest

from tests.multipath.test_release_compat import previous_release
from whalescale.lab.mesh import LabMesh

pytestmark = pytest.mark.lab


def test_no_answer_to_a_stranger_outweighs_its_request(lab):
    hosts = lab.star(["anchor", "carol", "dave", "erin"])
    stranger = lab.host("stranger")
    # the stranger is on a network directly connected to the anchor: LAN hellos count
    lan = lab.link(hosts["anchor"], stranger)
    mesh = LabMesh(lab, keepalive_s=0)
    anchor = mesh.add_node(hosts["anchor"], anchor=True)
    # members whose agents never run; the stranger holds a copy of carol's key
    carol, dave, erin = (mesh.add_node(hosts[name]) for name in ("carol", "dave", "erin"))
    mesh.write_mesh()
    mesh.start("anchor")
    mesh.wait_up("anchor")

    out = stranger.run(
        sys.executable, "-m", "tests.agent.amplify", anchor.identity.public_b64,
        lan.addr_of(anchor.host), "51820", lan.addr_of(stranger), str(carol.key_path),
        dave.identity.public_b64, erin.identity.public_b64, timeout=60).stdout
    for what, sent, expected, answers in json.loads(out):
        assert all(size <= sent for size in answers), (what, sent, answers)
        assert sum(answers) == expected, (what, expected, answers)


# The last commit whose LAN_HELLO is unpadded (36 bytes): the previous release's.
UNPADDED_HELLO_RELEASE = "eeaca4f4c26b2b61be6d1355b71337a270292cc5"


@pytest.mark.parametrize("release", ["previous", "this"])
def test_a_previous_release_and_this_one_still_meet_on_a_lan(lab, tmp_path, release):
    """No anchor, no endpoint in the mesh file: only LAN hellos bring them together. The
    old node's 36-byte hello gets our 36-byte hello back (not an initiation, which would
    outweigh it), and that makes the old node send the initiation itself. (Control: two
    nodes of this release, padded hellos only.)"""
    old_host, new_host = lab.host("old"), lab.host("new")
    lab.link(old_host, new_host)
    mesh = LabMesh(lab, keepalive_s=5)
    old = mesh.add_node(old_host, static_endpoint=False)
    if release == "previous":
        old.python_path = str(previous_release(tmp_path, UNPADDED_HELLO_RELEASE))
    new = mesh.add_node(new_host, static_endpoint=False)
    mesh.start_all()
    deadline = time.monotonic() + 30  # hellos go every 10 s
    while not new_host.ping(old.tunnel_addr, count=1, timeout=1.0):
        assert time.monotonic() < deadline, old.proc.log() if old.proc else ""
    assert old_host.ping(new.tunnel_addr, count=2)
