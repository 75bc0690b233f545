"""`bench tunnel --firewall-rules N`: the receiving node's N rules, every one met by the
bench's flow, which the last allows."""

from __future__ import annotations

from tests.config.meshfile import VALID, edit
from whalescale.bench.tunnel import firewall_lines
from whalescale.config import parse_mesh
from whalescale.firewall.packet import TCP
from whalescale.firewall.rules import Ruleset
from whalescale.lab.iperf import IPERF_PORT


def test_the_flow_meets_every_rule_and_the_last_allows_it() -> None:
    lines = "\n".join(firewall_lines(50, "anchor-1"))
    mesh = parse_mesh(edit("relay = true\n", f"relay = true\n{lines}\n", VALID), "mesh.toml")
    node = mesh.node_by_name("laptop")
    assert node is not None
    ruleset = Ruleset.of(mesh, node.firewall, node.firewall_default)
    assert len(ruleset.rules) == 50 and not ruleset.allows_everything
    assert ruleset.decide("anchor-1", TCP, IPERF_PORT) == 49
    assert ruleset.allows(49)
