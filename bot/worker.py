"""The long-running worker: owns the components and their start/stop order.

Start (``trading-bot run``), in this order - nothing trades before reconciliation:

1. database (migrations) and the ``/health`` endpoint;
2. the single-instance lock (a second bot on the same account refuses to start);
3. pre-flight checks (config, database, exchange reachability, keys, clock, contracts, balance);
   a fatal failure in live mode stops the start;
4. reconciliation (live): the exchange against the database - orders left SENT/UNKNOWN by a crash
   are looked up, missing stops re-placed, trades closed while away booked;
5. the trading runtime: time sync, contracts, venue, broker, warm-up, **restart recovery** (open
   trades back into the engines), then the market and account streams;
6. supervised components (STOP-file watcher, health monitor; the runtime's own loops are
   watched) and the scheduled jobs (``bot.jobs``).

While running: from the moment a market or account stream is seen down until a reconciliation that
started after its reconnect has succeeded, the entry gate refuses entries (``bot.reconnect_gate``);
exits and stop management go on.

Stop (SIGTERM/SIGINT, within ``shutdown.timeout_s``): entries halted, jobs and components
stopped, unfilled entry orders cancelled, exchange stops left in place (or every position closed
with ``shutdown.close_positions: true``), streams closed, alerts flushed, lock released, database
closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from bot.alert_hub import AlertHub, net_pnl
from bot.config import AppConfig, TradingMode
from bot.dashboard import DashboardInputs, render_dashboard
from bot.gc_tuning import collect_young_less_often, freeze_heap
from bot.health import HealthServer, HealthState
from bot.jobs import WorkerJobs
from bot.reconnect_gate import ReconnectGate
from bot.scheduler import JobScheduler
from bot.supervisor import Supervisor
from bot.systemd_notify import SystemdNotifier
from db.database import close_db, init_db
from db.models import Fill, Trade, TradeState

log = logging.getLogger(__name__)
logging.getLogger("apscheduler").setLevel(logging.WARNING)  # one INFO line per job run drowns the trading log

EXIT_FAILURE = 1
DEFAULT_WARMUP_CANDLES = 1000  # 5m SMA50 + 1m SMA200 + RSI convergence need far more than 300 one-minute bars


def _is_loopback(url: str | None) -> bool:
    """True for a URL on this machine (the local simulator)."""
    if not url:
        return False
    from urllib.parse import urlparse

    host = urlparse(url).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


# How late the entry gate may see a trading-state or lock change written by another process (``emergency-stop``);
# the ``risk_view`` job re-reads them every second, and changes made in this process apply at once.
ENTRY_VIEW_TTL_S = 2.5


def wire_entry_gate(runtime: Any, risk: Any, entry_block: Callable[[], str | None] | None = None) -> None:
    """Put ``risk``'s entry gate in front of ``runtime``'s broker, with the runtime's prices, margin and contracts.

    ``entry_block`` (optional) is asked first: a reason refuses the entry before any other check. It is
    on the tick-to-order path, so it must be a synchronous in-memory read (no I/O). The gate is only
    asked about entries: exits and stop management never pass through it.
    """
    from engine.execution.broker import GateDecision as ExecutionDecision
    from engine.risk.hooks import entry_gate

    risk_gate = entry_gate(risk, reference_price=lambda s: _last_price(runtime, s),
                           available_margin=lambda: _available_margin(runtime),
                           minimums=lambda s: _contract_minimums(runtime, s),
                           exposures=lambda: _broker_exposures(runtime))
    if entry_block is None:
        runtime.pre_trade_gate = risk_gate
        return

    async def gate(request: Any) -> Any:
        blocked = entry_block()
        if blocked is not None:
            return ExecutionDecision(False, blocked)
        return await risk_gate(request)

    runtime.pre_trade_gate = gate


def _broker_exposures(runtime: Any) -> list[Any]:
    """The broker's open and pending trades as exposures: the rows it writes, held in memory (no read on the order path)."""
    from engine.risk.exposure import OPEN_TRADE_STATES, trade_exposure

    broker = runtime.broker
    if broker is None:
        return []
    return [trade_exposure(trade) for trade in broker.trade_rows() if trade.state in OPEN_TRADE_STATES]


