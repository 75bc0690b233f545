"""The rule matcher (firewall/rules.py): the first rule that matches decides."""

from __future__ import annotations

import pytest

from tests.firewall.mesh import mesh
from whalescale.config.schema import Rule
from whalescale.firewall.packet import ICMP, NO_PORT, TCP, UDP
from whalescale.firewall.rules import DEFAULT, Ruleset

RULES = (
    Rule("allow", ("laptop",), "tcp", ((22, 22),)),           # 0
    Rule("deny", ("kids",), "tcp", ((22, 22), (8000, 8100))),  # 1
    Rule("allow", ("laptops",), "udp", ()),                    # 2
    Rule("deny", (), "icmp", ()),                              # 3
    Rule("allow", ("printer",), "tcp", ((631, 631),)),         # 4
)


@pytest.mark.parametrize(("source", "proto", "dport", "decision"), [
    ("laptop", TCP, 22, 0),  # the laptop's own rule comes first
    ("tablet", TCP, 22, 1),  # a kid, even though also in laptops
    ("tablet", TCP, 8000, 1), ("tablet", TCP, 8100, 1),  # ranges are inclusive
    ("tablet", TCP, 8101, DEFAULT), ("tablet", TCP, 7999, DEFAULT),
    ("tablet", UDP, 22, 2),  # group laptops, any port
    ("laptop", UDP, NO_PORT, 2),  # a later fragment matches a rule without ports
    ("tablet", TCP, NO_PORT, DEFAULT),  # ... and no rule with ports
    ("laptop", ICMP, NO_PORT, 3), ("printer", ICMP, NO_PORT, 3),  # no sources: anyone
    ("printer", TCP, 631, 4),  # a vanilla WireGuard peer by its name
    ("printer", UDP, 631, DEFAULT),  # it has no groups
    (None, TCP, 631, DEFAULT),  # a source no peer owns matches named rules never
])
def test_the_first_matching_rule_decides(source: str | None, proto: int, dport: int,
                                         decision: int) -> None:
    ruleset = Ruleset.of(mesh(), RULES, "deny")
    assert ruleset.decide(source, proto, dport) == decision


def test_the_default_decides_what_no_rule_matched() -> None:
    assert Ruleset.of(mesh(), RULES, "deny").allows(DEFAULT) is False
    assert Ruleset.of(mesh(), RULES, "allow").allows(DEFAULT) is True
    assert Ruleset.of(mesh(), RULES, "allow").allows(1) is False


@pytest.mark.parametrize(("rules", "default", "anything_to_drop"), [
    ((), "allow", False),
    ((Rule("allow", ("laptop",)),), "allow", False),  # allows only: nothing can drop
    ((Rule("deny", ("laptop",)),), "allow", True),
    ((), "deny", True),
])
def test_a_firewall_that_can_drop_nothing_is_not_consulted(rules: tuple[Rule, ...],
                                                          default: str,
                                                          anything_to_drop: bool) -> None:
    assert Ruleset.of(mesh(), rules, default).allows_everything is not anything_to_drop
