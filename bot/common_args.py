"""Arguments and start-up steps shared by the subcommands that read config.yaml."""

from __future__ import annotations

import argparse
import sys

from bot.config import DEFAULT_CONFIG_PATH, AppConfig, ConfigError, load_config
from bot.logging_setup import setup_logging

EXIT_USAGE = 2


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    """``--config PATH`` (default ./config.yaml; missing default file = embedded defaults)."""
    parser.add_argument(
        "--config",
        default=str(DEFAULT_CONFIG_PATH),
        metavar="PATH",
        help="configuration file (default: %(default)s; embedded defaults when it does not exist)",
    )


def load_config_or_exit(args: argparse.Namespace) -> AppConfig | int:
    """Load the config; on error print the message (which names the key) and return exit code 2."""
    try:
        return load_config(args.config)
    except ConfigError as exc:
        print(f"trading-bot: {exc}", file=sys.stderr)
        return EXIT_USAGE


def configure_logging(config: AppConfig, *, console: bool = True) -> None:
    """Set up logging from the config, registering every secret with the redaction filter."""
    setup_logging(
        level=config.logging.level,
        file=config.logging.file,
        json_lines=config.logging.json_lines,
        max_mb=config.logging.max_mb,
        backups=config.logging.backups,
        secret_values=config.secret_values(),
        console=console,
    )
