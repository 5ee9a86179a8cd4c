"""Hand-built candle sequences for the strategy and backtest tests (imported by them, not collected).

The SHORT scenario: 150 candles around an old level, a 20-candle decline from 110 to 100, 29 candles
of chop around 100 (RSI near the middle), then a bearish trigger candle. The LONG scenario: 64
five-minute buckets of an uptrend (up, up, down, ...), ``offset`` minutes into the next bucket, then
a bullish trigger candle. Both fire their strategy with the default parameters.
"""

from __future__ import annotations

from engine.market.candle import Candle

M = 60_000
FIVE = 300_000
T0 = 1_700_000_100_000 - 1_700_000_100_000 % FIVE
WICK = 0.0005


def c(i: int, o: float, close: float, volume: float = 100.0) -> Candle:
    """The i-th minute after T0, with small wicks."""
    return Candle(T0 + i * M, o, max(o, close) * (1 + WICK), min(o, close) * (1 - WICK), close, volume)


def short_candles(*, level: float = 110.0, trigger_open: float | None = None, body: float = 1.5, volume: float = 400.0) -> list[Candle]:
    """200 candles; the last is the SHORT trigger (the 20 before it all have volume 100)."""
    out: list[Candle] = []
    prev = level
    for i in range(150):
        close = level * (1 + (WICK if i % 2 else -WICK))
        out.append(c(i, prev, close))
        prev = close
    for k in range(20):
        close = 110 - 10 * (k + 1) / 20
        out.append(c(150 + k, prev, close))
        prev = close
    for k in range(29):
        close = 100 * (1 + (0.003 if k % 2 else -0.003))
        out.append(c(170 + k, prev, close))
        prev = close
    o = prev if trigger_open is None else trigger_open
    out.append(c(199, o, o * (1 - body / 100), volume))
    return out


def long_candles(
    *, buckets: int = 64, offset: int = 3, body: float = 1.5, volume: float = 400.0, context_close: float | None = None
) -> list[Candle]:
    """A LONG trigger ``offset`` minutes into the bucket after ``buckets`` complete 5m candles."""
    out: list[Candle] = []
    prev = 100.0
    i = 0
    for b in range(buckets):
        move = -0.002 if b % 3 == 2 else 0.003
        for minute in range(5):
            close = prev * (1 + move / 5)
            if context_close is not None and b == buckets - 1 and minute == 4:
                close = context_close  # the last minute sets the 5m close of the context bucket
            out.append(c(i, prev, close))
            prev = close
            i += 1
    for _ in range(offset):
        close = prev * (1 + 0.003 / 5)
        out.append(c(i, prev, close))
        prev = close
        i += 1
    out.append(c(i, prev, prev * (1 + body / 100), volume))
    return out

