"""``make demo`` / ``python -m bot.demo``: the whole system trading within a minute, without any account.

Starts the local BingX simulator on a real candle file (XRP/USDT 1m from ``../shared/data/market``),
positioned 20 minutes before a known long signal, replayed at 60x; then the worker in LIVE mode
against it (real orders on the simulator: entry, stop and target on the "exchange", partial exit,
trailing stop), printing the console dashboard every 10 s. The database and logs go to a fresh
temporary directory. Ctrl-C stops both cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import tempfile
from pathlib import Path

from bot.common_args import configure_logging
from bot.config import AppConfig
from bot.worker import Worker

log = logging.getLogger(__name__)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "market" / "XRP_USDT-1m.csv.gz"
SYMBOL = "XRP-USDT"
FIRST_MINUTE = 2620  # the backtester's first XRP trade comes 20 minutes later
HISTORY = 1000
KEY, SECRET = "demo-key", "demo-secret"


async def main(data: Path, speed: float, dashboard_s: float, workdir: Path) -> int:
    """Run simulator and worker until Ctrl-C / SIGTERM."""
    from engine.market.candle import read_candles_csv
    from engine.simulator import MarketSpec, SimulatorServer

    candles = read_candles_csv(data)
    first = min(FIRST_MINUTE, len(candles) - 1)
    start_ms = candles[first].open_time_ms
    sim = SimulatorServer([MarketSpec(SYMBOL, candles[max(0, first - HISTORY):])], api_key=KEY, api_secret=SECRET,
                          paused=True, start_ms=start_ms, warmup_minutes=HISTORY)
    await sim.start()
    config = AppConfig.model_validate({
        "mode": "live",
        "symbols": [SYMBOL],
        "exchange": {"rest_url": sim.rest_url, "ws_url": sim.ws_url, "api_key": KEY, "api_secret": SECRET},
        "database": {"url": f"sqlite://{workdir / 'demo.db'}"},
        "logging": {"file": str(workdir / "demo.jsonl"), "level": "INFO"},
        "emergency": {"stop_file": str(workdir / "STOP")},
        "health": {"port": 0},
    })
    configure_logging(config)
    print(f"demo: simulator on {sim.rest_url} replaying {data.name} at {speed:g}x; data in {workdir}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    worker = Worker(config, dashboard_interval_s=dashboard_s)
    try:
        await worker.start()
        sim.set_speed(speed)
        sim.resume()
        await stop.wait()
    finally:
        await worker.stop()
        await sim.stop()
    return 0


def run() -> int:
    """Command-line entry."""
    parser = argparse.ArgumentParser(prog="python -m bot.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="1m candle file (default: XRP/USDT)")
    parser.add_argument("--speed", type=float, default=60.0, help="replay speed multiple (default 60)")
    parser.add_argument("--dashboard-s", type=float, default=10.0, help="dashboard period in seconds (default 10)")
    args = parser.parse_args()
    if not args.data.is_file():
        print(f"demo: data file not found: {args.data}", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="trading-bot-demo-"))
    return asyncio.run(main(args.data, args.speed, args.dashboard_s, workdir))


if __name__ == "__main__":
    sys.exit(run())
