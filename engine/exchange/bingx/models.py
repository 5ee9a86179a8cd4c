"""Typed BingX USDT-M records (market data, account) and tolerant parsers for the shapes seen in the wild.

Prices and quantities are ``Decimal`` (JSON is decoded with ``parse_float=Decimal`` and string
numbers are converted exactly); ids are strings (BingX sends 64-bit ids unquoted, beyond 2^53).
The parsers accept the documented variations: numbers as JSON strings or numbers, ``""`` for
empty numerics, ``clientOrderID``/``clientOrderId``, ``stopLoss``/``takeProfit`` as objects or
JSON strings, ``CANCELED``/``CANCELLED``, ``data: null`` for empty lists. A payload that cannot
be read raises :class:`MalformedPayloadError`, naming the field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

import orjson


class MalformedPayloadError(ValueError):
    """A BingX payload does not have the expected shape; the message names the field."""


# --- value coercion --------------------------------------------------------------------------


def to_decimal(value: Any, name: str = "value", *, default: Decimal | None = None) -> Decimal | None:
    """Exact ``Decimal`` from a JSON string/number; ``None`` or ``""`` give ``default``."""
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise MalformedPayloadError(f"{name}: expected a number, got a boolean")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, float):
        result = Decimal(repr(value))
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except InvalidOperation:
            raise MalformedPayloadError(f"{name}: {value!r} is not a number") from None
    else:
        raise MalformedPayloadError(f"{name}: expected a number, got {type(value).__name__}")
    if not result.is_finite():
        raise MalformedPayloadError(f"{name}: {value!r} is not a finite number")
    return result


def req_decimal(value: Any, name: str) -> Decimal:
    """Like :func:`to_decimal` but the value must be present."""
    result = to_decimal(value, name)
    if result is None:
        raise MalformedPayloadError(f"{name}: missing")
    return result


def zero_decimal(value: Any, name: str) -> Decimal:
    """Decimal where an absent or empty value means zero (fees, fills, PnL)."""
    result = to_decimal(value, name, default=Decimal(0))
    assert result is not None
    return result


def to_int(value: Any, name: str = "value", *, default: int | None = None) -> int | None:
    """Integer (ms timestamps, leverage) from int, integral Decimal or digit string."""
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise MalformedPayloadError(f"{name}: expected an integer, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"-?\d+", text):
            return int(text)
        try:
            dec = Decimal(text)
        except InvalidOperation:
            dec = None
        if dec is not None and dec.is_finite() and dec == dec.to_integral_value():
            return int(dec)
    raise MalformedPayloadError(f"{name}: {value!r} is not an integer")


def req_int(value: Any, name: str) -> int:
    """Like :func:`to_int` but the value must be present."""
    result = to_int(value, name)
    if result is None:
        raise MalformedPayloadError(f"{name}: missing")
    return result


def to_id(value: Any) -> str:
    """An id as a string. Ids of 0/""/None mean 'none' and give ``""``."""
    if value is None or value == "" or value == 0 or value == "0":
        return ""
    if isinstance(value, bool):
        raise MalformedPayloadError(f"id: unexpected boolean {value!r}")
    if isinstance(value, Decimal):
        return format(value, "f").split(".")[0]
    return str(value)


def to_bool(value: Any, *, default: bool | None = None) -> bool | None:
    """``true``/``false`` as bools or strings; ``""``/None give ``default``."""
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
    if isinstance(value, (int, Decimal)) and value in (0, 1):
        return bool(value)
    return default


def _str(value: Any) -> str:
    return "" if value is None else str(value)


def _mapping(value: Any, name: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise MalformedPayloadError(f"{name}: expected an object, got {type(value).__name__}")
    return value


def _list(value: Any, name: str) -> list[Any]:
    """A JSON array; ``null`` means empty (BingX returns null for some empty results)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise MalformedPayloadError(f"{name}: expected an array, got {type(value).__name__}")
    return value


