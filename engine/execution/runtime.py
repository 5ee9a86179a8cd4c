"""``TradingRuntime``: one process's glue, market stream -> MarketFeed -> SymbolEngine -> ExecutionBroker.

The same objects run in both modes; ``config.mode`` picks the venue:

* ``paper``: :class:`PaperVenue`, fed with the public trades of the market stream (no API key
  needed; contracts and klines come from the public REST endpoints);
* ``live``: :class:`LiveVenue` over ``BingxRestClient``, with the account stream and the
  :class:`OrderTracker` reporting order changes.

Closed candles are queued per symbol and handed to the engine one at a time; before the next
candle the broker settles (queued work done, placed market orders booked), so the engine never
decides on a candle while its previous orders are still in flight - as in the backtester, where
fills are immediate.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Awaitable, Callable

from bot.config import AppConfig, TradingMode
from engine.exchange.bingx.account_stream import AccountStream
from engine.exchange.bingx.events import AccountUpdate, KlineEvent, OrderUpdate, StreamReconnected, TradeEvent
from engine.exchange.bingx.market_stream import MarketStream, kline_topic, trade_topic
from engine.exchange.bingx.rest import BingxRestClient
from engine.exchange.bingx.urls import resolve_urls
from engine.execution.broker import AlertHook, ExecutionBroker, PreTradeGate
from engine.execution.live_venue import LiveVenue
from engine.execution.margin import MarginCache
from engine.execution.order_tracker import OrderTracker
from engine.execution.paper_venue import PaperVenue
from engine.execution.recovery import RecoveryReport
from engine.market.candle import Candle
from engine.market.events import KlineUpdate, TradeTick
from engine.market.feed import MarketFeed
from engine.trading.engine import SymbolEngine
from engine.trading.sizing import ContractRules

logger = logging.getLogger(__name__)

KEEP_CLOSED_POSITIONS = 100  # closed positions an engine keeps in memory (the database holds them all)


class RestCandleSource:
    """``CandleSource`` over the REST klines (warm-up and gap backfill)."""

    def __init__(self, rest: BingxRestClient) -> None:
        self.rest = rest

    async def fetch_candles(self, symbol: str, start_ms: int, end_ms: int) -> list[Candle]:
        """Closed 1m candles in ``[start_ms, end_ms)``."""
        klines = await self.rest.klines_range(symbol, "1m", start_ms, end_ms)
        return [k.to_candle() for k in klines if start_ms <= k.open_time_ms < end_ms]


class _CandleQueue:
    """The ``CandleSink`` of one feed: warm-up goes straight to the engine, live candles are queued."""

    def __init__(self, engine: SymbolEngine) -> None:
        self.engine = engine
        self.queue: asyncio.Queue[Candle] = asyncio.Queue()

    def on_warmup_candle(self, candle: Candle) -> None:
        self.engine.on_warmup_candle(candle)

    def on_candle(self, candle: Candle) -> None:
        self.queue.put_nowait(candle)


@dataclass(slots=True)
class SymbolRuntime:
    """What runs for one symbol."""

    symbol: str
    contract: ContractRules
    engine: SymbolEngine
    feed: MarketFeed
    sink: _CandleQueue
    candles_processed: int = 0
    last_trade_ms: int = 0
    priced_ms: int = 0  # time of the trade print behind the broker's last price (0: none yet)
    worker: asyncio.Task[None] | None = None


@dataclass(slots=True)
class RuntimeOptions:
    """Timing knobs (tests shorten them)."""

    clock_interval_s: float = 1.0
    warmup_candles: int = 300
    fast_poll_s: float = 2.0
    slow_poll_s: float = 30.0
    fill_grace_s: float = 3.0
    stale_sent_s: float = 60.0  # an order still SENT after this long is looked up as UNKNOWN
    exit_grace_s: float = 5.0
    protect_retry_s: float = 2.0  # first wait before a stop/target placement refused for now is tried again
    settle_timeout_s: float = 10.0
    recover: bool = True  # reload the trades a previous run left open (restart recovery) before trading
    extra: dict[str, Any] = field(default_factory=dict)


def engine_contract(contract: Any) -> ContractRules:
    """Engine sizing rules from a BingX contract."""
    step = contract.step_size
    return ContractRules(qty_step=step, min_qty=max(contract.min_qty, step), min_notional=contract.min_notional,
                         price_tick=contract.tick_size)


# account-stream events after which the available margin may differ (not config pushes or listen-key notices)
MARGIN_EVENTS = (AccountUpdate, OrderUpdate, StreamReconnected)


class TradingRuntime:
    """Everything that trades in one process, for every configured symbol."""

    def __init__(self, config: AppConfig, *, clock_ms: Callable[[], int] | None = None, pre_trade_gate: PreTradeGate | None = None,
                 on_alert: AlertHook | None = None, options: RuntimeOptions | None = None) -> None:
        self.config = config
        self.mode = config.mode.value
        self.options = options or RuntimeOptions()
        self.pre_trade_gate = pre_trade_gate
        self.entry_approval: Any = None  # broker.EntryApproval (approval mode); set before start()
        self.on_alert = on_alert
        _, self.ws_url = resolve_urls(config.exchange.testnet, config.exchange.rest_url, config.exchange.ws_url)
        self.rest = config.exchange.rest_client()
        self._clock_ms = clock_ms
        self.symbols: dict[str, SymbolRuntime] = {}
        self.paper: PaperVenue | None = None
        self.live: LiveVenue | None = None
        self.tracker: OrderTracker | None = None
        self.account_stream: AccountStream | None = None
        self.market_stream = MarketStream(self.ws_url, on_event=self._on_market_event)
        self.broker: ExecutionBroker | None = None
        self.margin: MarginCache | None = None  # live: the exchange's available margin, kept fresh (entry gate)
        self.recovery: RecoveryReport | None = None
        # observer of every market and account stream event (health, reconnect reconciliation); must be quick
        self.on_stream_event: Callable[[Any], Awaitable[None]] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def tasks(self) -> dict[str, asyncio.Task[None]]:
        """The long-running tasks of this runtime by name (its loops, one candle worker per symbol, the
        broker's worker), for a supervisor to watch: none of them may end while trading runs."""
        tasks = {task.get_name(): task for task in self._tasks}
        for symbol, runtime in self.symbols.items():
            if runtime.worker is not None:
                tasks[f"candles-{symbol}"] = runtime.worker
        if self.broker is not None and self.broker.worker_task is not None:
            tasks["execution-broker"] = self.broker.worker_task
        return tasks

    @property
    def account_stream_connected(self) -> bool | None:
        """Whether the account stream is connected now (None in paper mode: there is none)."""
        if self.account_stream is None:
            return None
        return self.account_stream.conn.connected.is_set()

    def now_ms(self) -> int:
        """Exchange time (the injected clock in tests)."""
        return self._clock_ms() if self._clock_ms is not None else self.rest.time.now_ms()

    def _extra(self, **more: Any) -> dict[str, Any]:
        return {"mode": self.mode, **more}

    # -- start / stop ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Contracts, venue, broker, warm-up, streams, clock."""
        config = self.config
        if config.mode is TradingMode.LIVE:
            host = "VST demo" if config.exchange.testnet else "PRODUCTION"
            if config.exchange.rest_url:
                host = f"custom host {config.exchange.rest_url}"
            logger.warning("%s\n*** LIVE TRADING on BingX %s: real orders, real money unless this is a demo/simulator ***\n%s",
                           "=" * 72, host, "=" * 72, extra=self._extra())
        else:
            logger.info("PAPER trading: simulated fills against the live BingX feed, no orders are sent", extra=self._extra())
        if self._clock_ms is None:
            await self.rest.sync_time()
        contracts = {s: await self.rest.contract(s) for s in config.symbols}
        rules = {s: engine_contract(c) for s, c in contracts.items()}
        strategies = config.strategies
        if config.mode is TradingMode.LIVE:
            # a USDT-M bot: its margin is USDT (VST on the demo host), whatever else the account lists first
            self.live = LiveVenue(self.rest, quote_asset="VST" if config.exchange.testnet else "USDT")
            await self.live.load_symbols(config.symbols)
            venue: Any = self.live
        else:
            self.paper = PaperVenue(
                starting_balance=Decimal(repr(config.paper.starting_balance)), slippage_bps=config.paper.slippage_bps,
                taker_fee=strategies.taker_fee, price_ticks={s: c.tick_size for s, c in contracts.items()},
                qty_steps={s: c.step_size for s, c in contracts.items()},
            )
            await self.paper.load_wallet()
            venue = self.paper
        opts = self.options
        self.broker = ExecutionBroker(venue, leverage=max(1, int(round(strategies.leverage))), pre_trade_gate=self.pre_trade_gate,
                                      on_alert=self.on_alert, exit_grace_s=opts.exit_grace_s, settle_timeout_s=opts.settle_timeout_s,
                                      protect_retry_s=opts.protect_retry_s)
        self.broker.entry_approval = self.entry_approval
        await self.broker.start()
        await self.broker.prepare_symbols(list(config.symbols))
        if self.live is not None:
            self.margin = MarginCache(self.live.available_margin)
            self.margin.invalidate()  # read it now, in the background: the first entry finds it ready
            self.margin.keep_fresh()  # and keep it from expiring between signals minutes apart
            self.live.set_update_callback(self._on_order_update)  # in front of the broker: margin first
            self.tracker = OrderTracker(self.live, fast_poll_s=opts.fast_poll_s, slow_poll_s=opts.slow_poll_s,
                                        fill_grace_s=opts.fill_grace_s, on_funding=self.broker.on_funding,
                                        stale_sent_s=opts.stale_sent_s, on_unknown=self.broker.on_stale_placement,
                                        in_flight=self.broker.placements_in_flight)
            self.account_stream = AccountStream(self.rest, self.ws_url, on_event=self._on_account_event)
            await self.account_stream.start()
            await self.account_stream.wait_connected()
        source = RestCandleSource(self.rest)
        now = self.now_ms()
        for symbol in config.symbols:
            view = self.broker.for_symbol(symbol)
            engine = SymbolEngine(symbol, strategies, rules[symbol], view, on_signal=self.broker.record_signal, clock_ms=self.now_ms,
                                  keep_closed=KEEP_CLOSED_POSITIONS)
            self.broker.register(engine)
            sink = _CandleQueue(engine)
            # its calls come from the WebSocket read loop: a REST backfill must not keep it from answering Ping
            feed = MarketFeed(symbol, sink, source=source, warmup_candles=opts.warmup_candles, fetch_in_background=True)
            runtime = SymbolRuntime(symbol, rules[symbol], engine, feed, sink)
            self.symbols[symbol] = runtime
            await feed.warm_up(now)
            runtime.worker = asyncio.create_task(self._candles(runtime), name=f"candles-{symbol}")
            await self.market_stream.subscribe(kline_topic(symbol, "1m"))
            await self.market_stream.subscribe(trade_topic(symbol))
        if opts.recover:
            await self._recover()
        if self.tracker is not None and self.account_stream is not None:
            # only now: polled before recovery, a stop that filled while the bot was away would be marked
            # FILLED with no trade to book it on, and recovery would then protect a flat position
            self.tracker.set_stream_state(self.account_stream.conn.connected.is_set())
            self.tracker.start()
            self._tasks.append(asyncio.create_task(self._watch_account_stream(), name="account-stream-watch"))
        await self.market_stream.start()
        await self.market_stream.wait_connected()
        self._tasks.append(asyncio.create_task(self._clock(), name="feed-clock"))
        logger.info("[%s] trading %s", self.mode.upper(), ",".join(config.symbols), extra=self._extra())

    async def stop(self) -> None:
        """Stop streams and workers; exchange orders (stops) stay in place."""
        await self.market_stream.close()
        if self.margin is not None:
            await self.margin.close()
        if self.account_stream is not None:
            await self.account_stream.close()
        if self.tracker is not None:
            await self.tracker.stop()
        tasks = self._tasks + [r.worker for r in self.symbols.values() if r.worker is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, *(r.feed.stop_fetch() for r in self.symbols.values()), return_exceptions=True)
        self._tasks = []
        if self.broker is not None:
            await self.broker.stop()
        await self.rest.close()
        logger.info("[%s] runtime stopped", self.mode.upper(), extra=self._extra())

    # -- loops -------------------------------------------------------------------------------------

    async def _candles(self, runtime: SymbolRuntime) -> None:
        assert self.broker is not None
        queue = runtime.sink.queue
        while True:
            candle = await queue.get()
            try:
                if runtime.priced_ms < candle.close_time_ms:
                    # a print of a later minute already set the price: this close (2-3 s late) is older news
                    self.broker.last_price[runtime.symbol] = candle.close
                runtime.engine.on_candle(candle)
                runtime.candles_processed += 1
                await self.broker.settle()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bad candle must not stop trading the symbol
                logger.exception("[%s] candle %d failed", self.mode.upper(), candle.open_time_ms, extra=self._extra(symbol=runtime.symbol))
            finally:
                queue.task_done()

    async def tick_clock(self) -> None:
        """Let every feed finalise a candle whose minute is over (the clock task does this every second).

        With a market connection down, a forming kline's last push may be partial: the feeds then fetch the
        minute from REST instead (``MarketFeed.on_clock``'s ``stream_down``).
        """
        now = self.now_ms()
        now_s = time.monotonic()  # read with ``now``: how stale the last push is when the minute is closed
        # any shard down: the symbol's own shard is not public, and a needless REST bar is the safe mistake
        down = not all(conn.connected.is_set() for conn in self.market_stream.connections)
        for runtime in self.symbols.values():
            await runtime.feed.on_clock(now, now_s, stream_down=down)

    async def _clock(self) -> None:
        while True:
            await asyncio.sleep(self.options.clock_interval_s)
            try:
                await self.tick_clock()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("[%s] feed clock failed", self.mode.upper(), extra=self._extra())

    async def _watch_account_stream(self) -> None:
        assert self.account_stream is not None and self.tracker is not None
        while True:
            await asyncio.sleep(0.5)
            self.tracker.set_stream_state(self.account_stream.conn.connected.is_set())

    async def _recover(self) -> None:
        """Restart recovery: open trades from the database back into the engines and the broker."""
        assert self.broker is not None
        for symbol, runtime in self.symbols.items():
            last = runtime.engine.last_candle
            if last is None:
                continue
            self.broker.last_price.setdefault(symbol, last.close)
            if self.paper is not None and symbol not in self.paper.last_price:
                # paper checks stop sides against its last price: the last warm-up close until the feed speaks
                self.paper.last_price[symbol] = Decimal(repr(last.close))
        try:
            self.recovery = await self.broker.recover(self.config.strategies)
        except Exception as exc:  # positions may be open: halt entries and keep running rather than crash
            logger.exception("[%s] restart recovery failed", self.mode.upper(), extra=self._extra())
            self.broker.halt(f"restart recovery failed: {type(exc).__name__}")
            if self.on_alert is not None:
                await self.on_alert("halt", f"[{self.mode.upper()}] restart recovery failed ({type(exc).__name__}: {exc}); "
                                    "entries halted", {"mode": self.mode})
            return
        if self.recovery.restored or not self.recovery.ok:
            logger.warning("[%s] %s", self.mode.upper(), self.recovery.summary(), extra=self._extra())

    async def _on_order_update(self, update: Any) -> None:
        assert self.broker is not None
        if self.margin is not None:
            self.margin.invalidate()
        await self.broker.on_venue_update(update)

    async def _on_account_event(self, event: Any) -> None:
        assert self.tracker is not None
        if self.margin is not None and isinstance(event, MARGIN_EVENTS):
            self.margin.invalidate()
        await self.tracker.on_account_event(event)
        if self.on_stream_event is not None:
            await self.on_stream_event(event)

    async def _on_market_event(self, event: Any) -> None:
        if self.on_stream_event is not None:
            await self.on_stream_event(event)
        if isinstance(event, TradeEvent):
            runtime = self.symbols.get(event.symbol)
            if runtime is None:
                return
            price = float(event.price)
            if not runtime.feed.accept_tick(price):  # an absurd print (logged and counted by the feed's tick guard)
                runtime.last_trade_ms = max(runtime.last_trade_ms, event.time_ms)  # the stream itself is alive
                return
            if self.paper is not None:
                await self.paper.on_trade(event.symbol, event.price, event.time_ms)  # venue first: its triggers are intrabar
            if self.broker is not None:
                self.broker.last_price[event.symbol] = price
                runtime.priced_ms = max(runtime.priced_ms, event.time_ms)
            runtime.last_trade_ms = max(runtime.last_trade_ms, event.time_ms)
            await runtime.feed.on_trade(TradeTick(event.symbol, price, float(event.qty), event.time_ms))
        elif isinstance(event, KlineEvent) and event.interval == "1m":
            runtime = self.symbols.get(event.symbol)
            if runtime is not None:
                await runtime.feed.on_kline(KlineUpdate(event.symbol, event.open_time_ms, float(event.open), float(event.high),
                                                        float(event.low), float(event.close), float(event.volume)))

    async def wait_idle(self, timeout_s: float = 10.0) -> None:
        """Until queued candles are processed and the broker has settled (tests, orderly shutdown)."""
        assert self.broker is not None

        async def idle() -> None:
            for runtime in self.symbols.values():
                await runtime.feed.drained()  # candles waiting behind a backfill
                await runtime.sink.queue.join()
            await self.broker.settle()

        await asyncio.wait_for(idle(), timeout_s)
