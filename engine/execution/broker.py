"""``ExecutionBroker``: the ``engine.trading.Broker`` of paper and live trading (one code path, two venues).

The per-symbol ``SymbolEngine`` stays synchronous and decides everything (entries, partials,
trailing steps, stop and target) from closed candles. This broker turns its decisions into
orders on a :class:`~engine.execution.venue.Venue` and reports the fills back through
``engine.on_entry_filled`` / ``on_exit_filled`` / ``on_entry_failed``:

* every engine call (``submit_entry``, ``submit_exit``, ``move_stop``) and every venue update is
  queued and processed by ONE worker task, in order, so orders and fills of a trade never race;
* entry: pre-trade gate (the risk manager's hook; a gate error is a refusal) -> signal, trade row
  PENDING and order row SENT committed together in one transaction (``db.fast_insert``) ->
  MARKET entry with the stop-loss and take-profit attached (so the exchange protects the position
  from its first fill). Hedge mode and leverage are set for every symbol at start
  (:meth:`ExecutionBroker.prepare_symbols`; again at the first entry if that failed);
* entry filled: the engine replans stop/target from the fill price; the attached orders are
  replaced when the replanned levels differ (new order first, then cancel the old one: never an
  unprotected moment);
* partial exits: MARKET orders on the closing side of the hedge position; afterwards stop and
  target are resized to the remaining quantity (again place-then-cancel);
* trailing: the stop is replaced (place-then-cancel). A replacement refused for now (rate limit,
  clock) keeps the old stop and is tried again on a timer; one refused for good while the old stop
  works is placed cancel-then-place instead (BingX may cap pending stops at the position size).
  A position with no stop whose new stop is refused for now is retried on a timer for as long as the
  refusals are transient (a close would be refused too); only one refused for good is closed at market,
  with an alert. A close refused for now is sent again on a timer, never abandoned;
* stop / target: they live on the exchange. When the exchange fills one, the trade is closed
  from that fill (the engine's trade manager is told). When the engine sees a stop or target
  traded first, the broker waits ``exit_grace_s`` for the exchange's fill and closes at market
  only if the position is still there;
* an order whose placement outcome is unknown (no answer, "duplicate client order id", an
  unclassified code, an unexpected error in the placing call) is never resent from here: entries
  halt, an alert goes out, and the order tracker resolves it by lookup (a stop/target stays routed
  to its trade meanwhile: found working it becomes the protection, found absent it is placed again);
* a partial exit or close that is rejected, or ends without any fill, leaves the position open
  under its stop: entries halt, an alert goes out, the trade is OPEN and managed again, and the
  close can be tried again (``close_trade``);
* a trade already CLOSED in the database (reconciliation booked it through
  :meth:`ExecutionBroker.book_reconciled_close`) is never booked or reported twice.

This module is the order state machine (entries, updates, protection, exits); its collaborators:

* ``trade_ctx``: the values it works with (``TradeRequest``, ``GateDecision``, ``TradeCtx``,
  ``Protective``, ``TradeView``, the hook types) and ``round_to_tick``; re-exported here;
* ``recovery``: restart recovery (``BrokerRecovery``, the body of :meth:`ExecutionBroker.recover`);
* ``funding``: funding payments booked on the trades (``FundingBooker``, behind
  :meth:`ExecutionBroker.on_funding` and :meth:`ExecutionBroker.catch_up_funding`);
* ``signal_rows``: the ``Signal`` rows and their fate (``SignalRows``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from decimal import Decimal
from typing import Any, Callable, Coroutine, Iterator, Sequence

from db.fast_insert import Ref, Row, insert_rows, warm_up
from db.models import Order, OrderEvent, OrderIntent, OrderStatus, Signal, SignalFate, Trade, TradeState
from engine.exchange.bingx import new_client_order_id
from engine.exchange.bingx.errors import NO_POSITION_CODES
from engine.execution.funding import FundingBooker
from engine.execution.order_store import FINAL_STATUSES, OrderStore
from engine.execution.positions import TradeStore, dec
from engine.execution.recovery import BrokerRecovery, RecoveryReport
from engine.execution.signal_rows import SignalRows
# the value types live in trade_ctx; they stay importable from here (engine.risk, bot and tests import them so)
from engine.execution.trade_ctx import (
    ZERO,
    AlertHook,
    EntryApproval,
    GateDecision,
    PreTradeGate,
    Protective,
    TradeCtx,
    TradeRequest,
    TradeView,
    dataclass_replace,
    epoch_ms,
    round_to_tick,
)
from engine.execution.venue import ExecMode, OrderSpec, PlacementRejected, PlacementUnknown, Venue, VenueUpdate
from engine.trading.engine import SymbolEngine
from engine.trading.manager import ExitIntent, ExitKind, StopMove
from engine.trading.positions import Fill, Position, PositionState
from strategies.base import Side
from strategies.generator import SignalRecord

logger = logging.getLogger(__name__)

PROTECTIVE_TYPES = frozenset({"STOP_MARKET", "TAKE_PROFIT_MARKET"})
# BingX 110411-110414: a stop/take-profit on the wrong side of the price. Refused for its price, not its quantity:
# cancelling the working order first (the quantity-cap fallback of ``_renew``) would not help
PRICE_SIDE_CODES = frozenset({110411, 110412, 110413, 110414})
PROTECT_LATER_TRIES = 8  # timed retries of a refused replacement while the previous stop/target still works
RETRY_MAX_WAIT_S = 60.0  # longest wait between two timed retries (protection, closes)
UNPROTECTED_ALERT_EVERY_S = 300.0  # a position still without a stop is alerted again at most this often


class SymbolBroker:
    """The ``engine.trading.Broker`` one ``SymbolEngine`` talks to (adds the symbol to each call)."""

    def __init__(self, broker: "ExecutionBroker", symbol: str) -> None:
        self.broker = broker
        self.symbol = symbol

    def equity(self, mark_price: float) -> float:
        """Wallet plus open positions (this symbol marked at ``mark_price``)."""
        return self.broker.equity(self.symbol, mark_price)

    def submit_entry(self, position: Position, reference_price: float, time_ms: int) -> Fill | None:
        """Queue the entry; the fill comes back through ``engine.on_entry_filled``."""
        self.broker.submit_entry(self.symbol, position, reference_price, time_ms)
        return None

    def submit_exit(self, position: Position, intent: ExitIntent, time_ms: int) -> Fill | None:
        """Queue the exit; the fill comes back through ``engine.on_exit_filled``."""
        self.broker.submit_exit(self.symbol, position, intent, time_ms)
        return None

    def move_stop(self, position: Position, move: StopMove, time_ms: int) -> None:
        """Queue the replacement of the exchange stop."""
        self.broker.move_stop(self.symbol, position, move, time_ms)


class ExecutionBroker:
    """Orders, fills and positions for every symbol of one process, on one venue."""

    def __init__(
        self,
        venue: Venue,
        *,
        leverage: int = 1,
        pre_trade_gate: PreTradeGate | None = None,
        on_alert: AlertHook | None = None,
        exit_grace_s: float = 5.0,
        settle_timeout_s: float = 10.0,
        protect_retry_s: float = 2.0,
    ) -> None:
        self.venue = venue
        self.mode = venue.mode.value
        self.leverage = max(1, int(leverage))
        self.pre_trade_gate = pre_trade_gate
        self.entry_approval: EntryApproval | None = None  # set by chat-ops (approval mode)
        self.on_alert = on_alert
        self.exit_grace_s = exit_grace_s
        self.settle_timeout_s = settle_timeout_s
        self.protect_retry_s = protect_retry_s  # first wait before a refused stop/target placement is tried again
        self.orders = OrderStore(self.mode)
        self.trades = TradeStore(self.mode)
        self.engines: dict[str, SymbolEngine] = {}
        self.last_price: dict[str, float] = {}
        self.halted_reason: str | None = None  # the first reason since the last resume (what /health shows)
        self.halt_reasons: list[str] = []  # every distinct reason since the last resume (what /resume must check)
        # halt reason -> the symbol whose exit the exchange refused: /resume keeps the halt while that symbol's
        # position is still held (a structured record, so the check never depends on the reason's wording)
        self.rejected_exits: dict[str, str] = {}
        self.wallet = ZERO
        self._ctx: dict[str, TradeCtx] = {}  # open or pending trades by engine trade id
        self._route: dict[int, tuple[TradeCtx, str]] = {}  # DB order id -> (trade, role: entry/stop/target/exit)
        self._cancelled_by_us: set[int] = set()
        self._awaiting: set[int] = set()  # market orders whose executions are still to be booked
        self._prepared: set[str] = set()
        self._placing: set[str] = set()  # client order ids sent whose answer is not applied yet (_placing_call)
        self._stood_down: str | None = None  # the emergency stop's reason while it flattens the account (stand_down)
        self._funding = FundingBooker(self.mode, venue, self.trades, self._ctx, self._refresh_wallet, self._log_extra)
        self._recovery = BrokerRecovery(self)
        self._signals = SignalRows(self.mode)
        self._queue: asyncio.Queue[tuple[str, Callable[[], Coroutine[Any, Any, None]]]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._timers: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        venue.set_update_callback(self.on_venue_update)

    # -- lifecycle -------------------------------------------------------------------------------

    def _log_extra(self, ctx: TradeCtx | None = None, **more: Any) -> dict[str, Any]:
        extra: dict[str, Any] = {"mode": self.mode}
        if ctx is not None:
            extra.update(symbol=ctx.symbol, strategy=ctx.strategy, trade_id=ctx.trade_id)
        extra.update(more)
        return extra

    async def start(self) -> None:
        """Read the wallet and start the worker."""
        if self.venue.mode is ExecMode.LIVE:
            logger.warning("*** LIVE MODE: real orders will be sent to the exchange ***", extra=self._log_extra())
        self.wallet = await self.venue.wallet_balance()
        warm_up(Signal, Trade, Order, OrderEvent)  # the entry path's statements, built before the first entry
        if self._worker is None:
            self._worker = asyncio.create_task(self._work(), name=f"execution-{self.mode}")
        logger.info("[%s] execution broker started, wallet %s", self.mode.upper(), self.wallet, extra=self._log_extra())

    async def stop(self) -> None:
        """Stop the worker (orders on the exchange stay where they are: stops keep protecting)."""
        for timer in list(self._timers):
            timer.cancel()
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None

    def register(self, engine: SymbolEngine) -> SymbolBroker:
        """Attach the engine of ``engine.symbol`` (it receives the fills); returns its broker view."""
        self.engines[engine.symbol] = engine
        return SymbolBroker(self, engine.symbol)

    def for_symbol(self, symbol: str) -> SymbolBroker:
        """The broker view for an engine about to be created (call :meth:`register` once it exists)."""
        return SymbolBroker(self, symbol)

    def halt(self, reason: str, *, expected: bool = False) -> None:
        """Refuse new entries until :meth:`resume` (exits and stops keep working).

        ``expected`` marks a planned halt (a normal shutdown): logged at INFO, not as an error.
        """
        if reason not in self.halt_reasons:
            self.halt_reasons.append(reason)
        if self.halted_reason is None:
            self.halted_reason = reason
            level = logging.INFO if expected else logging.ERROR
            logger.log(level, "[%s] entries halted: %s", self.mode.upper(), reason, extra=self._log_extra())

    def resume(self, reasons: Sequence[str] | None = None) -> None:
        """Allow entries again (an operator's decision).

        ``reasons``: lift only these (the ones the operator's checks saw); a halt that arrived since stays.
        """
        if reasons is None:
            self.halt_reasons.clear()
        else:
            self.halt_reasons[:] = [r for r in self.halt_reasons if r not in reasons]
        self.halted_reason = self.halt_reasons[0] if self.halt_reasons else None
        for reason in [r for r in self.rejected_exits if r not in self.halt_reasons]:
            del self.rejected_exits[reason]
        if self._stood_down not in self.halt_reasons:
            self._stood_down = None

    def halt_for_rejected_exit(self, client_order_id: str, symbol: str, note: str = "") -> None:
        """Halt entries because the exchange refused (or never filled) an exit of ``symbol``'s position.

        Recorded in :attr:`rejected_exits`, so chat-ops' /resume refuses while that position is still held.
        """
        reason = f"exit {client_order_id} on {symbol} rejected by the exchange{note}"
        self.rejected_exits[reason] = symbol
        self.halt(reason)

    @property
    def active_trades(self) -> list[TradeCtx]:
        """Pending or open trades (the broker's own mutable state: outside code reads :meth:`open_trades`)."""
        return list(self._ctx.values())

    def trade_rows(self) -> list[Trade]:
        """The database rows of the trades this broker holds (pending, open or closing), as it keeps them up to date."""
        return [ctx.db_trade for ctx in self._ctx.values() if ctx.db_trade is not None]

    def open_trades(self) -> list[TradeView]:
        """Snapshots of the trades holding a position (entry filled, quantity open, not closed)."""
        views: list[TradeView] = []
        for ctx in self._ctx.values():
            entry = ctx.position.entry
            if entry is None or ctx.open_qty <= 0 or ctx.closed:
                continue
            plan = ctx.position.plan
            stop = ctx.stop.price if ctx.stop is not None else (dec(ctx.stop_level) if ctx.stop_level is not None else None)
            target = ctx.target.price if ctx.target is not None else (dec(ctx.target_level) if ctx.target_level is not None else None)
            views.append(TradeView(
                trade_id=ctx.trade_id, db_id=ctx.db_trade.id if ctx.db_trade is not None else None, symbol=ctx.symbol,
                strategy=ctx.strategy, side=ctx.side, qty=ctx.open_qty, entry_price=dec(entry.price), stop=stop, target=target,
                risk_per_unit=dec(plan.risk_per_unit) if plan is not None and plan.risk_per_unit > 0 else None,
                opened_at=ctx.db_trade.opened_at if ctx.db_trade is not None else None,
            ))
        return views

    @property
    def worker_task(self) -> asyncio.Task[None] | None:
        """The task that processes every order change (None before :meth:`start` / after :meth:`stop`)."""
        return self._worker

    async def settle(self, timeout_s: float | None = None) -> bool:
        """Wait until queued work is done and placed market orders are booked; False on timeout."""
        deadline = asyncio.get_running_loop().time() + (timeout_s if timeout_s is not None else self.settle_timeout_s)
        while True:
            await self._wait_idle(deadline)
            if not self._awaiting and self._queue.empty():
                return True
            if asyncio.get_running_loop().time() >= deadline:
                logger.warning("[%s] settle timed out with %d order(s) awaiting executions", self.mode.upper(), len(self._awaiting),
                               extra=self._log_extra())
                return False
            await asyncio.sleep(0.005)

    async def _wait_idle(self, deadline: float) -> None:
        if asyncio.get_running_loop().time() >= deadline:
            return
        try:
            # a timeout scope, not wait_for: no task per call (settle runs after every candle, right as its entry starts)
            async with asyncio.timeout_at(deadline):
                await self._queue.join()
        except TimeoutError:
            pass

    # -- engine side (synchronous: queue and return) ---------------------------------------------

    def equity(self, symbol: str, mark_price: float) -> float:
        """Wallet balance plus the unrealised PnL of open trades (``symbol`` at ``mark_price``)."""
        equity = float(self.wallet)
        for ctx in self._ctx.values():
            manager = ctx.position.manager
            if manager is None or ctx.open_qty <= 0:
                continue
            price = mark_price if ctx.symbol == symbol else self.last_price.get(ctx.symbol)
            if price is not None:
                entry = ctx.position.entry
                assert entry is not None
                equity += (price - entry.price) * ctx.position.signal.side.sign * float(ctx.open_qty)
        return equity

    def submit_entry(self, symbol: str, position: Position, reference_price: float, time_ms: int) -> None:
        """Queue an entry decided by the engine of ``symbol``."""
        engine = self.engines[symbol]
        side = "LONG" if position.signal.side is Side.LONG else "SHORT"
        ctx = TradeCtx(position.trade_id, symbol, position, engine, side)
        self._ctx[position.trade_id] = ctx
        self._enqueue(f"entry {position.trade_id}", lambda: self._open(ctx, reference_price, time_ms))

    def submit_exit(self, symbol: str, position: Position, intent: ExitIntent, time_ms: int) -> None:
        """Queue an exit decided by the engine."""
        ctx = self._ctx.get(position.trade_id)
        if ctx is None:
            logger.error("[%s] exit for unknown trade %s ignored", self.mode.upper(), position.trade_id, extra=self._log_extra())
            return
        if intent.kind is ExitKind.PARTIAL:
            self._enqueue(f"partial {ctx.trade_id}", lambda: self._market_exit(ctx, intent, OrderIntent.PARTIAL_EXIT))
        elif intent.kind is ExitKind.CLOSE:
            self._enqueue(f"close {ctx.trade_id}", lambda: self._market_exit(ctx, intent, OrderIntent.CLOSE))
        else:
            self._enqueue(f"expect {ctx.trade_id}", lambda: self._expect_exchange_exit(ctx, intent))

    def move_stop(self, symbol: str, position: Position, move: StopMove, time_ms: int) -> None:
        """Queue a trailing step."""
        ctx = self._ctx.get(position.trade_id)
        if ctx is not None:
            self._enqueue(f"trail {ctx.trade_id}", lambda: self._trail(ctx, move))

    def record_signal(self, record: SignalRecord) -> None:
        """Queue storing a signal and its fate (entries store theirs first; a veto there wins)."""
        self._enqueue("signal", lambda: self._signals.store(record))

    def close_trade(self, trade_id: str, reason: str = "manual") -> bool:
        """Close one open trade at market (chat command, shutdown); False when it is not open."""
        ctx = self._ctx.get(trade_id)
        if ctx is None or ctx.position.manager is None:
            return False
        price = self.last_price.get(ctx.symbol, ctx.position.plan.entry if ctx.position.plan else 0.0)
        intent = ctx.position.manager.close(price)
        if intent is None:
            # the manager already gave the trade up (an earlier close the exchange refused): the position is
            # still held, so a new close may be tried as long as none is in flight
            if ctx.closed or ctx.open_qty <= 0 or ctx.exit_intents or ctx.position.entry is None:
                return False
            intent = ExitIntent(ExitKind.CLOSE, ctx.open_qty, price, reason, True)
        intent = ExitIntent(ExitKind.CLOSE, intent.qty, intent.price, reason, True)
        self._enqueue(f"close {trade_id}", lambda: self._market_exit(ctx, intent, OrderIntent.CLOSE))
        return True

    # -- restart recovery ------------------------------------------------------------------------

    async def recover(self, strategies: Any) -> RecoveryReport:
        """Reload the trades a previous run left PENDING/OPEN/CLOSING (call after reconciliation, before trading).

        Every open trade goes back into its engine (position, plan, manager state) and into the
        broker with its working stop and target; each protective order is looked up on the venue
        (one the venue no longer has is re-placed, a fill that happened while we were down is
        booked). A protective order already FILLED in the database (a poll or reconciliation saw the
        fill before any trade was loaded to book it on) is booked as the trade's exit. A pending
        entry whose order filled is opened from the fill; one that never filled ends as failed; one
        whose state is still unknown halts entries. Live: the funding settled while the bot was down
        is booked from the income history (once per tranId). Nothing is ever resent blindly.
        """
        report = RecoveryReport()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def job() -> None:
            # on the worker, like every other order change: no venue update can interleave with it
            try:
                await self._recovery.run(strategies, report)
                await self._funding.book_missed(report)
            except BaseException as exc:
                done.set_exception(exc)
                raise
            else:
                done.set_result(None)

        self._enqueue("recover", job)
        await done
        if report.problems:
            self.halt("recovery: " + "; ".join(report.problems)[:200])
            await self._alert("halt", "restart recovery could not explain: " + "; ".join(report.problems), {})
        return report

    # -- venue side --------------------------------------------------------------------------------

    async def on_venue_update(self, update: VenueUpdate) -> None:
        """Every order report of the venue (stream, poll, paper): queued behind earlier work."""
        self._enqueue(f"update {update.exchange_order_id}", lambda: self._handle_update(update))

    async def on_stale_placement(self, order: Order) -> None:
        """The order tracker found a placement that never answered (left SENT): halt entries and alert."""
        self.halt(f"order {order.client_order_id} on {order.symbol} has an unknown state")
        await self._alert("halt", f"order {order.client_order_id} ({order.intent.value}) on {order.symbol}: placement never "
                          "answered, outcome unknown; entries halted until it is resolved", {"client_order_id": order.client_order_id})

    def on_funding(self, symbol: str | None, amount: Decimal, time_ms: int | None = None) -> None:
        """A funding payment (negative = paid): attributed to the open trades of ``symbol`` by quantity."""
        self._enqueue("funding", lambda: self._funding.book(symbol, amount, time_ms))

    # -- the worker ---------------------------------------------------------------------------------

    def _enqueue(self, what: str, job: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self._queue.put_nowait((what, job))

    async def _work(self) -> None:
        while True:
            what, job = await self._queue.get()
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one failed job must not stop execution for every symbol
                logger.exception("[%s] execution job %r failed", self.mode.upper(), what, extra=self._log_extra())
                await self._alert("error", f"execution job {what} failed: {type(exc).__name__}: {exc}", {})
            finally:
                self._queue.task_done()

    async def _alert(self, event_type: str, text: str, payload: dict[str, Any]) -> None:
        message = f"[{self.mode.upper()}] {text}"
        level = logging.ERROR if event_type in ("error", "halt") else logging.INFO
        logger.log(level, message, extra=self._log_extra(event=event_type))
        if self.on_alert is not None:
            try:
                await self.on_alert(event_type, message, {"mode": self.mode, **payload})
            except Exception:  # alert delivery problems must not break execution
                logger.exception("alert hook failed", extra=self._log_extra())

    # -- entries ------------------------------------------------------------------------------------

    async def _open(self, ctx: TradeCtx, reference_price: float, time_ms: int, approved: bool = False,
                    signal_row: Signal | None = None) -> None:
        """Gate, store and send one entry (``signal_row``: the signal as stored while it waited for approval)."""
        position = ctx.position
        signal = position.signal
        extra = self._log_extra(ctx)
        reason = self._entry_blocker(ctx)
        request = TradeRequest(
            self.mode, ctx.symbol, ctx.strategy, ctx.side, position.qty, signal.entry, signal.stop, signal.target,
            float(position.qty) * abs(signal.entry - signal.stop), float(position.qty) * reference_price,
            self.equity(ctx.symbol, reference_price), time_ms,
        )
        if reason is None and self.pre_trade_gate is not None:
            # re-run after an approval, since the state may have changed during the wait (paused, locked);
            # flagged as a re-check so the entry counts only once toward the order-rate cap
            try:
                decision = await self.pre_trade_gate(dataclasses.replace(request, recheck=True) if approved else request)
            except Exception as exc:  # a gate that cannot decide is a no: never open on an error
                logger.exception("[%s] the risk gate failed on %s", self.mode.upper(), ctx.trade_id, extra=extra)
                decision = GateDecision(False, f"the risk gate failed ({type(exc).__name__}: {exc})")
            if not decision.allowed:
                reason = f"risk: {decision.reason}"
        # ``active`` (when the hook has it) says whether approval mode is on right now: off => no detour
        if reason is None and not approved and self.entry_approval is not None and getattr(self.entry_approval, "active", True):
            self._spawn_approval(ctx, request, await self._signals.row(signal, SignalFate.TAKEN, ""), time_ms)
            return
        if reason is None:
            try:
                await self._prepare_symbol(ctx.symbol)
            except Exception as exc:
                reason = f"cannot set position mode/leverage: {exc}"
        if reason is not None:
            await self._signals.refused(signal, signal_row, reason)
            await self._entry_failed(ctx, reason, alert_type="risk_rejection")
            return
        tick = self.venue.price_tick(ctx.symbol)
        ctx.attached_stop = round_to_tick(signal.stop, tick, stop_of=ctx.side)
        ctx.attached_target = round_to_tick(signal.target, tick)
        management = {"entry_reference": reference_price}
        spec = OrderSpec(
            symbol=ctx.symbol, side="BUY" if ctx.side == "LONG" else "SELL", position_side=ctx.side, order_type="MARKET",
            quantity=position.qty, client_order_id=new_client_order_id("en"), attached_stop=ctx.attached_stop,
            attached_target=ctx.attached_target, reference_price=dec(reference_price),
        )
        # ONE commit on the order path (issue 10): the signal, the trade and the order intent (client order id,
        # stored as SENT) are durable together before the request leaves; a failure stores none and sends nothing
        rows = [] if signal_row is not None else [Row(Signal, self._signals.values(signal, SignalFate.TAKEN, ""))]
        trade_at = len(rows)
        rows.append(self.trades.pending_row(
            symbol=ctx.symbol, strategy=ctx.strategy, side=ctx.side, qty=position.qty, stop=signal.stop, target=signal.target,
            risk_per_unit=abs(signal.entry - signal.stop), signal_id=signal_row.id if signal_row is not None else Ref(0),
            management=management,
        ))
        order_at = len(rows)
        rows += self.orders.order_rows(spec, OrderIntent.ENTRY, Ref(trade_at), sent=True, at=order_at,
                                       detail={"stop_loss": str(ctx.attached_stop), "take_profit": str(ctx.attached_target)})
        try:
            stored = await insert_rows(rows)
        except Exception as exc:  # nothing was stored, so nothing is sent: the entry is dropped, loudly
            logger.exception("[%s] could not store the entry of %s", self.mode.upper(), ctx.trade_id, extra=extra)
            reason = f"could not store the order intent: {type(exc).__name__}: {exc}"
            try:  # the signal's fate, if the database takes anything now (else the engine's record stores it as taken)
                await self._signals.refused(signal, signal_row, reason)
            except Exception:
                logger.exception("[%s] could not store the fate of the signal of %s", self.mode.upper(), ctx.trade_id, extra=extra)
            await self._entry_failed(ctx, reason, alert_type="error")
            return
        self._route[stored.ids[order_at]] = (ctx, "entry")

        def stored_order() -> Order:
            # the trade's and the order's model objects, built once the request has left: nothing reads them before,
            # and building them is ~0.1 ms of the tick-to-order time (issue 10)
            ctx.db_trade, ctx.entry_order = stored[trade_at], stored[order_at]
            return ctx.entry_order

        with self._placing_call(spec.client_order_id):
            try:
                update = await self._send_stored(stored_order, spec, ctx)
            finally:
                order = stored_order()  # also when the send is cancelled (shutdown): the rows are the broker's from here on
            logger.info("[%s] entry %s %s %s qty %s (ref %s, stop %s, target %s)", self.mode.upper(), ctx.symbol, ctx.strategy,
                        ctx.side, position.qty, reference_price, ctx.attached_stop, ctx.attached_target,
                        extra={**extra, "client_order_id": spec.client_order_id})
            if update is not None:
                self._awaiting.add(order.id)
                await self._apply(order, update)

    def _spawn_approval(self, ctx: TradeCtx, request: TradeRequest, signal_row: Signal, time_ms: int) -> None:
        """Wait for the approval in its own task; the outcome comes back through the job queue."""
        approval = self.entry_approval
        assert approval is not None

        async def wait() -> None:
            try:
                decision = await approval(request, signal_row)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # no decision is a denial: never open on an error
                logger.exception("[%s] approval of %s failed", self.mode.upper(), ctx.trade_id, extra=self._log_extra(ctx))
                decision = GateDecision(False, f"approval failed: {type(exc).__name__}")
            if decision.allowed:
                price = self.last_price.get(ctx.symbol, request.entry)
                self._enqueue(f"entry {ctx.trade_id} (approved)",
                              lambda: self._open(ctx, price, time_ms, approved=True, signal_row=signal_row))
            else:
                self._enqueue(f"entry {ctx.trade_id} (not approved)", lambda: self._not_approved(ctx, decision.reason))

        task = asyncio.create_task(wait(), name=f"approval-{ctx.trade_id}")
        self._timers.add(task)
        task.add_done_callback(self._timers.discard)
        logger.info("[%s] entry %s %s %s waits for approval", self.mode.upper(), ctx.symbol, ctx.strategy, ctx.side,
                    extra=self._log_extra(ctx))

    async def _not_approved(self, ctx: TradeCtx, reason: str) -> None:
        """Denied, expired or refused: the entry is dropped (the approval service stored the signal's fate)."""
        await self._entry_failed(ctx, f"approval: {reason}", alert_type="risk_rejection")

    def stand_down(self, reason: str) -> None:
        """Someone else (the emergency stop) is about to cancel every order and flatten the account.

        Entries are halted and the cancellation of our working stops/targets is expected, so they
        are not re-placed while the positions are being closed.
        """
        self.halt(reason)
        self._stood_down = reason  # no stop/target is placed from now on, timed retries included (until resume)
        for ctx in self._ctx.values():
            for protective in (ctx.stop, ctx.target):
                if protective is not None:
                    self._cancelled_by_us.add(protective.order_id)

    def _entry_blocker(self, ctx: TradeCtx) -> str | None:
        if self.halted_reason is not None:
            return f"entries halted: {self.halted_reason}"
        for other in self._ctx.values():
            if other is not ctx and other.symbol == ctx.symbol and other.side == ctx.side and not other.closed and not other.failed:
                # hedge mode has ONE position per symbol and side: two trades in it could not be told apart
                return f"a {ctx.side} position on {ctx.symbol} is already held by {other.strategy}"
        return None

    async def prepare_symbols(self, symbols: list[str]) -> None:
        """Position mode and leverage of every symbol set now, so the first entry of each sends only its order.

        A symbol that cannot be prepared now (the exchange refused, a timeout) is tried again at its first entry.
        """
        for symbol in symbols:
            try:
                await self._prepare_symbol(symbol)
            except Exception as exc:
                logger.warning("[%s] %s: position mode/leverage not set yet (%s: %s); retried at the first entry",
                               self.mode.upper(), symbol, type(exc).__name__, exc, extra=self._log_extra(symbol=symbol))

    async def _prepare_symbol(self, symbol: str) -> None:
        if symbol not in self._prepared:
            await self.venue.prepare_symbol(symbol, self.leverage)
            self._prepared.add(symbol)

    async def _send(self, order: Order, spec: OrderSpec, ctx: TradeCtx, *, raise_rejected: bool = False) -> VenueUpdate | None:
        """Place a stored order. Returns the venue's answer, or None when refused / unknown (handled here).

        ``raise_rejected``: a refusal is stored (REJECTED) and re-raised for the caller to handle.
        """
        if order.status is not OrderStatus.SENT:  # create(sent=True) stored it as SENT in the same commit
            await self.orders.set_status(order, OrderStatus.SENT, "placement")
        return await self._send_stored(lambda: order, spec, ctx, raise_rejected=raise_rejected)

    async def _send_stored(self, stored_order: Callable[[], Order], spec: OrderSpec, ctx: TradeCtx, *,
                           raise_rejected: bool = False) -> VenueUpdate | None:
        """Place an order already stored as SENT; ``stored_order()`` gives its row, which only the outcome needs.

        The caller holds :meth:`_placing_call` around this and the application of the answer.
        """
        try:
            return await self.venue.place(spec)
        except PlacementRejected as exc:
            order = stored_order()
            await self.orders.set_status(order, OrderStatus.REJECTED, "placement", error=exc.reason)
            logger.warning("[%s] order %s rejected%s: %s", self.mode.upper(), spec.client_order_id,
                           " (transient)" if exc.transient else "", exc.reason,
                           extra=self._log_extra(ctx, client_order_id=spec.client_order_id))
            if raise_rejected:
                raise
            await self._rejected(ctx, order, exc.reason, code=exc.code, exc=exc)
            return None
        except PlacementUnknown as exc:
            await self._placement_unknown(stored_order(), spec, str(exc))
            return None
        except Exception as exc:
            # anything else (a bug, an unexpected error type): the request may have left. Never leave the row
            # SENT, which nobody looks up: UNKNOWN makes the tracker resolve it by client order id
            logger.exception("[%s] placement of %s failed unexpectedly", self.mode.upper(), spec.client_order_id,
                             extra=self._log_extra(ctx, client_order_id=spec.client_order_id))
            await self._placement_unknown(stored_order(), spec, f"{type(exc).__name__}: {exc}")
            return None

    @contextlib.contextmanager
    def _placing_call(self, client_order_id: str) -> Iterator[None]:
        """The placement of ``client_order_id`` is in flight from its send until its answer is applied to its row.

        Until then its row may still read SENT: the tracker and reconciliation must not take it for a placement that
        was never answered (a pass between the answer and its application would halt entries over a filled order).
        """
        self._placing.add(client_order_id)
        try:
            yield
        finally:
            self._placing.discard(client_order_id)

    def placements_in_flight(self) -> frozenset[str]:
        """Client order ids sent to the venue whose answer has not been applied yet (tracker, reconciliation)."""
        return frozenset(self._placing)

    def orders_settling(self) -> frozenset[int]:
        """DB ids of answered orders whose executions this broker still books (for reconciliation: read, never write)."""
        return frozenset(self._awaiting)

    async def _placement_unknown(self, order: Order, spec: OrderSpec, reason: str) -> None:
        await self.orders.set_status(order, OrderStatus.UNKNOWN, "placement", error=reason)
        self.halt(f"order {spec.client_order_id} on {spec.symbol} has an unknown state")
        await self._alert("halt", f"order {spec.client_order_id} ({order.intent.value}) on {spec.symbol}: outcome unknown, "
                          f"entries halted until it is resolved ({reason})", {"client_order_id": spec.client_order_id})

    async def _rejected(self, ctx: TradeCtx, order: Order, reason: str, *, code: int | None = None,
                        exc: PlacementRejected | None = None) -> None:
        role = self._route.get(order.id, (ctx, "exit"))[1]
        if role != "entry" and code in NO_POSITION_CODES and await self._closed_on_exchange(ctx, order, role, reason):
            return
        if role == "entry":
            await self._entry_failed(ctx, f"rejected by the exchange: {reason}", alert_type="error")
        elif role == "exit" and exc is not None and exc.transient and self._close_refused_for_now(ctx, order):
            await self._retry_close_later(ctx, order, exc)
        elif role == "exit":
            await self._exit_not_executed(ctx, order, f"the exchange rejected the {{label}} exit ({reason})")

    def _close_refused_for_now(self, ctx: TradeCtx, order: Order) -> bool:
        """Whether a refused-for-now exit is a close of the whole position (retried on a timer, never abandoned)."""
        intent = ctx.exit_intents.get(order.id)
        return intent is not None and intent.closes_position and not ctx.closed and ctx.open_qty > 0

    async def _retry_close_later(self, ctx: TradeCtx, order: Order, exc: PlacementRejected) -> None:
        """A close (an emergency close included) refused for now (rate limit, clock): the position is still there,
        perhaps with no stop, so the close is sent again on a timer for as long as the refusals are transient."""
        intent = ctx.exit_intents.pop(order.id)
        self._route.pop(order.id, None)
        self._awaiting.discard(order.id)
        delay = self._retry_delay(ctx.close_retries, exc)
        unprotected = ctx.stop is None
        loud = unprotected and self._unprotected_alert_due(ctx)
        if ctx.close_retries == 0 or loud:
            protection = "WITHOUT A STOP on the exchange" if unprotected else "under its stop"
            await self._alert("error", f"{ctx.symbol} {ctx.strategy}: the exchange refused the {intent.label} close "
                              f"{order.client_order_id} for now ({exc.reason}); the position ({ctx.open_qty}) stays open "
                              f"{protection}; trying again in {delay:.0f} s", {"trade_id": ctx.trade_id})
        ctx.close_retries += 1
        purpose = order.intent

        async def again() -> None:
            if ctx.closed or ctx.open_qty <= 0 or ctx.exit_intents:
                return  # closed meanwhile, or another exit is on its way
            if self._stood_down is not None:
                logger.warning("[%s] close of %s not retried: the emergency stop is flattening the account",
                               self.mode.upper(), ctx.trade_id, extra=self._log_extra(ctx))
                return
            price = self.last_price.get(ctx.symbol, intent.price)
            await self._market_exit(ctx, ExitIntent(intent.kind, ctx.open_qty, price, intent.label, True), purpose)

        self._later(delay, f"close {ctx.trade_id} (retry)", again)

    async def _exit_not_executed(self, ctx: TradeCtx, order: Order, what: str, halt_note: str = "") -> None:
        """A partial exit, close or emergency close that will never fill (refused, or ended without a fill).

        The position is still held: keep the stop working (nothing is cancelled here), forget the intent so a
        later close can be tried (``close_trade``), put a closing trade back to OPEN, stop opening new positions,
        tell a human. ``what`` describes the failure (``{label}`` is replaced by the exit's label).
        """
        intent = ctx.exit_intents.pop(order.id, None)
        self._route.pop(order.id, None)
        self._awaiting.discard(order.id)
        label = intent.label if intent is not None else order.intent.value
        if intent is not None and intent.closes_position and ctx.db_trade is not None and not ctx.exit_intents:
            await self.trades.reopen(ctx.db_trade)
        manager = ctx.position.manager
        if (manager is not None and not ctx.exit_intents and ctx.open_qty > 0
                and order.intent is not OrderIntent.EMERGENCY_CLOSE):
            # the exit decision (engine, chat, shutdown) took its quantity off the manager and a close closed it; the
            # position is still held, so the engine manages all of it again (trailing, partials, target) until an
            # exit goes through. Not after a failed emergency close: that one took the trade away from the engine
            manager.reopen(ctx.open_qty)
        self.halt_for_rejected_exit(order.client_order_id, ctx.symbol, halt_note)
        protection = "under its stop" if ctx.stop is not None else "WITHOUT A STOP on the exchange"
        failure = what.replace("{label}", label)
        await self._alert("error", f"{ctx.symbol} {ctx.strategy}: {failure}; the position stays open "
                          f"({ctx.open_qty}) {protection}; entries halted, close it again or by hand",
                          {"trade_id": ctx.trade_id, "client_order_id": order.client_order_id})

    async def _closed_on_exchange(self, ctx: TradeCtx, order: Order, role: str, reason: str) -> bool:
        """A closing order found no position: did the exchange's own stop or target close the trade first?

        The account stream and the market stream are separate connections, so the engine can decide
        an exit (a partial, a trailing step) on a candle whose trades already fired the exchange's
        stop/target while that fill report is still on its way. The fill is looked up by REST and
        booked now; True when that explains the missing position (nothing else to do: no halt, no
        emergency close). False when it does not (someone else closed it?): the caller treats the
        rejection as usual (alert, halt): never guess.
        """
        await self._lookup_sibling(ctx, order.id)
        if not ctx.closed:
            return False
        if role == "exit":
            ctx.exit_intents.pop(order.id, None)
        self._route.pop(order.id, None)
        logger.warning("[%s] %s %s of %s not needed: the exchange's %s already closed the position (%s)", self.mode.upper(),
                       role, order.client_order_id, ctx.trade_id, ctx.db_trade.exit_reason if ctx.db_trade else "order", reason,
                       extra=self._log_extra(ctx, client_order_id=order.client_order_id))
        return True

    async def _entry_failed(self, ctx: TradeCtx, reason: str, *, alert_type: str) -> None:
        ctx.failed = True
        self._ctx.pop(ctx.trade_id, None)
        if ctx.db_trade is not None:
            await self.trades.mark_failed(ctx.db_trade, reason)
        ctx.engine.on_entry_failed(ctx.trade_id, reason)
        await self._alert(alert_type, f"entry {ctx.symbol} {ctx.strategy} {ctx.side} not opened: {reason}", {"trade_id": ctx.trade_id})

    # -- updates --------------------------------------------------------------------------------------

    async def _handle_update(self, update: VenueUpdate) -> None:
        order = await self.orders.find(client_order_id=update.client_order_id or None, exchange_order_id=update.exchange_order_id)
        foreign_client_id = False
        if (order is not None and order.exchange_order_id and update.exchange_order_id
                and order.exchange_order_id != update.exchange_order_id):
            # same client id, another exchange order (e.g. an attached SL/TP given its entry's client id):
            # a different order - never apply a stop's report to the entry row
            logger.warning("[%s] report of %s carries the client id %s of order %s: treated as a different order",
                           self.mode.upper(), update.exchange_order_id, update.client_order_id, order.exchange_order_id,
                           extra=self._log_extra(symbol=update.symbol, client_order_id=update.client_order_id))
            order = await self.orders.find(exchange_order_id=update.exchange_order_id)
            foreign_client_id = True
        if order is None:
            order = await self._adopt(update, ignore_client_id=foreign_client_id)
            if order is None:
                logger.info("[%s] update for an order this bot did not place (%s %s %s) ignored", self.mode.upper(),
                            update.symbol, update.order_type, update.exchange_order_id, extra=self._log_extra(symbol=update.symbol))
                return
        await self._apply(order, update)

    async def _adopt(self, update: VenueUpdate, *, ignore_client_id: bool = False) -> Order | None:
        """An attached stop-loss / take-profit the venue created when an entry filled.

        ``ignore_client_id``: the report's client id belongs to another of our orders (the venue may copy
        the entry's id onto its attached orders), so it does not make the order someone else's.
        """
        if (update.client_order_id and not ignore_client_id) or update.order_type not in PROTECTIVE_TYPES:
            return None
        for ctx in self._ctx.values():
            if ctx.symbol != update.symbol or ctx.side != update.position_side or ctx.closed:
                continue
            is_stop = update.order_type == "STOP_MARKET"
            level = ctx.attached_stop if is_stop else ctx.attached_target
            if level is None or update.stop_price != level:
                continue
            intent = OrderIntent.STOP_LOSS if is_stop else OrderIntent.TAKE_PROFIT
            order = await self.orders.adopt(update, intent, ctx.db_trade.id if ctx.db_trade else None)
            role = "stop" if is_stop else "target"
            self._route[order.id] = (ctx, role)
            protective = Protective(order.id, update.exchange_order_id, update.stop_price, update.quantity)
            if is_stop and ctx.stop is None:
                ctx.stop = protective
            elif not is_stop and ctx.target is None:
                ctx.target = protective
            elif update.status not in FINAL_STATUSES:
                # a second copy would be a duplicate protective order: keep the one we track, cancel this
                self._cancelled_by_us.add(order.id)
                await self.venue.cancel(ctx.symbol, update.exchange_order_id)
            logger.info("[%s] attached %s %s of %s adopted", self.mode.upper(), role, update.exchange_order_id, ctx.trade_id,
                        extra=self._log_extra(ctx))
            return order
        return None

    async def _apply(self, order: Order, update: VenueUpdate) -> None:
        derive = update.source in ("poll", "lookup")
        fills = await self.orders.apply(order, update, derive_fills=derive)
        route = self._route.get(order.id)
        if order.status in FINAL_STATUSES:
            self._awaiting.discard(order.id)
        if route is None:
            return
        ctx, role = route
        if fills:
            ctx.fills.setdefault(order.id, []).extend(fills)
        if order.status not in FINAL_STATUSES:
            if order.id in ctx.unresolved and order.exchange_order_id:
                await self._unresolved_found(ctx, order, role)
            return
        if role == "entry":
            if ctx.position.state is PositionState.PENDING and not ctx.failed:
                if order.filled_qty > 0:
                    await self._entry_filled(ctx, order)
                else:
                    await self._entry_failed(ctx, f"entry order {order.status.value}", alert_type="error")
            return
        self._route.pop(order.id, None)
        unresolved = ctx.unresolved.pop(order.id, None) is not None
        if order.filled_qty > 0:
            await self._exit_filled(ctx, order, role)
        elif role == "exit":
            await self._exit_ended_unfilled(ctx, order)
        elif unresolved:
            if not ctx.closed and order.id not in self._cancelled_by_us:
                # the placement whose outcome was unknown never took (confirmed absent): the protection it was
                # meant to give is still owed
                if (ctx.stop if role == "stop" else ctx.target) is None:
                    await self._alert("error", f"{ctx.symbol} {ctx.strategy}: the {role} {order.client_order_id} whose "
                                      f"placement had no answer is not on the exchange ({order.status.value}); placing it "
                                      "again", {"trade_id": ctx.trade_id})
                await self._protect(ctx)
        elif role in ("stop", "target") and order.id not in self._cancelled_by_us and not ctx.closed:
            current = ctx.stop if role == "stop" else ctx.target
            if current is not None and current.order_id == order.id:
                try:
                    held = await self.venue.position_qty(ctx.symbol, ctx.side)
                except Exception as exc:  # cannot tell flat from unprotected: assume unprotected, never leave it so
                    if role == "stop":
                        ctx.stop = None
                    else:
                        ctx.target = None
                    self.halt(f"{ctx.symbol} {role} {order.exchange_order_id} {order.status.value} and the position "
                              "could not be read")
                    await self._alert("error", f"{ctx.symbol} {ctx.strategy}: the exchange {order.status.value} the {role} "
                                      f"{order.exchange_order_id} and the position could not be read ({type(exc).__name__}: "
                                      f"{exc}); placing it again, entries halted", {"trade_id": ctx.trade_id})
                    await self._protect(ctx)
                    return
                if held <= 0:
                    # flat: close-only orders die with the position; the exit that flattened it is on its way
                    await self._lookup_sibling(ctx, order.id)
                    return
                # the venue dropped our protection (expired, cancelled outside the bot): put it back
                if role == "stop":
                    ctx.stop = None
                else:
                    ctx.target = None
                await self._alert("error", f"{ctx.symbol} {ctx.strategy}: the exchange {order.status.value} the {role} "
                                  f"{order.exchange_order_id}; placing it again", {"trade_id": ctx.trade_id})
                await self._protect(ctx)

    async def _lookup_sibling(self, ctx: TradeCtx, gone_order_id: int) -> None:
        """Book at once the protective order that closed the position (its report may lag)."""
        for protective in (ctx.stop, ctx.target):
            if protective is None or protective.order_id == gone_order_id or ctx.closed:
                continue
            update = await self.venue.query(ctx.symbol, exchange_order_id=protective.exchange_order_id)
            if update is not None:
                await self._apply(await Order.get(id=protective.order_id), dataclass_replace(update, source="lookup"))

    async def _exit_ended_unfilled(self, ctx: TradeCtx, order: Order) -> None:
        """A market exit ended with nothing executed (e.g. an unknown placement the lookup found absent: EXPIRED)."""
        if ctx.closed:
            ctx.exit_intents.pop(order.id, None)
            return
        try:
            await self._lookup_sibling(ctx, order.id)  # the exchange's own stop/target may have closed it meanwhile
        except Exception as exc:  # cannot tell: the exit is still unexecuted, so the trade must stay closable
            logger.warning("[%s] looking up the stop/target of %s failed: %s", self.mode.upper(), ctx.trade_id, exc,
                           extra=self._log_extra(ctx))
        if ctx.closed:
            ctx.exit_intents.pop(order.id, None)
            return
        await self._exit_not_executed(ctx, order, f"the {{label}} exit {order.client_order_id} ended {order.status.value} "
                                      "without a fill", halt_note=f" ({order.status.value}, no fill)")

    async def _unresolved_found(self, ctx: TradeCtx, order: Order, role: str) -> None:
        """A stop/target whose placement had no answer turned out to be working: it is the trade's protection."""
        ctx.unresolved.pop(order.id, None)
        if ctx.closed:  # the trade ended meanwhile: a close-only order has nothing left to protect
            self._cancelled_by_us.add(order.id)
            await self._cancel(ctx, Protective(order.id, order.exchange_order_id or "", dec(order.stop_price or 0), order.quantity))
            return
        found = Protective(order.id, order.exchange_order_id or "", dec(order.stop_price or 0), order.quantity)
        current = ctx.stop if role == "stop" else ctx.target
        if role == "stop":
            ctx.stop = found
        else:
            ctx.target = found
        logger.warning("[%s] %s %s (placement unanswered) found working: adopted as the trade's %s", self.mode.upper(), role,
                       order.client_order_id, role, extra=self._log_extra(ctx, client_order_id=order.client_order_id))
        if current is not None and current.order_id != order.id:
            await self._cancel(ctx, current)  # place-then-cancel, completed late
        await self._protect(ctx)  # the plan or the quantity may have moved while it was unresolved

    async def _entry_filled(self, ctx: TradeCtx, order: Order) -> None:
        fills = ctx.fills.pop(order.id, [])
        fee = sum((f.fee for f in fills), ZERO)
        time_ms = max((f.time_ms for f in fills), default=0)
        assert order.avg_price is not None
        ctx.engine.on_entry_filled(ctx.trade_id, Fill(float(order.avg_price), order.filled_qty, float(fee), time_ms))
        plan = ctx.position.plan
        assert plan is not None and ctx.db_trade is not None
        ctx.open_qty = order.filled_qty
        ctx.stop_level = plan.stop
        ctx.target_level = plan.target
        await self.trades.mark_open(ctx.db_trade, entry_price=order.avg_price, qty=order.filled_qty, stop=plan.stop,
                                    target=plan.target, risk_per_unit=plan.risk_per_unit, time_ms=time_ms,
                                    management=self._management(ctx))
        await self._alert("entry", f"{ctx.symbol} {ctx.strategy} {ctx.side} opened: {order.filled_qty} @ {order.avg_price}, "
                          f"stop {round_to_tick(plan.stop, self.venue.price_tick(ctx.symbol), stop_of=ctx.side)}, "
                          f"target {round_to_tick(plan.target, self.venue.price_tick(ctx.symbol))}", {"trade_id": ctx.trade_id})
        try:
            await self._discover_attached(ctx)
        except Exception as exc:  # only a look-up: whatever it missed, _protect places (a duplicate is cancelled on report)
            logger.warning("[%s] looking for the attached stop/target of %s failed: %s", self.mode.upper(), ctx.trade_id, exc,
                           extra=self._log_extra(ctx))
        await self._protect(ctx)
        if ctx.symbol in self._funding.unheld:  # a payment settled while this entry was filled but not booked yet
            await self._funding.sync(ctx.symbol)
        await self._refresh_wallet()

    async def _discover_attached(self, ctx: TradeCtx) -> None:
        """The attached SL/TP may not have been reported yet: look at the working orders once."""
        if ctx.stop is not None and ctx.target is not None:
            return
        entry_client_id = ctx.entry_order.client_order_id if ctx.entry_order is not None else None
        for update in await self.venue.open_orders(ctx.symbol):
            copied_id = bool(update.client_order_id) and update.client_order_id == entry_client_id
            if (not update.client_order_id or copied_id) and update.order_type in PROTECTIVE_TYPES and update.position_side == ctx.side:
                existing = await self.orders.find(exchange_order_id=update.exchange_order_id)
                if existing is None:
                    await self._adopt(dataclass_replace(update, source="lookup"), ignore_client_id=copied_id)

    # -- protection -----------------------------------------------------------------------------------

    def _management(self, ctx: TradeCtx) -> dict[str, Any]:
        return {
            "stop_order": ctx.stop.exchange_order_id if ctx.stop else None,
            "target_order": ctx.target.exchange_order_id if ctx.target else None,
            "stop_level": ctx.stop_level,
            "target_level": ctx.target_level,
            "trailed": ctx.trailed,
            "open_qty": str(ctx.open_qty),
        }

    async def _protect(self, ctx: TradeCtx) -> None:
        """Make the exchange stop and target match the plan and the open quantity (place new, then cancel old).

        Nothing is placed after :meth:`stand_down` (the emergency stop cancels every order and flattens the account).
        """
        if ctx.closed or ctx.open_qty <= 0 or ctx.stop_level is None:
            return
        if self._stood_down is not None:
            logger.warning("[%s] stop/target of %s not placed: the emergency stop is flattening the account (%s)",
                           self.mode.upper(), ctx.trade_id, self._stood_down, extra=self._log_extra(ctx))
            return
        tick = self.venue.price_tick(ctx.symbol)
        if not await self._renew(ctx, "stop", round_to_tick(ctx.stop_level, tick, stop_of=ctx.side)):
            return  # the stop could not be placed: the trade is being closed at market (or was closed meanwhile)
        if ctx.closed or ctx.target_level is None:
            return
        await self._renew(ctx, "target", round_to_tick(ctx.target_level, tick))
        if ctx.closed:
            return
        if ctx.db_trade is not None:
            await self.trades.set_management(ctx.db_trade, self._management(ctx))

    async def _renew(self, ctx: TradeCtx, role: str, price: Decimal) -> bool:
        """Put the trade's ``role`` order ("stop"/"target") at ``price`` for the open quantity; False when the trade is
        being closed instead (or was closed meanwhile).

        Place the new order, then cancel the old one (never an unprotected moment). When the exchange refuses
        the new one:

        * the old one still works and the refusal is transient (rate limit, clock): keep the old one, alert, and
          try again shortly (:meth:`_retry_protect_later`); never close a trade over a busy API;
        * the old one still works and the refusal is definite: BingX may cap the pending stop quantity at the
          position size (protocol 6.2, UNCONFIRMED whether at placement), which refuses every place-then-cancel;
          so cancel the old one, then place the new one;
        * nothing works: a transient refusal of a stop is tried again on a timer, without limit, for as long as
          the refusals are transient (a market close would be refused just the same); a definite refusal closes
          the position at market. A refused target is tried again a few times, then left to the engine (it
          closes at the target itself);
        * a placement of this role is unresolved (no answer yet): nothing is placed until the lookup settles it.
        """
        while True:
            if ctx.closed:
                return False
            if role in ctx.unresolved.values():
                # a placement of this role had no answer: it may be working. Its resolution renews again (found:
                # adopted, absent: placed), so placing another now could only make a duplicate (or a refusal)
                return True
            current = ctx.stop if role == "stop" else ctx.target
            if current is not None and current.price == price and current.qty == ctx.open_qty:
                return True
            try:
                placed = await self._place_protective(ctx, role, price)
            except PlacementRejected as exc:
                if exc.code in NO_POSITION_CODES:
                    await self._lookup_sibling(ctx, -1)  # the exchange's own stop/target may have just closed it
                    if ctx.closed:
                        logger.warning("[%s] %s of %s not needed: the exchange already closed the position (%s)",
                                       self.mode.upper(), role, ctx.trade_id, exc.reason, extra=self._log_extra(ctx))
                        return False
                if current is not None and exc.transient:
                    await self._retry_protect_later(ctx, role, exc, PROTECT_LATER_TRIES)
                    return True
                if current is not None and exc.code not in PRICE_SIDE_CODES:
                    logger.warning("[%s] replacement %s of %s refused (%s): cancelling the old one first, then placing it",
                                   self.mode.upper(), role, ctx.trade_id, exc.reason, extra=self._log_extra(ctx))
                    if not await self._cancel(ctx, current):
                        # the old one may still work: placing the new one now would be refused again (or make two)
                        self._cancelled_by_us.discard(current.order_id)
                        await self._alert("error", f"{ctx.symbol} {ctx.strategy}: the {role} could not be replaced "
                                          f"({exc.reason}) and cancelling the old one was not confirmed; the old one "
                                          "stays the trade's protection, trying again later", {"trade_id": ctx.trade_id})
                        await self._retry_protect_later(ctx, role, exc, PROTECT_LATER_TRIES, announce=False)
                        return True
                    if role == "stop":
                        ctx.stop = None
                    else:
                        ctx.target = None
                    continue
                if exc.transient and role == "stop":
                    # no stop works and the exchange refuses one for now: a market close would be refused just the
                    # same, so keep trying (no limit) for as long as the refusals are transient
                    await self._retry_protect_later(ctx, role, exc, None)
                    return False  # no stop yet: the target waits for the retry too
                if exc.transient and await self._retry_protect_later(ctx, role, exc, PROTECT_LATER_TRIES):
                    return True
                if role == "target":
                    await self._alert("error", f"{ctx.symbol} {ctx.strategy}: the exchange rejected the take-profit "
                                      f"({exc.reason}); the engine closes at the target instead", {"trade_id": ctx.trade_id})
                    return True
                await self._alert("error", f"{ctx.symbol} {ctx.strategy}: the exchange rejected the stop ({exc.reason}); "
                                  "closing at market", {"trade_id": ctx.trade_id})
                await self._emergency_close(ctx, "stop rejected")
                return False
            if placed is None:
                return True  # outcome unknown: entries halted; the tracker's lookup settles it (see _apply)
            if role == "stop":
                ctx.stop = placed
                ctx.stop_retries = 0
                if ctx.unprotected_alert_at is not None:
                    ctx.unprotected_alert_at = None
                    await self._alert("protection", f"{ctx.symbol} {ctx.strategy}: the stop is working again "
                                      f"({placed.exchange_order_id} at {price})", {"trade_id": ctx.trade_id})
            else:
                ctx.target = placed
                ctx.target_retries = 0
            if current is not None and not await self._cancel(ctx, current):
                await self._alert("error", f"{ctx.symbol} {ctx.strategy}: the previous {role} {current.exchange_order_id} "
                                  "may still be working (its cancel was not confirmed); check the open orders",
                                  {"trade_id": ctx.trade_id})
            return True

    def _retry_delay(self, retries: int, exc: PlacementRejected) -> float:
        """Wait before timed retry number ``retries`` + 1: back off, but never less than the venue's pause; bounded."""
        return min(RETRY_MAX_WAIT_S, max(self.protect_retry_s * 2 ** min(retries, 16), exc.retry_after_s or 0.0))

    async def _retry_protect_later(self, ctx: TradeCtx, role: str, exc: PlacementRejected, limit: int | None, *,
                                   announce: bool = True) -> bool:
        """The exchange refused a stop/target for now (rate limit, clock): try ``_protect`` again on a timer.

        ``limit``: how many timed retries this role may have in a row (reset by a successful placement), None for no
        limit (a position with no stop); False once they are used up (the caller decides what then). One retry is
        pending at a time (it renews stop and target). ``announce``: alert on the first retry (the caller did not).
        """
        if ctx.protect_retry_pending:
            return True
        protected = (ctx.stop if role == "stop" else ctx.target) is not None
        state = "the previous one stays working" if protected else "the position has NO STOP on the exchange"
        retries = ctx.stop_retries if role == "stop" else ctx.target_retries
        if limit is not None and retries >= limit:
            self._set_retries(ctx, role, 0)
            if protected:
                await self._alert("error", f"{ctx.symbol} {ctx.strategy}: the {role} could not be updated ({exc.reason}) "
                                  f"after {limit} tries; {state} until the next management step", {"trade_id": ctx.trade_id})
            return False
        delay = self._retry_delay(retries, exc)
        text = (f"{ctx.symbol} {ctx.strategy}: the exchange refused the new {role} for now ({exc.reason}); {state}; "
                f"trying again in {delay:.0f} s")
        if role == "stop" and not protected:
            # loud, but not once per retry: the first refusal, then at most every few minutes while it lasts
            if self._unprotected_alert_due(ctx):
                await self._alert("error", text + f" (try {retries + 1})", {"trade_id": ctx.trade_id})
        elif retries == 0 and announce:
            await self._alert("error", text, {"trade_id": ctx.trade_id})
        self._set_retries(ctx, role, retries + 1)
        ctx.protect_retry_pending = True

        async def again() -> None:
            ctx.protect_retry_pending = False
            await self._protect(ctx)

        self._later(delay, f"protect {ctx.trade_id} (retry)", again)
        return True

    @staticmethod
    def _unprotected_alert_due(ctx: TradeCtx) -> bool:
        """Whether to alert (again) that ``ctx``'s position has no stop: the first time, then at most every
        ``UNPROTECTED_ALERT_EVERY_S`` while it lasts. True marks the alert as sent now."""
        now = asyncio.get_running_loop().time()
        if ctx.unprotected_alert_at is not None and now - ctx.unprotected_alert_at < UNPROTECTED_ALERT_EVERY_S:
            return False
        ctx.unprotected_alert_at = now
        return True

    @staticmethod
    def _set_retries(ctx: TradeCtx, role: str, value: int) -> None:
        if role == "stop":
            ctx.stop_retries = value
        else:
            ctx.target_retries = value

    def _later(self, delay: float, what: str, job: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Queue ``job`` on the worker after ``delay`` seconds (a timer the broker's stop cancels)."""
        async def wait() -> None:
            await asyncio.sleep(delay)
            self._enqueue(what, job)

        timer = asyncio.create_task(wait(), name=what)
        self._timers.add(timer)
        timer.add_done_callback(self._timers.discard)

    async def _place_protective(self, ctx: TradeCtx, role: str, price: Decimal) -> Protective | None:
        """Place the trade's stop or target at ``price`` for the open quantity.

        Returns the working order, or None when the outcome is unknown: the order then stays routed to the trade
        as unresolved, so the tracker's lookup reaches it (found: adopted; confirmed absent: placed again).
        Raises :class:`PlacementRejected` (its row stored REJECTED) for the caller to decide, and a transient one
        when the placement's answer says the order is already over with nothing executed.
        """
        is_stop = role == "stop"
        spec = OrderSpec(
            symbol=ctx.symbol, side=ctx.closing_side, position_side=ctx.side,
            order_type="STOP_MARKET" if is_stop else "TAKE_PROFIT_MARKET", quantity=ctx.open_qty,
            client_order_id=new_client_order_id("sl" if is_stop else "tp"), stop_price=price,
        )
        order = await self.orders.create(spec, OrderIntent.STOP_LOSS if is_stop else OrderIntent.TAKE_PROFIT,
                                         ctx.db_trade.id if ctx.db_trade else None, sent=True)
        self._route[order.id] = (ctx, role)
        with self._placing_call(spec.client_order_id):
            try:
                update = await self._send(order, spec, ctx, raise_rejected=True)
            except PlacementRejected:
                self._route.pop(order.id, None)
                raise
            if update is None:
                ctx.unresolved[order.id] = role
                return None
            await self.orders.apply(order, update, derive_fills=False)
        if order.status in FINAL_STATUSES and order.filled_qty == 0:
            # the lookup after a lost answer found it already over with nothing executed (cancelled outside the bot,
            # or fired on a position already flat): it protects nothing. Refused for now: the caller keeps the old
            # one and tries again shortly (flat by then: "no position" ends it)
            self._route.pop(order.id, None)
            raise PlacementRejected(f"the {role} {update.exchange_order_id} was already {order.status.value} when found "
                                    "after its placement went unanswered", transient=True)
        logger.info("[%s] %s %s placed at %s for %s", self.mode.upper(), role, spec.client_order_id, price, ctx.open_qty,
                    extra=self._log_extra(ctx, client_order_id=spec.client_order_id))
        return Protective(order.id, update.exchange_order_id, price, ctx.open_qty)

    async def _cancel(self, ctx: TradeCtx, protective: Protective) -> bool:
        """Cancel a stop/target; True when it is confirmed no longer working (cancelled, filled, expired or absent).

        False when its state could not be learnt (the cancel and the lookup failed, or the lookup shows it
        still working): the caller must assume it may still be there.
        """
        self._cancelled_by_us.add(protective.order_id)
        cancelled = True  # the exchange answered the cancel
        try:
            update = await self.venue.cancel(ctx.symbol, protective.exchange_order_id)
        except Exception as exc:
            # it may have just filled (BingX 80018: a stop that fired while a trailing step replaced it) or gone. Its
            # report can come late, and the trade's next order would meet "no position" with no closing order to
            # explain it (a halt): learn its state now, as for an order that is no longer working
            logger.warning("[%s] cancel of %s failed: %s; looking it up", self.mode.upper(), protective.exchange_order_id, exc,
                           extra=self._log_extra(ctx))
            cancelled, update = False, None
        if update is None:  # the cancel failed, or the order no longer works (filled, gone with the position)
            try:
                update = await self.venue.query(ctx.symbol, exchange_order_id=protective.exchange_order_id)
            except Exception as lookup_exc:
                logger.warning("[%s] lookup of %s after %s failed: %s", self.mode.upper(), protective.exchange_order_id,
                               "its cancel" if cancelled else "a failed cancel", lookup_exc, extra=self._log_extra(ctx))
                # after an answered cancel it no longer works (its fill may be unbooked); after a failed one, unknown
                return cancelled
            if update is None:
                return True  # the exchange does not have it
            update = dataclass_replace(update, source="lookup")
        order = await Order.get(id=protective.order_id)
        await self._apply(order, update)
        return update.status in FINAL_STATUSES

    async def _trail(self, ctx: TradeCtx, move: StopMove) -> None:
        if ctx.closed or ctx.stop_level is None:
            return
        favourable = move.new_stop > ctx.stop_level if ctx.side == "LONG" else move.new_stop < ctx.stop_level
        if not favourable:
            return
        ctx.stop_level = move.new_stop
        ctx.trailed = True
        if ctx.db_trade is not None:
            await self.trades.set_stop(ctx.db_trade, move.new_stop, self._management(ctx))
        await self._alert("stop_moved", f"{ctx.symbol} {ctx.strategy}: stop moved to {move.stop_r:g}R "
                          f"({round_to_tick(move.new_stop, self.venue.price_tick(ctx.symbol), stop_of=ctx.side)}) after {move.at_r:g}R",
                          {"trade_id": ctx.trade_id})
        await self._protect(ctx)

    # -- exits ----------------------------------------------------------------------------------------

    async def _market_exit(self, ctx: TradeCtx, intent: ExitIntent, purpose: OrderIntent) -> None:
        if ctx.closed or ctx.open_qty <= 0:
            return
        qty = ctx.open_qty if intent.closes_position else min(intent.qty, ctx.open_qty)
        if intent.closes_position and ctx.db_trade is not None:
            await self.trades.mark_closing(ctx.db_trade, intent.label)
        spec = OrderSpec(
            symbol=ctx.symbol, side=ctx.closing_side, position_side=ctx.side, order_type="MARKET", quantity=qty,
            client_order_id=new_client_order_id("ex" if purpose is OrderIntent.PARTIAL_EXIT else "cl"),
            reference_price=dec(self.last_price.get(ctx.symbol, intent.price)),
        )
        order = await self.orders.create(spec, purpose, ctx.db_trade.id if ctx.db_trade else None, detail={"label": intent.label},
                                         sent=True)
        self._route[order.id] = (ctx, "exit")
        ctx.exit_intents[order.id] = intent
        with self._placing_call(spec.client_order_id):
            update = await self._send(order, spec, ctx)
            if update is not None:
                self._awaiting.add(order.id)
                await self._apply(order, update)

    async def _emergency_close(self, ctx: TradeCtx, reason: str) -> None:
        manager = ctx.position.manager
        if manager is not None and not manager.closed:
            manager.close(self.last_price.get(ctx.symbol, ctx.stop_level or 0.0))  # the engine must not act on it any more
        intent = ExitIntent(ExitKind.CLOSE, ctx.open_qty, self.last_price.get(ctx.symbol, ctx.stop_level or 0.0), "emergency", True)
        await self._market_exit(ctx, intent, OrderIntent.EMERGENCY_CLOSE)

    async def _expect_exchange_exit(self, ctx: TradeCtx, intent: ExitIntent) -> None:
        """The engine saw the stop or target trade: the exchange's order should fill (or has filled)."""
        if ctx.closed:
            return
        ctx.expecting = intent
        if ctx.db_trade is not None:
            await self.trades.mark_closing(ctx.db_trade, intent.label)
        timer = asyncio.create_task(self._expect_timeout(ctx, intent))
        self._timers.add(timer)
        timer.add_done_callback(self._timers.discard)

    async def _expect_timeout(self, ctx: TradeCtx, intent: ExitIntent) -> None:
        await asyncio.sleep(self.exit_grace_s)
        self._enqueue(f"verify {ctx.trade_id}", lambda: self._verify_exit(ctx, intent))

    async def _verify_exit(self, ctx: TradeCtx, intent: ExitIntent) -> None:
        if ctx.closed:
            return
        protective = ctx.stop if intent.kind in (ExitKind.STOP, ExitKind.TRAILING_STOP) else ctx.target
        if protective is not None:
            update = await self.venue.query(ctx.symbol, exchange_order_id=protective.exchange_order_id)
            if update is not None:
                order = await Order.get(id=protective.order_id)
                await self._apply(order, dataclass_replace(update, source="lookup"))
                if ctx.closed:
                    return
        await self._alert("error", f"{ctx.symbol} {ctx.strategy}: {intent.label} traded at {intent.price:g} but the exchange "
                          "order did not fill; closing at market", {"trade_id": ctx.trade_id})
        await self._market_exit(ctx, ExitIntent(intent.kind, ctx.open_qty, intent.price, intent.label, True), OrderIntent.CLOSE)

    async def _exit_filled(self, ctx: TradeCtx, order: Order, role: str) -> None:
        fills = ctx.fills.pop(order.id, [])
        if ctx.closed:
            logger.error("[%s] exit fill %s after %s was closed: the exchange closed more than the trade held", self.mode.upper(),
                         order.client_order_id, ctx.trade_id, extra=self._log_extra(ctx))
            return
        if ctx.db_trade is not None:
            await ctx.db_trade.refresh_from_db()
            if ctx.db_trade.state is TradeState.CLOSED:
                # booked already (reconciliation closed it from the same fill): never book or report it twice
                await self._forget_closed(ctx, order, role)
                return
        qty = order.filled_qty
        if sum((f.qty for f in fills), ZERO) < qty:
            # some executions were recorded before this report (reconciliation or a poll marked the order FILLED
            # first): book the exit from the order's stored fills, and the venue's totals for what none covers,
            # so it carries the real fee and time (not 0 and 1970)
            fills = await self._recovery.order_fills(ctx, order, f"trade {ctx.trade_id}")
        fee = sum((f.fee for f in fills), ZERO)
        time_ms = max((f.time_ms for f in fills), default=0)
        if time_ms <= 0:  # no execution time known (fills booked from totals without one): the venue's, never 1970
            time_ms = await self._venue_time(ctx, order)
        assert order.avg_price is not None
        manager = ctx.position.manager
        assert manager is not None
        if role == "exit":
            planned = ctx.exit_intents.pop(order.id)
            kind, label, level = planned.kind, planned.label, planned.price
        else:
            if role == "stop":
                kind = ExitKind.TRAILING_STOP if ctx.trailed else ExitKind.STOP
            else:
                kind = ExitKind.TARGET
            label, level = kind.value, float(order.stop_price or order.avg_price)
            if not manager.closed:
                manager.close(level)  # the exchange closed it: the trade manager must stop planning
        closes = ctx.open_qty - qty <= 0
        intent = ExitIntent(kind, qty, level, label, closes)
        ctx.engine.on_exit_filled(ctx.trade_id, intent, Fill(float(order.avg_price), qty, float(fee), time_ms))
        record = ctx.position.exits[-1]
        ctx.open_qty = max(ctx.position.open_qty, ZERO)
        if ctx.open_qty > 0 and closes:
            ctx.open_qty = ZERO
        assert ctx.db_trade is not None
        await self.trades.record_exit(ctx.db_trade, record, ctx.open_qty)
        if ctx.open_qty <= 0:
            ctx.closed = True
            self._ctx.pop(ctx.trade_id, None)
            self._funding.note_closed(ctx)
            for protective in (ctx.stop, ctx.target):
                if protective is not None and protective.order_id != order.id:
                    # hedge close-only orders die with the position on BingX; cancel explicitly anyway
                    current = await Order.get(id=protective.order_id)
                    if current.status not in FINAL_STATUSES:
                        await self._cancel(ctx, protective)
            await self._alert("exit", f"{ctx.symbol} {ctx.strategy} {ctx.side} closed by {label}: pnl {ctx.db_trade.realized_pnl:.4f} "
                              f"({ctx.db_trade.r_multiple:.2f} R)", {"trade_id": ctx.trade_id})
        else:
            await self._alert("partial_exit", f"{ctx.symbol} {ctx.strategy} {label}: {qty} @ {order.avg_price}, pnl {record.pnl:.4f}",
                              {"trade_id": ctx.trade_id})
            await self._protect(ctx)
        await self._refresh_wallet()

    async def _venue_time(self, ctx: TradeCtx, order: Order) -> int:
        """The venue's last update time of ``order`` (epoch ms); the row's own last update when it cannot be read."""
        try:
            update = await self.venue.query(ctx.symbol, exchange_order_id=order.exchange_order_id,
                                            client_order_id=None if order.exchange_order_id else order.client_order_id)
        except Exception as exc:
            logger.warning("[%s] time lookup of %s failed: %s", self.mode.upper(), order.client_order_id, exc,
                           extra=self._log_extra(ctx, client_order_id=order.client_order_id))
            update = None
        if update is not None and update.time_ms:
            return update.time_ms
        return epoch_ms(order.updated_at) if order.updated_at is not None else 0

    async def _forget_closed(self, ctx: TradeCtx, order: Order, role: str) -> None:
        """The trade was closed in the database by someone else: drop it from memory without booking anything."""
        logger.warning("[%s] %s fill %s of %s: the trade is already closed in the database; not booked again",
                       self.mode.upper(), role, order.client_order_id, ctx.trade_id,
                       extra=self._log_extra(ctx, client_order_id=order.client_order_id))
        ctx.closed = True
        ctx.open_qty = ZERO
        ctx.exit_intents.pop(order.id, None)
        self._ctx.pop(ctx.trade_id, None)
        manager = ctx.position.manager
        if manager is not None and not manager.closed:
            manager.close(float(order.avg_price or 0))
        ctx.engine.positions.pop(ctx.trade_id, None)  # the engine must not manage (or count) it any more
        for protective in (ctx.stop, ctx.target):
            if protective is not None and protective.order_id != order.id:
                self._route.pop(protective.order_id, None)
                current = await Order.get(id=protective.order_id)
                if current.status not in FINAL_STATUSES:
                    await self._cancel(ctx, protective)

    async def book_reconciled_close(self, trade: Trade, exits: list[Order]) -> bool:
        """Reconciliation found ``trade`` flat on the exchange, closed by ``exits`` (filled exit orders).

        The Reconciler's ``on_trade_closed`` hook while this broker runs: the close is booked here, once,
        on the job queue (the same path as a reported fill: real fees, engine told, one "exit" alert, so
        the risk manager hears of it once). False when this broker does not manage the trade.
        """
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

        async def job() -> None:
            try:
                booked = await self._book_reconciled_close(trade, exits)
            except BaseException as exc:
                if not done.done():
                    done.set_exception(exc)
                raise
            else:
                done.set_result(booked)

        self._enqueue(f"reconciled close {trade.id}", job)
        # bounded: a broker stopped meanwhile never runs the job (the caller's reconciliation then fails, loudly)
        return await asyncio.wait_for(done, max(60.0, self.settle_timeout_s))

    async def _book_reconciled_close(self, trade: Trade, exits: list[Order]) -> bool:
        ctx = next((c for c in self._ctx.values() if c.db_trade is not None and c.db_trade.id == trade.id), None)
        if ctx is None or ctx.position.entry is None:
            return False
        label = f"trade {trade.id} {trade.symbol} {trade.strategy} {trade.side}"
        for stale in exits:
            if ctx.closed:
                break
            order = await Order.get(id=stale.id)
            if order.filled_qty <= 0:
                continue
            route = self._route.pop(order.id, None)
            if route is not None:
                role = route[1]
            elif order.intent is OrderIntent.STOP_LOSS:
                role = "stop"
            elif order.intent is OrderIntent.TAKE_PROFIT:
                role = "target"
            else:
                role = "exit"
            if role == "exit" and order.id not in ctx.exit_intents:
                ctx.exit_intents[order.id] = ExitIntent(ExitKind.CLOSE, order.filled_qty, float(order.avg_price or 0),
                                                        "reconcile", order.filled_qty >= ctx.open_qty)
            self._awaiting.discard(order.id)
            fills = await self._recovery.order_fills(ctx, order, label)
            ctx.fills[order.id] = fills + [f for f in ctx.fills.get(order.id, []) if f not in fills]
            await self._exit_filled(ctx, order, role)
        return True

    async def _refresh_wallet(self) -> None:
        try:
            self.wallet = await self.venue.wallet_balance()
        except Exception as exc:  # sizing keeps the last known balance
            logger.warning("[%s] wallet refresh failed: %s", self.mode.upper(), exc, extra=self._log_extra())

    def catch_up_funding(self) -> None:
        """Stream events may have been missed (a reconnect): book the funding the income history shows and the
        books do not (live; once per tranId, queued behind earlier work)."""
        if getattr(self.venue, "funding_income", None) is None:
            return
        self._enqueue("funding catch-up", self._funding.catch_up)
