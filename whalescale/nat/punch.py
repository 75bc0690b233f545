"""Hole punching coordinated through an anchor, sans-I/O (design §3.5, §3.7).

Theory of operation:
- Every node tells its anchors what it knows of itself (NAT_INFO: NAT type,
  filtering, and its candidates: port-mapped, LAN and IPv6 endpoints). The anchor
  adds the one thing it knows better: the endpoint it sees the node at.
- A wants B: A's `Puncher.request` sends PUNCH_REQUEST(B) to an anchor. The
  anchor's `PunchCoordinator` sends PUNCH to both, each naming the other, with
  the other's candidates and a start delay (0 now: both start on receipt).
- On PUNCH each side computes the same `plan` (it depends on the unordered
  pair only) and emits `Initiate` events: "send a WireGuard initiation to E
  from T (receipt + delay), resend it every R until D". The datagrams are the
  session engine's own initiations: resending the same bytes is safe (the
  responder's TAI64N check drops a second copy) and the first copy through the
  NATs completes the handshake. `established` stops it; at D without it, `UseRelay` (relay.py).
  A plan that may well fail (a symmetric or unknown NAT against anything but an
  open side) asks for the relay at once and punches on: the first packets go
  through the relay, and a punch that gets through moves the session to the
  direct path (the relay then closes).
- Never port prediction or sweeping (anti-patterns 1.5): only endpoints that
  were observed, mapped or configured are ever targets.
- A node's NAT may map it anew without it knowing (a rebinding). Its anchor sees
  that first, from the node's authenticated traffic: `PunchCoordinator.seen_at`
  sends it SEEN_AT, and the node's `Puncher` emits `SeenElsewhere`; the node then
  looks for new paths to its peers (nat/traversal.py) before their flows stall.

Decision table (IPv4; "open" = public, full cone or a port mapping):

| A \\ B       | open          | cone           | symmetric      | unknown        |
|-------------|---------------|----------------|----------------|----------------|
| open        | A -> B        | B -> A         | B -> A         | B -> A         |
| cone        | A -> B        | simultaneous   | simultaneous*  | simultaneous   |
| symmetric   | A -> B        | simultaneous*  | relay          | simultaneous   |
| unknown     | A -> B        | simultaneous   | simultaneous   | simultaneous   |

"simultaneous": both send to the other's observed endpoint at T. *: the
symmetric side's packet reaches the cone's mapping; the cone's packet goes to
the symmetric side's endpoint towards the anchor, whose IP is right and port
likely wrong: it only opens an address-restricted filter. Against a known
port-restricted cone this cannot work, so the plan is relay at once.
Before the IPv4 attempt: IPv6 when both have a global address (§3.7 "IPv6
first"), and the LAN when both sit behind the same public IP and share a
subnet, or LAN discovery found the peer (anti-patterns 2.7: no hairpinning).
Every plan ends with the relay, the fallback when all direct attempts fail.

The message bodies are punch_messages.py's.
"""

from __future__ import annotations

import enum
import ipaddress
from collections import Counter
from collections.abc import Callable, Iterable

import attrs

from ..session.ratelimit import TokenBuckets
from .bootstrap import Addr
from .nattype import Filtering, NatType
from .punch_messages import (
    CandidateKind,
    MalformedPunch,
    NatInfo,
    NatInfoMessage,
    Punch,
    PunchRequest,
    SeenAt,
    decode,
    encode,
)

# ----- implementation --------------------------------------------------------
# Each end starts on its own receipt + this delay, so a common delay cannot cover the
# difference of the two anchor -> peer delays (it was 0.5 s for that): it only made every
# punch later. 0: each end starts on receipt. (A previous release's anchor sends 0.5 s,
# which is still honoured.)
START_DELAY_S = 0.0
RETRY_EVERY_S = 0.5
PUNCH_FOR_S = 3.0  # "retried for a few seconds": six tries, each a round trip or more apart
REQUEST_TIMEOUT_S = 3.0  # no PUNCH by then: the anchor could not reach the peer
# A request for a member the anchor has no session with yet (both ends starting at once)
# waits this long for that member's NAT_INFO, its first word once its session is up,
# instead of being dropped: the requester would wait its whole timeout for nothing.
PENDING_FOR_S = REQUEST_TIMEOUT_S - 0.5
MAX_PENDING = 256
MAX_TRACKED_PEERS = 64
_UNKNOWN = NatInfo()  # nothing known yet of ourselves


# ----- the plan -------------------------------------------------------------------

