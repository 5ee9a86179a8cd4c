"""Candle files: the shared CSV format written with the source's exact text, atomically, and the
append-only ``.partial`` file that lets an interrupted download resume.

Values are written as the shortest decimal text that reads back to the same float
(``56777``, ``0.00000108``, never ``56777.0`` or ``1.08e-06``): that is how the files in
``shared/data/market/`` are written, so a download of the same candles is byte-identical
after decompression. Gzip output uses mtime 0, so equal content gives equal files.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TextIO

from engine.market.candle import CSV_HEADER, Candle

PARTIAL_SUFFIX = ".partial"
_META_PREFIX = "# trading-bot download "


class PartialFileError(ValueError):
    """A ``.partial`` file that belongs to another download or is damaged beyond its last line."""


def format_value(value: float) -> str:
    """Shortest exact decimal text of a float, never scientific notation."""
    text = format(Decimal(repr(float(value))).normalize(), "f")
    return "0" if text == "-0" else text


def candle_line(candle: Candle) -> str:
    """One CSV row (with newline) in the shared format."""
    return ",".join((str(candle.open_time_ms), format_value(candle.open), format_value(candle.high),
                     format_value(candle.low), format_value(candle.close), format_value(candle.volume))) + "\n"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_candles_atomic(path: Path, candles: Iterable[Candle]) -> int:
    """Write ``path`` (gzip when it ends in ``.gz``) via a temp file + rename: never half-written.

    Blocking: call it through ``asyncio.to_thread`` from async code. Returns the row count.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    count = 0
    try:
        with os.fdopen(fd, "wb") as raw:
            if path.suffix == ".gz":
                sink: io.BufferedIOBase = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0)
            else:
                sink = raw  # type: ignore[assignment]
            text = io.TextIOWrapper(sink, encoding="utf-8", newline="")  # type: ignore[type-var]
            text.write(",".join(CSV_HEADER) + "\n")
            for candle in candles:
                text.write(candle_line(candle))
                count += 1
            text.flush()
            text.detach()
            if sink is not raw:
                sink.close()
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with _suppress_oserror():
            os.unlink(tmp_name)
        raise
    _fsync_dir(path.parent)
    return count


class _suppress_oserror:
    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, *_: object) -> bool:
        return isinstance(exc_type, type) and issubclass(exc_type, OSError)


def partial_path(out: Path) -> Path:
    """Where the in-progress rows of a download to ``out`` are kept."""
    return out.with_name(out.name + PARTIAL_SUFFIX)


@dataclass(frozen=True, slots=True)
class PartialMeta:
    """What a partial file belongs to: resuming must never mix two series."""

    exchange: str
    symbol: str
    interval: str

    def line(self) -> str:
        """The first line of the partial file."""
        return f"{_META_PREFIX}exchange={self.exchange} symbol={self.symbol} interval={self.interval}\n"


def read_partial(path: Path, meta: PartialMeta) -> list[Candle]:
    """Rows of a partial file (blocking). A torn last line (killed mid-write) is dropped.

    Raises :class:`PartialFileError` when the file was made by a different download or a line
    other than the last is unreadable.
    """
    text = Path(path).read_text(encoding="utf-8")
    lines = text.split("\n")
    if not lines or lines[0] + "\n" != meta.line():
        found = lines[0][len(_META_PREFIX):] if lines and lines[0].startswith(_META_PREFIX) else "an unknown download"
        raise PartialFileError(f"{path} holds {found}, not exchange={meta.exchange} symbol={meta.symbol} "
                               f"interval={meta.interval}; delete it or pass --fresh")
    candles: list[Candle] = []
    # lines[-1] is whatever follows the last newline: empty, or a row cut short by a kill (ignored).
    for no, line in enumerate(lines[1:-1], start=2):
        if not line:
            continue
        candle = _parse_row(line)
        if candle is None:
            raise PartialFileError(f"{path}:{no}: unreadable row {line!r}; delete the file or pass --fresh")
        candles.append(candle)
    return candles


def _parse_row(line: str) -> Candle | None:
    try:
        row = next(csv.reader([line]))
        t, o, h, lo, c, v = row
        return Candle(int(t), float(o), float(h), float(lo), float(c), float(v))
    except (ValueError, StopIteration):
        return None


def rewrite_partial(path: Path, meta: PartialMeta, candles: Iterable[Candle]) -> None:
    """Replace the partial file with ``meta`` + ``candles`` (atomic; drops any torn line). Blocking."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(meta.line())
            fh.writelines(candle_line(c) for c in candles)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with _suppress_oserror():
            os.unlink(tmp_name)
        raise


def append_rows(fh: TextIO, candles: Iterable[Candle]) -> None:
    """Append rows in one write and push them to disk (blocking): a kill loses at most this page."""
    fh.write("".join(candle_line(c) for c in candles))
    fh.flush()
    os.fsync(fh.fileno())
