"""The ``trading-bot`` command line: one entry point, one subcommand per job.

Each subcommand lives in its own module exposing ``configure_parser(parser)`` and
``run(args) -> int``; this module only routes. Modules are imported lazily so that
``trading-bot simulate`` does not pay for the chat libraries, and vice versa.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass
from typing import Sequence

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2  # bad config, bad arguments, or a feature that has not landed


@dataclass(frozen=True)
class Subcommand:
    """A CLI subcommand and the module that implements it (None: not available yet)."""

    name: str
    summary: str
    module: str | None


SUBCOMMANDS: tuple[Subcommand, ...] = (
    Subcommand("run", "run the 24/7 trading worker (paper or live, from config.yaml)", "bot.run_command"),
    Subcommand("backtest", "replay a candle file through the strategy engine and write a report", "engine.backtest.cli"),
    Subcommand("simulate", "serve a local BingX-compatible exchange replaying a candle file", "engine.simulator.cli"),
    Subcommand("doctor", "check config, database, exchange keys, clock and account state", "engine.risk.doctor_cli"),
    Subcommand("emergency-stop", "cancel every order and close every position at market", "engine.risk.cli"),
    Subcommand("download", "download historical klines to a CSV file", "engine.data.cli"),
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="trading-bot",
        description="BingX USDT-M perpetual futures trading bot.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for sub in SUBCOMMANDS:
        sub_parser = subparsers.add_parser(sub.name, help=sub.summary, description=sub.summary)
        if sub.module is None:
            sub_parser.set_defaults(_handler=_not_available(sub.name))
            sub_parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
            continue
        module = importlib.import_module(sub.module)
        module.configure_parser(sub_parser)
        sub_parser.set_defaults(_handler=module.run)
    return parser


def _not_available(name: str):  # type: ignore[no-untyped-def]
    def handler(_args: argparse.Namespace) -> int:
        print(f"trading-bot {name}: not available yet", file=sys.stderr)
        return EXIT_USAGE

    return handler


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._handler(args))
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover - `python -m bot.cli`
    sys.exit(main())
