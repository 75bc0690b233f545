"""What the session core tells the shell happened; the shell logs them."""

from __future__ import annotations

import attrs

Addr = tuple[str, int]


@attrs.frozen(slots=True)
class HandshakeInitiated:
    peer: str
    endpoint: Addr
    reason: str


@attrs.frozen(slots=True)
class HandshakeCompleted:
    peer: str
    initiator: bool
    endpoint: Addr
    rtt_s: float | None  # initiator side only: initiation sent -> response read


@attrs.frozen(slots=True)
class HandshakeGaveUp:
    peer: str
    attempts: int


@attrs.frozen(slots=True)
class SessionKeysZeroed:
    peer: str


@attrs.frozen(slots=True)
class EndpointChanged:
    """Authenticated traffic from `peer` came from `new`: we send there now. `on_data`:
    transport data showed it (a session's keys, never a replayable handshake)."""

    peer: str
    old: Addr | None
    new: Addr
    on_data: bool = False


@attrs.frozen(slots=True)
class PeerUnanswered:
    """A whalescale peer did not answer our data, or its steady data stopped, and a PING
    went unanswered too: nothing heard for `silent_s`. Its path may be gone (a NAT
    rebinding, a move), long before the liveness window. `cause` says which silence."""

    peer: str
    silent_s: float
    cause: str


Event = (
    HandshakeInitiated | HandshakeCompleted | HandshakeGaveUp | SessionKeysZeroed
    | EndpointChanged | PeerUnanswered
)
