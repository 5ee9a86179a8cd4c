"""Restart recovery: rebuild the in-memory state of open trades from the database.

After a crash or a restart the ``Trade`` rows (PENDING / OPEN / CLOSING) and their orders are
the bot's memory. Reconciliation (``engine.risk.reconcile``) first brings the rows in line with
the exchange (orders left SENT/UNKNOWN looked up, missing stops re-placed, trades the exchange
closed while the bot was away booked); :meth:`ExecutionBroker.recover` then runs
:class:`BrokerRecovery` on its worker, which uses the helpers here to put every remaining trade
back into its ``SymbolEngine`` (a ``Position`` with its plan and ``TradeManager`` state: partials
done, trailing step reached, stop in effect) and into the broker (a ``TradeCtx`` with its
protective orders, each looked up on the venue), so the engine carries on managing it and the
one-position-per-side rule sees it (no duplicate entry).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from db.models import Fill as FillRow
from db.models import Order, OrderEvent, OrderIntent, OrderStatus, Signal as SignalRow, Trade, TradeExit, TradeState
from engine.execution.order_store import FINAL_STATUSES, RecordedFill
from engine.execution.trade_ctx import Protective, TradeCtx, dataclass_replace, epoch_ms
from engine.execution.venue import ExecMode
from engine.trading.manager import TradeManager
from engine.trading.plan import TradePlan
from engine.trading.positions import ExitRecord, Fill, Position, PositionState
from engine.trading.sizing import ContractRules
from strategies.base import Side, Signal
from strategies.params import StrategiesConfig

if TYPE_CHECKING:
    from engine.execution.broker import ExecutionBroker

logger = logging.getLogger(__name__)

ZERO = Decimal(0)


@dataclass
class RecoveryReport:
    """What :meth:`ExecutionBroker.recover` rebuilt, repaired or could not explain."""

    restored: list[str] = field(default_factory=list)
    protective_replaced: list[str] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)
    failed_entries: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every trade was restored or resolved."""
        return not self.problems

    def summary(self) -> str:
        """One line per item."""
        lines = [f"recovery: {len(self.restored)} trade(s) restored" + ("" if self.ok else ", PROBLEMS")]
        for title, items in (("restored", self.restored), ("protective order re-placed", self.protective_replaced),
                             ("closed", self.closed), ("entry never filled", self.failed_entries),
                             ("PROBLEM", self.problems)):
            lines += [f"  {title}: {item}" for item in items]
        return "\n".join(lines)


def engine_trade_id(trade: Trade, signal_time_ms: int) -> str:
    """The engine's id of a trade (``SymbolEngine._enter`` uses symbol:strategy:signal time)."""
    return f"{trade.symbol}:{trade.strategy}:{signal_time_ms}"


async def load_signal(trade: Trade, config: StrategiesConfig) -> Signal:
    """The ``Signal`` that opened ``trade`` (its DB row; the trade's own levels when the row is gone)."""
    row = await SignalRow.get_or_none(id=trade.signal_id) if trade.signal_id is not None else None
    side = Side.LONG if trade.side.upper() == "LONG" else Side.SHORT
    risk_pct, max_risk_pct = _risk_params(config, trade.strategy)
    if row is not None:
        entry, stop, target, time_ms = float(row.entry), float(row.stop), float(row.target), int(row.candle_time_ms)
        indicators = {k: float(v) for k, v in (row.inputs or {}).items() if isinstance(v, (int, float))}
    else:
        entry = float(trade.entry_price or 0)
        stop, target = float(trade.initial_stop), float(trade.target)
        time_ms = int(trade.created_at.timestamp() * 1000) if trade.created_at else 0
        indicators = {}
    risk = abs(entry - stop) or float(trade.risk_per_unit)
    # the plan is rebuilt from the stored 1R and target distance (atr=1R, stop_atr=1): same levels
    return Signal(symbol=trade.symbol, strategy=trade.strategy, side=side, time_ms=time_ms, entry=entry, stop=stop,
                  target=target, atr=risk, risk_pct=risk_pct, max_risk_pct=max_risk_pct, stop_atr=1.0,
                  target_atr=abs(target - entry) / risk if risk > 0 else 1.0, indicators=indicators)


