"""Client-side request budgets for BingX (protocol notes section 8).

Each request takes a slot in every bucket it belongs to (its IP group, the per-endpoint IP
budget, the per-UID endpoint budget) *atomically*: the check and the record happen without an
``await`` in between, so concurrent callers on one event loop can never overshoot.

A slot is held from the moment the request is let through until ``window`` seconds after its
response arrived (or it failed). The server sees the request somewhere between those two
instants, so however slow the network or the event loop, no ``window``-long interval on the
server side can contain more than ``limit`` of our requests. (Counting from the send time
alone is not enough: a request delayed in flight lands in the server's next window.)

When BingX still answers 100410 / HTTP 429 the affected buckets are blocked until the window
resets (from ``X-RateLimit-Requests-Expire`` when present, else a default), and that is logged.
A caller may refuse to sit out a long block (``slot(..., max_block_s=...)``): it then gets a
:class:`~.errors.BingxRateLimitError` at once and decides itself (a stop placement must not
wait minutes silently).
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from .errors import BingxRateLimitError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Budget:
    """At most ``limit`` requests in any ``window_s``-second window."""

    limit: int
    window_s: float

    def __post_init__(self) -> None:
        if self.limit < 1 or self.window_s <= 0:
            raise ValueError(f"invalid budget {self.limit}/{self.window_s}s")


class _Bucket:
    """One named budget set: requests in flight plus completion times of recent ones."""

    __slots__ = ("name", "budgets", "in_flight", "done", "blocked_until", "block_reason", "horizon")

    def __init__(self, name: str, budgets: Sequence[Budget]) -> None:
        self.name = name
        self.budgets = tuple(budgets)
        self.horizon = max(b.window_s for b in self.budgets)
        self.in_flight = 0
        self.done: list[float] = []  # sorted completion times
        self.blocked_until = 0.0
        self.block_reason = ""

    def wait_time(self, now: float, guard_s: float) -> float | None:
        """Seconds until one more request fits every budget: 0 = now, None = when one completes."""
        cut = bisect.bisect_right(self.done, now - self.horizon - guard_s)
        if cut:
            del self.done[:cut]
        wait: float | None = max(0.0, self.blocked_until - now)
        for budget in self.budgets:
            window_start = now - budget.window_s - guard_s
            first_inside = bisect.bisect_right(self.done, window_start)
            recent = len(self.done) - first_inside
            excess = self.in_flight + recent - budget.limit + 1  # slots that must free up first
            if excess <= 0:
                continue
            if excess > recent:
                return None  # only a completion of an in-flight request can make room
            expires = self.done[first_inside + excess - 1] + budget.window_s + guard_s
            wait = max(wait or 0.0, expires - now)
        return wait


class Slot:
    """A granted request slot; :meth:`release` when the response (or failure) is in."""

    __slots__ = ("_limiter", "_buckets", "_released")

    def __init__(self, limiter: "RateLimiter", buckets: list[_Bucket]) -> None:
        self._limiter = limiter
        self._buckets = buckets
        self._released = False

    def release(self) -> None:
        """Start the slot's window (idempotent)."""
        if self._released:
            return
        self._released = True
        now = self._limiter._clock()
        for bucket in self._buckets:
            bucket.in_flight -= 1
            bisect.insort(bucket.done, now)
        self._limiter._wake()


