"""The real python-telegram-bot Application against a local fake Bot API server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC
from decimal import Decimal

import pytest

from alerts.senders import OutgoingAlert
from bot.telegram_adapter import (
    TelegramAdapter,
    TelegramAlertSender,
    TelegramApprovalNotifier,
)
from bot.telegram_ratelimit import SlidingWindow, TelegramRateLimiter
from bot.telegram_render import render_chunks
from commands import build_dispatcher
from commands.approvals import ApprovalService
from commands.model import Reply, Table
from db.models import Approval, ApprovalStatus, AuditLog, Signal, SignalFate
from tests.chatops_fixtures import (
    ADMIN,
    CHAT,
    STRANGER,
    TOKEN,
    USER,
    make_config,
    make_signal,
)
from tests.fake_telegram import FakeTelegram
from tests.fakes_trading import FakeTrading


@dataclass
class Stack:
    fake: FakeTelegram
    trading: FakeTrading
    approvals: ApprovalService
    adapter: TelegramAdapter


async def _start(db_url: str, timeout_s: float = 30.0) -> AsyncIterator[Stack]:
    async with FakeTelegram(TOKEN) as fake:
        config = make_config(api_url=fake.api_url, approval={"timeout_s": timeout_s})
        trading = FakeTrading()
        approvals = ApprovalService(config.approval, trading)
        dispatcher = build_dispatcher(config, trading, trading, approvals)
        # Per-chat limit raised so the suite is fast; the limiter itself is tested below.
        adapter = TelegramAdapter(config.telegram, dispatcher, poll_timeout_s=1, rate_limiter=TelegramRateLimiter(chat_per_s=200, group_per_min=1000))
        approvals.add_notifier(TelegramApprovalNotifier(adapter, CHAT))
        # Sent while the bot was down: must be dropped on start, never replayed.
        await fake.push_command(ADMIN, CHAT, "/pause")
        await adapter.start()
        try:
            yield Stack(fake, trading, approvals, adapter)
        finally:
            await approvals.close()
            await adapter.stop()


@pytest.fixture
async def stack(db_url: str) -> AsyncIterator[Stack]:
    async for s in _start(db_url):
        yield s


async def _reply_to(fake: FakeTelegram, chat: int, count_before: int) -> dict:
    await fake.wait_for(lambda: len(fake.sent("sendMessage", chat)) > count_before)
    return fake.last_message(chat)


async def test_authorized_status_and_refresh(stack: Stack) -> None:
    fake = stack.fake
    assert fake.sent("deleteWebhook")[0].params["drop_pending_updates"] in ("True", "true", True)
    await fake.push_command(USER, CHAT, "/status")
    message = await _reply_to(fake, CHAT, 0)
    assert message["text"].startswith("<b>Status: PAPER · RUNNING</b>")
    assert "<pre>" in message["text"] and "+0.85R" in message["text"]
    assert fake.button_data(CHAT, message["message_id"]) == ["r:status"]
    # the /pause queued before start was dropped, not replayed
    assert stack.trading.calls == [] and stack.trading.state == "RUNNING"

    stack.trading.positions = []
    await fake.push_callback(USER, CHAT, message["message_id"], "r:status")
    await fake.wait_for(lambda: fake.sent("editMessageText", CHAT))
    assert fake.sent("answerCallbackQuery")[0].params.get("text") == "Updated"
    assert "Open positions:</b> 0" in fake.messages[(CHAT, message["message_id"])]["text"]
    assert fake.bad_paths == []


async def test_stranger_is_ignored_without_reply(stack: Stack, db_url: str) -> None:
    fake = stack.fake
    await fake.push_command(STRANGER, STRANGER, "/status", chat_type="private")
    await fake.push_command(STRANGER, CHAT, "/stop")
    await fake.wait_for(lambda: len(fake.updates) == 0, timeout=5)
    rows = await _wait_rows(lambda: AuditLog.filter(kind="unauthorized").count(), 2)
    assert rows == 2
    await fake.push_command(USER, CHAT, "/whoami")  # the bot is alive and answers others
    await _reply_to(fake, CHAT, 0)
    assert fake.sent("sendMessage", STRANGER) == []
    assert all("Status" not in t for t in fake.texts(CHAT))
    assert stack.trading.calls == []


async def _wait_rows(query, expected: int, timeout: float = 5.0) -> int:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await query()
        if value >= expected or asyncio.get_running_loop().time() > deadline:
            return value
        await asyncio.sleep(0.02)


async def test_non_admin_refused_a_control(stack: Stack) -> None:
    await stack.fake.push_command(USER, CHAT, "/pause")
    message = await _reply_to(stack.fake, CHAT, 0)
    assert "admins only" in message["text"]
    assert stack.trading.calls == [] and stack.trading.state == "RUNNING"
    row = await AuditLog.get(action="pause")
    assert (row.actor, row.outcome) == (f"telegram:{USER}", "denied")


async def _request(stack: Stack, **signal_args: str) -> tuple[int, int]:
    signal = await make_signal(**signal_args)
    before = len(stack.fake.sent("sendMessage", CHAT))
    approval_id = await stack.approvals.request(signal)
    message = await _reply_to(stack.fake, CHAT, before)
    assert "Approve LONG BTC-USDT?" in message["text"]
    assert stack.fake.button_data(CHAT, message["message_id"]) == [f"a:{approval_id}:y", f"a:{approval_id}:n"]
    return approval_id, message["message_id"]


async def test_approval_approved(stack: Stack) -> None:
    approval_id, message_id = await _request(stack)
    stack.trading.prices["BTC-USDT"] = Decimal(60100)  # 0.17% away: within 0.5%
    await stack.fake.push_callback(ADMIN, CHAT, message_id, f"a:{approval_id}:y")
    decision = await asyncio.wait_for(stack.approvals.wait(approval_id), 5)
    assert decision.approved and decision.price_at_decision == Decimal(60100)
    assert decision.decided_by == f"telegram:{ADMIN}"
    await stack.fake.wait_for(lambda: "APPROVED" in stack.fake.messages[(CHAT, message_id)]["text"])
    assert stack.fake.button_data(CHAT, message_id) == []  # buttons gone after the decision
    await stack.fake.wait_for(lambda: stack.fake.sent("answerCallbackQuery"))
    assert stack.fake.sent("answerCallbackQuery")[0].params["text"] == "Approved"
    row = await Approval.get(id=approval_id)
    assert row.status is ApprovalStatus.APPROVED and row.messages[0]["message_id"] == message_id


async def test_approval_denied_and_non_admin_cannot_decide(stack: Stack) -> None:
    approval_id, message_id = await _request(stack)
    await stack.fake.push_callback(USER, CHAT, message_id, f"a:{approval_id}:y")
    await stack.fake.wait_for(lambda: stack.fake.sent("answerCallbackQuery"))
    assert "Only admins" in stack.fake.sent("answerCallbackQuery")[0].params["text"]
    assert (await Approval.get(id=approval_id)).status is ApprovalStatus.PENDING
    await stack.fake.push_callback(ADMIN, CHAT, message_id, f"a:{approval_id}:n")
    decision = await asyncio.wait_for(stack.approvals.wait(approval_id), 5)
    assert decision.status is ApprovalStatus.DENIED and not decision.approved
    await stack.fake.wait_for(lambda: "DENIED" in stack.fake.messages[(CHAT, message_id)]["text"])
    signal = await Signal.get(approvals__id=approval_id)
    assert signal.fate is SignalFate.DENIED


async def test_approval_refused_when_price_moved(stack: Stack) -> None:
    approval_id, message_id = await _request(stack)
    stack.trading.prices["BTC-USDT"] = Decimal(60600)  # 1% above the entry
    await stack.fake.push_callback(ADMIN, CHAT, message_id, f"a:{approval_id}:y")
    decision = await asyncio.wait_for(stack.approvals.wait(approval_id), 5)
    assert decision.status is ApprovalStatus.REFUSED and "moved 1.00%" in decision.reason
    await stack.fake.wait_for(lambda: "REFUSED" in stack.fake.messages[(CHAT, message_id)]["text"])


async def test_approval_double_tap_is_harmless(stack: Stack) -> None:
    approval_id, message_id = await _request(stack)
    for data in (f"a:{approval_id}:y", f"a:{approval_id}:y", f"a:{approval_id}:n"):
        await stack.fake.push_callback(ADMIN, CHAT, message_id, data)
    decision = await asyncio.wait_for(stack.approvals.wait(approval_id), 5)
    await stack.fake.wait_for(lambda: len(stack.fake.sent("answerCallbackQuery")) == 3)
    toasts = sorted(c.params.get("text", "") for c in stack.fake.sent("answerCallbackQuery"))
    winner = "Approved" if decision.approved else "Denied"
    assert toasts.count(winner) == 1
    assert sum(t.startswith("Already") or t.startswith("Someone") for t in toasts) == 2
    row = await Approval.get(id=approval_id)
    assert row.status in (ApprovalStatus.APPROVED, ApprovalStatus.DENIED)
    decided = await AuditLog.filter(action__startswith="approval.", outcome__in=["approved", "denied"]).count()
    assert decided == 1


async def test_approval_expires(db_url: str) -> None:
    async for stack in _start(db_url, timeout_s=0.4):
        approval_id, message_id = await _request(stack)
        decision = await asyncio.wait_for(stack.approvals.wait(approval_id), 5)
        assert decision.status is ApprovalStatus.EXPIRED and not decision.approved
        await stack.fake.wait_for(lambda: "EXPIRED" in stack.fake.messages[(CHAT, message_id)]["text"])
        # a late tap changes nothing
        await stack.fake.push_callback(ADMIN, CHAT, message_id, f"a:{approval_id}:y")
        await stack.fake.wait_for(lambda: stack.fake.sent("answerCallbackQuery"))
        assert stack.fake.sent("answerCallbackQuery")[0].params["text"].startswith("Already expired")
        assert (await Signal.get(approvals__id=approval_id)).fate is SignalFate.EXPIRED


async def test_stop_with_confirmation_calls_the_emergency_stop(stack: Stack) -> None:
    fake = stack.fake
    await fake.push_command(ADMIN, CHAT, "/stop")
    message = await _reply_to(fake, CHAT, 0)
    assert "EMERGENCY STOP?" in message["text"]
    confirm, cancel = fake.button_data(CHAT, message["message_id"])
    assert stack.trading.calls == []
    await fake.push_callback(USER, CHAT, message["message_id"], confirm)  # non-admin tap
    await fake.wait_for(lambda: fake.sent("answerCallbackQuery"))
    assert stack.trading.calls == []
    await fake.push_callback(ADMIN, CHAT, message["message_id"], confirm)
    await fake.wait_for(lambda: "Emergency stop done: flat" in fake.messages[(CHAT, message["message_id"])]["text"])
    assert stack.trading.calls == [("emergency_stop", f"telegram:{ADMIN}")]
    assert stack.trading.positions == [] and stack.trading.state == "PAUSED"


async def test_long_replies_are_split_at_4096(stack: Stack) -> None:
    rows = tuple((f"row{i}", "x" * 60) for i in range(200))
    reply = Reply(title="Big", text="y" * 5000, tables=[Table(("k", "v"), rows)])
    chunks = render_chunks(reply)
    assert len(chunks) >= 5 and all(len(c) <= 4096 for c in chunks)
    assert all(c.count("<pre>") == c.count("</pre>") for c in chunks)
    assert sum(c.count("row") for c in chunks) == 200
    await stack.adapter.send_reply(CHAT, reply)
    assert len(stack.fake.sent("sendMessage", CHAT)) == len(chunks)
    await stack.fake.push_command(USER, CHAT, "/config")
    await stack.fake.wait_for(lambda: len(stack.fake.sent("sendMessage", CHAT)) > len(chunks) + 1)
    assert all(len(t) <= 4096 for t in stack.fake.texts(CHAT))


async def test_alert_sender_text_and_photo(stack: Stack, tmp_path) -> None:
    from datetime import datetime, timedelta

    from alerts.chart import render_equity_chart

    start = datetime(2024, 1, 1, tzinfo=UTC)
    chart = await render_equity_chart([(start + timedelta(hours=i), Decimal(10000 + i * 7)) for i in range(48)], tmp_path / "eq.png")
    sender = TelegramAlertSender(stack.adapter, CHAT)
    await sender.send(OutgoingAlert(1, "daily_summary", Reply(title="Daily summary", fields=[("Net PnL", "+12.00")], image_path=chart), silent=False))
    photo = stack.fake.sent("sendPhoto", CHAT)[0]
    assert photo.params["photo"]["size"] > 1000 and "Daily summary" in photo.params["caption"]
    await sender.send(OutgoingAlert(2, "reconnect", Reply(title="Reconnected: market"), silent=True))
    assert stack.fake.sent("sendMessage", CHAT)[-1].params["disable_notification"] in ("True", "true", True)


async def test_token_never_logged_or_stored(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    # setup_logging() (run by other tests) quiets httpx; this test needs its raw request lines.
    caplog.set_level(logging.DEBUG, logger="httpx")
    await stack.fake.push_command(USER, CHAT, "/status")
    await _reply_to(stack.fake, CHAT, 0)
    await stack.fake.push_command(STRANGER, CHAT, "/status")
    await _wait_rows(lambda: AuditLog.filter(kind="unauthorized").count(), 1)
    # Our own records never carry the token, even before the redacting handler sees them...
    ours = [r for r in caplog.records if r.name.split(".")[0] in ("bot", "commands", "alerts")]
    assert ours and all(TOKEN not in r.getMessage() for r in ours)
    # ...and whatever libraries log (httpx logs Bot API URLs) leaves the redacting formatter clean.
    from bot.logging_setup import ConsoleFormatter, RedactingFormatter

    formatter = RedactingFormatter(ConsoleFormatter())
    assert any(TOKEN in r.getMessage() for r in caplog.records)  # the library did log it raw
    assert all(TOKEN not in formatter.format(r) for r in caplog.records)
    for row in await AuditLog.all():
        assert TOKEN not in f"{row.actor}{row.chat}{row.arguments}{row.detail}"
    assert all(TOKEN not in t for t in stack.fake.texts())


async def test_rate_limiter_windows_and_flood_control(stack: Stack) -> None:
    window = SlidingWindow(2, 0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(5):
        await window.acquire()
    assert loop.time() - started >= 0.39  # 5 slots at 2 per 0.2 s need two full waits

    fake = stack.fake
    fake.flood_next = 1  # the next sendMessage gets a 429 with retry_after=1
    started = loop.time()
    await stack.adapter.send_reply(CHAT, Reply(title="after the flood"))
    assert loop.time() - started >= 1.0
    assert [c.method for c in fake.calls if c.method.startswith("sendMessage")][-2:] == ["sendMessage!429", "sendMessage"]
    assert "after the flood" in fake.last_message(CHAT)["text"]