# Built once: ``json.loads(text, parse_float=...)`` constructs a new decoder on every call, which
# costs as much as decoding a small WebSocket frame.
_DECODER = json.JSONDecoder(parse_float=Decimal)


def loads(text: str | bytes) -> Any:
    """Decode BingX JSON: floats become exact ``Decimal``; big ints stay exact ints."""
    if isinstance(text, str):
        return _DECODER.decode(text)
    return json.loads(text, parse_float=Decimal)  # bytes: json.loads detects UTF-8/16/32 first


def loads_market(text: str | bytes) -> Any:
    """Decode a public market-data push: about 3x faster than :func:`loads`, for the busiest stream.

    Market pushes carry prices and sizes as JSON strings, so nothing is rounded here: the event
    parsers turn them into ``Decimal``. A price sent as a JSON number becomes a float, which
    ``to_decimal`` reads back by its shortest repr (the same digits for up to 15 significant ones),
    and an integer beyond 64 bits becomes a float (no market field holds one). ``NaN`` and
    ``Infinity`` literals, which :func:`loads` accepts, are rejected as invalid JSON; the parsers
    refuse non-finite values anyway. Account and REST data, where ids and amounts must stay exact,
    keep :func:`loads`.
    """
    return orjson.loads(text)


# --- enums -----------------------------------------------------------------------------------


class Side(StrEnum):
    """Order side."""

    BUY = "BUY"
    SELL = "SELL"


class PositionSide(StrEnum):
    """LONG/SHORT in hedge mode, BOTH in one-way mode."""

    LONG = "LONG"
    SHORT = "SHORT"
    BOTH = "BOTH"


class OrderType(StrEnum):
    """Order types accepted by ``POST /openApi/swap/v2/trade/order``."""

    MARKET = "MARKET"
    LIMIT = "LIMIT"
    STOP_MARKET = "STOP_MARKET"
    TAKE_PROFIT_MARKET = "TAKE_PROFIT_MARKET"
    STOP = "STOP"
    TAKE_PROFIT = "TAKE_PROFIT"
    TRIGGER_LIMIT = "TRIGGER_LIMIT"
    TRIGGER_MARKET = "TRIGGER_MARKET"
    TRAILING_STOP_MARKET = "TRAILING_STOP_MARKET"
    TRAILING_TP_SL = "TRAILING_TP_SL"


class TimeInForce(StrEnum):
    """Time in force; ``PostOnly`` is BingX's exact spelling."""

    GTC = "GTC"
    IOC = "IOC"
    FOK = "FOK"
    POST_ONLY = "PostOnly"


class WorkingType(StrEnum):
    """Which price triggers a conditional order."""

    MARK_PRICE = "MARK_PRICE"
    CONTRACT_PRICE = "CONTRACT_PRICE"


class MarginType(StrEnum):
    """Per-symbol margin mode."""

    ISOLATED = "ISOLATED"
    CROSSED = "CROSSED"
    SEPARATE_ISOLATED = "SEPARATE_ISOLATED"


class OrderStatus(StrEnum):
    """Order status; REST ``CANCELLED`` and WS ``CANCELED`` both map to ``CANCELED``."""

    NEW = "NEW"
    PENDING = "PENDING"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    CANCELLED = "CANCELED"  # alias: the REST spelling
    EXPIRED = "EXPIRED"
    FAILED = "FAILED"
    RUNNING = "RUNNING"
    UNKNOWN = "UNKNOWN"

    @classmethod
    def parse(cls, value: Any) -> "OrderStatus":
        """Normalise any spelling; unseen values map to ``UNKNOWN`` rather than failing."""
        text = _str(value).strip().upper()
        if text == "CANCELLED":
            return cls.CANCELED
        try:
            return cls(text)
        except ValueError:
            return cls.UNKNOWN

    @property
    def is_open(self) -> bool:
        """Resting or partly filled: can still trade."""
        return self in (OrderStatus.NEW, OrderStatus.PENDING, OrderStatus.PARTIALLY_FILLED, OrderStatus.RUNNING)

    @property
    def is_final(self) -> bool:
        """Will not change any more."""
        return self in (OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.EXPIRED, OrderStatus.FAILED)


