"""What the session engine reports, in words for the log."""

from __future__ import annotations

import logging

from ..session import events
from ..wire.port import endpoint_text

Addr = tuple[str, int]


def _endpoint(addr: Addr | None) -> str:
    return "unknown" if addr is None else endpoint_text(addr)


def event_text(event: events.Event) -> tuple[int, str]:
    """(logging level, message) of an engine event."""
    match event:
        case events.HandshakeInitiated(peer, endpoint, reason):
            return logging.INFO, (f"handshake with {peer} at {_endpoint(endpoint)}: "
                                  f"initiating ({reason})")
        case events.HandshakeCompleted(peer, initiator, endpoint, rtt_s):
            role = (f"as initiator, {rtt_s * 1000:.1f} ms" if initiator and rtt_s is not None
                    else "as responder")
            return logging.INFO, (f"session with {peer} established via "
                                  f"{_endpoint(endpoint)} ({role})")
        case events.HandshakeGaveUp(peer, attempts):
            return logging.WARNING, (
                f"handshake with {peer} gave up after {attempts} attempts; dropping queued "
                "packets until it reaches us or we have data again")
        case events.SessionKeysZeroed(peer):
            return logging.INFO, (f"session keys of {peer} erased after 9 minutes without a "
                                  "new handshake")
        case events.EndpointChanged(peer, old, new):
            return logging.INFO, f"peer {peer} now at {_endpoint(new)} (was {_endpoint(old)})"
        case events.PeerUnanswered(peer, silent_s, cause):
            return logging.DEBUG, f"peer {peer}: {cause}, nothing heard for {silent_s:.1f} s"
