"""Review 2 of the alerts layer: no overlapping delivery rounds, approvals that cannot outlive their
deadline or their process, the database password kept out of /config and logs, Discord without a
token refused at load, error storms collapsed and halts never held behind them or dropped."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from alerts import AlertDelivery, AlertPublisher, Route, events
from bot.telegram_adapter import TelegramAdapter, TelegramAlertSender, TelegramApprovalNotifier
from commands import build_dispatcher
from commands.approvals import ApprovalService
from commands.model import Reply
from db.models import AlertOutbox, AlertStatus, Approval, ApprovalStatus, AuditLog, Signal, SignalFate
from tests.chatops_fixtures import (  # noqa: F401  (telegram: a fixture)
    ADMIN, CHAT, TOKEN, fast_telegram_limiter, make_config, make_signal, telegram,
)
from tests.fake_telegram import FakeTelegram
from tests.fakes_trading import FakeTrading






# -- C5: delivery rounds never overlap -----------------------------------------------------------------


async def test_concurrent_delivery_rounds_send_each_alert_once(telegram) -> None:
    """The delivery loop, the 30 s outbox job, ChatOps.stop and teardown all call run_once: no duplicates."""
    fake, adapter = telegram
    config = make_config(api_url=fake.api_url)
    publisher = AlertPublisher(config.alerts, [Route("telegram", "telegram")])
    delivery = AlertDelivery(config.alerts, [TelegramAlertSender(adapter, CHAT, "telegram")])
    await publisher.start()
    try:
        for i in range(3):
            publisher.publish(events.position_closed("BTC-USDT", "LONG", 61000 + i, 10, 0.5, "target", str(i)))
        await publisher.flush()
    finally:
        await publisher.stop()
    delivered = await asyncio.gather(*(delivery.run_once() for _ in range(4)))
    assert sum(delivered) == 3
    texts = [c.params["text"] for c in fake.sent("sendMessage", CHAT)]
    assert len(texts) == 3, texts  # each closed trade reported once, not once per overlapping round
    assert all(r.status is AlertStatus.SENT and r.attempts == 1 for r in await AlertOutbox.all())


# -- C4: an approval never outlives its deadline or its process -----------------------------------------


class Clock:
    """Wall time the test moves by hand (the approval service's ``now``)."""

    def __init__(self) -> None:
        self.t = datetime.now(UTC)

    def now(self) -> datetime:
        return self.t


@contextlib.asynccontextmanager
async def _approval_bot(fake: FakeTelegram, timeout_s: float = 30, now: Any = None, register: bool = True) -> AsyncIterator[tuple[ApprovalService, TelegramAdapter]]:
    """One bot process: the approval service behind the real Telegram adapter and dispatcher."""
    config = make_config(api_url=fake.api_url, approval={"timeout_s": timeout_s})
    trading = FakeTrading()
    approvals = ApprovalService(config.approval, trading, **({"now": now} if now else {}))
    adapter = TelegramAdapter(config.telegram, build_dispatcher(config, trading, trading, approvals), poll_timeout_s=1,
                              rate_limiter=fast_telegram_limiter())
    await adapter.start()
    if register:
        approvals.add_notifier(TelegramApprovalNotifier(adapter, CHAT))
    try:
        yield approvals, adapter
    finally:
        await approvals.close()
        await adapter.stop()


async def _posted_request(fake: FakeTelegram) -> int:
    """The message id of the (only) approval request posted in the chat, whatever it shows now."""
    await fake.wait_for(lambda: any("Approve LONG" in c.params.get("text", "") for c in fake.sent("sendMessage", CHAT)))
    return max(mid for chat, mid in fake.messages if chat == CHAT)


async def _press(fake: FakeTelegram, message_id: int, data: str) -> str:
    before = len(fake.sent("answerCallbackQuery"))
    await fake.push_callback(ADMIN, CHAT, message_id, data)
    await fake.wait_for(lambda: len(fake.sent("answerCallbackQuery")) > before)
    return str(fake.sent("answerCallbackQuery")[-1].params.get("text", ""))


async def test_a_request_left_by_the_previous_run_is_expired_and_its_buttons_stop_working(db_url: str) -> None:
    """Restart with a request still pending and not overdue: Approve must not say APPROVED with no trade."""
    async with FakeTelegram(TOKEN) as fake:
        async with _approval_bot(fake, timeout_s=600) as (approvals, _):
            signal = await make_signal()
            approval_id = await approvals.request(signal)
            message_id = await _posted_request(fake)
        # The process ended without a decision. The next one sweeps at start, before its chat connects.
        async with _approval_bot(fake, timeout_s=600, register=False) as (approvals, adapter):
            assert await approvals.expire_overdue() == 1
            approvals.add_notifier(TelegramApprovalNotifier(adapter, CHAT))  # the chat is up: the stale message is fixed
            await fake.wait_for(lambda: "EXPIRED" in fake.messages[(CHAT, message_id)]["text"])
            assert fake.button_data(CHAT, message_id) == []
            # A press that was already on its way still arrives: it is answered honestly.
            toast = await _press(fake, message_id, f"a:{approval_id}:y")
    assert toast.startswith("Already expired")
    row = await Approval.get(id=approval_id)
    assert row.status is ApprovalStatus.EXPIRED and "restarted" in row.reason
    assert (await Signal.get(id=signal.id)).fate is SignalFate.EXPIRED  # not left PENDING_APPROVAL
    assert not await AuditLog.filter(action="approval.approve", outcome="approved").exists()


async def test_a_press_after_the_deadline_shown_in_chat_does_not_approve(db_url: str) -> None:
    """The timer may be late (a busy loop, a slow post); the decision itself checks expires_at."""
    clock = Clock()
    async with FakeTelegram(TOKEN) as fake, _approval_bot(fake, timeout_s=600, now=clock.now) as (approvals, _):
        approval_id = await approvals.request(await make_signal())
        message_id = await _posted_request(fake)
        clock.t += timedelta(seconds=601)  # past "Expires" while the timer has not fired yet
        toast = await _press(fake, message_id, f"a:{approval_id}:y")
        decision = await asyncio.wait_for(approvals.wait(approval_id), 5)
        await fake.wait_for(lambda: "EXPIRED" in fake.messages[(CHAT, message_id)]["text"])
    assert toast.startswith("Too late")
    assert decision.status is ApprovalStatus.EXPIRED and not decision.approved


async def test_a_press_nobody_in_this_process_waits_for_is_refused_even_without_the_start_sweep(db_url: str) -> None:
    """Belt and braces: a request of another run that escaped the sweep still cannot come back "Approved"."""
    from commands.model import Caller

    earlier_run = ApprovalService(make_config().approval, FakeTrading())
    approval_id = await earlier_run.request(await make_signal())
    await earlier_run.close()
    this_run = ApprovalService(make_config().approval, FakeTrading())
    result = await this_run.decide(approval_id, Caller("telegram", ADMIN, CHAT), approve=True)
    assert result.toast.startswith("Too late")
    assert (await Approval.get(id=approval_id)).status is ApprovalStatus.EXPIRED


class SlowNotifier:
    """Posting through the real adapter that is slow to come back (a congested chat API)."""

    name = "telegram"

    def __init__(self, inner: TelegramApprovalNotifier, takes_s: float) -> None:
        self.inner, self.takes_s = inner, takes_s

    async def post_request(self, reply: Reply) -> list[dict[str, Any]]:
        refs = await self.inner.post_request(reply)
        await asyncio.sleep(self.takes_s)  # the slow network itself, not a synchronisation
        return refs

    async def update_request(self, ref: dict[str, Any], reply: Reply) -> None:
        await self.inner.update_request(ref, reply)


async def test_the_timer_runs_to_the_expiry_shown_not_from_when_posting_finished(db_url: str) -> None:
    async with FakeTelegram(TOKEN) as fake, _approval_bot(fake, timeout_s=0.3, register=False) as (approvals, adapter):
        approvals.add_notifier(SlowNotifier(TelegramApprovalNotifier(adapter, CHAT), takes_s=1.0))
        approval_id = await approvals.request(await make_signal())
        # Posting took past the deadline shown in chat: the request is over by now, not 0.3 s later.
        assert (await Approval.get(id=approval_id)).status is ApprovalStatus.EXPIRED
        decision = await asyncio.wait_for(approvals.wait(approval_id), 5)
        message_id = await _posted_request(fake)
        await fake.wait_for(lambda: "EXPIRED" in fake.messages[(CHAT, message_id)]["text"])
        assert fake.button_data(CHAT, message_id) == []
    assert decision.status is ApprovalStatus.EXPIRED


class FailingAuditNotifier(SlowNotifier):
    """Posts fine, but hands back a reference the database cannot store: request() fails after posting."""

    async def post_request(self, reply: Reply) -> list[dict[str, Any]]:
        return [{**ref, "unstorable": object()} for ref in await self.inner.post_request(reply)]

    async def update_request(self, ref: dict[str, Any], reply: Reply) -> None:
        await self.inner.update_request({k: v for k, v in ref.items() if k != "unstorable"}, reply)


async def test_a_request_that_fails_after_posting_leaves_no_working_buttons(db_url: str) -> None:
    async with FakeTelegram(TOKEN) as fake, _approval_bot(fake, timeout_s=600, register=False) as (approvals, adapter):
        approvals.add_notifier(FailingAuditNotifier(TelegramApprovalNotifier(adapter, CHAT), 0))
        signal = await make_signal()
        with pytest.raises(TypeError):
            await approvals.request(signal)
        message_id = await _posted_request(fake)
        await fake.wait_for(lambda: "EXPIRED" in fake.messages[(CHAT, message_id)]["text"])
        approval = await Approval.get(signal_id=signal.id)
        toast = await _press(fake, message_id, f"a:{approval.id}:y")
    assert toast.startswith("Already expired")
    assert approval.status is ApprovalStatus.EXPIRED
    assert (await Signal.get(id=signal.id)).fate is SignalFate.EXPIRED


# -- C6: the database password stays out of /config and the logs -----------------------------------------

DB_PASSWORD = "Pg-s3cret-pw-4711"
DB_URL = f"postgres://trading_bot:{DB_PASSWORD}@db:5432/trading_bot"  # docker-compose's own shape


async def test_config_command_and_logs_do_not_show_the_database_password(db_url: str) -> None:
    from bot.logging_setup import SecretRegistry

    async with FakeTelegram(TOKEN) as fake:
        config = make_config(api_url=fake.api_url, database={"url": DB_URL})
        trading = FakeTrading()
        adapter = TelegramAdapter(config.telegram, build_dispatcher(config, trading, trading), poll_timeout_s=1,
                                  rate_limiter=fast_telegram_limiter())
        await adapter.start()
        try:
            await fake.push_command(ADMIN, CHAT, "/config database")
            await fake.wait_for(lambda: fake.sent("sendMessage", CHAT))
        finally:
            await adapter.stop()
    shown = fake.texts(CHAT)[-1]
    assert "trading_bot:***@db:5432/trading_bot" in shown and DB_PASSWORD not in shown
    assert DB_PASSWORD not in repr(config) and DB_PASSWORD not in str(config.database)
    registry = SecretRegistry()
    registry.register(config.secret_values())  # what configure_logging registers
    assert registry.redact(f"cannot connect to {DB_URL}: timeout") == "cannot connect to postgres://trading_bot:***@db:5432/trading_bot: timeout"


# -- C9: Discord enabled without a token is a config error at load ---------------------------------------


def test_discord_enabled_without_a_token_exits_2_naming_the_key(tmp_path) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "config.yaml").write_text("discord:\n  enabled: true\n  channel_id: 7001\n", encoding="utf-8")
    project = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-m", "bot.cli", "run", "--config", "config.yaml"], cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(project)}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "discord.token is empty" in result.stderr
    assert not (tmp_path / "data").exists()  # refused before anything started


