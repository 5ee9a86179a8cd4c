"""Replayed markets: contract specs, the price state the replay moves, a synthetic book and klines.

Prices live as integer ticks (exact, cheap) and become ``Decimal`` only at the order
boundary; volumes are floats, like the candle files. The order book is synthetic: a
ladder of ``depth_levels`` levels each side starting at the last trade price (best bid)
and one tick above it (best ask), every level holding ``level_qty`` (derived from the
recent traded volume). It is stateless: a market order walks it but does not deplete it.
"""

from __future__ import annotations

import bisect
import calendar
import math
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Sequence

from engine.market.candle import ONE_MINUTE_MS, Candle, read_candles_csv

#: Kline intervals accepted on REST and WS (``bingx-protocol.md`` 9.5), in ms; 1M is calendar-based.
INTERVAL_MS: dict[str, int] = {
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "2h": 7_200_000,
    "4h": 14_400_000,
    "6h": 21_600_000,
    "8h": 28_800_000,
    "12h": 43_200_000,
    "1d": 86_400_000,
    "3d": 259_200_000,
    "1w": 604_800_000,
    "1M": 0,
}
_WEEK_OFFSET_MS = 4 * 86_400_000  # the epoch was a Thursday; weeks start on Monday
DAY_MS = 86_400_000


def bucket_start(interval: str, t_ms: int) -> int:
    """Open time of the ``interval`` bucket holding ``t_ms`` (UTC-aligned; weeks on Monday)."""
    if interval == "1M":
        dt = datetime.fromtimestamp(t_ms / 1000, tz=timezone.utc)
        return calendar.timegm((dt.year, dt.month, 1, 0, 0, 0)) * 1000
    size = INTERVAL_MS[interval]
    if interval == "1w":
        return t_ms - ((t_ms - _WEEK_OFFSET_MS) % size)
    return t_ms - (t_ms % size)


def bucket_end(interval: str, open_ms: int) -> int:
    """Exclusive end of the bucket opening at ``open_ms``."""
    if interval == "1M":
        dt = datetime.fromtimestamp(open_ms / 1000, tz=timezone.utc)
        year, month = (dt.year + 1, 1) if dt.month == 12 else (dt.year, dt.month + 1)
        return calendar.timegm((year, month, 1, 0, 0, 0)) * 1000
    return open_ms + INTERVAL_MS[interval]


@dataclass
class MarketSpec:
    """One simulated perpetual contract, replaying ``candles`` (a list or a CSV path).

    Unset precisions and limits are derived from the price scale of the data:
    ``price_precision = 5 - floor(log10(price))`` (BTC 1, ETH 2, NANO 4) and
    ``quantity_precision = max(0, floor(log10(price)))`` (BTC 4, NANO 1, DOGE 0).
    """

    symbol: str
    candles: Sequence[Candle] | str | Path
    price_precision: int | None = None
    quantity_precision: int | None = None
    min_qty: Decimal | None = None
    min_notional: Decimal = Decimal("2")
    max_leverage: int | None = None
    maint_margin_ratio: Decimal | None = None
    funding_rate: Decimal = Decimal("0.0001")
    depth_levels: int = 100

    def load_candles(self) -> list[Candle]:
        """The candles as a list (reads the file when a path was given)."""
        if isinstance(self.candles, (str, Path)):
            return read_candles_csv(self.candles)
        return list(self.candles)


@dataclass(slots=True)
class Forming:
    """The 1m candle being replayed, in ticks, as far as the replay has got."""

    index: int
    open_time_ms: int
    o: int
    h: int
    l: int
    c: int
    v: float = 0.0
    quote_v: float = 0.0


@dataclass(slots=True)
class Trade:
    """One replayed market trade."""

    time_ms: int
    ticks: int
    qty: float
    buyer_maker: bool