# --- market data -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Contract:
    """One perpetual contract's trading rules (``/openApi/swap/v2/quote/contracts``)."""

    symbol: str
    contract_id: str
    price_precision: int
    quantity_precision: int
    min_qty: Decimal
    min_notional: Decimal
    status: int
    api_open_allowed: bool
    api_close_allowed: bool
    max_long_leverage: int | None = None
    max_short_leverage: int | None = None
    maker_fee_rate: Decimal | None = None
    taker_fee_rate: Decimal | None = None
    currency: str = "USDT"
    asset: str = ""

    @property
    def tick_size(self) -> Decimal:
        """Smallest price increment: 10^-pricePrecision."""
        return Decimal(1).scaleb(-self.price_precision)

    @property
    def step_size(self) -> Decimal:
        """Smallest quantity increment: 10^-quantityPrecision."""
        return Decimal(1).scaleb(-self.quantity_precision)

    @property
    def is_online(self) -> bool:
        """Status 1 means normal trading (25 = close only, 5 = pre-online, 0 = offline)."""
        return self.status == 1


def parse_contract(obj: Any) -> Contract:
    """Parse a contract object."""
    o = _mapping(obj, "contract")
    symbol = _str(o.get("symbol"))
    if not symbol:
        raise MalformedPayloadError("contract.symbol: missing")
    return Contract(
        symbol=symbol,
        contract_id=to_id(o.get("contractId")),
        price_precision=req_int(o.get("pricePrecision"), f"{symbol}.pricePrecision"),
        quantity_precision=req_int(o.get("quantityPrecision"), f"{symbol}.quantityPrecision"),
        min_qty=zero_decimal(o.get("tradeMinQuantity"), f"{symbol}.tradeMinQuantity"),
        min_notional=zero_decimal(o.get("tradeMinUSDT"), f"{symbol}.tradeMinUSDT"),
        status=to_int(o.get("status"), f"{symbol}.status", default=1) or 0,
        api_open_allowed=bool(to_bool(o.get("apiStateOpen"), default=True)),
        api_close_allowed=bool(to_bool(o.get("apiStateClose"), default=True)),
        max_long_leverage=to_int(o.get("maxLongLeverage"), f"{symbol}.maxLongLeverage"),
        max_short_leverage=to_int(o.get("maxShortLeverage"), f"{symbol}.maxShortLeverage"),
        maker_fee_rate=to_decimal(o.get("makerFeeRate"), f"{symbol}.makerFeeRate"),
        taker_fee_rate=to_decimal(o.get("takerFeeRate", o.get("feeRate")), f"{symbol}.takerFeeRate"),
        currency=_str(o.get("currency")) or "USDT",
        asset=_str(o.get("asset")),
    )


@dataclass(frozen=True, slots=True)
class TickerPrice:
    """Latest trade price."""

    symbol: str
    price: Decimal
    time_ms: int | None


def parse_ticker_price(obj: Any) -> TickerPrice:
    """Parse ``/ticker/price`` (or legacy ``/quote/price``)."""
    o = _mapping(obj, "price")
    return TickerPrice(
        symbol=_str(o.get("symbol")),
        price=req_decimal(o.get("price"), "price.price"),
        time_ms=to_int(o.get("time"), "price.time"),
    )


