"""Live feed throughput: kline pushes -> closed candles -> validation -> the trading engine.

Replays the largest candle file as BingX-style kline pushes (``--pushes`` per minute, the bar
final when the next minute's first push arrives) through ``MarketFeed`` into a simulated-broker
``BacktestSession``, on one asyncio loop, and reports closed candles per second and pushes per
second (median of ``--runs``). Merged into ``bench/results.json`` under ``"feed"``.

    .venv/bin/python bench/bench_feed.py
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

from bench_backtest import largest_candle_file, merge_results  # noqa: E402  (this script's folder is on sys.path)
from engine.backtest.contract import contract_from_candles  # noqa: E402
from engine.backtest.runner import BacktestSession  # noqa: E402
from engine.market.candle import Candle, read_candles_csv  # noqa: E402
from engine.market.events import KlineUpdate  # noqa: E402
from engine.market.feed import MarketFeed  # noqa: E402
from strategies.params import StrategiesConfig  # noqa: E402



def pushes_for(candles: list[Candle], per_minute: int, symbol: str) -> list[KlineUpdate]:
    """``per_minute`` cumulative pushes per candle; the last one carries the final values."""
    out = []
    for c in candles:
        for k in range(1, per_minute):
            frac = k / per_minute
            close = c.open + (c.close - c.open) * frac
            out.append(KlineUpdate(symbol, c.open_time_ms, c.open, max(c.open, close), min(c.open, close), close, c.volume * frac))
        out.append(KlineUpdate(symbol, c.open_time_ms, c.open, c.high, c.low, c.close, c.volume))
    return out


async def replay(updates: list[KlineUpdate], candles: list[Candle], symbol: str) -> tuple[float, int]:
    session = BacktestSession(symbol, StrategiesConfig(), contract_from_candles(candles), record_equity=False)
    feed = MarketFeed(symbol, session, warmup_candles=0)
    on_kline = feed.on_kline
    started = time.perf_counter()
    for update in updates:
        await on_kline(update)
    await feed.on_clock(candles[-1].open_time_ms + 120_000)
    return time.perf_counter() - started, session.candles


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pushes", type=int, default=3, help="kline pushes per minute (BingX sends about 60)")
    args = parser.parse_args()
    path = largest_candle_file()
    candles = read_candles_csv(path)
    symbol = "BENCH-USDT"
    updates = pushes_for(candles, args.pushes, symbol)
    times = []
    for _ in range(args.runs):
        seconds, closed = asyncio.run(replay(updates, candles, symbol))
        assert closed == len(candles), (closed, len(candles))
        times.append(seconds)
    median = statistics.median(times)
    figures = {
        "file": path.name,
        "candles": len(candles),
        "pushes_per_minute": args.pushes,
        "runs": args.runs,
        "median_seconds": round(median, 4),
        "median_candles_per_s": round(len(candles) / median),
        "median_pushes_per_s": round(len(updates) / median),
        "min_candles_per_s": round(len(candles) / max(times)),
        "max_candles_per_s": round(len(candles) / min(times)),
    }
    print(
        f"{path.name}: {len(candles)} candles as {len(updates)} kline pushes: median {figures['median_candles_per_s']:,} candles/s "
        f"({figures['median_pushes_per_s']:,} pushes/s; min {figures['min_candles_per_s']:,}, max {figures['max_candles_per_s']:,})"
    )
    merge_results("feed", figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
