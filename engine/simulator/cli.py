"""Command line for the simulator (``trading-bot simulate``).

Example::

    trading-bot simulate --data ../shared/data/market/NANO_USDT-1m.csv.gz --symbol NANO-USDT --speed max

``--data``/``--symbol`` pairs may repeat (one market each). Once listening, one line
``SIMULATOR READY rest=<url> ws=<url>`` is printed on stdout so scripts can find the
port (useful with ``--port 0``). Runs until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path

from engine.timeparse import utc_ms_argument

from .faults import Faults
from .markets import MarketSpec
from .server import SimulatorServer

log = logging.getLogger(__name__)

DEFAULT_KEY = "test-key"
DEFAULT_SECRET = "test-secret"


def _speed(text: str) -> float | None:
    if text.strip().lower() == "max":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("speed must be a positive number or 'max'") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("speed must be a positive number or 'max'")
    return value


def _decimal(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value.is_finite():
        raise argparse.ArgumentTypeError(f"not a number: {text!r}")
    return value


# --start: the same forms as backtest and download accept
parse_start = utc_ms_argument


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the simulator's options to ``parser``."""
    parser.add_argument("--data", action="append", required=True, metavar="FILE.csv.gz",
                        help="1m candle file (open_time_ms,open,high,low,close,volume); repeat with --symbol")
    parser.add_argument("--symbol", action="append", required=True, metavar="SYM-USDT",
                        help="symbol the matching --data file is served as")
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="TCP port (default 8080; 0 = any free port)")
    parser.add_argument("--speed", type=_speed, default=1.0, help="replay speed multiple, or 'max' (default 1)")
    parser.add_argument("--api-key", default=None, help="accepted API key (default: $BINGX_API_KEY or test-key)")
    parser.add_argument("--api-secret", default=None, help="accepted secret (default: $BINGX_API_SECRET or test-secret)")
    parser.add_argument("--balance", type=_decimal, default=Decimal("10000"), help="starting USDT balance")
    parser.add_argument("--start", type=parse_start, default=None,
                        help="replay start (epoch ms or ISO-8601 UTC; default: one day into the data)")
    parser.add_argument("--listen-key-ttl", type=float, default=3600.0, help="listen key lifetime in seconds (default 3600)")
    parser.add_argument("--paused", action="store_true", help="start with the replay clock paused (see POST /_sim/clock)")
    parser.add_argument("--one-way", action="store_true", help="start in one-way position mode (default: hedge)")
    parser.add_argument("--leverage", type=int, default=20, help="default leverage per symbol (default 20)")
    parser.add_argument("--recv-window", choices=("auto", "strict", "relaxed"), default="auto",
                        help="timestamp check: strict, relaxed, or auto (strict only at speed 1)")
    parser.add_argument("--rate-limit-scale", type=float, default=1.0, help="multiply every rate limit (0 = off)")
    parser.add_argument("--rate-limit-status", type=int, choices=(200, 429), default=200,
                        help="HTTP status of a 100410 answer (default 200)")
    parser.add_argument("--funding-rate", type=_decimal, default=None, help="funding rate per 8 h for every market")
    parser.add_argument("--cap-pending-stops", action="store_true",
                        help="refuse a closing stop (110406) / take-profit (110407) that would take the pending quantity "
                        "of its kind above the position size (protocol notes 6.2, UNCONFIRMED reading)")
    parser.add_argument("--ws-ping-interval", type=float, default=5.0, help="seconds between server Pings")
    parser.add_argument("--ws-idle-timeout", type=float, default=30.0, help="drop a silent client after this many seconds")
    faults = parser.add_argument_group("fault injection")
    faults.add_argument("--ws-drop-every", type=float, default=0.0, metavar="S", help="drop all WebSockets every S seconds")
    faults.add_argument("--rest-5xx-fraction", type=float, default=0.0, metavar="F", help="answer this fraction of REST calls with 5xx")
    faults.add_argument("--rest-5xx-status", type=int, default=None, help="5xx status to use (default: random 500/502/503/504)")
    faults.add_argument("--rest-5xx-after", action="store_true", help="process the request before answering 5xx")
    faults.add_argument("--hang-orders", type=int, default=0, metavar="N", help="accept the next N orders but never answer")
    faults.add_argument("--latency-ms", type=float, default=0.0, help="delay every REST answer")
    faults.add_argument("--latency-jitter-ms", type=float, default=0.0, help="extra random delay (uniform 0..J)")
    faults.add_argument("--clock-skew-ms", type=int, default=0, help="skew the server clock")
    faults.add_argument("--force-rate-limit", type=float, default=0.0, metavar="S", help="answer 100410 for the first S seconds")
    faults.add_argument("--reject-next-order", type=int, action="append", default=[], metavar="CODE",
                        help="reject the next order with this error code (repeatable)")
    faults.add_argument("--fault-seed", type=int, default=20240101, help="seed for random faults")


