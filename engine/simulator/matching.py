"""Matching engine for USDT-M perpetuals: orders, fills, positions, margin, fees, funding, liquidation.

How orders meet the replayed market (see ``markets.py`` for the synthetic book):

* Taker executions (MARKET, a marketable LIMIT, a triggered *_MARKET) walk the
  synthetic book from the best ask (buy) or best bid (sell); taker fee.
* Resting LIMIT orders fill against the replayed trades: a trade at price ``p`` fills
  resting buys priced ``>= p`` (sells ``<= p``) at their own price, best price first,
  then oldest first, up to the trade's quantity - so a big order fills partially over
  several trades. Maker fee.
* Conditional orders (STOP*, TAKE_PROFIT*, TRIGGER_*) watch the mark price
  (``workingType=MARK_PRICE``) or the last trade price (``CONTRACT_PRICE``). STOP: a buy
  triggers at price >= stopPrice, a sell at <=; TAKE_PROFIT the reverse; TRIGGER_* in the
  direction of the stop price from the price at placement. *_MARKET then executes as a
  taker; STOP/TAKE_PROFIT/TRIGGER_LIMIT become resting limit orders at ``price``.
* Close-only orders (hedge-mode closing side, one-way reduceOnly/closePosition, attached
  SL/TP) never exceed the position: they are clamped when they execute and cancelled
  once their position is flat or has flipped.
* Attached ``stopLoss``/``takeProfit`` become live conditional orders when the entry
  order first fills.
* Opt-in (``EngineConfig.cap_pending_stops``, protocol notes 6.2, UNCONFIRMED): the working
  STOP*/TAKE_PROFIT* quantity of a position may not exceed its size; a closing stop/target
  that would is refused (110406/110407).

Money is Decimal; fees and funding are rounded to 1e-8; the wallet only changes via
income records (see ``accounts.py``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import Callable, Iterable

from .accounts import ZERO, Account, Income, Position, SymbolSettings, q8
from .markets import Market
from .protocol import ApiError, parse_bool, parse_decimal

log = logging.getLogger(__name__)

ORDER_TYPES = frozenset(
    {"MARKET", "LIMIT", "STOP_MARKET", "TAKE_PROFIT_MARKET", "STOP", "TAKE_PROFIT", "TRIGGER_LIMIT", "TRIGGER_MARKET"}
)
UNSUPPORTED_TYPES = frozenset({"TRAILING_STOP_MARKET", "TRAILING_TP_SL", "TRIGGER_REVERSE_MARKET"})
CONDITIONAL_TYPES = frozenset({"STOP_MARKET", "TAKE_PROFIT_MARKET", "STOP", "TAKE_PROFIT", "TRIGGER_LIMIT", "TRIGGER_MARKET"})
MARKET_EXEC_TYPES = frozenset({"MARKET", "STOP_MARKET", "TAKE_PROFIT_MARKET", "TRIGGER_MARKET"})
PRICED_TYPES = frozenset({"LIMIT", "STOP", "TAKE_PROFIT", "TRIGGER_LIMIT"})
STOP_FAMILY = frozenset({"STOP_MARKET", "STOP"})
TP_FAMILY = frozenset({"TAKE_PROFIT_MARKET", "TAKE_PROFIT"})
TIME_IN_FORCE = frozenset({"GTC", "IOC", "FOK", "PostOnly"})
WORKING_TYPES = frozenset({"MARK_PRICE", "CONTRACT_PRICE"})
OPEN_STATUSES = frozenset({"NEW", "PENDING", "PARTIALLY_FILLED"})


def _marketable(market: Market, side: str, price_ticks: int) -> bool:
    """Whether a limit at ``price_ticks`` would take liquidity from the book right now."""
    touch = market.taker_ticks(side)
    return price_ticks >= touch if side == "BUY" else price_ticks <= touch


class IdGenerator:
    """Snowflake-like 64-bit ids from the replay time: increasing, unique, larger than 2^53."""

    def __init__(self) -> None:
        self._last = 0

    def next(self, now_ms: int) -> int:
        """A fresh id."""
        candidate = max(now_ms, 1) << 22
        self._last = max(self._last + 1, candidate)
        return self._last


@dataclass(slots=True)
class TpSl:
    """An attached stopLoss/takeProfit as sent (``raw``) and parsed."""

    type: str
    stop_price: Decimal
    price: Decimal
    working_type: str
    quantity: Decimal | None
    stop_guaranteed: str
    raw: str


@dataclass(slots=True)
class Order:
    """One order and its execution state."""

    order_id: int
    symbol: str
    side: str
    position_side: str
    type: str
    qty: Decimal
    price: Decimal
    stop_price: Decimal
    working_type: str
    time_in_force: str
    client_order_id: str
    reduce_only: bool
    close_position: bool
    closing: bool
    leverage: int
    time_ms: int
    update_time_ms: int
    price_ticks: int = 0
    status: str = "NEW"  # REST spelling: NEW, PENDING, PARTIALLY_FILLED, FILLED, CANCELLED, EXPIRED
    executed: Decimal = ZERO
    cum_quote: Decimal = ZERO
    commission: Decimal = ZERO  # negative when fees were paid
    profit: Decimal = ZERO
    triggered: bool = False
    trigger_above: bool | None = None
    stop_loss: TpSl | None = None
    take_profit: TpSl | None = None
    parent_id: int = 0
    children_created: bool = False
    last_fill_qty: Decimal = ZERO
    last_fill_price: Decimal = ZERO
    position_id: int = 0

    @property
    def is_open(self) -> bool:
        """Still working (untriggered, resting or partially filled)."""
        return self.status in OPEN_STATUSES

    @property
    def waiting_trigger(self) -> bool:
        """A conditional order whose trigger has not fired."""
        return self.type in CONDITIONAL_TYPES and not self.triggered

    @property
    def resting_limit(self) -> bool:
        """A limit order (or a triggered limit-type conditional) waiting in the book."""
        return self.is_open and not self.waiting_trigger and self.type in PRICED_TYPES

    @property
    def remaining(self) -> Decimal:
        """Quantity not yet executed."""
        return max(self.qty - self.executed, ZERO)

    @property
    def avg_price(self) -> Decimal:
        """Average execution price (exact quotient)."""
        return self.cum_quote / self.executed if self.executed else ZERO


@dataclass(slots=True)
class Fill:
    """One execution of an order."""

    trade_id: int
    order_id: int
    client_order_id: str
    symbol: str
    side: str
    position_side: str
    order_type: str
    price: Decimal
    qty: Decimal
    quote: Decimal
    commission: Decimal  # negative = paid
    realized_pnl: Decimal
    maker: bool
    time_ms: int
    liquidation: bool = False


#: Account events emitted to listeners: ("order", order, exec_type, fill|None),
#: ("account", reason, balance_change, [positions]), ("config", symbol).
Event = tuple


@dataclass
class EngineConfig:
    """Fee rates and defaults."""

    taker_fee: Decimal = Decimal("0.0005")
    maker_fee: Decimal = Decimal("0.0002")
    default_leverage: int = 20
    duplicate_client_id_code: int = 101400
    # The other reading of protocol notes 6.5 (UNCONFIRMED): conditional orders drop clientOrderId
    # (stored and echoed as "", not findable by it).
    conditional_ignores_client_id: bool = False
    # The enforcing reading of protocol notes 6.2 (UNCONFIRMED): "the pending stop quantity on a position cannot
    # exceed the position size" (and the same for take-profits). When on, a closing STOP*/TAKE_PROFIT* order whose
    # quantity plus the working ones of its family exceeds the position is refused (see ``_check_pending_cap``).
    cap_pending_stops: bool = False


class MatchingEngine:
    """Orders and positions of the single simulated account against the replayed markets."""

    def __init__(self, markets: dict[str, Market], account: Account, now_ms: Callable[[], int], config: EngineConfig | None = None) -> None:
        self.markets = markets
        self.account = account
        self.now_ms = now_ms
        self.config = config or EngineConfig()
        self.ids = IdGenerator()
        self.orders: dict[int, Order] = {}
        self.client_ids: dict[str, int] = {}
        self.open_orders: dict[str, dict[int, Order]] = {s: {} for s in markets}
        self.fills: list[Fill] = []
        self.listeners: list[Callable[[Event], None]] = []
        for symbol, market in markets.items():
            lev = min(self.config.default_leverage, market.max_leverage)
            account.settings.setdefault(symbol, SymbolSettings(lev, lev))

    # ---- helpers ------------------------------------------------------------------------------
    def _emit(self, event: Event) -> None:
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:  # a broken listener must not corrupt the engine's state
                log.exception("account event listener failed")

    def market(self, symbol: str | None) -> Market:
        """The market for ``symbol`` or the BingX error for a bad/unknown symbol."""
        if not symbol:
            raise ApiError(109400, "symbol is required")
        if "-" not in symbol:
            raise ApiError(109400, f"{symbol}: There must be a hyphen/ \"-\" in the trading pair symbol")
        market = self.markets.get(symbol)
        if market is None:
            raise ApiError(109425, f"{symbol}: symbol not exist")
        return market

    def mark(self, symbol: str) -> Decimal:
        """Mark price of ``symbol``."""
        market = self.markets[symbol]
        return market.price_dec(market.mark_ticks)

    def _position(self, symbol: str, side: str) -> Position:
        pos = self.account.positions.get((symbol, side))
        if pos is None:
            settings = self.account.settings[symbol]
            pos = Position(symbol, side, settings.margin_type == "ISOLATED", settings.leverage_for(side))
            self.account.positions[(symbol, side)] = pos
        return pos

    def _new_income(self, symbol: str, kind: str, amount: Decimal, info: str, trade_id: str = "", time_ms: int | None = None) -> None:
        now = self.now_ms() if time_ms is None else time_ms
        tran = f"{self.ids.next(now)}"
        self.account.add_income(Income(symbol, kind, amount, info, now, tran, trade_id or tran))

    # ---- margin -------------------------------------------------------------------------------
    def cross_unrealized(self) -> Decimal:
        """Unrealized PnL of all cross positions."""
        return sum((p.unrealized(self.mark(p.symbol)) for p in self.account.open_positions() if not p.isolated), ZERO)

    def unrealized_total(self) -> Decimal:
        """Unrealized PnL of all positions."""
        return sum((p.unrealized(self.mark(p.symbol)) for p in self.account.open_positions()), ZERO)

    def used_margin(self) -> Decimal:
        """Margin tied up by positions."""
        return sum((p.initial_margin() for p in self.account.open_positions()), ZERO)

    def _opening_qty(self, order: Order, qty: Decimal) -> Decimal:
        if order.closing:
            return ZERO
        if self.account.hedge_mode:
            return qty
        pos = self.account.position(order.symbol, "BOTH")
        amount = pos.amount if pos else ZERO
        if amount and (amount > 0) != (order.side == "BUY"):
            return max(qty - abs(amount), ZERO)
        return qty

    def _opening_margin(self, order: Order, qty: Decimal, price: Decimal) -> Decimal:
        """Initial margin the opening part of ``qty`` at ``price`` needs."""
        opening = self._opening_qty(order, qty)
        return q8(opening * price / Decimal(order.leverage)) if opening else ZERO

    def frozen_margin(self) -> Decimal:
        """Margin reserved by resting opening limit orders."""
        return sum(
            (self._opening_margin(o, o.remaining, o.price) for book in self.open_orders.values() for o in book.values() if o.resting_limit),
            ZERO,
        )

    def available_margin(self) -> Decimal:
        """What new positions may use: wallet + cross uPnL - used - frozen (not below 0)."""
        value = self.account.wallet + self.cross_unrealized() - self.used_margin() - self.frozen_margin()
        return max(value, ZERO)

    # ---- placing ------------------------------------------------------------------------------
    def _parse_tpsl(self, name: str, text: str | None, default_type: str, allowed: frozenset[str]) -> TpSl | None:
        if text is None or text.strip() == "":
            return None
        try:
            value = json.loads(text)
        except ValueError:
            raise ApiError(80014, f"{name}: Syntax error at index 1: invalid char") from None
        if not isinstance(value, dict):
            kind = "number" if isinstance(value, (int, float)) else type(value).__name__
            raise ApiError(80014, f"Mismatch type apiproto.TriggerClose with value {kind}")
        if not value:
            return None
        tp_type = str(value.get("type") or default_type)
        if tp_type not in allowed:
            raise ApiError(109400, f"{name}.type must be one of {sorted(allowed)}")
        stop = parse_decimal(f"{name}.stopPrice", None if value.get("stopPrice") is None else str(value.get("stopPrice")), required=True)
        price = parse_decimal(f"{name}.price", None if value.get("price") is None else str(value.get("price"))) or ZERO
        if stop is None or stop <= 0:
            raise ApiError(80014, f"{name}.stopPrice must be positive")
        if tp_type in PRICED_TYPES and price <= 0:
            raise ApiError(80014, f"{name}.price is required for {tp_type}")
        working = str(value.get("workingType") or "MARK_PRICE")
        if working not in WORKING_TYPES:
            raise ApiError(109400, f"{name}.workingType must be MARK_PRICE or CONTRACT_PRICE")
        qty_raw = value.get("quantity")
        qty = parse_decimal(f"{name}.quantity", None if qty_raw in (None, "") else str(qty_raw))
        guaranteed = str(value.get("stopGuaranteed", "")).lower()
        return TpSl(tp_type, stop, price, working, qty if qty and qty > 0 else None, guaranteed, text)

    def _trigger_price(self, market: Market, working_type: str) -> Decimal:
        return market.price_dec(market.mark_ticks if working_type == "MARK_PRICE" else market.last_ticks)

    def _check_stop_side(self, closes_long: bool, kind: str, stop: Decimal, ref: Decimal) -> None:
        """Reject an SL/TP on the wrong side of the current price (110411-110414)."""
        if kind in STOP_FAMILY:
            if closes_long and stop >= ref:
                raise ApiError(110411)
            if not closes_long and stop <= ref:
                raise ApiError(110412)
        elif kind in TP_FAMILY:
            if closes_long and stop <= ref:
                raise ApiError(110413)
            if not closes_long and stop >= ref:
                raise ApiError(110414)

    def _read_kind(self, p: dict[str, str]) -> tuple[str, str, str, bool, bool, str, str]:
        """side, type, positionSide, reduceOnly, closePosition, timeInForce, workingType."""
        hedge = self.account.hedge_mode
        side = p.get("side", "")
        if side not in ("BUY", "SELL"):
            raise ApiError(109400, "side must be BUY or SELL")
        order_type = p.get("type", "")
        if order_type in UNSUPPORTED_TYPES:
            raise ApiError(109400, f"order type {order_type} is not supported by the simulator")
        if order_type not in ORDER_TYPES:
            raise ApiError(109400, "type is invalid")
        position_side = p.get("positionSide", "") or ("LONG" if hedge else "BOTH")  # docs: LONG if empty
        if hedge and position_side not in ("LONG", "SHORT"):
            raise ApiError(109400, "In the Hedge mode, the 'PositionSide' field can only be set to LONG or SHORT")
        if not hedge and position_side != "BOTH":
            raise ApiError(109400, "In the One-way mode, the 'PositionSide' field can only be set to BOTH")
        reduce_only = parse_bool(p.get("reduceOnly"))
        if hedge and reduce_only:
            raise ApiError(109400, "In the Hedge mode, the 'ReduceOnly' field can not be filled")
        close_position = parse_bool(p.get("closePosition"))
        if close_position and order_type not in ("STOP_MARKET", "TAKE_PROFIT_MARKET"):
            raise ApiError(109400, "closePosition is only allowed on STOP_MARKET and TAKE_PROFIT_MARKET orders")
        tif = p.get("timeInForce") or "GTC"
        if tif not in TIME_IN_FORCE:
            raise ApiError(109400, "timeInForce must be GTC, IOC, FOK or PostOnly")
        working_type = p.get("workingType") or "MARK_PRICE"
        if working_type not in WORKING_TYPES:
            raise ApiError(109400, "workingType must be MARK_PRICE or CONTRACT_PRICE")
        return side, order_type, position_side, reduce_only, close_position, tif, working_type

    def _read_client_id(self, p: dict[str, str]) -> str:
        """The client order id, lower-cased; 1-40 characters and never used before."""
        client_id = (p.get("clientOrderId") or p.get("clientOrderID") or p.get("newClientOrderId") or "").strip().lower()
        if len(client_id) > 40:
            raise ApiError(109400, "clientOrderId must be 1-40 characters")
        if client_id and client_id in self.client_ids:
            code = self.config.duplicate_client_id_code
            raise ApiError(code, "clientOrderID unique check failed" if code == 101400 else None)
        return client_id

    @staticmethod
    def _read_prices(p: dict[str, str], market: Market, order_type: str) -> tuple[Decimal, int, Decimal]:
        """price, its tick count and stopPrice, truncated to the tick like the real server does."""
        price = parse_decimal("price", p.get("price")) or ZERO
        stop_price = parse_decimal("stopPrice", p.get("stopPrice")) or ZERO
        if price < 0 or stop_price < 0:
            raise ApiError(109400, "price must not be negative")
        if order_type in PRICED_TYPES and price <= 0:
            raise ApiError(80014, "parameter price is must")
        if order_type in CONDITIONAL_TYPES and stop_price <= 0:
            raise ApiError(80014, "parameter stopPrice is must")
        price_ticks = market.floor_ticks(price) if price > 0 else 0
        if price_ticks == 0 and order_type in PRICED_TYPES:
            raise ApiError(101211, f"Order price should be higher than {market.tick}")
        if stop_price > 0:
            stop_price = market.price_dec(market.floor_ticks(stop_price))
        return (market.price_dec(price_ticks) if price_ticks else ZERO), price_ticks, stop_price

    @staticmethod
    def _read_quantity(p: dict[str, str], market: Market, ref_price: Decimal, *, closing: bool, close_position: bool) -> Decimal:
        """quantity (or quoteOrderQty / reference price), truncated to the step; minimums checked."""
        qty = parse_decimal("quantity", p.get("quantity"))
        if qty is None:
            quote_qty = parse_decimal("quoteOrderQty", p.get("quoteOrderQty"))
            if quote_qty is not None and quote_qty > 0:
                qty = quote_qty / ref_price
        if qty is None:
            if not close_position:
                raise ApiError(80014, "parameter quantity is must")
            return ZERO  # a closePosition order takes its size when it fires
        if qty < 0:
            raise ApiError(109400, "quantity must be positive")
        qty = market.trunc_qty(qty)
        if close_position:
            return qty
        if qty < market.min_qty or qty <= 0:
            raise ApiError(101400, f"The minimum order amount is {market.min_qty} {market.base_asset}")
        if not closing and qty * ref_price < market.min_notional:
            raise ApiError(
                101400,
                f"Please ensure that the minimum nominal value of the order placed must be greater than {market.min_notional}u",
            )
        return qty

    def _check_closing(self, market: Market, side: str, order_type: str, position_side: str, stop_price: Decimal, working_type: str) -> None:
        """A close-only order needs a position to reduce, and an SL/TP on the right side of the price."""
        pos = self.account.position(market.symbol, position_side)
        if pos is None or pos.amount == 0:
            raise ApiError(101205)
        if not self.account.hedge_mode and (pos.amount > 0) == (side == "BUY"):
            raise ApiError(101290)
        if order_type in STOP_FAMILY or order_type in TP_FAMILY:
            closes_long = (position_side == "LONG") if self.account.hedge_mode else (side == "SELL")
            self._check_stop_side(closes_long, order_type, stop_price, self._trigger_price(market, working_type))

    def _pending_close_qty(self, symbol: str, side: str, position_side: str, family: frozenset[str], size: Decimal) -> Decimal:
        """Quantity of the working close-only orders of ``family`` on one position side (attached SL/TP included once
        they exist, i.e. once their entry filled); a ``closePosition`` order stands for the whole position."""
        return sum(
            (size if o.close_position else o.remaining for o in self.open_orders[symbol].values()
             if o.closing and o.type in family and o.position_side == position_side and o.side == side),
            ZERO,
        )

    def _check_pending_cap(self, symbol: str, side: str, order_type: str, position_side: str, qty: Decimal,
                           close_position: bool) -> None:
        """Refuse a closing STOP*/TAKE_PROFIT* order that would take the pending quantity of its family on the position
        above the position size (``EngineConfig.cap_pending_stops``; TRIGGER_* entry orders are never capped).

        The code for this refusal is not documented: the protocol's codes for a duplicate position stop loss / take
        profit (110406 / 110407) are used, as the closest documented answer.
        """
        if order_type in STOP_FAMILY:
            family, code = STOP_FAMILY, 110406
        elif order_type in TP_FAMILY:
            family, code = TP_FAMILY, 110407
        else:
            return
        pos = self.account.position(symbol, position_side)
        size = pos.size if pos else ZERO
        wanted = size if close_position else qty
        if self._pending_close_qty(symbol, side, position_side, family, size) + wanted > size:
            raise ApiError(code)

    def _read_attached(self, p: dict[str, str], market: Market, side: str, position_side: str, order_type: str, price: Decimal) -> tuple[TpSl | None, TpSl | None]:
        """Attached stopLoss/takeProfit of an opening order, checked against the entry's direction."""
        stop_loss = self._parse_tpsl("stopLoss", p.get("stopLoss"), "STOP_MARKET", STOP_FAMILY)
        take_profit = self._parse_tpsl("takeProfit", p.get("takeProfit"), "TAKE_PROFIT_MARKET", TP_FAMILY)
        entry_long = (position_side == "LONG") if self.account.hedge_mode else (side == "BUY")
        for spec in (stop_loss, take_profit):
            if spec is not None:
                spec.stop_price = market.price_dec(market.floor_ticks(spec.stop_price))
                ref = price if order_type == "LIMIT" else self._trigger_price(market, spec.working_type)
                self._check_stop_side(entry_long, spec.type, spec.stop_price, ref)
        return stop_loss, take_profit

    def place(self, p: dict[str, str], *, test: bool = False) -> Order:
        """Validate and place an order from request parameters (``POST /trade/order``).

        Nothing is stored when validation fails; ``test=True`` validates only (``/order/test``).
        """
        market = self.market(p.get("symbol"))
        side, order_type, position_side, reduce_only, close_position, tif, working_type = self._read_kind(p)
        client_id = self._read_client_id(p)
        if order_type in CONDITIONAL_TYPES and self.config.conditional_ignores_client_id:
            client_id = ""
        price, price_ticks, stop_price = self._read_prices(p, market, order_type)
        closing = close_position or reduce_only or (
            self.account.hedge_mode and (side == "SELL") == (position_side == "LONG")
        )
        exec_ref = market.price_dec(market.taker_ticks(side))
        ref_price = price if order_type in PRICED_TYPES else (stop_price if order_type in CONDITIONAL_TYPES else exec_ref)
        qty = self._read_quantity(p, market, ref_price, closing=closing, close_position=close_position)
        if closing:
            self._check_closing(market, side, order_type, position_side, stop_price, working_type)
            if self.config.cap_pending_stops:
                self._check_pending_cap(market.symbol, side, order_type, position_side, qty, close_position)
            stop_loss = take_profit = None  # attached SL/TP only ride on opening orders
        else:
            stop_loss, take_profit = self._read_attached(p, market, side, position_side, order_type, price)
        if order_type == "LIMIT" and tif == "PostOnly" and _marketable(market, side, price_ticks):
            raise ApiError(101215)

        leverage = self.account.settings[market.symbol].leverage_for(position_side)
        now = self.now_ms()
        order = Order(
            order_id=self.ids.next(now), symbol=market.symbol, side=side, position_side=position_side, type=order_type,
            qty=qty, price=price, stop_price=stop_price, working_type=working_type, time_in_force=tif,
            client_order_id=client_id, reduce_only=reduce_only, close_position=close_position, closing=closing,
            leverage=leverage, time_ms=now, update_time_ms=now, price_ticks=price_ticks,
            status="PENDING" if order_type == "LIMIT" else "NEW", stop_loss=stop_loss, take_profit=take_profit,
        )
        if order_type in ("TRIGGER_MARKET", "TRIGGER_LIMIT"):
            order.trigger_above = stop_price > self._trigger_price(market, working_type)
        # Conditional orders are checked for margin when they fire, not now.
        if order_type in ("MARKET", "LIMIT"):
            if self._opening_margin(order, qty, exec_ref if order_type == "MARKET" else price) > self.available_margin():
                raise ApiError(101204)
        if test:
            return order

        self.orders[order.order_id] = order
        if client_id:
            self.client_ids[client_id] = order.order_id
        self.open_orders[market.symbol][order.order_id] = order
        self._emit(("order", order, "NEW", None))
        if order_type == "MARKET":
            self._execute_taker(order, market, None)
            self._finish_taker(order)
        elif order_type == "LIMIT":
            self._execute_limit_entry(order, market)
        return order

    # ---- execution ----------------------------------------------------------------------------
    def _closable(self, order: Order) -> Decimal:
        """How much a close-only order may still execute."""
        pos = self.account.position(order.symbol, order.position_side)
        size = pos.size if pos else ZERO
        if order.close_position:
            return size
        return min(order.remaining, size)

    def _execute_taker(self, order: Order, market: Market, limit_ticks: int | None) -> None:
        qty = self._closable(order) if order.closing else order.remaining
        if qty <= 0:
            return
        fills, _ = market.walk_book(order.side, qty, limit_ticks)
        for ticks, fill_qty in fills:
            self._fill(order, market, market.price_dec(ticks), fill_qty, maker=False)

    def _finish_taker(self, order: Order) -> None:
        """A market-type execution is over: whatever could not execute is done with."""
        # Only a close-only order clamped to a smaller position can get here (a market order
        # never runs out of book): its unexecuted remainder expires, IOC-style.
        if order.is_open:
            self._set_status(order, "EXPIRED", "EXPIRED")

    def _execute_limit_entry(self, order: Order, market: Market) -> None:
        marketable = _marketable(market, order.side, order.price_ticks)
        if order.time_in_force == "FOK":
            available = self._closable(order) if order.closing else order.remaining
            _, left = market.walk_book(order.side, available, order.price_ticks)
            if not marketable or left > 0 or available < order.remaining:
                self._set_status(order, "EXPIRED", "EXPIRED")
                return
        if marketable:
            self._execute_taker(order, market, order.price_ticks)
        if order.is_open and order.time_in_force in ("IOC", "FOK"):
            self._set_status(order, "EXPIRED", "EXPIRED")

    def _set_status(self, order: Order, status: str, exec_type: str, *, emit: bool = True) -> None:
        order.status = status
        order.update_time_ms = self.now_ms()
        if status not in OPEN_STATUSES:
            self.open_orders[order.symbol].pop(order.order_id, None)
        if emit:
            self._emit(("order", order, exec_type, None))

    @staticmethod
    def _split(order: Order, pos: Position, qty: Decimal) -> tuple[Decimal, Decimal]:
        """(closing, opening) parts of a fill of ``qty`` against ``pos``."""
        if order.position_side == "BOTH":
            opposite = pos.amount != 0 and (pos.amount > 0) != (order.side == "BUY")
            close_qty = min(qty, pos.size) if opposite else ZERO
            return close_qty, (ZERO if order.closing else qty - close_qty)
        if order.closing:
            return min(qty, pos.size), ZERO
        return ZERO, qty

    @staticmethod
    def _reduce(pos: Position, qty: Decimal, price: Decimal) -> Decimal:
        """Close ``qty`` of ``pos`` at ``price``; returns the realized PnL (exact on a full close)."""
        size_before = pos.size
        full = qty == size_before
        removed_cost = pos.cost if full else q8(pos.cost * qty / size_before)
        exit_value = price * qty
        realized = exit_value - removed_cost if pos.direction > 0 else removed_cost - exit_value
        pos.cost -= removed_cost
        if pos.isolated:
            pos.margin -= pos.margin if full else q8(pos.margin * qty / size_before)
        if pos.side == "BOTH":
            pos.amount += qty if pos.amount < 0 else -qty
        else:
            pos.amount -= qty
        return realized

    def _grow(self, pos: Position, side: str, qty: Decimal, price: Decimal, now: int) -> None:
        """Open or add ``qty`` at ``price``; a position opening from flat takes the current settings."""
        if pos.amount == 0:
            settings = self.account.settings[pos.symbol]
            pos.position_id = self.ids.next(now)
            pos.open_time = now
            pos.realised = ZERO
            pos.leverage = settings.leverage_for(pos.side)
            pos.isolated = settings.margin_type == "ISOLATED"
            pos.margin = ZERO
            pos.cost = ZERO
        pos.cost += price * qty
        if pos.side == "BOTH":
            pos.amount += qty if side == "BUY" else -qty
        else:
            pos.amount += qty
        if pos.isolated:
            pos.margin += q8(price * qty / Decimal(pos.leverage))

    def _fill(self, order: Order, market: Market, price: Decimal, qty: Decimal, *, maker: bool, liquidation: bool = False) -> Fill:
        """Execute ``qty`` of ``order`` at ``price``: position, wallet, order state, events."""
        pos = self._position(order.symbol, order.position_side)
        now = self.now_ms()
        if order.closing:
            qty = min(qty, pos.size)
        quote = price * qty
        fee = q8(quote * (self.config.maker_fee if maker else self.config.taker_fee))
        close_qty, open_qty = self._split(order, pos, qty)
        realized = self._reduce(pos, close_qty, price) if close_qty > 0 else ZERO
        if open_qty > 0:
            self._grow(pos, order.side, open_qty, price, now)
        pos.update_time = now
        trade_id = self.ids.next(now)
        if close_qty > 0:
            self._new_income(order.symbol, "REALIZED_PNL", realized, "Realized PNL", str(trade_id))
        self._new_income(order.symbol, "TRADING_FEE", -fee, "Trading fee", str(trade_id))
        pos.realised += realized - fee
        order.position_id = pos.position_id
        order.executed += qty
        order.cum_quote += quote
        order.commission -= fee
        order.profit += realized
        order.last_fill_qty = qty
        order.last_fill_price = price
        order.update_time_ms = now
        order.status = "FILLED" if order.executed >= order.qty and order.qty > 0 else "PARTIALLY_FILLED"
        if order.status == "FILLED":
            self.open_orders[order.symbol].pop(order.order_id, None)
        fill = Fill(
            trade_id, order.order_id, order.client_order_id, order.symbol, order.side, order.position_side, order.type,
            price, qty, quote, -fee, realized, maker, now, liquidation,
        )
        self.fills.append(fill)
        self._emit(("order", order, "CALCULATED" if liquidation else "TRADE", fill))
        self._emit(("account", "ORDER", realized - fee, [pos]))
        if not order.children_created and (order.stop_loss or order.take_profit):
            self._create_children(order, market)
        # A market-type execution settles its own final status (_finish_taker); limits are swept.
        executing = order if order.type in MARKET_EXEC_TYPES or order.type == "LIQUIDATION" else None
        self._cancel_stale_close_orders(order.symbol, executing=executing)
        return fill

    def _create_children(self, parent: Order, market: Market) -> None:
        parent.children_created = True
        now = self.now_ms()
        for spec in (parent.stop_loss, parent.take_profit):
            if spec is None:
                continue
            child = Order(
                order_id=self.ids.next(now),
                symbol=parent.symbol,
                side="SELL" if parent.side == "BUY" else "BUY",
                position_side=parent.position_side,
                type=spec.type,
                qty=market.trunc_qty(spec.quantity) if spec.quantity else parent.qty,
                price=market.price_dec(market.floor_ticks(spec.price)) if spec.price > 0 else ZERO,
                stop_price=spec.stop_price,
                working_type=spec.working_type,
                time_in_force="GTC",
                client_order_id="",
                reduce_only=not self.account.hedge_mode,
                close_position=False,
                closing=True,
                leverage=parent.leverage,
                time_ms=now,
                update_time_ms=now,
                parent_id=parent.order_id,
            )
            child.price_ticks = market.floor_ticks(child.price) if child.price > 0 else 0
            child.position_id = parent.position_id
            self.orders[child.order_id] = child
            self.open_orders[child.symbol][child.order_id] = child
            self._emit(("order", child, "NEW", None))

    def _cancel_stale_close_orders(self, symbol: str, executing: Order | None = None) -> None:
        """Close-only orders die with their position (or when it flips, in one-way mode).

        The order being executed is left alone: its caller settles its final status.
        """
        for order in list(self.open_orders[symbol].values()):
            if not order.closing or order is executing:
                continue
            pos = self.account.position(symbol, order.position_side)
            if pos is None or pos.amount == 0:
                self._set_status(order, "CANCELLED", "CANCELED")
            elif order.position_side == "BOTH" and (pos.amount > 0) == (order.side == "BUY"):
                self._set_status(order, "CANCELLED", "CANCELED")

    # ---- market events ------------------------------------------------------------------------
    def has_activity(self, symbol: str) -> bool:
        """Whether a price move in ``symbol`` can affect anything (orders or positions)."""
        if self.open_orders[symbol]:
            return True
        return any(p.amount != 0 and p.symbol == symbol for p in self.account.positions.values())

    def on_trade(self, market: Market, ticks: int, qty: float) -> None:
        """React to one replayed trade: triggers, resting limit fills, liquidation."""
        book = self.open_orders[market.symbol]
        if book:
            self._run_triggers(market)
            if qty > 0 and book:
                self._match_resting(market, ticks, qty)
        self._check_liquidation(market)

    def _triggered(self, order: Order, price: Decimal) -> bool:
        stop = order.stop_price
        if order.type in STOP_FAMILY:
            return price >= stop if order.side == "BUY" else price <= stop
        if order.type in TP_FAMILY:
            return price <= stop if order.side == "BUY" else price >= stop
        return price >= stop if order.trigger_above else price <= stop

    def _run_triggers(self, market: Market) -> None:
        mark = market.price_dec(market.mark_ticks)
        last = market.price_dec(market.last_ticks)
        for order in list(self.open_orders[market.symbol].values()):
            if not order.is_open or not order.waiting_trigger:
                continue
            price = mark if order.working_type == "MARK_PRICE" else last
            if self._triggered(order, price):
                self._trigger(order, market)

    def _trigger(self, order: Order, market: Market) -> None:
        order.triggered = True
        order.update_time_ms = self.now_ms()
        if order.closing:
            closable = self._closable(order)
            if closable <= 0:
                self._set_status(order, "EXPIRED", "EXPIRED")
                return
            if order.close_position:
                order.qty = closable  # closePosition orders take their size when they fire
        if not order.closing:
            ref = order.price if order.type in PRICED_TYPES else market.price_dec(market.taker_ticks(order.side))
            if self._opening_margin(order, order.remaining, ref) > self.available_margin():
                log.info("triggered order %s cancelled: insufficient margin", order.order_id, extra={"symbol": order.symbol})
                self._set_status(order, "CANCELLED", "CANCELED")
                return
        if order.type in MARKET_EXEC_TYPES:
            self._execute_taker(order, market, None)
            self._finish_taker(order)
        else:
            order.status = "PENDING"
            if _marketable(market, order.side, order.price_ticks):
                self._execute_taker(order, market, order.price_ticks)

    def _match_resting(self, market: Market, ticks: int, qty: float) -> None:
        volume = market.trunc_qty(Decimal(repr(qty)))
        if volume <= 0:
            return
        resting = [o for o in self.open_orders[market.symbol].values() if o.resting_limit]
        if not resting:
            return
        buys = sorted((o for o in resting if o.side == "BUY" and o.price_ticks >= ticks), key=lambda o: (-o.price_ticks, o.order_id))
        sells = sorted((o for o in resting if o.side == "SELL" and o.price_ticks <= ticks), key=lambda o: (o.price_ticks, o.order_id))
        for side_orders in (buys, sells):
            left = volume
            for order in side_orders:
                if left <= 0:
                    break
                if not order.is_open:
                    continue
                want = self._closable(order) if order.closing else order.remaining
                take = min(want, left)
                if take <= 0:
                    continue
                self._fill(order, market, order.price, take, maker=True)
                left -= take

    # ---- liquidation --------------------------------------------------------------------------
    def liquidation_price(self, pos: Position) -> Decimal:
        """Mark price at which ``pos`` would be liquidated (0 when it cannot be)."""
        size = pos.size
        if not size:
            return ZERO
        market = self.markets[pos.symbol]
        mmr = market.mmr
        if pos.isolated:
            margin = pos.margin
        else:
            others = [p for p in self.account.open_positions() if not p.isolated and p is not pos]
            margin = (
                self.account.wallet
                - self.account.isolated_margin_total()
                + sum((p.unrealized(self.mark(p.symbol)) for p in others), ZERO)
                - sum((self.mark(p.symbol) * p.size * self.markets[p.symbol].mmr for p in others), ZERO)
            )
        if pos.direction > 0:
            price = (pos.cost - margin) / (size * (1 - mmr))
        else:
            price = (pos.cost + margin) / (size * (1 + mmr))
        return max(price, ZERO)

    def _check_liquidation(self, market: Market) -> None:
        mark = market.price_dec(market.mark_ticks)
        touched_cross = False
        for pos in self.account.open_positions(market.symbol):
            if pos.isolated:
                if pos.margin + pos.unrealized(mark) <= mark * pos.size * market.mmr:
                    self._liquidate([pos], isolated=True)
            else:
                touched_cross = True
        if touched_cross:
            cross = [p for p in self.account.open_positions() if not p.isolated]
            equity = self.account.wallet - self.account.isolated_margin_total() + self.cross_unrealized()
            maintenance = sum((self.mark(p.symbol) * p.size * self.markets[p.symbol].mmr for p in cross), ZERO)
            if equity <= maintenance:
                self._liquidate(cross, isolated=False)

    def _liquidate(self, positions: list[Position], *, isolated: bool) -> None:
        for pos in positions:
            market = self.markets[pos.symbol]
            margin_before = pos.margin
            now = self.now_ms()
            order = Order(
                order_id=self.ids.next(now), symbol=pos.symbol, side="SELL" if pos.direction > 0 else "BUY",
                position_side=pos.side, type="LIQUIDATION", qty=pos.size, price=ZERO, stop_price=ZERO,
                working_type="MARK_PRICE", time_in_force="IOC", client_order_id="", reduce_only=True,
                close_position=True, closing=True, leverage=pos.leverage, time_ms=now, update_time_ms=now,
            )
            self.orders[order.order_id] = order
            log.warning("liquidating %s %s position of %s", pos.symbol, pos.side, pos.size, extra={"symbol": pos.symbol})
            fill = self._fill(order, market, market.price_dec(market.mark_ticks), pos.size, maker=False, liquidation=True)
            if isolated:
                # The position's whole margin is lost; what is left over goes to the insurance fund.
                residual = margin_before + fill.realized_pnl + fill.commission
                if residual != 0:
                    self._new_income(pos.symbol, "INSURANCE_CLEAR", -residual, "Liquidation clearance")
        if not isolated:
            free = self.account.wallet - self.account.isolated_margin_total()
            if free < 0:
                self._new_income(positions[0].symbol if positions else "", "INSURANCE_CLEAR", -free, "Insurance fund cover")
        self._emit(("account", "ORDER", ZERO, positions))

    # ---- funding ------------------------------------------------------------------------------
    def apply_funding(self, t_ms: int) -> None:
        """Settle funding at ``t_ms`` for every open position (positive rate: longs pay shorts)."""
        affected: list[Position] = []
        change = ZERO
        for market in self.markets.values():
            market.funding_history.append((t_ms, market.funding_rate))
        for pos in self.account.open_positions():
            market = self.markets[pos.symbol]
            payment = q8(self.mark(pos.symbol) * pos.size * market.funding_rate)
            amount = -payment if pos.direction > 0 else payment
            if amount == 0:
                continue
            self._new_income(pos.symbol, "FUNDING_FEE", amount, "Funding Fee", time_ms=t_ms)
            pos.realised += amount
            if pos.isolated:
                pos.margin += amount
            change += amount
            affected.append(pos)
        if affected:
            self._emit(("account", "FUNDING_FEE", change, [p for p in affected if p.isolated]))

    # ---- queries and management ---------------------------------------------------------------
    def find_order(self, symbol: str | None, order_id: str | None, client_id: str | None) -> Order:
        """An order by id or client id (80016 when unknown)."""
        order: Order | None = None
        if order_id:
            try:
                order = self.orders.get(int(order_id))
            except ValueError:
                raise ApiError(109400, "orderId must be an integer") from None
        elif client_id:
            oid = self.client_ids.get(client_id.strip().lower())
            order = self.orders.get(oid) if oid is not None else None
        else:
            raise ApiError(109400, "orderId or clientOrderId is required")
        if order is None or (symbol and order.symbol != symbol):
            raise ApiError(80016)
        return order

    def cancel(self, symbol: str | None, order_id: str | None, client_id: str | None) -> Order:
        """Cancel an open order."""
        if symbol:
            self.market(symbol)
        order = self.find_order(symbol, order_id, client_id)
        if not order.is_open:
            raise ApiError(80018 if order.status == "FILLED" else 80016)
        self._set_status(order, "CANCELLED", "CANCELED")
        return order

    def cancel_all(self, symbol: str | None, order_type: str | None = None) -> list[Order]:
        """Cancel every open order (of a symbol / of a type)."""
        symbols = [self.market(symbol).symbol] if symbol else list(self.open_orders)
        cancelled: list[Order] = []
        for sym in symbols:
            for order in list(self.open_orders[sym].values()):
                if order_type and order.type != order_type:
                    continue
                self._set_status(order, "CANCELLED", "CANCELED")
                cancelled.append(order)
        return cancelled

    def list_open(self, symbol: str | None, order_type: str | None = None) -> list[Order]:
        """Open orders, oldest first."""
        symbols = [self.market(symbol).symbol] if symbol else list(self.open_orders)
        out = [o for s in symbols for o in self.open_orders[s].values() if not order_type or o.type == order_type]
        return sorted(out, key=lambda o: o.order_id)

    def set_leverage(self, symbol: str, side: str, leverage: int) -> SymbolSettings:
        """Change a symbol's leverage for LONG, SHORT or (one-way) BOTH."""
        market = self.market(symbol)
        if self.account.hedge_mode and side not in ("LONG", "SHORT"):
            raise ApiError(109400, "In the Hedge mode, side can only be LONG or SHORT")
        if not self.account.hedge_mode and side not in ("BOTH", "LONG", "SHORT"):
            raise ApiError(109400, "side must be BOTH in the One-way mode")
        if leverage < 1:
            raise ApiError(109400, "leverage must be at least 1")
        if leverage > market.max_leverage:
            raise ApiError(101414, f"The leverage exceeds the maximum leverage of {market.max_leverage}")
        settings = self.account.settings[symbol]
        if side in ("LONG", "BOTH") or not self.account.hedge_mode:
            settings.long_leverage = leverage
        if side in ("SHORT", "BOTH") or not self.account.hedge_mode:
            settings.short_leverage = leverage
        for pos in self.account.positions.values():
            if pos.symbol == symbol and (pos.side == side or side == "BOTH" or not self.account.hedge_mode):
                pos.leverage = settings.leverage_for(pos.side)
        self._emit(("config", symbol))
        return settings

    def _symbol_busy(self, symbol: str) -> bool:
        return bool(self.open_orders[symbol]) or bool(self.account.open_positions(symbol))

    def set_margin_type(self, symbol: str, margin_type: str) -> None:
        """Switch a symbol between CROSSED and ISOLATED (only while flat with no orders)."""
        self.market(symbol)
        if margin_type not in ("ISOLATED", "CROSSED", "SEPARATE_ISOLATED"):
            raise ApiError(109400, "marginType must be ISOLATED, CROSSED or SEPARATE_ISOLATED")
        wanted = "ISOLATED" if margin_type == "SEPARATE_ISOLATED" else margin_type
        settings = self.account.settings[symbol]
        if settings.margin_type == wanted:
            return
        if self._symbol_busy(symbol):
            raise ApiError(109400, "the account has positions or pending orders")
        settings.margin_type = wanted
        self._emit(("config", symbol))

    def set_position_mode(self, hedge: bool) -> None:
        """Switch hedge/one-way mode (only with no positions or open orders at all)."""
        if hedge == self.account.hedge_mode:
            return
        if any(self._symbol_busy(s) for s in self.markets):
            raise ApiError(109401)
        self.account.hedge_mode = hedge

    def close_position(self, pos: Position) -> Order:
        """Market-close a whole position."""
        params = {
            "symbol": pos.symbol,
            "side": "SELL" if pos.direction > 0 else "BUY",
            "type": "MARKET",
            "quantity": str(pos.size),
            "positionSide": pos.side,
        }
        if pos.side == "BOTH":
            params["reduceOnly"] = "true"
        return self.place(params)

    def close_all_positions(self, symbol: str | None) -> list[Order]:
        """Market-close every position (of a symbol)."""
        if symbol:
            self.market(symbol)
        return [self.close_position(p) for p in list(self.account.open_positions(symbol))]

    def position_by_id(self, position_id: str) -> Position:
        """An open position by id (80017 when none)."""
        for pos in self.account.open_positions():
            if str(pos.position_id) == str(position_id).strip():
                return pos
        raise ApiError(80017)

    def adjust_isolated_margin(self, symbol: str, amount: Decimal, kind: int, position_side: str | None) -> Position:
        """Add (kind 1) or remove (kind 2) isolated margin."""
        self.market(symbol)
        candidates = [p for p in self.account.open_positions(symbol) if p.isolated and (not position_side or p.side == position_side)]
        if not candidates:
            raise ApiError(80017)
        pos = candidates[0]
        if amount <= 0:
            raise ApiError(109400, "amount must be positive")
        if kind == 1:
            if amount > self.available_margin():
                raise ApiError(101204)
            pos.margin += amount
        elif kind == 2:
            mark = self.mark(symbol)
            new_margin = pos.margin - amount
            keep = mark * pos.size * self.markets[symbol].mmr * 2
            if new_margin + pos.unrealized(mark) <= keep or new_margin <= 0:
                raise ApiError(101204, "the margin to reduce exceeds the maximum removable margin")
            pos.margin = new_margin
        else:
            raise ApiError(109400, "type must be 1 (add) or 2 (reduce)")
        self._emit(("account", "ORDER", ZERO, [pos]))
        return pos

    def state_positions(self) -> Iterable[Position]:
        """All non-flat positions."""
        return self.account.open_positions()
