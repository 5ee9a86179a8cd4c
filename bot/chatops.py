"""Chat-ops wired into the running worker: the trading ports, alert delivery, Telegram/Discord, approvals.

- :class:`WorkerTradingPorts` implements ``commands.ports`` (TradingReader + TradingControl +
  PriceSource) over a :class:`bot.worker.Worker`. Read methods use in-memory state (plus a few
  local database reads) and never raise: whatever cannot be read is reported as "unknown".
- :class:`ChatOps` builds the alert publisher + delivery (Telegram chat and error chat, Discord
  channel or webhook), points the worker's :class:`bot.alert_hub.AlertHub` at them, builds the
  command dispatcher, starts the enabled chat adapters in the background (a chat outage never
  stops trading) and owns the :class:`commands.approvals.ApprovalService`.
- Approval mode: :meth:`ChatOps.entry_approval` is the broker's ``entry_approval`` hook. The
  broker calls it only after the risk gate allowed the entry and runs the wait outside its job
  queue, so exits, stops and order updates keep flowing while an admin decides.

The hourly status and the daily summary are sent by the worker's jobs (``bot.jobs``) through
the hub, so :class:`alerts.reports.ReportScheduler` is deliberately not started here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from alerts import AlertDelivery, AlertPublisher, routes_from_config
from alerts.events import AlertEvent
from bot.config import APPROVAL_ALERTS_OFF
from commands.model import Reply
from commands.ports import (
    BALANCE_UNKNOWN,
    ApprovalRefusedError,
    BalanceView,
    CloseReport,
    EmergencyStopReport,
    HealthView,
    OrderView,
    PositionView,
    ProtectionView,
    StatusSnapshot,
)
from db.kv import kv_get, kv_set
from db.models import Order, OrderStatus, Signal, SignalFate, Trade, TradeState

if TYPE_CHECKING:
    from bot.worker import Worker
    from commands.approvals import ApprovalService
    from commands.registry import Dispatcher

log = logging.getLogger(__name__)

ZERO = Decimal(0)
APPROVAL_KEY = "chatops.approval_enabled"
TELEGRAM_POLL_TIMEOUT_S = 2.0  # long-poll length: bounds how long stopping the Telegram updater can take
ADAPTER_RETRY_MAX_S = 60.0
CLOSE_SETTLE_S = 10.0
STALE_SENT_S = 60.0  # a placement unanswered this long lost its call (engine.execution.order_tracker's stale_sent_s)
WORKING_STATUSES = (OrderStatus.CREATED, OrderStatus.SENT, OrderStatus.UNKNOWN, OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED)
SEVERITY = {"error": "error", "halt": "error", "risk_rejection": "warning", "protection": "warning", "exit": "info",
            "entry": "success"}


def _d(value: Any) -> Decimal:
    """Float/str/Decimal to Decimal without binary noise."""
    return value if isinstance(value, Decimal) else Decimal(repr(value) if isinstance(value, float) else str(value))


def hub_event(event_type: str, text: str, payload: dict[str, Any]) -> AlertEvent:
    """An :class:`AlertEvent` from the hub's ``(type, text, payload)`` (the first line is the title)."""
    title, _, rest = text.partition("\n")
    reply = Reply(title=title[:250], text=rest[:3000], severity=SEVERITY.get(event_type, "info"))  # type: ignore[arg-type]
    return AlertEvent(event_type, reply, dedup_key=str(payload.get("dedup_key") or "")[:128])


