"""``trading-bot doctor``: pre-flight checks plus the exchange report. Exit 0 when OK, 1 otherwise, 2 for bad config."""

from __future__ import annotations

import argparse
import asyncio

from bot.common_args import add_config_argument, configure_logging, load_config_or_exit
from bot.config import AppConfig


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``trading-bot doctor``."""
    add_config_argument(parser)
    parser.add_argument(
        "--contracts",
        action="store_true",
        help="list the exchange's perpetual contracts and their trading rules (cached for an hour) and exit",
    )
    parser.add_argument(
        "--exchange",
        default="bingx",
        help="with --contracts: bingx or any ccxt exchange id (default: %(default)s)",
    )
    parser.add_argument(
        "--all",
        action="store_true",
        help="with --contracts: every contract, not only the configured symbols",
    )


def run(args: argparse.Namespace) -> int:
    """Entry point used by ``bot.cli``."""
    config = load_config_or_exit(args)
    if isinstance(config, int):
        return config
    configure_logging(config, console=False)
    if args.contracts:
        from engine.data.cli import doctor_contracts

        return asyncio.run(doctor_contracts(config, exchange=args.exchange, symbols=() if args.all else None))
    return asyncio.run(_doctor(config))


async def _doctor(config: AppConfig) -> int:
    from bot.logging_setup import secrets
    from db.database import close_db, init_db
    from engine.exchange.bingx.doctor import render_doctor_report, run_doctor

    from .preflight import PreflightReport, run_preflight

    try:
        await init_db(config.database.url)
    except Exception as exc:  # noqa: BLE001 - reported as a failed check
        report = PreflightReport()
        report.add("database", False, secrets.redact(f"{type(exc).__name__}: {exc}"))  # printed: not through logging
        print(report.text())
        return 1
    try:
        async with config.exchange.rest_client(max_retries=1) as client:
            report = await run_preflight(config, client)
            # The exchange's own view: clock offset, contract rules, balance, positions, mode, leverage.
            exchange_report = await run_doctor(client, config.symbols)
    finally:
        await close_db()
    print(report.text())
    print()
    print(render_doctor_report(exchange_report))
    return 0 if report.ok else 1
