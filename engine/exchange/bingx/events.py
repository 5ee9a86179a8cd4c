"""Typed WebSocket events (market and account streams) and their parsers.

Parsers raise :class:`~.models.MalformedPayloadError` on a frame they cannot read; the
streams log and skip such frames. Unknown but well-formed frames give no event.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Union

from engine.fast_init import fast_frozen_init

from .models import (
    Level,
    MalformedPayloadError,
    OrderStatus,
    _leverage,
    _list,
    _mapping,
    _str,
    parse_levels,
    req_decimal,
    req_int,
    to_bool,
    to_decimal,
    to_id,
    to_int,
    zero_decimal,
)

# --- market events ---------------------------------------------------------------------------


@fast_frozen_init
@dataclass(frozen=True, slots=True)
class KlineEvent:
    """The latest (possibly still forming) candle. BingX sends no 'closed' flag: a bar is final
    when an event with a later ``open_time_ms`` arrives for the same symbol and interval."""

    symbol: str
    interval: str
    open_time_ms: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal


@fast_frozen_init
@dataclass(frozen=True, slots=True)
class TradeEvent:
    """One public trade. ``buyer_is_maker`` true means the taker sold."""

    symbol: str
    time_ms: int
    price: Decimal
    qty: Decimal
    buyer_is_maker: bool


@dataclass(frozen=True, slots=True)
class DepthEvent:
    """A full depth snapshot (bids highest-first, asks lowest-first)."""

    symbol: str
    levels: int
    time_ms: int | None
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]


@dataclass(frozen=True, slots=True)
class TickerEvent:
    """24h ticker push. Note BingX's letters: ``B``/``b`` = bid price/qty here."""

    symbol: str
    event_time_ms: int | None
    last_price: Decimal
    open_price: Decimal | None
    high_price: Decimal | None
    low_price: Decimal | None
    volume: Decimal | None
    quote_volume: Decimal | None
    price_change: Decimal | None
    price_change_percent: Decimal | None
    bid_price: Decimal | None
    bid_qty: Decimal | None
    ask_price: Decimal | None
    ask_qty: Decimal | None


@dataclass(frozen=True, slots=True)
class MarkPriceEvent:
    """Mark price push."""

    symbol: str
    event_time_ms: int | None
    mark_price: Decimal


@dataclass(frozen=True, slots=True)
class LastPriceEvent:
    """Last traded price push."""

    symbol: str
    event_time_ms: int | None
    price: Decimal


@dataclass(frozen=True, slots=True)
class BookTickerEvent:
    """Best bid/ask push. Note BingX's letters are the reverse of ``@ticker``: ``b``/``B`` = bid price/qty."""

    symbol: str
    event_time_ms: int | None
    bid_price: Decimal
    bid_qty: Decimal
    ask_price: Decimal
    ask_qty: Decimal


@dataclass(frozen=True, slots=True)
class SubscriptionError:
    """BingX refused a subscription (80015 unknown topic, 80403 over 200 topics...)."""

    topic: str
    code: int | None
    message: str


@dataclass(frozen=True, slots=True)
class StreamReconnected:
    """A connection came back after a drop. Consumers should backfill (REST klines, order state)."""

    stream: str
    shard: int
    topics: tuple[str, ...]
    attempt: int
    downtime_s: float


MarketEvent = Union[
    KlineEvent, TradeEvent, DepthEvent, TickerEvent, MarkPriceEvent, LastPriceEvent, BookTickerEvent,
    SubscriptionError, StreamReconnected,
]


def split_topic(topic: str) -> tuple[str, str]:
    """``BTC-USDT@kline_1m`` -> ``("BTC-USDT", "kline_1m")``."""
    symbol, sep, channel = topic.partition("@")
    if not sep or not symbol or not channel:
        raise MalformedPayloadError(f"dataType: {topic!r} is not SYMBOL@channel")
    return symbol, channel


# --- kline and trade parsing (the hot path: BingX pushes these several times a second per symbol) ---
#
# ``_fast_*`` handle the shape BingX actually sends (a dict with int times and numeric strings) with
# as few calls as possible and return ``None`` for anything else; the general ``_*_event`` parsers then
# decide, with their field-naming errors. Both give identical events wherever the fast path answers
# (tests/test_bingx_events_fastpath.py checks this on hostile input).

_ABSENT = object()


# Market times past 2**53 ms (the year 287,000) are nonsense, and a JSON float cannot even hold them exactly:
# two decoders could turn the same text into different times. Refused, on the fast path and the checked one.
MAX_TIME_MS = 2**53


