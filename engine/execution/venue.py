"""What a broker needs from a trading venue (the paper simulator or BingX), as plain records.

Both venues report every order change as a :class:`VenueUpdate` through one callback, in the
order they happened: a status change (``fill is None``) or one execution (``fill`` set). The
broker does not care whether an update came from the account stream, a REST poll or the paper
matching code: it applies them idempotently (fills are keyed by order id and cumulative
quantity).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from typing import Awaitable, Callable, Protocol

from db.models import OrderStatus


class ExecMode(str, Enum):
    """Which venue the broker trades on; every log line and message names it."""

    PAPER = "paper"
    LIVE = "live"


class PlacementRejected(Exception):
    """The venue refused the order: it certainly does not exist.

    ``transient``: the refusal says nothing about the order itself (a rate limit, a clock out of the
    receive window): the same order may be accepted a moment later (``retry_after_s``, when known). Otherwise
    it is definite.
    """

    def __init__(self, reason: str, *, code: int | None = None, transient: bool = False,
                 retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.transient = transient
        self.retry_after_s = retry_after_s  # a transient refusal: when the venue says it is worth trying again


class PlacementUnknown(Exception):
    """The order may or may not exist (no answer and the lookup failed): stop opening positions."""


@dataclass(frozen=True, slots=True)
class OrderSpec:
    """One order to place. ``side`` BUY/SELL, ``position_side`` LONG/SHORT (hedge mode)."""

    symbol: str
    side: str
    position_side: str
    order_type: str  # MARKET, STOP_MARKET, TAKE_PROFIT_MARKET
    quantity: Decimal
    client_order_id: str
    stop_price: Decimal | None = None
    attached_stop: Decimal | None = None  # entry only: stopLoss attached, becomes live on the first fill
    attached_target: Decimal | None = None  # entry only: takeProfit attached
    reference_price: Decimal | None = None  # for the venue's minimum-notional check of a market order

    @property
    def closing(self) -> bool:
        """Hedge mode: SELL on LONG or BUY on SHORT reduces the position."""
        return (self.side == "SELL") == (self.position_side == "LONG")


@dataclass(frozen=True, slots=True)
class VenueFill:
    """One execution. ``fee`` is positive when paid; ``cumulative_qty`` is the order's filled total after it."""

    price: Decimal
    qty: Decimal
    fee: Decimal
    realized_pnl: Decimal
    time_ms: int
    cumulative_qty: Decimal


@dataclass(frozen=True, slots=True)
class VenueUpdate:
    """An order as the venue reports it now, plus the execution that caused the report (if any)."""

    symbol: str
    exchange_order_id: str
    client_order_id: str  # "" for orders the venue created itself (attached stop-loss / take-profit)
    side: str
    position_side: str
    order_type: str
    status: OrderStatus
    quantity: Decimal
    stop_price: Decimal
    executed_qty: Decimal
    avg_price: Decimal
    fee_total: Decimal | None = None  # cumulative fee paid, when the source knows it (REST)
    realized_total: Decimal | None = None  # cumulative realised PnL, when the source knows it (REST)
    fill: VenueFill | None = None
    time_ms: int | None = None
    source: str = "stream"  # placement, stream, poll, lookup, paper


UpdateCallback = Callable[[VenueUpdate], Awaitable[None]]


class Venue(Protocol):
    """The async trading interface both modes implement (hedge mode, USDT-M perpetuals)."""

    mode: ExecMode

    def set_update_callback(self, callback: UpdateCallback) -> None:
        """Where every order update goes (set once by the broker)."""
        ...

    async def prepare_symbol(self, symbol: str, leverage: int) -> None:
        """Hedge position mode and ``leverage`` on both sides; called once per symbol before its first entry."""
        ...

    async def place(self, spec: OrderSpec) -> VenueUpdate:
        """Place ``spec``; raise :class:`PlacementRejected` or :class:`PlacementUnknown`."""
        ...

    async def cancel(self, symbol: str, exchange_order_id: str) -> VenueUpdate | None:
        """Cancel one order; ``None`` when it no longer exists or is already final."""
        ...

    async def query(self, symbol: str, exchange_order_id: str | None = None, client_order_id: str | None = None) -> VenueUpdate | None:
        """The order now, or ``None`` when the venue does not know it."""
        ...

    async def open_orders(self, symbol: str) -> list[VenueUpdate]:
        """Every working order of ``symbol``."""
        ...

    async def wallet_balance(self) -> Decimal:
        """Wallet balance in the quote currency (without unrealised PnL)."""
        ...

    async def position_qty(self, symbol: str, position_side: str) -> Decimal:
        """Size of the hedge position ``symbol``/``position_side`` (0 when flat)."""
        ...

    def price_tick(self, symbol: str) -> Decimal:
        """The symbol's price tick (prices sent are rounded to it)."""
        ...
