"""Primary/standby subnet routers: is a route's primary reachable, seen from this node?

Theory of operation. A network may be one node's `routes` (the primary) and another's
`standby_routes`; the standby carries it only while the primary is unreachable. Every
node but the primary judges that for itself, from its own session with the primary:
the ordinary liveness signals are too slow here (a keepalive every 25 s, "reachable"
within three of them), so we PING each watched primary every PROBE_EVERY_S, inside its
session, and count any authenticated packet from it (the PONG, data, keepalives) as
contact. The node hands us what it heard (`Peer.last_received_at`), we say when a
primary went DOWN or came back UP.

- UP -> DOWN: nothing heard for DOWN_AFTER_S (one lost probe is no failure), or, for a
  primary never heard since we began watching it, for START_GRACE_S (a first
  handshake may need its one retry). With checks every CHECK_EVERY_S the standby takes
  over at most DOWN_AFTER_S + CHECK_EVERY_S = 3 s after the primary's last answer.
- DOWN -> UP: contact without a silence over GAP_S for UP_AFTER_S (hysteresis: a
  primary that answers one probe in three does not make the route flap).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from enum import Enum

import attrs

PROBE_EVERY_S = 1.0
CHECK_EVERY_S = 0.5
DOWN_AFTER_S = 2.5
START_GRACE_S = 6.0
GAP_S = 1.5
UP_AFTER_S = 3.0


class PrimaryState(Enum):
    UP = "up"
    DOWN = "down"


@attrs.frozen
class Switch:
    """A primary changed state; `reason` says what we saw."""

    primary: str
    state: PrimaryState
    reason: str


@attrs.define
class _Primary:
    watched_since: float
    state: PrimaryState = PrimaryState.UP
    last_heard: float | None = None  # the newest `last_received_at` we saw
    contact_since: float | None = None  # start of the current run of contact


class StandbyWatch:
    """The primaries of the routes that have a standby (not ourselves), by node name."""

    def __init__(self) -> None:
        self._primaries: dict[str, _Primary] = {}
        self._next_check = float("inf")
        self._next_probe = float("inf")

    def watch(self, names: Iterable[str], now: float) -> None:
        """Watch these primaries from now on (those already watched keep their state)."""
        wanted = set(names)
        self._primaries = {name: self._primaries.get(name) or _Primary(now)
                           for name in sorted(wanted)}
        if not wanted:
            self._next_check = self._next_probe = float("inf")
        elif self._next_check == float("inf"):
            self._next_check = self._next_probe = now

    def start(self, now: float) -> None:
        """The node starts serving: every primary is watched from now."""
        self._primaries = {name: _Primary(now) for name in self._primaries}
        self._next_check = self._next_probe = now if self._primaries else float("inf")

    def down(self) -> frozenset[str]:
        return frozenset(n for n, p in self._primaries.items() if p.state is PrimaryState.DOWN)

    def states(self) -> dict[str, PrimaryState]:
        return {name: p.state for name, p in self._primaries.items()}

    def next_deadline(self) -> float | None:
        deadline = min(self._next_check, self._next_probe)
        return None if deadline == float("inf") else deadline

    def probes_due(self, now: float) -> list[str]:
        """The primaries to PING now."""
        if now < self._next_probe:
            return []
        self._next_probe = now + PROBE_EVERY_S
        return list(self._primaries)

    def check(self, heard: Callable[[str], float | None], now: float) -> list[Switch]:
        """`heard(name)`: when that primary was last heard from (None: never); asked
        only when a check is due. Returns the primaries that changed state."""
        if now < self._next_check:
            return []
        self._next_check = now + CHECK_EVERY_S
        switches = []
        for name, primary in self._primaries.items():
            switch = _observe(name, primary, heard(name), now)
            if switch is not None:
                primary.state = switch.state
                switches.append(switch)
        return switches


def _observe(name: str, p: _Primary, last: float | None, now: float) -> Switch | None:
    if last is not None and (p.last_heard is None or last > p.last_heard):
        # `last - p.last_heard` bounds every silence between our two looks
        if p.contact_since is None or p.last_heard is None or last - p.last_heard > GAP_S:
            p.contact_since = last
        p.last_heard = last
    if last is None or now - last > GAP_S:
        p.contact_since = None
    if p.state is PrimaryState.UP:
        if last is None or last < p.watched_since:
            if now - p.watched_since >= START_GRACE_S:
                return Switch(name, PrimaryState.DOWN, f"no answer in the {START_GRACE_S:g} s "
                              "since we began watching it")
        elif now - last >= DOWN_AFTER_S:
            return Switch(name, PrimaryState.DOWN, f"no answer for {now - last:.1f} s, "
                          f"probed every {PROBE_EVERY_S:g} s")
        return None
    if p.contact_since is not None and now - p.contact_since >= UP_AFTER_S:
        return Switch(name, PrimaryState.UP, f"answering again for {now - p.contact_since:.1f} s")
    return None