class WorkerTradingPorts:
    """``TradingReader`` + ``TradingControl`` + ``PriceSource`` over a running worker."""

    def __init__(self, worker: Worker, approval_enabled: bool = False) -> None:
        self.worker = worker
        self.approval_enabled = approval_enabled

    # -- helpers -----------------------------------------------------------------------------------

    @property
    def _broker(self) -> Any:
        runtime = self.worker.runtime
        return runtime.broker if runtime is not None else None

    def _started_at(self) -> datetime:
        return datetime.now(UTC) - timedelta(seconds=time.monotonic() - self.worker.started_at)

    def _equity(self) -> Decimal:
        """Wallet plus open PnL at the last prices (in memory: no exchange call)."""
        broker = self._broker
        if broker is None:
            raise LookupError("trading is not running")
        symbol = self.worker.config.symbols[0]
        mark = broker.last_price.get(symbol)
        return _d(broker.equity(symbol, mark) if mark is not None else float(broker.wallet))

    def _positions(self) -> list[PositionView]:
        broker = self._broker
        if broker is None:
            return []
        views = []
        for trade in broker.open_trades():
            price = broker.last_price.get(trade.symbol)
            mark = _d(price) if price is not None else trade.entry_price
            sign = 1 if trade.side == "LONG" else -1
            pnl = (mark - trade.entry_price) * sign * trade.qty
            risk = trade.risk_per_unit * trade.qty if trade.risk_per_unit is not None else None
            views.append(PositionView(
                id=trade.position_id, symbol=trade.symbol, side=trade.side, qty=trade.qty, entry_price=trade.entry_price,
                mark_price=mark, stop=trade.stop, target=trade.target, unrealized_pnl=pnl.quantize(Decimal("0.0001")),
                r_multiple=(pnl / risk).quantize(Decimal("0.01")) if risk else None, strategy=trade.strategy,
                opened_at=trade.opened_at,
            ))
        return views

    def _health(self) -> list[HealthView]:
        health = self.worker.health
        now = health.clock()
        views = []
        age = None if health.last_market_data_at is None else now - health.last_market_data_at
        views.append(HealthView("feed", age is not None and age <= health.stale_feed_s,
                                "no data yet" if age is None else "", age))
        api_ok = health.consecutive_api_failures < health.api_failure_threshold
        views.append(HealthView("api", api_ok, "" if api_ok else health.last_api_error))
        runtime = self.worker.runtime
        connected = runtime.account_stream_connected if runtime is not None else None
        if connected is not None:
            views.append(HealthView("account stream", connected, "" if connected else "reconnecting"))
        broker = self._broker
        if broker is not None and broker.halted_reason:
            views.append(HealthView("execution", False, f"entries halted: {broker.halted_reason}"))
        elif runtime is None:
            views.append(HealthView("execution", False, "trading not started"))
        return views

    # -- TradingReader -----------------------------------------------------------------------------

    async def status(self) -> StatusSnapshot:
        """Mode, state (with why), protections, uptime, health, positions, equity and drawdown; never raises."""
        mode = self.worker.mode
        try:
            health = self._health()
        except Exception:
            log.exception("status: health unreadable")
            health = [HealthView("status", False, "unknown")]
        try:
            equity = self._equity()
        except Exception:  # noqa: BLE001 - read side / chat side must never raise into trading or the dispatcher
            equity = None
        try:
            risk = self.worker.risk
            if risk is None:
                raise LookupError("risk manager not started")
            status = await risk.status(equity)
            state, reason = status.state.value, status.state_reason
            if status.state_actor and status.state_actor != "system":
                reason = f"{reason} (by {status.state_actor})"
            protections = [ProtectionView(p.kind, p.reason, p.symbol, p.until) for p in status.protections]
            drawdown = status.drawdown_pct or ZERO
        except Exception as exc:  # noqa: BLE001 - read side / chat side must never raise into trading or the dispatcher
            state, reason, protections, drawdown = "UNKNOWN", f"state unreadable: {type(exc).__name__}", [], ZERO
            with contextlib.suppress(Exception):  # a state held in memory (database down) is still known
                held = self.worker.risk.state.unsaved
                if held is not None:
                    state, reason = held.state.value, f"{held.reason} (NOT saved: database unavailable)"
        try:
            positions = self._positions()
        except Exception:
            log.exception("status: positions unreadable")
            positions = []
            health.append(HealthView("positions", False, "unknown"))
        return StatusSnapshot(mode=mode, state=state, state_reason=reason, approval_enabled=self.approval_enabled,
                              started_at=self._started_at(), equity=equity if equity is not None else ZERO,
                              drawdown_pct=drawdown, positions=positions, protections=protections, health=health)

    async def balance(self) -> BalanceView:
        """Wallet, equity, margin in use (notional / leverage) and open PnL; zeros when unknown."""
        try:
            broker = self._broker
            if broker is None:
                raise LookupError("trading is not running")
            positions = self._positions()
            open_pnl = sum((p.unrealized_pnl for p in positions), ZERO)
            used = sum((p.entry_price * p.qty for p in positions), ZERO) / Decimal(max(1, broker.leverage))
            wallet = _d(broker.wallet)
            asset = "VST" if self.worker.config.exchange.testnet and self.worker.mode == "live" else "USDT"
            return BalanceView(asset, wallet + open_pnl, wallet - used, used.quantize(Decimal("0.0001")), open_pnl)
        except Exception:
            log.exception("balance unreadable")
            return BalanceView(BALANCE_UNKNOWN, ZERO, ZERO, ZERO, ZERO)

    async def open_orders(self) -> list[OrderView]:
        """Working orders the bot stored (the database mirrors the exchange through the order tracker)."""
        try:
            rows = await Order.filter(mode=self.worker.mode, status__in=list(WORKING_STATUSES)).order_by("id").limit(100)
        except Exception:
            log.exception("open orders unreadable")
            return []
        return [OrderView(client_order_id=r.client_order_id, symbol=r.symbol, side=r.side, position_side=r.position_side,
                          order_type=r.order_type, qty=_d(r.quantity), price=_d(r.price) if r.price is not None else None,
                          stop_price=_d(r.stop_price) if r.stop_price is not None else None, status=r.status.value,
                          intent=r.intent.value)
                for r in rows]

    # -- PriceSource -------------------------------------------------------------------------------

    async def last_price(self, symbol: str) -> Decimal:
        """The last traded price of ``symbol``; raises when unknown or the feed is stale."""
        broker = self._broker
        price = broker.last_price.get(symbol) if broker is not None else None
        if price is None:
            raise LookupError(f"no price for {symbol}")
        health = self.worker.health
        if health.last_market_data_at is None or health.clock() - health.last_market_data_at > health.stale_feed_s:
            raise LookupError(f"the price of {symbol} is stale")
        return _d(price)

    # -- TradingControl ----------------------------------------------------------------------------

    def _require_risk(self) -> Any:
        if self.worker.risk is None:
            raise RuntimeError("trading has not started yet")
        return self.worker.risk

    def _state_store(self) -> Any:
        """The risk manager's trading state store; a standalone one (database only) before trading started."""
        from engine.risk.state import TradingStateStore

        return self.worker.risk.state if self.worker.risk is not None else TradingStateStore()

    def _not_saved(self, what: str, exc: BaseException) -> str:
        where = "in force in this process" if self.worker.risk is not None else "NOT in force (trading not started)"
        return (f"{what} is {where} but could not be saved ({type(exc).__name__}: the database is unavailable); "
                "a restart would forget it")

    async def pause(self, actor: str, reason: str) -> None:
        """No new entries (open positions stay managed): in force in memory first, then stored.

        Raises :class:`~commands.ports.NotSavedError` when only the in-memory part worked.
        """
        from commands.ports import NotSavedError
        from engine.risk.state import TradingState

        reason = reason or "paused from chat"
        try:
            await self._state_store().set(TradingState.PAUSED, reason, actor)
        except Exception as exc:
            log.critical("pause by %s not saved", actor, exc_info=True)
            await self._alert_quietly("halt", f"Trading PAUSED by {actor}: {reason} (NOT saved: database unavailable)")
            raise NotSavedError(self._not_saved("PAUSED", exc)) from exc
        await self._alert_quietly("halt", f"Trading PAUSED by {actor}: {reason}")

    async def _alert_quietly(self, event_type: str, text: str) -> None:
        """Publish an alert; a failing alert path never hides the control's own outcome."""
        try:
            await worker_alert(self.worker, event_type, text)
        except Exception:
            log.exception("alert not published: %s", text[:120])

    async def resume(self, actor: str) -> str | None:
        """Entries allowed again: the trading state RUNNING and the execution halt cleared.

        Refused (:class:`~commands.ports.ResumeRefusedError`, nothing changed) while what halted the
        execution side is unresolved. Returns why entries are still refused after resuming
        (trading not started, protections), ``None`` when they are allowed now.
        """
        from commands.ports import ResumeRefusedError

        broker = self._broker
        checked = list(broker.halt_reasons) if broker is not None else []  # a halt arriving during the checks stays
        if broker is not None and broker.halted_reason is not None:
            blockers = await self._unresolved(broker)
            if blockers:
                raise ResumeRefusedError(f"entries stay halted ({broker.halted_reason}): " + "; ".join(blockers))
        risk = self._require_risk()
        await risk.resume(actor)
        if broker is not None and checked:
            log.warning("execution halt (%s) cleared by %s", "; ".join(checked), actor)
            broker.resume(checked)
        note = None
        if broker is None:
            note = "trading has not started yet: entries begin once it does"
        elif broker.halted_reason is not None:
            note = f"a new halt came in meanwhile and stays: {broker.halted_reason}"
        else:
            with contextlib.suppress(Exception):
                if not await risk.entries_allowed():
                    note = "active protections still block entries (see /status, /unlock)"
        await self._alert_quietly("halt", f"Trading RUNNING again (resumed by {actor})" + (f"; {note}" if note else ""))
        return note

    async def _unresolved(self, broker: Any) -> list[str]:
        """What still explains the execution halt; empty when it is safe to clear it."""
        reasons: list[str] = []
        runtime = self.worker.runtime
        dead = sorted(name for name, task in (runtime.tasks().items() if runtime is not None else []) if task.done())
        if dead:
            reasons.append(f"{', '.join(dead)} stopped: restart the bot")
        try:
            cutoff = datetime.now(UTC) - timedelta(seconds=STALE_SENT_S)
            unknown = await Order.filter(mode=self.worker.mode, status=OrderStatus.UNKNOWN).values_list(
                "client_order_id", "symbol")
            stale = await Order.filter(mode=self.worker.mode, status__in=[OrderStatus.CREATED, OrderStatus.SENT],
                                       updated_at__lt=cutoff).values_list("client_order_id", "symbol")
        except Exception as exc:
            reasons.append(f"the orders cannot be checked ({type(exc).__name__}: database unavailable)")
        else:
            for cid, symbol in [*unknown, *stale]:
                reasons.append(f"order {cid} on {symbol} has an unknown state (the order tracker is still looking it up)")
        for ctx in broker.active_trades:
            pending = getattr(ctx, "unresolved", None)  # stop/target placements the tracker is still looking up
            if pending and not ctx.closed:
                roles = ", ".join(sorted(set(pending.values())))
                reasons.append(f"the {roles} placement of {ctx.symbol} {ctx.strategy} ({ctx.trade_id}) has an unknown "
                               "outcome (the order tracker is still looking it up)")
        for halt in broker.halt_reasons:  # every reason since the last resume, not only the first
            symbol = broker.rejected_exits.get(halt)
            if symbol is None:
                continue
            held = [t.position_id for t in broker.open_trades() if t.symbol == symbol]
            if held:
                reasons.append(f"{halt} and the position is still open ({', '.join(held)}): close it (/close <id>) "
                               "or by hand first")
        reasons.extend(await self._unmanaged_trades(broker))
        return reasons

    async def _unmanaged_trades(self, broker: Any) -> list[str]:
        """Trades the database holds open that this run does not manage (restart recovery could not load them)."""
        try:
            rows = await Trade.filter(mode=self.worker.mode, state__in=[TradeState.PENDING, TradeState.OPEN,
                                                                          TradeState.CLOSING]).values_list("id", "symbol")
        except Exception as exc:
            return [f"the trades cannot be checked ({type(exc).__name__}: database unavailable)"]
        active = broker.active_trades
        held = {ctx.db_trade.id for ctx in active if ctx.db_trade is not None}
        placing = {ctx.symbol for ctx in active if ctx.db_trade is None}  # an entry whose rows are still being built
        return [f"trade {trade_id} on {symbol} is open in the database but not managed by this run (restart "
                "recovery could not load it, see the recovery alert): restart the bot once its orders are resolved"
                for trade_id, symbol in rows if trade_id not in held and symbol not in placing]

    async def set_approval(self, enabled: bool, actor: str) -> None:
        """Approval mode on/off, persisted in the key-value store so a restart keeps it.

        Turning it on is refused (:class:`~commands.ports.ApprovalRefusedError`, nothing changed) while
        ``alerts.approval`` is off: nobody would see the requests, so every entry would expire
        unapproved. Off always works.
        """
        if enabled and self.worker.config.alerts.approval == "off":
            log.warning("approval mode not turned on by %s: alerts.approval is off", actor)
            raise ApprovalRefusedError(f"{APPROVAL_ALERTS_OFF} in the config, then restart")
        await kv_set(f"{APPROVAL_KEY}.{self.worker.mode}", bool(enabled))
        self.approval_enabled = bool(enabled)
        log.warning("approval mode %s by %s", "on" if enabled else "off", actor)

    async def close_positions(self, target: str, actor: str) -> CloseReport:
        """Close one position (trade id) or ``all`` at market through the broker, then wait for the fills."""
        broker = self._broker
        if broker is None:
            return CloseReport(failed={target: "trading is not running"})
        chosen = [t for t in broker.open_trades() if target == "all" or target in (t.position_id, t.trade_id)]
        if not chosen:
            return CloseReport(failed={} if target == "all" else {target: "no such open position"})
        closed, failed = [], {}
        for trade in chosen:
            if broker.close_trade(trade.trade_id, f"closed by {actor}"):
                closed.append(trade.position_id)
            else:
                failed[trade.position_id] = "not closable right now (no open quantity)"
        if not await broker.settle(timeout_s=CLOSE_SETTLE_S):
            for pid in closed:
                failed[pid] = "close sent, fill not confirmed yet"
            closed = []
        return CloseReport(closed=closed, failed=failed)

    async def unlock(self, what: str, actor: str) -> list[str]:
        """Lift protections matching ``what`` (kind, symbol, lock id or ``all``)."""
        return list(await self._require_risk().lift(what, actor))

    async def emergency_stop(self, actor: str) -> EmergencyStopReport:
        """HALT, cancel every order, close every position, verify flat (live: read back from the exchange).

        The halt comes first and is in force in memory even when the database is down (the broker
        stands down, the trading state is HALTED in this process and stored when possible), so it
        holds when the trading side starts later. The exchange part then runs with the runtime's
        REST client, or one built from the config while the runtime is not up. Never raises: any
        outcome ends in a report and an alert that says whether the account is flat.
        """
        worker = self.worker
        reason = f"emergency stop by {actor}"
        broker = self._broker
        live = worker.config.mode.value == "live"
        if broker is not None and live:
            broker.stand_down(reason)  # entries refused now; do not re-place the stops we are about to cancel
        elif broker is not None:
            broker.halt(reason)  # paper: its own close_trade handles the stops
        warnings: list[str] = []
        try:
            from engine.risk.state import TradingState

            await self._state_store().set(TradingState.HALTED, reason, actor)
        except Exception as exc:
            warnings.append(self._not_saved("HALTED", exc))
            log.critical("EMERGENCY STOP by %s: HALTED state not saved", actor, exc_info=True)
        try:
            if not live:
                report = await self._paper_emergency_stop(actor, broker)
            else:
                report = await self._live_emergency_stop(actor)
        except Exception as exc:  # the operator must hear about it, whatever it was
            log.critical("EMERGENCY STOP by %s failed", actor, exc_info=True)
            from bot.logging_setup import secrets as log_secrets

            failure = log_secrets.redact(f"the emergency stop failed: {type(exc).__name__}: {exc}")[:300]
            await self._alert_quietly("halt", f"EMERGENCY STOP FAILED: account NOT verified flat, check the exchange now\n"
                                      f"{failure}")
            return EmergencyStopReport(0, [], [failure], False, warnings)
        return EmergencyStopReport(report.cancelled_orders, report.closed_positions, report.failures, report.flat,
                                   warnings + report.warnings)

    async def _live_emergency_stop(self, actor: str) -> EmergencyStopReport:
        from engine.risk.emergency import emergency_stop

        worker = self.worker
        client = getattr(worker.runtime, "rest", None)
        own = client is None
        if own:  # the runtime is not up (start-up reconciliation retrying): the same client the CLI builds
            client = worker.config.exchange.rest_client()
        try:
            # the state is already HALTED above (risk=None: not twice); the close orders are linked to
            # their trades (engine.risk.emergency._owning_trade_id) and stored before they are sent
            report = await emergency_stop(client, risk=None, actor=actor, mode=worker.mode, alert=worker.alerts.risk)
        finally:
            if own:
                await client.close()
        return EmergencyStopReport(report.cancelled_orders, list(report.closed_positions), list(report.failures),
                                   report.flat, list(report.warnings))

    async def _paper_emergency_stop(self, actor: str, broker: Any) -> EmergencyStopReport:
        if broker is None:
            await self._alert_quietly("halt", f"EMERGENCY STOP by {actor} (paper: trading not running, nothing to close; "
                                      "flat)")
            return EmergencyStopReport(0, [], ["trading is not running (nothing to close)"], True)
        report = await self.close_positions("all", actor)
        left = [p.id for p in self._positions()]
        failures = [f"{pid}: {why}" for pid, why in report.failed.items()] + ([f"still open: {', '.join(left)}"] if left else [])
        await self._alert_quietly("halt", f"EMERGENCY STOP by {actor} (paper: positions closed through the broker, "
                                  f"{'flat' if not left else 'NOT flat'})")
        return EmergencyStopReport(0, report.closed, failures, not left)