@dataclass(frozen=True, slots=True)
class Ticker24h:
    """24-hour rolling statistics plus best bid/ask."""

    symbol: str
    last_price: Decimal
    open_price: Decimal | None
    high_price: Decimal | None
    low_price: Decimal | None
    volume: Decimal | None
    quote_volume: Decimal | None
    price_change: Decimal | None
    price_change_percent: Decimal | None
    last_qty: Decimal | None
    bid_price: Decimal | None
    bid_qty: Decimal | None
    ask_price: Decimal | None
    ask_qty: Decimal | None
    open_time_ms: int | None
    close_time_ms: int | None


def parse_ticker_24h(obj: Any) -> Ticker24h:
    """Parse ``/quote/ticker``; ``priceChangePercent`` may carry a trailing ``%`` (spot)."""
    o = _mapping(obj, "ticker")
    pct = o.get("priceChangePercent")
    if isinstance(pct, str):
        pct = pct.rstrip("%")
    return Ticker24h(
        symbol=_str(o.get("symbol")),
        last_price=req_decimal(o.get("lastPrice"), "ticker.lastPrice"),
        open_price=to_decimal(o.get("openPrice"), "ticker.openPrice"),
        high_price=to_decimal(o.get("highPrice"), "ticker.highPrice"),
        low_price=to_decimal(o.get("lowPrice"), "ticker.lowPrice"),
        volume=to_decimal(o.get("volume"), "ticker.volume"),
        quote_volume=to_decimal(o.get("quoteVolume"), "ticker.quoteVolume"),
        price_change=to_decimal(o.get("priceChange"), "ticker.priceChange"),
        price_change_percent=to_decimal(pct, "ticker.priceChangePercent"),
        last_qty=to_decimal(o.get("lastQty"), "ticker.lastQty"),
        bid_price=to_decimal(o.get("bidPrice"), "ticker.bidPrice"),
        bid_qty=to_decimal(o.get("bidQty"), "ticker.bidQty"),
        ask_price=to_decimal(o.get("askPrice"), "ticker.askPrice"),
        ask_qty=to_decimal(o.get("askQty"), "ticker.askQty"),
        open_time_ms=to_int(o.get("openTime"), "ticker.openTime"),
        close_time_ms=to_int(o.get("closeTime"), "ticker.closeTime"),
    )


Level = tuple[Decimal, Decimal]


def parse_levels(raw: Any, name: str, *, descending: bool) -> tuple[Level, ...]:
    """``[[price, qty], ...]`` sorted best-first (BingX sends asks highest-first)."""
    levels: list[Level] = []
    for i, item in enumerate(_list(raw, name)):
        if not isinstance(item, (list, tuple)) or len(item) < 2:
            raise MalformedPayloadError(f"{name}[{i}]: expected [price, qty]")
        levels.append((req_decimal(item[0], f"{name}[{i}].price"), req_decimal(item[1], f"{name}[{i}].qty")))
    levels.sort(key=lambda lv: lv[0], reverse=descending)
    return tuple(levels)


@dataclass(frozen=True, slots=True)
class OrderBook:
    """Depth snapshot: bids highest-first, asks lowest-first."""

    symbol: str
    time_ms: int | None
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]


def parse_order_book(obj: Any, symbol: str) -> OrderBook:
    """Parse ``/quote/depth``."""
    o = _mapping(obj, "depth")
    return OrderBook(
        symbol=symbol,
        time_ms=to_int(o.get("T", o.get("ts")), "depth.T"),
        bids=parse_levels(o.get("bids"), "depth.bids", descending=True),
        asks=parse_levels(o.get("asks"), "depth.asks", descending=False),
    )


@dataclass(frozen=True, slots=True)
class Kline:
    """One candle; ``open_time_ms`` is the candle's open time."""

    open_time_ms: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal

    def to_candle(self) -> Any:
        """The float candle record used on the strategy path (``engine.market.candle.Candle``)."""
        from engine.market.candle import Candle  # local import: keep the exchange layer standalone

        return Candle(self.open_time_ms, float(self.open), float(self.high), float(self.low),
                      float(self.close), float(self.volume))


