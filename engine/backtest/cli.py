"""``trading-bot backtest``: run the engine over a candle file and write the report files.

The lead's CLI calls ``configure_parser(subparser)`` and ``run(args)``; ``python -m
engine.backtest.cli`` runs it standalone.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

import yaml
from pydantic import ValidationError

from engine.market.candle import Candle, read_candles_csv
from engine.timeparse import utc_ms_argument
from strategies.params import StrategiesConfig

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


# --from/--to: shared with simulate and download
parse_time_ms = utc_ms_argument


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the backtest options to ``parser``."""
    parser.add_argument("--data", required=True, type=Path, help="1m candle CSV (optionally .gz): open_time_ms,open,high,low,close,volume")
    parser.add_argument("--symbol", required=True, help="symbol name used in signals and trade ids, e.g. BTC-USDT")
    parser.add_argument("--config", type=Path, default=None, help="config.yaml whose `strategies:` section to use (default: built-in defaults)")
    parser.add_argument("--from", dest="from_ms", type=parse_time_ms, default=None, help="first candle open time (inclusive, UTC)")
    parser.add_argument("--to", dest="to_ms", type=parse_time_ms, default=None, help="end time (exclusive, UTC)")
    parser.add_argument("--balance", type=float, default=10_000.0, help="starting balance in the quote currency (default 10000)")
    parser.add_argument("--out", required=True, type=Path, help="output directory (created if missing)")
    parser.add_argument("--no-report", action="store_true", help="skip report.html and equity.png")
    return parser


def load_strategies_config(path: Path | None) -> StrategiesConfig:
    """``StrategiesConfig`` from a config file (through ``bot.config.load_config`` when available)."""
    if path is None:
        return StrategiesConfig()
    try:
        from bot.config import load_config
    except ImportError:
        load_config = None
    if load_config is not None:
        return load_config(path).strategies
    raw: Any = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    section = raw.get("strategies", {}) if isinstance(raw, dict) else {}
    return StrategiesConfig.model_validate(section or {})


def select_range(candles: list[Candle], from_ms: int | None, to_ms: int | None) -> list[Candle]:
    """Candles with ``from_ms <= open_time_ms < to_ms``."""
    if from_ms is None and to_ms is None:
        return candles
    low = from_ms if from_ms is not None else -(2**62)
    high = to_ms if to_ms is not None else 2**62
    return [c for c in candles if low <= c.open_time_ms < high]


def run(args: argparse.Namespace) -> int:
    """Run the backtest described by ``args``; print a summary; return the exit code."""
    from engine.backtest.outputs import write_outputs
    from engine.backtest.runner import run_backtest

    if not args.data.is_file():
        print(f"error: data file not found: {args.data}", file=sys.stderr)
        return EXIT_USAGE
    if not args.balance > 0:
        print(f"error: --balance must be positive, got {args.balance}", file=sys.stderr)
        return EXIT_USAGE
    try:
        config = load_strategies_config(args.config)
    except (ValidationError, ValueError, OSError, yaml.YAMLError) as exc:
        print(f"error: cannot use config {args.config}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # bot.config.ConfigError and friends: a clear message, not a traceback
        print(f"error: cannot use config {args.config}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        candles = read_candles_csv(args.data)
    except (ValueError, OSError, EOFError) as exc:
        print(f"error: cannot read {args.data}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    candles = select_range(candles, args.from_ms, args.to_ms)
    if not candles:
        print("error: no candles in the selected range", file=sys.stderr)
        return EXIT_USAGE

    result = run_backtest(candles, args.symbol, config, balance=args.balance, progress=True)
    metrics = write_outputs(result, args.out)
    if not args.no_report:
        from engine.backtest.report import write_report

        write_report(result, metrics, args.out)
    print(format_summary(metrics))
    print(f"wrote {args.out}/signals.csv, trades.csv, metrics.json" + ("" if args.no_report else ", report.html, equity.png"))
    return EXIT_OK


def format_summary(metrics: dict[str, Any]) -> str:
    """A short plain-text table of the headline figures."""

    def f(value: Any, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    lines = [
        f"{metrics['symbol']}: {metrics['candles']} candles, engine {metrics['engine_seconds']:.3f} s",
        f"{'':22} {'trades':>6} {'win%':>6} {'PF':>6} {'R:R':>6} {'ret%':>8} {'maxDD%':>8}",
    ]
    blocks = {**metrics["strategies"], "overall": metrics["overall"]}
    for name, b in blocks.items():
        lines.append(
            f"{name:22} {b['trades']:>6} {f(b['win_rate_pct'], '.1f'):>6} {f(b['profit_factor'], '.2f'):>6} "
            f"{f(b['avg_win_loss_ratio'], '.2f'):>6} {b['total_return_pct']:>8.2f} {b['max_drawdown_pct']:>8.2f}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry point: ``python -m engine.backtest.cli --data ... --symbol ... --out ...``."""
    parser = configure_parser(argparse.ArgumentParser(prog="trading-bot backtest", description=__doc__))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
