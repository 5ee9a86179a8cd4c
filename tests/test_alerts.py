"""Alerts: levels, routing, dedup, the persisted outbox, retries and a chat outage."""

from __future__ import annotations

import asyncio
import inspect
from datetime import UTC, datetime, timedelta

import pytest

from alerts import (
    AlertDelivery,
    AlertPublisher,
    DeliveryError,
    OutgoingAlert,
    RetryPolicy,
    Route,
    events,
    routes_from_config,
)
from bot.telegram_adapter import TelegramAlertSender
from db.models import AlertOutbox, AlertStatus
from tests.chatops_fixtures import CHAT, ERROR_CHAT, TOKEN, make_config, telegram  # noqa: F401  (telegram: a fixture)


class VirtualClock:
    """Time that moves only when the code under test sleeps (a minute passes in milliseconds)."""

    def __init__(self) -> None:
        self.t = datetime(2024, 1, 1, tzinfo=UTC)
        self.on_advance: list = []

    def now(self) -> datetime:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)
        for hook in self.on_advance:
            hook(self.t)
        await asyncio.sleep(0.001)


class RecordingSender:
    """An in-process destination for routing tests (delivery over HTTP is tested elsewhere)."""

    def __init__(self, name: str, fail_with: Exception | None = None) -> None:
        self.name = name
        self.fail_with = fail_with
        self.got: list[OutgoingAlert] = []

    async def send(self, alert: OutgoingAlert) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.got.append(alert)


async def _drain(publisher: AlertPublisher, delivery: AlertDelivery) -> None:
    await publisher.flush()
    await delivery.run_once()


async def test_levels_routing_and_dedup(db_url: str) -> None:
    config = make_config(alerts={"stop_moved": "off", "reconnect": "silent"})
    routes = routes_from_config(config)
    assert routes == [Route("telegram", "telegram", "telegram_errors"), Route("discord", "discord", "discord_errors")]
    publisher = AlertPublisher(config.alerts, routes)
    senders = {n: RecordingSender(n) for n in ("telegram", "telegram_errors", "discord", "discord_errors")}
    delivery = AlertDelivery(config.alerts, list(senders.values()))
    await publisher.start()
    try:
        assert publisher.publish(events.stop_moved("BTC-USDT", "LONG", 57000, 60000, "breakeven", "7")) is False
        assert publisher.publish(events.reconnect("market")) is True
        publisher.publish(events.reconnect("market"))  # same key inside the window: one delivery
        publisher.publish(events.error("feed", "socket closed unexpectedly"))
        publisher.publish(events.risk_rejection("ETH-USDT", "trend_distance_short", "max open positions"))
        await _drain(publisher, delivery)
    finally:
        await publisher.stop()
    assert [a.event_type for a in senders["telegram"].got] == ["reconnect", "risk_rejection"]
    assert [a.event_type for a in senders["telegram_errors"].got] == ["error"]
    assert [a.event_type for a in senders["discord_errors"].got] == ["error"]
    assert senders["telegram"].got[0].silent is True and senders["telegram"].got[1].silent is False
    assert senders["telegram_errors"].got[0].reply.title == "Error in feed"
    assert publisher.deduplicated == 2  # the second reconnect, for each transport
    assert await AlertOutbox.filter(event_type="stop_moved").count() == 0


async def test_failures_backoff_then_fail_for_good(db_url: str) -> None:
    clock = VirtualClock()
    config = make_config(alerts={"max_attempts": 3})
    publisher = AlertPublisher(config.alerts, [Route("telegram", "telegram")])
    flaky = RecordingSender("telegram", DeliveryError("502 from chat"))
    delivery = AlertDelivery(config.alerts, [flaky], policy=RetryPolicy(base_s=2, factor=2, max_s=10), now=clock.now, sleep=clock.sleep)
    await publisher.start()
    publisher.publish(events.error("x", "first"))
    publisher.publish(events.error("x", "second"))
    await publisher.flush()
    await publisher.stop()
    await delivery.run_once()
    first, second = await AlertOutbox.all().order_by("id")
    assert (first.attempts, first.next_attempt_at) == (1, clock.t + timedelta(seconds=2))
    assert second.attempts == 0  # held back: alerts keep their order
    await clock.sleep(1)
    assert await delivery.run_once() == 0 and (await AlertOutbox.get(id=first.id)).attempts == 1  # not due yet
    await clock.sleep(1)
    await delivery.run_once()
    row = await AlertOutbox.get(id=first.id)
    assert (row.attempts, row.next_attempt_at) == (2, clock.t + timedelta(seconds=4))
    await clock.sleep(4)
    await delivery.run_once()
    assert (await AlertOutbox.get(id=first.id)).status is AlertStatus.FAILED
    assert (await AlertOutbox.get(id=first.id)).last_error == "DeliveryError: 502 from chat"
    # a permanent error fails at once, and the next row then goes out
    flaky.fail_with = DeliveryError("chat not found", permanent=True)
    await delivery.run_once()
    assert (await AlertOutbox.get(id=second.id)).status is AlertStatus.FAILED
    assert (await AlertOutbox.get(id=second.id)).attempts == 1