def _time_ms(value: Any, name: str) -> int:
    """A market event's ms timestamp: present, whole, and within ``0 .. MAX_TIME_MS``."""
    time_ms = req_int(value, name)
    if not 0 <= time_ms < MAX_TIME_MS:
        raise MalformedPayloadError(f"{name}: {value!r} is not a plausible time in ms")
    return time_ms


_ZERO = Decimal(0)


def _trade_price(value: Decimal, name: str) -> Decimal:
    """A trade price must be above zero: a zero or negative print would fill paper stops and value positions at it."""
    if value <= _ZERO:
        raise MalformedPayloadError(f"{name}: {value} is not a positive price")
    return value


def _trade_qty(value: Decimal, name: str) -> Decimal:
    if value < _ZERO:
        raise MalformedPayloadError(f"{name}: {value} is a negative quantity")
    return value


def _finite(text: Any) -> Decimal | None:
    """``Decimal`` of a numeric string if it is a finite number, else ``None`` (the caller falls back)."""
    if text.__class__ is not str:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def _fast_kline(symbol: str, interval: str, row: Any) -> KlineEvent | None:
    if row.__class__ is not dict:
        return None
    t = row.get("T", _ABSENT)
    if t is _ABSENT:
        t = row.get("t")
    if t.__class__ is not int or not 0 <= t < MAX_TIME_MS:
        return None
    o = _finite(row.get("o"))
    h = _finite(row.get("h"))
    lo = _finite(row.get("l"))
    c = _finite(row.get("c"))
    v = _finite(row.get("v"))
    if o is None or h is None or lo is None or c is None or v is None:
        return None
    return KlineEvent(symbol, interval, t, o, h, lo, c, v)


def _kline_event(symbol: str, interval: str, topic: str, row: Any) -> KlineEvent:
    r = _mapping(row, f"{topic}.data[]")
    return KlineEvent(
        symbol=symbol,
        interval=interval,
        open_time_ms=_time_ms(r.get("T", r.get("t")), f"{topic}.T"),
        open=req_decimal(r.get("o"), f"{topic}.o"),
        high=req_decimal(r.get("h"), f"{topic}.h"),
        low=req_decimal(r.get("l"), f"{topic}.l"),
        close=req_decimal(r.get("c"), f"{topic}.c"),
        volume=zero_decimal(r.get("v"), f"{topic}.v"),
    )


def _fast_trade(symbol: str, row: Any) -> TradeEvent | None:
    if row.__class__ is not dict:
        return None
    s = row.get("s")
    if s.__class__ is str:
        if s:
            symbol = s
    elif s is not None:
        return None
    t = row.get("T")
    m = row.get("m", False)
    if t.__class__ is not int or not 0 <= t < MAX_TIME_MS or m.__class__ is not bool:
        return None
    p = _finite(row.get("p"))
    q = _finite(row.get("q"))
    if p is None or q is None or p <= _ZERO or q < _ZERO:  # the general parser names what is wrong
        return None
    return TradeEvent(symbol, t, p, q, m)


def _trade_event(symbol: str, topic: str, row: Any) -> TradeEvent:
    r = _mapping(row, f"{topic}.data[]")
    return TradeEvent(
        symbol=_str(r.get("s")) or symbol,
        time_ms=_time_ms(r.get("T"), f"{topic}.T"),
        price=_trade_price(req_decimal(r.get("p"), f"{topic}.p"), f"{topic}.p"),
        qty=_trade_qty(req_decimal(r.get("q"), f"{topic}.q"), f"{topic}.q"),
        buyer_is_maker=bool(to_bool(r.get("m"), default=False)),
    )