# -- C7: error storms collapse, halts go first and are never dropped after a resume ---------------------


def _hub_to(publisher: AlertPublisher) -> Any:
    """The worker's alert hub forwarding into ``publisher`` exactly as ChatOps wires it."""
    from bot.alert_hub import AlertHub
    from bot.chatops import hub_event

    hub = AlertHub("paper")
    hub.forward = lambda event_type, text, payload: publisher.publish(hub_event(event_type, text, payload))
    return hub


async def test_a_failing_job_every_second_is_one_error_alert_with_a_repeat_count(telegram) -> None:
    """The worker's job-error alert carries no dedup key: 300 failures must not become 300 messages."""
    fake, adapter = telegram
    config = make_config(api_url=fake.api_url)
    publisher = AlertPublisher(config.alerts, [Route("telegram", "telegram")])
    delivery = AlertDelivery(config.alerts, [TelegramAlertSender(adapter, CHAT, "telegram")])
    hub = _hub_to(publisher)
    await publisher.start()
    try:
        for second in range(300):  # what bot.worker._on_job_error publishes while the database is down
            await hub.publish("error", f"[PAPER] scheduled job risk_view failed: OperationalError: connection to "
                                       f"127.0.0.1:5432 refused (attempt {second + 1}, 0x{second:04x})", {"job": "risk_view"})
        await hub.publish("error", "[PAPER] component feed failed: ConnectionResetError: peer closed", {"component": "feed"})
        await publisher.flush()
    finally:
        await publisher.stop()
    await delivery.run_once()
    texts = [c.params["text"] for c in fake.sent("sendMessage", CHAT)]
    assert len(texts) == 2, texts  # one per distinct error, not one per second
    assert "risk_view failed" in texts[0] and "299 more times" in texts[0]
    assert "component feed failed" in texts[1]


