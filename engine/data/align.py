"""Align candle series from several exchanges on common timestamps, within a tolerance.

Exchanges stamp the same minute slightly differently (an exchange that labels candles by a
rounded trade time, a feed a few hundred ms late, a series shifted by clock skew), so exact
timestamp joins lose rows. Here each reference candle is matched to the nearest candle of
every other series no more than ``tolerance_ms`` away; a timestamp is kept only when every
series has a match. Matching is one-to-one and keeps time order: a candle is used at most once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from engine.market.candle import Candle

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


@dataclass(slots=True)
class AlignedCandles:
    """Series aligned row by row: ``series[name][i]`` is that exchange's candle at ``timestamps[i]``.

    ``timestamps`` are the reference series' open times. ``unmatched[name]`` counts the candles
    of each series left out (no partner within the tolerance in some other series).
    """

    reference: str
    timestamps: list[int] = field(default_factory=list)
    series: dict[str, list[Candle]] = field(default_factory=dict)
    unmatched: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.timestamps)

    def closes(self, name: str) -> list[float]:
        """The aligned close prices of ``name``."""
        return [c.close for c in self.series[name]]

    def to_frame(self) -> pd.DataFrame:
        """A DataFrame indexed by ``timestamps`` with columns ``(name, field)`` for open/high/low/close/volume."""
        import pandas as pd  # local import: pandas is heavy and optional for callers

        columns: dict[tuple[str, str], list[float]] = {}
        for name, candles in self.series.items():
            for attr in ("open", "high", "low", "close", "volume"):
                columns[(name, attr)] = [getattr(c, attr) for c in candles]
        frame = pd.DataFrame(columns, index=pd.Index(self.timestamps, name="open_time_ms"))
        frame.columns = pd.MultiIndex.from_tuples(list(columns), names=["source", "field"])
        return frame


def _match(ref_times: Sequence[int], other: Sequence[Candle], tolerance_ms: int) -> list[int | None]:
    """For each reference time, the index in ``other`` of its partner (nearest within tolerance, one-to-one)."""
    matches: list[int | None] = []
    j = 0
    n = len(other)
    for i, t in enumerate(ref_times):
        next_t = ref_times[i + 1] if i + 1 < len(ref_times) else None
        while j < n and other[j].open_time_ms < t - tolerance_ms:
            j += 1  # too early for this and every later reference time
        best: int | None = None
        k = j
        while k < n and other[k].open_time_ms <= t + tolerance_ms:
            ot = other[k].open_time_ms
            # A candle nearer to the next reference time is left for it (wide tolerances).
            if (next_t is None or abs(ot - next_t) >= abs(ot - t)) and (
                    best is None or abs(ot - t) < abs(other[best].open_time_ms - t)):
                best = k
            k += 1
        matches.append(best)
        if best is not None:
            j = best + 1  # used: never matched twice, and order is kept
    return matches


def align_candles(series: Mapping[str, Sequence[Candle]], *, tolerance_ms: int = 0,
                  reference: str | None = None) -> AlignedCandles:
    """Align ``series`` (name -> candles) on the timestamps they share within ``tolerance_ms``.

    ``reference`` (default: the first name) supplies the timestamps. Input order does not
    matter (each series is sorted; duplicate open times keep the last candle). Raises
    ``ValueError`` for a negative tolerance, an unknown reference or no series at all.
    """
    if tolerance_ms < 0:
        raise ValueError("tolerance_ms must be >= 0")
    if not series:
        raise ValueError("nothing to align")
    names = list(series)
    ref = names[0] if reference is None else reference
    if ref not in series:
        raise ValueError(f"reference {ref!r} is not one of {names}")
    ordered = {name: sorted({c.open_time_ms: c for c in candles}.values(), key=lambda c: c.open_time_ms)
               for name, candles in series.items()}
    ref_candles = ordered[ref]
    ref_times = [c.open_time_ms for c in ref_candles]
    partners = {name: _match(ref_times, ordered[name], tolerance_ms) for name in names if name != ref}
    keep = [i for i in range(len(ref_times)) if all(p[i] is not None for p in partners.values())]
    result = AlignedCandles(reference=ref, timestamps=[ref_times[i] for i in keep])
    for name in names:
        if name == ref:
            result.series[name] = [ref_candles[i] for i in keep]
        else:
            result.series[name] = [ordered[name][partners[name][i]] for i in keep]  # type: ignore[index]
        result.unmatched[name] = len(ordered[name]) - len(keep)
    return result
