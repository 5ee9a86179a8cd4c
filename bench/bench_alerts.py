"""How long does AlertPublisher.publish take while the chat endpoint is down vs up?

Prints per-call latency percentiles of ``publish()`` (the only thing the trading side calls)
with the Telegram endpoint answering normally, answering 502, and hanging without an answer.
Run: ``.venv/bin/python -m bench.bench_alerts``.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alerts import AlertDelivery, AlertPublisher, RetryPolicy, Route, events
from alerts.senders import OutgoingAlert
from bot.config import AlertsConfig
from db.database import close_db, init_db

CALLS = 5000


class Endpoint:
    """A sender whose behaviour switches: up, failing fast, or hanging."""

    name = "telegram"

    def __init__(self) -> None:
        self.mode = "up"

    async def send(self, alert: OutgoingAlert) -> None:
        if self.mode == "down":
            raise ConnectionError("502")
        if self.mode == "hang":
            await asyncio.sleep(3600)
        await asyncio.sleep(0.002)


async def measure(publisher: AlertPublisher, label: str) -> None:
    samples = []
    for i in range(CALLS):
        started = time.perf_counter_ns()
        publisher.publish(events.position_closed("BTC-USDT", "LONG", 60000 + i, 1, 0.1, "target", f"{label}{i}"))
        samples.append((time.perf_counter_ns() - started) / 1000)
        if i % 50 == 0:
            await asyncio.sleep(0)  # let the writer and delivery run, as a live loop would
    samples.sort()
    print(f"{label:>5}: publish p50 {statistics.median(samples):7.1f} us  p99 {samples[int(len(samples) * 0.99)]:7.1f} us  max {samples[-1]:8.1f} us")


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        await init_db(f"sqlite://{tmp}/bench.db")
        config = AlertsConfig(dedup_window_s=0, max_attempts=1000)
        endpoint = Endpoint()
        publisher = AlertPublisher(config, [Route("telegram", "telegram")])
        delivery = AlertDelivery(config, [endpoint], policy=RetryPolicy(base_s=0.05, max_s=0.5), send_timeout_s=60)
        publisher.on_persisted = delivery.kick
        await publisher.start()
        await delivery.start()
        for mode in ("up", "down", "hang"):
            endpoint.mode = mode
            await measure(publisher, mode)
        await delivery.stop()
        await publisher.stop(timeout_s=60)
        await close_db()


if __name__ == "__main__":
    asyncio.run(main())
