"""Endpoints by DNS name: which names the mesh file uses, when to look them up, and what
they stand for now. The shell does the lookups (a `Resolve` effect, answered with
`Node.set_resolved`); nothing here blocks or does I/O.

A name is looked up at start, every `RESOLVE_EVERY_S` (a home anchor on a dynamic
address moves now and then), and at once when a peer that has a named endpoint stops
answering (no sooner than `RESOLVE_AGAIN_S` after the last lookup). A failed lookup keeps
the addresses found before: a DNS outage must not take down sessions that work.
"""

from __future__ import annotations

import logging

from ..config import Endpoint, Mesh

Addr = tuple[str, int]
RESOLVE_EVERY_S = 60.0
RESOLVE_AGAIN_S = 5.0


class Names:
    def __init__(self, mesh: Mesh) -> None:
        self.addresses: dict[str, tuple[str, ...]] = {}
        self._errors: dict[str, str] = {}
        self._next: dict[str, float] = {}  # name -> when it is due
        self._last: dict[str, float] = {}  # name -> when it was last asked for
        self.set_mesh(mesh)

    def set_mesh(self, mesh: Mesh) -> None:
        """The names of a (new) mesh file: new ones are due now, gone ones forgotten."""
        wanted = {e.host for e in _endpoints(mesh) if e.named}
        for name in list(self._next):
            if name not in wanted:
                for table in (self.addresses, self._errors, self._next, self._last):
                    table.pop(name, None)
        for name in wanted:
            self._next.setdefault(name, float("-inf"))

    def expand(self, endpoints: tuple[Endpoint, ...]) -> tuple[Addr, ...]:
        """Endpoints as addresses: a name stands for what it resolved to (nothing yet)."""
        found: list[Addr] = []
        for e in endpoints:
            hosts = self.addresses.get(e.host, ()) if e.named else (e.host,)
            found += [(host, e.port) for host in hosts]
        return tuple(dict.fromkeys(found))

    def due(self, now: float) -> tuple[str, ...]:
        """Names to look up now; each is not due again until its answer's next round."""
        names = tuple(sorted(n for n, at in self._next.items() if at <= now))
        for name in names:
            self._next[name] = now + RESOLVE_EVERY_S
            self._last[name] = now
        return names

    def soon(self, endpoints: tuple[Endpoint, ...], now: float) -> None:
        """A peer with these endpoints went silent: look its names up again now."""
        for e in endpoints:
            if e.named and e.host in self._next:
                self._next[e.host] = max(now, self._last.get(e.host, -RESOLVE_AGAIN_S)
                                         + RESOLVE_AGAIN_S)

    def next_deadline(self) -> float | None:
        return min(self._next.values(), default=None)

    def answer(self, name: str, addresses: list[str] | None, error: str
               ) -> tuple[bool, tuple[int, str] | None]:
        """A lookup's outcome (`addresses` None: it failed with `error`): whether what
        the name stands for changed, and a log line when there is something to say."""
        if name not in self._next:
            return False, None  # dropped from the mesh while it was looked up
        old = self.addresses.get(name)
        if not addresses:
            reason = error or "no address"
            if self._errors.get(name) == reason:
                return False, None
            self._errors[name] = reason
            kept = f"keeping {', '.join(old)}" if old else "not reachable by it yet"
            return False, (logging.WARNING, f"dns: {name}: {reason}; {kept}")
        self._errors.pop(name, None)
        new = tuple(dict.fromkeys(addresses))
        if new == old:
            return False, None
        self.addresses[name] = new
        was = f" (was {', '.join(old)})" if old else ""
        return True, (logging.INFO, f"dns: {name} is {', '.join(new)}{was}")


def _endpoints(mesh: Mesh) -> list[Endpoint]:
    found = [e for node in mesh.nodes for e in node.endpoints]
    return found + [wg.endpoint for wg in mesh.wireguard if wg.endpoint is not None]
