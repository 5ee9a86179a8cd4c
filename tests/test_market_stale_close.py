"""A minute whose kline stream went quiet before its end is closed from the exchange's REST bar, not its last snapshot.

The bot runs in paper mode against the BingX simulator on 127.0.0.1. Its market WebSocket goes
through :class:`Cable`, a TCP relay the test can stall (the socket goes silent: no data, no Ping,
as a dead connection before the silence watchdog notices) or cut (connection aborted, reconnects
refused). REST goes straight to the simulator, whose fault switches can block it too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from engine.exchange.bingx.rest import BingxRestClient
from engine.execution.runtime import TradingRuntime
from engine.market.candle import ONE_MINUTE_MS as M
from engine.market.candle import Candle
from engine.market.feed import MarketFeed
from engine.simulator import SimulatorServer

from tests.execution_sim import SYMBOL, app_config, options, simulator, step_minutes, subscribed, wait_for, window
from tests.test_bingx_fastpath import Sink, SlowSource, bar
from tests.test_bingx_fastpath import update as kline_update

pytestmark = pytest.mark.timeout(120)


class Cable:
    """A TCP relay on 127.0.0.1 in front of the simulator's WebSocket port: ``stall``, ``cut``, ``mend``."""

    def __init__(self, sim: SimulatorServer) -> None:
        self.target_port = int(sim.ws_url.split(":")[2].split("/")[0])
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.refusing = False
        self._transports: list[asyncio.BaseTransport] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.AbstractServer | None = None
        self.ws_url = ""

    async def start(self) -> None:
        """Listen on a free port; ``ws_url`` is the bot's WebSocket address."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.ws_url = f"ws://127.0.0.1:{port}/swap-market"

    def stall(self) -> None:
        """Hold every byte the exchange sends from now on: the bot's socket goes silent, still open."""
        self.flowing.clear()

    def cut(self) -> None:
        """Abort every connection and refuse new ones: the bot's stream is down until ``mend``."""
        self.refusing = True
        for transport in self._transports:
            transport.abort()  # type: ignore[attr-defined]
        self._transports.clear()

    def mend(self) -> None:
        """Let connections through again, and any held bytes flow."""
        self.refusing = False
        self.flowing.set()

    async def close(self) -> None:
        """Stop listening and drop everything."""
        self.cut()
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._transports += [writer.transport, up_writer.transport]
        for task in (asyncio.create_task(self._pump(reader, up_writer, gated=False)),
                     asyncio.create_task(self._pump(up_reader, writer, gated=True))):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, *, gated: bool) -> None:
        try:
            while data := await src.read(65536):
                if gated:
                    await self.flowing.wait()
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            dst.transport.abort()


def live_candles(runtime: TradingRuntime) -> list[Candle]:
    """Every live candle handed to the symbol's engine from now on (the feed's sink), in order."""
    sink = runtime.symbols[SYMBOL].sink
    handed: list[Candle] = []
    on_candle = sink.on_candle

    def recording(candle: Candle) -> None:
        handed.append(candle)
        on_candle(candle)

    sink.on_candle = recording  # type: ignore[method-assign]
    return handed


async def rest_bar(sim: SimulatorServer, minute_ms: int) -> Candle:
    """The exchange's own 1m bar of ``minute_ms`` over REST."""
    rest = BingxRestClient(rest_url=sim.rest_url, api_key="", api_secret="")
    try:
        (kline,) = await rest.klines_range(SYMBOL, "1m", minute_ms, minute_ms + M)
    finally:
        await rest.close()
    return kline.to_candle()


@dataclass
class PaperBot:
    """A paper-mode runtime trading the replay of ``data`` (first live minute ``start_ms``) on a simulator."""

    sim: SimulatorServer
    runtime: TradingRuntime
    data: list[Candle]
    start_ms: int
    cable: Cable | None = None


@asynccontextmanager
async def paper_bot(db_url: str, *, cabled: bool = False, skew_ms: list[int] | None = None, rest_timeout_s: float = 1.0,
                    **sim_options: Any) -> AsyncIterator[PaperBot]:
    """Start a paused simulator (pushing the forming kline every second, as BingX) and the bot, in paper mode.

    ``cabled``: the bot's market WebSocket goes through a :class:`Cable`. ``skew_ms``: the bot's clock reads the
    exchange's time plus ``skew_ms[0]`` (the test may change it). Everything is stopped on exit.
    """
    data, start_ms = window(2620, 2640)
    sim = simulator(data, start_ms, **sim_options)
    await sim.start()
    cable = Cable(sim) if cabled else None
    exchange: dict[str, Any] = {"request_timeout_s": rest_timeout_s}
    if cable is not None:
        await cable.start()
        exchange["ws_url"] = cable.ws_url
    skew = skew_ms or [0]
    runtime = TradingRuntime(app_config("paper", sim, db_url, api_key="", api_secret="", **exchange),
                             clock_ms=lambda: sim.server_time_ms() + skew[0], options=options())
    try:
        await runtime.start()
        await subscribed(sim)
        yield PaperBot(sim, runtime, data, start_ms, cable)
    finally:
        await runtime.stop()
        if cable is not None:
            await cable.close()
        await sim.stop()


