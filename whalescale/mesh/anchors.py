"""Anchors are first-class (anti-patterns 2.1, 3.4): know how many are reachable, and say
so when it is only one (or none)."""

from __future__ import annotations

from enum import Enum

import attrs


class AnchorHealth(Enum):
    OK = "ok"  # two or more anchors reachable (counting ourselves if we are one)
    ONLY_ONE = "only one anchor reachable"
    NONE = "no anchor reachable"


@attrs.define
class AnchorWatch:
    """The anchors of the mesh other than ourselves, and the health last reported."""

    anchors: frozenset[bytes]  # static keys of the anchors we can talk to
    reported: AnchorHealth = AnchorHealth.OK

    def health(self, reachable: set[bytes], self_is_anchor: bool) -> AnchorHealth:
        count = len(self.anchors & reachable) + (1 if self_is_anchor else 0)
        if count == 0:
            return AnchorHealth.NONE
        return AnchorHealth.ONLY_ONE if count == 1 else AnchorHealth.OK

    def changed(self, reachable: set[bytes], self_is_anchor: bool) -> AnchorHealth | None:
        """The health if it differs from the one last reported (which it becomes)."""
        new = self.health(reachable, self_is_anchor)
        if new is self.reported:
            return None
        self.reported = new
        return new

