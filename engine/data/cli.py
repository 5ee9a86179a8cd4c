"""``trading-bot download`` and the ``doctor --contracts`` entry point.

``trading-bot download --symbol BTC-USDT --interval 1m --from 2024-01-01 --to 2024-02-01 --out btc.csv.gz
[--exchange bingx|<ccxt id>] [--config F] [--fresh] [--fail-on-gaps] [--no-progress]``

Exit codes: 0 done (gaps in the exchange's data are reported on stderr), 1 failure (what was
fetched is kept for a rerun to resume; with ``--fail-on-gaps`` also when gaps were found),
2 bad arguments (dates, unknown exchange, symbol or interval, bad config).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from engine.timeparse import parse_utc_ms

if TYPE_CHECKING:  # pragma: no cover
    from bot.config import AppConfig, ExchangeConfig

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
MAX_GAP_LINES = 20


parse_time_ms = parse_utc_ms  # --from/--to (ValueError is reported by run() with exit code 2)


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``trading-bot download``."""
    from bot.common_args import add_config_argument

    parser.add_argument("--symbol", required=True, help="BingX-style symbol, e.g. BTC-USDT (or BTC/USDT:USDT)")
    parser.add_argument("--interval", default="1m", help="kline interval dividing a day: 1m, 5m, 1h, 1d ... "
                                                         "(default %(default)s)")
    parser.add_argument("--from", dest="start", required=True, metavar="DATE",
                        help="first candle open time (UTC): 2024-01-31, 2024-01-31T12:00 or epoch ms")
    parser.add_argument("--to", dest="end", default=None, metavar="DATE",
                        help="end of the range, exclusive (default: now; clipped to the newest closed candle)")
    parser.add_argument("--out", required=True, metavar="FILE",
                        help="output CSV (.csv.gz compresses), the format of shared/data/market")
    parser.add_argument("--exchange", default="bingx",
                        help="bingx (the project's client) or any ccxt exchange id, e.g. binanceusdm, kucoinfutures")
    parser.add_argument("--fresh", action="store_true",
                        help="ignore an existing output/partial file instead of resuming from it")
    parser.add_argument("--fail-on-gaps", action="store_true", help="exit 1 when the exchange's data has gaps")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_argument(parser)


