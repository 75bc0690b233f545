"""The sans-I/O port-mapping state machine: PCP, then NAT-PMP, then UPnP IGD.

Theory of operation (aioquic's shape, like `session/engine.py`):
- The shell calls `start(now)`, feeds `receive_datagram(data, now)` with what arrives
  from the gateway's port 5351, and calls `handle_timer(now)` at `next_deadline()`.
- `datagrams_to_send()` gives the requests for the gateway's port 5351;
  `upnp_requests()` gives the blocking UPnP calls the shell must make (in a thread),
  whose outcome it reports with `upnp_mapped` / `upnp_failed` / `upnp_removed`.
- `events()` say what happened: a mapping acquired, renewed, lost or removed, and why a
  protocol was given up.
- `stop(now)` removes the mapping (lifetime 0, or DeletePortMapping); the shell pumps
  until `done`.

Rules: no clock, no socket, no randomness inside (the PCP nonce is passed in). Each
request is retried `max_tries` times, 250 ms doubling (RFC 6886 section 3.1), and then
the next protocol is tried: never natpmpc's 128 s. A granted mapping is renewed at half
its lifetime (RFC 6886 section 3.3, RFC 6887 section 11.2.1); a failed renewal loses it
and starts over. When every protocol failed, the whole round is tried again after
`retry_failed_after_s`.
"""

from __future__ import annotations

import enum
import ipaddress
from collections import Counter

import attrs

from . import natpmp, pcp
from .errors import WireFormatError

# Addresses that only exist behind another NAT: RFC 1918, carrier-grade NAT (RFC 6598),
# link-local, "this network", unique-local IPv6. Documentation ranges count as public.
NAT_ONLY_NETWORKS = tuple(
    ipaddress.ip_network(net)
    for net in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
                "169.254.0.0/16", "0.0.0.0/8", "127.0.0.0/8", "fc00::/7", "fe80::/10")
)  # fmt: skip


