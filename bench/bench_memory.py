"""Resident memory of the bot after warm-up and after an accelerated market day (no restarts).

Runs ``bench.soak.run_soak`` with faults on and no kill -9 (one ``trading-bot run`` worker process for
the whole day: runtime, scheduler, alert outbox, Telegram against the soak's fake server) and
reports the worker's RSS 1 s after it is ready (warm-up done) and after the day, median of
``--runs``. Target: growth <= 10 MB. Merged into ``bench/results.json`` under ``"memory"``.

    .venv/bin/python bench/bench_memory.py [--runs 3] [--seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_backtest import merge_results  # noqa: E402
from soak import run_soak  # noqa: E402

TARGET_GROWTH_MB = 10.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=60.0, help="wall seconds per market day")
    args = parser.parse_args()
    runs = []
    for i in range(args.runs):
        result = asyncio.run(run_soak(seconds=args.seconds, kills=0, seed=100 + i, verbose=False))
        f = result.figures
        runs.append(f)
        print(f"run {i + 1}: RSS after warm-up {f['rss_after_warmup_mb']} MB, after the day {f['rss_after_soak_mb']} MB, "
              f"growth {f['rss_growth_mb']} MB; invariants {'ok' if result.ok else 'FAILED'}")

    def agg(key: str) -> dict[str, float]:
        values = [r[key] for r in runs]
        return {"median": statistics.median(values), "min": min(values), "max": max(values)}

    figures = {"runs": args.runs, "seconds_per_day": args.seconds, "symbols": runs[0]["symbols"],
               "rss_after_warmup_mb": agg("rss_after_warmup_mb"), "rss_after_soak_mb": agg("rss_after_soak_mb"),
               "rss_growth_mb": agg("rss_growth_mb"), "target_growth_mb": TARGET_GROWTH_MB,
               "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    merge_results("memory", figures)
    g = figures["rss_growth_mb"]["median"]
    print(f"memory growth over the day: median {g} MB {'OK' if g <= TARGET_GROWTH_MB else 'ABOVE TARGET'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