def _last_price(runtime: Any, symbol: str) -> float | None:
    """The last traded price the broker saw for ``symbol`` (market stream trades, else the last closed candle)."""
    broker = runtime.broker
    return broker.last_price.get(symbol) if broker is not None else None


def _contract_minimums(runtime: Any, symbol: str) -> tuple[Decimal, Decimal]:
    """``(min_qty, min_notional)`` of ``symbol``'s contract as the runtime loaded it."""
    held = runtime.symbols.get(symbol)
    if held is None:
        return Decimal(0), Decimal(0)
    return Decimal(held.contract.min_qty), Decimal(held.contract.min_notional)


async def _available_margin(runtime: Any) -> Decimal:
    """Available margin now. Live: the exchange's, kept fresh by the runtime; paper: the paper wallet less the margin of open trades."""
    if runtime.margin is not None:
        return await runtime.margin.get()
    broker = runtime.broker
    if broker is None:
        raise LookupError("trading is not running")
    leverage = Decimal(max(1, round(runtime.config.strategies.leverage)))
    used = sum((view.qty * view.entry_price for view in broker.open_trades()), Decimal(0)) / leverage
    return Decimal(broker.wallet) - used


def _placements_in_flight(runtime: Any) -> frozenset[str]:
    """Client order ids the broker is placing right now (none before the broker exists)."""
    broker = getattr(runtime, "broker", None)
    return broker.placements_in_flight() if broker is not None else frozenset()


def _orders_settling(runtime: Any) -> frozenset[int] | None:
    """DB ids of answered orders whose executions the broker still books; None before the broker exists."""
    broker = getattr(runtime, "broker", None)
    return broker.orders_settling() if broker is not None else None


class WorkerStartError(Exception):
    """The worker could not start safely (reason in the message; nothing was traded)."""


