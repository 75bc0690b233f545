"""What the session engine reports, said in the agent's log."""

from __future__ import annotations

import logging

from ..session import events
from .status import endpoint_text

log = logging.getLogger("whalescale.agent")


def _endpoint(addr: tuple[str, int] | None) -> str:
    return endpoint_text(addr) or "unknown"


def log_event(event: events.Event) -> None:
    match event:
        case events.HandshakeInitiated(peer, endpoint, reason):
            log.info("handshake with %s at %s: initiating (%s)", peer, _endpoint(endpoint), reason)
        case events.HandshakeCompleted(peer, initiator, endpoint, rtt_s):
            role = (f"as initiator, {rtt_s * 1000:.1f} ms" if initiator and rtt_s is not None
                    else "as responder")
            log.info("session with %s established via %s (%s)", peer, _endpoint(endpoint), role)
        case events.HandshakeGaveUp(peer, attempts):
            log.warning("handshake with %s gave up after %d attempts; "
                        "dropping queued packets until it reaches us or we have data again",
                        peer, attempts)
        case events.SessionKeysZeroed(peer):
            log.info("session keys of %s erased after 9 minutes without a new handshake", peer)
        case events.EndpointChanged(peer, old, new):
            log.info("peer %s now at %s (was %s)", peer, _endpoint(new), _endpoint(old))
        case events.CookieReplySent(to):
            log.debug("under load: sent a cookie reply to %s", _endpoint(to))
