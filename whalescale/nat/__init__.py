"""Port mapping for NAT traversal: PCP (RFC 6887), NAT-PMP (RFC 6886) and UPnP IGD.

- `natpmp`, `pcp`: wire formats as pure functions (no I/O).
- `portmap`: the sans-I/O state machine that tries PCP, then NAT-PMP, then UPnP.
- `driver`: the trio shell (`run_port_mapping`), the only part that touches sockets.
- `upnp`: blocking calls into PyPI `miniupnpc`, run by the driver in a thread.
- `stun_responder`: a tiny STUN server for the lab's "internet" (lab use only).
"""
