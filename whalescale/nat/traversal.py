"""NAT traversal for one node, sans-I/O: the session engine meets the bootstrap, NAT type,
punching and relay cores (design §3.5, §3.7, §3.8).

Theory of operation:
- The node (node/node.py) hands over what the engine did not take on the shared
  port (`datagrams`; wire/port.py tells them apart): PATH_PROBEs are answered by
  every node, PATH_PROBE_REPLYs feed the NAT type, relay-tagged WireGuard
  messages are forwarded (an anchor) or untagged and returned for the engine
  (an end). Bootstrap datagrams to send
  are in `outbox`.
- `probe(routes, now)` probes the anchors (the OS knows which local address
  routes to each: the node asks the shell); `infer` over the latest observations gives `report`.
- Control bodies of kind TRAVERSAL arrive by `control(peer, body, now)`: punch
  messages (types < 16) and relay messages (16..). An anchor coordinates
  punches and relays; an end punches and uses relays.
- `tick(now)` (once a second, and at `tick_at` when something it acts on
  changed: an anchor came up, the NAT type is known, a peer fell silent)
  asks an anchor to coordinate a punch for every whalescale peer we have no
  answering session with (at once, then backoff 1 s doubling to 60 s), and tells
  the anchors our NAT info when it changed.
- A direct session whose data meets silence, or whose steady inbound data stops
  (`PeerUnanswered`: then no answer to a PING either, about a second in all; a NAT
  rebinding, one side moved) counts as not answering: the anchors are re-probed and
  a punch requested at once, instead of waiting out the liveness window (three
  keepalives). An anchor that sees a member's data from a new source tells it
  (SEEN_AT), and the member looks for new paths to all its peers at once.
- Punch `Initiate`s become the peer's own WireGuard initiation sent to the
  punched endpoint (`Peer.punch`); a relay up or down is a command to the peer
  (`Peer.relayed`, `Peer.unrelayed`: its endpoint is the relay alias while up),
  which the node translates with `relay_out` on the way out. LAN discovery
  tells the peer where it heard it (`Peer.on_lan`). Nothing here writes a
  peer's endpoints directly (session/endpoints.py owns them).
- What happened and why, in words: `log_lines`, which the node logs.
- `engine_events` learns of completed handshakes: a direct one ends punching
  and demotes a relay to standby (relay.py's upgrade rule).
"""

from __future__ import annotations

import ipaddress
from collections import Counter, deque
from collections.abc import Callable, Iterable

import attrs

from ..session import events
from ..session.engine import Engine
from ..session.peer import Peer
from ..wire import control
from ..wire.port import BOOTSTRAP_MAGIC, channel_of_alias, endpoint_text, relay_alias
from . import bootstrap, relay
from .bootstrap import Addr, Observation
from .lan import LanDiscovery
from .nattype import Filtering, NatReport, NatType, infer
from .portmap import Mapping
from .punch import (
    Initiate,
    PunchCoordinator,
    Puncher,
    PunchState,
    SeenElsewhere,
    UseRelay,
)
from .punch_messages import MAX_CANDIDATES, Candidate, CandidateKind, NatInfo

MAX_OBSERVATIONS = 32
PROBE_EVERY_S = 30.0  # PATH_PROBEs to the anchors: our NAT type and public endpoint
PROBE_RETRY_S = 0.5  # after an unanswered probe (an anchor starting, a lost datagram)
# Give the first probes this long to report the NAT type before punching blind, and
# while probes are still out (anchors starting too) at most NAT_TYPE_WAIT_MAX_S: a plan
# made blind may punch for PUNCH_FOR_S where the NAT type would have said "relay".
NAT_TYPE_WAIT_S = 3.0
NAT_TYPE_WAIT_MAX_S = 8.0
REQUEST_FIRST_S = 1.0  # punch requests for peers out of reach: at once, then 1 s doubling to 60 s
REQUEST_MAX_S = 60.0
# Between the attempts of one punch, best first: long enough for a LAN or IPv6 round trip.
ATTEMPT_HEAD_START_S = 0.3
# One more direct try this soon after a relay comes up: the plan that chose it may have
# been made before the peer's NAT info reached the anchor (everyone starting at once).
RELAY_SECOND_LOOK_S = 5.0
# A peer fell silent: ask for a punch this much later (our keepalives reach the anchors).
SILENCE_SETTLE_S = 0.3
SILENT_RETRY_FOR_S = 30.0  # then punch requests for it back off as for any other peer
_RELAY_FIRST_TYPE = min(relay.MessageType)


