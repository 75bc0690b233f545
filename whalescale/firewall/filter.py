"""The firewall of one node: judges what the tunnel delivers, remembers what we send.

Theory of operation (sans-I/O; the node, node/node.py, is its one user):
- `load(mesh, me, owner)` compiles our node's rules once per mesh (re)load; `owner`
  names the peer a tunnel address belongs to (the engine's cryptokey routing, which
  already checked on entry that a packet's source lies in its sender's allowed IPs:
  the owner of the source address is the sender, a subnet behind a router is that
  router, a vanilla WireGuard peer is its `[[wireguard]]` name).
- `admit(packets, now)` returns the packets that may go to the TUN; `track(packets,
  now)` takes every packet we send into the tunnel (flows.py).
- A node whose rules cannot drop anything (none, default allow) is not `active`: the
  node then calls neither, and the tunnel pays nothing.

Per packet, `admit` looks up the rules' decision for the packet's flow in a cache (the
5-tuple, or the addresses alone for a packet without ports): an allowed flow costs a
slice and a dict lookup. A miss runs the rules once for the flow. Only a packet the
rules deny is parsed further, to see whether it answers a flow of ours. The cache is
cleared on reload (new rules) and when it holds CACHE_FLOWS flows, which bounds it.
Tracked flows survive a reload: sessions and connections carry on under new rules.

Drops are counted by deciding rule, and logged: the first drop per rule and source at
info, then at most one line per LOG_EVERY_S with how many more there were.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

from ..config.schema import Mesh, Node
from .flows import FlowKey, Flows, answered_key, sent_key
from .packet import ICMP, NO_PORT, TCP, UDP, Header, parse
from .rules import DEFAULT, Ruleset

Owner = Callable[[bytes], str | None]  # packed address -> peer name
CACHE_FLOWS = 8192  # decisions cached; ~200 bytes each
LOG_EVERY_S = 60.0
EXPIRE_EVERY_S = 60.0  # idle flows swept this often (the shortest timeout is 30 s)
MALFORMED = "malformed"  # a drop counted beside the rules': no readable IP header
_PROTO_NAMES = {TCP: "tcp", UDP: "udp", ICMP: "icmp"}
_TRANSPORTS = (TCP, UDP)


def _key(header: Header) -> FlowKey:
    """A packet's flow as the rules see it: the 5-tuple, or the addresses alone."""
    if header.proto in _TRANSPORTS and header.sport != NO_PORT:
        ports = header.sport.to_bytes(2, "big") + header.dport.to_bytes(2, "big")
        return header.proto, header.src + header.dst + ports
    return header.proto, header.src + header.dst


