"""Sliding-window rate limits: per endpoint per UID, and per IP group (``bingx-protocol.md`` 8).

Limits are counted in wall-clock time (they are about the client's request rate, not
the replayed market), so they behave the same at every replay speed. The simulator
serves a single account from loopback, so "per UID" and "per IP" are one bucket each.

Group numbers follow the docs: group 1 (market data) 500 / 10 s and 1000 / min in
total; groups 2 and 3 (account and trade) 2000 / 10 s together and 300 / 10 s per
interface. ``scale`` multiplies every limit (``0`` disables limiting).
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Hashable


@dataclass(frozen=True, slots=True)
class Window:
    """At most ``count`` requests in any ``seconds``-long window."""

    count: int
    seconds: float


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether a request may pass, the requests left in the tightest window, and ms until it frees up."""

    allowed: bool
    remaining: int
    expire_ms: int


GROUP_WINDOWS: dict[int, list[tuple[str, Window]]] = {
    1: [("ip-grp1-10s", Window(500, 10.0)), ("ip-grp1-60s", Window(1000, 60.0))],
    2: [("ip-grp23-10s", Window(2000, 10.0))],
    3: [("ip-grp23-10s", Window(2000, 10.0))],
}
PER_INTERFACE_IP = Window(300, 10.0)


class RateLimiter:
    """Counts requests in named sliding windows and answers allow/deny with header values."""

    def __init__(self, scale: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.scale = scale
        self._clock = clock
        self._hits: dict[Hashable, deque[float]] = {}

    def _scaled(self, window: Window) -> int:
        return max(1, math.floor(window.count * self.scale))

    def check(self, windows: list[tuple[Hashable, Window]]) -> Decision:
        """Record one request against every window, unless one of them is full (then record nothing)."""
        if self.scale <= 0 or not windows:
            return Decision(True, 1_000_000, 0)
        now = self._clock()
        remaining = None
        expire_ms = 0
        allowed = True
        for key, window in windows:
            hits = self._hits.setdefault(key, deque())
            horizon = now - window.seconds
            while hits and hits[0] <= horizon:
                hits.popleft()
            limit = self._scaled(window)
            left = limit - len(hits)
            until = int(((hits[0] + window.seconds) - now) * 1000) if hits else int(window.seconds * 1000)
            if left <= 0:
                allowed = False
            if remaining is None or left < remaining:
                remaining = left
                expire_ms = max(0, until)
        if allowed:
            for key, _ in windows:
                self._hits[key].append(now)
            remaining = (remaining or 1) - 1
        return Decision(allowed, max(0, remaining or 0), expire_ms)

    def reset(self) -> None:
        """Forget all counted requests."""
        self._hits.clear()