async def into_minute(sim: SimulatorServer, runtime: TradingRuntime, to_ms: int) -> Candle:
    """Replay up to ``to_ms`` and wait for a kline push carrying it (the simulator pushes one a second)."""
    await sim.advance(to_ms=to_ms)
    market = sim.markets[SYMBOL]
    sym = runtime.symbols[SYMBOL]
    await wait_for(lambda: sym.last_trade_ms >= market.last_trade_ms, what="the trades")
    seen = sym.feed.klines.forming
    await wait_for(lambda: sym.feed.klines.forming is not seen, timeout_s=3.0, what="a kline push")
    forming = sym.feed.klines.forming
    assert forming is not None and forming.open_time_ms == to_ms - to_ms % M
    return forming


async def test_a_stream_gone_silent_mid_minute_closes_that_minute_from_the_rest_bar(db_url: str) -> None:
    async with paper_bot(db_url, cabled=True) as bot:
        sim, runtime, cable, start_ms = bot.sim, bot.runtime, bot.cable, bot.start_ms
        assert cable is not None
        handed = live_candles(runtime)
        await step_minutes(sim, runtime, start_ms, 2)
        t = start_ms + 2 * M
        partial = await into_minute(sim, runtime, t + 20_000)  # the last push the bot will hear of minute t
        cable.stall()  # the socket dies silently: the bot's watchdog would need 20 s to notice
        silent_since = time.monotonic()
        await sim.advance(to_ms=t + M + 3_500)  # minute t ends on the exchange; the bot hears nothing
        await asyncio.sleep(5.5 - (time.monotonic() - silent_since))  # longer than the feed's 5 s staleness limit
        await runtime.tick_clock()  # the 1 s clock: minute t plus grace is over
        await runtime.wait_idle()

        exchange_bar = await rest_bar(sim, t)
        assert partial.volume < exchange_bar.volume  # the snapshot really misses the end of the minute
        assert [c.open_time_ms for c in handed] == [start_ms, start_ms + M, t]
        assert handed[-1] == exchange_bar and handed[-1] != partial
        assert runtime.symbols[SYMBOL].feed.klines.stale_closes == 1

        cable.mend()  # the held frames arrive (minute t's are late and dropped); the next minute closes as usual
        await step_minutes(sim, runtime, t + M, 1)
        assert [c.open_time_ms for c in handed] == [start_ms, start_ms + M, t, t + M]
        assert handed[-1] == await rest_bar(sim, t + M)