def run(args: argparse.Namespace) -> int:
    """Entry point used by ``bot.cli``."""
    from bot.common_args import configure_logging, load_config_or_exit

    try:
        start_ms = parse_time_ms(args.start)
        end_ms = parse_time_ms(args.end) if args.end else int(datetime.now(UTC).timestamp() * 1000)
    except ValueError as exc:
        print(f"trading-bot download: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if end_ms <= start_ms:
        print("trading-bot download: --to must be after --from", file=sys.stderr)
        return EXIT_USAGE
    config = load_config_or_exit(args)
    if isinstance(config, int):
        return config
    configure_logging(config, console=False)
    try:
        return asyncio.run(download_command(
            exchange=args.exchange, symbol=args.symbol.strip().upper(), interval=args.interval, start_ms=start_ms,
            end_ms=end_ms, out=Path(args.out), exchange_config=config.exchange, fresh=args.fresh,
            fail_on_gaps=args.fail_on_gaps, progress=False if args.no_progress else None))
    except KeyboardInterrupt:
        print("trading-bot download: interrupted; rerun the same command to resume", file=sys.stderr)
        return EXIT_FAILURE


async def download_command(*, exchange: str, symbol: str, interval: str, start_ms: int, end_ms: int, out: Path,
                           exchange_config: ExchangeConfig | None = None, fresh: bool = False,
                           fail_on_gaps: bool = False, progress: bool | None = None,
                           stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Run one download and print its outcome; returns the exit code (see the module docstring)."""
    from .download import DownloadError, DownloadRequest, download_klines
    from .providers import (
        DataProviderError,
        UnknownSymbolError,
        UnsupportedIntervalError,
        create_provider,
    )
    from .symbols import SymbolError, to_bingx_symbol

    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    try:
        symbol = to_bingx_symbol(symbol)  # one spelling, so a resume finds its partial file
    except SymbolError as exc:
        print(f"trading-bot download: {exc}", file=stderr)
        return EXIT_USAGE
    try:
        provider = create_provider(exchange, exchange_config=exchange_config)
    except DataProviderError as exc:
        print(f"trading-bot download: {exc}", file=stderr)
        return EXIT_USAGE
    try:
        result = await download_klines(provider, DownloadRequest(symbol, interval, start_ms, end_ms, out, fresh),
                                       progress=progress)
    except (UnknownSymbolError, UnsupportedIntervalError) as exc:
        print(f"trading-bot download: {exc}", file=stderr)
        return EXIT_USAGE
    except (DownloadError, DataProviderError) as exc:
        print(f"trading-bot download: failed: {exc}", file=stderr)
        return EXIT_FAILURE
    finally:
        await provider.close()
    print(f"{out}: {result.candles} {symbol} {interval} candle(s) from {provider.name}, "
          f"{_utc(result.start_ms)} to {_utc(result.end_ms)} (exclusive); {result.fetched} fetched in "
          f"{result.requests} request(s), {result.reused} reused from an earlier run", file=stdout)
    if result.end_ms < result.requested_end_ms:
        print(f"note: the range ends at the newest closed candle ({_utc(result.end_ms)})", file=stderr)
    if result.gaps:
        print(f"warning: {len(result.gaps)} gap(s), {result.missing} candle(s) missing in the exchange's data:",
              file=stderr)
        for gap in result.gaps[:MAX_GAP_LINES]:
            print(f"  gap: {gap.describe()}", file=stderr)
        if len(result.gaps) > MAX_GAP_LINES:
            print(f"  ... and {len(result.gaps) - MAX_GAP_LINES} more", file=stderr)
        if fail_on_gaps:
            return EXIT_FAILURE
    return EXIT_OK


async def doctor_contracts(config: AppConfig | None = None, *, exchange: str = "bingx",
                           symbols: Sequence[str] | None = None, cache_dir: Path | None = None,
                           refresh: bool = False, out: TextIO | None = None) -> int:
    """``trading-bot doctor --contracts``: print the exchange's perpetual contracts and their rules.

    ``symbols`` limits the table (default: the configured symbols when ``config`` is given for
    BingX; pass ``()`` for every contract). The list is cached for an hour in ``cache_dir``
    (default ``~/.cache/trading-bot``). Returns 0, 1 when the exchange cannot be reached or a
    wanted symbol is not listed, 2 for an unknown exchange.
    """
    from .contracts import ContractDirectory, default_cache_dir, render_contracts
    from .providers import DataProviderError, create_provider

    out = out or sys.stdout
    try:
        provider = create_provider(exchange, exchange_config=config.exchange if config else None)
    except DataProviderError as exc:
        print(f"doctor --contracts: {exc}", file=out)
        return EXIT_USAGE
    if symbols is None:
        symbols = list(config.symbols) if (config is not None and provider.name == "bingx") else []
    directory = ContractDirectory.for_provider(provider, cache_dir=cache_dir or default_cache_dir())
    try:
        contracts = await directory.contracts(refresh=refresh)
    except DataProviderError as exc:
        print(f"doctor --contracts: {exc}", file=out)
        return EXIT_FAILURE
    finally:
        await provider.close()
    text = render_contracts(provider.name, contracts, age_s=directory.age_s, symbols=symbols)
    print(text, file=out)
    listed = {c.symbol.upper() for c in contracts} | {c.exchange_symbol.upper() for c in contracts}
    return EXIT_FAILURE if any(s.upper() not in listed for s in symbols) else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m engine.data.cli ...``: the download command without the rest of the CLI."""
    parser = argparse.ArgumentParser(prog="trading-bot download", description="download historical klines")
    configure_parser(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