@attrs.define
class _Punching:
    initiate: Initiate
    next_at: float


class Traversal:
    def __init__(self, engine: Engine, anchors: Iterable[bytes], *, me: bytes,
                 is_anchor: bool, random_bytes: Callable[[int], bytes], now: float) -> None:
        """The engine's whalescale peers are the mesh's other nodes (PeerSpec.node_id);
        `anchors`: the node IDs of the anchors."""
        self.engine = engine
        self.me = me
        self.is_anchor = is_anchor
        self.started = now
        self.responder = bootstrap.Responder()
        self.prober = bootstrap.Prober(random_bytes=random_bytes)
        self.observations: deque[Observation] = deque(maxlen=MAX_OBSERVATIONS)
        self.report = NatReport(NatType.UNKNOWN)
        self.mapping: Mapping | None = None
        self._local_candidates: tuple[Candidate, ...] = ()
        self._route_local: dict[Addr, Addr] = {}  # probe target -> our address towards it
        self.lan = LanDiscovery(me, random_bytes)
        self.puncher = Puncher(me, lan_discovered=self.lan.seen.__contains__,
                               direct_at=self._direct_at)
        self.coordinator = PunchCoordinator((), self._endpoint_of, random_bytes=random_bytes)
        self.relays = relay.RelayTable((), self._endpoint_of, random_bytes=random_bytes)
        self.relay_client = relay.RelayClient(accept=self._accept_relay,
                                              anchor_endpoint=self._endpoint_of)
        self.outbox: list[tuple[bytes, Addr]] = []
        self.log_lines: list[str] = []  # what happened and why, for the node to log
        self.tick_at: float | None = None  # something `tick` acts on changed: tick then
        self.counters: Counter[str] = Counter()
        self._punches: list[_Punching] = []
        self._next_request: dict[bytes, float] = {}
        self._backoff: dict[bytes, float] = {}
        self._info_told: dict[bytes, NatInfo] = {}  # anchor -> the info it has from us
        self._next_probe = now
        self._last_facts = NatInfo()
        self._second_look: dict[bytes, float] = {}  # relayed peer -> when to try direct
        self._silent: dict[bytes, float] = {}  # peer -> since when it meets our data with silence
        self.set_nodes(anchors)

    def set_nodes(self, anchors: Iterable[bytes]) -> None:
        """The engine's peers are those of a (re)loaded mesh file."""
        self.anchors = frozenset(anchors) - {self.me}
        members = set(self.engine.node_ids) | {self.me}
        self.coordinator.set_members(members)
        self.relays.members = frozenset(members)

    # ----- lookups ----------------------------------------------------------------

    def _peer(self, node_id: bytes) -> Peer | None:
        return self.engine.peer_by_id(node_id)

    def _live(self, peer: Peer, now: float) -> bool:
        return peer.current is not None and peer.reachable(now)

    def _endpoint_of(self, node_id: bytes) -> Addr | None:
        """Where our session with `node_id` sends now (None: no session)."""
        peer = self._peer(node_id)
        return peer.endpoint if peer is not None and peer.current is not None else None

    def live_anchors(self, now: float) -> list[bytes]:
        return [a for a in self.anchors if (p := self._peer(a)) is not None and self._live(p, now)]

    def _accept_relay(self, node_id: bytes) -> bool:
        return self.engine.peer_by_id(node_id) is not None and not self._on_direct_path(node_id)

    def _direct_at(self, node_id: bytes) -> Addr | None:
        """Where our session with the peer sends, if on a direct path (see below)."""
        return self._endpoint_of(node_id) if self._on_direct_path(node_id) else None

    def _on_direct_path(self, node_id: bytes) -> bool:
        """Our session with the peer runs on a direct path and nothing since made us look
        for another: a relay the peer opened while its punch ran must not pull it off."""
        peer = self._peer(node_id)
        return (peer is not None and peer.current is not None and peer.endpoint is not None
                and not channel_of_alias(peer.endpoint) and node_id not in self._silent
                and self.puncher.state(node_id) in (None, PunchState.DIRECT))

    # ----- what we know of ourselves --------------------------------------------------

    def set_local_candidates(self, lan: list[tuple[str, int]], ipv6: list[str],
                             port: int) -> None:
        """Our LAN addresses (with prefix lengths) and global IPv6 addresses."""
        self.lan.set_networks(lan)
        self._local_candidates = (
            *(Candidate(CandidateKind.IPV6, host, port) for host in ipv6),
            *(Candidate(CandidateKind.LAN, host, port, prefix) for host, prefix in lan))

    def set_mapping(self, mapping: Mapping | None) -> None:
        if mapping != self.mapping:
            external = endpoint_text(mapping.external) if mapping else "none"
            self.log_lines.append(f"port mapping: {external}")
        self.mapping = mapping

    def info(self) -> NatInfo:
        """What we know of ourselves. OBSERVED is the latest anchor's view even when the
        NAT type is unknown: both ends plan a punch from the same facts (punch.plan), and
        the anchor coordinating it tells our peer what it sees of us, not what we say."""
        mapped = (Candidate(CandidateKind.MAPPED, *self.mapping.external),) \
            if self.mapping is not None else ()
        ipv4 = self._ipv4_observations()
        observed = (Candidate(CandidateKind.OBSERVED, *ipv4[-1].observed),) if ipv4 else ()
        filtering = Filtering.ENDPOINT_INDEPENDENT if mapped else Filtering.UNKNOWN
        return NatInfo(self.report.nat_type, filtering,
                       (*observed, *mapped, *self._local_candidates)[:MAX_CANDIDATES])

    def _ipv4_observations(self) -> list[Observation]:
        return [o for o in self.observations if ipaddress.ip_address(o.local[0]).version == 4]

    def public_endpoints(self) -> list[Addr]:
        """Endpoints anyone can send to: a port mapping, and what anchors see of a public
        or endpoint-independent (cone) mapping. Worth publishing in our gossip record."""
        found = [self.mapping.external] if self.mapping is not None else []
        if self.report.observed is not None:
            found.append(self.report.observed)
        return list(dict.fromkeys(found))

    # ----- bootstrap -------------------------------------------------------------------

    def probe_targets(self) -> list[Addr]:
        """The anchors' endpoints: they answer PATH_PROBEs on the mesh port."""
        targets: list[Addr] = []
        for anchor in sorted(self.anchors):
            peer = self._peer(anchor)
            if peer is not None:
                targets += [e for e in (*peer.spec.endpoints, peer.endpoint)
                            if e is not None and not channel_of_alias(e)]
        return list(dict.fromkeys(targets))

    def _tick_by(self, at: float) -> None:
        self.tick_at = at if self.tick_at is None else min(self.tick_at, at)

    def probe_soon(self, now: float) -> None:
        """Our addresses changed, or an anchor came up: probe at the next tick."""
        self._next_probe = min(self._next_probe, now)

    def probe_due(self, now: float) -> bool:
        return not self.is_anchor and now >= self._next_probe

    def probe(self, routes: list[tuple[Addr, Addr]], now: float) -> None:
        """Probe each (local address, target); the reply is matched to that local address."""
        if routes:
            self._next_probe = now + PROBE_EVERY_S
        for local, target in routes:
            self._route_local[target] = local
            self.prober.probe(local, [target], now)
        self.outbox += self.prober.outbox
        self.prober.outbox = []

    def datagrams(self, batch: list[tuple[bytes, Addr]], now: float) -> list[tuple[bytes, Addr]]:
        """Unclaimed datagrams; returns the relayed ones, untagged, for the engine."""
        for_engine = []
        for data, source in batch:
            if data[0] == BOOTSTRAP_MAGIC:
                self._bootstrap(data, source, now)
            elif self.is_anchor:
                forwarded = self.relays.forward(data, source, now)
                if forwarded is not None:
                    self.outbox.append(forwarded)
            elif (untagged := self.relay_client.incoming(data, source)) is not None:
                for_engine.append(untagged)
        return for_engine

    def _bootstrap(self, data: bytes, source: Addr, now: float) -> None:
        if len(data) > 2 and data[2] == bootstrap.MessageType.PATH_PROBE:
            self.responder.receive(data, source, now)
            self.outbox += self.responder.outbox
            self.responder.outbox = []
            return
        if len(data) > 2 and data[2] == bootstrap.MessageType.LAN_HELLO:
            self._lan_hello(data, source, now)
            return
        local = self._route_local.get(source)
        if local is None:
            self.counters["unsolicited_reply"] += 1
            return
        self.prober.receive(data, source, local, now)
        self._observed(now)

    def _observed(self, now: float) -> None:
        for event in self.prober.events:
            if isinstance(event, Observation):
                self.observations.append(event)
        self.prober.events = []
        ipv4 = self._ipv4_observations()
        if not ipv4:
            return
        report = infer(list(self.observations), ipv4[-1].local)
        if report != self.report:
            self.log_lines.append(f"NAT type {report.nat_type.name.lower()}"
                              + (f", seen as {endpoint_text(report.observed)}"
                                 if report.observed else "")
                              + f" ({report.targets} anchors answered)")
            self.report = report
            self._tick_by(now)  # punch requests wait for it

    # ----- LAN discovery ---------------------------------------------------------------

    def announce_on_lan(self, port: int) -> None:
        self.outbox += self.lan.hellos(port)

    def _lan_hello(self, data: bytes, source: Addr, now: float) -> None:
        neighbour = self.lan.receive(data, source, self.engine.node_ids, now)
        peer = None if neighbour is None else self._peer(neighbour.node_id)
        if neighbour is None or peer is None or (peer.endpoint == source
                                                 and self._live(peer, now)):
            return
        self.log_lines.append(f"{peer.name}: on our LAN at {endpoint_text(source)}")
        if neighbour.legacy:
            # An initiation would outweigh its hello (lan.py): our hello makes it initiate,
            # and the session follows that initiation. Not a LAN candidate either: our
            # retries would go there, more bytes than the hello carried.
            self.outbox.append((self.lan.legacy_hello(), source))
            return
        peer.on_lan(source)
        peer.punch(source, now)  # its answer moves the session onto the LAN

    def relay_out(self, datagram: bytes, dest: Addr) -> tuple[bytes, Addr] | None:
        """An engine datagram to a relay alias, tagged for the anchor (None: no relay)."""
        return self.relay_client.outgoing(datagram, dest)

    # ----- control messages --------------------------------------------------------------

    def control(self, peer: Peer, body: bytes, now: float) -> None:
        node_id = peer.spec.node_id
        if node_id is None or not body:
            self.counters["bad_control"] += 1
            return
        is_relay = body[0] >= _RELAY_FIRST_TYPE
        if self.is_anchor:
            (self.relays if is_relay else self.coordinator).receive(node_id, body, now)
        elif node_id not in self.anchors:
            self.counters["traversal_from_non_anchor"] += 1
        elif is_relay:
            self.relay_client.receive(node_id, body, now)
        else:
            # the plan is ours to make from what we know now, not at our last tick
            self.puncher.info = self.info()
            self.puncher.receive_punch(node_id, body, now)
        self._react(now)

    def engine_events(self, happened: Iterable[events.Event], now: float) -> None:
        for event in happened:
            if isinstance(event, events.PeerUnanswered):
                self._unanswered(event, now)
                continue
            if isinstance(event, events.EndpointChanged):
                self._endpoint_changed(event)
                continue
            if not isinstance(event, events.HandshakeCompleted):
                continue
            peer = self.engine.peer_named(event.peer)
            node_id = None if peer is None else peer.spec.node_id
            if node_id in self.anchors and not self.is_anchor:
                # An anchor is up: it answers probes now (one sent while it was starting
                # would wait out its timeout), and punch requests can go to it.
                if not any(o.target == event.endpoint for o in self.observations):
                    self.probe_soon(now)
                self._tick_by(now)
            if node_id is None or channel_of_alias(event.endpoint):
                continue
            if self.puncher.state(node_id) not in (None, PunchState.DIRECT):
                self.log_lines.append(
                    f"{event.peer}: direct path at {endpoint_text(event.endpoint)}")
            self.puncher.established(node_id, now)
            self.relay_client.direct_path(node_id)
            self._backoff.pop(node_id, None)
            self._silent.pop(node_id, None)
        self._react(now)

    def moved(self, now: float) -> None:
        """Our addresses changed (netlink)."""
        self._moved("our addresses changed", now)

    def _moved(self, reason: str, now: float) -> None:
        """Every direct session may now be cut at a NAT (ours maps us anew, the peer's
        filters the new mapping), so look for a new path to each at once, rather than
        wait for its silence."""
        if self.is_anchor:
            return
        for peer in self.engine.peers.values():
            if self._live(peer, now):
                self._look_for_new_path(peer, reason, now)
        self.probe_soon(now)
        self._tick_by(now)

    def _endpoint_changed(self, event: events.EndpointChanged) -> None:
        """An anchor: a member's transport data came from a new source. Tell it
        (SEEN_AT): behind a NAT that mapped it anew it cannot see that itself, and its
        direct sessions may be cut at its peers' filters. Not on a handshake: a replayed
        initiation must get no more bytes back than the response."""
        if (not self.is_anchor or not event.on_data or event.old is None
                or channel_of_alias(event.old) or channel_of_alias(event.new)):
            return
        peer = self.engine.peer_named(event.peer)
        node_id = None if peer is None else peer.spec.node_id
        if node_id is not None and node_id not in self.anchors:
            self.log_lines.append(f"{event.peer}: its traffic comes from "
                                  f"{endpoint_text(event.new)} now, telling it")
            self.coordinator.seen_at(node_id, event.new)

    def _seen_elsewhere(self, anchor: bytes, endpoint: Addr, now: float) -> None:
        if any(o.observed == endpoint for o in self.observations):
            return  # as our own probes saw us: nothing moved since
        self._moved(f"{self._name(anchor)} sees us at {endpoint_text(endpoint)} now", now)

    def _unanswered(self, event: events.PeerUnanswered, now: float) -> None:
        """A direct session met silence: our public endpoint may have moved (a NAT
        rebinding) or the peer's: re-probe the anchors and punch at once, rather than
        wait out the liveness window."""
        peer = self.engine.peer_named(event.peer)
        if peer is not None:
            self._look_for_new_path(
                peer, f"{event.cause}, nothing heard for {event.silent_s:.1f} s", now)

    def _look_for_new_path(self, peer: Peer, reason: str, now: float) -> None:
        node_id = peer.spec.node_id
        if (self.is_anchor or node_id is None or node_id in self.anchors
                or peer.endpoint is None):
            return
        if channel_of_alias(peer.endpoint):
            # An anchor relays only from where its own session sees us: if we moved, our
            # relayed packets are dropped until that session hears us anew.
            self.log_lines.append(f"{peer.name}: {reason} on the relay, telling the "
                                  "anchors where we are")
            self._show_anchors_where_we_are(now)
            return
        if node_id not in self._silent:
            self.log_lines.append(f"{peer.name}: {reason}, looking for a new path")
            # the punch waits a moment: the keepalives below, and the peer's own if it
            # noticed too, must reach the anchors before one coordinates it
            self._next_request[node_id] = now + SILENCE_SETTLE_S
            self._backoff.pop(node_id, None)
            self._show_anchors_where_we_are(now)
        self._silent.setdefault(node_id, now)  # since when: the fast retries are bounded

    def _show_anchors_where_we_are(self, now: float) -> None:
        """If we moved, what the anchors saw of us is stale: observe afresh, and let
        their sessions see our source now, so that a punch they coordinate (ours or the
        peer's) aims at where we are, and a relay forwards from there."""
        self.observations.clear()
        for anchor in self.live_anchors(now):
            anchor_peer = self._peer(anchor)
            if anchor_peer is not None:
                anchor_peer.send_keepalive(now)
        self.probe_soon(now)
        self._tick_by(now)  # the probe now; that tick asks for the next (the punch's)

    # ----- time ------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Once a second: punch requests for peers out of reach, NAT info for anchors."""
        if self.is_anchor:
            return
        # a silent peer's punch request waits SILENCE_SETTLE_S: tick again then, not a
        # second later
        settling = [at for node_id, at in self._next_request.items()
                    if node_id in self._silent and at > now]
        if settling:
            self._tick_by(min(settling))
        live = self.live_anchors(now)
        info = self.info()
        for anchor in live:
            if self._info_told.get(anchor) != info:
                self._info_told[anchor] = info
                self._send(anchor, self.puncher.set_info(info), now)
        if not live or self._waiting_for_nat_type(now):
            return
        # What we know of ourselves changed (NAT type, a mapping, an IPv6 address): a
        # relay chosen on the old facts may be needless now, so try direct at once. (Not
        # for a new observed port alone: behind a symmetric NAT every probe brings one.)
        facts = attrs.evolve(info, candidates=tuple(
            c for c in info.candidates if c.kind is not CandidateKind.OBSERVED))
        retry_relayed, self._last_facts = facts != self._last_facts, facts
        for node_id in self.engine.node_ids:
            second_look = self._second_look.get(node_id, float("inf")) <= now
            if second_look:
                del self._second_look[node_id]
            if ((retry_relayed or second_look)
                    and self.relay_client.state(node_id) is relay.RelayState.RELAYED
                    and self.puncher.state(node_id) is PunchState.RELAYED):
                self.puncher.request(node_id, relay.choose_anchor(self.me, node_id, live), now)
                continue
            peer = self._peer(node_id)
            if peer is not None and node_id in self._silent and (
                    peer.last_received_at or 0.0) > self._silent[node_id]:
                del self._silent[node_id]  # heard from again
            answering = (peer is not None and self._live(peer, now)
                         and node_id not in self._silent)
            if (peer is None or node_id in self.anchors or answering
                    # a silent peer's relay may be stuck opening (the anchor invited
                    # the peer where it was): punching goes on meanwhile
                    or self.relay_client.state(node_id) is relay.RelayState.RELAYED
                    or (self.relay_client.state(node_id) is not None
                        and node_id not in self._silent)
                    or self.puncher.state(node_id) in (PunchState.REQUESTED, PunchState.PUNCHING)
                    or now < self._next_request.get(node_id, self.started)):
                continue
            anchor = relay.choose_anchor(self.me, node_id, live)
            assert anchor is not None
            backoff = self._backoff.get(node_id, REQUEST_FIRST_S)
            if now - self._silent.get(node_id, float("-inf")) < SILENT_RETRY_FOR_S:
                # A peer that fell silent may have moved, and the anchor learns its new
                # source only from its next packet (a keepalive): retry every second a
                # while, not with a backoff that would outlast that packet.
                backoff = REQUEST_FIRST_S
            else:
                self._backoff[node_id] = min(backoff * 2, REQUEST_MAX_S)
            self._next_request[node_id] = now + backoff
            self.puncher.request(node_id, anchor, now)
            self.counters["punch_requested"] += 1
        self._react(now)

    def _waiting_for_nat_type(self, now: float) -> bool:
        if self.report.nat_type is not NatType.UNKNOWN:
            return False
        answered = {o.target for o in self.observations}
        if answered and answered >= set(self.probe_targets()):
            return False  # every anchor answered (one anchor cannot tell the type)
        probing = self.prober.next_deadline() is not None or self._next_probe - now <= PROBE_RETRY_S
        waited = now - self.started
        return waited < NAT_TYPE_WAIT_S or (probing and waited < NAT_TYPE_WAIT_MAX_S)

    def next_deadline(self) -> float | None:
        deadlines = [self.prober.next_deadline(), self.puncher.next_deadline(),
                     self.relays.next_deadline(), self.relay_client.next_deadline(),
                     min((p.next_at for p in self._punches), default=None)]
        return min((d for d in deadlines if d is not None), default=None)

    def handle_timer(self, now: float) -> None:
        self.prober.handle_timer(now)
        if any(isinstance(e, bootstrap.ProbeTimedOut) for e in self.prober.events):
            self._next_probe = min(self._next_probe, now + PROBE_RETRY_S)
        self.prober.events = [e for e in self.prober.events if isinstance(e, Observation)]
        self.puncher.handle_timer(now)
        self.relays.handle_timer(now)
        self.relay_client.handle_timer(now)
        for punching in list(self._punches):
            if punching.next_at > now:
                continue
            initiate = punching.initiate
            peer = self._peer(initiate.peer)
            if (peer is None or now >= initiate.until
                    or self.puncher.state(initiate.peer) is not PunchState.PUNCHING):
                self._punches.remove(punching)
                continue
            peer.punch(initiate.endpoint, now)
            punching.next_at = now + initiate.retry_every_s
        self._react(now)

    # ----- what the cores decided ----------------------------------------------------------

    def _react(self, now: float) -> None:
        punch_events, self.puncher.events = self.puncher.events, []
        attempts: Counter[bytes] = Counter()
        for event in punch_events:
            match event:
                case Initiate(peer, method, endpoint, at):
                    self.log_lines.append(f"{self._name(peer)}: punching {method.value} "
                                      f"towards {endpoint_text(endpoint)}")
                    # Best first (IPv6, LAN, then IPv4): a better path gets a head start,
                    # and its session stops the others (PunchState.DIRECT).
                    start = max(at, now) + attempts[peer] * ATTEMPT_HEAD_START_S
                    attempts[peer] += 1
                    self._punches.append(_Punching(event, start))
                case UseRelay(peer):
                    self._use_relay(peer, now)
                case SeenElsewhere(anchor, endpoint):
                    self._seen_elsewhere(anchor, endpoint, now)
        relay_events, self.relay_client.events = self.relay_client.events, []
        for relay_event in relay_events:
            match relay_event:
                case relay.RelayUp(node_id, anchor, channel):
                    self._relay_up(node_id, anchor, channel, now)
                case relay.RelayDown(node_id):
                    self._relay_down(node_id, now)
                case relay.RetryDirect(node_id):
                    live = self.live_anchors(now)
                    if live and self.puncher.state(node_id) in (
                            None, PunchState.DIRECT, PunchState.RELAYED):
                        self.puncher.request(node_id, live[0], now)
        for core in (self.puncher, self.coordinator, self.relays, self.relay_client):
            out, core.outbox = core.outbox, []
            for to_id, body in out:
                self._send(to_id, body, now)
        if self.puncher.events or self.relay_client.events:
            self._react(now)

    def _use_relay(self, node_id: bytes, now: float) -> None:
        anchor = relay.choose_anchor(self.me, node_id, self.live_anchors(now))
        if anchor is None:
            self.log_lines.append(f"{self._name(node_id)}: no direct path and no anchor to relay")
            return
        reason = ("the punch may fail: meanwhile"
                  if self.puncher.state(node_id) is PunchState.PUNCHING else "no direct path,")
        self.log_lines.append(f"{self._name(node_id)}: {reason} relaying through "
                              f"{self._name(anchor)}")
        self.relay_client.open(node_id, anchor, now)

    def _relay_up(self, node_id: bytes, anchor: bytes, channel: int, now: float) -> None:
        peer = self._peer(node_id)
        if peer is None:
            return
        if self._on_direct_path(node_id):
            # opened while a punch ran, ready after it got through
            self.log_lines.append(f"{peer.name}: relay by {self._name(anchor)} not needed, "
                                  "the direct path works")
            self.relay_client.close(node_id)
            return
        self._second_look[node_id] = now + RELAY_SECOND_LOOK_S
        self.log_lines.append(f"{peer.name}: relayed by {self._name(anchor)} (channel {channel})")
        peer.relayed(relay_alias(channel), now)

    def _relay_down(self, node_id: bytes, now: float) -> None:
        peer = self._peer(node_id)
        if peer is None:
            return
        if peer.endpoint is not None and channel_of_alias(peer.endpoint):
            self.log_lines.append(f"{peer.name}: relay closed, back to direct attempts")
        peer.unrelayed(now)

    def _send(self, node_id: bytes, body: bytes, now: float) -> None:
        peer = self._peer(node_id)
        if peer is None:
            self.counters["no_such_peer"] += 1
            return
        self.engine.send_control(peer, control.Kind.TRAVERSAL, body, now)

    def _name(self, node_id: bytes) -> str:
        peer = self._peer(node_id)
        return peer.name if peer is not None else node_id.hex()[:8]

    # ----- for status and netcheck -----------------------------------------------------------

    def status(self, now: float) -> dict[str, object]:
        peers = {}
        for node_id in self.engine.node_ids:
            peer = self._peer(node_id)
            punch, relayed = self.puncher.state(node_id), self.relay_client.state(node_id)
            if peer is not None and (punch or relayed):
                peers[peer.name] = {"punch": punch.value if punch else None,
                                    "relay": relayed.value if relayed else None}
        report = self.report
        return {
            "nat_type": report.nat_type.name.lower(),
            "observed": endpoint_text(report.observed) if report.observed else None,
            "port_preserved": report.port_preserved,
            "anchors_answered": report.targets,
            "port_mapping": endpoint_text(self.mapping.external) if self.mapping else None,
            "port_mapping_protocol": self.mapping.protocol.value if self.mapping else None,
            "candidates": [f"{c.kind.name.lower()} {endpoint_text(c.addr)}"
                           for c in self.info().candidates],
            "anchors_reachable": [self._name(a) for a in sorted(self.live_anchors(now))],
            "peers": peers,
            "relay_channels": self.relays.channels() if self.is_anchor else None,
            "counters": self.all_counters(),
        }

    def all_counters(self) -> dict[str, int]:
        cores: dict[str, Counter[str]] = {
            "traversal": self.counters, "probe": self.prober.counters,
            "probe_reply": self.responder.counters, "punch": self.puncher.counters,
            "lan_hello": self.lan.counters,
            "relay": self.relay_client.counters}
        if self.is_anchor:
            cores |= {"coordinate": self.coordinator.counters, "relay_anchor": self.relays.counters}
        return {f"{name}_{key}": value for name, counter in cores.items()
                for key, value in counter.items()}

