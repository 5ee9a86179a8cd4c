"""The live market-data pipeline of one symbol: streams -> closed candles -> gap backfill -> validation -> sink.

``MarketFeed`` turns kline pushes or trades into closed 1m candles, asks a :class:`CandleSource`
(the exchange REST client behind a small interface) for any minutes missing before a new candle
so that live trading sees the same sequence a backtest of the exchange's history would, validates
every candle through :class:`~engine.market.stream.CandleStream`, and hands them, in order, to a
:class:`CandleSink` (the symbol's trading engine). At start, ``warm_up`` loads enough history for
every indicator to be ready at once.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Literal, Protocol

from engine.market.builders import DEFAULT_GRACE_MS, KlineCandleBuilder, TradeCandleBuilder
from engine.market.candle import ONE_MINUTE_MS, Candle
from engine.market.events import KlineUpdate, TradeTick
from engine.market.stream import CandleStream
from engine.market.validation import ValidationRules

logger = logging.getLogger(__name__)


class CandleSource(Protocol):
    """Historical 1m candles, e.g. the exchange's REST klines."""

    async def fetch_candles(self, symbol: str, start_ms: int, end_ms: int) -> list[Candle]:
        """Closed 1m candles with ``start_ms <= open_time_ms < end_ms`` (any order; the feed sorts)."""
        ...


class CandleSink(Protocol):
    """Where closed, validated candles go (``engine.trading.SymbolEngine`` implements it)."""

    def on_candle(self, candle: Candle) -> None:
        """A closed candle to trade on."""
        ...

    def on_warmup_candle(self, candle: Candle) -> None:
        """A historical candle loaded at start: update indicators, do not trade."""
        ...


class MarketFeed:
    """Closed-candle pipeline for one symbol; every ``on_*`` call is processed in arrival order."""

    def __init__(
        self,
        symbol: str,
        sink: CandleSink,
        *,
        source: CandleSource | None = None,
        candles_from: Literal["kline", "trades"] = "kline",
        grace_ms: int = DEFAULT_GRACE_MS,
        warmup_candles: int = 300,
        backfill_chunk: int = 1000,
        max_backfill_minutes: int = 7 * 1440,
        rules: ValidationRules | None = None,
        buffer_size: int = 1500,
    ) -> None:
        self.symbol = symbol
        self.sink = sink
        self.source = source
        self.candles_from = candles_from
        self.warmup_candles = warmup_candles
        self.backfill_chunk = backfill_chunk
        self.max_backfill_minutes = max_backfill_minutes
        self.stream = CandleStream(symbol, rules=rules, maxlen=buffer_size)
        self.klines = KlineCandleBuilder(symbol, grace_ms=grace_ms)
        self.trades = TradeCandleBuilder(symbol, grace_ms=grace_ms)
        self.backfilled = 0
        self.backfill_failures = 0
        self._lock = asyncio.Lock()

    async def warm_up(self, now_ms: int) -> int:
        """Load the ``warmup_candles`` closed minutes before ``now_ms`` into the sink (no trading on them).

        Returns how many candles were accepted. A failing source is logged and leaves the feed
        cold (strategies then become ready as live candles arrive) rather than crashing start-up.
        """
        if self.source is None or self.warmup_candles <= 0:
            return 0
        end = now_ms - now_ms % ONE_MINUTE_MS  # the forming minute is not closed yet
        start = end - self.warmup_candles * ONE_MINUTE_MS
        async with self._lock:
            candles = await self._fetch(start, end)
            count = 0
            for candle in candles:
                if self.stream.accept(candle):
                    self.sink.on_warmup_candle(candle)
                    count += 1
        logger.info("warm-up loaded %d candle(s)", count, extra={"symbol": self.symbol})
        return count

    async def on_kline(self, update: KlineUpdate) -> None:
        """A kline push (used for candles when ``candles_from == "kline"``)."""
        if self.candles_from != "kline":
            return
        async with self._lock:
            for candle in self.klines.on_update(update):
                await self._closed(candle)

    async def on_trade(self, tick: TradeTick) -> None:
        """A public trade: builds candles in ``"trades"`` mode, and is the clock for the kline builder."""
        if self.candles_from == "kline" and self.klines.clock_cannot_close(tick.time_ms):
            # Most trades: a no-op wherever in the queue of on_* calls it would run, so skip the lock.
            return
        async with self._lock:
            if self.candles_from == "trades":
                closed = self.trades.on_trade(tick)
            else:
                closed = self.klines.on_time(tick.time_ms)
            for candle in closed:
                await self._closed(candle)

    async def on_clock(self, now_ms: int) -> None:
        """Finalise a forming candle whose minute (plus grace) is over, e.g. from a 1 s timer."""
        async with self._lock:
            builder = self.klines if self.candles_from == "kline" else self.trades
            for candle in builder.on_time(now_ms):
                await self._closed(candle)

    async def push_closed(self, candle: Candle) -> None:
        """Feed an already closed candle (another candle source, replay) through backfill and validation."""
        async with self._lock:
            await self._closed(candle)

    async def _closed(self, candle: Candle) -> None:
        missing = self.stream.missing_before(candle)
        if missing and self.source is not None:
            last = self.stream.last
            assert last is not None
            start = last.open_time_ms + ONE_MINUTE_MS
            if missing > self.max_backfill_minutes:
                logger.warning(
                    "gap of %d minutes exceeds max_backfill_minutes=%d; backfilling only the latest part",
                    missing,
                    self.max_backfill_minutes,
                    extra={"symbol": self.symbol},
                )
                start = candle.open_time_ms - self.max_backfill_minutes * ONE_MINUTE_MS
            for filled in await self._fetch(start, candle.open_time_ms):
                if self.stream.accept(filled):
                    self.backfilled += 1
                    self.sink.on_candle(filled)
        if self.stream.accept(candle):
            self.sink.on_candle(candle)

    async def _fetch(self, start_ms: int, end_ms: int) -> list[Candle]:
        """Fetch ``[start_ms, end_ms)`` in chunks; keep only in-range candles, sorted and de-duplicated."""
        assert self.source is not None
        found: dict[int, Candle] = {}
        step = self.backfill_chunk * ONE_MINUTE_MS
        chunk_start = start_ms
        while chunk_start < end_ms:
            chunk_end = min(chunk_start + step, end_ms)
            try:
                candles = await self.source.fetch_candles(self.symbol, chunk_start, chunk_end)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a failed backfill must not kill the feed; the gap stays and is logged
                self.backfill_failures += 1
                logger.warning(
                    "candle backfill %d..%d failed: %s: %s",
                    chunk_start,
                    chunk_end,
                    type(exc).__name__,
                    exc,
                    extra={"symbol": self.symbol},
                )
                break
            for candle in candles:
                if chunk_start <= candle.open_time_ms < chunk_end:
                    found[candle.open_time_ms] = candle
            chunk_start = chunk_end
        return [found[t] for t in sorted(found)]
