"""Transport-neutral commands: authorization, audit, every command's answer."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from commands import build_dispatcher, parse_command_text
from commands.model import Caller
from commands.ports import BALANCE_UNKNOWN, BalanceView, ProtectionView
from db.models import AuditLog, DailyMetric, EquitySnapshot
from tests.chatops_fixtures import (
    ADMIN,
    CHAT,
    OTHER_CHAT,
    STRANGER,
    TOKEN,
    USER,
    make_closed_trade,
    make_config,
    make_signal,
)
from tests.fakes_trading import FakeTrading

pytestmark = pytest.mark.usefixtures("db_url")


def tg(user: int, chat: int = CHAT, private: bool = False) -> Caller:
    return Caller("telegram", user, chat, f"u{user}", private=private)


@pytest.fixture
def trading() -> FakeTrading:
    return FakeTrading()


@pytest.fixture
def dispatcher(trading: FakeTrading):
    return build_dispatcher(make_config(), trading, trading)


def test_parse_command_text() -> None:
    assert parse_command_text("/trades@MyBot 5") == ("trades", ["5"])
    assert parse_command_text("/Close all") == ("close", ["all"])
    assert parse_command_text('/pause "going to sleep"') == ("pause", ["going to sleep"])
    assert parse_command_text('/pause "unbalanced') == ("pause", ['"unbalanced'])
    assert parse_command_text("hello") is None
    assert parse_command_text("/") is None


async def test_status_shows_state_positions_and_last_signal(dispatcher, trading) -> None:
    await make_signal()
    reply = await dispatcher.dispatch(tg(USER), "status", [])
    assert reply is not None
    text = reply.plain_text()
    assert "PAPER" in reply.title and "RUNNING" in reply.title
    fields = dict(reply.fields)
    assert fields["Uptime"].startswith("5h 3m")
    assert fields["Equity"] == "10,250.75"
    assert fields["Drawdown"] == "1.25%"
    assert "feed ok" in fields["Health"] and "api ok" in fields["Health"]
    assert "BTC-USDT LONG multi_timeframe_long" in fields["Last signal"]
    # the position row carries PnL in money and in R
    assert "+42.50" in text and "+0.85R" in text
    assert reply.buttons[0][0].data == "r:status"
    row = await AuditLog.get(action="status")
    assert (row.kind, row.actor, row.chat, row.outcome) == ("command", f"telegram:{USER}", f"telegram:{CHAT}", "ok")


async def test_strangers_are_ignored_and_audited(dispatcher, trading) -> None:
    assert await dispatcher.dispatch(tg(STRANGER), "status", []) is None
    # an authorized user in a chat that is not configured is a stranger too
    assert await dispatcher.dispatch(tg(USER, OTHER_CHAT), "status", []) is None
    assert await dispatcher.dispatch(tg(STRANGER, STRANGER, private=True), "stop", []) is None
    assert await dispatcher.press(tg(STRANGER), "k:whatever") is None
    rows = await AuditLog.filter(kind="unauthorized").order_by("id")
    assert [(r.actor, r.action, r.outcome) for r in rows] == [
        (f"telegram:{STRANGER}", "status", "ignored"),
        (f"telegram:{USER}", "status", "ignored"),
        (f"telegram:{STRANGER}", "stop", "ignored"),
        (f"telegram:{STRANGER}", "button", "ignored"),
    ]
    assert trading.calls == []
    # the same user in a private chat with the bot is fine
    assert await dispatcher.dispatch(tg(USER, USER, private=True), "whoami", []) is not None


async def test_non_admin_refused_controls(dispatcher, trading) -> None:
    for name, args in [("pause", []), ("resume", []), ("approval", ["on"]), ("close", ["all"]), ("unlock", ["all"]), ("stop", [])]:
        reply = await dispatcher.dispatch(tg(USER), name, args)
        assert reply is not None and "admins only" in reply.title
    assert trading.calls == []
    assert await AuditLog.filter(kind="control", outcome="denied").count() == 6
    help_text = (await dispatcher.dispatch(tg(USER), "help", [])).text
    assert "/status" in help_text and "/stop" not in help_text
    assert "/stop" in (await dispatcher.dispatch(tg(ADMIN), "help", [])).text


async def test_admin_controls_reach_the_ports(dispatcher, trading) -> None:
    actor = f"telegram:{ADMIN}"
    assert "Paused" in (await dispatcher.dispatch(tg(ADMIN), "pause", ["news", "event"])).title
    assert "Resumed" in (await dispatcher.dispatch(tg(ADMIN), "resume", [])).title
    assert "on" in (await dispatcher.dispatch(tg(ADMIN), "approval", ["ON"])).title
    bad = await dispatcher.dispatch(tg(ADMIN), "approval", ["maybe"])
    assert "Usage: /approval on|off" in bad.text
    trading.protections = [ProtectionView("cooldown", "loss", "BTC-USDT")]
    assert dict((await dispatcher.dispatch(tg(ADMIN), "unlock", ["cooldown"])).fields)["Lifted"] == "cooldown"
    missing = await dispatcher.dispatch(tg(ADMIN), "close", ["99"])
    assert missing.severity == "error" and "no such position" in missing.plain_text()
    assert dict((await dispatcher.dispatch(tg(ADMIN), "close", ["7"])).fields)["Closed"] == "7"
    assert trading.calls == [
        ("pause", actor, "news event"),
        ("resume", actor),
        ("set_approval", "True", actor),
        ("unlock", "cooldown", actor),
        ("close", "99", actor),
        ("close", "7", actor),
    ]
    outcomes = [r.outcome for r in await AuditLog.filter(kind="control").order_by("id")]
    assert outcomes == ["ok", "ok", "ok", "usage", "ok", "error", "ok"]


async def test_stop_needs_a_confirmation_from_the_same_admin(trading) -> None:
    config = make_config(telegram={"admin_users": [ADMIN, 444]})
    dispatcher = build_dispatcher(config, trading, trading)
    first = await dispatcher.dispatch(tg(ADMIN), "stop", [])
    confirm, cancel = first.buttons[0]
    assert confirm.data.startswith("k:") and cancel.data.startswith("x:")
    assert trading.calls == []  # asking is not doing
    # typing arguments cannot skip the button
    await dispatcher.dispatch(tg(ADMIN), "stop", ["--confirmed"])
    assert trading.calls == []
    other = await dispatcher.press(tg(444), confirm.data)
    assert "expired" in other.reply.title.lower() and trading.calls == []
    done = await dispatcher.press(tg(ADMIN), confirm.data)
    assert trading.calls == [("emergency_stop", f"telegram:{ADMIN}")]
    assert "flat" in done.reply.title and dict(done.reply.fields)["Closed positions"] == "7"
    again = await dispatcher.press(tg(ADMIN), confirm.data)  # a double tap does nothing more
    assert "expired" in again.reply.title.lower() and len(trading.calls) == 1
    # cancelling a fresh request
    token = (await dispatcher.dispatch(tg(ADMIN), "stop", [])).buttons[0][1].data
    assert "Cancelled" in (await dispatcher.press(tg(ADMIN), token)).reply.title
    assert len(trading.calls) == 1


async def test_read_commands(dispatcher, trading) -> None:
    balance = await dispatcher.dispatch(tg(USER), "balance", [])
    assert dict(balance.fields)["Available"] == "9,000.00"
    positions = await dispatcher.dispatch(tg(USER), "positions", [])
    assert positions.tables[0].rows[0][0] == "7"
    assert "No open orders" in (await dispatcher.dispatch(tg(USER), "orders", [])).title
    who = await dispatcher.dispatch(tg(ADMIN), "whoami", [])
    assert dict(who.fields) == {"Transport": "telegram", "User id": str(ADMIN), "Chat id": str(CHAT), "Role": "admin"}
    health = await dispatcher.dispatch(tg(USER), "health", [])
    assert dict(health.fields)["alert outbox"] == "0 pending, 0 failed"
    config = await dispatcher.dispatch(tg(USER), "config", [])
    text = config.plain_text()
    assert TOKEN not in text and "telegram.token" in text and "***" in text
    assert "discord-bot-token-secret-value-xyz" not in text
    only = await dispatcher.dispatch(tg(USER), "config", ["risk"])
    assert all(row[0].startswith("risk.") for row in only.tables[0].rows)


async def test_trades_profit_daily_signals_from_the_database(dispatcher) -> None:
    await make_closed_trade("100", "2", days_ago=1)
    await make_closed_trade("-50", "-1", days_ago=2)
    await make_closed_trade("50", "1", days_ago=3)
    await make_closed_trade("-1000", "-1", days_ago=40)  # outside a 30-day window
    now = datetime.now(UTC)
    for hours, equity in [(24 * 5, "10000"), (24 * 4, "10400"), (24 * 3, "10140"), (24 * 2, "10300")]:
        snap = await EquitySnapshot.create(equity=Decimal(equity))
        await EquitySnapshot.filter(id=snap.id).update(at=now - timedelta(hours=hours))
    await DailyMetric.create(day=date.today(), start_equity=Decimal(10000), end_equity=Decimal(10100), peak_equity=Decimal(10150), realized_pnl=Decimal(100), trades=2, wins=1, losses=1, max_drawdown_pct=Decimal("0.5"))

    trades = await dispatcher.dispatch(tg(USER), "trades", ["2"])
    assert len(trades.tables[0].rows) == 2 and trades.tables[0].rows[0][4] == "+100.00"
    profit = dict((await dispatcher.dispatch(tg(USER), "profit", [])).fields)
    assert profit["Trades"] == "3 (2 won, 1 lost)"
    assert profit["Win rate"] == "66.7%"
    assert profit["Profit factor"] == "3.00"  # 150 won / 50 lost
    assert profit["Avg win / avg loss (R:R)"] == "75.00 / 50.00 (1.50)"
    assert profit["Average R"] == "+0.67R"
    assert profit["Return"] == "+1.00%"  # 100 net on 10000 at the window start
    assert profit["Max drawdown"] == "2.50%"  # 10400 -> 10140
    longer = dict((await dispatcher.dispatch(tg(USER), "profit", ["60"])).fields)
    assert longer["Trades"] == "4 (2 won, 2 lost)"
    daily = await dispatcher.dispatch(tg(USER), "daily", [])
    assert daily.tables[0].rows[0][1] == "+100.00"
    await make_signal()
    signals = await dispatcher.dispatch(tg(USER), "signals", ["5"])
    assert signals.tables[0].rows[0][4] == "pending_approval"
    usage = await dispatcher.dispatch(tg(USER), "trades", ["lots"])
    assert "expected a number" in usage.title and "Usage: /trades [n]" in usage.text
    unknown = await dispatcher.dispatch(tg(USER), "moon", [])
    assert "Unknown command" in unknown.title


async def test_profit_without_a_readable_balance_leaves_the_return_out(dispatcher, trading) -> None:
    await make_closed_trade("100", "2", days_ago=1)  # no equity snapshot in the window: the return needs the balance

    async def unreadable() -> BalanceView:  # what the worker's port answers while trading is not running
        return BalanceView(BALANCE_UNKNOWN, Decimal(0), Decimal(0), Decimal(0), Decimal(0))

    trading.balance = unreadable
    profit = dict((await dispatcher.dispatch(tg(USER), "profit", [])).fields)
    assert profit["Net PnL"] == "+100.00"
    assert profit["Return"] == "-"  # not "-100.00%" from an equity of zero


async def test_failing_port_answers_with_an_error_and_no_secret(trading) -> None:
    async def broken() -> None:
        raise RuntimeError(f"exchange said no to https://api.telegram.org/bot{TOKEN}/x")

    trading.status = broken  # type: ignore[method-assign]
    dispatcher = build_dispatcher(make_config(), trading, trading)
    from bot.logging_setup import secrets

    secrets.register([TOKEN])
    reply = await dispatcher.dispatch(tg(USER), "status", [])
    assert reply.severity == "error" and "RuntimeError" in reply.text
    assert TOKEN not in reply.plain_text()
    row = await AuditLog.get(action="status")
    assert row.outcome == "error" and TOKEN not in str(row.detail)
