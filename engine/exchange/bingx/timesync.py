"""Offset between this machine's clock and BingX server time.

Signed requests carry ``timestamp`` = local time + offset. The offset is refreshed lazily when
older than ``refresh_interval_s`` and immediately after a 100421 timestamp error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable

log = logging.getLogger(__name__)


class TimeSync:
    """Keeps ``offset_ms`` = BingX time - local time, measured at the midpoint of the round trip."""

    def __init__(
        self,
        fetch_server_time_ms: Callable[[], Awaitable[int]],
        *,
        refresh_interval_s: float = 300.0,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch_server_time_ms
        self._refresh_interval_s = refresh_interval_s
        self._wall = wall_clock
        self._mono = monotonic
        self._lock = asyncio.Lock()
        self.offset_ms: int = 0
        self.rtt_ms: float | None = None
        self._synced_at: float | None = None  # monotonic seconds of the last successful sync

    @property
    def synced(self) -> bool:
        """Whether at least one sync succeeded."""
        return self._synced_at is not None

    def local_ms(self) -> int:
        """This machine's wall clock in ms."""
        return int(self._wall() * 1000)

    def now_ms(self) -> int:
        """Best estimate of BingX time in ms."""
        return self.local_ms() + self.offset_ms

    def is_stale(self) -> bool:
        """True when never synced or the last sync is older than the refresh interval."""
        return self._synced_at is None or self._mono() - self._synced_at >= self._refresh_interval_s

    async def ensure_fresh(self) -> None:
        """Sync if stale. Cheap when fresh (no await on the lock)."""
        if self.is_stale():
            await self.sync(reason="periodic")

    async def sync(self, *, reason: str = "requested") -> int:
        """Measure the offset now; concurrent callers share one measurement."""
        requested_at = self._mono()
        async with self._lock:
            if self._synced_at is not None and self._synced_at >= requested_at:
                return self.offset_ms  # someone synced while we waited for the lock
            t0 = self._wall()
            server_ms = await self._fetch()
            t1 = self._wall()
            midpoint_ms = (t0 + t1) * 500.0
            new_offset = round(server_ms - midpoint_ms)
            self.rtt_ms = (t1 - t0) * 1000.0
            previous = self.offset_ms
            self.offset_ms = new_offset
            self._synced_at = self._mono()
            level = logging.INFO if reason != "periodic" or abs(new_offset - previous) > 1000 else logging.DEBUG
            log.log(level, "BingX clock offset %+d ms (rtt %.0f ms, %s sync)", new_offset, self.rtt_ms, reason)
            return new_offset