class Firewall:
    def __init__(self) -> None:
        self.ruleset = Ruleset((), default_allow=True)
        self.active = False
        self.flows = Flows()
        self.drops: Counter[int | str] = Counter()  # by rule index, DEFAULT or MALFORMED
        self.log_lines: list[tuple[int, str]] = []
        self._owner: Owner = lambda packed: None
        self._owners: dict[bytes, str | None] = {}
        self._decisions: dict[FlowKey, int | bool] = {}  # True: allowed; else the rule's index
        self._logged: dict[tuple[int, str | None], tuple[float, int]] = {}
        self._next_expiry = 0.0

    def load(self, mesh: Mesh, me: Node, owner: Owner) -> None:
        """Our node's rules in `mesh`; what was cached of the old ones goes."""
        self.ruleset = Ruleset.of(mesh, me.firewall, me.firewall_default)
        self.active = not self.ruleset.allows_everything
        self.drops = Counter({k: n for k, n in self.drops.items() if k == MALFORMED})
        self._owner = owner
        self._logged.clear()
        self.owners_changed()

    def owners_changed(self) -> None:
        """Which peer owns which address changed (a reload; a standby route taking over):
        the sources and decisions cached under the old owners go."""
        self._owners.clear()
        self._decisions.clear()

    # ----- the packets -----------------------------------------------------------------------

    def track(self, packets: list[bytes], now: float) -> None:
        """Packets we send into the tunnel (at least 20 bytes each, as the engine routes
        them): their flows' replies will pass."""
        flows = self.flows
        seen = flows.seen
        for packet in packets:
            # TCP or UDP right after an IPv4 header without options (not a fragment) or
            # an IPv6 header: the flow key is the packet's bytes as they stand (flows.py)
            version = packet[0]
            if version == 0x45 and packet[9] in _TRANSPORTS \
                    and not (packet[6] & 0x3F or packet[7]) and len(packet) >= 24:
                key: FlowKey | None = (packet[9], packet[12:24])
            elif version >> 4 == 6 and packet[6] in _TRANSPORTS and len(packet) >= 44:
                key = (packet[6], packet[8:44])
            else:
                header = parse(packet)
                key = sent_key(header) if header is not None else None
            if key in seen:
                seen[key] = now
            elif key is not None:
                flows.sent(key, now)
        if now >= self._next_expiry:  # the table stays small without waiting to be full
            flows.expire(now)
            self._next_expiry = now + EXPIRE_EVERY_S

    def admit(self, packets: list[bytes], now: float) -> list[bytes]:
        """The packets from the tunnel the rules (or our flows) let reach the TUN. Each at
        least 20 bytes long, as the engine delivers them (it checks the IP header's length)."""
        allowed = self._decisions.get
        admitted = []
        for packet in packets:
            # The hot path, inlined: IPv4 without options and not a fragment, or IPv6 with
            # TCP or UDP right after its header. The bytes sliced, with the protocol, hold
            # all the rules read (source, protocol, TCP/UDP destination port): they key the
            # flow's cached decision. (Cut short, they key a packet without ports.)
            version = packet[0]
            if version == 0x45 and not (packet[6] & 0x3F or packet[7]):
                key: FlowKey | None = (packet[9], packet[12:24])
            elif version >> 4 == 6 and packet[6] in _TRANSPORTS:
                key = (packet[6], packet[8:44])
            else:
                key = None
            if key is not None and allowed(key) is True:
                admitted.append(packet)
                continue
            if self._judge(packet, key, now):
                admitted.append(packet)
        return admitted

    def _judge(self, packet: bytes, key: FlowKey | None, now: float) -> bool:
        """A packet off the hot path: the rules' decision for its flow (cached), and if
        that is to deny, whether it answers a flow of ours; a drop is counted."""
        header = parse(packet)
        if header is None:
            self.drops[MALFORMED] += 1
            return False
        if key is None:
            key = _key(header)
        decisions = self._decisions
        decision = decisions.get(key)
        if decision is None:
            decision = self._decide(header)
            if len(decisions) >= CACHE_FLOWS:
                decisions.clear()
            decisions[key] = decision
        if decision is True:
            return True
        reply = answered_key(packet, header)
        if reply is not None and self.flows.answers(reply, now):
            return True
        self._dropped(int(decision), header, now)
        return False

    def _decide(self, header: Header) -> int | bool:
        source = self._source(header.src)
        decision = self.ruleset.decide(source, header.proto,
                                       header.dport if header.proto in _TRANSPORTS
                                       else NO_PORT)
        return True if self.ruleset.allows(decision) else decision

    def _source(self, packed: bytes) -> str | None:
        try:
            return self._owners[packed]
        except KeyError:
            name = self._owners[packed] = self._owner(packed)
            return name

    # ----- counting and telling ----------------------------------------------------------------

    def _dropped(self, decision: int, header: Header, now: float) -> None:
        self.drops[decision] += 1
        source = self._source(header.src)
        at, since = self._logged.get((decision, source), (None, 0))
        if at is not None and now - at < LOG_EVERY_S:
            self._logged[decision, source] = (at, since + 1)
            return
        self._logged[decision, source] = (now, 0)
        more = f" ({since} more since the last line)" if since else ""
        self.log_lines.append((logging.INFO, f"firewall: dropped {_describe(header, source)} "
                               f"by {self._decider(decision)}{more}"))

    def _decider(self, decision: int) -> str:
        if decision == DEFAULT:
            return "the default (firewall_default = \"deny\")"
        return f"rule {decision} ({self.ruleset.rules[decision].rule})"

    def status(self) -> dict[str, Any]:
        """The rules in force, what each dropped, the flows tracked (`whalescale status`)."""
        return {
            "active": self.active,
            "default": "allow" if self.ruleset.default_allow else "deny",
            "rules": [{"index": i, "rule": str(r.rule), "drops": self.drops[i]}
                      for i, r in enumerate(self.ruleset.rules)],
            "default_drops": self.drops[DEFAULT],
            "malformed_drops": self.drops[MALFORMED],
            "flows": len(self.flows),
            "flows_evicted": self.flows.evicted,
        }


def _describe(header: Header, source: str | None) -> str:
    """`tcp from laptop (100.96.0.2) to port 22`, for the log."""
    proto = _PROTO_NAMES.get(header.proto, f"protocol {header.proto}")
    address = ipaddress.ip_address(header.src)
    who = f"{source} ({address})" if source else f"{address} (no peer's address)"
    where = f" to port {header.dport}" if header.proto in _TRANSPORTS \
        and header.dport != NO_PORT else ""
    return f"{proto} from {who}{where}"