class _Rolling24h:
    """High/low/volume over the last 24 h of closed candles, updated incrementally."""

    def __init__(self) -> None:
        self.items: deque[tuple[int, int, int, float, float, int]] = deque()  # t, h, l, v, qv, open
        self.maxq: deque[tuple[int, int]] = deque()
        self.minq: deque[tuple[int, int]] = deque()
        self.volume = 0.0
        self.quote_volume = 0.0

    def add(self, t: int, o: int, h: int, l: int, v: float, qv: float) -> None:
        self.items.append((t, h, l, v, qv, o))
        self.volume += v
        self.quote_volume += qv
        while self.maxq and self.maxq[-1][1] <= h:
            self.maxq.pop()
        self.maxq.append((t, h))
        while self.minq and self.minq[-1][1] >= l:
            self.minq.pop()
        self.minq.append((t, l))

    def evict_before(self, t_min: int) -> None:
        while self.items and self.items[0][0] < t_min:
            _, _, _, v, qv, _ = self.items.popleft()
            self.volume -= v
            self.quote_volume -= qv
        while self.maxq and self.maxq[0][0] < t_min:
            self.maxq.popleft()
        while self.minq and self.minq[0][0] < t_min:
            self.minq.popleft()


class Market:
    """Runtime state of one symbol: spec, candles, replay position, prices, recent trades."""

    def __init__(self, spec: MarketSpec, candles: list[Candle]) -> None:
        if not candles:
            raise ValueError(f"{spec.symbol}: no candles to replay")
        if "-" not in spec.symbol or spec.symbol != spec.symbol.upper():
            raise ValueError(f"symbol must be upper case with a hyphen, e.g. BTC-USDT (got {spec.symbol!r})")
        self.spec = spec
        self.symbol = spec.symbol
        self.candles = candles
        self.times = [c.open_time_ms for c in candles]
        ref = sorted(c.close for c in candles[: min(len(candles), 1000)])[min(len(candles), 1000) // 2]
        scale = math.floor(math.log10(ref)) if ref > 0 else 0
        self.pp = spec.price_precision if spec.price_precision is not None else max(0, 5 - scale)
        self.qp = spec.quantity_precision if spec.quantity_precision is not None else max(0, scale)
        self.tick = Decimal(1).scaleb(-self.pp)
        self.tick_f = float(self.tick)
        self.step = Decimal(1).scaleb(-self.qp)
        self.min_qty = spec.min_qty if spec.min_qty is not None else self.step
        self.min_notional = spec.min_notional
        self.max_leverage = spec.max_leverage if spec.max_leverage is not None else (125 if ref >= 10_000 else 50)
        self.mmr = (
            spec.maint_margin_ratio
            if spec.maint_margin_ratio is not None
            else (Decimal("0.5") / Decimal(self.max_leverage)).quantize(Decimal("0.0001"))
        )
        self.funding_rate = spec.funding_rate
        self.depth_levels = max(5, spec.depth_levels)
        self.base_asset = self.symbol.split("-", 1)[0]
        self.contract_id = 0
        # replay position and prices
        self.closed_count = 0
        self.forming: Forming | None = None
        self.last_ticks = self.ticks(candles[0].open)
        self.mark_ticks = self.last_ticks
        self._mark_f = float(self.last_ticks)
        self.last_qty = 0.0
        self.last_trade_ms = candles[0].open_time_ms
        self.trades: deque[Trade] = deque(maxlen=1000)
        self.level_qty = self.step
        self._vol_ema = 0.0
        self.rolling = _Rolling24h()
        self.funding_history: list[tuple[int, Decimal]] = []

    # ---- precision helpers -------------------------------------------------------------------
    def ticks(self, price: float) -> int:
        """A float price rounded to the nearest tick, as an integer tick count."""
        return int(round(price / self.tick_f))

    def price_dec(self, ticks: int) -> Decimal:
        """Exact Decimal price of a tick count."""
        return Decimal(ticks).scaleb(-self.pp)

    def price_str(self, ticks: int) -> str:
        """Price text with exactly ``pp`` decimals."""
        return f"{ticks * self.tick_f:.{self.pp}f}"

    def floor_ticks(self, price: Decimal) -> int:
        """Tick count of ``price`` truncated to the tick (the server truncates excess precision)."""
        return int((price / self.tick).to_integral_value(rounding=ROUND_DOWN))

    def trunc_qty(self, qty: Decimal) -> Decimal:
        """Quantity truncated to the step."""
        return qty.quantize(self.step, rounding=ROUND_DOWN)

    def qty_str(self, qty: float) -> str:
        """A float volume as text at the quantity precision."""
        return f"{qty:.{self.qp}f}"

    # ---- replay position ----------------------------------------------------------------------
    def index_at(self, t_ms: int) -> int:
        """Index of the first candle whose open time is >= ``t_ms``."""
        return bisect.bisect_left(self.times, t_ms)

    def seek(self, start_ms: int) -> None:
        """Make every candle opening before ``start_ms`` history and set prices from the last one."""
        self.closed_count = self.index_at(start_ms)
        self.forming = None
        if self.closed_count > 0:
            last = self.candles[self.closed_count - 1]
            self.last_ticks = self.ticks(last.close)
            self.last_trade_ms = last.open_time_ms + ONE_MINUTE_MS - 1000
        else:
            self.last_ticks = self.ticks(self.candles[0].open)
            self.last_trade_ms = start_ms
        self.mark_ticks = self.last_ticks
        self._mark_f = float(self.last_ticks)
        first = self.index_at(start_ms - DAY_MS)
        recent: list[float] = []
        for candle in self.candles[first : self.closed_count]:
            h, l = self.ticks(candle.high), self.ticks(candle.low)
            self.rolling.add(candle.open_time_ms, self.ticks(candle.open), h, l, candle.volume, candle.volume * candle.close)
            recent.append(candle.volume)
        self._vol_ema = sum(recent[-60:]) / len(recent[-60:]) if recent else self.candles[0].volume
        self._update_level_qty()

    def _update_level_qty(self) -> None:
        qty = Decimal(repr(self._vol_ema / 10.0)) if self._vol_ema > 0 else Decimal(0)
        self.level_qty = max(self.trunc_qty(qty), self.step * 10, self.min_qty)

    def begin_candle(self, index: int, first_ticks: int) -> None:
        """The replay starts candle ``index``."""
        candle = self.candles[index]
        self.forming = Forming(index, candle.open_time_ms, first_ticks, first_ticks, first_ticks, first_ticks)

    def on_trade(self, t_ms: int, ticks: int, qty: float, buyer_maker: bool) -> None:
        """Apply one replayed trade (or a zero-volume price update) to prices and the forming candle."""
        self.last_ticks = ticks
        self._mark_f = (self._mark_f + ticks) / 2.0  # mark lags the last price a little, like an index
        self.mark_ticks = int(round(self._mark_f))
        self.last_trade_ms = t_ms
        forming = self.forming
        if forming is not None:
            if ticks > forming.h:
                forming.h = ticks
            if ticks < forming.l:
                forming.l = ticks
            forming.c = ticks
            forming.v += qty
            forming.quote_v += qty * ticks * self.tick_f
        if qty > 0:
            self.last_qty = qty
            self.trades.append(Trade(t_ms, ticks, qty, buyer_maker))

    def close_candle(self, index: int) -> None:
        """Candle ``index`` has been fully replayed: it is final from now on."""
        candle = self.candles[index]
        self.closed_count = index + 1
        forming = self.forming
        if forming is not None:
            self.rolling.add(candle.open_time_ms, forming.o, forming.h, forming.l, forming.v, forming.quote_v)
        self.rolling.evict_before(candle.open_time_ms + ONE_MINUTE_MS - DAY_MS)
        self._vol_ema += (candle.volume - self._vol_ema) / 60.0
        self._update_level_qty()

    @property
    def finished(self) -> bool:
        """True once every candle has been replayed."""
        return self.closed_count >= len(self.candles)

    # ---- views --------------------------------------------------------------------------------
    def current_1m(self) -> tuple[int, int, int, int, int, float] | None:
        """(open_time, o, h, l, c, v) of the candle in progress, or of the last closed one."""
        if self.forming is not None:
            f = self.forming
            return f.open_time_ms, f.o, f.h, f.l, f.c, f.v
        if self.closed_count > 0:
            c = self.candles[self.closed_count - 1]
            return c.open_time_ms, self.ticks(c.open), self.ticks(c.high), self.ticks(c.low), self.ticks(c.close), c.volume
        return None

    def klines(
        self, interval: str, *, start_ms: int | None, end_ms: int | None, limit: int, now_ms: int
    ) -> list[tuple[int, int, int, int, int, float]]:
        """Bars of ``interval`` known now (closed 1m candles plus the forming one), oldest first.

        ``start``/``end`` bound the bar open times as ``[start, end)``. Without ``start`` the
        newest ``limit`` bars are returned, with it the oldest ``limit`` from ``start`` on.
        """
        newest = self.current_1m()
        if newest is None or limit <= 0:
            return []
        newest_t = newest[0]
        hi_t = newest_t + ONE_MINUTE_MS
        if end_ms is not None:
            end_bucket = bucket_start(interval, end_ms - 1)
            hi_t = min(hi_t, bucket_end(interval, end_bucket))
        if start_ms is not None:
            first_bucket = bucket_start(interval, start_ms)
            lo_t = start_ms if first_bucket == start_ms else bucket_end(interval, first_bucket)
        else:
            lo_t = bucket_start(interval, min(newest_t, hi_t - 1))
            for _ in range(limit - 1):
                lo_t = bucket_start(interval, lo_t - 1)
        i0 = self.index_at(lo_t)
        i1 = min(self.index_at(hi_t), self.closed_count)
        rows: list[tuple[int, int, int, int, int, float]] = [
            (c.open_time_ms, self.ticks(c.open), self.ticks(c.high), self.ticks(c.low), self.ticks(c.close), c.volume)
            for c in self.candles[i0:i1]
        ]
        f = self.forming
        if f is not None and f.index == self.closed_count and lo_t <= f.open_time_ms < hi_t:
            rows.append((f.open_time_ms, f.o, f.h, f.l, f.c, f.v))
        bars: list[list] = []
        for t, o, h, l, c, v in rows:
            bucket = bucket_start(interval, t)
            if bars and bars[-1][0] == bucket:
                bar = bars[-1]
                bar[2] = max(bar[2], h)
                bar[3] = min(bar[3], l)
                bar[4] = c
                bar[5] += v
            else:
                bars.append([bucket, o, h, l, c, v])
        bars = bars[:limit] if start_ms is not None else bars[-limit:]
        return [tuple(b) for b in bars]  # type: ignore[misc]

    def book(self, levels: int) -> tuple[list[tuple[int, Decimal]], list[tuple[int, Decimal]]]:
        """Synthetic bids (best first) and asks (best first): ``levels`` levels of ``level_qty`` each."""
        levels = min(levels, self.depth_levels)
        bids = [(self.last_ticks - i, self.level_qty) for i in range(levels) if self.last_ticks - i > 0]
        asks = [(self.last_ticks + 1 + i, self.level_qty) for i in range(levels)]
        return bids, asks

    def best_bid(self) -> int:
        """Best bid in ticks."""
        return self.last_ticks

    def best_ask(self) -> int:
        """Best ask in ticks."""
        return self.last_ticks + 1

    def taker_ticks(self, side: str) -> int:
        """The best price a taker gets: the best ask for a buy, the best bid for a sell."""
        return self.best_ask() if side == "BUY" else self.best_bid()

    def walk_book(self, side: str, qty: Decimal, limit_ticks: int | None) -> tuple[list[tuple[int, Decimal]], Decimal]:
        """Fills a taker order of ``qty`` would get (level by level) and the quantity left over.

        A market order (no limit) never runs dry: what is left after the last level fills there.
        """
        fills: list[tuple[int, Decimal]] = []
        remaining = qty
        direction = 1 if side == "BUY" else -1
        start = self.taker_ticks(side)
        for i in range(self.depth_levels):
            if remaining <= 0:
                break
            ticks = start + direction * i
            if ticks <= 0:
                break
            if limit_ticks is not None and (ticks > limit_ticks if side == "BUY" else ticks < limit_ticks):
                break
            take = min(remaining, self.level_qty)
            fills.append((ticks, take))
            remaining -= take
        if remaining > 0 and limit_ticks is None and fills:
            ticks, take = fills[-1]
            fills[-1] = (ticks, take + remaining)
            remaining = Decimal(0)
        return fills, remaining
