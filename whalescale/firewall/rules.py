"""A node's inbound rules compiled for matching: the first rule that matches decides.

A rule matches a packet when its source node is one of the rule's sources (a node's
name, or a group's members; no sources: any node), its protocol is the rule's ("icmp"
is ICMP for IPv4 and ICMPv6 for IPv6) and its destination port lies in one of the
rule's ranges (no ranges: any port). No rule matched: the node's `firewall_default`.

Packets without a port (non-first fragments, a truncated transport header) match only
rules without ports, as in nebula. That is safe both ways: a deny rule with ports that
misses a later fragment lets through a piece the kernel cannot reassemble, its first
fragment (which has the ports) having been dropped; an allow rule with ports under
`firewall_default = "deny"` drops the later fragments of a fragmented datagram to an
allowed port, so a node expecting fragmented UDP from a peer allows that peer without
ports.
"""

from __future__ import annotations

import attrs

from ..config.schema import Mesh, Rule
from .packet import ICMP, NO_PORT, TCP, UDP

DEFAULT = -1  # the decision of `firewall_default`, beside rule indices 0, 1, ...
_PROTOCOLS: dict[str, int | None] = {"any": None, "tcp": TCP, "udp": UDP, "icmp": ICMP}


@attrs.frozen
class CompiledRule:
    rule: Rule
    allow: bool
    sources: frozenset[str] | None  # node and WireGuard peer names; None: any
    proto: int | None  # None: any
    ports: tuple[tuple[int, int], ...]  # empty: any

    def matches(self, source: str | None, proto: int, dport: int) -> bool:
        if self.sources is not None and source not in self.sources:
            return False
        if self.proto is not None and proto != self.proto:
            return False
        return not self.ports or (dport != NO_PORT
                                  and any(lo <= dport <= hi for lo, hi in self.ports))


@attrs.frozen
class Ruleset:
    rules: tuple[CompiledRule, ...]
    default_allow: bool

    @classmethod
    def of(cls, mesh: Mesh, rules: tuple[Rule, ...], default: str) -> Ruleset:
        """`rules` with group names replaced by their members in `mesh`."""
        members: dict[str, set[str]] = {}
        for node in mesh.nodes:
            for group in node.groups:
                members.setdefault(group, set()).add(node.name)
        return cls(tuple(
            CompiledRule(rule, rule.action == "allow",
                         frozenset(n for s in rule.sources for n in members.get(s, {s}))
                         if rule.sources else None,
                         _PROTOCOLS[rule.proto], rule.ports)
            for rule in rules), default == "allow")

    @property
    def allows_everything(self) -> bool:
        """No rule can drop anything: the firewall need not look at packets at all."""
        return self.default_allow and all(r.allow for r in self.rules)

    def decide(self, source: str | None, proto: int, dport: int) -> int:
        """The index of the first rule matching, or DEFAULT."""
        for index, rule in enumerate(self.rules):
            if rule.matches(source, proto, dport):
                return index
        return DEFAULT

    def allows(self, decision: int) -> bool:
        return self.default_allow if decision == DEFAULT else self.rules[decision].allow
