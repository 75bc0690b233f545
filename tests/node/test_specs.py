"""What the node tells the engine about its peers (node/specs.py)."""

from __future__ import annotations

from tests.config.meshfile import VALID, edit
from whalescale.config import parse_mesh
from whalescale.config.load import DEFAULT_KEEPALIVE_S
from whalescale.node.names import Names
from whalescale.node.specs import peer_specs


def keepalives(text: str, me: str) -> dict[str, float]:
    mesh = parse_mesh(text, "mesh.toml")
    node = next(n for n in mesh.nodes if n.name == me)
    return {spec.name: spec.keepalive_s for spec in peer_specs(mesh, node, Names(mesh).expand)}


def test_every_peer_gets_the_mesh_keepalive():
    assert keepalives(VALID, "anchor-1") == {"laptop": 25.0, "old-router": 15.0}


def test_anchors_keep_each_other_alive_when_the_mesh_has_no_keepalive():
    text = edit("keepalive_s = 25\n", "keepalive_s = 0\n")
    assert keepalives(text, "anchor-1")["laptop"] == 0.0  # laptop is no anchor
    both = edit('relay = true', 'relay = true\nanchor = true', text)
    assert keepalives(both, "anchor-1")["laptop"] == DEFAULT_KEEPALIVE_S
    assert keepalives(both, "laptop")["anchor-1"] == DEFAULT_KEEPALIVE_S
