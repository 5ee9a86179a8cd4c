"""Shared setup for the chat-ops tests: a config with known users and chats, DB rows, and the Telegram adapter."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from bot.config import AppConfig
from db.models import Signal, SignalFate, Trade, TradeState

TOKEN = "123456789:AAFakeTokenForTestsOnly_abcdefghijklmnop"
WEBHOOK_TOKEN = "wh-secret-token-ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
ADMIN, USER, STRANGER = 111, 222, 333
CHAT, ERROR_CHAT, OTHER_CHAT = -1001, -1002, -1009
D_ADMIN, D_USER, D_STRANGER = 5111, 5222, 5333
D_CHANNEL, D_ERROR_CHANNEL = 7001, 7002


def make_config(api_url: str = "http://127.0.0.1:9", webhook_url: str = "", **overrides: Any) -> AppConfig:
    """Telegram and Discord enabled with ADMIN (admin), USER (read-only) and nobody else."""
    data: dict[str, Any] = {
        "telegram": {
            "enabled": True, "token": TOKEN, "api_url": api_url, "chat_id": CHAT, "error_chat_id": ERROR_CHAT,
            "authorized_users": [USER], "admin_users": [ADMIN],
        },
        "discord": {
            "enabled": True, "token": "discord-bot-token-secret-value-xyz", "channel_id": D_CHANNEL,
            "error_channel_id": D_ERROR_CHANNEL, "webhook_url": webhook_url,
            "authorized_users": [D_USER], "admin_users": [D_ADMIN],
        },
        "approval": {"enabled": True, "timeout_s": 30, "max_slippage_pct": 0.5},
        "alerts": {"dedup_window_s": 300},
    }
    for key, value in overrides.items():
        data.setdefault(key, {}).update(value)
    return AppConfig.model_validate(data)


async def make_signal(entry: str = "60000", stop: str = "57000", target: str = "66000", side: str = "LONG", candle: int = 1) -> Signal:
    """A stored signal waiting for approval."""
    return await Signal.create(
        symbol="BTC-USDT", strategy="multi_timeframe_long", side=side, candle_time_ms=candle * 60_000,
        entry=Decimal(entry), stop=Decimal(stop), target=Decimal(target), fate=SignalFate.PENDING_APPROVAL,
    )


async def make_closed_trade(pnl: str, r: str, days_ago: float = 1, symbol: str = "BTC-USDT") -> Trade:
    """A closed paper trade."""
    closed = datetime.now(UTC) - timedelta(days=days_ago)
    return await Trade.create(
        symbol=symbol, strategy="multi_timeframe_long", side="LONG", state=TradeState.CLOSED, mode="paper",
        entry_price=Decimal(100), initial_qty=Decimal(1), qty=Decimal(0), initial_stop=Decimal(95),
        stop=Decimal(95), target=Decimal(110), risk_per_unit=Decimal(5), opened_at=closed - timedelta(hours=2),
        closed_at=closed, exit_price=Decimal(105), exit_reason="target", realized_pnl=Decimal(pnl), r_multiple=Decimal(r),
    )


def fast_telegram_limiter() -> Any:
    """Telegram's flood limits raised far out of the way: the suite stays fast."""
    from bot.telegram_ratelimit import TelegramRateLimiter

    return TelegramRateLimiter(chat_per_s=1000, group_per_min=100000)


@pytest.fixture
async def telegram(db_url: str) -> AsyncIterator[tuple[Any, Any]]:
    """The real Telegram adapter against the fake Bot API server: ``(FakeTelegram, TelegramAdapter)``."""
    from bot.telegram_adapter import TelegramAdapter
    from commands import build_dispatcher
    from tests.fake_telegram import FakeTelegram
    from tests.fakes_trading import FakeTrading

    async with FakeTelegram(TOKEN) as fake:
        config = make_config(api_url=fake.api_url)
        trading = FakeTrading()
        adapter = TelegramAdapter(config.telegram, build_dispatcher(config, trading, trading), poll_timeout_s=1,
                                  rate_limiter=fast_telegram_limiter())
        await adapter.start()
        try:
            yield fake, adapter
        finally:
            await adapter.stop()
