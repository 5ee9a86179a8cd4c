"""The live market-data pipeline of one symbol: streams -> closed candles -> gap backfill -> validation -> sink.

``MarketFeed`` turns kline pushes or trades into closed 1m candles, asks a :class:`CandleSource`
(the exchange REST client behind a small interface) for any minutes missing before a new candle
so that live trading sees the same sequence a backtest of the exchange's history would, validates
every candle through :class:`~engine.market.stream.CandleStream`, and hands them, in order, to a
:class:`CandleSink` (the symbol's trading engine). At start, ``warm_up`` loads enough history for
every indicator to be ready at once.

A minute whose kline stream went silent before its end (or whose stream is down when the clock
closes it) is not closed from its last, partial snapshot: it is fetched from the ``CandleSource``
instead, and left as a gap for the next backfill when that fails. ``accept_tick`` is the sanity
gate of live trade prices (:class:`~engine.market.stream.TickGuard`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Callable, Literal, Protocol

from engine.market.builders import DEFAULT_GRACE_MS, DEFAULT_STALE_AFTER_S, KlineCandleBuilder, TradeCandleBuilder
from engine.market.candle import ONE_MINUTE_MS, Candle
from engine.market.events import KlineUpdate, TradeTick
from engine.market.stream import CandleStream, TickGuard
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
    """Closed-candle pipeline for one symbol; every ``on_*`` call is processed in arrival order.

    By default an ``on_*`` call that needs the source (a gap to backfill, a stale minute to fetch) returns
    once that is done. With ``fetch_in_background`` (the live runtime: its calls come from the WebSocket read
    loop, which must keep answering Ping) it returns at once and the fetch runs in a task; candles are still
    handed on in order, none before the fetches of the candles before it (``drained`` waits for them).
    """

    def __init__(
        self,
        symbol: str,
        sink: CandleSink,
        *,
        source: CandleSource | None = None,
        candles_from: Literal["kline", "trades"] = "kline",
        grace_ms: int = DEFAULT_GRACE_MS,
        stale_after_s: float = DEFAULT_STALE_AFTER_S,
        warmup_candles: int = 300,
        backfill_chunk: int = 1000,
        max_backfill_minutes: int = 7 * 1440,
        rules: ValidationRules | None = None,
        buffer_size: int = 1500,
        fetch_in_background: bool = False,
    ) -> None:
        self.symbol = symbol
        self.sink = sink
        self.source = source
        self.candles_from = candles_from
        self.warmup_candles = warmup_candles
        self.backfill_chunk = backfill_chunk
        self.max_backfill_minutes = max_backfill_minutes
        self.stream = CandleStream(symbol, rules=rules, maxlen=buffer_size)
        self.klines = KlineCandleBuilder(symbol, grace_ms=grace_ms, stale_after_s=stale_after_s)
        self.trades = TradeCandleBuilder(symbol, grace_ms=grace_ms)
        self.ticks = TickGuard(symbol, self.stream.rules)
        self.backfilled = 0
        self.backfill_failures = 0
        self.stale_refetched = 0  # minutes closed on a stale stream that the source then gave
        self.fetch_in_background = fetch_in_background
        self._lock = asyncio.Lock()
        self._backlog: deque[tuple[Candle, bool]] = deque()  # background mode: (candle, withheld) waiting for a fetch
        self._fetcher: asyncio.Task[None] | None = None

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

    async def on_kline(self, update: KlineUpdate, received_s: float | None = None) -> None:
        """A kline push (used for candles when ``candles_from == "kline"``), received at ``received_s``
        (``time.monotonic()``; now when omitted)."""
        if self.candles_from != "kline":
            return
        if received_s is None:
            received_s = time.monotonic()  # on arrival, not after waiting for the lock (a backfill may hold it)
        await self._step(lambda: self.klines.on_update(update, received_s))

    async def on_trade(self, tick: TradeTick) -> None:
        """A public trade: builds candles in ``"trades"`` mode, and is the clock for the kline builder."""
        if self.candles_from == "trades":
            await self._step(lambda: self.trades.on_trade(tick))
        elif not self.klines.clock_cannot_close(tick.time_ms):
            # (most trades cannot close anything, wherever in the queue of on_* calls they run: skipped, no lock)
            now_s = time.monotonic()
            await self._step(lambda: self.klines.on_time(tick.time_ms, now_s))

    async def on_clock(self, now_ms: int, now_s: float | None = None, *, stream_down: bool = False) -> None:
        """Finalise a forming candle whose minute (plus grace) is over, e.g. from a 1 s timer.

        ``now_s``: the ``time.monotonic()`` at which ``now_ms`` was read (now when omitted); ``stream_down``: the
        market stream is known to be disconnected, so a kline snapshot cannot be trusted to be the minute's last.
        """
        if self.candles_from != "kline":
            await self._step(lambda: self.trades.on_time(now_ms))
            return
        seen_s = time.monotonic() if now_s is None else now_s
        await self._step(lambda: self.klines.on_time(now_ms, seen_s, stream_down=stream_down))

    def accept_tick(self, price: float) -> bool:
        """Whether a live trade price is sane enough to move prices and fill paper orders (see ``TickGuard``).

        Before the first trade, the reference is the last accepted candle's close (warm-up or live).
        """
        last = self.stream.last
        return self.ticks.accept(price, last.close if last is not None else None)

    async def push_closed(self, candle: Candle) -> None:
        """Feed an already closed candle (another candle source, replay) through backfill and validation."""
        await self._step(lambda: [candle])

    async def drained(self) -> None:
        """Until the background fetch (``fetch_in_background``) has handed on every candle waiting for it."""
        while self._fetcher is not None:
            await asyncio.wait({self._fetcher})

    async def stop_fetch(self) -> None:
        """Stop a background fetch (shutdown); the candles waiting for it are dropped."""
        self._backlog.clear()
        fetcher = self._fetcher
        if fetcher is not None:
            fetcher.cancel()
            await asyncio.wait({fetcher})

    async def _step(self, step: Callable[[], list[Candle]]) -> None:
        """Run one builder ``step`` in arrival order and hand on the candles it finalises.

        In the foreground (the default) the call returns once they are handed on, fetching over the source
        first where needed, and later calls wait for it (the lock). With ``fetch_in_background`` the step and
        every candle that needs no fetch are handled now, without waiting; the others, and every candle after
        them, wait in ``_backlog`` for one background task, so the caller (the WebSocket read loop) goes on.
        """
        if self.fetch_in_background:
            for candle in step():
                self._hand_on(candle, withheld=False)
            for snapshot in self.klines.take_withheld():
                self._hand_on(snapshot, withheld=True)
            return
        async with self._lock:
            for candle in step():
                await self._closed(candle)
            for snapshot in self.klines.take_withheld():
                await self._replace(snapshot)

    def _hand_on(self, candle: Candle, *, withheld: bool) -> None:
        """Background mode: accept ``candle`` now, or queue it behind a fetch (its own, or an earlier candle's)."""
        if not (withheld or self._backlog or (self.source is not None and self.stream.missing_before(candle))):
            if self.stream.accept(candle):
                self.sink.on_candle(candle)
            return
        self._backlog.append((candle, withheld))
        if self._fetcher is None:
            self._fetcher = asyncio.create_task(self._work_backlog(), name=f"feed-fetch-{self.symbol}")

    async def _work_backlog(self) -> None:
        """The background fetch: the queued candles in order, each after its backfill (or its REST replacement)."""
        backlog = self._backlog
        try:
            while backlog:
                candle, withheld = backlog[0]  # stays queued while fetched: a candle arriving meanwhile waits behind
                try:
                    await (self._replace(candle) if withheld else self._closed(candle))
                except asyncio.CancelledError:
                    raise
                except Exception:  # never leave the queue stuck behind one candle
                    logger.exception("candle %d could not be handed on", candle.open_time_ms, extra={"symbol": self.symbol})
                if backlog and backlog[0][0] is candle:
                    backlog.popleft()
        finally:
            self._fetcher = None

    async def _replace(self, snapshot: Candle) -> None:
        """Fetch a minute the kline builder withheld as stale from the source, in place of its partial snapshot.

        The fetched bar goes through ``_closed`` (backfill before it, validation). When the source cannot give it,
        nothing is emitted: the stream's last minute stays the one before, so the next candle's backfill asks again
        and, failing that, the minute stays a logged gap.
        """
        start = snapshot.open_time_ms
        fetched = await self._fetch(start, start + ONE_MINUTE_MS) if self.source is not None else []
        if fetched:
            self.stale_refetched += 1
            logger.warning("kline stream was stale when minute %d closed: the exchange's bar replaces the last push %r",
                           start, snapshot, extra={"symbol": self.symbol})
            for candle in fetched:
                await self._closed(candle)
        else:
            logger.warning("kline stream was stale when minute %d closed and the exchange did not give the bar: "
                           "left out (the next candle's backfill asks again); last push %r", start, snapshot,
                           extra={"symbol": self.symbol})

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
