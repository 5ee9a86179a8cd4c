"""The feed hot path's shortcuts give exactly what the general code gives.

Covers the zlib frame decoder (multi-member gzip, truncation, trailing junk), the prebuilt JSON
decoder, the market stream's orjson decoder, the kline/trade fast parsers against the general
field-naming parsers on hostile rows, and the feed's lock-free clock skip when a backfill is in flight.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.exchange.bingx import events as ev
from engine.exchange.bingx.events import KlineEvent, TradeEvent, parse_market_push
from engine.exchange.bingx.models import MalformedPayloadError, loads, loads_market
from engine.exchange.bingx.wsconn import MalformedFrameError, decode_frame
from engine.market.candle import ONE_MINUTE_MS, Candle
from engine.market.events import KlineUpdate, TradeTick
from engine.market.feed import MarketFeed

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- frame decoding ------------------------------------------------------------------------------


def test_decode_frame_single_and_multi_member_gzip() -> None:
    assert decode_frame(gzip.compress(b'{"a":"1.5"}')) == '{"a":"1.5"}'
    assert decode_frame(gzip.compress(b"Ping")) == "Ping"
    # two gzip members concatenate, as gzip.decompress always did
    assert decode_frame(gzip.compress(b"ab") + gzip.compress(b"cd")) == "abcd"
    assert decode_frame(b"plain text") == "plain text"


@pytest.mark.parametrize("bad", [
    gzip.compress(b'{"a":1}')[:-6],            # truncated inside the trailer
    gzip.compress(b'{"a":1}' * 50)[:20],        # truncated inside the deflate data
    gzip.compress(b'{"a":1}') + b"junk!",       # trailing bytes that are not a gzip member
    b"\x1f\x8b\x08\x00garbage",                 # gzip magic, broken body
    gzip.compress("é".encode("latin-1")),       # inflates, but not UTF-8
])
def test_decode_frame_rejects_broken_gzip_with_malformed_frame_error(bad: bytes) -> None:
    with pytest.raises(MalformedFrameError, match="undecodable frame"):
        decode_frame(bad)


# --- market JSON -----------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["", "{", '{"a":1,}', "nul", '{"a":"1"} x', "\ufeff{}"])
def test_loads_rejects_invalid_json_with_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        loads(text)


def test_loads_reuses_one_decoder_and_still_accepts_bytes() -> None:
    assert loads(' {"p": 0.10, "i": 123456789012345678901234567890} ') == {"p": Decimal("0.10"), "i": 123456789012345678901234567890}
    assert str(loads('{"p": 0.10}')["p"]) == "0.10"  # exact text, exponent included
    assert loads(b'{"p": 0.10}') == {"p": Decimal("0.10")}
    assert loads('{"p": 0.10}'.encode("utf-16")) == {"p": Decimal("0.10")}


# --- the market stream's decoder (orjson) ---------------------------------------------------------
# Within what BingX can send (numbers as strings, JSON numbers as their shortest text, integers within
# 64 bits, no NaN/Infinity literal), both decoders give the same events, or both refuse the push.

_market_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8),
    st.sampled_from(["", "NaN", "inf", "1e309", "0.5100", "-0", "1E+3", "BTC-USDT"]),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
)
_market_number = st.one_of(st.floats(min_value=-1e12, max_value=1e12), st.integers(-(2**40), 2**40),
                           st.decimals(allow_nan=False, allow_infinity=False, places=6).map(str))
_good_market_rows = st.fixed_dictionaries(  # parse as a kline or a trade: the numbers must come out the same
    {"T": st.integers(0, 2**45), "o": _market_number, "h": _market_number, "l": _market_number, "c": _market_number,
     "v": _market_number, "p": _market_number, "q": _market_number, "m": st.booleans()})
_hostile_market_rows = st.dictionaries(st.sampled_from(["T", "t", "o", "h", "l", "c", "v", "s", "p", "q", "m", "x"]),
                                       _market_scalars, max_size=9)
_market_rows = st.one_of(_good_market_rows, _hostile_market_rows,
                         st.builds(lambda g, h: {**g, **h}, _good_market_rows, _hostile_market_rows))
_market_pushes = st.fixed_dictionaries(
    {"dataType": st.sampled_from(["BTC-USDT@kline_1m", "BTC-USDT@trade", "BTC-USDT@kline_5m", "nosymbol", "BTC-USDT@"]),
     "data": st.one_of(_market_rows, st.lists(_market_rows, max_size=3), _market_scalars)},
    optional={"code": _market_scalars, "s": _market_scalars})


def _events_of(decode: Any, text: str) -> tuple[str, str]:
    try:
        return "events", repr(parse_market_push(decode(text)))
    except MalformedPayloadError as exc:
        return "malformed", str(exc)


@FAST
@given(_market_pushes)
def test_the_market_decoder_gives_the_events_of_the_exact_decoder(push: dict[str, Any]) -> None:
    text = json.dumps(push)  # JSON numbers as Python writes them: the shortest text of each float
    exact, market = _events_of(loads, text), _events_of(loads_market, text)
    if exact[0] == "malformed":  # refused by both; the message may name float where the exact decoder has Decimal
        assert market[0] == "malformed"
    else:
        assert market == exact


@pytest.mark.parametrize("time_text", ["6.613734883153406e+16", "9007199254740992", "-1", "-60000.0"])
@pytest.mark.parametrize("channel", ["kline_1m", "trade"])
def test_an_impossible_market_time_is_refused_by_both_decoders(time_text: str, channel: str) -> None:
    # past 2**53 ms a JSON float cannot hold the time exactly (the two decoders read 6.6e16 differently)
    row = f'{{"T": {time_text}, "o": "1", "h": "1", "l": "1", "c": "1", "v": "1", "p": "1", "q": "1", "m": false}}'
    text = f'{{"dataType": "BTC-USDT@{channel}", "data": [{row}]}}'
    for decode in (loads, loads_market):
        with pytest.raises(MalformedPayloadError, match="not a plausible time"):
            parse_market_push(decode(text))


def test_the_market_decoder_refuses_what_is_not_json_with_value_error() -> None:
    for text in ('{"c": NaN}', '{"c": Infinity}', "{not json", '{"c": "1"} trailing'):
        with pytest.raises(ValueError):
            loads_market(text)
    # a real kline push keeps its exact decimals: prices arrive as strings
    push = '{"code":0,"dataType":"XRP-USDT@kline_1m","data":[{"c":"0.51230","o":"0.5100","h":"0.52","l":"0.5","v":"12.30","T":1}]}'
    assert parse_market_push(loads_market(push)) == parse_market_push(loads(push))
    assert str(parse_market_push(loads_market(push))[0].close) == "0.51230"


# --- kline / trade fast parsers --------------------------------------------------------------------

values = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
    st.sampled_from(["", "NaN", "inf", "-Infinity", "sNaN", "1e309", "  7 ", "0.5100", "1_000", "-0", "1E+3",
                     "\u0661\u0662", "12.", ".5", "BTC-USDT", "X-USDT"]),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
)
KLINE_KEYS = ["T", "t", "o", "h", "l", "c", "v", "s", "x"]
TRADE_KEYS = ["T", "p", "q", "m", "s", "t", "x"]


def _kline_rows() -> st.SearchStrategy[dict[str, Any]]:
    good = st.fixed_dictionaries({"T": st.integers(0, 2**45), "o": st.decimals(allow_nan=False, allow_infinity=False).map(str),
                                  "h": st.just("1.5"), "l": st.just("0.5"), "c": st.just("1.0"), "v": st.just("10.25")})
    hostile = st.dictionaries(st.sampled_from(KLINE_KEYS), values, max_size=8)
    return st.one_of(good, hostile, st.builds(lambda g, h: {**g, **h}, good, hostile))


def _trade_rows() -> st.SearchStrategy[dict[str, Any]]:
    good = st.fixed_dictionaries({"T": st.integers(0, 2**45), "p": st.just("0.5123"), "q": st.just("3"),
                                  "m": st.booleans(), "s": st.sampled_from(["", "BTC-USDT", "ETH-USDT"])})
    hostile = st.dictionaries(st.sampled_from(TRADE_KEYS), values, max_size=7)
    return st.one_of(good, hostile, st.builds(lambda g, h: {**g, **h}, good, hostile))


def _general(parse: Any, *args: Any) -> Any:
    try:
        return parse(*args)
    except MalformedPayloadError as exc:
        return exc


@FAST
@given(_kline_rows())
def test_fast_kline_equals_the_general_parser(row: dict[str, Any]) -> None:
    fast = ev._fast_kline("BTC-USDT", "1m", row)
    general = _general(ev._kline_event, "BTC-USDT", "1m", "BTC-USDT@kline_1m", row)
    if fast is not None:  # when the fast path answers, it answers exactly like the general one
        assert repr(fast) == repr(general)
    events_or_error = _general(parse_market_push, {"dataType": "BTC-USDT@kline_1m", "data": [row]})
    if isinstance(general, MalformedPayloadError):
        assert isinstance(events_or_error, MalformedPayloadError) and str(events_or_error) == str(general)
    else:
        assert repr(events_or_error) == repr([general])


@FAST
@given(_trade_rows())
def test_fast_trade_equals_the_general_parser(row: dict[str, Any]) -> None:
    fast = ev._fast_trade("BTC-USDT", row)
    general = _general(ev._trade_event, "BTC-USDT", "BTC-USDT@trade", row)
    if fast is not None:
        assert repr(fast) == repr(general)
    events_or_error = _general(parse_market_push, {"dataType": "BTC-USDT@trade", "data": row})
    if isinstance(general, MalformedPayloadError):
        assert isinstance(events_or_error, MalformedPayloadError) and str(events_or_error) == str(general)
    else:
        assert repr(events_or_error) == repr([general])


def test_real_shapes_take_the_fast_path_and_keep_exact_decimals() -> None:
    kline = {"c": "0.51230", "o": "0.5100", "h": "0.52", "l": "0.5", "v": "12345.6789", "T": 1_700_000_040_000}
    assert ev._fast_kline("XRP-USDT", "1m", kline) == KlineEvent(
        "XRP-USDT", "1m", 1_700_000_040_000, Decimal("0.5100"), Decimal("0.52"), Decimal("0.5"), Decimal("0.51230"),
        Decimal("12345.6789"))
    trade = {"q": "3.0", "p": "0.5123", "T": 1_700_000_041_234, "m": True, "s": "XRP-USDT"}
    assert ev._fast_trade("XRP-USDT", trade) == TradeEvent("XRP-USDT", 1_700_000_041_234, Decimal("0.5123"), Decimal("3.0"), True)
    # the whole pipeline a live frame goes through
    frame = gzip.compress(json.dumps({"code": 0, "dataType": "XRP-USDT@trade", "data": [trade]}).encode())
    assert parse_market_push(loads(decode_frame(frame).strip())) == [ev._fast_trade("XRP-USDT", trade)]


def test_bad_price_in_a_kline_is_still_rejected_naming_the_field() -> None:
    with pytest.raises(MalformedPayloadError, match=r"BTC-USDT@kline_1m\.h: 'NaN' is not a finite number"):
        parse_market_push({"dataType": "BTC-USDT@kline_1m", "data": [{"T": 0, "o": "1", "h": "NaN", "l": "1", "c": "1"}]})
    with pytest.raises(MalformedPayloadError, match=r"BTC-USDT@trade\.p: missing"):
        parse_market_push({"dataType": "BTC-USDT@trade", "data": [{"T": 0, "q": "1"}]})


# --- feed: trades as the kline clock skip the lock only when that cannot change anything -------------

T0 = 1_700_000_040_000 - 1_700_000_040_000 % ONE_MINUTE_MS
M = ONE_MINUTE_MS


def bar(i: int, price: float = 100.0) -> Candle:
    return Candle(T0 + i * M, price, price * 1.001, price * 0.999, price, 1.0)


class Sink:
    def __init__(self) -> None:
        self.live: list[Candle] = []

    def on_candle(self, c: Candle) -> None:
        self.live.append(c)

    def on_warmup_candle(self, c: Candle) -> None:
        raise AssertionError("no warm-up here")


class SlowSource:
    """A candle source that holds the feed's lock until released (a slow REST backfill)."""

    def __init__(self, candles: list[Candle]) -> None:
        self.candles = candles
        self.release = asyncio.Event()

    async def fetch_candles(self, symbol: str, start_ms: int, end_ms: int) -> list[Candle]:
        await self.release.wait()
        return [c for c in self.candles if start_ms <= c.open_time_ms < end_ms]