def build_server(args: argparse.Namespace) -> SimulatorServer:
    """A configured (not started) server from parsed arguments; ``ValueError`` on bad input."""
    if len(args.data) != len(args.symbol):
        raise ValueError("give one --symbol for every --data file")
    specs = []
    for data, symbol in zip(args.data, args.symbol):
        path = Path(data)
        if not path.is_file():
            raise ValueError(f"no such data file: {data}")
        spec = MarketSpec(symbol=symbol.strip().upper(), candles=path)
        if args.funding_rate is not None:
            spec.funding_rate = args.funding_rate
        specs.append(spec)
    api_key = args.api_key or os.environ.get("BINGX_API_KEY") or DEFAULT_KEY
    api_secret = args.api_secret or os.environ.get("BINGX_API_SECRET") or DEFAULT_SECRET
    if api_key == DEFAULT_KEY or api_secret == DEFAULT_SECRET:
        log.warning("simulator uses the default test credentials (key %r)", DEFAULT_KEY)
    faults = Faults(
        rest_5xx_fraction=args.rest_5xx_fraction,
        rest_5xx_status=args.rest_5xx_status,
        rest_5xx_after=args.rest_5xx_after,
        hang_next_orders=args.hang_orders,
        latency_ms=args.latency_ms,
        latency_jitter_ms=args.latency_jitter_ms,
        clock_skew_ms=args.clock_skew_ms,
        ws_drop_every_s=args.ws_drop_every,
        seed=args.fault_seed,
    )
    faults.update({"reject_next_orders": list(args.reject_next_order)})
    if args.force_rate_limit > 0:
        faults.force_rate_limit(args.force_rate_limit)
    strict = {"auto": None, "strict": True, "relaxed": False}[args.recv_window]
    return SimulatorServer(
        specs,
        api_key=api_key,
        api_secret=api_secret,
        balance=args.balance,
        speed=args.speed,
        start_ms=args.start,
        listen_key_ttl_s=args.listen_key_ttl,
        strict_recv_window=strict,
        host=args.host,
        port=args.port,
        paused=args.paused,
        hedge_mode=not args.one_way,
        default_leverage=args.leverage,
        ping_interval_s=args.ws_ping_interval,
        idle_timeout_s=args.ws_idle_timeout,
        rate_limit_scale=args.rate_limit_scale,
        rate_limit_http_status=args.rate_limit_status,
        cap_pending_stops=args.cap_pending_stops,
        faults=faults,
    )


async def _serve(server: SimulatorServer) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - non-POSIX
            pass
    await server.start()
    print(f"SIMULATOR READY rest={server.rest_url} ws={server.ws_url}", flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop()


def run(args: argparse.Namespace) -> int:
    """Run the simulator until SIGINT/SIGTERM; returns the process exit code."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        server = build_server(args)
    except ValueError as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(server))
    except OSError as exc:
        print(f"simulate: cannot start: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # bad data file content
        print(f"simulate: {exc}", file=sys.stderr)
        return 2
    return 0
