"""Bulk kline download to the shared CSV format, resumable, de-duplicated, with a gap report.

How an interruption is survived: every page of new candles is appended to ``OUT.partial``
(first line names exchange/symbol/interval) and flushed to disk before the next request. A
rerun of the same download reads the partial file and any existing ``OUT`` file, keeps the
candles it already has, and asks the exchange only for the missing stretches. The output is
written once, at the end, through a temp file and a rename: a reader never sees half a file.

Requests go one at a time through the provider, which applies the exchange's rate limits
(the BingX client's limiter, ccxt's throttler).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from engine.market.candle import Candle, iter_candles_csv

from .csvfiles import (
    PartialFileError,
    PartialMeta,
    append_rows,
    partial_path,
    read_partial,
    rewrite_partial,
    write_candles_atomic,
)
from .gaps import Gap, find_gaps
from .paging import Page, iter_pages, missing_ranges, split_windows
from .providers import DataProviderError, MarketDataProvider, UnsupportedIntervalError

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
PageHook = Callable[[Page], "Awaitable[None] | None"]


class DownloadError(Exception):
    """The download could not finish; what was fetched is kept in the partial file for a rerun."""


@dataclass(frozen=True, slots=True)
class DownloadRequest:
    """What to download: candles of ``symbol``/``interval`` opening in ``[start_ms, end_ms)`` into ``out``.

    ``fresh`` ignores (and replaces) an existing output or partial file instead of resuming from it.
    """

    symbol: str
    interval: str
    start_ms: int
    end_ms: int
    out: Path
    fresh: bool = False


@dataclass(slots=True)
class DownloadResult:
    """What a finished download did."""

    out: Path
    start_ms: int
    end_ms: int  # after clipping to the newest closed candle
    requested_end_ms: int
    candles: int = 0  # rows in the output file
    reused: int = 0  # candles taken from an earlier partial/output file
    fetched: int = 0  # new candles from the exchange
    requests: int = 0
    gaps: list[Gap] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """True when every slot of the range has a candle."""
        return not self.gaps

    @property
    def missing(self) -> int:
        """Candles missing over all gaps."""
        return sum(g.missing for g in self.gaps)


def _floor(t: int, step: int) -> int:
    return t - t % step


def _ceil(t: int, step: int) -> int:
    return -(-t // step) * step


def _load_existing(request: DownloadRequest, meta: PartialMeta, start: int, end: int,
                   step: int) -> dict[int, Candle]:
    """Candles already on disk for the range (blocking): the output file, then the partial file on top."""
    known: dict[int, Candle] = {}

    def keep(candles: Any) -> None:
        for c in candles:
            if start <= c.open_time_ms < end and (c.open_time_ms - start) % step == 0:
                known[c.open_time_ms] = c

    partial = partial_path(request.out)
    if request.out.exists():
        try:
            keep(iter_candles_csv(request.out))
        except (ValueError, OSError, EOFError) as exc:
            raise DownloadError(f"cannot resume from {request.out}: {exc}; pass --fresh to replace it") from None
    if partial.exists():
        keep(read_partial(partial, meta))
    return known


async def download_klines(provider: MarketDataProvider, request: DownloadRequest, *, progress: bool | None = None,
                          on_page: PageHook | None = None, progress_file: TextIO | None = None) -> DownloadResult:
    """Download ``request`` through ``provider``; returns a :class:`DownloadResult` with the gaps found.

    ``progress``: ``True`` always shows a tqdm bar (on stderr), ``None`` only on a terminal,
    ``False`` never. ``on_page`` is called after each page is safely on disk (tests use it to
    interrupt a download at a known point). Raises :class:`DownloadError` (partial file kept),
    :class:`~engine.data.providers.UnknownSymbolError` / ``UnsupportedIntervalError`` for bad
    input, and lets ``CancelledError`` through (partial file kept).
    """
    step = provider.interval_ms(request.interval)
    if DAY_MS % step:
        raise UnsupportedIntervalError(
            f"{request.interval}: downloads need an interval that divides a day (1m .. 1d); candle alignment "
            f"of longer intervals differs between exchanges")
    if request.end_ms <= request.start_ms:
        raise DownloadError("--to must be after --from")
    start, end = _floor(request.start_ms, step), _ceil(request.end_ms, step)
    await provider.check_symbol(request.symbol)
    try:
        now = await provider.server_time_ms()
    except DataProviderError as exc:
        raise DownloadError(str(exc)) from exc
    newest_end = _floor(now, step)  # the candle opening here is still forming
    if end > newest_end:
        log.info("range end clipped to the newest closed candle", extra={"symbol": request.symbol})
        end = newest_end
    if start >= end:
        raise DownloadError("no closed candle in the requested range yet")

    out = Path(request.out)
    meta = PartialMeta(provider.name, request.symbol, request.interval)
    partial = partial_path(out)
    if request.fresh and partial.exists():
        await asyncio.to_thread(partial.unlink)
    try:
        known = {} if request.fresh else await asyncio.to_thread(_load_existing, request, meta, start, end, step)
    except PartialFileError as exc:
        raise DownloadError(str(exc)) from None
    result = DownloadResult(out=out, start_ms=start, end_ms=end, requested_end_ms=request.end_ms, reused=len(known))
    if known:
        log.info("resuming: %d candle(s) already downloaded", len(known), extra={"symbol": request.symbol})
    # A clean partial file (torn last line dropped) to append to.
    await asyncio.to_thread(rewrite_partial, partial, meta, [known[t] for t in sorted(known)])

    page_limit = provider.page_limit
    windows = split_windows(missing_ranges(known.keys(), start, end, step, page_limit), step, page_limit)
    unsettled = {t for lo, hi in windows for t in range(lo, hi, step) if t not in known}
    bar = tqdm(total=len(unsettled), unit="candle", desc=f"{request.symbol} {request.interval}",
               file=progress_file or sys.stderr, disable=(None if progress is None else not progress),
               dynamic_ncols=True, leave=False)

    async def fetch(lo: int, hi: int, limit: int) -> list[Candle]:
        return await provider.fetch_klines(request.symbol, request.interval, lo, hi, limit)

    fh = await asyncio.to_thread(open, partial, "a", encoding="utf-8", newline="")
    try:
        async for page in iter_pages(fetch, windows, step, page_limit):
            result.requests += 1
            new = [c for c in page.candles if c.open_time_ms not in known and (c.open_time_ms - start) % step == 0]
            if new:
                await asyncio.to_thread(append_rows, fh, new)
                for c in new:
                    known[c.open_time_ms] = c
                result.fetched += len(new)
            settled_from, settled_to = ((page.start_ms, page.end_ms) if not page.candles else
                                        (page.candles[0].open_time_ms, page.candles[-1].open_time_ms + step))
            done = unsettled.intersection(range(settled_from, settled_to, step))
            unsettled.difference_update(done)
            bar.update(len(done))
            if on_page is not None:
                maybe = on_page(page)
                if inspect.isawaitable(maybe):
                    await maybe
    except DataProviderError as exc:
        raise DownloadError(f"{exc} ({len(known)} candle(s) kept in {partial}; rerun the same command to "
                            f"resume)") from exc
    finally:
        bar.close()
        await asyncio.to_thread(fh.close)

    candles = [known[t] for t in sorted(known)]
    result.candles = await asyncio.to_thread(write_candles_atomic, out, candles)
    await asyncio.to_thread(partial.unlink, missing_ok=True)
    result.gaps = find_gaps(known.keys(), start, end, step)
    for gap in result.gaps:
        log.warning("gap in %s %s: %s", request.symbol, request.interval, gap.describe(),
                    extra={"symbol": request.symbol})
    return result
