"""The values a trade is handled with, shared by the broker and its collaborators.

The entry as the pre-trade gate sees it (``TradeRequest``) and the gate's answer (``GateDecision``),
the hook types, a trade's in-memory state (``TradeCtx`` with its ``Protective`` orders) and the
read-only ``TradeView`` outside code gets, plus the small pure helpers on them: tick rounding,
epoch milliseconds and a venue update copied with changes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Awaitable, Callable

from db.models import Order, Signal, Trade
from engine.exchange.bingx.contracts import round_stop_to_step, round_to_step
from engine.execution.order_store import RecordedFill
from engine.execution.positions import dec
from engine.execution.venue import VenueUpdate
from engine.trading.engine import SymbolEngine
from engine.trading.manager import ExitIntent
from engine.trading.positions import Position

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class TradeRequest:
    """An entry the engine wants to place, as the pre-trade gate (risk manager) sees it."""

    mode: str
    symbol: str
    strategy: str
    side: str  # LONG / SHORT
    qty: Decimal
    entry: float
    stop: float
    target: float
    risk_amount: float  # qty * |entry - stop|
    notional: float
    equity: float
    time_ms: int
    # True for the re-check of an entry a human approved: the gate already allowed it (and counted it
    # toward the order-rate cap) before the approval was asked for, so it must not count it again
    recheck: bool = False


@dataclass(frozen=True, slots=True)
class GateDecision:
    """The gate's answer: ``allowed`` or a veto with its reason (stored with the signal)."""

    allowed: bool
    reason: str = ""


PreTradeGate = Callable[[TradeRequest], Awaitable[GateDecision]]
# A human approval of an entry that passed the risk gate: (request, stored signal row) -> decision.
# It may wait minutes, so the broker runs it OUTSIDE its job queue (exits and stops keep flowing).
EntryApproval = Callable[[TradeRequest, Signal], Awaitable[GateDecision]]
AlertHook = Callable[[str, str, dict[str, Any]], Awaitable[None]]


@dataclass(slots=True)
class Protective:
    """A stop-loss or take-profit order working on the venue for a trade."""

    order_id: int  # DB id
    exchange_order_id: str
    price: Decimal
    qty: Decimal


@dataclass(slots=True)
class TradeCtx:
    """In-memory state of one trade from its entry decision to its close."""

    trade_id: str
    symbol: str
    position: Position
    engine: SymbolEngine
    side: str  # LONG / SHORT (hedge position side)
    db_trade: Trade | None = None
    entry_order: Order | None = None
    attached_stop: Decimal | None = None
    attached_target: Decimal | None = None
    stop: Protective | None = None
    target: Protective | None = None
    stop_level: float | None = None
    target_level: float | None = None
    trailed: bool = False
    open_qty: Decimal = ZERO
    fills: dict[int, list[RecordedFill]] = field(default_factory=dict)  # DB order id -> fills not yet reported
    exit_intents: dict[int, ExitIntent] = field(default_factory=dict)  # our market exits by DB order id
    expecting: ExitIntent | None = None
    closed: bool = False
    failed: bool = False
    # stop/target placements whose outcome is unknown, by DB order id -> role: the tracker's lookup settles them
    unresolved: dict[int, str] = field(default_factory=dict)
    # timed retries so far of a stop / a target refused for now (rate limit, clock); each role counts its own
    stop_retries: int = 0
    target_retries: int = 0
    protect_retry_pending: bool = False  # one protect retry timer at a time (it renews stop and target)
    unprotected_alert_at: float | None = None  # loop time of the last "NO STOP" alert (repeated at most every few minutes)
    close_retries: int = 0  # timed retries so far of a close refused for now

    @property
    def strategy(self) -> str:
        """The strategy that opened it."""
        return self.position.strategy

    @property
    def closing_side(self) -> str:
        """BUY/SELL that reduces this hedge position."""
        return "SELL" if self.side == "LONG" else "BUY"


@dataclass(frozen=True, slots=True)
class TradeView:
    """A read-only snapshot of one open trade, for chat commands, reports and shutdown.

    ``trade_id`` is the engine's id (what :meth:`ExecutionBroker.close_trade` takes), ``db_id`` the
    ``Trade`` row's id (what users see in /trades). ``stop`` / ``target`` are the prices of the
    working exchange orders, else the planned levels; ``risk_per_unit`` is 1R of the plan.
    """

    trade_id: str
    db_id: int | None
    symbol: str
    strategy: str
    side: str  # LONG / SHORT
    qty: Decimal  # open quantity
    entry_price: Decimal
    stop: Decimal | None
    target: Decimal | None
    risk_per_unit: Decimal | None
    opened_at: datetime | None

    @property
    def position_id(self) -> str:
        """The id chat commands show and take: the database trade id, else the engine's."""
        return str(self.db_id) if self.db_id is not None else self.trade_id


def round_to_tick(value: float | Decimal, tick: Decimal, *, stop_of: str | None = None) -> Decimal:
    """``value`` on a multiple of ``tick``, as the exchange client rounds it: the nearest one (half up), or for
    a stop the one toward the entry.

    ``stop_of`` is the side (LONG / SHORT) of the position a stop protects: its stop goes up (LONG) or
    down (SHORT) to the tick, so the order on the exchange is never further from the entry than the
    planned level and the trade never risks more than it was sized for (nearest rounding could add half
    a tick). A level already on the tick (within float noise) stays where it is. Targets use nearest.
    """
    if stop_of is not None:
        return round_stop_to_step(dec(value), tick, stop_of)
    return round_to_step(dec(value), tick, ROUND_HALF_UP)


def epoch_ms(moment: datetime) -> int:
    """Epoch milliseconds of an aware datetime (the exchange's unit)."""
    return int(moment.timestamp() * 1000)


def dataclass_replace(update: VenueUpdate, **changes: Any) -> VenueUpdate:
    """``dataclasses.replace`` for the frozen update record."""
    return dataclasses.replace(update, **changes)
