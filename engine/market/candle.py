"""The 1m candle record and the CSV format shared with ``shared/data/market/``.

Prices are floats on the strategy path (indicators must process >100k candles/s);
exact ``Decimal`` values are used only at the order boundary (rounding to the
contract's tick and step happens there).
"""

from __future__ import annotations

import csv
import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterable, Iterator

from engine.fast_init import fast_frozen_init

ONE_MINUTE_MS = 60_000
CSV_HEADER = ("open_time_ms", "open", "high", "low", "close", "volume")


@fast_frozen_init  # built per candle in backtests and the feed
@dataclass(frozen=True, slots=True)
class Candle:
    """One OHLCV candle keyed by its open time (UTC, milliseconds)."""

    open_time_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float

    @property
    def close_time_ms(self) -> int:
        """First millisecond after a 1m candle (its exclusive end)."""
        return self.open_time_ms + ONE_MINUTE_MS


def _open_text(path: Path, mode: str) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, mode + "t", encoding="utf-8", newline="")
    return open(path, mode, encoding="utf-8", newline="")


def iter_candles_csv(path: str | Path) -> Iterator[Candle]:
    """Yield candles from a ``open_time_ms,open,high,low,close,volume`` CSV (optionally gzip'd).

    Raises ``ValueError`` naming the file and line for a malformed row: data files are
    inputs to backtests and the simulator, and a silently skipped row would change results.
    """
    path = Path(path)
    with _open_text(path, "r") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            return
        if tuple(h.strip() for h in header) != CSV_HEADER:
            raise ValueError(f"{path}: unexpected header {header!r}, expected {','.join(CSV_HEADER)}")
        for line_no, row in enumerate(reader, start=2):
            if not row:
                continue
            try:
                t, o, h, l, c, v = row
                yield Candle(int(t), float(o), float(h), float(l), float(c), float(v))
            except ValueError as exc:
                raise ValueError(f"{path}:{line_no}: malformed candle row {row!r}: {exc}") from None


def read_candles_csv(path: str | Path) -> list[Candle]:
    """Read a whole candle file into memory (a month of 1m candles is ~45k rows)."""
    return list(iter_candles_csv(path))


def write_candles_csv(path: str | Path, candles: Iterable[Candle]) -> int:
    """Write candles in the shared CSV format; returns the number of rows written."""
    path = Path(path)
    count = 0
    with _open_text(path, "w") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(CSV_HEADER)
        for candle in candles:
            writer.writerow(
                (
                    candle.open_time_ms,
                    _fmt(candle.open),
                    _fmt(candle.high),
                    _fmt(candle.low),
                    _fmt(candle.close),
                    _fmt(candle.volume),
                )
            )
            count += 1
    return count


def _fmt(value: float) -> str:
    """Plain decimal text, never scientific notation (the shared files' convention)."""
    text = repr(value)
    if "e" in text or "E" in text:
        text = f"{value:.12f}".rstrip("0").rstrip(".")
    return text
