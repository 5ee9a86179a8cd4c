"""Discord: slash commands through discord.py's own dispatch, buttons, channel alerts, webhook."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC

import discord
import pytest
from pydantic import SecretStr

from alerts import AlertDelivery, AlertPublisher, RetryPolicy, Route, events
from bot.discord_adapter import (
    DiscordAdapter,
    DiscordApprovalNotifier,
    DiscordChannelSender,
)
from bot.discord_render import render_embed_dicts
from bot.discord_webhook import DiscordWebhookSender
from commands import build_dispatcher
from commands.approvals import ApprovalService
from commands.model import Reply, Table
from db.models import AlertOutbox, AlertStatus, Approval, ApprovalStatus, AuditLog
from tests.chatops_fixtures import (
    D_ADMIN,
    D_CHANNEL,
    D_STRANGER,
    D_USER,
    WEBHOOK_TOKEN,
    make_config,
    make_signal,
)
from tests.fake_discord import APP_ID, FakeDiscord, interaction_payload
from tests.fakes_trading import FakeTrading


@dataclass
class Stack:
    fake: FakeDiscord
    trading: FakeTrading
    adapter: DiscordAdapter
    approvals: ApprovalService


@pytest.fixture
async def stack(db_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Stack]:
    async with FakeDiscord() as fake:
        monkeypatch.setattr(discord.http.Route, "BASE", fake.api_base)
        config = make_config()
        trading = FakeTrading()
        approvals = ApprovalService(config.approval, trading)
        adapter = DiscordAdapter(config.discord, build_dispatcher(config, trading, trading, approvals))
        approvals.add_notifier(DiscordApprovalNotifier(adapter, D_CHANNEL))
        await adapter.client.login(config.discord.token.get_secret_value())  # GET /users/@me on the fake
        try:
            yield Stack(fake, trading, adapter, approvals)
        finally:
            await approvals.close()
            await adapter.client.close()


def _feed(stack: Stack, payload: dict) -> str:
    """Hand an INTERACTION_CREATE to discord.py's parser, exactly as the gateway would."""
    stack.adapter.client._connection.parse_interaction_create(payload)
    return payload["id"]


def _callbacks(stack: Stack, interaction_id: str) -> list:
    return stack.fake.matching("POST", f"/interactions/{interaction_id}/")


def _followups(stack: Stack, interaction_id: str) -> list:
    """Follow-up messages sent with the interaction's token (after a deferral)."""
    return stack.fake.matching("POST", f"/webhooks/{APP_ID}/itoken{interaction_id}")


def _original_edits(stack: Stack, interaction_id: str) -> list:
    """Edits of the interaction's original message (for a button: the message the button is on)."""
    return stack.fake.matching("PATCH", f"/webhooks/{APP_ID}/itoken{interaction_id}/messages/@original")


async def test_slash_status_for_an_authorized_user(stack: Stack) -> None:
    iid = _feed(stack, interaction_payload(user_id=D_USER, channel_id=D_CHANNEL, command="status"))
    [callback] = await stack.fake.wait_for(lambda: _callbacks(stack, iid))
    assert callback.body["type"] == 4
    embed = callback.body["data"]["embeds"][0]
    assert embed["title"] == "Status: PAPER · RUNNING"
    assert "+0.85R" in embed["description"]
    assert callback.body["data"]["components"][0]["components"][0]["custom_id"] == "r:status"
    row = await AuditLog.get(action="status")
    assert (row.actor, row.outcome) == (f"discord:{D_USER}", "ok")


async def test_slash_commands_follow_the_same_authorization(stack: Stack) -> None:
    stranger = _feed(stack, interaction_payload(user_id=D_STRANGER, channel_id=D_CHANNEL, command="status"))
    wrong_channel = _feed(stack, interaction_payload(user_id=D_USER, channel_id=1234, command="status"))
    refused = _feed(stack, interaction_payload(user_id=D_USER, channel_id=D_CHANNEL, command="pause"))
    allowed = _feed(stack, interaction_payload(user_id=D_ADMIN, channel_id=D_CHANNEL, command="pause", args="maintenance"))
    dm = _feed(stack, interaction_payload(user_id=D_USER, channel_id=888, command="whoami", guild=False))
    [r] = await stack.fake.wait_for(lambda: _callbacks(stack, refused))
    assert "admins only" in r.body["data"]["embeds"][0]["title"]
    await stack.fake.wait_for(lambda: _callbacks(stack, allowed))
    [d] = await stack.fake.wait_for(lambda: _callbacks(stack, dm))
    assert {"name": "User id", "value": str(D_USER), "inline": False} in d.body["data"]["embeds"][0]["fields"]
    assert stack.trading.calls == [("pause", f"discord:{D_ADMIN}", "maintenance")]
    assert await AuditLog.filter(kind="unauthorized").count() == 2
    await asyncio.sleep(0.1)
    assert _callbacks(stack, stranger) == [] and _callbacks(stack, wrong_channel) == []


