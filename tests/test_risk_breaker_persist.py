"""The API-error circuit breaker keeps counting across restarts: a crash loop (errors, restart,
errors, restart...) trips it just as a single long-running process would."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

from bot.config import load_config
from db.database import close_db, init_db
from db.kv import kv_get, kv_set
from engine.risk.gate import AccountSnapshot, OrderProposal
from engine.risk.manager import RiskManager

CONFIG = load_config(None, env={}, overrides={"risk": {"api_error_threshold": 4, "api_error_window_min": 5}})
ACCOUNT = AccountSnapshot(equity=D(10000), available_margin=D(10000))
T0 = datetime(2024, 3, 1, 10, 0, tzinfo=UTC)
KEY = "risk.api_errors.paper"


class Clock:
    def __init__(self, t: datetime = T0) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t


def entry() -> OrderProposal:
    return OrderProposal(symbol="BTC-USDT", strategy="multi_timeframe_long", side="LONG", qty=D(1),
                         entry_price=D(100), stop_price=D(95))


async def restart(db_url: str, clock: Clock) -> RiskManager:
    """A new process: the database is re-opened and every object is new."""
    await close_db()
    await init_db(db_url)
    return RiskManager(CONFIG, clock=clock)


async def test_crash_loop_trips_the_breaker(db_url: str) -> None:
    clock = Clock()
    # Five processes each see one error and die: five errors within five minutes is more than four.
    for i in range(4):
        risk = await restart(db_url, clock)
        assert await risk.record_api_error(f"HTTP 503 (run {i})") is None
        clock.t += timedelta(seconds=30)
    risk = await restart(db_url, clock)
    assert (await risk.status()).api_errors_in_window == 4  # counted before this process saw any error
    lock = await risk.record_api_error("HTTP 503 (run 4)")
    assert lock is not None and lock.kind == "breaker" and "5 API errors" in lock.reason
    risk = await restart(db_url, clock)
    decision = await risk.check_order(entry(), ACCOUNT, exposures=[])
    assert not decision.allowed and decision.rule == "protection:breaker"
    # Tripping starts a fresh count: the next restart does not trip again on the same errors.
    assert (await risk.status()).api_errors_in_window == 0


async def test_errors_outside_the_window_do_not_carry_over(db_url: str) -> None:
    clock = Clock()
    risk = RiskManager(CONFIG, clock=clock)
    for _ in range(4):
        assert await risk.record_api_error("timeout") is None
    clock.t = T0 + timedelta(minutes=5)  # exactly one window later: those four have left it
    risk = await restart(db_url, clock)
    assert await risk.record_api_error("timeout") is None
    assert (await risk.status()).api_errors_in_window == 1
    assert await risk.entries_allowed()


async def test_stored_list_is_bounded_and_bad_entries_are_skipped(db_url: str) -> None:
    clock = Clock()
    await kv_set(KEY, ["not a time", "2024-03-01T09:59:00", None, (T0 - timedelta(seconds=1)).isoformat()])
    risk = RiskManager(CONFIG, clock=clock)
    assert await risk.record_api_error("x") is None  # the naive and unreadable entries are dropped, no crash
    assert (await risk.status()).api_errors_in_window == 2
    stored = await kv_get(KEY)
    assert len(stored) == 2
    # Many errors, each tripping and restarting the count, never grow the stored list past threshold + 1.
    for _ in range(30):
        await risk.record_api_error("x")
        clock.t += timedelta(seconds=1)
        assert len(await kv_get(KEY)) <= CONFIG.risk.api_error_threshold + 1