def parse_kline(obj: Any) -> Kline:
    """Parse a v3 kline object (``open,close,high,low,volume,time``) or an array row ``[t,o,h,l,c,v,...]``."""
    if isinstance(obj, (list, tuple)):
        if len(obj) < 6:
            raise MalformedPayloadError("kline: array row shorter than 6")
        t, o, h, lo, c, v = obj[:6]
    else:
        m = _mapping(obj, "kline")
        t = m.get("time", m.get("openTime", m.get("T")))
        o, h, lo, c, v = m.get("open"), m.get("high"), m.get("low"), m.get("close"), m.get("volume")
    return Kline(
        open_time_ms=req_int(t, "kline.time"),
        open=req_decimal(o, "kline.open"),
        high=req_decimal(h, "kline.high"),
        low=req_decimal(lo, "kline.low"),
        close=req_decimal(c, "kline.close"),
        volume=zero_decimal(v, "kline.volume"),
    )


@dataclass(frozen=True, slots=True)
class PublicTrade:
    """A public trade. ``buyer_is_maker`` true means the taker sold."""

    symbol: str
    time_ms: int
    price: Decimal
    qty: Decimal
    quote_qty: Decimal | None
    buyer_is_maker: bool


def parse_public_trade(obj: Any, symbol: str) -> PublicTrade:
    """Parse one ``/quote/trades`` row."""
    o = _mapping(obj, "trade")
    return PublicTrade(
        symbol=symbol,
        time_ms=req_int(o.get("time"), "trade.time"),
        price=req_decimal(o.get("price"), "trade.price"),
        qty=req_decimal(o.get("qty"), "trade.qty"),
        quote_qty=to_decimal(o.get("quoteQty"), "trade.quoteQty"),
        buyer_is_maker=bool(to_bool(o.get("isBuyerMaker", o.get("buyerMaker")), default=False)),
    )


@dataclass(frozen=True, slots=True)
class PremiumIndex:
    """Mark/index price and funding (``/quote/premiumIndex``)."""

    symbol: str
    mark_price: Decimal
    index_price: Decimal | None
    last_funding_rate: Decimal | None
    next_funding_time_ms: int | None


def parse_premium_index(obj: Any) -> PremiumIndex:
    """Parse one premium-index object."""
    o = _mapping(obj, "premiumIndex")
    return PremiumIndex(
        symbol=_str(o.get("symbol")),
        mark_price=req_decimal(o.get("markPrice"), "premiumIndex.markPrice"),
        index_price=to_decimal(o.get("indexPrice"), "premiumIndex.indexPrice"),
        last_funding_rate=to_decimal(o.get("lastFundingRate"), "premiumIndex.lastFundingRate"),
        next_funding_time_ms=to_int(o.get("nextFundingTime"), "premiumIndex.nextFundingTime"),
    )


@dataclass(frozen=True, slots=True)
class FundingRate:
    """One historical funding rate."""

    symbol: str
    funding_rate: Decimal
    funding_time_ms: int


def parse_funding_rate(obj: Any) -> FundingRate:
    """Parse one ``/quote/fundingRate`` row."""
    o = _mapping(obj, "fundingRate")
    return FundingRate(
        symbol=_str(o.get("symbol")),
        funding_rate=req_decimal(o.get("fundingRate"), "fundingRate.fundingRate"),
        funding_time_ms=req_int(o.get("fundingTime"), "fundingRate.fundingTime"),
    )


# --- account ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Balance:
    """Perpetual-futures wallet for one asset (USDT live, VST on the demo host)."""

    asset: str
    balance: Decimal
    equity: Decimal
    unrealized_profit: Decimal
    realised_profit: Decimal
    available_margin: Decimal
    used_margin: Decimal
    freezed_margin: Decimal