async def test_approval_buttons_on_discord(stack: Stack) -> None:
    signal = await make_signal()
    approval_id = await stack.approvals.request(signal)
    [post] = stack.fake.matching("POST", f"/channels/{D_CHANNEL}/messages")
    buttons = [c["custom_id"] for c in post.body["components"][0]["components"]]
    assert buttons == [f"a:{approval_id}:y", f"a:{approval_id}:n"]
    message_id = (await Approval.get(id=approval_id)).messages[0]["message_id"]
    message = stack.fake.messages[message_id]
    # a read-only user cannot decide; a stranger is ignored
    user_tap = _feed(stack, interaction_payload(user_id=D_USER, channel_id=D_CHANNEL, custom_id=buttons[0], message=message))
    stranger_tap = _feed(stack, interaction_payload(user_id=D_STRANGER, channel_id=D_CHANNEL, custom_id=buttons[0], message=message))
    [deferral] = await stack.fake.wait_for(lambda: _callbacks(stack, user_tap))
    assert deferral.body["type"] == 6  # buttons are acknowledged at once, answered after
    [refusal] = await stack.fake.wait_for(lambda: _followups(stack, user_tap))
    assert "Only admins" in refusal.body["content"] and refusal.body["flags"] == 64
    admin_tap = _feed(stack, interaction_payload(user_id=D_ADMIN, channel_id=D_CHANNEL, custom_id=buttons[0], message=message))
    decision = await asyncio.wait_for(stack.approvals.wait(approval_id), 5)
    assert decision.approved and decision.decided_by == f"discord:{D_ADMIN}"
    [ack] = await stack.fake.wait_for(lambda: _followups(stack, admin_tap))
    assert ack.body["content"] == "Approved"
    edit = await stack.fake.wait_for(lambda: stack.fake.matching("PATCH", f"/messages/{message_id}"))
    assert "APPROVED" in edit[0].body["embeds"][0]["title"] and edit[0].body["components"] == []
    assert _callbacks(stack, stranger_tap) == [] and _followups(stack, stranger_tap) == []
    assert (await Approval.get(id=approval_id)).status is ApprovalStatus.APPROVED


async def test_stop_confirmation_on_discord(stack: Stack) -> None:
    ask = _feed(stack, interaction_payload(user_id=D_ADMIN, channel_id=D_CHANNEL, command="stop"))
    [reply] = await stack.fake.wait_for(lambda: _callbacks(stack, ask))
    confirm = reply.body["data"]["components"][0]["components"][0]["custom_id"]
    press = _feed(stack, interaction_payload(user_id=D_ADMIN, channel_id=D_CHANNEL, custom_id=confirm, message={"id": "1", "channel_id": str(D_CHANNEL)}))
    [deferral] = await stack.fake.wait_for(lambda: _callbacks(stack, press))
    assert deferral.body["type"] == 6  # DEFERRED_UPDATE_MESSAGE, then the question is replaced by the result
    [edit] = await stack.fake.wait_for(lambda: _original_edits(stack, press))
    assert edit.body["embeds"][0]["title"] == "Emergency stop done: flat"
    assert stack.trading.calls == [("emergency_stop", f"discord:{D_ADMIN}")]


async def test_channel_alerts_through_the_bot(stack: Stack) -> None:
    sender = DiscordChannelSender(stack.adapter, D_CHANNEL)
    from alerts.senders import OutgoingAlert

    await sender.send(OutgoingAlert(1, "exit", events.position_closed("BTC-USDT", "LONG", 61000, 95, 1.9, "target", "7").reply, silent=True))
    [post] = stack.fake.matching("POST", f"/channels/{D_CHANNEL}/messages")
    assert post.body["embeds"][0]["title"] == "Closed LONG BTC-USDT: +95.00 (+1.90R)"
    assert post.body["flags"] == 4096  # silent