class Method(enum.Enum):
    IPV6 = "ipv6"  # both send to the other's global IPv6 address
    LAN = "lan"  # both send to the other's LAN address
    ONE_WAY = "one_way"  # only the side facing a closed NAT sends, to the open side
    SIMULTANEOUS = "simultaneous"  # both send to the other's observed endpoint at T
    RELAY = "relay"  # through an anchor (relay.py)


@attrs.frozen(slots=True)
class Side:
    node_id: bytes
    info: NatInfo


@attrs.frozen(slots=True)
class Attempt:
    method: Method
    a_to: Addr | None  # where A (the smaller node ID) sends; None: A does not send
    b_to: Addr | None


@attrs.frozen(slots=True)
class Plan:
    a: bytes  # the smaller node ID
    b: bytes
    attempts: tuple[Attempt, ...]  # best first; the last is always RELAY
    uncertain: bool = False  # only a simultaneous IPv4 punch with a symmetric or unknown side

    def sends_for(self, node_id: bytes) -> list[tuple[Method, Addr]]:
        """What `node_id` sends, best first."""
        pick = (lambda t: t.a_to) if node_id == self.a else (lambda t: t.b_to)
        return [(t.method, pick(t)) for t in self.attempts if pick(t) is not None]

    @property
    def direct(self) -> bool:
        return len(self.attempts) > 1


def _open_endpoint(info: NatInfo) -> Addr | None:
    """An endpoint that accepts a datagram from anyone, if the side has one."""
    if mapped := info.of_kind(CandidateKind.MAPPED):
        return mapped[0].addr
    observed = info.of_kind(CandidateKind.OBSERVED)
    if observed and (info.nat_type == NatType.PUBLIC or (
            info.nat_type == NatType.CONE
            and info.filtering == Filtering.ENDPOINT_INDEPENDENT)):
        return observed[0].addr
    return None


def _observed(info: NatInfo) -> Addr | None:
    observed = info.of_kind(CandidateKind.OBSERVED)
    return observed[0].addr if observed else None


def _public_ips(info: NatInfo) -> set[str]:
    return {c.host for c in info.candidates
            if c.kind in (CandidateKind.OBSERVED, CandidateKind.MAPPED)}


def _lan_pair(a: NatInfo, b: NatInfo, discovered: bool) -> tuple[Addr, Addr] | None:
    for ca in a.of_kind(CandidateKind.LAN):
        net_a = ipaddress.ip_interface(f"{ca.host}/{ca.prefix}").network
        for cb in b.of_kind(CandidateKind.LAN):
            net_b = ipaddress.ip_interface(f"{cb.host}/{cb.prefix}").network
            if net_a == net_b and ca.host != cb.host:
                return cb.addr, ca.addr
    if discovered and a.of_kind(CandidateKind.LAN) and b.of_kind(CandidateKind.LAN):
        return b.of_kind(CandidateKind.LAN)[0].addr, a.of_kind(CandidateKind.LAN)[0].addr
    return None


def _ipv4(a: NatInfo, b: NatInfo) -> Attempt | None:
    open_a, open_b = _open_endpoint(a), _open_endpoint(b)
    if open_b is not None:
        return Attempt(Method.ONE_WAY, open_b, None)
    if open_a is not None:
        return Attempt(Method.ONE_WAY, None, open_a)
    seen_a, seen_b = _observed(a), _observed(b)
    if seen_a is None or seen_b is None:
        return None
    types = {a.nat_type, b.nat_type}
    if types == {NatType.SYMMETRIC}:
        return None  # design §3.9: no coordination can overcome it
    if NatType.SYMMETRIC in types:
        cone = b if a.nat_type == NatType.SYMMETRIC else a
        if cone.filtering == Filtering.ADDRESS_AND_PORT_DEPENDENT:
            return None
    return Attempt(Method.SIMULTANEOUS, seen_b, seen_a)


def plan(x: Side, y: Side, *, lan_discovered: bool = False) -> Plan:
    """The attempts for the pair, the same whichever side computes it."""
    first, second = sorted((x, y), key=lambda s: s.node_id)
    a, b = first.info, second.info
    attempts: list[Attempt] = []
    v6_a, v6_b = a.of_kind(CandidateKind.IPV6), b.of_kind(CandidateKind.IPV6)
    if v6_a and v6_b:
        attempts.append(Attempt(Method.IPV6, v6_b[0].addr, v6_a[0].addr))
    same_public = bool(_public_ips(a) & _public_ips(b))
    if same_public or lan_discovered:
        lan = _lan_pair(a, b, lan_discovered)
        if lan is not None:
            attempts.append(Attempt(Method.LAN, *lan))
    wan = _ipv4(a, b)
    uncertain = (not attempts and wan is not None and wan.method is Method.SIMULTANEOUS
                 and bool({a.nat_type, b.nat_type} - {NatType.CONE}))
    if wan is not None:
        attempts.append(wan)
    attempts.append(Attempt(Method.RELAY, None, None))
    return Plan(first.node_id, second.node_id, tuple(attempts), uncertain)