def parse_balance(obj: Any) -> Balance:
    """Parse a v3 balance element (also the inner object of v2's ``{"balance": {...}}``)."""
    o = _mapping(obj, "balance")
    return Balance(
        asset=_str(o.get("asset")),
        balance=zero_decimal(o.get("balance"), "balance.balance"),
        equity=zero_decimal(o.get("equity"), "balance.equity"),
        unrealized_profit=zero_decimal(o.get("unrealizedProfit"), "balance.unrealizedProfit"),
        realised_profit=zero_decimal(o.get("realisedProfit"), "balance.realisedProfit"),
        available_margin=zero_decimal(o.get("availableMargin"), "balance.availableMargin"),
        used_margin=zero_decimal(o.get("usedMargin"), "balance.usedMargin"),
        freezed_margin=zero_decimal(o.get("freezedMargin"), "balance.freezedMargin"),
    )


def parse_balances(data: Any) -> list[Balance]:
    """v3 returns an array; v2 returns ``{"balance": {...}}``. Accept both."""
    if isinstance(data, Mapping):
        inner = data.get("balance", data)
        return [parse_balance(inner)]
    return [parse_balance(item) for item in _list(data, "balances")]


def _leverage(value: Any, name: str) -> int | None:
    """Leverage as int from ``5``, ``"5"`` or ``"5X"``."""
    if isinstance(value, str):
        value = value.strip().upper().rstrip("X")
    return to_int(value, name)


@dataclass(frozen=True, slots=True)
class Position:
    """An open position. ``position_amt`` is as BingX sends it (positive for both hedge sides)."""

    symbol: str
    position_id: str
    position_side: str
    position_amt: Decimal
    available_amt: Decimal
    avg_price: Decimal
    mark_price: Decimal | None
    unrealized_profit: Decimal
    realised_profit: Decimal
    leverage: int | None
    isolated: bool
    liquidation_price: Decimal | None
    initial_margin: Decimal | None
    position_value: Decimal | None
    update_time_ms: int | None = None

    @property
    def direction(self) -> str:
        """LONG or SHORT. For one-way (BOTH) the sign of the amount decides (UNCONFIRMED convention)."""
        if self.position_side in ("LONG", "SHORT"):
            return self.position_side
        return "SHORT" if self.position_amt < 0 else "LONG"

    @property
    def size(self) -> Decimal:
        """Absolute position size in coins."""
        return abs(self.position_amt)


def parse_position(obj: Any) -> Position:
    """Parse one ``/user/positions`` element."""
    o = _mapping(obj, "position")
    sym = _str(o.get("symbol"))
    return Position(
        symbol=sym,
        position_id=to_id(o.get("positionId")),
        position_side=_str(o.get("positionSide")).upper() or "BOTH",
        position_amt=zero_decimal(o.get("positionAmt"), f"{sym}.positionAmt"),
        available_amt=zero_decimal(o.get("availableAmt"), f"{sym}.availableAmt"),
        avg_price=zero_decimal(o.get("avgPrice"), f"{sym}.avgPrice"),
        mark_price=to_decimal(o.get("markPrice"), f"{sym}.markPrice"),
        unrealized_profit=zero_decimal(o.get("unrealizedProfit"), f"{sym}.unrealizedProfit"),
        realised_profit=zero_decimal(o.get("realisedProfit"), f"{sym}.realisedProfit"),
        leverage=_leverage(o.get("leverage"), f"{sym}.leverage"),
        isolated=bool(to_bool(o.get("isolated"), default=False)),
        liquidation_price=to_decimal(o.get("liquidationPrice"), f"{sym}.liquidationPrice"),
        initial_margin=to_decimal(o.get("initialMargin", o.get("margin")), f"{sym}.initialMargin"),
        position_value=to_decimal(o.get("positionValue"), f"{sym}.positionValue"),
        update_time_ms=to_int(o.get("updateTime"), f"{sym}.updateTime"),
    )