async def worker_alert(worker: Worker, event_type: str, text: str) -> None:
    """Publish through the worker's hub with the mode prefix."""
    await worker.alerts.publish(event_type, f"[{worker.mode.upper()}] {text}", {})


class ChatOps:
    """Builds and owns the chat side of a running worker (see the module docstring)."""

    def __init__(self, *, telegram_poll_timeout_s: float = TELEGRAM_POLL_TIMEOUT_S) -> None:
        self.telegram_poll_timeout_s = telegram_poll_timeout_s
        self.worker: Worker | None = None
        self.ports: WorkerTradingPorts | None = None
        self.publisher: AlertPublisher | None = None
        self.delivery: AlertDelivery | None = None
        self.approvals: ApprovalService | None = None
        self.dispatcher: Dispatcher | None = None
        self.telegram: Any = None
        self.discord: Any = None
        self._closers: list[Any] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, worker: Worker) -> None:
        """Wire everything; chat transports connect in the background (their outage never blocks trading)."""
        from commands import build_dispatcher
        from commands.approvals import ApprovalService

        config = worker.config
        self.worker = worker
        stored = await kv_get(f"{APPROVAL_KEY}.{worker.mode}", None)
        approval_on = config.approval.enabled if stored is None else bool(stored)
        if approval_on and config.alerts.approval == "off":
            # switched on from chat by an earlier run: it stays on (the safer way round), and its requests are
            # posted with sound rather than hidden
            log.warning("approval mode is on (switched on from chat earlier) although alerts.approval is off: "
                        "approval requests are posted with sound")
        self.ports = ports = WorkerTradingPorts(worker, approval_on)
        self.publisher = AlertPublisher(config.alerts, routes_from_config(config))
        self.delivery = AlertDelivery(config.alerts)
        self.publisher.on_persisted = self.delivery.kick
        await self.publisher.start()
        await self.delivery.start()
        worker.alerts.forward = self._forward
        worker.alerts.flusher = self.flush
        self.approvals = ApprovalService(config.approval, ports, mode=worker.mode)
        expired = await self.approvals.expire_overdue()
        if expired:
            log.info("%d approval request(s) left from the last run expired", expired)
        self.dispatcher = build_dispatcher(config, ports, ports, self.approvals)
        self._add_webhook_sender()
        if config.telegram.enabled:
            self._tasks.append(asyncio.create_task(self._keep_trying("telegram", self._start_telegram), name="chatops-telegram"))
        if config.discord.enabled and config.discord.token.get_secret_value():
            self._tasks.append(asyncio.create_task(self._keep_trying("discord", self._start_discord), name="chatops-discord"))
        log.info("chat-ops started (approval mode %s)", "on" if approval_on else "off")

    # -- alerts ------------------------------------------------------------------------------------

    def _forward(self, event_type: str, text: str, payload: dict[str, Any]) -> None:
        """The hub's forwarder: non-blocking publish into the outbox."""
        if self.publisher is not None:
            self.publisher.publish(hub_event(event_type, text, payload))

    async def flush(self) -> None:
        """Everything published is stored, and one delivery round is attempted."""
        if self.publisher is not None:
            await self.publisher.flush()
        if self.delivery is not None:
            await self.delivery.run_once()

    def _add_webhook_sender(self) -> None:
        dc = self.worker.config.discord if self.worker is not None else None
        if dc is None or (dc.enabled and dc.channel_id is not None) or not dc.webhook_url.get_secret_value():
            return
        from bot.discord_webhook import DiscordWebhookSender

        sender = DiscordWebhookSender(dc.webhook_url)
        self._closers.append(sender.close)
        assert self.delivery is not None
        self.delivery.add_sender(sender)

    # -- transports --------------------------------------------------------------------------------

    async def _keep_trying(self, name: str, start: Any) -> None:
        delay = 1.0
        while True:
            try:
                await start()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - read side / chat side must never raise into trading or the dispatcher
                from bot.logging_setup import secrets as log_secrets

                log.error("%s could not start (%s); retrying in %.0f s", name,
                          log_secrets.redact(f"{type(exc).__name__}: {exc}")[:200], delay)
                await asyncio.sleep(delay)
                delay = min(ADAPTER_RETRY_MAX_S, delay * 2)

    @property
    def _approval_silent(self) -> bool:
        """Approval requests go without sound (``alerts.approval: silent``).

        ``off`` is refused by the config and by /approval on; should approval mode still be on
        (a switch stored by an earlier run), the requests are posted with sound rather than hidden.
        """
        assert self.worker is not None
        return self.worker.config.alerts.approval == "silent"

    async def _start_telegram(self) -> None:
        from bot.telegram_adapter import (
            TelegramAdapter,
            TelegramAlertSender,
            TelegramApprovalNotifier,
        )

        assert self.worker is not None and self.dispatcher is not None and self.delivery is not None
        tg = self.worker.config.telegram
        adapter = TelegramAdapter(tg, self.dispatcher, poll_timeout_s=self.telegram_poll_timeout_s)
        try:
            await adapter.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await adapter.app.shutdown()
            raise
        self.telegram = adapter
        if tg.chat_id is not None:
            self.delivery.add_sender(TelegramAlertSender(adapter, tg.chat_id, "telegram"))
            assert self.approvals is not None
            self.approvals.add_notifier(TelegramApprovalNotifier(adapter, tg.chat_id, silent=self._approval_silent))
        if tg.error_chat_id is not None:
            self.delivery.add_sender(TelegramAlertSender(adapter, tg.error_chat_id, "telegram_errors"))

    async def _start_discord(self) -> None:
        from bot import discord_adapter as dca

        assert self.worker is not None and self.dispatcher is not None and self.delivery is not None
        dc = self.worker.config.discord
        adapter = dca.DiscordAdapter(dc, self.dispatcher)
        await adapter.start()
        self.discord = adapter
        if dc.channel_id is not None:
            self.delivery.add_sender(dca.DiscordChannelSender(adapter, dc.channel_id, "discord"))
            assert self.approvals is not None
            notifier = dca.DiscordApprovalNotifier(adapter, dc.channel_id, silent=self._approval_silent)
            self.approvals.add_notifier(notifier)
        if dc.error_channel_id is not None:
            self.delivery.add_sender(dca.DiscordChannelSender(adapter, dc.error_channel_id, "discord_errors"))

    # -- approval mode -----------------------------------------------------------------------------

    @property
    def entry_approval(self) -> EntryApprovalHook:
        """The broker's ``entry_approval`` hook (``active`` follows the runtime approval switch)."""
        return EntryApprovalHook(self)

    @property
    def approval_active(self) -> bool:
        """Approval mode is on right now."""
        return self.ports is not None and self.approvals is not None and self.ports.approval_enabled

    async def approve_entry(self, request: Any, signal_row: Signal) -> Any:
        """Ask the admins and wait (the broker runs this outside its job queue); allowed at once when off."""
        from engine.execution.broker import GateDecision

        if not self.approval_active:
            return GateDecision(True)
        assert self.approvals is not None
        approval_id = await self.approvals.request(signal_row)
        decision = await self.approvals.wait(approval_id)
        if not decision.approved:
            return GateDecision(False, f"{decision.status.value}: {decision.reason}".rstrip(": "))
        signal_row.fate = SignalFate.TAKEN
        signal_row.reason = f"approved by {decision.decided_by}"[:255]
        await signal_row.save(update_fields=["fate", "reason"])
        return GateDecision(True)

    # -- stop --------------------------------------------------------------------------------------

    async def stop(self) -> None:
        """Adapters, approvals, then the outbox (whatever is still pending stays for the next start)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self.worker is not None:
            self.worker.alerts.forward = None
            self.worker.alerts.flusher = None
        if self.approvals is not None:
            with contextlib.suppress(Exception):
                await self.approvals.close()
        if self.publisher is not None:
            with contextlib.suppress(Exception):
                await self.publisher.stop(timeout_s=1.0)
        if self.delivery is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.delivery.run_once(), 2.0)
            await self.delivery.stop()
        for name, adapter in (("telegram", self.telegram), ("discord", self.discord)):
            if adapter is not None:
                try:
                    await asyncio.wait_for(adapter.stop(), 5.0)
                except Exception as exc:  # noqa: BLE001 - read side / chat side must never raise into trading or the dispatcher
                    log.warning("%s did not stop cleanly: %s", name, type(exc).__name__)
        for close in self._closers:
            with contextlib.suppress(Exception):
                await close()
        log.info("chat-ops stopped")


class EntryApprovalHook:
    """``engine.execution.broker.EntryApproval`` with an ``active`` flag the broker checks first."""

    def __init__(self, chatops: ChatOps) -> None:
        self.chatops = chatops

    @property
    def active(self) -> bool:
        """Whether entries must wait for an admin now."""
        return self.chatops.approval_active

    async def __call__(self, request: Any, signal_row: Signal) -> Any:
        """Request and wait for the decision."""
        return await self.chatops.approve_entry(request, signal_row)
