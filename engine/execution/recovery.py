"""Restart recovery: rebuild the in-memory state of open trades from the database.

After a crash or a restart the ``Trade`` rows (PENDING / OPEN / CLOSING) and their orders are
the bot's memory. Reconciliation (``engine.risk.reconcile``) first brings the rows in line with
the exchange (orders left SENT/UNKNOWN looked up, missing stops re-placed, trades the exchange
closed while the bot was away booked); :meth:`ExecutionBroker.recover` then uses the helpers
here to put every remaining trade back into its ``SymbolEngine`` (a ``Position`` with its plan
and ``TradeManager`` state: partials done, trailing step reached, stop in effect) and into the
broker (a ``TradeCtx`` with its protective orders), so the engine carries on managing it and
the one-position-per-side rule sees it (no duplicate entry).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from db.models import Fill as FillRow
from db.models import Order, OrderEvent, OrderStatus, Signal as SignalRow, Trade, TradeExit
from engine.trading.manager import TradeManager
from engine.trading.plan import TradePlan
from engine.trading.positions import ExitRecord, Fill, Position, PositionState
from engine.trading.sizing import ContractRules
from strategies.base import Side, Signal
from strategies.params import StrategiesConfig

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
