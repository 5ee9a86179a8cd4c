"""``alerts.approval``: the sound level of approval requests, and ``off`` refused with approval mode.

Chat-ops runs in process (:class:`bot.chatops.ChatOps` over a worker stand-in holding what it reads)
with the real python-telegram-bot against the local fake Bot API server, and discord.py against the
local fake Discord REST API and gateway: the requests are posted exactly as a running bot posts them.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import discord
import pytest

from bot.chatops import APPROVAL_KEY, ChatOps
from bot.config import AppConfig, ConfigError, load_config
from bot.health import HealthState
from commands.ports import ApprovalRefusedError
from db.kv import kv_get, kv_set
from tests.chatops_fixtures import ADMIN, CHAT, D_CHANNEL, TOKEN, make_config, make_signal
from tests.fake_discord import FakeDiscord
from tests.fake_discord_gateway import FakeGateway
from tests.fake_telegram import FakeTelegram

pytestmark = pytest.mark.timeout(60)

DISCORD_SILENT_FLAG = 4096  # SUPPRESS_NOTIFICATIONS
TRUE = ("True", "true", True)


def worker_for(config: AppConfig) -> Any:
    """What :class:`ChatOps` reads of ``bot.worker.Worker`` (no trading side: none is needed here)."""
    return SimpleNamespace(config=config, mode=config.mode.value, runtime=None, risk=None,
                           alerts=SimpleNamespace(forward=None, flusher=None),
                           health=HealthState(stale_feed_s=120), started_at=time.monotonic())


@pytest.fixture
async def start_chatops(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """``await start(**config overrides)`` -> (chatops, fake Telegram, fake Discord REST)."""
    started: list[ChatOps] = []
    async with FakeTelegram(TOKEN) as tg, FakeDiscord() as dc:
        config = make_config(api_url=tg.api_url)
        async with FakeGateway(config.discord.token.get_secret_value()) as gateway:
            monkeypatch.setattr(discord.http.Route, "BASE", dc.api_base)
            monkeypatch.setattr(discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", gateway.url)

            async def start(**overrides: Any) -> tuple[ChatOps, FakeTelegram, FakeDiscord]:
                chatops = ChatOps(telegram_poll_timeout_s=1)
                started.append(chatops)
                await chatops.start(worker_for(make_config(api_url=tg.api_url, **overrides)))
                return chatops, tg, dc

            try:
                yield start
            finally:
                for chatops in started:
                    await chatops.stop()


async def _notifiers_ready(chatops: ChatOps, tg: FakeTelegram, names: set[str]) -> None:
    """Both transports started and registered their approval notifiers."""
    assert chatops.approvals is not None
    await tg.wait_for(lambda: {n.name for n in chatops.approvals.notifiers} >= names, 15)


# -- the sound of approval requests ----------------------------------------------------------------


@pytest.mark.parametrize(("level", "silent"), [("silent", True), ("on", False)])
async def test_approval_requests_follow_the_alert_level_on_telegram_and_discord(
        db_url: str, start_chatops: Any, level: str, silent: bool) -> None:
    chatops, tg, dc = await start_chatops(alerts={"approval": level})
    await _notifiers_ready(chatops, tg, {"telegram", "discord"})
    approval_id = await chatops.approvals.request(await make_signal())

    [message] = [c for c in tg.sent("sendMessage", CHAT) if f"a:{approval_id}:y" in str(c.params.get("reply_markup"))]
    assert (message.params.get("disable_notification") in TRUE) is silent
    [post] = [r for r in dc.matching("POST", f"/channels/{D_CHANNEL}/messages")
              if f"a:{approval_id}:y" in str(r.body.get("components"))]
    assert bool(post.body.get("flags", 0) & DISCORD_SILENT_FLAG) is silent


# -- off: refused in the config and by /approval on -------------------------------------------------


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_approval_mode_with_approval_alerts_off_is_a_config_error(tmp_path: Path) -> None:
    # unquoted YAML `off` reads as false: it must still be understood as the level off
    path = _write(tmp_path, "approval:\n  enabled: true\nalerts:\n  approval: off\n")
    with pytest.raises(ConfigError, match=r"approval\.enabled is true but alerts\.approval is off.*on or silent"):
        load_config(path, env={})


def test_approval_alerts_off_loads_while_approval_mode_is_off(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, "approval:\n  enabled: false\nalerts:\n  approval: off\n"), env={})
    assert (config.approval.enabled, config.alerts.approval) == (False, "off")
    silent = load_config(_write(tmp_path, "approval:\n  enabled: true\nalerts:\n  approval: silent\n"), env={})
    assert (silent.approval.enabled, silent.alerts.approval) == (True, "silent")


async def _reply(tg: FakeTelegram, text: str) -> str:
    """Send ``text`` as the admin in the alert chat; the text of the bot's answer."""
    before = len(tg.sent("sendMessage", CHAT))
    await tg.push_command(ADMIN, CHAT, text)
    await tg.wait_for(lambda: len(tg.sent("sendMessage", CHAT)) > before, 10)
    return re.sub(r"<[^>]+>", "", str(tg.sent("sendMessage", CHAT)[before].params["text"]))  # as the user reads it


