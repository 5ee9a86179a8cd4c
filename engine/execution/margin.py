"""The account's available margin, read from the exchange and kept fresh off the order path.

The entry gate checks the margin left after an order (``risk.min_free_margin_pct``). Asking the
exchange at that moment puts a REST round trip (tens of milliseconds to BingX) between a closed
candle and the order. Instead the value is read ahead of time and re-read soon after anything that
can change it: every account-stream event and every order update marks it stale and schedules a
read (bursts coalesce). It also goes stale with age (unrealised PnL moves it without an event), so
:meth:`MarginCache.keep_fresh` re-reads it in the background well before that: signals come
minutes apart, and without it nearly every entry would find the value expired and wait for a read.
The gate waits for a read only when the value is stale, so the figure it sees is never older than
the last known change; the exchange's own margin check still stands behind it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal

logger = logging.getLogger(__name__)

DEFAULT_MAX_AGE_S = 15.0
DEFAULT_SETTLE_S = 0.2  # after an event, wait this long for the rest of its burst before reading
DEFAULT_REFRESH_EVERY_S = 5.0  # keep_fresh: a third of the age limit, so a read failing twice still leaves time


class MarginCache:
    """Available margin with one reader at a time; stale after a change or ``max_age_s``."""

    def __init__(self, read: Callable[[], Awaitable[Decimal]], *, max_age_s: float = DEFAULT_MAX_AGE_S,
                 settle_s: float = DEFAULT_SETTLE_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._read = read
        self.max_age_s = max_age_s
        self.settle_s = settle_s
        self._clock = clock
        self._value: Decimal | None = None
        self._read_at = 0.0
        self._generation = 0  # bumped by every change; a read started before a change is already stale
        self._value_generation = -1
        self._reading: asyncio.Task[Decimal] | None = None
        self._reading_generation = -1
        self._scheduled: asyncio.Task[None] | None = None
        self._keeper: asyncio.Task[None] | None = None

    @property
    def fresh(self) -> bool:
        """Whether the held value can be used without asking the exchange."""
        return (self._value is not None and self._value_generation == self._generation
                and self._clock() - self._read_at <= self.max_age_s)

    async def get(self) -> Decimal:
        """The available margin: the held value when fresh, else a read (raises when the exchange cannot say)."""
        if self.fresh:
            assert self._value is not None
            return self._value
        return await self.refresh()

    def invalidate(self) -> None:
        """Something changed the account: stale now, read again shortly (in the background)."""
        self._generation += 1
        if self._scheduled is None or self._scheduled.done():
            self._scheduled = asyncio.get_running_loop().create_task(self._refresh_soon(), name="margin-refresh")

    def keep_fresh(self, every_s: float = DEFAULT_REFRESH_EVERY_S) -> None:
        """Re-read in the background whenever the value is ``every_s`` old, so an entry finds it fresh."""
        if not 0 < every_s < self.max_age_s:
            raise ValueError(f"every_s must be between 0 and max_age_s ({self.max_age_s}), got {every_s}")
        if self._keeper is None or self._keeper.done():
            self._keeper = asyncio.get_running_loop().create_task(self._keep_fresh(every_s), name="margin-keep-fresh")

    async def _keep_fresh(self, every_s: float) -> None:
        while True:
            age = self._clock() - self._read_at
            if self._value is not None and age < every_s:
                await asyncio.sleep(every_s - age)  # read recently (after an event, or by the gate): not yet
                continue
            await self._refresh_logged()
            await asyncio.sleep(every_s)

    async def refresh(self) -> Decimal:
        """Read the exchange now; a read already under way is joined when it started after the last change."""
        wanted = self._generation
        reading = self._reading
        if reading is None or reading.done() or self._reading_generation < wanted:
            reading = self._reading = asyncio.get_running_loop().create_task(self._read_once(wanted))
            self._reading_generation = wanted
        return await asyncio.shield(reading)  # a cancelled caller does not cancel the read others may wait for

    async def _read_once(self, generation: int) -> Decimal:
        value = await self._read()
        if generation >= self._value_generation:  # an older read finishing late never replaces a newer one
            self._value, self._read_at, self._value_generation = value, self._clock(), generation
        return value

    async def _refresh_soon(self) -> None:
        await asyncio.sleep(self.settle_s)
        await self._refresh_logged()

    async def _refresh_logged(self) -> None:
        try:
            await self.refresh()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the gate reads again (and refuses the entry) if the exchange still cannot say
            logger.warning("available margin could not be read: %s: %s", type(exc).__name__, exc)

    async def close(self) -> None:
        """Cancel the background reads."""
        tasks = [t for t in (self._scheduled, self._reading, self._keeper) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
