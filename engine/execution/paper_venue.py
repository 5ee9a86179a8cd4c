"""``PaperVenue``: a hedge-mode USDT-M account simulated against the live market feed.

Fill rules (the differences from the backtester are listed in README.md):

* MARKET orders fill at once, in one execution, at the last traded price moved against the
  order by ``slippage_bps``; taker fee.
* STOP_MARKET / TAKE_PROFIT_MARKET orders wait for a traded price that triggers them (stop:
  a sell at or below the stop price, a buy at or above; take-profit the reverse, as on BingX with
  ``workingType=CONTRACT_PRICE``) and then fill like a market order at THAT trade's price plus
  slippage; taker fee.
* A stop or take-profit on the wrong side of the last price is rejected (BingX: 110411-110414).
* An entry's attached stop-loss / take-profit become working orders (without a client order id)
  at its fill; close-only orders never exceed the position and are cancelled when it is flat.
* The wallet (balance = start + realised PnL - fees) is persisted in the database
  (``KeyValue`` ``paper:wallet``) after every fill, so a restart continues from it.
* Funding is not simulated.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from db.kv import kv_get, kv_set
from db.models import OrderStatus
from engine.execution.venue import ExecMode, OrderSpec, PlacementRejected, UpdateCallback, VenueFill, VenueUpdate

logger = logging.getLogger(__name__)

ZERO = Decimal(0)
WALLET_KEY = "paper:wallet"
_BPS = Decimal(10_000)


@dataclass(slots=True)
class _PaperOrder:
    order_id: str
    spec: OrderSpec
    order_type: str
    side: str
    position_side: str
    qty: Decimal
    stop_price: Decimal
    client_order_id: str
    status: OrderStatus = OrderStatus.NEW
    executed: Decimal = ZERO
    quote: Decimal = ZERO
    fee: Decimal = ZERO
    realized: Decimal = ZERO
    time_ms: int = 0

    @property
    def closing(self) -> bool:
        return (self.side == "SELL") == (self.position_side == "LONG")


@dataclass(slots=True)
class _PaperPosition:
    qty: Decimal = ZERO
    cost: Decimal = ZERO  # entry value of the open quantity


class PaperVenue:
    """Paper trading: orders against the last traded prices of the live feed."""

    mode = ExecMode.PAPER

    def __init__(self, *, starting_balance: Decimal, slippage_bps: float, taker_fee: float,
                 price_ticks: dict[str, Decimal], qty_steps: dict[str, Decimal]) -> None:
        self.starting_balance = Decimal(starting_balance)
        self.slippage = Decimal(repr(float(slippage_bps))) / _BPS
        self.taker_fee = Decimal(repr(float(taker_fee)))
        self.ticks = dict(price_ticks)
        self.steps = dict(qty_steps)
        self.wallet = self.starting_balance
        self.last_price: dict[str, Decimal] = {}
        self.last_time_ms: dict[str, int] = {}
        self.leverage: dict[str, int] = {}
        self.orders: dict[str, _PaperOrder] = {}
        self.positions: dict[tuple[str, str], _PaperPosition] = {}
        # ids stay unique across restarts (the database keeps the old ones): microseconds at start, then +1
        self._next_id = time.time_ns() // 1000
        self._callback: UpdateCallback | None = None

    # -- Venue -------------------------------------------------------------------------------------

    def set_update_callback(self, callback: UpdateCallback) -> None:
        """Where order updates go."""
        self._callback = callback

    async def load_wallet(self) -> Decimal:
        """Continue from the persisted wallet (or start it at ``starting_balance``)."""
        stored = await kv_get(WALLET_KEY)
        if stored is None:
            await kv_set(WALLET_KEY, str(self.starting_balance))
            self.wallet = self.starting_balance
        else:
            self.wallet = Decimal(str(stored))
        return self.wallet

    async def prepare_symbol(self, symbol: str, leverage: int) -> None:
        """Paper accounts are always in hedge mode; the leverage is only remembered."""
        self.leverage[symbol] = leverage

    def price_tick(self, symbol: str) -> Decimal:
        """The configured price tick of ``symbol``."""
        return self.ticks[symbol]

    async def wallet_balance(self) -> Decimal:
        """Start balance plus realised PnL minus fees."""
        return self.wallet

    async def position_qty(self, symbol: str, position_side: str) -> Decimal:
        """Size of the paper position."""
        return self._position(symbol, position_side).qty

    async def place(self, spec: OrderSpec) -> VenueUpdate:
        """Accept ``spec``: a market order fills now, a conditional one waits for its trigger."""
        last = self.last_price.get(spec.symbol)
        if last is None:
            raise PlacementRejected(f"no price for {spec.symbol} yet")
        if spec.quantity <= 0:
            raise PlacementRejected(f"quantity must be positive, got {spec.quantity}")
        if spec.order_type not in ("MARKET", "STOP_MARKET", "TAKE_PROFIT_MARKET"):
            raise PlacementRejected(f"order type {spec.order_type} is not supported in paper mode")
        if spec.closing and self._position(spec.symbol, spec.position_side).qty <= 0:
            raise PlacementRejected("no position to close", code=101205)
        if spec.order_type != "MARKET":
            assert spec.stop_price is not None
            self._check_side(spec.order_type, spec.side, spec.stop_price, last)
        order = self._new_order(spec, spec.order_type, spec.side, spec.position_side, spec.quantity, spec.stop_price or ZERO,
                                spec.client_order_id)
        if spec.order_type == "MARKET":
            await self._execute(order, last)
        else:
            await self._emit(order, None)
        return self._update(order, None, "placement")

    async def cancel(self, symbol: str, exchange_order_id: str) -> VenueUpdate | None:
        """Cancel a working order; None when it is unknown or already final."""
        order = self.orders.get(exchange_order_id)
        if order is None or order.status not in (OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED):
            return None
        order.status = OrderStatus.CANCELLED
        await self._emit(order, None)
        return self._update(order, None, "placement")

    async def query(self, symbol: str, exchange_order_id: str | None = None, client_order_id: str | None = None) -> VenueUpdate | None:
        """The order now."""
        order = self.orders.get(exchange_order_id or "")
        if order is None and client_order_id:
            order = next((o for o in self.orders.values() if o.client_order_id == client_order_id), None)
        return self._update(order, None, "lookup") if order is not None else None

    async def open_orders(self, symbol: str) -> list[VenueUpdate]:
        """Working orders of ``symbol``."""
        return [self._update(o, None, "lookup") for o in self.orders.values()
                if o.spec.symbol == symbol and o.status in (OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED)]

    def restore_position(self, symbol: str, position_side: str, qty: Decimal, entry_price: Decimal) -> None:
        """Restart recovery: put back a position the database says is open (the paper account is in memory)."""
        position = self._position(symbol, position_side)
        position.qty = qty
        position.cost = qty * entry_price

    # -- the feed ------------------------------------------------------------------------------------

    async def on_trade(self, symbol: str, price: Decimal, time_ms: int) -> None:
        """A traded price: triggers the conditional orders it reaches (oldest first)."""
        self.last_price[symbol] = price
        self.last_time_ms[symbol] = time_ms
        for order in list(self.orders.values()):
            if order.spec.symbol != symbol or order.status is not OrderStatus.NEW or order.order_type == "MARKET":
                continue
            if self._triggered(order, price):
                await self._execute(order, price)

    # -- internals -------------------------------------------------------------------------------------

    def _new_order(self, spec: OrderSpec, order_type: str, side: str, position_side: str, qty: Decimal, stop: Decimal,
                   client_order_id: str) -> _PaperOrder:
        order_id = str(self._next_id)
        self._next_id += 1
        order = _PaperOrder(order_id, spec, order_type, side, position_side, qty, stop, client_order_id,
                            time_ms=self.last_time_ms.get(spec.symbol, 0))
        self.orders[order_id] = order
        return order

    @staticmethod
    def _check_side(order_type: str, side: str, stop: Decimal, last: Decimal) -> None:
        # a stop that would trigger at once is refused, as BingX does (110411-110414)
        if order_type == "STOP_MARKET":
            wrong = stop >= last if side == "SELL" else stop <= last
        else:
            wrong = stop <= last if side == "SELL" else stop >= last
        if wrong:
            raise PlacementRejected(f"{order_type} {side} trigger {stop} is on the wrong side of the last price {last}", code=110411)

    @staticmethod
    def _triggered(order: _PaperOrder, price: Decimal) -> bool:
        if order.order_type == "STOP_MARKET":
            return price <= order.stop_price if order.side == "SELL" else price >= order.stop_price
        return price >= order.stop_price if order.side == "SELL" else price <= order.stop_price

    def _position(self, symbol: str, side: str) -> _PaperPosition:
        return self.positions.setdefault((symbol, side), _PaperPosition())

    async def _execute(self, order: _PaperOrder, price: Decimal) -> None:
        symbol = order.spec.symbol
        position = self._position(symbol, order.position_side)
        qty = min(order.qty - order.executed, position.qty) if order.closing else order.qty - order.executed
        if qty <= 0:
            order.status = OrderStatus.EXPIRED
            await self._emit(order, None)
            return
        buy = order.side == "BUY"
        tick = self.ticks[symbol]
        raw = price * (1 + self.slippage) if buy else price * (1 - self.slippage)
        fill_price = _round_against(raw, tick, buy)
        quote = fill_price * qty
        fee = (quote * self.taker_fee).quantize(Decimal("1e-8"))
        realized = ZERO
        if order.closing:
            removed = position.cost if qty == position.qty else position.cost * qty / position.qty
            realized = (quote - removed) if order.position_side == "LONG" else (removed - quote)
            position.cost -= removed
            position.qty -= qty
        else:
            position.cost += quote
            position.qty += qty
        order.executed += qty
        order.quote += quote
        order.fee += fee
        order.realized += realized
        order.time_ms = self.last_time_ms.get(symbol, order.time_ms)
        order.status = OrderStatus.FILLED if order.executed >= order.qty or order.closing else OrderStatus.PARTIALLY_FILLED
        self.wallet += realized - fee
        await kv_set(WALLET_KEY, str(self.wallet))
        fill = VenueFill(fill_price, qty, fee, realized, order.time_ms, order.executed)
        logger.info("[PAPER] %s %s %s %s @ %s (fee %s)", symbol, order.order_type, order.side, qty, fill_price, fee,
                    extra={"mode": "paper", "symbol": symbol, "client_order_id": order.client_order_id})
        await self._emit(order, fill)
        if not order.closing and order.spec.order_type == "MARKET" and order.executed == qty:
            await self._attach(order)
        if position.qty <= 0:
            for other in list(self.orders.values()):
                if (other is not order and other.closing and other.spec.symbol == symbol and other.position_side == order.position_side
                        and other.status is OrderStatus.NEW):
                    other.status = OrderStatus.CANCELLED
                    await self._emit(other, None)

    async def _attach(self, entry: _PaperOrder) -> None:
        spec = entry.spec
        closing_side = "SELL" if entry.side == "BUY" else "BUY"
        for order_type, level in (("STOP_MARKET", spec.attached_stop), ("TAKE_PROFIT_MARKET", spec.attached_target)):
            if level is None:
                continue
            child = self._new_order(spec, order_type, closing_side, entry.position_side, entry.qty, level, "")
            await self._emit(child, None)

    def _update(self, order: _PaperOrder, fill: VenueFill | None, source: str) -> VenueUpdate:
        return VenueUpdate(
            symbol=order.spec.symbol, exchange_order_id=order.order_id, client_order_id=order.client_order_id, side=order.side,
            position_side=order.position_side, order_type=order.order_type, status=order.status, quantity=order.qty,
            stop_price=order.stop_price, executed_qty=order.executed,
            avg_price=order.quote / order.executed if order.executed else ZERO, fee_total=order.fee, realized_total=order.realized,
            fill=fill, time_ms=order.time_ms, source=source,
        )

    async def _emit(self, order: _PaperOrder, fill: VenueFill | None) -> None:
        if self._callback is not None:
            await self._callback(self._update(order, fill, "paper"))


def _round_against(price: Decimal, tick: Decimal, buy: bool) -> Decimal:
    """Round a slipped price to the tick, against the order (buy up, sell down)."""
    units = (price / tick).to_integral_value(rounding=ROUND_CEILING if buy else ROUND_FLOOR)
    return (units * tick).quantize(tick)