def behind_another_nat(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return any(address in net for net in NAT_ONLY_NETWORKS)


class Protocol(enum.Enum):
    PCP = "pcp"
    NATPMP = "nat-pmp"
    UPNP = "upnp"


class State(enum.Enum):
    IDLE = "idle"
    REQUESTING = "requesting"  # PCP or NAT-PMP request outstanding
    UPNP_PENDING = "upnp-pending"  # the shell is making the UPnP call
    MAPPED = "mapped"  # waiting for half the lifetime to pass
    RENEWING = "renewing"
    REMOVING = "removing"
    FAILED = "failed"  # every protocol failed; waiting to try the round again
    STOPPED = "stopped"


# Which moves are legal; anything else is a bug in this file and raises.
_MOVES: dict[State, frozenset[State]] = {
    State.IDLE: frozenset({State.REQUESTING, State.UPNP_PENDING, State.FAILED, State.STOPPED}),
    State.REQUESTING: frozenset(
        {State.REQUESTING, State.UPNP_PENDING, State.MAPPED, State.FAILED, State.STOPPED}
    ),
    State.UPNP_PENDING: frozenset(
        {State.MAPPED, State.REQUESTING, State.UPNP_PENDING, State.FAILED, State.REMOVING,
         State.STOPPED}
    ),
    State.MAPPED: frozenset({State.RENEWING, State.UPNP_PENDING, State.REMOVING}),
    State.RENEWING: frozenset(
        {State.MAPPED, State.REQUESTING, State.UPNP_PENDING, State.FAILED, State.REMOVING}
    ),
    State.REMOVING: frozenset({State.STOPPED}),
    State.FAILED: frozenset({State.REQUESTING, State.UPNP_PENDING, State.STOPPED}),
    State.STOPPED: frozenset(),
}


class PortMapStateError(Exception):
    """The shell called something the current state does not allow."""

    def __init__(self, state: State, event: str) -> None:
        super().__init__(f"port mapping: {event!r} is not allowed in state {state.value}")
        self.state = state
        self.event = event


@attrs.frozen(slots=True)
class PortMapSettings:
    internal_port: int
    lifetime_s: int = natpmp.RECOMMENDED_LIFETIME_S
    protocols: tuple[Protocol, ...] = (Protocol.PCP, Protocol.NATPMP, Protocol.UPNP)
    first_retry_s: float = 0.25  # RFC 6886 section 3.1
    max_tries: int = 4  # per request: 0.25 + 0.5 + 1 + 2 = 3.75 s before the next protocol
    retry_failed_after_s: float = 300.0
    # A private external address means another NAT sits upstream (carrier-grade NAT):
    # the mapping would not be reachable from the internet. The lab allows it.
    accept_private_external: bool = False


@attrs.frozen(slots=True)
class Mapping:
    protocol: Protocol
    external_address: str
    external_port: int
    internal_port: int
    lifetime_s: int
    acquired_at: float
    epoch_s: int | None = None  # the gateway's epoch (PCP, NAT-PMP); None for UPnP

    @property
    def external(self) -> tuple[str, int]:
        return (self.external_address, self.external_port)

    @property
    def renew_at(self) -> float:
        return self.acquired_at + self.lifetime_s / 2


@attrs.frozen(slots=True)
class MappingAcquired:
    mapping: Mapping


@attrs.frozen(slots=True)
class MappingRenewed:
    mapping: Mapping


@attrs.frozen(slots=True)
class MappingLost:
    protocol: Protocol
    reason: str


@attrs.frozen(slots=True)
class MappingRemoved:
    protocol: Protocol
    confirmed: bool  # False: the gateway never acknowledged the removal


@attrs.frozen(slots=True)
class ProtocolFailed:
    protocol: Protocol
    reason: str


@attrs.frozen(slots=True)
class AllProtocolsFailed:
    retry_at: float


Event = MappingAcquired | MappingRenewed | MappingLost | MappingRemoved | ProtocolFailed | (
    AllProtocolsFailed
)


@attrs.frozen(slots=True)
class UpnpAdd:
    internal_port: int
    suggested_external_port: int
    lifetime_s: int


@attrs.frozen(slots=True)
class UpnpDelete:
    external_port: int


UpnpRequest = UpnpAdd | UpnpDelete


class _NatPmpPhase(enum.Enum):
    ADDRESS = "external-address"
    MAP = "map"


class PortMapper:
    """One UDP port's mapping on one gateway."""

    def __init__(
        self, settings: PortMapSettings, *, client_address: str, nonce: bytes
    ) -> None:
        if not settings.protocols:
            raise ValueError("port mapping needs at least one protocol")
        self.settings = settings
        self.client_address = ipaddress.ip_address(client_address)
        self.nonce = nonce
        self.state = State.IDLE
        self.mapping: Mapping | None = None
        self.drops: Counter[str] = Counter()  # datagrams ignored, by reason
        self._protocol_index = 0
        self._natpmp_phase = _NatPmpPhase.ADDRESS
        self._natpmp_address: str | None = None
        self._request = b""  # the datagram being retried
        self._tries = 0
        self._deadline: float | None = None
        self._outbox: list[bytes] = []
        self._upnp: list[UpnpRequest] = []
        self._events: list[Event] = []

    # ----- what the shell reads ------------------------------------------

    @property
    def protocol(self) -> Protocol:
        return self.settings.protocols[self._protocol_index]

    @property
    def done(self) -> bool:
        return self.state is State.STOPPED

    def datagrams_to_send(self) -> list[bytes]:
        out, self._outbox = self._outbox, []
        return out

    def upnp_requests(self) -> list[UpnpRequest]:
        out, self._upnp = self._upnp, []
        return out

    def events(self) -> list[Event]:
        out, self._events = self._events, []
        return out

    def next_deadline(self) -> float | None:
        return self._deadline

    # ----- what the shell calls ------------------------------------------

    def start(self, now: float) -> None:
        if self.state is not State.IDLE:
            raise PortMapStateError(self.state, "start")
        self._begin(0, now)

    def handle_timer(self, now: float) -> None:
        if self._deadline is None or now < self._deadline:
            return
        match self.state:
            case State.REQUESTING | State.RENEWING | State.REMOVING:
                if self._tries < self.settings.max_tries:
                    self._send_request(self._request, now)
                elif self.state is State.REMOVING:
                    self._stopped(confirmed=False)
                else:
                    self._give_up(f"no answer after {self._tries} tries", now)
            case State.MAPPED:
                self._renew(now)
            case State.FAILED:
                self._begin(0, now)
            case _:
                self._deadline = None

    def receive_datagram(self, data: bytes, now: float) -> None:
        """A datagram from the gateway's port 5351; nothing from the network raises."""
        if self.state not in (State.REQUESTING, State.RENEWING, State.REMOVING):
            self.drops["not waiting"] += 1
            return
        try:
            if data[:1] == bytes((natpmp.VERSION,)):
                response: natpmp.Response | pcp.Response = natpmp.parse_response(data)
            elif data[:1] == bytes((pcp.VERSION,)):
                response = pcp.parse_response(data)
            else:
                self.drops["unknown version"] += 1
                return
        except WireFormatError:
            self.drops["malformed"] += 1
            return
        if self.protocol is Protocol.PCP:
            self._on_pcp(response, now)
        else:
            self._on_natpmp(response, now)

    def upnp_mapped(
        self, external_address: str, external_port: int, lifetime_s: int, now: float
    ) -> None:
        if self.state is not State.UPNP_PENDING:
            raise PortMapStateError(self.state, "upnp_mapped")
        self._mapped(external_address, external_port, lifetime_s, None, now)

    def upnp_failed(self, reason: str, now: float) -> None:
        if self.state is not State.UPNP_PENDING:
            raise PortMapStateError(self.state, "upnp_failed")
        self._give_up(reason, now)

    def upnp_removed(self, now: float, *, confirmed: bool = True) -> None:
        if self.state is not State.REMOVING or self.protocol is not Protocol.UPNP:
            raise PortMapStateError(self.state, "upnp_removed")
        self._stopped(confirmed=confirmed)

    def stop(self, now: float) -> None:
        """Remove the mapping if there is one (RFC 6886 3.4, RFC 6887 15), then stop."""
        match self.state:
            case State.MAPPED | State.RENEWING | State.UPNP_PENDING if self.mapping:
                self._move(State.REMOVING, "stop")
                if self.protocol is Protocol.UPNP:
                    self._deadline = None
                    self._upnp.append(UpnpDelete(self.mapping.external_port))
                else:
                    self._tries = 0
                    self._send_request(self._map_request(lifetime_s=0), now)
            case State.REMOVING | State.STOPPED:
                pass
            case _:
                # Nothing granted yet (a late answer would expire on its own lifetime).
                self._move(State.STOPPED, "stop")
                self._deadline = None

    # ----- protocol answers ----------------------------------------------

    def _on_pcp(self, response: natpmp.Response | pcp.Response, now: float) -> None:
        match response:
            case pcp.MapResponse(nonce=self.nonce, protocol=pcp.PROTOCOL_UDP) if (
                response.internal_port == self.settings.internal_port
            ):
                if self.state is State.REMOVING:
                    self._stopped(confirmed=response.result == pcp.ResultCode.SUCCESS)
                elif response.result != pcp.ResultCode.SUCCESS:
                    self._give_up(f"PCP {pcp.result_name(response.result)}", now)
                else:
                    self._mapped(
                        str(response.external_address), response.external_port,
                        response.lifetime_s, response.epoch_s, now,
                    )  # fmt: skip
            case pcp.ErrorResponse(opcode=pcp.OP_MAP) | natpmp.ErrorResponse():
                # A NAT-PMP-only server answers version 2 with its own "unsupported
                # version" (RFC 6887 section 9): no use retrying PCP there.
                if self.state is State.REMOVING:
                    self._stopped(confirmed=False)
                else:
                    self._give_up(f"PCP refused: {_result_text(response)}", now)
            case _:
                self.drops["unexpected"] += 1

    def _on_natpmp(self, response: natpmp.Response | pcp.Response, now: float) -> None:
        match response:
            case natpmp.ExternalAddressResponse() if (
                self._natpmp_phase is _NatPmpPhase.ADDRESS and self.state is not State.REMOVING
            ):
                if response.result != natpmp.ResultCode.SUCCESS:
                    self._give_up(f"NAT-PMP {natpmp.result_name(response.result)}", now)
                    return
                self._natpmp_address = str(response.address)
                self._natpmp_phase = _NatPmpPhase.MAP
                self._tries = 0
                self._send_request(self._map_request(), now)
            case natpmp.MapResponse(opcode=natpmp.OP_MAP_UDP) if (
                self._natpmp_phase is _NatPmpPhase.MAP
                and response.internal_port == self.settings.internal_port
            ):
                if self.state is State.REMOVING:
                    self._stopped(confirmed=response.result == natpmp.ResultCode.SUCCESS)
                elif response.result != natpmp.ResultCode.SUCCESS:
                    self._give_up(f"NAT-PMP {natpmp.result_name(response.result)}", now)
                else:
                    assert self._natpmp_address is not None
                    self._mapped(
                        self._natpmp_address, response.external_port, response.lifetime_s,
                        response.epoch_s, now,
                    )  # fmt: skip
            case natpmp.ErrorResponse() if self.state is not State.REMOVING:
                self._give_up(f"NAT-PMP {natpmp.result_name(response.result)}", now)
            case _:
                self.drops["unexpected"] += 1

    # ----- transitions ---------------------------------------------------

    def _move(self, new: State, event: str) -> None:
        if new not in _MOVES[self.state]:
            raise PortMapStateError(self.state, event)
        self.state = new

    def _begin(self, index: int, now: float) -> None:
        """Try protocol number `index` of the settings from scratch."""
        self._protocol_index = index
        self._tries = 0
        self.mapping = None
        match self.protocol:
            case Protocol.UPNP:
                self._move(State.UPNP_PENDING, "begin upnp")
                self._deadline = None
                self._upnp.append(
                    UpnpAdd(self.settings.internal_port, self.settings.internal_port,
                            self.settings.lifetime_s)
                )  # fmt: skip
            case Protocol.PCP:
                self._move(State.REQUESTING, "begin pcp")
                self._send_request(self._map_request(), now)
            case Protocol.NATPMP:
                self._move(State.REQUESTING, "begin nat-pmp")
                self._natpmp_phase = _NatPmpPhase.ADDRESS
                self._send_request(natpmp.encode_external_address_request(), now)

    def _renew(self, now: float) -> None:
        """Half the lifetime has passed: ask for the same mapping again."""
        assert self.mapping is not None
        if self.protocol is Protocol.UPNP:
            self._move(State.UPNP_PENDING, "renew")
            self._deadline = None
            self._upnp.append(
                UpnpAdd(self.settings.internal_port, self.mapping.external_port,
                        self.settings.lifetime_s)
            )  # fmt: skip
            return
        self._move(State.RENEWING, "renew")
        self._tries = 0
        self._send_request(self._map_request(), now)

    def _map_request(self, lifetime_s: int | None = None) -> bytes:
        lifetime = self.settings.lifetime_s if lifetime_s is None else lifetime_s
        if self.protocol is Protocol.PCP:
            suggested_port = self.mapping.external_port if self.mapping else 0
            suggested_address = pcp.ANY_IPV4
            if self.mapping is not None:
                suggested_address = ipaddress.ip_address(self.mapping.external_address)
            return pcp.encode_map_request(
                pcp.MapRequest(
                    nonce=self.nonce,
                    protocol=pcp.PROTOCOL_UDP,
                    internal_port=self.settings.internal_port,
                    suggested_external_port=suggested_port if lifetime else 0,
                    lifetime_s=lifetime,
                    client_address=self.client_address,
                    suggested_external_address=suggested_address if lifetime else pcp.ANY_IPV4,
                )
            )
        # NAT-PMP: ask for the port we hold (renewal) or the internal one; 0 to delete.
        if not lifetime:
            suggested = 0
        elif self.mapping is not None:
            suggested = self.mapping.external_port
        else:
            suggested = self.settings.internal_port
        return natpmp.encode_map_request(
            natpmp.OP_MAP_UDP, self.settings.internal_port, suggested, lifetime
        )

    def _send_request(self, request: bytes, now: float) -> None:
        """Send (or resend) `request`; the n-th try waits first_retry_s * 2**(n-1)."""
        self._request = request
        self._tries += 1
        self._outbox.append(request)
        self._deadline = now + self.settings.first_retry_s * 2 ** (self._tries - 1)

    def _mapped(
        self,
        external_address: str,
        external_port: int,
        lifetime_s: int,
        epoch_s: int | None,
        now: float,
    ) -> None:
        address = ipaddress.ip_address(external_address)
        if not self.settings.accept_private_external and behind_another_nat(address):
            self._give_up(f"external address {address} is private (another NAT upstream)", now)
            return
        if lifetime_s <= 0:
            self._give_up("granted a lifetime of 0 s", now)
            return
        renewed = self.mapping is not None
        self._move(State.MAPPED, "mapped")
        self.mapping = Mapping(
            self.protocol, external_address, external_port, self.settings.internal_port,
            lifetime_s, now, epoch_s,
        )  # fmt: skip
        self._deadline = self.mapping.renew_at
        self._events.append(
            MappingRenewed(self.mapping) if renewed else MappingAcquired(self.mapping)
        )

    def _give_up(self, reason: str, now: float) -> None:
        """This protocol failed (or a renewal did): on to the next one, or wait."""
        if self.mapping is not None:
            self._events.append(MappingLost(self.protocol, reason))
            # Start the round over: the gateway may have rebooted or changed.
            self.mapping = None
            self._begin(0, now)
            return
        self._events.append(ProtocolFailed(self.protocol, reason))
        if self._protocol_index + 1 < len(self.settings.protocols):
            self._begin(self._protocol_index + 1, now)
            return
        self._move(State.FAILED, "all protocols failed")
        self._deadline = now + self.settings.retry_failed_after_s
        self._events.append(AllProtocolsFailed(self._deadline))

    def _stopped(self, *, confirmed: bool) -> None:
        self._move(State.STOPPED, "removed")
        self._deadline = None
        self._events.append(MappingRemoved(self.protocol, confirmed))
        self.mapping = None


def _result_text(response: natpmp.Response | pcp.Response) -> str:
    if isinstance(response, natpmp.ErrorResponse):
        return f"NAT-PMP server: {natpmp.result_name(response.result)}"
    return pcp.result_name(response.result)
