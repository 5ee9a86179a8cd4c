"""Replay of 1m candles as a market: candle -> trade path, the replay clock, and the driver loop.

Trade path: each candle becomes open -> first extreme -> second extreme -> close (a
bullish candle dips to its low first, a bearish one spikes to its high first, the usual
intrabar assumption), each leg cut into up to ``legs_points`` evenly spaced ticks, the
candle's volume split evenly over the points, and the points spread over the minute
(``open_time`` ... ``open_time + 59 s``). A candle's path is a function of the candle
only, so fills are reproducible at every speed.

Clock: the replay clock is the exchange's clock. At a finite speed it runs at ``speed``
times wall-clock time; at max speed (``speed=None``) it jumps to each trade's time as
the driver replays it; paused, it stands still until resumed or advanced explicitly.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import time
from dataclasses import dataclass
from typing import Protocol

from engine.market.candle import ONE_MINUTE_MS, Candle

from .markets import Market

log = logging.getLogger(__name__)

PATH_SPAN_MS = 59_000  # the last trade of a candle happens 59 s after its open


@dataclass(slots=True)
class Step:
    """One point of a trade path."""

    time_ms: int
    ticks: int
    qty: float
    buyer_maker: bool


def trade_path(candle: Candle, market: Market, legs_points: int = 3) -> list[Step]:
    """The trades a candle is replayed as (see the module docstring)."""
    o = market.ticks(candle.open)
    c = market.ticks(candle.close)
    h = max(market.ticks(candle.high), o, c)
    l = min(market.ticks(candle.low), o, c)
    waypoints = [o, l, h, c] if c >= o else [o, h, l, c]
    points = [o]
    for target in waypoints[1:]:
        start = points[-1]
        distance = target - start
        if distance == 0:
            continue
        n = min(abs(distance), legs_points)
        for k in range(1, n + 1):
            points.append(start + (distance * k) // n if distance > 0 else start - ((-distance) * k) // n)
    n_points = len(points)
    # Quantities sit on the step, so the public tape and the fills against it agree;
    # the last trade takes the remainder so the candle's volume is preserved.
    step = 10.0 ** -market.qp
    qty = math.floor(candle.volume / n_points / step + 1e-9) * step if candle.volume > 0 else 0.0
    qty = round(qty, market.qp)
    last_qty = round(max(candle.volume - qty * (n_points - 1), 0.0), market.qp) if candle.volume > 0 else 0.0
    span = PATH_SPAN_MS // (n_points - 1) if n_points > 1 else 0
    t0 = candle.open_time_ms
    steps: list[Step] = []
    prev = points[0]
    up = c >= o
    for i, ticks in enumerate(points):
        if ticks > prev:
            up = True
        elif ticks < prev:
            up = False
        # buyer_maker (m=true) means the taker sold: a falling price.
        steps.append(Step(t0 + i * span, ticks, last_qty if i == n_points - 1 else qty, not up))
        prev = ticks
    return steps


class ReplayClock:
    """The exchange clock: replay time in ms, running at ``speed`` x wall time, jumping at max speed."""

    def __init__(self, start_ms: int, speed: float | None, *, paused: bool = False) -> None:
        if speed is not None and speed <= 0:
            raise ValueError("speed must be positive (or None for max)")
        self._speed = speed
        self._sim_ms = float(start_ms)
        self._wall = time.monotonic()
        self._paused = paused
        self._changed = asyncio.Event()

    @property
    def speed(self) -> float | None:
        """Replay speed multiple; None means as fast as clients keep up."""
        return self._speed

    @property
    def paused(self) -> bool:
        """Whether the clock stands still."""
        return self._paused

    def now_ms(self) -> int:
        """Current replay time in ms."""
        if self._paused or self._speed is None:
            return int(self._sim_ms)
        return int(self._sim_ms + (time.monotonic() - self._wall) * 1000.0 * self._speed)

    def _anchor(self) -> None:
        self._sim_ms = float(self.now_ms())
        self._wall = time.monotonic()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def set_speed(self, speed: float | None) -> None:
        """Change speed (None = max) without a jump in time."""
        if speed is not None and speed <= 0:
            raise ValueError("speed must be positive (or None for max)")
        self._anchor()
        self._speed = speed
        self._notify()

    def pause(self) -> None:
        """Freeze the clock."""
        self._anchor()
        self._paused = True
        self._notify()

    def resume(self) -> None:
        """Let the clock run again from where it stood."""
        self._anchor()
        self._paused = False
        self._notify()

    def set_time(self, t_ms: int) -> None:
        """Move the clock to ``t_ms`` (never backwards)."""
        now = self.now_ms()
        self._sim_ms = float(max(now, t_ms))
        self._wall = time.monotonic()

    def wall_seconds_until(self, t_ms: int) -> float:
        """Wall seconds until the clock reads ``t_ms`` (0 when due; inf when paused or at max speed)."""
        now = self.now_ms()
        if t_ms <= now:
            return 0.0
        if self._paused or self._speed is None:
            return float("inf")
        return (t_ms - now) / 1000.0 / self._speed

    async def wait_change(self, timeout: float | None) -> None:
        """Sleep until pause/resume/speed changes or ``timeout`` seconds pass."""
        event = self._changed
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except asyncio.TimeoutError:
            pass


class ReplayHandler(Protocol):
    """What the driver calls as it replays (implemented by the server)."""

    def on_time(self, now_ms: int) -> None:
        """Time-driven events up to ``now_ms`` (funding)."""

    def on_step(self, market: Market, step: Step, first: bool, last: bool) -> None:
        """A trade happened (``first``/``last``: it opens/closes its candle)."""

    def on_candle_closed(self, market: Market, index: int, path: list[Step]) -> None:
        """Candle ``index`` of ``market`` is final; ``path`` holds its trades."""

    async def backpressure(self) -> None:
        """Return once clients have caught up with the frames queued for them."""

    async def wait_for_client(self) -> None:
        """Max speed: return once there is someone to replay for (or the clock stops running)."""


class _Cursor:
    """Where the replay stands in one market: the candle being replayed and the next step in it."""

    __slots__ = ("market", "index", "path", "pos")

    def __init__(self, market: Market) -> None:
        self.market = market
        self.index = market.closed_count
        self.path: list[Step] = []
        self.pos = 0

    def next_time(self) -> int | None:
        if self.pos < len(self.path):
            return self.path[self.pos].time_ms
        if self.index < len(self.market.candles):
            return self.market.candles[self.index].open_time_ms
        return None


class ReplayDriver:
    """Replays every market's candles in time order against the clock."""

    def __init__(self, markets: list[Market], clock: ReplayClock, handler: ReplayHandler, *, legs_points: int = 3) -> None:
        self.markets = markets
        self.clock = clock
        self.handler = handler
        self.legs_points = legs_points
        self.lock = asyncio.Lock()
        self.steps_done = 0
        self.candles_done = 0
        self.running = True
        self._cursors = [_Cursor(m) for m in markets]
        self._heap: list[tuple[int, int]] = []
        for i, cursor in enumerate(self._cursors):
            t = cursor.next_time()
            if t is not None:
                self._heap.append((t, i))
        heapq.heapify(self._heap)

    @property
    def finished(self) -> bool:
        """True when every market has run out of candles."""
        return not self._heap

    def next_time(self) -> int | None:
        """Time of the next step to replay, if any."""
        return self._heap[0][0] if self._heap else None

    def _apply_next(self) -> None:
        t, i = heapq.heappop(self._heap)
        cursor = self._cursors[i]
        market = cursor.market
        if cursor.pos >= len(cursor.path):
            candle = market.candles[cursor.index]
            cursor.path = trade_path(candle, market, self.legs_points)
            cursor.pos = 0
        step = cursor.path[cursor.pos]
        first = cursor.pos == 0
        last = cursor.pos == len(cursor.path) - 1
        self.handler.on_time(step.time_ms)
        if first:
            market.begin_candle(cursor.index, step.ticks)
        market.on_trade(step.time_ms, step.ticks, step.qty, step.buyer_maker)
        self.handler.on_step(market, step, first, last)
        cursor.pos += 1
        self.steps_done += 1
        if last:
            market.close_candle(cursor.index)
            self.handler.on_candle_closed(market, cursor.index, cursor.path)
            cursor.index += 1
            cursor.path = []
            cursor.pos = 0
            self.candles_done += 1
        nxt = cursor.next_time()
        if nxt is not None:
            heapq.heappush(self._heap, (nxt, i))

    async def run(self) -> None:
        """The replay task: follows the clock until cancelled."""
        idle_tick = 0.5
        while self.running:
            if self.clock.paused:
                await self.clock.wait_change(None)
                continue
            t = self.next_time()
            if t is None:
                self.handler.on_time(self.clock.now_ms())
                await self.clock.wait_change(idle_tick)
                continue
            if self.clock.speed is not None:
                delay = self.clock.wall_seconds_until(t)
                if delay > 0:
                    await self.clock.wait_change(min(delay, idle_tick))
                    self.handler.on_time(self.clock.now_ms())
                    continue
                async with self.lock:
                    # Catch up with everything due; yield now and then so REST keeps being served.
                    for _ in range(256):
                        nt = self.next_time()
                        if nt is None or self.clock.paused or nt > self.clock.now_ms():
                            break
                        self._apply_next()
                await asyncio.sleep(0)
            else:
                await self.handler.wait_for_client()  # outside the lock: advance() must not wait for it
                async with self.lock:
                    await self._run_max_batch()
                await asyncio.sleep(0)

    async def _run_max_batch(self) -> None:
        # Max speed: replay until a candle closes, then wait for the clients to catch up.
        candles = self.candles_done
        while self._heap and self.clock.speed is None and not self.clock.paused:
            self.clock.set_time(self._heap[0][0])
            self._apply_next()
            if self.candles_done != candles:
                break
        await self.handler.backpressure()

    async def advance_to(self, t_ms: int) -> int:
        """Replay every step up to ``t_ms`` now (whatever the speed) and move the clock there.

        Returns the number of steps replayed. Meant for a paused clock (tests, the admin API).
        """
        count = 0
        async with self.lock:
            while self._heap and self._heap[0][0] <= t_ms:
                self.clock.set_time(self._heap[0][0])
                candles = self.candles_done
                self._apply_next()
                count += 1
                if self.candles_done != candles:
                    await self.handler.backpressure()
            self.clock.set_time(t_ms)
            self.handler.on_time(self.clock.now_ms())
        return count

    async def advance_steps(self, n: int) -> int:
        """Replay the next ``n`` steps now; the clock ends at the last one's time."""
        count = 0
        async with self.lock:
            while count < n and self._heap:
                self.clock.set_time(self._heap[0][0])
                self._apply_next()
                count += 1
            await self.handler.backpressure()
        return count

    def candle_end_time(self, n: int) -> int | None:
        """Clock time at which ``n`` more candles of the first market will have closed."""
        market = self.markets[0]
        cursor = self._cursors[0]
        index = cursor.index + n - 1
        if n <= 0 or index >= len(market.candles):
            return None
        return market.candles[index].open_time_ms + ONE_MINUTE_MS - 1