async def attached_levels(trade: Trade, entry: Order) -> tuple[Decimal | None, Decimal | None]:
    """The stop-loss and take-profit sent attached to ``entry`` (stored with its CREATED event), as the exchange holds them.

    The exchange creates its attached SL/TP orders at exactly these (tick-rounded) prices, and the broker adopts
    them by that price; the trade row's ``stop``/``target`` are the signal's unrounded levels and would not match.
    Falls back to the trade's levels for a row written before the levels were stored.
    """
    event = await OrderEvent.filter(order_id=entry.id, status=OrderStatus.CREATED).order_by("id").first()
    detail = event.detail if event is not None and isinstance(event.detail, dict) else {}

    def level(key: str, fallback: Any) -> Decimal | None:
        for value in (detail.get(key), fallback):
            try:
                number = Decimal(str(value))
            except (ArithmeticError, ValueError):
                continue
            if number.is_finite() and number > 0:
                return number
        return None

    return level("stop_loss", trade.stop), level("take_profit", trade.target)


def _risk_params(config: StrategiesConfig, strategy: str) -> tuple[float, float]:
    params: Any = getattr(config, strategy, None)
    return (float(getattr(params, "base_risk_pct", 0.0) or 0.0), float(getattr(params, "max_risk_pct", 0.0) or 0.0))


def rebuild_plan(trade: Trade, config: StrategiesConfig) -> TradePlan:
    """The trade plan as ``on_entry_filled`` made it: 1R and target from the stored row."""
    side = Side.LONG if trade.side.upper() == "LONG" else Side.SHORT
    entry = float(trade.entry_price or 0)
    risk = float(trade.risk_per_unit)
    target_r = abs(float(trade.target) - entry) / risk if risk > 0 else 1.0
    return TradePlan.from_entry(side, entry, risk, 1.0, target_r, config.trade_management)


def rebuild_manager(plan: TradePlan, trade: Trade, exits: list[TradeExit], contract: ContractRules) -> TradeManager:
    """A ``TradeManager`` in the state the stored trade reached (partials done, trailing step, stop in effect)."""
    labels = {e.kind for e in exits}
    done = 0
    for index, level in enumerate(plan.partials):
        if f"partial_{level.at_r:g}R" in labels:
            done = index + 1
    management = trade.management or {}
    return TradeManager.restore(plan, Decimal(trade.initial_qty), qty_step=contract.qty_step, min_qty=contract.min_qty,
                                remaining=Decimal(trade.qty), partials_done=done,
                                stop=float(management.get("stop_level") or trade.stop),
                                trailed=bool(management.get("trailed")))


async def rebuild_position(trade: Trade, entry_order: Order | None, trade_id: str, signal: Signal, plan: TradePlan,
                           manager: TradeManager, exits: list[TradeExit]) -> Position:
    """The engine's ``Position`` of an open trade, with its exit records."""
    entry_fee = ZERO
    if entry_order is not None:
        entry_fee = sum((f.fee for f in await FillRow.filter(order_id=entry_order.id)), ZERO)
    opened_ms = int(trade.opened_at.timestamp() * 1000) if trade.opened_at else 0
    entry = Fill(float(trade.entry_price or 0), Decimal(trade.initial_qty), float(entry_fee), opened_ms)
    risk = float(trade.initial_qty) * plan.risk_per_unit
    records = [ExitRecord(trade_id, e.kind, Decimal(e.qty), float(e.price), float(e.fee), int(e.time_ms), float(e.pnl),
                          float(e.pnl) / risk if risk > 0 else 0.0, float(trade.stop)) for e in exits]
    return Position(trade_id, signal, Decimal(trade.initial_qty), state=PositionState.OPEN, entry=entry, plan=plan,
                    manager=manager, exits=records, open_qty=Decimal(trade.qty))