@dataclass(frozen=True, slots=True)
class Income:
    """One income record (funding fee, realised PnL, trading fee, ...)."""

    symbol: str
    income_type: str
    income: Decimal
    asset: str
    info: str
    time_ms: int
    tran_id: str
    trade_id: str


def parse_income(obj: Any) -> Income:
    """Parse one ``/user/income`` row."""
    o = _mapping(obj, "income")
    return Income(
        symbol=_str(o.get("symbol")),
        income_type=_str(o.get("incomeType")),
        income=req_decimal(o.get("income"), "income.income"),
        asset=_str(o.get("asset")),
        info=_str(o.get("info")),
        time_ms=req_int(o.get("time"), "income.time"),
        tran_id=to_id(o.get("tranId")),
        trade_id=to_id(o.get("tradeId")),
    )


@dataclass(frozen=True, slots=True)
class CommissionRate:
    """Account fee rates (fractions: 0.0005 = 0.05 %)."""

    taker: Decimal
    maker: Decimal


def parse_commission_rate(data: Any) -> CommissionRate:
    """Parse ``{"commission": {...}}`` (or the inner object)."""
    o = _mapping(data, "commissionRate")
    inner = _mapping(o.get("commission", o), "commission")
    return CommissionRate(
        taker=req_decimal(inner.get("takerCommissionRate"), "commission.takerCommissionRate"),
        maker=req_decimal(inner.get("makerCommissionRate"), "commission.makerCommissionRate"),
    )


@dataclass(frozen=True, slots=True)
class Leverage:
    """Per-symbol leverage for each side and the maximum allowed."""

    symbol: str
    long_leverage: int | None
    short_leverage: int | None
    max_long_leverage: int | None = None
    max_short_leverage: int | None = None


def parse_leverage(data: Any, symbol: str) -> Leverage:
    """Parse GET ``/trade/leverage`` or the POST reply (``{"leverage": 8, "symbol": ...}``)."""
    o = _mapping(data, "leverage")
    single = _leverage(o.get("leverage"), "leverage.leverage")
    return Leverage(
        symbol=_str(o.get("symbol")) or symbol,
        long_leverage=_leverage(o.get("longLeverage"), "leverage.longLeverage") if "longLeverage" in o else single,
        short_leverage=_leverage(o.get("shortLeverage"), "leverage.shortLeverage") if "shortLeverage" in o else single,
        max_long_leverage=_leverage(o.get("maxLongLeverage"), "leverage.maxLongLeverage"),
        max_short_leverage=_leverage(o.get("maxShortLeverage"), "leverage.maxShortLeverage"),
    )


def parse_margin_type(data: Any) -> MarginType:
    """Parse ``{"marginType": "CROSSED"}``; ``CROSS``/``ISOLATED`` spellings accepted."""
    o = _mapping(data, "marginType")
    text = _str(o.get("marginType")).upper()
    if text == "CROSS":
        text = "CROSSED"
    try:
        return MarginType(text)
    except ValueError:
        raise MalformedPayloadError(f"marginType: unknown value {text!r}") from None


def parse_position_mode(data: Any) -> bool:
    """``{"dualSidePosition": "true"}`` -> True (hedge mode); False means one-way."""
    o = _mapping(data, "positionMode")
    value = to_bool(o.get("dualSidePosition"))
    if value is None:
        raise MalformedPayloadError("dualSidePosition: missing or not a boolean")
    return value


@dataclass(frozen=True, slots=True)
class Fill:
    """One of the account's own fills (``/trade/allFillOrders``)."""

    symbol: str
    order_id: str
    client_order_id: str
    price: Decimal
    volume: Decimal
    amount: Decimal | None
    commission: Decimal
    currency: str
    filled_time: str