async def test_a_drop_with_rest_down_leaves_a_hole_that_the_next_backfill_fills_with_the_rest_bar(
        db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    async with paper_bot(db_url, cabled=True) as bot:
        sim, runtime, cable, start_ms = bot.sim, bot.runtime, bot.cable, bot.start_ms
        assert cable is not None
        handed = live_candles(runtime)
        await step_minutes(sim, runtime, start_ms, 1)
        t = start_ms + M
        partial = await into_minute(sim, runtime, t + 20_000)
        connection = runtime.market_stream.connections[0]
        sim.faults.update({"rest_5xx_fraction": 1.0})  # REST fails as well (5xx, after the client's retries)
        cable.cut()
        await wait_for(lambda: not connection.connected.is_set(), what="the drop")
        await sim.advance(to_ms=t + M + 3_500)
        with caplog.at_level(logging.WARNING, logger="engine.market.feed"):
            await runtime.tick_clock()  # at once: the stream is known to be down, its last push cannot be trusted
            await runtime.wait_idle()
        assert [c.open_time_ms for c in handed] == [start_ms]  # neither the partial snapshot nor anything else
        assert any("stale" in r.getMessage() and str(t) in r.getMessage() for r in caplog.records)

        sim.faults.update({"rest_5xx_fraction": 0.0})
        cable.mend()
        await subscribed(sim)
        await step_minutes(sim, runtime, t + M, 1)  # minute t+1 closes: the backfill asks REST for t first
        exchange_bar = await rest_bar(sim, t)
        assert partial != exchange_bar
        assert [c.open_time_ms for c in handed] == [start_ms, t, t + M]
        assert handed[1] == exchange_bar


async def test_a_healthy_stream_still_closes_from_its_pushes_without_rest(db_url: str) -> None:
    """Replayed as bench/bench_latency.py does: the candle runs to its last millisecond, the bot idles a
    second, then the next minute's trades come one at a time. REST is blocked: a close that asked it
    would leave the candle out."""
    skew = [0]
    async with paper_bot(db_url, skew_ms=skew) as bot:
        sim, runtime, start_ms = bot.sim, bot.runtime, bot.start_ms
        handed = live_candles(runtime)
        feed = runtime.symbols[SYMBOL].feed
        await step_minutes(sim, runtime, start_ms, 1)
        t = start_ms + M
        await sim.advance(to_ms=t + M - 1)  # the whole candle
        await asyncio.sleep(1.05)
        sim.faults.force_firewall_block(60.0)
        for _ in range(30):  # the next minute's trades, one frame at a time
            await sim.advance(steps=1)
            await asyncio.sleep(0.12)
            await runtime.wait_idle()
            if handed[-1].open_time_ms == t:
                break
        assert [c.open_time_ms for c in handed] == [start_ms, t]

        # the 1 s clock closes a minute the exchange keeps pushing past its end (no trade in the next one yet)
        u = t + M
        await sim.advance(to_ms=u + M - 1)
        await asyncio.sleep(1.2)  # a push of minute u after its last trade
        skew[0] = 4_000  # the bot's clock reads u + 64 s
        await runtime.tick_clock()
        await runtime.wait_idle()
        assert [c.open_time_ms for c in handed] == [start_ms, t, u]
        assert feed.klines.stale_closes == 0 and feed.stale_refetched == 0 and feed.backfill_failures == 0
        sim.faults.update({"firewall_block_s": 0})
        assert handed[1:] == [await rest_bar(sim, t), await rest_bar(sim, u)]  # the stream's bars were complete


async def test_a_slow_backfill_runs_off_the_read_loop_so_pings_are_answered_and_candles_keep_their_order(db_url: str) -> None:
    # the exchange drops a client that has not answered its Ping (every 0.5 s) for 2 s
    async with paper_bot(db_url, cabled=True, rest_timeout_s=10.0, ping_interval_s=0.5, idle_timeout_s=2.0) as bot:
        sim, runtime, cable, start_ms = bot.sim, bot.runtime, bot.cable, bot.start_ms
        assert cable is not None
        handed = live_candles(runtime)
        await step_minutes(sim, runtime, start_ms, 1)
        t = start_ms + M
        await into_minute(sim, runtime, t + 20_000)
        connection = runtime.market_stream.connections[0]
        cable.cut()
        await wait_for(lambda: not connection.connected.is_set(), what="the drop")
        cut_at = time.monotonic()
        await sim.advance(to_ms=t + 2 * M + 5_000)  # minutes t and t+1 pass while the bot is away
        sim.faults.update({"latency_ms": 4_000})  # every REST answer now takes 4 s
        await asyncio.sleep(5.5 - (time.monotonic() - cut_at))  # away longer than the staleness limit
        connects = connection.connect_count
        cable.mend()
        await subscribed(sim)
        # the first push after the reconnect (minute t+2) closes minute t: stale, so it is fetched (4 s), then
        # minute t+2 closes and minute t+1 is backfilled first (4 s more); all from the read loop's frames
        await wait_for(lambda: len(handed) == 2, timeout_s=15.0, what="minute t over REST")
        await step_minutes(sim, runtime, t + 2 * M, 1)
        assert connection.connect_count == connects + 1  # the reconnect after the cut, and no drop since
        assert connection.connected.is_set()
        sim.faults.update({"latency_ms": 0})
        assert [c.open_time_ms for c in handed] == [start_ms, t, t + M, t + 2 * M]
        assert handed[1:3] == [await rest_bar(sim, t), await rest_bar(sim, t + M)]


async def test_background_fetch_returns_at_once_and_no_candle_overtakes_a_backfill() -> None:
    bars = [bar(i, 100.0 + i) for i in range(8)]
    source = SlowSource(bars)  # answers once released: a slow REST backfill
    sink = Sink()
    feed = MarketFeed("X", sink, source=source, warmup_candles=0, fetch_in_background=True)

    def push(candle: Candle) -> Any:
        return asyncio.wait_for(feed.on_kline(kline_update(candle)), 0.5)

    for i in (0, 1, 4):  # closes minutes 0 and 1; minutes 2 and 3 never arrive
        await push(bars[i])
    assert sink.live == bars[:2]
    await push(bars[5])  # closes minute 4, which needs 2-3 first: the call returns, the fetch waits in the background
    await push(bars[6])  # minute 5 closes without a gap of its own, but must not overtake minute 4's backfill
    assert sink.live == bars[:2]
    source.release.set()
    await asyncio.wait_for(feed.drained(), 2)
    assert sink.live == bars[:6]
    await push(bars[7])  # the queue is empty again: handed on at once
    assert sink.live == bars[:7]