def parse_market_push(msg: Mapping[str, Any]) -> list[MarketEvent]:
    """Turn one push frame ``{"dataType": topic, "data": ...}`` into events (may be several)."""
    topic = _str(msg.get("dataType"))
    symbol, channel = split_topic(topic)
    data = msg.get("data")
    if channel == "trade":
        rows = data if isinstance(data, list) else [data]
        return [_fast_trade(symbol, row) or _trade_event(symbol, topic, row) for row in rows]
    if channel.startswith("kline_"):
        interval = channel[6:]  # after "kline_"
        rows = data if isinstance(data, list) else [data]
        return [_fast_kline(symbol, interval, row) or _kline_event(symbol, interval, topic, row) for row in rows]
    if channel.startswith("depth"):
        d = _mapping(data, f"{topic}.data")
        level_text = channel[len("depth"):].split("@", 1)[0]
        return [DepthEvent(
            symbol=symbol,
            levels=to_int(level_text, f"{topic}.levels", default=0) or 0,
            time_ms=to_int(msg.get("ts", d.get("T")), f"{topic}.ts"),
            bids=parse_levels(d.get("bids"), f"{topic}.bids", descending=True),
            asks=parse_levels(d.get("asks"), f"{topic}.asks", descending=False),
        )]
    if channel == "ticker":
        d = _mapping(data, f"{topic}.data")
        return [TickerEvent(
            symbol=_str(d.get("s")) or symbol,
            event_time_ms=to_int(d.get("E"), f"{topic}.E"),
            last_price=req_decimal(d.get("c"), f"{topic}.c"),
            open_price=to_decimal(d.get("o"), f"{topic}.o"),
            high_price=to_decimal(d.get("h"), f"{topic}.h"),
            low_price=to_decimal(d.get("l"), f"{topic}.l"),
            volume=to_decimal(d.get("v"), f"{topic}.v"),
            quote_volume=to_decimal(d.get("q"), f"{topic}.q"),
            price_change=to_decimal(d.get("p"), f"{topic}.p"),
            price_change_percent=to_decimal(d.get("P"), f"{topic}.P"),
            bid_price=to_decimal(d.get("B"), f"{topic}.B"),
            bid_qty=to_decimal(d.get("b"), f"{topic}.b"),
            ask_price=to_decimal(d.get("A"), f"{topic}.A"),
            ask_qty=to_decimal(d.get("a"), f"{topic}.a"),
        )]
    if channel == "markPrice":
        d = _mapping(data, f"{topic}.data")
        return [MarkPriceEvent(symbol=_str(d.get("s")) or symbol, event_time_ms=to_int(d.get("E"), f"{topic}.E"),
                               mark_price=req_decimal(d.get("p"), f"{topic}.p"))]
    if channel == "lastPrice":
        d = _mapping(data, f"{topic}.data")
        return [LastPriceEvent(symbol=_str(d.get("s")) or symbol, event_time_ms=to_int(d.get("E"), f"{topic}.E"),
                               price=req_decimal(d.get("c"), f"{topic}.c"))]
    if channel == "bookTicker":
        d = _mapping(data, f"{topic}.data")
        return [BookTickerEvent(
            symbol=_str(d.get("s")) or symbol,
            event_time_ms=to_int(d.get("E"), f"{topic}.E"),
            bid_price=req_decimal(d.get("b"), f"{topic}.b"),
            bid_qty=req_decimal(d.get("B"), f"{topic}.B"),
            ask_price=req_decimal(d.get("a"), f"{topic}.a"),
            ask_qty=req_decimal(d.get("A"), f"{topic}.A"),
        )]
    return []  # a channel we do not model (e.g. incrDepth): not an error


# --- account events --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BalanceChange:
    """One asset in an ACCOUNT_UPDATE."""

    asset: str
    wallet_balance: Decimal
    cross_wallet_balance: Decimal | None
    balance_change: Decimal


@dataclass(frozen=True, slots=True)
class PositionChange:
    """One position in an ACCOUNT_UPDATE."""

    symbol: str
    position_side: str
    position_amt: Decimal
    entry_price: Decimal
    unrealized_pnl: Decimal
    margin_type: str
    isolated_margin: Decimal


@dataclass(frozen=True, slots=True)
class AccountUpdate:
    """Balance and/or position change; ``reason`` is DEPOSIT, WITHDRAW, ORDER, FUNDING_FEE..."""

    event_time_ms: int | None
    transaction_time_ms: int | None
    reason: str
    balances: tuple[BalanceChange, ...]
    positions: tuple[PositionChange, ...]


@dataclass(frozen=True, slots=True)
class OrderUpdate:
    """An order changed (new, fill, cancel, expiry). From ORDER_TRADE_UPDATE or TRADE_UPDATE."""

    event_time_ms: int | None
    transaction_time_ms: int | None
    symbol: str
    client_order_id: str
    order_id: str
    side: str
    type: str
    orig_qty: Decimal
    price: Decimal
    stop_price: Decimal
    avg_price: Decimal
    execution_type: str
    status: OrderStatus
    fee_asset: str
    fee: Decimal
    trade_time_ms: int | None
    working_type: str
    position_side: str
    realized_pnl: Decimal
    cumulative_filled_qty: Decimal
    last_filled_qty: Decimal | None
    last_filled_price: Decimal | None
    reduce_only: bool | None
    raw_status: str


