"""Token buckets per source address for pre-handshake messages.

Handshake messages cost Diffie-Hellman work before we know who sent them;
a bucket per source IP (wireguard-go's numbers: 20 a second, burst 5) keeps
one noisy source from taking that work from everyone else.
"""

from __future__ import annotations

RATE_PER_S = 20.0
BURST = 5.0
# Bound the table so spoofed sources cannot grow it without limit.
MAX_SOURCES = 4096


class TokenBuckets:
    def __init__(self, rate_per_s: float = RATE_PER_S, burst: float = BURST) -> None:
        self._rate = rate_per_s
        self._burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}  # source -> (tokens, last)

    def take(self, source: str, now: float) -> bool:
        tokens, last = self._buckets.get(source, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        if len(self._buckets) >= MAX_SOURCES and source not in self._buckets:
            self._expire(now)
        ok = tokens >= 1.0
        self._buckets[source] = (tokens - 1.0 if ok else tokens, now)
        return ok

    def _expire(self, now: float) -> None:
        """Forget sources whose bucket has refilled: they are back to the default."""
        full_after = self._burst / self._rate
        self._buckets = {s: v for s, v in self._buckets.items() if now - v[1] < full_after}
        if len(self._buckets) >= MAX_SOURCES:
            self._buckets.clear()