def test_embeds_stay_within_discord_limits() -> None:
    rows = tuple((f"key{i}", "v" * 80) for i in range(300))
    reply = Reply(title="T" * 400, text="x" * 9000, fields=[(f"f{i}" * 100, "y" * 2000) for i in range(40)], tables=[Table(("k", "v"), rows, "big")])
    messages = render_embed_dicts(reply)
    assert len(messages) > 1
    for embeds in messages:
        assert len(embeds) <= 10
        total = 0
        for e in embeds:
            assert len(e.get("title", "")) <= 256 and len(e.get("description", "")) <= 4096 and len(e.get("fields", [])) <= 25
            for f in e.get("fields", []):
                assert len(f["name"]) <= 256 and len(f["value"]) <= 1024
                total += len(f["name"]) + len(f["value"])
            total += len(e.get("title", "")) + len(e.get("description", ""))
            assert e.get("description", "").count("```") % 2 == 0
        assert total <= 6000
    text = "".join(e.get("description", "") for m in messages for e in m)
    assert all(f"key{i} " in text for i in range(300))


async def test_webhook_alerts_reach_the_endpoint(db_url: str, caplog: pytest.LogCaptureFixture, tmp_path) -> None:
    caplog.set_level(logging.DEBUG)
    async with FakeDiscord() as fake:
        url = fake.webhook_url(WEBHOOK_TOKEN)
        config = make_config(webhook_url=url, discord={"enabled": False})
        from alerts import routes_from_config

        routes = routes_from_config(config)
        assert [r.main for r in routes] == ["telegram", "discord_webhook"]
        publisher = AlertPublisher(config.alerts, [Route("discord_webhook", "discord_webhook")])
        sender = DiscordWebhookSender(SecretStr(url))
        delivery = AlertDelivery(config.alerts, [sender], policy=RetryPolicy(base_s=0.02, max_s=0.1))
        publisher.on_persisted = delivery.kick
        await publisher.start()
        await delivery.start()
        try:
            fake.webhook_429 = 1
            publisher.publish(events.entry_filled("BTC-USDT", "LONG", "multi_timeframe_long", 0.01, 60000, 57000, 30, "7"))
            publisher.publish(events.reconnect("market"))
            publisher.publish(events.reconnect("market"))  # deduplicated
            from datetime import datetime, timedelta
            from decimal import Decimal

            from alerts.chart import render_equity_chart

            t0 = datetime(2024, 1, 1, tzinfo=UTC)
            chart = await render_equity_chart([(t0 + timedelta(hours=i), Decimal(10000 + i)) for i in range(10)], tmp_path / "c.png")
            publisher.publish(events.daily_summary("2024-01-01", [("Net PnL", "+5.00")], chart))
            await publisher.flush()
            await fake.wait_for(lambda: len([r for r in fake.matching("POST", "/api/webhooks/555/") if "embeds" in (r.body or {})]) >= 4, timeout=5)
            await fake.wait_for(lambda: delivery.sent == 3)
        finally:
            await delivery.stop()
            await publisher.stop()
            await sender.close()
        posts = fake.matching("POST", "/api/webhooks/555/")
        titles = [p.body["embeds"][0]["title"] for p in posts]
        assert titles == ["Opened LONG BTC-USDT @ 60000", "Opened LONG BTC-USDT @ 60000", "Reconnected: market", "Daily summary 2024-01-01"]
        assert posts[2].body["flags"] == 4096  # reconnect alerts are silent by default
        assert posts[3].body["_files"]["files[0]"] > 1000 and posts[3].body["embeds"][0]["image"]["url"] == "attachment://chart.png"
        rows = await AlertOutbox.all().order_by("id")
        assert [r.status for r in rows] == [AlertStatus.SENT] * 3
        assert rows[0].attempts == 2 and publisher.deduplicated == 1
        for row in rows:
            assert WEBHOOK_TOKEN not in f"{row.text}{row.payload}{row.last_error}{row.destination}"
        # (the fake server's own access log prints its URL; the bot's loggers never do)
        ours = [r for r in caplog.records if r.name.split(".")[0] in ("bot", "commands", "alerts")]
        assert ours and all(WEBHOOK_TOKEN not in r.getMessage() for r in ours)


async def test_webhook_permanent_error_is_not_retried(db_url: str) -> None:
    async with FakeDiscord() as fake:
        sender = DiscordWebhookSender(SecretStr(f"http://127.0.0.1:{fake.port}/api/v10/nowhere/{WEBHOOK_TOKEN}"))
        from alerts.senders import DeliveryError, OutgoingAlert

        with pytest.raises(DeliveryError) as info:
            await sender.send(OutgoingAlert(1, "error", Reply(title="x"), silent=False))
        await sender.close()
        assert info.value.permanent and WEBHOOK_TOKEN not in str(info.value)
