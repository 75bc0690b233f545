"""NAT type inference from PATH_PROBE observations (design §3.7 "NAT Type Detection").

We compare the local socket address with the endpoints that different targets
saw (bootstrap.Observation), for one local socket at a time (a NAT maps each
socket on its own). Only the *mapping* behaviour can be told this way (RFC
4787 §4.1): the *filtering* behaviour would need replies from an address we did
not send to, which an anchor with one address cannot give; it stays UNKNOWN
unless the caller knows better (a port mapping from PCP/NAT-PMP/UPnP makes the
mapped endpoint accept anyone: ENDPOINT_INDEPENDENT).

Verdicts, in the order they are tried (`infer`):

| observations (latest per target)          | NatType   |
|-------------------------------------------|-----------|
| none                                      | UNKNOWN   |
| every observed == local address           | PUBLIC    |
| some observed == local, some not          | UNKNOWN   |
| fewer than 2 distinct target IPs          | UNKNOWN   |
| one observed IP:port for every target     | CONE      |
| observed IP or port differs by target     | SYMMETRIC |

PUBLIC needs one observation only: an observed address equal to our own proves
nothing translated it. CONE and SYMMETRIC need two targets with different IPs,
since some NATs map per destination IP only (RFC 4787 "address-dependent").
`port_preserved` (the NAT kept our local port) is reported for CONE and
SYMMETRIC; it is a fact for logs and never used to guess ports (anti-patterns 1.5).
"""

from __future__ import annotations

import enum

import attrs

from .bootstrap import Addr, Observation


class NatType(enum.IntEnum):
    """Mapping behaviour of the NAT in front of one local socket (values are on the wire)."""

    UNKNOWN = 0
    PUBLIC = 1  # no translation: the local address is the observed one
    CONE = 2  # endpoint-independent mapping: one observed endpoint for every target
    SYMMETRIC = 3  # the mapping depends on the target


class Filtering(enum.IntEnum):
    """Filtering behaviour (RFC 4787 §5); not observable by probing one anchor address."""

    UNKNOWN = 0
    ENDPOINT_INDEPENDENT = 1  # full cone, or a port mapping
    ADDRESS_DEPENDENT = 2  # restricted cone
    ADDRESS_AND_PORT_DEPENDENT = 3  # port-restricted cone


@attrs.frozen(slots=True)
class NatReport:
    nat_type: NatType
    observed: Addr | None = None  # our endpoint as the world sees it (PUBLIC, CONE)
    port_preserved: bool | None = None  # None: not known or not translated
    targets: int = 0  # distinct targets the verdict rests on


def infer(observations: list[Observation], local: Addr) -> NatReport:
    """The NAT type of the socket bound at `local` (its real address, not a wildcard)."""
    latest: dict[Addr, Addr] = {}
    for obs in observations:  # oldest first: a later observation replaces an earlier one
        if obs.local == local:
            latest.pop(obs.target, None)
            latest[obs.target] = obs.observed
    if not latest:
        return NatReport(NatType.UNKNOWN)
    seen = set(latest.values())
    translated = [o for o in seen if o != local]
    if not translated:
        return NatReport(NatType.PUBLIC, local, None, len(latest))
    if len(translated) != len(seen):
        return NatReport(NatType.UNKNOWN, targets=len(latest))
    if len({target[0] for target in latest}) < 2:
        return NatReport(NatType.UNKNOWN, targets=len(latest))
    preserved = all(port == local[1] for _, port in seen)
    if len(seen) == 1:
        return NatReport(NatType.CONE, next(iter(seen)), preserved, len(latest))
    return NatReport(NatType.SYMMETRIC, None, preserved, len(latest))
