"""The account's available margin, read from the exchange and kept fresh off the order path.

The entry gate checks the margin left after an order (``risk.min_free_margin_pct``). Asking the
exchange at that moment puts a REST round trip (tens of milliseconds to BingX) between a closed
candle and the order. Instead the value is read ahead of time and re-read soon after anything that
can change it: every account-stream event and every order update marks it stale and schedules a
read (bursts coalesce), and it also goes stale with age. The gate waits for a read only when the
value is stale, so the figure it sees is never older than the last known change; the exchange's
own margin check still stands behind it.
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
        try:
            await self.refresh()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the gate reads again (and refuses the entry) if the exchange still cannot say
            logger.warning("available margin could not be read: %s: %s", type(exc).__name__, exc)

    async def close(self) -> None:
        """Cancel the background reads."""
        tasks = [t for t in (self._scheduled, self._reading) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
