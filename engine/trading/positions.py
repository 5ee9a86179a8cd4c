"""Records of one strategy position: its fills and what each exit earned."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum

from engine.trading.manager import ExitIntent, TradeManager
from engine.trading.plan import TradePlan
from strategies.base import Signal


@dataclass(frozen=True, slots=True)
class Fill:
    """An execution: ``qty`` at ``price`` paying ``fee`` (quote currency) at ``time_ms``."""

    price: float
    qty: Decimal
    fee: float
    time_ms: int


@dataclass(frozen=True, slots=True)
class ExitRecord:
    """One exit fill of a position with its share of the result.

    ``pnl`` is net: gross PnL of ``qty`` minus this exit's fee minus the matching share of the
    entry fee. ``r_multiple`` is ``pnl / (initial qty * 1R)``, so a position's rows add up to its
    R multiple.
    """

    trade_id: str
    label: str
    qty: Decimal
    price: float
    fee: float
    time_ms: int
    pnl: float
    r_multiple: float
    stop: float


class PositionState(str, Enum):
    """Lifecycle of a position."""

    PENDING = "pending"  # entry sent, not filled yet
    OPEN = "open"
    CLOSED = "closed"


@dataclass(slots=True)
class Position:
    """A position opened by one signal."""

    trade_id: str
    signal: Signal
    qty: Decimal
    state: PositionState = PositionState.PENDING
    entry: Fill | None = None
    plan: TradePlan | None = None
    manager: TradeManager | None = None
    exits: list[ExitRecord] = field(default_factory=list)
    open_qty: Decimal = Decimal(0)  # filled and not yet closed by an exit FILL (the manager plans ahead of fills)

    @property
    def strategy(self) -> str:
        """The strategy that opened it."""
        return self.signal.strategy

    def record_exit(self, intent: ExitIntent, fill: Fill, stop_in_effect: float) -> ExitRecord:
        """Book an exit fill and return its row."""
        assert self.entry is not None and self.plan is not None
        entry = self.entry
        qty = fill.qty
        share = float(qty / entry.qty)
        gross = (fill.price - entry.price) * self.signal.side.sign * float(qty)
        pnl = gross - fill.fee - entry.fee * share
        risk = float(entry.qty) * self.plan.risk_per_unit
        record = ExitRecord(
            trade_id=self.trade_id,
            label=intent.label,
            qty=qty,
            price=fill.price,
            fee=fill.fee + entry.fee * share,
            time_ms=fill.time_ms,
            pnl=pnl,
            r_multiple=pnl / risk if risk > 0 else 0.0,
            stop=stop_in_effect,
        )
        self.exits.append(record)
        self.open_qty -= qty
        return record

    @property
    def realized_pnl(self) -> float:
        """Net PnL booked so far."""
        return sum(e.pnl for e in self.exits)
