"""Engine throughput: closed 1m candles per second through the live code path (one core).

The path measured is what live trading runs per closed candle: ``CandleStream.accept``
(validation, gaps, buffer) then ``SymbolEngine.on_candle`` (trade management, indicators, both
strategies, limits, sizing) with the simulated broker, plus the backtest's equity bookkeeping.
File reading and report writing are excluded.

    .venv/bin/python bench/bench_backtest.py              # largest file + a one-year series
    .venv/bin/python bench/bench_backtest.py --runs 7
    .venv/bin/python bench/bench_backtest.py --all-pairs  # `backtest` on every file, results table

Figures are printed and merged into ``bench/results.json`` under ``"backtest"`` (and
``"backtest_all_pairs"``). Target: >= 100,000 candles/s.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.backtest.outputs import write_outputs  # noqa: E402
from engine.backtest.report import write_report  # noqa: E402
from engine.backtest.runner import run_backtest  # noqa: E402
from engine.market.candle import ONE_MINUTE_MS, Candle, read_candles_csv, write_candles_csv  # noqa: E402
from strategies.params import MultiTimeframeLongParams, StrategiesConfig, TrendDistanceShortParams  # noqa: E402

MARKET = ROOT.parent / "shared" / "data" / "market"
RESULTS = ROOT / "bench" / "results.json"
YEAR_MINUTES = 365 * 24 * 60
TARGET = 100_000


def one_year_series(files: list[Path]) -> list[Candle]:
    """Real files joined end to end into 525,600 candles.

    Each segment starts one minute after the previous one ends (its own gaps kept); its prices are
    scaled so it opens at the previous close and its volumes so its first 20 candles match the
    previous 20 (returns and relative volumes, which is all the rules see, stay real).
    """
    out: list[Candle] = []
    for path in files:
        segment = read_candles_csv(path)
        if out:
            price = out[-1].close / segment[0].open
            tail = sum(c.volume for c in out[-20:]) / 20
            head = sum(c.volume for c in segment[:20]) / 20
            volume = tail / head if head > 0 else 1.0
            shift = out[-1].open_time_ms + ONE_MINUTE_MS - segment[0].open_time_ms
            segment = [
                Candle(c.open_time_ms + shift, c.open * price, c.high * price, c.low * price, c.close * price, c.volume * volume)
                for c in segment
            ]
        out.extend(segment)
        if len(out) >= YEAR_MINUTES:
            break
    return out[:YEAR_MINUTES]


def measure(candles: list[Candle], config: StrategiesConfig, runs: int, *, record_equity: bool = True) -> dict[str, Any]:
    """Median candles/s (and spread) of ``runs`` backtests over ``candles``."""
    rates = []
    seconds = []
    trades = signals = 0
    for _ in range(runs):
        result = run_backtest(candles, "BENCH", config, record_equity=record_equity)
        seconds.append(result.engine_seconds)
        rates.append(len(candles) / result.engine_seconds)
        trades, signals = len(result.positions), len(result.signals)
    return {
        "candles": len(candles),
        "runs": runs,
        "median_candles_per_s": round(statistics.median(rates)),
        "min_candles_per_s": round(min(rates)),
        "max_candles_per_s": round(max(rates)),
        "median_seconds": round(statistics.median(seconds), 4),
        "signals": signals,
        "trades": trades,
    }


def _line(label: str, m: dict[str, Any]) -> str:
    return (
        f"{label:44} {m['candles']:>8} candles  median {m['median_candles_per_s']:>8,} c/s "
        f"(min {m['min_candles_per_s']:,}, max {m['max_candles_per_s']:,}; {m['median_seconds']:.3f} s)  "
        f"{'OK' if m['median_candles_per_s'] >= TARGET else 'BELOW TARGET'}"
    )


def merge_results(key: str, figures: dict[str, Any]) -> None:
    """Update ``key`` in bench/results.json, keeping other benchmarks' entries."""
    data: dict[str, Any] = {}
    if RESULTS.is_file():
        try:
            data = json.loads(RESULTS.read_text())
        except json.JSONDecodeError:
            data = {}
    data[key] = figures
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(RESULTS)


def largest_candle_file() -> Path:
    """The 1m candle file with the most rows (counted, not guessed from the compressed size)."""
    return max(sorted(MARKET.glob("*-1m.csv.gz")), key=lambda p: sum(1 for _ in read_candles_csv(p)))


