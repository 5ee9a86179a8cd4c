"""Keeping Python's cyclic garbage collector off the order path.

A full (generation 2) collection walks every object the process holds: with a few hundred
thousand objects (warm-up candles, ORM and library state) that is a pause of 50-120 ms, measured
on the tick-to-order path by ``bench/bench_latency.py`` (issue 10). :func:`freeze_heap` collects
once and then moves everything alive into the permanent generation (``gc.freeze``), which later
collections skip: they only walk what was allocated since. The worker freezes after start-up and
again every few minutes from the ``gc`` job, at second 30 of a minute, away from the candle closes
that trigger entries; unfreezing first lets that pass also free cycles that died since the last one.

:func:`collect_young_less_often` raises the first generation's threshold from 700 new objects to
:data:`YOUNG_THRESHOLD`. At 700 a young collection ran inside about one entry in three, between the
closing frame and the order, and the frequent collections between frames kept the caches cold;
``bench/bench_latency.py`` measured p50 2.48 / 2.36 / 2.38 ms at 700 against 2.15 / 2.06 / 2.39 ms
(interleaved runs). Each young collection walks more objects, but only what was allocated since
the last one (well under a millisecond), and garbage cycles wait a little longer to be freed.
"""

from __future__ import annotations

import gc
import logging
import time

log = logging.getLogger(__name__)

YOUNG_THRESHOLD = 20_000  # allocations (net of frees) between two collections of the youngest generation


def freeze_heap() -> float:
    """Collect everything (the frozen part too), then freeze what is left; returns the pause in ms."""
    started = time.perf_counter()
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    pause_ms = (time.perf_counter() - started) * 1000
    log.debug("heap frozen: %d objects, pause %.1f ms", gc.get_freeze_count(), pause_ms)
    return pause_ms


def collect_young_less_often() -> None:
    """Collect the youngest generation every :data:`YOUNG_THRESHOLD` allocations (the older thresholds unchanged)."""
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