async def test_pending_alerts_survive_a_restart(db_url: str) -> None:
    config = make_config()
    publisher = AlertPublisher(config.alerts, [Route("telegram", "telegram")])
    await publisher.start()
    for i in range(3):
        publisher.publish(events.error("db", f"problem {i}"))
    await publisher.stop()  # stop persists what was queued
    assert await AlertOutbox.filter(status=AlertStatus.PENDING).count() == 3
    later = RecordingSender("telegram")
    delivery = AlertDelivery(config.alerts, [later])  # a new process, same database
    await delivery.run_once()
    assert [a.reply.text for a in later.got] == ["problem 0", "problem 1", "problem 2"]




async def test_a_minute_long_chat_outage_loses_nothing_and_never_blocks_publishing(telegram) -> None:
    fake, adapter = telegram
    clock = VirtualClock()
    config = make_config(api_url=fake.api_url)
    publisher = AlertPublisher(config.alerts, routes_from_config(make_config(discord={"enabled": False})))
    delivery = AlertDelivery(
        config.alerts,
        [TelegramAlertSender(adapter, CHAT, "telegram"), TelegramAlertSender(adapter, ERROR_CHAT, "telegram_errors")],
        policy=RetryPolicy(base_s=2, factor=2, max_s=30),
        now=clock.now,
        sleep=clock.sleep,
    )
    publisher.on_persisted = delivery.kick
    assert not inspect.iscoroutinefunction(publisher.publish)  # the trading side never awaits delivery
    # The endpoint stays down for one virtual minute from the first failed delivery.
    outage: dict[str, datetime] = {}

    def advance(t: datetime) -> None:
        if "start" not in outage and fake.sent("sendMessage!down"):
            outage["start"] = t
        fake.down = "start" not in outage or t < outage["start"] + timedelta(seconds=60)

    clock.on_advance.append(advance)
    fake.down = True
    await publisher.start()
    await delivery.start()
    try:
        loop = asyncio.get_running_loop()
        slowest = 0.0
        for i in range(40):
            started = loop.time()
            publisher.publish(events.position_closed("BTC-USDT", "LONG", 61000 + i, 10 + i, 0.5, "target", str(i)))
            if i % 10 == 0:
                publisher.publish(events.error("feed", f"gap {i}"))
            slowest = max(slowest, loop.time() - started)
            await asyncio.sleep(0.002)  # the trading loop goes on while delivery fails
        assert slowest < 0.05  # a publish that waited for the network would take a timeout, not ms
        await fake.wait_for(lambda: delivery.sent == 44, timeout=20)
    finally:
        await delivery.stop()
        await publisher.stop()
    assert clock.t >= outage["start"] + timedelta(seconds=60)  # a full minute passed with the endpoint down
    assert len(fake.sent("sendMessage!down")) >= 8  # both chats retried through it
    texts = [c.params["text"] for c in fake.sent("sendMessage", CHAT)]
    assert len(texts) == 40 and all(f"Trade:</b> {i}" in t for i, t in zip(range(40), texts))  # all, in order
    assert len(fake.sent("sendMessage", ERROR_CHAT)) == 4
    rows = await AlertOutbox.all()
    assert len(rows) == 44 and all(r.status is AlertStatus.SENT for r in rows)
    assert max(r.attempts for r in rows) >= 5 and all(TOKEN not in r.last_error for r in rows)