# ----- the anchor's side ------------------------------------------------------------

class PunchCoordinator:
    """Answers PUNCH_REQUESTs by sending PUNCH to both ends.

    `receive(from_id, body, now)` takes NAT_INFO and PUNCH_REQUEST bodies from
    members (the shell passes only bodies from authenticated sessions);
    `outbox` holds (to_id, body). `endpoint_of(node_id)` is where the anchor's
    session with that node currently sends (None: no live session).
    """

    def __init__(self, members: Iterable[bytes], endpoint_of: Callable[[bytes], Addr | None],
                 *, random_bytes: Callable[[int], bytes], start_delay_s: float = START_DELAY_S,
                 requests: TokenBuckets | None = None) -> None:
        self.members = frozenset(members)
        self._endpoint_of = endpoint_of
        self._random_bytes = random_bytes
        self.start_delay_s = start_delay_s
        # A member asks for every peer it cannot reach at its start (the burst covers a
        # mesh of MAX_TRACKED_PEERS), then about one a second: the bucket bounds what an
        # authenticated member can make the anchor send, two small PUNCHes a request.
        self._requests = requests or TokenBuckets(rate_per_s=1.0, burst=float(MAX_TRACKED_PEERS))
        self._info: dict[bytes, NatInfo] = {}  # bounded by the members
        # (requester, target) -> until when the request waits for the target
        self._pending: dict[tuple[bytes, bytes], float] = {}
        self.outbox: list[tuple[bytes, bytes]] = []
        self.counters: Counter[str] = Counter()

    def set_members(self, members: Iterable[bytes]) -> None:
        self.members = frozenset(members)
        self._info = {k: v for k, v in self._info.items() if k in self.members}
        self._pending = {k: v for k, v in self._pending.items() if set(k) <= self.members}

    def receive(self, from_id: bytes, body: bytes, now: float) -> None:
        if from_id not in self.members:
            self.counters["not_a_member"] += 1
            return
        try:
            message = decode(body)
        except MalformedPunch:
            self.counters["malformed"] += 1
            return
        match message:
            case NatInfoMessage(info):
                self._info[from_id] = info
                self.counters["nat_info"] += 1
                self._release(from_id, now)
            case PunchRequest(target, info):
                self._info[from_id] = info
                # The target's own waiting request for us is this same pair: one PUNCH
                # pair answers both (two, with two punch ids, would race on each end).
                self._pending.pop((target, from_id), None)
                self._release(from_id, now)
                self._request(from_id, target, now)
            case Punch() | SeenAt():
                self.counters["unexpected_punch"] += 1

    def seen_at(self, member: bytes, endpoint: Addr) -> None:
        """A member's authenticated traffic came from `endpoint`, not where its session
        was: its NAT mapped it anew (or it moved), which it may not see itself."""
        if member in self.members:
            self.outbox.append((member, encode(SeenAt(endpoint))))
            self.counters["seen_at_sent"] += 1

    def _request(self, from_id: bytes, target: bytes, now: float) -> None:
        if not self._requests.take(from_id.hex(), now):
            self.counters["rate_limited"] += 1
            return
        if target not in self.members or target == from_id:
            self.counters["bad_target"] += 1
            return
        seen_from, seen_target = self._endpoint_of(from_id), self._endpoint_of(target)
        if seen_from is not None and seen_target is None and len(self._pending) < MAX_PENDING:
            self._pending[(from_id, target)] = now + PENDING_FOR_S
            self.counters["target_pending"] += 1
            return
        if seen_from is None or seen_target is None:
            self.counters["target_unreachable"] += 1
            return
        self._punch(from_id, seen_from, target, seen_target)

    def _release(self, target: bytes, now: float) -> None:
        """`target` spoke: the requests waiting for it get their PUNCHes now."""
        for key, until in list(self._pending.items()):
            if until < now:
                del self._pending[key]
            elif key[1] == target:
                del self._pending[key]
                seen_from, seen_target = self._endpoint_of(key[0]), self._endpoint_of(target)
                if seen_from is not None and seen_target is not None:
                    self._punch(key[0], seen_from, target, seen_target)

    def _punch(self, from_id: bytes, seen_from: Addr, target: bytes, seen_target: Addr) -> None:
        punch_id = int.from_bytes(self._random_bytes(4), "big")
        target_info = self._info.get(target, NatInfo())
        self.outbox.append((from_id, encode(Punch(
            target, punch_id, self.start_delay_s, target_info.seen_at(seen_target)))))
        self.outbox.append((target, encode(Punch(
            from_id, punch_id, self.start_delay_s, self._info[from_id].seen_at(seen_from)))))
        self.counters["punch_sent"] += 1