class RateLimiter:
    """Shared async limiter. One instance per API key (per-UID budgets) and process (IP budgets)."""

    def __init__(self, *, guard_s: float = 0.01, clock: Callable[[], float] = time.monotonic) -> None:
        self._buckets: dict[str, _Bucket] = {}
        self._guard_s = guard_s
        self._clock = clock
        self._pulse: asyncio.Future[None] | None = None

    def configure(self, key: str, budgets: Iterable[Budget]) -> None:
        """Define (or replace) the budgets of bucket ``key``."""
        budgets = tuple(budgets)
        if not budgets:
            raise ValueError("a bucket needs at least one budget")
        self._buckets[key] = _Bucket(key, budgets)

    def has(self, key: str) -> bool:
        """Whether bucket ``key`` is configured."""
        return key in self._buckets

    def _wake(self) -> None:
        if self._pulse is not None and not self._pulse.done():
            self._pulse.set_result(None)
        self._pulse = None

    async def slot(self, keys: Sequence[str], *, max_block_s: float | None = None) -> Slot:
        """Wait until a request fits every bucket in ``keys`` and hold a slot for it.

        Unknown keys are ignored (an endpoint without a UID limit has no UID bucket). The caller
        must :meth:`Slot.release` it when the request is over (use ``try/finally``). When a bucket
        is blocked (after a BingX rate-limit answer) for longer than ``max_block_s``, raise
        :class:`BingxRateLimitError` instead of waiting; ordinary budget waits are always waited.
        """
        buckets = [self._buckets[k] for k in keys if k in self._buckets]
        while True:
            now = self._clock()
            if max_block_s is not None:
                blocked = max(buckets, key=lambda b: b.blocked_until, default=None)
                if blocked is not None and blocked.blocked_until - now > max_block_s:
                    left = blocked.blocked_until - now
                    raise BingxRateLimitError(
                        f"BingX rate limit: {blocked.name} is paused for another {left:.0f} s "
                        f"({blocked.block_reason}); not waiting", retry_after_s=left, endpoint=blocked.name)
            waits = [b.wait_time(now, self._guard_s) for b in buckets]
            if all(w is not None and w <= 0 for w in waits):
                for bucket in buckets:
                    bucket.in_flight += 1
                return Slot(self, buckets)
            finite = [w for w in waits if w is not None and w > 0]
            timeout = max(finite) if finite else None  # None: only a release can make room
            if self._pulse is None:
                self._pulse = asyncio.get_running_loop().create_future()
            # Sleep until the computed time, or until a release changes the picture.
            await asyncio.wait([self._pulse], timeout=timeout)

    async def acquire(self, keys: Sequence[str]) -> None:
        """Take and immediately release a slot (fire-and-forget sends, e.g. WS subscriptions)."""
        (await self.slot(keys)).release()

    def block(self, keys: Sequence[str] | None, seconds: float, *, reason: str) -> None:
        """Stop every bucket in ``keys`` (``None``: all buckets) for ``seconds`` (after a 100410/429/418/403)."""
        until = self._clock() + seconds
        names = []
        for key in (list(self._buckets) if keys is None else keys):
            bucket = self._buckets.get(key)
            if bucket is not None and until > bucket.blocked_until:
                bucket.blocked_until = until
                bucket.block_reason = reason
                names.append(key)
        if names:
            log.warning(
                "BingX rate limit hit (%s): pausing %s for %.1f s until the window resets",
                reason, ", ".join(names), seconds,
            )

    def blocked_for(self, key: str) -> float:
        """Seconds bucket ``key`` stays blocked (0 when free)."""
        bucket = self._buckets.get(key)
        return max(0.0, bucket.blocked_until - self._clock()) if bucket else 0.0


# Documented recovery after a rate-limit breach (protocol notes 8): "recover after 5 minutes".
RECOVERY_S = 300.0
# Up to this an ``X-RateLimit-Requests-Expire`` value is read as seconds, above it as milliseconds. The
# longest documented window is 10 s, so a seconds countdown never exceeds it; reading "250" (ms left) as
# 250 s would silence the bot for minutes, while reading "7" (ms) as 7 s costs at most 10 s.
_SECONDS_READING_MAX = 10.0


def read_expire_header(value: str | None, *, now_ms: int, max_s: float = RECOVERY_S) -> float | None:
    """Seconds until the rate-limit window resets, from ``X-RateLimit-Requests-Expire``, or ``None``.

    The unit is not documented, so every plausible reading is covered by taking the longer one:
    an absolute epoch time when the value is that large (ms from 1e12, s from 1e9), else a
    remaining time: up to 10 it is read as seconds (``5`` = 5 s, not 5 ms), above that as ms.
    Missing, unreadable, zero or past values give ``None`` (the caller picks a conservative
    default); the result is capped at ``max_s``.
    """
    if not value:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    if number != number or number <= 0:  # NaN or nothing left: tells nothing
        return None
    if number >= 1e12:
        seconds = (number - now_ms) / 1000.0
    elif number >= 1e9:
        seconds = number - now_ms / 1000.0
    elif number <= _SECONDS_READING_MAX:
        seconds = number
    else:
        seconds = number / 1000.0
    if seconds <= 0:
        return None
    return min(seconds, max_s)
