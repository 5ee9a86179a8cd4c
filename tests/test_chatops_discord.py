"""Discord at worker level, real sockets end to end.

1. Webhook only (``discord.webhook_url``, ``discord.enabled: false``): ``trading-bot run`` (subprocess,
   live mode) trades on the BingX simulator and its entry / partial / exit alerts reach a local fake
   webhook as embeds within Discord's limits; while the webhook answers 500 nothing is lost, and
   after it recovers every alert arrives exactly once, in order.
2. The Discord bot (``discord.enabled: true``): the worker runs in process so discord.py can be
   pointed at the local fake REST API (``tests.fake_discord``) and a local fake gateway
   (``tests.fake_discord_gateway``). Slash commands arrive over the gateway WebSocket exactly as
   Discord sends them; the worker's own dispatcher answers an authorized ``/status`` with the
   worker's real state and ignores a stranger; alerts go to the configured channel.

XRP/USDT minutes 2620-2690 (real data): at 120x the bot's long opens ~10 s after the replay
starts, books a 2R partial at minute 26 and is closed by its trailing stop at minute 54.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import discord
import pytest
import yaml

from bot.config import AppConfig
from bot.worker import Worker
from engine.execution.runtime import RuntimeOptions
from tests.chatops_fixtures import D_ADMIN, D_CHANNEL, D_STRANGER, D_USER, WEBHOOK_TOKEN
from tests.execution_sim import SYMBOL, simulator, window
from tests.fake_discord import APP_ID, FakeDiscord, interaction_payload
from tests.fake_discord_gateway import FakeGateway
from tests.worker_harness import BotProcess, wait_until, write_config

pytestmark = pytest.mark.timeout(90)

SPEED = 120.0
FAST = 240.0  # after the outage: the rest of the trade (~30 replay minutes) in ~8 s
DISCORD_TOKEN = "discord-bot-token-for-worker-tests-0123456789"

# Discord's documented limits (https://discord.com/developers/docs/resources/message#embed-object-embed-limits)
LIMITS = {"title": 256, "description": 4096, "fields": 25, "field_name": 256, "field_value": 1024, "footer": 2048,
          "author": 256, "total": 6000, "embeds": 10, "username": 80}


def embed_limit_problems(body: Any) -> list[str]:
    """What a Discord webhook would reject in ``body`` (empty when it is a valid embeds message)."""
    if not isinstance(body, dict):
        return ["body is not a JSON object"]
    embeds = body.get("embeds")
    if not isinstance(embeds, list) or not embeds:
        return ["no embeds"]
    problems = []
    if len(embeds) > LIMITS["embeds"]:
        problems.append(f"{len(embeds)} embeds")
    if len(str(body.get("username", ""))) > LIMITS["username"]:
        problems.append("username too long")
    total = 0
    for embed in embeds:
        title, description = embed.get("title", ""), embed.get("description", "")
        fields = embed.get("fields", [])
        if len(title) > LIMITS["title"] or len(description) > LIMITS["description"] or len(fields) > LIMITS["fields"]:
            problems.append("embed title/description/fields over the limit")
        if not (title or description or fields or embed.get("image")):
            problems.append("empty embed")
        for f in fields:
            if not f.get("name") or not f.get("value"):
                problems.append("empty field name or value")
            if len(f.get("name", "")) > LIMITS["field_name"] or len(f.get("value", "")) > LIMITS["field_value"]:
                problems.append("field over the limit")
            total += len(f.get("name", "")) + len(f.get("value", ""))
        total += len(title) + len(description) + len((embed.get("footer") or {}).get("text", ""))
        total += len((embed.get("author") or {}).get("name", ""))
    if total > LIMITS["total"]:
        problems.append(f"{total} characters over all embeds")
    return problems


class FakeWebhook(FakeDiscord):
    """The fake Discord webhook, refusing what Discord would refuse and answering 500 on demand."""

    def __init__(self) -> None:
        super().__init__()
        self.failing = False
        self.fail_at: set[int] = set()  # 1-based numbers of webhook POSTs to answer with 500
        self.answers: list[tuple[int, dict[str, Any]]] = []  # (status, body) of every webhook POST

    def _webhook(self, body: Any) -> Any:
        from aiohttp import web

        problems = embed_limit_problems(body)
        if problems:
            response = web.json_response({"message": "Invalid Form Body", "errors": problems, "code": 50035}, status=400)
        elif self.failing or len(self.answers) + 1 in self.fail_at:
            response = web.json_response({"message": "500: Internal Server Error", "code": 0}, status=500)
        else:
            response = super()._webhook(body)
        self.answers.append((response.status, body if isinstance(body, dict) else {}))
        return response

    def titles(self, status: int) -> list[str]:
        """Titles of the first embed of every POST answered with ``status``."""
        return [body["embeds"][0].get("title", "") for code, body in self.answers if code == status and body.get("embeds")]


def _has(titles: list[str], *needles: str) -> list[str]:
    return [t for t in titles if all(n in t for n in needles)]


def _outbox(db_path: Path) -> list[tuple[int, str, str, str, int]]:
    """(id, event type, status, first line of the text, attempts) of every webhook outbox row."""
    with sqlite3.connect(db_path) as db:
        rows = db.execute("select id, event_type, status, text, attempts from alert_outbox "
                          "where destination = 'discord_webhook' order by id").fetchall()
    return [(i, kind, status, text.split("\n", 1)[0], attempts) for i, kind, status, text, attempts in rows]


@pytest.mark.slow  # the bot as a subprocess through a whole trade: ~35 s
async def test_webhook_only_worker_delivers_trade_alerts_through_an_outage(tmp_path: Path) -> None:
    data, start_ms = window(2620, 2690)
    sim = simulator(data, start_ms)
    await sim.start()
    async with FakeWebhook() as hook:
        url = hook.webhook_url(WEBHOOK_TOKEN)
        bot = BotProcess(write_config(tmp_path, sim, discord={"enabled": False, "webhook_url": url}), tmp_path)
        try:
            bot.start()
            await bot.wait_started()
            await asyncio.sleep(0.5)  # whatever the start published is delivered before the outage
            delivered_before = len(hook.titles(200))

            hook.failing = True  # the webhook is down when the trade opens
            sim.set_speed(SPEED)
            sim.resume()
            await wait_until(lambda: len(_has(hook.titles(500), "opened")) >= 2, 40, "the entry alert refused twice")
            assert _has(hook.titles(200), "opened") == [], "nothing gets through while the webhook answers 500"
            hook.failing = False

            sim.set_speed(FAST)
            # after the recovery: the entry (retried), the 2R partial and the trailing-stop exit
            await wait_until(lambda: _has(hook.titles(200), "closed by"), 40, "the exit alert")
            code, _ = await bot.terminate()
            assert code == 0, bot.output()[-3000:]
        finally:
            bot.ensure_dead()
            await sim.stop()

    delivered = hook.titles(200)[delivered_before:]
    assert [status for status, _ in hook.answers if status not in (200, 500)] == [], "a message Discord would refuse"
    [opened] = _has(delivered, SYMBOL, "opened")
    [partial] = _has(delivered, SYMBOL, "partial")
    [closed] = _has(delivered, SYMBOL, "closed by")
    assert delivered.index(opened) < delivered.index(partial) < delivered.index(closed), delivered
    assert opened.startswith("[LIVE]") and "LONG" in opened

    # nothing lost: every stored alert was delivered exactly once, in the order it was stored
    rows = _outbox(tmp_path / "bot.db")
    assert rows and all(status == "sent" for _, _, status, _, _ in rows), rows
    assert hook.titles(200) == [title[:256] for _, _, _, title, _ in rows]
    entry_row = next(r for r in rows if r[1] == "entry")
    assert entry_row[4] >= 3, "the entry alert was retried through the outage"
    assert {"entry", "partial_exit", "exit"} <= {kind for _, kind, _, _, _ in rows}
    for _, body in hook.answers:
        assert body.get("allowed_mentions") == {"parse": []}  # alert text never pings anyone
    assert WEBHOOK_TOKEN not in bot.output()


async def test_a_long_alert_failing_midway_is_not_posted_twice() -> None:
    """An alert of several webhook messages whose second POST fails: the retry posts only the rest."""
    from pydantic import SecretStr

    from alerts.senders import DeliveryError, OutgoingAlert
    from bot.discord_webhook import DiscordWebhookSender
    from commands.model import Reply

    reply = Reply(title="Daily summary", fields=[(f"row {i}", "x" * 1000) for i in range(12)])  # > 6000 chars: 3 messages
    async with FakeWebhook() as hook:
        hook.fail_at = {2}
        sender = DiscordWebhookSender(SecretStr(hook.webhook_url(WEBHOOK_TOKEN)))
        try:
            with pytest.raises(DeliveryError) as failed:
                await sender.send(OutgoingAlert(1, "daily_summary", reply, silent=False))
            assert not failed.value.permanent and WEBHOOK_TOKEN not in str(failed.value)
            await sender.send(OutgoingAlert(1, "daily_summary", reply, silent=False))  # the outbox's retry
        finally:
            await sender.close()
    statuses = [status for status, _ in hook.answers]
    assert statuses == [200, 500, 200, 200], statuses
    delivered = [body for status, body in hook.answers if status == 200]
    names = [f["name"] for body in delivered for e in body["embeds"] for f in e.get("fields", [])]
    assert names == [f"row {i}" for i in range(12)], "every row exactly once, in order"
    assert all(embed_limit_problems(body) == [] for body in delivered)


# -- the Discord bot through the running worker ----------------------------------------------------


@pytest.fixture
async def discord_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Worker, FakeDiscord, FakeGateway]]:
    """A live worker on the simulator with the Discord bot enabled against the local fakes."""
    data, start_ms = window(2620, 2640)
    sim = simulator(data, start_ms)
    await sim.start()
    async with FakeDiscord() as api, FakeGateway(DISCORD_TOKEN) as gateway:
        monkeypatch.setattr(discord.http.Route, "BASE", api.api_base)
        monkeypatch.setattr(discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", gateway.url)
        discord_config = {"enabled": True, "token": DISCORD_TOKEN, "channel_id": D_CHANNEL,
                          "authorized_users": [D_USER], "admin_users": [D_ADMIN]}
        path = write_config(tmp_path, sim, discord=discord_config)
        worker = Worker(AppConfig.model_validate(yaml.safe_load(path.read_text())),
                        runtime_options=RuntimeOptions(warmup_candles=1000))
        try:
            await worker.start()
            assert worker._trading_task is not None
            await asyncio.wait_for(worker._trading_task, 30)
            await asyncio.wait_for(gateway.ready.wait(), 15)
            yield worker, api, gateway
        finally:
            await worker.stop()
            await sim.stop()


async def _slash(api: FakeDiscord, gateway: FakeGateway, user_id: int, command: str, args: str | None = None) -> str:
    """A slash command from ``user_id`` in the alert channel, delivered over the gateway; its interaction id."""
    payload = interaction_payload(user_id=user_id, channel_id=D_CHANNEL, command=command, args=args)
    await gateway.dispatch("INTERACTION_CREATE", payload)
    return payload["id"]


def _callbacks(api: FakeDiscord, interaction_id: str) -> list[Any]:
    return api.matching("POST", f"/interactions/{interaction_id}/")


async def test_discord_bot_through_the_running_worker(discord_worker: tuple[Worker, FakeDiscord, FakeGateway],
                                                      caplog: pytest.LogCaptureFixture) -> None:
    from db.models import AuditLog

    caplog.set_level(logging.INFO)
    worker, api, gateway = discord_worker
    # the worker's adapter logged in with the configured token and registered its slash commands
    assert [i["token"] for i in gateway.identifies] == [DISCORD_TOKEN] and gateway.connections == 1
    synced = await api.wait_for(lambda: api.matching("PUT", f"/applications/{APP_ID}/commands"), 10)
    names = {c["name"] for c in synced[-1].body}
    assert {"status", "pause", "resume", "stop", "approval"} <= names, names

    # an authorized user: /status answered with the running worker's real state
    asked = await _slash(api, gateway, D_USER, "status")
    [answer] = await api.wait_for(lambda: _callbacks(api, asked), 10)
    embed = answer.body["data"]["embeds"][0]
    assert answer.body["type"] == 4
    assert embed["title"] == "Status: LIVE · RUNNING", embed
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Open positions"].startswith("0 ") and fields["Approval mode"] == "off", fields
    assert embed_limit_problems({"embeds": answer.body["data"]["embeds"]}) == []
    row = await AuditLog.get(action="status", actor=f"discord:{D_USER}")
    assert row.outcome == "ok"
    client = worker.chatops.discord.client
    assert client.persistent_views == [], "sent button views are not kept in memory (routed by custom_id)"

    # a stranger is ignored (no answer at all) and audited; a read-only user cannot pause
    ignored = await _slash(api, gateway, D_STRANGER, "status")
    refused = await _slash(api, gateway, D_USER, "pause", "maintenance")
    [refusal] = await api.wait_for(lambda: _callbacks(api, refused), 10)
    assert "admins only" in refusal.body["data"]["embeds"][0]["title"]
    await asyncio.sleep(0.3)
    assert _callbacks(api, ignored) == []
    assert await AuditLog.filter(kind="unauthorized", actor=f"discord:{D_STRANGER}").count() == 1
    risk_status = await worker.risk.status(None)
    assert risk_status.state.value == "RUNNING", "the refused /pause changed nothing"

    # an admin's /pause reaches the worker's risk manager; its alert goes to the Discord channel
    paused = await _slash(api, gateway, D_ADMIN, "pause", "maintenance")
    await api.wait_for(lambda: _callbacks(api, paused), 10)
    assert (await worker.risk.status(None)).state.value == "PAUSED"
    posts = await api.wait_for(lambda: [p for p in api.matching("POST", f"/channels/{D_CHANNEL}/messages")
                                        if "PAUSED" in p.body["embeds"][0]["title"]], 10)
    assert "maintenance" in posts[0].body["embeds"][0]["title"]
    assert embed_limit_problems(posts[0].body) == []

    # still one gateway session: a failed start step never leaves a second client answering commands
    await asyncio.sleep(1.2)
    assert len(gateway.identifies) == 1 and gateway.connections == 1
    assert all(DISCORD_TOKEN not in r.getMessage() for r in caplog.records)