# ----- the peer's side --------------------------------------------------------------

@attrs.frozen(slots=True)
class Initiate:
    """Send a WireGuard initiation to `endpoint` at `at`, resend it every
    `retry_every_s` until `until` or until the session is established."""

    peer: bytes
    method: Method
    endpoint: Addr
    at: float
    retry_every_s: float
    until: float


@attrs.frozen(slots=True)
class UseRelay:
    """No direct path: open a relay to `peer` (relay.py)."""

    peer: bytes
    plan: Plan | None  # None: the anchor never answered


@attrs.frozen(slots=True)
class SeenElsewhere:
    """`anchor` sees our traffic come from `endpoint` now (SEEN_AT)."""

    anchor: bytes
    endpoint: Addr


PunchEvent = Initiate | UseRelay | SeenElsewhere


class PunchState(enum.Enum):
    REQUESTED = "requested"  # PUNCH_REQUEST sent, waiting for the anchor's PUNCH
    PUNCHING = "punching"
    DIRECT = "direct"
    RELAYED = "relayed"


# (state, event) -> next state; None stands for "not tracked".
_TRANSITIONS: dict[tuple[PunchState | None, str], PunchState] = {
    (None, "request"): PunchState.REQUESTED,
    (PunchState.DIRECT, "request"): PunchState.REQUESTED,
    (PunchState.RELAYED, "request"): PunchState.REQUESTED,  # retry for an upgrade
    (None, "punch"): PunchState.PUNCHING,
    (PunchState.REQUESTED, "punch"): PunchState.PUNCHING,
    (PunchState.DIRECT, "punch"): PunchState.PUNCHING,  # the peer lost us
    (PunchState.RELAYED, "punch"): PunchState.PUNCHING,
    (PunchState.REQUESTED, "established"): PunchState.DIRECT,
    (PunchState.PUNCHING, "established"): PunchState.DIRECT,
    (PunchState.RELAYED, "established"): PunchState.DIRECT,
    (PunchState.REQUESTED, "deadline"): PunchState.RELAYED,
    (PunchState.PUNCHING, "deadline"): PunchState.RELAYED,
}


class IllegalPunchTransition(RuntimeError):
    def __init__(self, state: PunchState | None, event: str) -> None:
        super().__init__(f"{event} in state {state.value if state else 'untracked'}")


@attrs.define
class _Track:
    state: PunchState
    deadline: float | None = None
    punch_id: int | None = None
    plan: Plan | None = None
    relay_at: float | None = None  # an uncertain plan: open the relay then, punching on