def update(c: Candle) -> KlineUpdate:
    return KlineUpdate("X", c.open_time_ms, c.open, c.high, c.low, c.close, c.volume)


async def test_trade_clock_during_a_backfill_keeps_candles_in_order() -> None:
    history = [bar(i, 100.0 + i) for i in range(7)]
    source = SlowSource(history)
    sink = Sink()
    feed = MarketFeed("X", sink, source=source, warmup_candles=0, grace_ms=1000)
    for i in (0, 1, 4):  # closes minutes 0 and 1; minute 4 forms
        await feed.on_kline(update(history[i]))
    assert sink.live == history[:2]
    # minute 5 closes minute 4, which first needs minutes 2-3 backfilled: blocked on the slow source
    backfill = asyncio.create_task(feed.on_kline(update(history[5])))
    await asyncio.sleep(0.01)
    assert feed._lock.locked() and sink.live == history[:2]
    # trades inside minute 5's window are no-ops wherever they run: answered without waiting for the lock
    await asyncio.wait_for(feed.on_trade(TradeTick("X", 105.0, 1.0, T0 + 6 * M + 999)), 0.5)
    # a trade past minute 5's end + grace must wait its turn and close minute 5 after the backfill
    clock = asyncio.create_task(feed.on_trade(TradeTick("X", 105.0, 1.0, T0 + 6 * M + 1000)))
    await asyncio.sleep(0.01)
    assert not clock.done() and sink.live == history[:2]
    source.release.set()
    await asyncio.wait_for(asyncio.gather(backfill, clock), 2)
    assert sink.live == history[:6]


async def test_trade_clock_with_nothing_forming_goes_through_the_lock() -> None:
    sink = Sink()
    feed = MarketFeed("X", sink, warmup_candles=0, grace_ms=1000)
    assert not feed.klines.clock_cannot_close(T0)  # nothing forming: a later kline could make this time close it
    await feed.on_trade(TradeTick("X", 100.0, 1.0, T0))
    await feed.on_kline(update(bar(0)))
    assert feed.klines.clock_cannot_close(T0 + M + 999) and not feed.klines.clock_cannot_close(T0 + M + 1000)
    await feed.on_trade(TradeTick("X", 100.0, 1.0, T0 + M + 1000))
    assert sink.live == [bar(0)]
