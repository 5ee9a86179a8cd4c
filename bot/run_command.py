"""``trading-bot run``: start the worker and stop it cleanly on SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from bot.common_args import add_config_argument, configure_logging, load_config_or_exit
from bot.config import AppConfig, TradingMode
from bot.worker import Worker

log = logging.getLogger(__name__)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``trading-bot run``."""
    add_config_argument(parser)


def run(args: argparse.Namespace) -> int:
    """Run until a stop signal; exit 0 after a clean shutdown."""
    config = load_config_or_exit(args)
    if isinstance(config, int):
        return config
    configure_logging(config)
    return asyncio.run(_serve(config))


async def _serve(config: AppConfig) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, _request_stop, stop, sig)

    if config.mode is TradingMode.LIVE:
        log.warning("=" * 60)
        log.warning("LIVE MODE: real orders will be sent to %s", "BingX VST (demo)" if config.exchange.testnet else "BingX")
        log.warning("=" * 60)

    worker = Worker(config)
    await worker.start()
    try:
        await stop.wait()
    finally:
        await worker.stop()
    return 0


def _request_stop(stop: asyncio.Event, sig: signal.Signals) -> None:
    log.info("received %s, shutting down", sig.name)
    stop.set()
