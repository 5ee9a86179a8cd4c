"""``trading-bot emergency-stop``: cancel every order, close every position at market, verify flat.

Asks for confirmation unless ``--yes``. Uses the exchange settings of the config (keys from
the environment). When the database is reachable the trading state becomes HALTED there too,
so a running bot stops opening positions, and the close orders are recorded.
Exit code: 0 when the account was verified flat with no open orders, 1 otherwise, 2 for
bad usage or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from bot.common_args import add_config_argument, configure_logging, load_config_or_exit
from bot.config import AppConfig

EXIT_OK, EXIT_NOT_FLAT, EXIT_USAGE = 0, 1, 2


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``trading-bot emergency-stop``."""
    add_config_argument(parser)
    parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    parser.add_argument("--no-db", action="store_true",
                        help="do not touch the database (use when it is unreachable or locked)")


def _confirmed(args: argparse.Namespace, target: str) -> bool:
    if args.yes:
        return True
    if not sys.stdin.isatty():
        print("trading-bot emergency-stop: refusing without --yes (no terminal to ask for confirmation)",
              file=sys.stderr)
        return False
    answer = input(f"Cancel EVERY open order and close EVERY position at market on {target}? Type 'yes': ")
    return answer.strip().lower() == "yes"


def run(args: argparse.Namespace) -> int:
    """Entry point used by ``bot.cli``."""
    config = load_config_or_exit(args)
    if isinstance(config, int):
        return config
    configure_logging(config)
    if not (config.exchange.api_key.get_secret_value() and config.exchange.api_secret.get_secret_value()):
        print("trading-bot emergency-stop: exchange.api_key / exchange.api_secret are empty; there is no exchange "
              "account to stop (paper mode keeps no exchange positions)", file=sys.stderr)
        return EXIT_USAGE
    from engine.exchange.bingx import resolve_urls

    rest_url, _ = resolve_urls(config.exchange.testnet, config.exchange.rest_url, config.exchange.ws_url)
    if not _confirmed(args, rest_url):
        print("emergency stop cancelled: nothing was done")
        return EXIT_USAGE
    return asyncio.run(_stop(config, rest_url, use_db=not args.no_db))


async def _stop(config: AppConfig, rest_url: str, *, use_db: bool) -> int:
    from db.database import close_db, init_db
    from .emergency import emergency_stop
    from .manager import RiskManager

    risk = None
    if use_db:
        try:
            await init_db(config.database.url)
            risk = RiskManager(config)
        except Exception as exc:  # noqa: BLE001 - the exchange matters more than the DB here
            print(f"warning: database unavailable ({type(exc).__name__}); continuing without it", file=sys.stderr)
            risk = None
    try:
        async with config.exchange.rest_client() as client:
            report = await emergency_stop(client, risk=risk, actor="cli",
                                          mode=config.mode.value if risk is not None else None)
    finally:
        if use_db:
            await close_db()
    print(report.text())
    return EXIT_OK if report.flat else EXIT_NOT_FLAT