class Puncher:
    """One node's punching, peer by peer.

    Local calls: `request(peer, anchor, now)`, `established(peer, now)` (an
    authenticated handshake on a direct path), `handle_timer(now)` at
    `next_deadline()`. From the network: `receive_punch(anchor, body, now)`
    (the shell passes only bodies from anchors' sessions). Out: `outbox`
    ((to_id, body)) and `events` (Initiate, UseRelay).
    """

    def __init__(self, node_id: bytes, info: NatInfo = _UNKNOWN, *,
                 retry_every_s: float = RETRY_EVERY_S, punch_for_s: float = PUNCH_FOR_S,
                 request_timeout_s: float = REQUEST_TIMEOUT_S,
                 lan_discovered: Callable[[bytes], bool] = lambda _: False,
                 direct_at: Callable[[bytes], Addr | None] = lambda _: None) -> None:
        self.node_id = node_id
        self.info = info
        self.retry_every_s = retry_every_s
        self.punch_for_s = punch_for_s
        self.request_timeout_s = request_timeout_s
        self._lan_discovered = lan_discovered
        self._direct_at = direct_at
        self._tracks: dict[bytes, _Track] = {}
        self.outbox: list[tuple[bytes, bytes]] = []
        self.events: list[PunchEvent] = []
        self.counters: Counter[str] = Counter()

    def state(self, peer: bytes) -> PunchState | None:
        track = self._tracks.get(peer)
        return track.state if track else None

    def _move(self, peer: bytes, event: str) -> _Track:
        current = self.state(peer)
        nxt = _TRANSITIONS.get((current, event))
        if nxt is None:
            raise IllegalPunchTransition(current, event)
        track = self._tracks.get(peer)
        if track is None:
            if len(self._tracks) >= MAX_TRACKED_PEERS:
                self._forget_one()
            track = self._tracks[peer] = _Track(nxt)
        track.state = nxt
        return track

    def _forget_one(self) -> None:
        """Make room: forget a settled peer first, else the oldest tracked."""
        settled = [p for p, t in self._tracks.items() if t.deadline is None]
        del self._tracks[(settled or list(self._tracks))[0]]
        self.counters["forgotten"] += 1

    def set_info(self, info: NatInfo) -> bytes:
        """Our NAT info changed: the body of a NAT_INFO for our anchors."""
        self.info = info
        return encode(NatInfoMessage(info))

    def request(self, peer: bytes, anchor: bytes, now: float) -> None:
        track = self._move(peer, "request")
        track.deadline, track.punch_id, track.plan = now + self.request_timeout_s, None, None
        self.outbox.append((anchor, encode(PunchRequest(peer, self.info))))

    def receive_punch(self, anchor: bytes, body: bytes, now: float) -> None:
        try:
            message = decode(body)
        except MalformedPunch:
            self.counters["malformed"] += 1
            return
        if isinstance(message, SeenAt):
            self.events.append(SeenElsewhere(anchor, message.endpoint))
            return
        if not isinstance(message, Punch) or message.peer == self.node_id:
            self.counters["unexpected_message"] += 1
            return
        track = self._tracks.get(message.peer)
        if track is not None and track.punch_id == message.punch_id:
            self.counters["duplicate_punch"] += 1
            return
        if (self.state(message.peer), "punch") not in _TRANSITIONS:
            self.counters["punch_while_punching"] += 1
            return
        the_plan = plan(Side(self.node_id, self.info), Side(message.peer, message.info),
                        lan_discovered=self._lan_discovered(message.peer))
        sends = [(m, e) for m, e in the_plan.sends_for(self.node_id) if m != Method.RELAY]
        settled = self.state(message.peer) in (None, PunchState.DIRECT)
        held = self._direct_at(message.peer) if settled else None
        already = (held in {e for _, e in sends} if sends  # where the punch would aim
                   else held is not None or track is not None)  # the open side, direct
        if the_plan.direct and settled and already:
            # We hold a direct session where the punch would aim (or we are the open side,
            # with nothing to send): a request sent before our handshake got through, ours
            # or the peer's (an anchor holds one for a member not up yet), or the peer lost
            # us. Our session's packets reach it as a punch would, and if they do not, its
            # deadline opens the relay (the anchor brings us in): a punch here would only
            # redo a working handshake, or wait for one the peer has no reason to start.
            if track is not None:
                track.punch_id = message.punch_id
            self.counters["already_direct"] += 1
            return
        track = self._move(message.peer, "punch")
        start = now + message.start_delay_s
        until = start + self.punch_for_s
        track.punch_id, track.plan = message.punch_id, the_plan
        if not the_plan.direct:
            self._move(message.peer, "deadline")
            track.deadline = None
            self.events.append(UseRelay(message.peer, the_plan))
            return
        # A side that sends nothing (the open side of ONE_WAY) still waits until D.
        track.deadline = until
        # A punch that may well fail (a symmetric or unknown NAT on one side) opens the
        # relay at once and punches on (relay first, as nebula does, and direct when a
        # punch gets through: the session moves, the relay closes). Waiting for the punch
        # first cost a relayed pair a second at every start (lab: 1.3 s against 0.4).
        track.relay_at = now if the_plan.uncertain else None
        self.events.extend(Initiate(message.peer, method, endpoint, start, self.retry_every_s,
                                    until) for method, endpoint in sends)
        self.counters["punching"] += 1

    def established(self, peer: bytes, now: float) -> None:
        if self.state(peer) in (PunchState.DIRECT, None):
            return  # a handshake the punching did not cause
        track = self._move(peer, "established")
        track.deadline = track.relay_at = None

    def next_deadline(self) -> float | None:
        deadlines = [d for t in self._tracks.values() for d in (t.deadline, t.relay_at)
                     if d is not None]
        return min(deadlines, default=None)

    def handle_timer(self, now: float) -> None:
        for peer, track in list(self._tracks.items()):
            if track.relay_at is not None and now >= track.relay_at:
                track.relay_at = None
                if track.state is PunchState.PUNCHING:
                    self.counters["relay_alongside"] += 1
                    self.events.append(UseRelay(peer, track.plan))
            if track.deadline is not None and now >= track.deadline:
                plan_then = track.plan
                self._move(peer, "deadline").deadline = None
                track.relay_at = None
                self.counters["timed_out" if plan_then is None else "punch_failed"] += 1
                self.events.append(UseRelay(peer, plan_then))