class BrokerRecovery:
    """The restart recovery of one ``ExecutionBroker``, run on its worker (it works on the broker's own state).

    It puts the trades back into the broker's maps and books what happened while the bot was away
    through the broker's own order handling (entry and exit fills, cancel, protect), so a recovered
    trade is handled exactly as one opened in this run.
    """

    def __init__(self, broker: ExecutionBroker) -> None:
        self.broker = broker

    async def run(self, strategies: Any, report: RecoveryReport) -> None:
        """Reload every PENDING/OPEN/CLOSING trade of the mode into its engine and the broker (the work of ``recover``)."""
        broker = self.broker
        for trade in await broker.trades.open_trades():
            engine = broker.engines.get(trade.symbol)
            label = f"trade {trade.id} {trade.symbol} {trade.strategy} {trade.side}"
            if engine is None:
                report.problems.append(f"{label}: symbol no longer configured; its position is not managed")
                continue
            orders = await Order.filter(trade_id=trade.id).order_by("id")
            entry = next((o for o in orders if o.intent is OrderIntent.ENTRY), None)
            signal = await load_signal(trade, strategies)
            trade_id = engine_trade_id(trade, signal.time_ms)
            side = "LONG" if trade.side.upper() == "LONG" else "SHORT"
            if trade.state is TradeState.PENDING:
                if entry is None or (entry.status in FINAL_STATUSES and entry.filled_qty <= 0):
                    await broker.trades.mark_failed(trade, "entry never filled (found at restart)")
                    report.failed_entries.append(label)
                    continue
                if entry.status not in FINAL_STATUSES:
                    report.problems.append(f"{label}: entry order {entry.client_order_id} is {entry.status.value}")
                    continue
                position = Position(trade_id, signal, entry.filled_qty)
                # the levels the entry carried: the exchange's attached SL/TP sit at exactly these, so they are adopted
                attached_stop, attached_target = await attached_levels(trade, entry)
                ctx = TradeCtx(trade_id, trade.symbol, position, engine, side, db_trade=trade, entry_order=entry,
                               attached_stop=attached_stop, attached_target=attached_target)
                engine.positions[trade_id] = position
                broker._ctx[trade_id] = ctx
                broker._route[entry.id] = (ctx, "entry")
                # the fills were booked (or not: reconciliation only sets the totals) by an earlier run:
                # reload them, and look up on the venue what is missing, so the entry fee is the real one
                ctx.fills[entry.id] = await self.order_fills(ctx, entry, label)
                await broker._entry_filled(ctx, entry)  # plans from the fill, marks the trade open, protects it
                report.restored.append(f"{label}: entry filled while away, opened {entry.filled_qty} @ {entry.avg_price}")
                continue
            if trade.entry_price is None or trade.qty <= 0:
                report.problems.append(f"{label}: {trade.state.value} without entry price or quantity")
                continue
            exits = await TradeExit.filter(trade_id=trade.id).order_by("id")
            plan = rebuild_plan(trade, strategies)
            try:
                manager = rebuild_manager(plan, trade, exits, engine.contract)
            except ValueError as exc:  # stored quantities that contradict each other: never guess
                report.problems.append(f"{label}: cannot rebuild its management state ({exc})")
                continue
            position = await rebuild_position(trade, entry, trade_id, signal, plan, manager, exits)
            management = trade.management or {}
            ctx = TradeCtx(trade_id, trade.symbol, position, engine, side, db_trade=trade, entry_order=entry,
                           stop_level=manager.stop, target_level=float(management.get("target_level") or trade.target),
                           trailed=manager.trailed, open_qty=Decimal(trade.qty))
            engine.positions[trade_id] = position
            broker._ctx[trade_id] = ctx
            restore = getattr(broker.venue, "restore_position", None)
            if restore is not None:  # paper: the simulated account lives in memory; put the position back
                restore(trade.symbol, side, Decimal(trade.qty), Decimal(trade.entry_price))
            filled_protective: list[tuple[Order, str]] = []
            for order in orders:
                if order.intent not in (OrderIntent.STOP_LOSS, OrderIntent.TAKE_PROFIT):
                    continue
                if order.status in FINAL_STATUSES and order.filled_qty > 0:
                    # it executed while nobody could book it (the trade is still open in the DB, and a booked
                    # stop/target fill closes it): it is the trade's exit, booked below
                    filled_protective.append((order, "stop" if order.intent is OrderIntent.STOP_LOSS else "target"))
                    continue
                if order.status in FINAL_STATUSES:
                    continue
                role = "stop" if order.intent is OrderIntent.STOP_LOSS else "target"
                broker._route[order.id] = (ctx, role)
                if order.exchange_order_id is None:
                    # never acknowledged: the tracker's lookup (live) resolves it - found, it becomes the trade's
                    # protection; confirmed absent, the protection is placed again (see ExecutionBroker._apply)
                    ctx.unresolved[order.id] = role
                    continue
                protective = Protective(order.id, order.exchange_order_id, Decimal(order.stop_price or 0), Decimal(order.quantity))
                current = ctx.stop if role == "stop" else ctx.target
                if current is not None:
                    # two working copies (a crash between place and cancel): keep the newer one, cancel the older
                    await broker._cancel(ctx, current)
                if role == "stop":
                    ctx.stop = protective
                else:
                    ctx.target = protective
            for order, role in filled_protective:
                if ctx.closed or order.filled_qty > ctx.open_qty:
                    if not ctx.closed:
                        report.problems.append(f"{label}: its {role} {order.client_order_id} filled {order.filled_qty} "
                                               f"but only {ctx.open_qty} is open")
                    continue
                broker._route[order.id] = (ctx, role)
                ctx.fills[order.id] = await self.order_fills(ctx, order, label)
                broker._route.pop(order.id, None)
                await broker._exit_filled(ctx, order, role)
            if ctx.closed:
                report.closed.append(f"{label}: closed by its exchange order while the bot was away")
                continue
            report.restored.append(f"{label}: {ctx.open_qty} @ {trade.entry_price}, stop {ctx.stop_level}")
            logger.warning("[%s] recovered %s: %s open, stop order %s, target order %s", broker.mode.upper(), trade_id, ctx.open_qty,
                           ctx.stop.exchange_order_id if ctx.stop else None, ctx.target.exchange_order_id if ctx.target else None,
                           extra=broker._log_extra(ctx))
        for ctx in list(broker._ctx.values()):
            if ctx.closed or ctx.position.state is not PositionState.OPEN:
                continue
            await self._verify_protection(ctx, report)

    async def order_fills(self, ctx: TradeCtx, order: Order, label: str) -> list[RecordedFill]:
        """Every execution of an order (an entry or exit booked late: it filled while the bot was down, or
        reconciliation recorded it first): the stored ones, plus one from the venue's totals for what they miss."""
        broker = self.broker
        rows = await FillRow.filter(order_id=order.id).order_by("id")
        fills = [RecordedFill(order.id, r.price, r.qty, r.fee, r.realized_pnl, int(r.time_ms)) for r in rows]
        booked = sum((f.qty for f in fills), ZERO)
        if booked >= order.filled_qty:
            return fills
        fee: Decimal | None = None
        time_ms = 0
        try:
            update = await broker.venue.query(ctx.symbol, exchange_order_id=order.exchange_order_id,
                                              client_order_id=None if order.exchange_order_id else order.client_order_id)
            if update is not None:
                fee, time_ms = update.fee_total, update.time_ms or 0
            lookup = getattr(broker.venue, "order_fee", None)  # live: the account's fills carry the commission
            if fee is None and lookup is not None and order.exchange_order_id:
                fee = await lookup(ctx.symbol, order.exchange_order_id, epoch_ms(order.created_at))
        except Exception as exc:  # the fee is bookkeeping: the position itself is already known
            logger.warning("[%s] %s: fee lookup of order %s failed: %s", broker.mode.upper(), label, order.client_order_id, exc,
                           extra=broker._log_extra(ctx, client_order_id=order.client_order_id))
        if fee is None:
            logger.warning("[%s] %s: the fee of order %s is unknown (the venue did not report it); booked as 0",
                           broker.mode.upper(), label, order.client_order_id,
                           extra=broker._log_extra(ctx, client_order_id=order.client_order_id))
            return fills
        recorded = await broker.orders.record_missing_fill(order, fee_total=fee, time_ms=time_ms)
        return fills + recorded

    async def _verify_protection(self, ctx: TradeCtx, report: RecoveryReport) -> None:
        """Look each protective order up on the venue; book what happened while away; re-place what is gone."""
        broker = self.broker
        before = (ctx.stop.exchange_order_id if ctx.stop else None, ctx.target.exchange_order_id if ctx.target else None)
        for role in ("stop", "target"):
            protective = ctx.stop if role == "stop" else ctx.target
            if protective is None or ctx.closed:
                continue
            update = await broker.venue.query(ctx.symbol, exchange_order_id=protective.exchange_order_id)
            order = await Order.get(id=protective.order_id)
            if update is None:
                # the venue does not know it (paper after a restart, or gone on the exchange): it protects nothing
                await broker.orders.set_status(order, OrderStatus.CANCELLED, "lookup", error="not on the venue at restart")
                broker._route.pop(order.id, None)
                if role == "stop":
                    ctx.stop = None
                else:
                    ctx.target = None
                continue
            if update.stop_price and update.stop_price > 0:
                protective.price = update.stop_price  # the level as the exchange holds it (rounded to its tick)
            await broker._apply(order, dataclass_replace(update, source="lookup"))
        if ctx.closed:
            report.closed.append(f"{ctx.trade_id}: closed by its exchange order while the bot was away")
            return
        await broker._protect(ctx)
        after = (ctx.stop.exchange_order_id if ctx.stop else None, ctx.target.exchange_order_id if ctx.target else None)
        for role, old, new in (("stop", before[0], after[0]), ("target", before[1], after[1])):
            if new is not None and new != old:
                report.protective_replaced.append(f"{ctx.trade_id}: {role} {old or 'missing'} -> {new}")
                if broker.venue.mode is ExecMode.PAPER:
                    continue  # the paper book lives in memory: after a restart it is always rebuilt, nothing to alert
                await broker._alert("error", f"{ctx.symbol} {ctx.strategy}: the {role} was missing at restart; re-placed "
                                    f"({new})", {"trade_id": ctx.trade_id})