async def test_approval_on_is_refused_from_chat_while_approval_alerts_are_off(db_url: str, start_chatops: Any) -> None:
    chatops, tg, _ = await start_chatops(approval={"enabled": False}, alerts={"approval": "off"}, discord={"enabled": False})
    await _notifiers_ready(chatops, tg, {"telegram"})

    answer = await _reply(tg, "/approval on")
    assert "Approval mode not turned on" in answer and "alerts.approval is off" in answer, answer
    assert not chatops.approval_active and chatops.ports.approval_enabled is False
    assert await kv_get(f"{APPROVAL_KEY}.paper", None) is None  # nothing stored for the next start either
    assert "Approval mode: off" in await _reply(tg, "/status")

    # the engine side refuses too, whoever asks
    with pytest.raises(ApprovalRefusedError, match="alerts.approval is off"):
        await chatops.ports.set_approval(True, "test")
    assert chatops.ports.approval_enabled is False and await kv_get(f"{APPROVAL_KEY}.paper", None) is None

    # turning it off is always allowed
    assert "Approval mode off" in await _reply(tg, "/approval off")
    assert await kv_get(f"{APPROVAL_KEY}.paper", None) is False


async def test_approval_on_from_chat_still_works_with_silent_requests(db_url: str, start_chatops: Any) -> None:
    chatops, tg, _ = await start_chatops(approval={"enabled": False}, alerts={"approval": "silent"}, discord={"enabled": False})
    await _notifiers_ready(chatops, tg, {"telegram"})
    assert "Approval mode on" in await _reply(tg, "/approval on")
    assert chatops.approval_active and await kv_get(f"{APPROVAL_KEY}.paper", None) is True


async def test_approval_switched_on_earlier_stays_on_with_alerts_off_and_asks_with_sound(
        db_url: str, start_chatops: Any) -> None:
    """An earlier run's /approval on outlives a later alerts.approval: off. Turning it off silently would let the
    bot trade without the approval the operator asked for, so it stays on and its requests are posted with sound."""
    from db.kv import kv_set

    await kv_set(f"{APPROVAL_KEY}.paper", True)
    chatops, tg, _ = await start_chatops(approval={"enabled": False}, alerts={"approval": "off"}, discord={"enabled": False})
    await _notifiers_ready(chatops, tg, {"telegram"})
    assert chatops.approval_active
    approval_id = await chatops.approvals.request(await make_signal())
    [message] = [c for c in tg.sent("sendMessage", CHAT) if f"a:{approval_id}:y" in str(c.params.get("reply_markup"))]
    assert message.params.get("disable_notification") not in TRUE