class SlowTelegram:
    """The real Telegram sender at a chat's pace (about 20 messages a second here; 20 a minute in a group)."""

    def __init__(self, adapter: TelegramAdapter) -> None:
        self.inner = TelegramAlertSender(adapter, CHAT, "telegram")
        self.name = "telegram"

    async def send(self, alert: Any) -> None:
        await asyncio.sleep(0.05)  # the rate limit itself, not a synchronisation
        await self.inner.send(alert)


async def test_a_halt_is_not_held_behind_an_error_backlog(telegram) -> None:
    fake, adapter = telegram
    config = make_config(api_url=fake.api_url)
    publisher = AlertPublisher(config.alerts, [Route("telegram", "telegram")])
    delivery = AlertDelivery(config.alerts, [SlowTelegram(adapter)])
    publisher.on_persisted = delivery.kick
    await publisher.start()
    try:
        for i in range(20):
            publisher.publish(events.error(f"job{i}", "database unavailable"))
        publisher.publish(events.kill_switch("drawdown 10.4% >= 10%"))  # stored after the backlog
        await publisher.flush()
        round_ = asyncio.ensure_future(delivery.run_once())
        await fake.wait_for(lambda: len(fake.sent("sendMessage", CHAT)) >= 2)
        publisher.publish(events.halted("HALTED", "reconciliation: unknown position ETH-USDT"))  # while the round sends
        await round_
        await delivery.run_once()
    finally:
        await publisher.stop()
    titles = [c.params["text"].split("\n", 1)[0] for c in fake.sent("sendMessage", CHAT)]
    assert len(titles) == 22
    assert "KILL SWITCH" in titles[0]  # first, although stored last
    halted_at = next(i for i, t in enumerate(titles) if "Trading HALTED" in t)
    assert halted_at <= 4, titles  # right after the message being sent when it was stored, not after the backlog


