"""Sliding window against replayed transport counters (RFC 6479's idea).

Consulted only after the AEAD tag verified, as in WireGuard: an attacker can
not move the window with forged packets. Bit i of the bitmap stands for
counter `top - i`.
"""

from __future__ import annotations

from .timers import REJECT_AFTER_MESSAGES  # a counter at or above it is never accepted

WINDOW_SIZE = 2048
_MASK = (1 << WINDOW_SIZE) - 1


class ReplayWindow:
    __slots__ = ("_bitmap", "_top")

    def __init__(self) -> None:
        self._top = -1
        self._bitmap = 0

    def accept(self, counter: int) -> bool:
        """Record `counter` and say whether it is new and inside the window."""
        if counter >= REJECT_AFTER_MESSAGES:
            return False
        top = self._top
        if counter > top:
            shift = counter - top
            self._bitmap = ((self._bitmap << shift) | 1) & _MASK if shift < WINDOW_SIZE else 1
            self._top = counter
            return True
        behind = top - counter
        if behind >= WINDOW_SIZE:
            return False
        bit = 1 << behind
        if self._bitmap & bit:
            return False
        self._bitmap |= bit
        return True