def parse_fill(obj: Any) -> Fill:
    """Parse one ``fill_orders`` element (times are ISO strings there)."""
    o = _mapping(obj, "fill")
    return Fill(
        symbol=_str(o.get("symbol")),
        order_id=to_id(o.get("orderId")),
        client_order_id=_str(o.get("clientOrderID", o.get("clientOrderId"))),
        price=req_decimal(o.get("price"), "fill.price"),
        volume=req_decimal(o.get("volume"), "fill.volume"),
        amount=to_decimal(o.get("amount"), "fill.amount"),
        commission=zero_decimal(o.get("commission"), "fill.commission"),
        currency=_str(o.get("currency")),
        filled_time=_str(o.get("filledTime", o.get("filledTm"))),
    )


@dataclass(frozen=True, slots=True)
class PositionHistoryEntry:
    """A closed (or partly closed) position from ``/trade/positionHistory``."""

    symbol: str
    position_id: str
    position_side: str
    open_time_ms: int | None
    update_time_ms: int | None
    avg_price: Decimal
    avg_close_price: Decimal | None
    realised_profit: Decimal
    net_profit: Decimal | None
    position_amt: Decimal
    close_position_amt: Decimal
    leverage: int | None
    commission: Decimal
    total_funding: Decimal


def parse_position_history(obj: Any) -> PositionHistoryEntry:
    """Parse one ``positionHistory`` element."""
    o = _mapping(obj, "positionHistory")
    return PositionHistoryEntry(
        symbol=_str(o.get("symbol")),
        position_id=to_id(o.get("positionId")),
        position_side=_str(o.get("positionSide")),
        open_time_ms=to_int(o.get("openTime"), "positionHistory.openTime"),
        update_time_ms=to_int(o.get("updateTime"), "positionHistory.updateTime"),
        avg_price=zero_decimal(o.get("avgPrice"), "positionHistory.avgPrice"),
        avg_close_price=to_decimal(o.get("avgClosePrice"), "positionHistory.avgClosePrice"),
        realised_profit=zero_decimal(o.get("realisedProfit"), "positionHistory.realisedProfit"),
        net_profit=to_decimal(o.get("netProfit"), "positionHistory.netProfit"),
        position_amt=zero_decimal(o.get("positionAmt"), "positionHistory.positionAmt"),
        close_position_amt=zero_decimal(o.get("closePositionAmt"), "positionHistory.closePositionAmt"),
        leverage=_leverage(o.get("leverage"), "positionHistory.leverage"),
        commission=zero_decimal(o.get("positionCommission"), "positionHistory.positionCommission"),
        total_funding=zero_decimal(o.get("totalFunding"), "positionHistory.totalFunding"),
    )


@dataclass(frozen=True, slots=True)
class MaintMarginTier:
    """One leverage/maintenance-margin tier (``/openApi/swap/v1/maintMarginRatio``)."""

    symbol: str
    tier: str
    min_position_value: Decimal
    max_position_value: Decimal
    maint_margin_ratio: Decimal
    maint_amount: Decimal


def parse_maint_margin_tier(obj: Any) -> MaintMarginTier:
    """Parse one tier row."""
    o = _mapping(obj, "tier")
    return MaintMarginTier(
        symbol=_str(o.get("symbol")),
        tier=_str(o.get("tier")),
        min_position_value=zero_decimal(o.get("minPositionVal"), "tier.minPositionVal"),
        max_position_value=zero_decimal(o.get("maxPositionVal"), "tier.maxPositionVal"),
        maint_margin_ratio=req_decimal(o.get("maintMarginRatio"), "tier.maintMarginRatio"),
        maint_amount=zero_decimal(o.get("maintAmount"), "tier.maintAmount"),
    )


def parse_many(parser: Any, data: Any, name: str) -> list[Any]:
    """Apply ``parser`` to each element of an array (``null`` = empty)."""
    return [parser(item) for item in _list(data, name)]


def parse_one_or_many(parser: Any, data: Any, name: str) -> list[Any]:
    """Endpoints that return an object for one symbol and an array for all."""
    if isinstance(data, Mapping):
        return [parser(data)]
    return parse_many(parser, data, name)

