"""Page through a kline range one request at a time, refetching holes, never trusting page sizes.

Exchanges answer a kline window oldest-first or newest-first, and may cap a page below the
requested limit without saying so. Every answer is therefore clipped to its window, and any
part of the window left uncovered at either end is requested again until the exchange returns
nothing for it: then those minutes are a real gap in the exchange's data.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from engine.market.candle import Candle

PageFetcher = Callable[[int, int, int], Awaitable[list[Candle]]]
"""``fetch(start_ms, end_ms, limit)``: one request for candles opening in ``[start_ms, end_ms)``."""


@dataclass(frozen=True, slots=True)
class Page:
    """One answered request: the window asked for and the in-window candles (sorted, unique)."""

    start_ms: int
    end_ms: int
    candles: list[Candle]


def split_windows(ranges: Iterable[tuple[int, int]], step_ms: int, page_limit: int) -> list[tuple[int, int]]:
    """Cut ``[start, end)`` ranges into windows of at most ``page_limit`` candles, in time order."""
    span = page_limit * step_ms
    windows: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        cursor = start
        while cursor < end:
            windows.append((cursor, min(end, cursor + span)))
            cursor = windows[-1][1]
    return windows


def missing_ranges(known: Iterable[int], start_ms: int, end_ms: int, step_ms: int,
                   page_limit: int) -> list[tuple[int, int]]:
    """Ranges of ``[start_ms, end_ms)`` to fetch so that every slot not in ``known`` gets asked for.

    Runs of missing slots closer together than one page are merged into one range: asking again
    for a few known candles costs nothing, while a request per tiny hole (an old file with many
    real one-minute gaps) would cost one round trip each.
    """
    have = {t for t in known if start_ms <= t < end_ms}
    runs: list[list[int]] = []
    t = start_ms
    while t < end_ms:
        if t in have:
            t += step_ms
            continue
        run_start = t
        while t < end_ms and t not in have:
            t += step_ms
        if runs and run_start - runs[-1][0] < page_limit * step_ms:
            runs[-1][1] = t  # join: still within one page of the merged range's start
        else:
            runs.append([run_start, t])
    return [(a, b) for a, b in runs]


async def iter_pages(fetch: PageFetcher, windows: Sequence[tuple[int, int]], step_ms: int,
                     page_limit: int) -> AsyncIterator[Page]:
    """Yield one :class:`Page` per request over ``windows`` (each at most ``page_limit`` slots).

    Pages come roughly in time order; a hole left at either end of an answer is asked for next.
    An empty page means the exchange has nothing for that window.
    """
    pending = list(reversed(windows))  # a stack: pop() gives the oldest window first
    while pending:
        lo, hi = pending.pop()
        by_time = {c.open_time_ms: c for c in await fetch(lo, hi, page_limit) if lo <= c.open_time_ms < hi}
        candles = [by_time[t] for t in sorted(by_time)]
        yield Page(lo, hi, candles)
        if not candles:
            continue
        first, last = candles[0].open_time_ms, candles[-1].open_time_ms
        if last + step_ms < hi:
            pending.append((last + step_ms, hi))
        if first > lo:
            pending.append((lo, first))  # popped first: keeps requests in time order


async def fetch_range(fetch: PageFetcher, start_ms: int, end_ms: int, step_ms: int, page_limit: int) -> list[Candle]:
    """Every candle opening in ``[start_ms, end_ms)``, ascending and de-duplicated."""
    found: dict[int, Candle] = {}
    async for page in iter_pages(fetch, split_windows([(start_ms, end_ms)], step_ms, page_limit), step_ms,
                                 page_limit):
        for candle in page.candles:
            found[candle.open_time_ms] = candle
    return [found[t] for t in sorted(found)]