def bench_speed(runs: int) -> dict[str, Any]:
    largest = largest_candle_file()
    candles = read_candles_csv(largest)
    both = StrategiesConfig()
    long_only = StrategiesConfig(trend_distance_short=TrendDistanceShortParams(enabled=False))
    short_only = StrategiesConfig(multi_timeframe_long=MultiTimeframeLongParams(enabled=False))
    figures: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "largest_file": largest.name,
    }
    print(f"largest file: {largest.name}; {runs} runs each; target >= {TARGET:,} candles/s on one core")
    figures["largest_both_strategies"] = m = measure(candles, both, runs)
    print(_line("largest file, both strategies", m))
    figures["largest_both_strategies_no_equity_curve"] = m = measure(candles, both, runs, record_equity=False)
    print(_line("largest file, both, live path only", m))
    figures["largest_long_only"] = m = measure(candles, long_only, runs)
    print(_line("largest file, multi_timeframe_long only", m))
    figures["largest_short_only"] = m = measure(candles, short_only, runs)
    print(_line("largest file, trend_distance_short only", m))

    usdt = [MARKET / f"{p}-1m.csv.gz" for p in ("ADA_USDT", "DOGE_USDT", "EOS_USDT", "ETH_USDT", "IOTA_USDT", "XRP_USDT", "SOL_USDT", "ICP_USDT")]
    year = one_year_series(usdt)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ONE_YEAR-1m.csv.gz"
        write_candles_csv(path, year)
        year = read_candles_csv(path)  # the "file" goes through the normal reader
    figures["one_year_file"] = {"made_from": [p.name for p in usdt], "candles": len(year)}
    year_runs = max(3, runs // 2)
    figures["one_year_both_strategies"] = m = measure(year, both, year_runs)
    print(_line("one-year file (concatenated), both strategies", m))
    month = 30 * 24 * 60
    per_month = month / figures["largest_long_only"]["median_candles_per_s"], month / figures["largest_short_only"]["median_candles_per_s"]
    figures["seconds_per_month_per_strategy"] = {"multi_timeframe_long": round(per_month[0], 4), "trend_distance_short": round(per_month[1], 4)}
    print(f"engine time for a 30-day month: long {per_month[0]:.3f} s, short {per_month[1]:.3f} s")
    return figures


def _f(value: Any, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def bench_all_pairs(out_root: Path) -> dict[str, Any]:
    """Run the full backtest (outputs and report) on every candle file; print a Markdown table."""
    rows: dict[str, Any] = {}
    print("| pair | candles | strategy | trades | win % | PF | R:R | return % | max DD % |")
    print("|---|---|---|---|---|---|---|---|---|")
    for path in sorted(MARKET.glob("*-1m.csv.gz")):
        pair = path.name.removesuffix("-1m.csv.gz")
        candles = read_candles_csv(path)
        result = run_backtest(candles, pair)
        metrics = write_outputs(result, out_root / pair)
        write_report(result, metrics, out_root / pair)
        rows[pair] = {"candles": len(candles), "sha256": metrics["overall"]["trades_sha256"]}
        for name, block in {**metrics["strategies"], "overall": metrics["overall"]}.items():
            rows[pair][name] = {k: block[k] for k in ("trades", "win_rate_pct", "profit_factor", "avg_win_loss_ratio", "total_return_pct", "max_drawdown_pct")}
            print(
                f"| {pair} | {len(candles)} | {name} | {block['trades']} | {_f(block['win_rate_pct'], '.1f')} | "
                f"{_f(block['profit_factor'], '.2f')} | {_f(block['avg_win_loss_ratio'], '.2f')} | "
                f"{block['total_return_pct']:.2f} | {block['max_drawdown_pct']:.2f} |"
            )
        sys.stdout.flush()
        if not (out_root / pair / "report.html").is_file():
            raise SystemExit(f"{pair}: backtest did not complete")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="runs per measurement (median reported)")
    parser.add_argument("--all-pairs", action="store_true", help="run `backtest` on every candle file instead")
    parser.add_argument("--out", type=Path, default=None, help="--all-pairs output root (default: a temp dir)")
    args = parser.parse_args()
    if args.all_pairs:
        with tempfile.TemporaryDirectory() as tmp:
            rows = bench_all_pairs(args.out or Path(tmp))
        merge_results("backtest_all_pairs", rows)
        return 0
    figures = bench_speed(args.runs)
    figures["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    merge_results("backtest", figures)
    print(f"merged into {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