class Worker:
    """Starts the database, health endpoint and trading components; stops them in reverse order."""

    def __init__(self, config: AppConfig, notifier: SystemdNotifier | None = None, *,
                 runtime_options: Any | None = None, dashboard_interval_s: float | None = None) -> None:
        self.config = config
        self.mode = config.mode.value
        self.health = HealthState(stale_feed_s=config.health.stale_feed_s)
        self.notifier = notifier or SystemdNotifier()
        self.alerts = AlertHub(self.mode)
        self.runtime_options = runtime_options
        self.dashboard_interval_s = dashboard_interval_s
        self.started_at = time.monotonic()
        self.runtime: Any = None  # engine.execution.runtime.TradingRuntime once started
        self.risk: Any = None  # engine.risk.manager.RiskManager
        self.reconciler: Any = None
        self.supervisor = Supervisor(self._on_component_failure)
        self.scheduler: JobScheduler | None = None
        self._health_server: HealthServer | None = None
        self._watchdog_task: asyncio.Task[None] | None = None
        self._lock: Any = None
        self._stop_event = asyncio.Event()
        self._reconcile_task: asyncio.Task[None] | None = None
        self.reconnect_gate: ReconnectGate | None = None  # entries wait for a reconciliation after a stream reconnect
        self._reconcile_again = False  # a reconnect arrived since the last reconciliation run started
        self._trading_task: asyncio.Task[None] | None = None
        self._last_kline: dict[str, tuple[Any, ...]] = {}
        self.runtime_stopped = False
        self._db_ready = False
        self.chatops: Any = None  # bot.chatops.ChatOps: alerts to chat, Telegram/Discord commands, approvals

    # -- start -------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bring every component up; on a failure that makes trading unsafe, clean up and exit 1."""
        mode = self.mode
        log.info(
            "trading-bot starting in %s mode, symbols %s, database %s",
            mode.upper(),
            ",".join(self.config.symbols),
            self.config.database.url.split("://", 1)[0],
            extra={"mode": mode},
        )
        try:
            await self._start()
        except WorkerStartError as exc:
            log.error("trading-bot cannot start: %s", exc, extra={"mode": mode})
            await self._teardown()
            raise SystemExit(EXIT_FAILURE) from None
        self.notifier.ready(f"{mode} mode")
        log.info("trading-bot started", extra={"mode": mode})

    async def _start(self) -> None:
        await init_db(self.config.database.url)
        self._db_ready = True
        if self.config.health.enabled:
            self._health_server = HealthServer(self.health, self.config.health.host, self.config.health.port)
            await self._health_server.start()
        interval = self.notifier.watchdog_interval_s()
        if interval:
            self._watchdog_task = asyncio.create_task(self._watchdog(interval), name="systemd-watchdog")
        await self._acquire_lock()
        await self._preflight()
        from bot.chatops import ChatOps

        self.chatops = ChatOps()
        await self.chatops.start(self)
        # the trading side connects in the background and retries with backoff while the exchange is
        # unreachable: the process stays up (health says why it is unhealthy) instead of crash-looping
        self._trading_task = asyncio.create_task(self._trading_start_loop(), name="trading-start")

    async def _preflight(self) -> None:
        from engine.risk.preflight import run_preflight

        exchange = self.config.exchange
        client = exchange.rest_client()
        try:
            report = await run_preflight(self.config, client)
        finally:
            await client.close()
        simulator = _is_loopback(exchange.rest_url)
        fatal_failures = []
        for check in report.checks:
            # a local simulator replays the past: its clock is years "off" by design (and it relaxes recvWindow)
            fatal = check.fatal and not (simulator and check.name == "clock offset")
            level = logging.INFO if check.ok else (logging.ERROR if fatal else logging.WARNING)
            log.log(level, "pre-flight %s: %s - %s", check.name, "ok" if check.ok else "FAILED", check.detail,
                    extra={"mode": self.mode})
            if fatal and not check.ok:
                fatal_failures.append(check.name)
        if fatal_failures:
            raise WorkerStartError(f"pre-flight checks failed ({', '.join(fatal_failures)}):\n" + report.text())

    async def _trading_start_loop(self) -> None:
        delay = 1.0
        while True:
            try:
                await self._start_trading()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.health.api_failed(f"trading start: {type(exc).__name__}")
                log.error("trading could not start (%s: %s); retrying in %.0f s", type(exc).__name__, exc, delay,
                          extra={"mode": self.mode})
                await self.alerts.publish("error", f"[{self.mode.upper()}] trading could not start: {type(exc).__name__}: "
                                          f"{exc}; retrying in {delay:.0f} s",
                                          {"dedup_key": f"trading-start:{type(exc).__name__}"})
                await asyncio.sleep(delay)
                delay = min(60.0, delay * 2)

    async def _acquire_lock(self) -> None:
        from engine.risk.instance_lock import InstanceLock, InstanceLockError, account_key_for

        self._lock = InstanceLock(self.config.database.url, account_key_for(self.config))
        try:
            await self._lock.acquire()
        except InstanceLockError as exc:
            self._lock = None
            raise WorkerStartError(f"another instance is running on this account: {exc}") from None

    async def _start_trading(self) -> None:
        from engine.execution.runtime import RuntimeOptions, TradingRuntime
        from engine.risk.manager import RiskManager
        from engine.risk.reconcile import Reconciler

        config = self.config
        live = config.mode is TradingMode.LIVE
        if self.risk is None:
            self.risk = RiskManager(config, alert=self.alerts.risk, close_all=self.close_all,
                                    entry_view_ttl_s=ENTRY_VIEW_TTL_S)
            self.alerts.on_trade_closed = self._trade_closed
        options = self.runtime_options or RuntimeOptions(warmup_candles=DEFAULT_WARMUP_CANDLES)
        runtime = TradingRuntime(config, on_alert=self.alerts.execution, options=options)
        self.reconnect_gate = ReconnectGate(runtime)  # connect counts are the new runtime's own (a retried start)
        wire_entry_gate(runtime, self.risk, self.entry_block)
        runtime.on_stream_event = self._on_stream_event
        if self.chatops is not None:
            runtime.entry_approval = self.chatops.entry_approval  # approval mode (a no-op while it is off)
        try:
            if live:
                # before anything trades: the exchange is the truth, the database is brought in line
                self.reconciler = Reconciler(runtime.rest, config, self.risk, alert=self.alerts.risk, mode=self.mode,
                                             on_trade_closed=self._reconciled_close,
                                             placements_in_flight=lambda: _placements_in_flight(runtime),
                                             orders_settling=lambda: _orders_settling(runtime))
                start_report = await self.reconciler.run("start")
                self._note_api(start_report.error)
                log.info("%s", start_report.summary(), extra={"mode": self.mode})
                if start_report.error is not None:
                    raise ConnectionError(f"start reconciliation could not read the exchange: {start_report.error}")
            self.runtime = runtime
            await runtime.start()
            freeze_heap()  # the start-up heap out of the collector's sight (bot.gc_tuning)
            collect_young_less_often()
        except BaseException:
            self.runtime = None
            with contextlib.suppress(Exception):
                await runtime.stop()
            raise
        self.health.api_ok()
        self.health.extra["mode"] = self.mode
        recovery = runtime.recovery
        if recovery is not None and (recovery.restored or not recovery.ok):
            await self.alerts.publish("error" if not recovery.ok else "reconnect",
                                      f"[{self.mode.upper()}] {recovery.summary()}", {})
        self._watch_runtime()
        self._start_components()
        log.info("trading started: %s", ",".join(config.symbols), extra={"mode": self.mode})

    def _watch_runtime(self) -> None:
        # the runtime's loops, candle workers and the broker's worker must never die silently
        for name, task in self.runtime.tasks().items():
            self.supervisor.watch(name, task)

    def _start_components(self) -> None:
        from engine.risk.stop_file import StopFileWatcher

        async def on_stop_file(reason: str) -> None:
            await self.risk.pause("stop_file", reason)
            await self.alerts.publish("halt", f"[{self.mode.upper()}] {reason}: entries paused", {})

        watcher = StopFileWatcher(self.config.emergency.stop_file, on_stop_file)
        self.supervisor.spawn("stop-file", lambda: watcher.run(self._stop_event))
        self.supervisor.spawn("health-monitor", self._health_monitor)
        if self.dashboard_interval_s:
            self.supervisor.spawn("dashboard", self._dashboard_loop)
        self.scheduler = JobScheduler(on_error=self._on_job_error)
        for spec in WorkerJobs(self).specs():
            self.scheduler.add(spec)
        self.scheduler.start()

    # -- running -----------------------------------------------------------------------------------

    async def _on_stream_event(self, event: Any) -> None:
        """Every market/account stream event (called inline: keep it cheap)."""
        from engine.exchange.bingx.events import AccountUpdate, KlineEvent, StreamReconnected, TradeEvent

        if isinstance(event, AccountUpdate):
            await self._note_account_update(event)
        elif isinstance(event, TradeEvent):
            self.health.market_data_seen()
        elif isinstance(event, KlineEvent):
            # a repeated identical kline snapshot is not news: only a changed candle proves the feed is live
            signature = (event.open_time_ms, event.close, event.volume)
            if self._last_kline.get(event.symbol) != signature:
                self._last_kline[event.symbol] = signature
                self.health.market_data_seen()
        elif isinstance(event, StreamReconnected):
            log.warning("%s stream reconnected after %.1f s", event.stream if hasattr(event, "stream") else "a",
                        getattr(event, "downtime_s", 0.0), extra={"mode": self.mode})
            await self.alerts.publish("reconnect", f"[{self.mode.upper()}] stream reconnected", {})
            # events may have been missed while it was down: compare with the exchange now (not inline);
            # entries stay refused (entry_block) until a run that started after this reconnect succeeds
            self._reconcile_again = True
            if self._reconcile_task is None or self._reconcile_task.done():
                self._reconcile_task = asyncio.create_task(self._reconcile_after_reconnects(), name="reconcile-reconnect")
            broker = self.runtime.broker if self.runtime is not None else None
            if broker is not None and self.reconciler is not None:
                broker.catch_up_funding()  # a funding payment settled while the account stream was down

    async def _note_account_update(self, event: Any) -> None:
        """Deposits and withdrawals the account stream reports: the balance check must not call them unexplained."""
        from engine.risk.balance_check import note_account_update

        try:
            noted = await note_account_update(event, self.mode)
        except Exception:  # bookkeeping of a transfer must never break the stream
            log.exception("noting an account update (%s) failed", getattr(event, "reason", "?"), extra={"mode": self.mode})
            return
        if noted:
            log.info("account %s noted: %s", event.reason, ", ".join(str(n) for n in noted), extra={"mode": self.mode})

    def entry_block(self) -> str | None:
        """Why entries must wait right now after a stream disconnect, or None (``bot.reconnect_gate``)."""
        gate = self.reconnect_gate
        return gate.block() if gate is not None else None

    async def _reconcile_after_reconnects(self) -> None:
        """Reconcile after stream reconnects until a run succeeds with no reconnect during it (retried with backoff)."""
        delay = 5.0
        while self._reconcile_again:
            self._reconcile_again = False
            try:
                if await self.reconcile("stream reconnect"):
                    continue  # another reconnect during that run sets the flag again: one more run
            except Exception:  # whatever broke, entries stay refused until a run succeeds: keep trying
                log.exception("reconciliation after a stream reconnect raised", extra={"mode": self.mode})
            self._reconcile_again = True
            log.warning("reconciliation after a stream reconnect failed; entries stay refused, retrying in %.0f s", delay,
                        extra={"mode": self.mode})
            await asyncio.sleep(delay)
            delay = min(60.0, delay * 2)

    async def reconcile(self, reason: str) -> bool:
        """One reconciliation run (live), with health and circuit-breaker bookkeeping; True when it succeeded.

        A successful run lets entries resume after the stream reconnects that happened before it started.
        Paper mode has nothing on the exchange to reconcile: always a success.
        """
        gate = self.reconnect_gate
        connects = gate.connects() if gate is not None else 0  # BEFORE the run: a reconnect during it is not covered
        if self.reconciler is None:
            if gate is not None:
                gate.covered(connects)
            return True
        try:
            report = await self.reconciler.run(reason)
        except Exception as exc:
            await self.api_failed(f"reconciliation ({reason})", exc)
            return False
        self._note_api(report.error)
        if report.error is not None:
            with contextlib.suppress(Exception):  # the breaker's bookkeeping (a DB write) must not end the retries
                await self.risk.record_api_error(f"reconciliation: {report.error}")
            return False
        if gate is not None:
            gate.covered(connects)
        return True

    def _note_api(self, error: str | None) -> None:
        if error is None:
            self.health.api_ok()
        else:
            self.health.api_failed(error)

    async def api_failed(self, what: str, exc: BaseException) -> None:
        """An exchange call of a job failed: health, circuit breaker, log."""
        log.warning("%s failed: %s: %s", what, type(exc).__name__, exc, extra={"mode": self.mode})
        self.health.api_failed(f"{what}: {type(exc).__name__}")
        if self.risk is not None:
            with contextlib.suppress(Exception):
                await self.risk.record_api_error(what)

    async def halt_entries(self, reason: str) -> None:
        """An unrecoverable problem: no new entries (open positions stay managed, their stops stay on the exchange)."""
        if self.runtime is not None and self.runtime.broker is not None:
            self.runtime.broker.halt(reason)
        if self.risk is not None:
            with contextlib.suppress(Exception):
                await self.risk.halt(reason, "worker")
        self.health.set_halted(reason)

    async def _on_component_failure(self, name: str, exc: BaseException, gave_up: bool) -> None:
        text = f"[{self.mode.upper()}] component {name} failed: {type(exc).__name__}: {exc}"
        if gave_up:
            await self.halt_entries(f"component {name} failed for good")
            text += "; given up, entries halted"
        else:
            text += "; restarting"
        # the same failure repeating (a restart loop) is one chat alert per de-duplication window
        outcome = "gave-up" if gave_up else "restarting"
        await self.alerts.publish("error", text, {"component": name,
                                                  "dedup_key": f"component:{name}:{type(exc).__name__}:{outcome}"})

    def _on_job_error(self, job: str, exc: BaseException) -> None:
        asyncio.get_running_loop().create_task(
            self.alerts.publish("error", f"[{self.mode.upper()}] scheduled job {job} failed: {type(exc).__name__}: {exc}",
                                {"job": job, "dedup_key": f"job:{job}:{type(exc).__name__}"}))

    async def _health_monitor(self) -> None:
        """Mirror the halted state into /health and systemd's status line."""
        while True:
            reason = ""
            broker = self.runtime.broker if self.runtime is not None else None
            if broker is not None and broker.halted_reason:
                reason = broker.halted_reason
            else:
                info = await self.risk.state.current()
                if info.state.value == "HALTED":
                    reason = info.reason or "halted"
            self.health.set_halted(reason)
            await asyncio.sleep(1.0)

    async def _dashboard_loop(self) -> None:
        assert self.dashboard_interval_s
        while True:
            await asyncio.sleep(self.dashboard_interval_s)
            print(await self.dashboard_text(), flush=True)

    async def current_equity(self) -> Decimal | None:
        """Wallet plus open PnL at the last prices (None before the runtime is up)."""
        broker = self.runtime.broker if self.runtime is not None else None
        if broker is None:
            return None
        try:
            broker.wallet = await broker.venue.wallet_balance()
            self.health.api_ok()
        except Exception as exc:
            await self.api_failed("wallet", exc)
        symbol = self.config.symbols[0]
        mark = broker.last_price.get(symbol)
        equity = broker.equity(symbol, mark) if mark is not None else float(broker.wallet)
        return Decimal(repr(equity))

    async def dashboard_text(self) -> str:
        """The console dashboard."""
        equity = await self.current_equity() or Decimal(0)
        status = await self.risk.status(equity)
        strategies = self.config.strategies
        broker = self.runtime.broker
        inputs = DashboardInputs(
            mode=self.mode, uptime_s=time.monotonic() - self.started_at, symbols=list(self.config.symbols),
            strategies={"multi_timeframe_long": strategies.multi_timeframe_long.enabled,
                        "trend_distance_short": strategies.trend_distance_short.enabled},
            equity=equity, peak_equity=status.peak_equity, state=status.state.value, state_reason=status.state_reason,
            last_prices=dict(broker.last_price) if broker is not None else {},
            halted_reason=broker.halted_reason if broker is not None else None,
        )
        now = None
        if self.runtime is not None:
            with contextlib.suppress(Exception):  # "today" is the exchange's day (a replay lives in the past)
                now = datetime.fromtimestamp(self.runtime.now_ms() / 1000, UTC)
        return await render_dashboard(inputs, now=now)

    async def _reconciled_close(self, trade: Trade, exits: list[Any]) -> None:
        """The Reconciler's ``on_trade_closed``: a trade found flat on the exchange, closed by ``exits``.

        While trading runs, the broker books it (once, on its own queue, fees and all; its "exit" alert
        reports it to the risk manager). Otherwise (start-up reconciliation, before the broker exists)
        it is closed from its exit orders here, reported to the risk manager once, and gets the same
        "closed by" alert a normal close sends (the reconciliation summary alert is de-duplicated).
        """
        broker = self.runtime.broker if self.runtime is not None else None
        if broker is not None and await broker.book_reconciled_close(trade, exits):
            return
        await trade.refresh_from_db()
        if trade.state is TradeState.CLOSED:
            return  # booked meanwhile
        # the same rule as Reconciler._close_trade_minimal, net of the exit fees booked, reported to risk once
        filled = sum((o.filled_qty for o in exits), Decimal(0))
        quote = sum(((o.avg_price or Decimal(0)) * o.filled_qty for o in exits), Decimal(0))
        exit_price = quote / filled if filled > 0 else None
        entry = Decimal(trade.entry_price or 0)
        direction = Decimal(1) if trade.side.upper() == "LONG" else Decimal(-1)
        pnl = (exit_price - entry) * filled * direction if exit_price is not None and entry > 0 else Decimal(0)
        fees = sum((f.fee for f in await Fill.filter(order_id__in=[o.id for o in exits])), Decimal(0))
        trade.state = TradeState.CLOSED
        trade.qty = Decimal(0)
        trade.closed_at = datetime.now(UTC)
        trade.exit_price = exit_price
        trade.exit_reason = ("reconcile:" + exits[-1].intent.value)[:32] if exits else "reconcile"
        trade.realized_pnl = Decimal(trade.realized_pnl or 0) + pnl - fees
        trade.fees = Decimal(trade.fees or 0) + fees
        await trade.save()
        await self._report_once(trade)
        from engine.risk.reconcile import closed_text

        text = f"[{self.mode.upper()}] {closed_text(trade, exits)}"
        log.info("%s", text, extra={"mode": self.mode, "event": "exit"})
        await self.alerts.publish("exit", text, {"trade_id": trade.id})

    async def _report_once(self, trade: Trade) -> None:
        """Tell the risk manager about a closed trade once (the alert hub's closed-trade sweep skips it after)."""
        if self.alerts.mark_reported(trade.id):
            await self._trade_closed(trade)

    async def _trade_closed(self, trade: Trade) -> None:
        await self.risk.on_trade_closed(trade.symbol, trade.strategy, net_pnl(trade))

    async def close_all(self, reason: str) -> None:
        """Close every open trade at market (kill switch with close_positions_on_kill_switch, shutdown)."""
        broker = self.runtime.broker if self.runtime is not None else None
        if broker is None:
            return
        for trade in broker.open_trades():
            broker.close_trade(trade.trade_id, reason)
        await broker.settle()

    # -- stop --------------------------------------------------------------------------------------

    async def stop(self) -> None:
        """Graceful shutdown within ``shutdown.timeout_s``; exchange stops stay unless configured otherwise."""
        self.notifier.stopping()
        log.info("trading-bot stopping", extra={"mode": self.mode})
        budget = self.config.shutdown.timeout_s
        try:
            await asyncio.wait_for(self._stop_trading(), max(1.0, budget - 2.0))
        except Exception as exc:  # includes the timeout: what is left below must still run
            log.error("shutdown of trading did not finish cleanly: %s: %s", type(exc).__name__, exc, extra={"mode": self.mode})
        await self._teardown()
        log.info("trading-bot stopped cleanly", extra={"mode": self.mode})

    async def _stop_trading(self) -> None:
        self._stop_event.set()
        if self._trading_task is not None and not self._trading_task.done():
            self._trading_task.cancel()
            await asyncio.gather(self._trading_task, return_exceptions=True)
        runtime = self.runtime
        if runtime is None:
            return
        if runtime.broker is not None:
            runtime.broker.halt("shutting down", expected=True)  # no new entries from here on (a planned stop: INFO)
        if self.scheduler is not None:
            await self.scheduler.shutdown()
        await self.supervisor.stop()
        if self._reconcile_task is not None:
            self._reconcile_task.cancel()
            await asyncio.gather(self._reconcile_task, return_exceptions=True)
        if self.config.mode is TradingMode.LIVE:
            from engine.risk.shutdown import shutdown_trading

            if runtime.broker is not None:
                await runtime.broker.settle(timeout_s=2.0)
            report = await shutdown_trading(runtime.rest, self.config)
            log.info("shutdown: cancelled entries %s, closed %s, failures %s", report.cancelled_entries,
                     report.closed_positions, report.failures, extra={"mode": self.mode})
        elif self.config.shutdown.close_positions:
            await self.close_all("shutdown")
        if runtime.broker is not None:
            await runtime.broker.settle(timeout_s=2.0)
        await runtime.stop()
        if self.risk is not None:
            await self.risk.flush()
        self.runtime_stopped = True

    async def _teardown(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.alerts.flush(), 2.0)
        if self.chatops is not None:
            try:
                await asyncio.wait_for(self.chatops.stop(), 6.0)
            except Exception as exc:
                log.warning("chat-ops did not stop cleanly: %s", type(exc).__name__, extra={"mode": self.mode})
        if self.runtime is not None and not self.runtime_stopped:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.runtime.stop(), 3.0)
        if self._watchdog_task is not None:
            self._watchdog_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog_task
        if self._health_server is not None:
            await self._health_server.stop()
        if self._lock is not None:
            with contextlib.suppress(Exception):
                await self._lock.release()
        if self._db_ready:
            await close_db()

    async def _watchdog(self, interval_s: float) -> None:
        # Pings come from the event loop itself: a blocked loop stops them and systemd restarts us.
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval_s)
