"""The bot process of the soak: ``TradingRuntime`` (live mode) against simulator URLs, until SIGTERM.

Runs the real execution runtime (streams, feed, engines, broker, order tracker, restart recovery)
with a SQLite database; every alert the broker raises is appended to a JSONL file and fsync'ed
before the hook returns (the soak checks that no alert of a trade is missing). The soak driver
kills this process with SIGKILL at random moments and starts it again on the same database.

    python bench/soak_bot.py --rest URL --ws URL --db sqlite://PATH --symbols A,B,C --alerts FILE
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.config import AppConfig  # noqa: E402
from db.database import close_db, init_db  # noqa: E402
from engine.execution.runtime import RuntimeOptions, TradingRuntime  # noqa: E402

READY = "SOAK BOT READY"


class AlertFile:
    """Append-only, fsync'ed JSONL of the alerts raised (the soak's stand-in for the chat outbox)."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    async def __call__(self, event_type: str, text: str, payload: dict[str, Any]) -> None:
        line = json.dumps({"type": event_type, "text": text, "payload": payload}, default=str) + "\n"
        os.write(self.fd, line.encode())
        os.fsync(self.fd)


async def run(args: argparse.Namespace) -> None:
    config = AppConfig.model_validate({
        "mode": "live", "symbols": args.symbols.split(","),
        "exchange": {"rest_url": args.rest, "ws_url": args.ws, "api_key": args.api_key, "api_secret": args.api_secret,
                     "request_timeout_s": 2.0},
        "database": {"url": args.db},
    })
    await init_db(args.db)
    options = RuntimeOptions(clock_interval_s=1.0, warmup_candles=300, fast_poll_s=0.5, slow_poll_s=2.0, fill_grace_s=1.0,
                             exit_grace_s=1.0, settle_timeout_s=10.0)
    runtime: TradingRuntime | None = None

    def market_clock() -> int:
        # the replay runs faster than the wall clock: exchange time is the newest trade seen
        assert runtime is not None
        seen = max((r.last_trade_ms for r in runtime.symbols.values()), default=0)
        return max(seen, runtime.rest.time.now_ms() if not runtime.symbols else seen)

    runtime = TradingRuntime(config, clock_ms=market_clock, on_alert=AlertFile(Path(args.alerts)), options=options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await runtime.rest.sync_time()
    await runtime.start()
    print(READY, flush=True)
    await stop.wait()
    try:
        await runtime.wait_idle(timeout_s=10)
    except (asyncio.TimeoutError, TimeoutError):
        logging.getLogger(__name__).warning("not idle at shutdown")
    await runtime.stop()
    await close_db()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rest", required=True)
    parser.add_argument("--ws", required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--symbols", required=True)
    parser.add_argument("--alerts", required=True)
    parser.add_argument("--api-key", default="soak-key")
    parser.add_argument("--api-secret", default="soak-secret")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
