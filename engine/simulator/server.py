"""``SimulatorServer``: the local BingX exchange (REST + WebSockets) replaying candle files.

Typical test use::

    sim = SimulatorServer([MarketSpec("NANO-USDT", candles)], speed=1.0, paused=True)
    await sim.start()
    ...  # talk to sim.rest_url / sim.ws_url with any BingX client
    await sim.advance(candles=5)          # replay five candles now, deterministically
    state = sim.state()                   # what the exchange holds
    sim.faults.hang_next_orders = 1       # fault switches are plain attributes
    await sim.stop()

The clock is the replay clock (see ``replay.py``): server time, every timestamp sent and
the kline history served follow the replayed market. At speed 1 (running) the recvWindow
check is as strict as BingX's; at any other speed, or paused, the bot's wall clock and
the replay clock drift apart by design, so only the timestamp's presence and form are
checked unless ``strict_recv_window=True``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from decimal import Decimal
from typing import Any

from aiohttp import web

from engine.market.candle import ONE_MINUTE_MS

from . import formats
from .accounts import Account
from .admin import add_admin_routes
from .faults import Faults
from .markets import Market, MarketSpec
from .matching import EngineConfig, MatchingEngine
from .protocol import fmt_dec, fmt_money
from .ratelimit import RateLimiter
from .replay import ReplayClock, ReplayDriver, Step
from .rest import RestApi
from .ws import ListenKeyStore, WsHub

log = logging.getLogger(__name__)

FUNDING_INTERVAL_MS = 8 * 3_600_000


def next_funding_after(t_ms: int) -> int:
    """The first 00:00/08:00/16:00 UTC funding time strictly after ``t_ms``."""
    return (t_ms // FUNDING_INTERVAL_MS + 1) * FUNDING_INTERVAL_MS


class SimulatorServer:
    """An in-process BingX USDT-M perpetual exchange on 127.0.0.1."""

    def __init__(
        self,
        markets: list[MarketSpec],
        *,
        api_key: str = "test-key",
        api_secret: str = "test-secret",
        balance: Decimal = Decimal("10000"),
        speed: float | None = 1.0,
        start_ms: int | None = None,
        listen_key_ttl_s: float = 3600.0,
        strict_recv_window: bool | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        paused: bool = False,
        hedge_mode: bool = True,
        taker_fee: Decimal = Decimal("0.0005"),
        maker_fee: Decimal = Decimal("0.0002"),
        default_leverage: int = 20,
        ping_interval_s: float = 5.0,
        idle_timeout_s: float = 30.0,
        config_interval_s: float = 5.0,
        push_interval_s: float = 1.0,
        rate_limit_scale: float = 1.0,
        rate_limit_http_status: int = 200,
        strict_signing: bool = False,
        duplicate_client_id_code: int = 101400,
        conditional_ignores_client_id: bool = False,
        cap_pending_stops: bool = False,
        warmup_minutes: int = 1440,
        max_speed_waits_for_client: bool = True,
        legs_points: int = 3,
        faults: Faults | None = None,
    ) -> None:
        if not markets:
            raise ValueError("at least one market is needed")
        symbols = [m.symbol for m in markets]
        if len(set(symbols)) != len(symbols):
            raise ValueError(f"duplicate symbols: {symbols}")
        if speed is not None and speed <= 0:
            raise ValueError("speed must be positive (None = max)")
        self.specs = markets
        self.api_key = api_key
        self.api_secret = api_secret
        self.initial_balance = Decimal(balance)
        self._speed = speed
        self._start_ms = start_ms
        self._paused_at_start = paused
        self.host = host
        self._port = port
        self.hedge_mode = hedge_mode
        self._strict_recv_override = strict_recv_window
        self.rate_limit_http_status = rate_limit_http_status
        self.strict_signing = strict_signing
        self.warmup_minutes = warmup_minutes
        self.max_speed_waits_for_client = max_speed_waits_for_client
        self.legs_points = legs_points
        self.engine_config = EngineConfig(taker_fee, maker_fee, default_leverage, duplicate_client_id_code,
                                          conditional_ignores_client_id, cap_pending_stops=cap_pending_stops)
        self.faults = faults or Faults()
        self.limiter = RateLimiter(rate_limit_scale)
        self.listen_keys = ListenKeyStore(listen_key_ttl_s)
        self._ws_options: dict[str, float] = dict(
            ping_interval_s=ping_interval_s,
            idle_timeout_s=idle_timeout_s,
            config_interval_s=config_interval_s,
            push_interval_s=push_interval_s,
        )
        self.markets: dict[str, Market] = {}
        self.clock: ReplayClock
        self.account: Account
        self.engine: MatchingEngine
        self.hub: WsHub
        self.driver: ReplayDriver
        self.rest: RestApi
        self.next_funding_ms = 0
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._stopping = asyncio.Event()
        self._cancel_after_deadline: float | None = None
        self._started = False

    # ---- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the data, bind the port and start replaying."""
        if self._started:
            raise RuntimeError("simulator already started")
        loaded = await asyncio.gather(*(asyncio.to_thread(spec.load_candles) for spec in self.specs))
        for i, (spec, candles) in enumerate(zip(self.specs, loaded)):
            market = Market(spec, candles)
            market.contract_id = 100 + i
            self.markets[spec.symbol] = market
        start_ms = self._start_ms
        if start_ms is None:
            start_ms = max(
                min(m.candles[0].open_time_ms + self.warmup_minutes * ONE_MINUTE_MS, m.candles[-1].open_time_ms)
                for m in self.markets.values()
            )
        start_ms -= start_ms % ONE_MINUTE_MS
        for market in self.markets.values():
            market.seek(start_ms)
        self.clock = ReplayClock(start_ms, self._speed, paused=self._paused_at_start)
        self.account = Account(self.initial_balance, hedge_mode=self.hedge_mode)
        self.engine = MatchingEngine(self.markets, self.account, self.server_time_ms, self.engine_config)
        self.engine.listeners.append(self._on_engine_event)
        opts = self._ws_options
        self.hub = WsHub(
            self.markets, self.engine, self.listen_keys, self.server_time_ms,
            ping_interval_s=opts["ping_interval_s"], idle_timeout_s=opts["idle_timeout_s"],
            config_interval_s=opts["config_interval_s"], push_interval_s=opts["push_interval_s"],
        )
        self.hub.batch_mode = self._speed is None
        self.driver = ReplayDriver(list(self.markets.values()), self.clock, self, legs_points=self.legs_points)
        self.next_funding_ms = next_funding_after(start_ms)
        self.rest = RestApi(self)

        app = web.Application(client_max_size=1 << 20)
        app.router.add_get("/swap-market", self.hub.handle)
        add_admin_routes(app, self)
        app.router.add_route("*", "/openApi/{tail:.*}", self.rest.dispatch)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._port)
        await site.start()
        self._port = self._runner.addresses[0][1]  # the OS-assigned port when port=0
        self._started = True
        self._tasks = [
            asyncio.create_task(self.driver.run(), name="sim-replay"),
            asyncio.create_task(self._housekeeping(), name="sim-housekeeping"),
        ]
        log.info(
            "BingX simulator listening on %s (ws %s), markets %s, start %d, speed %s",
            self.rest_url, self.ws_url, ",".join(self.markets), start_ms, "max" if self._speed is None else self._speed,
        )

    async def stop(self) -> None:
        """Stop replaying, close every connection and release the port."""
        if not self._started:
            return
        self._started = False
        self._stopping.set()
        self.driver.running = False
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.hub.close_all()
        if self._runner is not None:
            await self._runner.cleanup()
        log.info("BingX simulator stopped")

    async def __aenter__(self) -> SimulatorServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def hang_until_stopped(self) -> None:
        """Where a held-back answer waits: until the server stops."""
        await self._stopping.wait()

    # ---- addresses and clock ------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The bound TCP port."""
        return self._port

    @property
    def rest_url(self) -> str:
        """Base URL for REST, e.g. ``http://127.0.0.1:PORT``."""
        return f"http://{self.host}:{self._port}"

    @property
    def ws_url(self) -> str:
        """Market WebSocket URL, e.g. ``ws://127.0.0.1:PORT/swap-market``."""
        return f"ws://{self.host}:{self._port}/swap-market"

    @property
    def strict_recv_window(self) -> bool:
        """Whether timestamps are checked against recvWindow.

        By default only while the replay clock runs at wall-clock pace (speed 1, not paused):
        otherwise a client's synced clock drifts away from it by design.
        """
        if self._strict_recv_override is not None:
            return self._strict_recv_override
        return self.clock.speed == 1.0 and not self.clock.paused

    @strict_recv_window.setter
    def strict_recv_window(self, value: bool | None) -> None:
        """Force the check on (True) or off (False), or back to the speed-based default (None)."""
        self._strict_recv_override = value

    def server_time_ms(self) -> int:
        """The exchange clock: replay time plus any injected skew."""
        return self.clock.now_ms() + self.faults.clock_skew_ms

    def pause(self) -> None:
        """Freeze the replay clock."""
        self.clock.pause()

    def resume(self) -> None:
        """Let the replay clock run again."""
        self.clock.resume()

    def set_speed(self, speed: float | None) -> None:
        """Change the replay speed (None = max)."""
        self.clock.set_speed(speed)
        self.hub.batch_mode = speed is None

    async def advance(self, *, to_ms: int | None = None, candles: int | None = None, steps: int | None = None) -> int:
        """Replay now, whatever the clock: up to ``to_ms``, ``candles`` more candles, or ``steps`` trades.

        Returns the number of trades replayed. Use with a paused clock for deterministic tests.
        """
        if steps is not None:
            return await self.driver.advance_steps(steps)
        if candles is not None:
            target = self.driver.candle_end_time(candles)
            if target is None:
                last = max(m.candles[-1].open_time_ms for m in self.markets.values())
                target = last + ONE_MINUTE_MS - 1
            return await self.driver.advance_to(target)
        if to_ms is None:
            raise ValueError("advance needs to_ms, candles or steps")
        return await self.driver.advance_to(to_ms)

    def drop_websockets(self) -> int:
        """Drop every WebSocket connection now."""
        return self.hub.drop_all()

    def arm_cancel_all_after(self, seconds: int | None) -> None:
        """Start (or with None, stop) the cancelAllAfter countdown (wall-clock seconds)."""
        self._cancel_after_deadline = None if seconds is None else time.monotonic() + seconds

    # ---- replay handler (called by the driver) ------------------------------------------------
    def on_time(self, now_ms: int) -> None:
        """Funding settles at every 8 h boundary the replay passes."""
        while now_ms >= self.next_funding_ms:
            self.engine.apply_funding(self.next_funding_ms)
            self.next_funding_ms += FUNDING_INTERVAL_MS

    def on_step(self, market: Market, step: Step, first: bool, last: bool) -> None:
        """One replayed trade: matching first (fills at this price), then market data."""
        if self.engine.has_activity(market.symbol):
            self.engine.on_trade(market, step.ticks, step.qty)
        self.hub.on_step(market, step)

    def on_candle_closed(self, market: Market, index: int, path: list[Step]) -> None:
        """A candle is final."""
        self.hub.on_candle_closed(market, index, path)

    async def backpressure(self) -> None:
        """Wait for every WebSocket client to drain its queue."""
        await self.hub.wait_drained()

    async def wait_for_client(self) -> None:
        """Max speed: hold the replay while no WebSocket client listens (if configured).

        A client listens once it has subscribed to a topic or opened the account stream, so
        a bot that connects and then subscribes sees the market from where it stood.
        """
        if self.max_speed_waits_for_client:
            while (
                not self.hub.has_listeners()
                and self.clock.speed is None
                and not self.clock.paused
                and not self._stopping.is_set()
            ):
                # Wake on a client, on pause/speed change, or on shutdown, whichever comes first.
                waiters = [
                    asyncio.ensure_future(self.hub.listener_arrived.wait()),
                    asyncio.ensure_future(self.clock.wait_change(None)),
                    asyncio.ensure_future(self._stopping.wait()),
                ]
                try:
                    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for waiter in waiters:
                        waiter.cancel()

    # ---- account events -> account stream -----------------------------------------------------
    def _on_engine_event(self, event: tuple) -> None:
        if not self.hub.account_connections():
            return  # nobody listening: skip building the frames
        now = self.server_time_ms()
        kind = event[0]
        if kind == "order":
            _, order, exec_type, fill = event
            self.hub.publish_account(formats.ws_order_update(order, exec_type, fill, self.markets[order.symbol], now))
        elif kind == "account":
            _, reason, change, positions = event
            self.hub.publish_account(formats.ws_account_update(reason, change, positions, self.engine, now))
        elif kind == "config":
            self.hub.push_config(symbol=event[1])

    # ---- periodic work ------------------------------------------------------------------------
    async def _housekeeping(self) -> None:
        """Heartbeats, snapshot pushes, config pushes, listen-key expiry, scheduled faults."""
        opts = self._ws_options
        tick = max(0.02, min(0.25, opts["ping_interval_s"] / 4, opts["idle_timeout_s"] / 4, opts["push_interval_s"] / 2))
        last_push = last_config = last_drop = time.monotonic()
        while not self._stopping.is_set():
            await asyncio.sleep(tick)
            now = time.monotonic()
            try:
                self.hub.heartbeat()
                if not self.hub.batch_mode and now - last_push >= opts["push_interval_s"]:
                    last_push = now
                    self.hub.push_periodic()
                if now - last_config >= opts["config_interval_s"]:
                    last_config = now
                    if self.hub.account_connections():
                        self.hub.push_config()
                for key in self.listen_keys.pop_expired():
                    log.info("listen key expired")
                    self.hub.expire_listen_key(key)
                every = self.faults.ws_drop_every_s
                if every > 0 and now - last_drop >= every:
                    last_drop = now
                    dropped = self.hub.drop_all()
                    log.info("fault: dropped %d WebSocket connections", dropped)
                elif every <= 0:
                    last_drop = now
                if self._cancel_after_deadline is not None and now >= self._cancel_after_deadline:
                    self._cancel_after_deadline = None
                    cancelled = self.engine.cancel_all(None)
                    log.info("cancelAllAfter fired: %d orders cancelled", len(cancelled))
                if self.clock.speed is not None and not self.clock.paused:
                    self.on_time(self.clock.now_ms())
            except Exception:  # housekeeping must survive a bug in one of its chores
                log.exception("simulator housekeeping failed")

    # ---- observability ------------------------------------------------------------------------
    def clock_state(self) -> dict[str, Any]:
        """Clock and replay progress."""
        return {
            "now_ms": self.clock.now_ms(),
            "server_time_ms": self.server_time_ms(),
            "speed": "max" if self.clock.speed is None else self.clock.speed,
            "paused": self.clock.paused,
            "finished": self.driver.finished,
            "steps_replayed": self.driver.steps_done,
            "candles_replayed": self.driver.candles_done,
            "next_step_ms": self.driver.next_time(),
            "next_funding_ms": self.next_funding_ms,
            "strict_recv_window": self.strict_recv_window,
        }

    def state(self) -> dict[str, Any]:
        """Everything the exchange holds, as JSON-ready data (``GET /_sim/state``)."""
        engine = self.engine
        account = self.account
        one_way = not account.hedge_mode
        orders = []
        for order in sorted(engine.orders.values(), key=lambda o: o.order_id):
            obj = formats.order_object(order, self.markets[order.symbol], one_way=one_way)
            obj["parentOrderId"] = order.parent_id
            obj["closing"] = order.closing
            orders.append(obj)
        positions = []
        for pos in engine.state_positions():
            obj = formats.position_object(pos, engine)
            obj["entryCost"] = fmt_dec(pos.cost)
            obj["isolatedMargin"] = fmt_dec(pos.margin)
            positions.append(obj)
        fills = [
            {
                "tradeId": f.trade_id, "orderId": f.order_id, "clientOrderId": f.client_order_id, "symbol": f.symbol,
                "side": f.side, "positionSide": f.position_side, "type": f.order_type, "price": fmt_dec(f.price),
                "qty": fmt_dec(f.qty), "quote": fmt_dec(f.quote), "commission": fmt_dec(f.commission),
                "realizedPnl": fmt_dec(f.realized_pnl), "maker": f.maker, "time": f.time_ms, "liquidation": f.liquidation,
            }
            for f in engine.fills
        ]
        income = [formats.income_object(r) | {"income": fmt_dec(r.amount)} for r in account.income]
        return {
            "clock": self.clock_state(),
            "account": {
                "hedge_mode": account.hedge_mode,
                "initial_balance": fmt_dec(account.initial_balance),
                "wallet": fmt_dec(account.wallet),
                "equity": fmt_money(account.wallet + engine.unrealized_total()),
                "unrealized_pnl": fmt_money(engine.unrealized_total()),
                "realised_pnl": fmt_dec(account.realised_total),
                "available_margin": fmt_money(engine.available_margin()),
                "used_margin": fmt_money(engine.used_margin()),
                "frozen_margin": fmt_money(engine.frozen_margin()),
            },
            "balances": [formats.balance_object(engine)],
            "settings": {
                s: {"long_leverage": v.long_leverage, "short_leverage": v.short_leverage, "margin_type": v.margin_type}
                for s, v in account.settings.items()
            },
            "positions": positions,
            "orders": orders,
            "open_order_ids": [o.order_id for o in engine.list_open(None)],
            "fills": fills,
            "income": income,
            "listen_keys": self.listen_keys.snapshot(),
            "markets": {
                s: {
                    "last_price": m.price_str(m.last_ticks),
                    "mark_price": m.price_str(m.mark_ticks),
                    "candles_total": len(m.candles),
                    "candles_closed": m.closed_count,
                    "forming_open_time": m.forming.open_time_ms if m.forming and m.forming.index == m.closed_count else None,
                    "funding_rate": fmt_dec(m.funding_rate),
                    "tick_size": fmt_dec(m.tick),
                    "step_size": fmt_dec(m.step),
                }
                for s, m in self.markets.items()
            },
            "faults": self.faults.snapshot(),
            "ws": {
                "connections": len(self.hub.connections),
                "account_connections": len(self.hub.account_connections()),
                "frames_published": self.hub.frames_published,
                "drops": self.hub.drops,
            },
        }


__all__ = ["MarketSpec", "SimulatorServer"]
