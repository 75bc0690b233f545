"""A stranger on an agent's LAN sends it each pre-handshake message: nothing comes back
larger than what was sent (issue 15; the core's test is tests/node/test_amplification.py)."""

from __future__ import annotations

import json
import sys

import pytest

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
