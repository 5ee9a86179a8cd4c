"""Missing candles in a series: every slot of the ``[start, end)`` grid with no candle."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True, slots=True)
class Gap:
    """Slots ``[start_ms, end_ms)`` (open times) without a candle; ``missing`` of them."""

    start_ms: int
    end_ms: int
    missing: int

    def describe(self) -> str:
        """``2021-04-25 04:01 -> 08:44 UTC (284 candles missing)``, the last missing candle's open time shown."""
        first = _utc(self.start_ms)
        last = _utc(self.end_ms - (self.end_ms - self.start_ms) // self.missing)
        shown_last = last[11:] if last[:10] == first[:10] else last
        return f"{first} -> {shown_last} UTC ({self.missing} candle{'s' if self.missing != 1 else ''} missing)"


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")


def find_gaps(open_times: Iterable[int], start_ms: int, end_ms: int, step_ms: int) -> list[Gap]:
    """Gaps in ``open_times`` over the grid ``start_ms, start_ms + step, ... < end_ms``.

    Times off the grid or outside the range are ignored (they fill no slot). Leading and
    trailing holes count: a download that stops early shows up as a gap at the end.
    """
    if step_ms <= 0:
        raise ValueError("step_ms must be positive")
    present = sorted({t for t in open_times if start_ms <= t < end_ms and (t - start_ms) % step_ms == 0})
    gaps: list[Gap] = []
    expected = start_ms
    for t in present:
        if t > expected:
            gaps.append(Gap(expected, t, (t - expected) // step_ms))
        expected = t + step_ms
    last_slot_end = start_ms + -(-(end_ms - start_ms) // step_ms) * step_ms
    if expected < end_ms:
        gaps.append(Gap(expected, last_slot_end, (last_slot_end - expected) // step_ms))
    return gaps