@dataclass(frozen=True, slots=True)
class AccountConfigUpdate:
    """Leverage / margin-mode configuration for a symbol (pushed on connect, every 5 s and on change)."""

    event_time_ms: int | None
    symbol: str
    long_leverage: int | None
    short_leverage: int | None
    margin_mode: str


@dataclass(frozen=True, slots=True)
class ListenKeyExpired:
    """BingX said the listen key expired; the stream recreates it and reconnects."""

    event_time_ms: int | None
    listen_key_hint: str


AccountEvent = Union[AccountUpdate, OrderUpdate, AccountConfigUpdate, ListenKeyExpired, StreamReconnected]


def parse_account_event(msg: Mapping[str, Any]) -> AccountEvent | None:
    """Parse one account-stream frame; ``None`` for frames that are not account events."""
    kind = _str(msg.get("e"))
    event_time = to_int(msg.get("E"), "E")
    if kind == "ACCOUNT_UPDATE":
        a = _mapping(msg.get("a"), "ACCOUNT_UPDATE.a")
        balances = tuple(
            BalanceChange(
                asset=_str(b.get("a")),
                wallet_balance=zero_decimal(b.get("wb"), "B.wb"),
                cross_wallet_balance=to_decimal(b.get("cw"), "B.cw"),
                balance_change=zero_decimal(b.get("bc"), "B.bc"),
            )
            for b in (_mapping(x, "B[]") for x in _list(a.get("B"), "ACCOUNT_UPDATE.a.B"))
        )
        positions = tuple(
            PositionChange(
                symbol=_str(p.get("s")),
                position_side=_str(p.get("ps")).upper(),
                position_amt=zero_decimal(p.get("pa"), "P.pa"),
                entry_price=zero_decimal(p.get("ep"), "P.ep"),
                unrealized_pnl=zero_decimal(p.get("up"), "P.up"),
                margin_type=_str(p.get("mt")),
                isolated_margin=zero_decimal(p.get("iw"), "P.iw"),
            )
            for p in (_mapping(x, "P[]") for x in _list(a.get("P"), "ACCOUNT_UPDATE.a.P"))
        )
        return AccountUpdate(event_time, to_int(msg.get("T"), "T"), _str(a.get("m")), balances, positions)
    if kind in ("ORDER_TRADE_UPDATE", "TRADE_UPDATE"):
        o = _mapping(msg.get("o"), f"{kind}.o")
        raw_status = _str(o.get("X"))
        return OrderUpdate(
            event_time_ms=event_time,
            transaction_time_ms=to_int(msg.get("T"), "T"),
            symbol=_str(o.get("s")),
            client_order_id=_str(o.get("c")).lower(),
            order_id=to_id(o.get("i")),
            side=_str(o.get("S")).upper(),
            type=_str(o.get("o")).upper(),
            orig_qty=zero_decimal(o.get("q"), "o.q"),
            price=zero_decimal(o.get("p"), "o.p"),
            stop_price=zero_decimal(o.get("sp"), "o.sp"),
            avg_price=zero_decimal(o.get("ap"), "o.ap"),
            execution_type=_str(o.get("x")).upper(),
            status=OrderStatus.parse(raw_status),
            fee_asset=_str(o.get("N")),
            fee=zero_decimal(o.get("n"), "o.n"),
            trade_time_ms=to_int(o.get("T"), "o.T"),
            working_type=_str(o.get("wt")),
            position_side=_str(o.get("ps")).upper(),
            realized_pnl=zero_decimal(o.get("rp"), "o.rp"),
            cumulative_filled_qty=zero_decimal(o.get("z"), "o.z"),
            last_filled_qty=to_decimal(o.get("l"), "o.l"),
            last_filled_price=to_decimal(o.get("L"), "o.L"),
            reduce_only=to_bool(o.get("ro")),
            raw_status=raw_status,
        )
    if kind == "ACCOUNT_CONFIG_UPDATE":
        ac = _mapping(msg.get("ac"), "ACCOUNT_CONFIG_UPDATE.ac")
        return AccountConfigUpdate(
            event_time_ms=event_time,
            symbol=_str(ac.get("s")),
            long_leverage=_leverage(ac.get("l"), "ac.l"),
            short_leverage=_leverage(ac.get("S"), "ac.S"),
            margin_mode=_str(ac.get("mt")),
        )
    if kind == "listenKeyExpired":
        key = _str(msg.get("listenKey"))
        return ListenKeyExpired(event_time_ms=event_time, listen_key_hint=key[:6] + "…" if key else "")
    return None
