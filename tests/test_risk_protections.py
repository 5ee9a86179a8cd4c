"""Protections at their boundaries (just inside, just outside), persisted across a restart,
visible with why and until when, and liftable by an admin."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

from bot.config import load_config
from db.database import close_db, init_db
from db.models import ProtectionLock
from engine.risk.gate import AccountSnapshot, OrderProposal
from engine.risk.manager import RiskManager
from engine.risk.state import TradingState

CONFIG = load_config(None, env={}, overrides={"risk": {
    "cooldown_after_loss_min": 15, "max_consecutive_losses": 3, "consecutive_loss_pause_min": 240,
    "daily_loss_limit_pct": 3, "max_drawdown_pct": 10, "api_error_threshold": 4, "api_error_window_min": 5}})
ACCOUNT = AccountSnapshot(equity=D(10000), available_margin=D(10000))
T0 = datetime(2024, 3, 1, 10, 0, tzinfo=UTC)


class Clock:
    def __init__(self, t: datetime = T0) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t


def entry(symbol: str = "BTC-USDT", strategy: str = "multi_timeframe_long") -> OrderProposal:
    return OrderProposal(symbol=symbol, strategy=strategy, side="LONG", qty=D(1), entry_price=D(100),
                         stop_price=D(95))


async def allowed(risk: RiskManager, p: OrderProposal | None = None) -> bool:
    return (await risk.check_order(p or entry(), ACCOUNT, exposures=[])).allowed


async def restart(db_url: str, clock: Clock, events: list | None = None) -> RiskManager:
    await close_db()
    await init_db(db_url)
    return RiskManager(CONFIG, clock=clock, alert=(events.append if events is not None else None))


async def test_cooldown_after_loss_boundary_and_restart(db_url: str) -> None:
    clock, events = Clock(), []
    risk = RiskManager(CONFIG, clock=clock, alert=events.append)
    await risk.on_trade_closed("BTC-USDT", "multi_timeframe_long", D("-0.01"))
    assert [e.event_type for e in events] == ["protection"]
    risk = await restart(db_url, clock)
    clock.t = T0 + timedelta(minutes=15) - timedelta(seconds=1)  # just inside the cooldown
    d = await risk.check_order(entry(), ACCOUNT, exposures=[])
    assert not d.allowed and d.rule == "protection:cooldown" and "until 2024-03-01 10:15:00" in d.reason
    assert await allowed(risk, entry(symbol="ETH-USDT"))  # scoped to the symbol and strategy
    assert await allowed(risk, entry(strategy="trend_distance_short"))
    clock.t = T0 + timedelta(minutes=15)  # the lock has run out
    assert await allowed(risk)
    # A winning or break-even trade starts no cooldown.
    await risk.on_trade_closed("BTC-USDT", "multi_timeframe_long", D(0))
    assert await allowed(risk)


async def test_loss_streak_boundary_and_restart(db_url: str) -> None:
    clock = Clock()
    risk = RiskManager(CONFIG.model_copy(update={"risk": CONFIG.risk.model_copy(update={"cooldown_after_loss_min": 0})}),
                       clock=clock)
    await risk.on_trade_closed("BTC-USDT", "multi_timeframe_long", D(-5))
    await risk.on_trade_closed("ETH-USDT", "trend_distance_short", D(-5))
    assert await risk.protections.loss_streak() == 2
    assert await allowed(risk)  # two losses: one short of the limit
    risk = await restart(db_url, clock)  # the streak is persisted
    risk.config = risk.config.model_copy(update={"risk": risk.config.risk.model_copy(update={"cooldown_after_loss_min": 0})})
    risk.protections.risk = risk.config.risk
    await risk.on_trade_closed("SOL-USDT", "multi_timeframe_long", D(-5))
    d = await risk.check_order(entry(symbol="XRP-USDT"), ACCOUNT, exposures=[])
    assert not d.allowed and d.rule == "protection:loss_streak"
    clock.t = T0 + timedelta(minutes=240) - timedelta(microseconds=1)
    assert not await allowed(risk)
    clock.t = T0 + timedelta(minutes=240)
    assert await allowed(risk)
    # A win in between resets the count.
    await risk.on_trade_closed("BTC-USDT", "x", D(-1))
    await risk.on_trade_closed("BTC-USDT", "x", D(1))
    assert await risk.protections.loss_streak() == 0


async def test_daily_loss_boundary_until_utc_midnight(db_url: str) -> None:
    clock = Clock()
    risk = RiskManager(CONFIG, clock=clock)
    await risk.on_equity(D(10000))  # the day's start
    await risk.on_equity(D("9700.01"))  # 2.9999 %: just inside
    assert await allowed(risk)
    risk = await restart(db_url, clock)  # the day's start equity is persisted
    fired = await risk.on_equity(D(9700))  # exactly 3 %
    assert [p.kind for p in fired] == ["daily_loss"]
    assert (await risk.state.current()).state is TradingState.RUNNING  # a pause, not an alarm
    status = await risk.status()
    [lock] = status.protections
    assert lock.until == datetime(2024, 3, 2, tzinfo=UTC) and "3.00%" in lock.reason
    risk = await restart(db_url, clock)
    clock.t = datetime(2024, 3, 1, 23, 59, 59, tzinfo=UTC)
    assert not await allowed(risk)
    clock.t = datetime(2024, 3, 2, tzinfo=UTC)
    assert await allowed(risk)
    await risk.on_equity(D(9700))  # new day: 9700 is the new start
    assert await allowed(risk)


async def test_drawdown_kill_switch_boundary_restart_and_lift(db_url: str) -> None:
    clock, events = Clock(), []
    closed = []

    async def close_all(reason: str) -> None:
        closed.append(reason)

    cfg = CONFIG.model_copy(update={"risk": CONFIG.risk.model_copy(update={
        "close_positions_on_kill_switch": True, "daily_loss_limit_pct": 50})})
    risk = RiskManager(cfg, clock=clock, alert=events.append, close_all=close_all)
    await risk.on_equity(D(12000))  # peak
    assert not await risk.on_equity(D("10800.01"))  # 8.99992 %... from 12000 -> just inside 10 %
    assert await allowed(risk)
    risk = await restart(db_url, clock)  # the peak is persisted
    risk.config, risk.close_all = cfg, close_all
    risk.protections.risk = cfg.risk
    fired = await risk.on_equity(D(10800))  # exactly 10 %
    assert [p.kind for p in fired] == ["kill_switch"]
    assert closed == ["kill switch"]
    info = await risk.state.current()
    assert info.state is TradingState.HALTED and "kill switch" in info.reason
    await risk.on_equity(D(10700))  # firing again does not duplicate the lock or the close
    assert closed == ["kill switch"] and await ProtectionLock.filter(kind="kill_switch").count() == 1
    risk = await restart(db_url, clock)
    status = await risk.status(D(10700))
    assert status.state is TradingState.HALTED and [p.kind for p in status.protections] == ["kill_switch"]
    assert status.protections[0].until is None and status.drawdown_pct > 10
    assert any("kill_switch" in line for line in status.lines())
    # The admin lifts it and resumes; the current equity becomes the new peak.
    lifted = await risk.lift("kill_switch", "telegram:42")
    assert len(lifted) == 1
    await risk.resume("telegram:42")
    assert await allowed(risk)
    assert await risk.protections.peak_equity() == D(10700)
    row = await ProtectionLock.get(kind="kill_switch")
    assert not row.active and row.lifted_by == "telegram:42"


async def test_api_error_breaker_boundary(db_url: str) -> None:
    clock = Clock()
    risk = RiskManager(CONFIG, clock=clock)
    for i in range(4):  # threshold 4: four errors are allowed
        assert await risk.record_api_error("HTTP 503") is None
        clock.t += timedelta(seconds=10)
    assert await allowed(risk)
    # Errors older than the window no longer count.
    clock.t = T0 + timedelta(minutes=5)  # the first error (at T0) leaves the window
    assert await risk.record_api_error("HTTP 503") is None
    lock = await risk.record_api_error("HTTP 503")  # 5 within 5 minutes: more than 4
    assert lock is not None and lock.kind == "breaker"
    risk = await restart(db_url, clock)
    d = await risk.check_order(entry(), ACCOUNT, exposures=[])
    assert not d.allowed and d.rule == "protection:breaker"
    clock.t += timedelta(minutes=5)
    assert await allowed(risk)


async def test_lift_by_symbol_and_all(db_url: str) -> None:
    clock = Clock()
    risk = RiskManager(CONFIG, clock=clock)
    await risk.on_trade_closed("BTC-USDT", "multi_timeframe_long", D(-1))
    await risk.on_trade_closed("ETH-USDT", "multi_timeframe_long", D(-1))
    assert await risk.lift("btc-usdt", "admin") and await allowed(risk)
    assert not await allowed(risk, entry(symbol="ETH-USDT"))
    assert len(await risk.lift("all", "admin")) == 1
    assert await allowed(risk, entry(symbol="ETH-USDT"))
    assert await risk.lift("nothing-matches", "admin") == []