@pytest.fixture
async def risk_to_telegram(telegram) -> AsyncIterator[Any]:
    """A risk manager whose alerts go through the real publisher and delivery to the fake Telegram server."""
    from engine.risk.manager import RiskManager

    fake, adapter = telegram
    config = make_config(api_url=fake.api_url)
    publisher = AlertPublisher(config.alerts, [Route("telegram", "telegram")])
    delivery = AlertDelivery(config.alerts, [TelegramAlertSender(adapter, CHAT, "telegram")])
    await publisher.start()

    async def deliver() -> None:
        await publisher.flush()
        await delivery.run_once()

    def sent(words: str) -> list[str]:
        return [c.params["text"] for c in fake.sent("sendMessage", CHAT) if words in c.params["text"]]

    try:
        yield SimpleNamespace(risk=RiskManager(config, alert=_hub_to(publisher).risk), deliver=deliver, sent=sent)
    finally:
        await publisher.stop()


async def test_a_halt_after_a_resume_is_alerted_again(risk_to_telegram: Any) -> None:
    """halt -> /resume -> the same halt a minute later: the second halt must reach the chat too."""
    risk = risk_to_telegram.risk
    await risk.halt("reconciliation: unknown position ETH-USDT", "reconciliation")
    await risk.halt("reconciliation: unknown position ETH-USDT", "reconciliation")  # same spell: one alert
    await risk_to_telegram.deliver()
    await risk.resume("telegram:111")
    await risk.halt("reconciliation: unknown position ETH-USDT", "reconciliation")  # a new spell
    await risk_to_telegram.deliver()
    halts = risk_to_telegram.sent("Trading HALTED")
    assert len(halts) == 2, halts


async def test_a_kill_switch_set_again_after_an_unlock_is_alerted_again(risk_to_telegram: Any) -> None:
    """kill switch -> /unlock -> the kill switch again a minute later: both reach the chat."""
    from engine.risk.protections import ProtectionKind

    protections = risk_to_telegram.risk.protections
    for _ in range(2):
        await protections.lock(ProtectionKind.KILL_SWITCH, "equity reads -5 USDT", None)
        await risk_to_telegram.deliver()
        assert await protections.lift("kill_switch", "telegram:111")
    alerts = risk_to_telegram.sent("kill_switch")
    assert len(alerts) == 2, alerts
