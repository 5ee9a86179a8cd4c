"""Pre-trade gate: each rule just inside and just outside its limit, rejections stored and alerted,
reduce-only orders always pass, and the state survives a restart."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

from bot.config import load_config
from db.database import close_db, init_db
from db.models import AuditLog
from engine.risk.gate import AccountSnapshot, Exposure, OrderProposal, evaluate
from engine.risk.manager import RATE_SAVE_DELAY_S, RiskManager
from engine.risk.protections import ProtectionKind
from engine.risk.state import TradingState

CONFIG = load_config(None, env={}, overrides={"risk": {
    "max_portfolio_risk_pct": 6, "max_open_positions": 2, "max_notional_usdt": 5000, "max_leverage": 3,
    "min_free_margin_pct": 10, "max_orders_per_minute": 3, "max_price_deviation_pct": 5}})
ACCOUNT = AccountSnapshot(equity=D(10000), available_margin=D(10000))


def long(qty: str = "1", entry: str = "100", stop: str = "90", **kw) -> OrderProposal:
    """multi_timeframe_long: max_risk_pct 3 => 300 USDT on 10 000."""
    return OrderProposal(symbol="BTC-USDT", strategy="multi_timeframe_long", side="LONG", qty=D(qty),
                         entry_price=D(entry), stop_price=D(stop), **kw)


def check(p: OrderProposal, exposures=(), account=ACCOUNT, orders=0):
    return evaluate(p, account, list(exposures), CONFIG.risk, CONFIG.strategies, orders_last_minute=orders)


def test_risk_per_trade_boundary() -> None:
    assert check(long(qty="30")).allowed  # 30 * 10 = 300 = exactly 3 %
    d = check(long(qty="30.01"))
    assert not d.allowed and d.rule == "risk_per_trade"


def test_portfolio_risk_boundary() -> None:
    open_ = [Exposure("ETH-USDT", "trend_distance_short", "SHORT", D(10), D(100), D(135))]  # 350 USDT at risk
    assert check(long(qty="25"), open_).allowed  # 350 + 250 = 6 %
    d = check(long(qty="25.01"), open_)
    assert not d.allowed and d.rule == "portfolio_risk"
    # A stop moved past the entry risks nothing.
    locked = [Exposure("ETH-USDT", "trend_distance_short", "SHORT", D(10), D(100), D(95))]
    assert check(long(qty="30"), locked).allowed


def test_max_positions_boundary() -> None:
    one = [Exposure("ETH-USDT", "x", "LONG", D("0.001"), D(100), D(99))]
    assert check(long(), one).allowed
    d = check(long(), one * 2)
    assert not d.allowed and d.rule == "max_positions"


def test_max_notional_boundary() -> None:
    assert check(long(qty="50", stop="94")).allowed  # 5000 notional, risk 300
    d = check(long(qty="50.01", stop="94.01"))
    assert not d.allowed and d.rule == "max_notional"


def test_leverage_boundary() -> None:
    assert check(long(qty="1", leverage=D(3))).allowed
    d = check(long(qty="1", leverage=D(4)))
    assert not d.allowed and d.rule == "max_leverage"
    # Account leverage: 25 000 open + 5 000 = 3x of 10 000 equity is the limit.
    big = [Exposure("ETH-USDT", "x", "LONG", D(250), D(100), D(100))]
    assert check(long(qty="50", stop="94"), big).allowed
    d = check(long(qty="50", stop="94"), big + [Exposure("SOL-USDT", "x", "LONG", D("0.01"), D(100), D(100))])
    assert not d.allowed and d.rule in ("max_leverage", "max_positions")


def test_free_margin_and_balance() -> None:
    # 5000 notional at 1x needs 5000 margin; 10 % of 10 000 must stay free => available >= 6000.
    assert check(long(qty="50", stop="94"), account=AccountSnapshot(D(10000), D(6000))).allowed
    d = check(long(qty="50", stop="94"), account=AccountSnapshot(D(10000), D("5999.99")))
    assert not d.allowed and d.rule == "free_margin"
    d = check(long(), account=AccountSnapshot(D(0), D(0)))
    assert not d.allowed and d.rule == "balance"


def test_contract_minimums_boundary() -> None:
    assert check(long(qty="0.01", min_qty=D("0.01"), min_notional=D(1))).allowed
    d = check(long(qty="0.009", min_qty=D("0.01")))
    assert not d.allowed and d.rule == "contract_minimum"
    d = check(long(qty="0.01", min_notional=D("1.01")))
    assert not d.allowed and d.rule == "contract_minimum"


def test_order_rate_boundary() -> None:
    assert check(long(), orders=2).allowed
    d = check(long(), orders=3)
    assert not d.allowed and d.rule == "order_rate"


def test_price_sanity() -> None:
    assert check(long(reference_price=D("95.24"))).allowed  # 4.99 % away
    d = check(long(reference_price=D("95.2")))  # 5.04 % away
    assert not d.allowed and d.rule == "price_deviation"
    d = check(long(stop="100"))
    assert not d.allowed and d.rule == "order"
    d = check(long(stop="0"))
    assert not d.allowed and d.rule == "order"


def test_reduce_only_always_passes() -> None:
    p = long(qty="999999", stop="1", reduce_only=True)
    assert check(p, [Exposure("ETH-USDT", "x", "LONG", D(1), D(1), D(0))] * 9,
                 account=AccountSnapshot(D(0), D(0)), orders=999).allowed


async def test_rejection_is_stored_and_alerted(db_url: str) -> None:
    events = []
    risk = RiskManager(CONFIG, alert=events.append)
    decision = await risk.check_order(long(qty="31"), ACCOUNT, exposures=[])
    assert not decision.allowed and decision.rule == "risk_per_trade"
    rows = await AuditLog.filter(kind="risk_rejection")
    assert len(rows) == 1 and rows[0].detail["rule"] == "risk_per_trade" and rows[0].outcome == "rejected"
    assert [e.event_type for e in events] == ["risk_rejection"] and "risk_per_trade" in events[0].title


async def test_state_blocks_entries_not_exits(db_url: str) -> None:
    risk = RiskManager(CONFIG)
    await risk.pause("telegram:1", "holiday")
    d = await risk.check_order(long(), ACCOUNT, exposures=[])
    assert not d.allowed and d.rule == "state" and "PAUSED" in d.reason
    assert (await risk.check_order(long(reduce_only=True), ACCOUNT, exposures=[])).allowed
    await risk.reduce_only("telegram:1")
    assert not (await risk.check_order(long(), ACCOUNT, exposures=[])).allowed
    await risk.resume("telegram:1")
    assert (await risk.check_order(long(), ACCOUNT, exposures=[])).allowed


async def test_order_rate_and_state_survive_a_restart(db_url: str) -> None:
    now = [datetime(2024, 1, 1, 12, 0, tzinfo=UTC)]
    risk = RiskManager(CONFIG, clock=lambda: now[0])
    for _ in range(3):
        assert (await risk.check_order(long(), ACCOUNT, exposures=[])).allowed
    await risk.halt("test halt", "tester")
    await risk.flush()  # the order-rate count is written behind the order
    await close_db()
    await init_db(db_url)
    risk2 = RiskManager(CONFIG, clock=lambda: now[0])
    info = await risk2.state.current()
    assert info.state is TradingState.HALTED and info.reason == "test halt"
    await risk2.resume("admin")
    d = await risk2.check_order(long(), ACCOUNT, exposures=[])
    assert not d.allowed and d.rule == "order_rate"  # the three orders of this minute still count
    now[0] += timedelta(seconds=60)
    assert (await risk2.check_order(long(), ACCOUNT, exposures=[])).allowed


async def test_the_order_rate_count_is_written_shortly_after_the_order_without_a_flush(db_url: str) -> None:
    """The count is written behind the order (a timer), and an order counted during that write is written too."""
    now = [datetime(2024, 1, 1, 12, 0, tzinfo=UTC)]
    risk = RiskManager(CONFIG, clock=lambda: now[0])
    assert (await risk.check_order(long(), ACCOUNT, exposures=[])).allowed
    stored = RiskManager(CONFIG, clock=lambda: now[0])  # reads what the database holds, as a restarted bot would
    assert (await stored._rate_counter()).count(now[0]) == 0  # not written on the order path itself

    async def stored_count_reaches(expected: int) -> bool:
        for _ in range(100):  # up to 5 s: the write is due RATE_SAVE_DELAY_S after the order
            await asyncio.sleep(RATE_SAVE_DELAY_S)
            if (await RiskManager(CONFIG, clock=lambda: now[0])._rate_counter()).count(now[0]) == expected:
                return True
        return False

    assert await stored_count_reaches(1)
    assert (await risk.check_order(long(), ACCOUNT, exposures=[])).allowed
    assert (await risk.check_order(long(), ACCOUNT, exposures=[])).allowed
    assert await stored_count_reaches(3)


async def test_entry_view_sees_changes_made_here_at_once_and_other_processes_within_its_ttl(db_url: str) -> None:
    """The worker's gate reads state and locks ahead of entries (no database read on the order path)."""
    now = [datetime(2024, 1, 1, 12, 0, tzinfo=UTC)]
    risk = RiskManager(CONFIG, clock=lambda: now[0], entry_view_ttl_s=3600)  # only a refresh or a change here re-reads
    other_process = RiskManager(CONFIG, clock=lambda: now[0])  # e.g. `trading-bot emergency-stop` on the same database
    assert (await risk.check_order(long(), ACCOUNT, exposures=[])).allowed
    # a change made through this manager applies to the very next entry
    await risk.pause("telegram:1", "lunch")
    d = await risk.check_order(long(), ACCOUNT, exposures=[])
    assert not d.allowed and d.rule == "state"
    await risk.resume("telegram:1")
    lock = await risk.protections.lock(ProtectionKind.COOLDOWN, "loss", now[0] + timedelta(minutes=5),
                                       symbol="BTC-USDT", strategy="multi_timeframe_long")
    d = await risk.check_order(long(), ACCOUNT, exposures=[])
    assert not d.allowed and d.rule == "protection:cooldown"
    now[0] += timedelta(minutes=5)  # the lock's time is up: it no longer blocks, without a read
    assert (await risk.check_order(long(), ACCOUNT, exposures=[])).allowed
    assert lock.until is not None
    # another process halts: seen once the view is re-read (the worker's risk_view job, every second)
    await other_process.halt("emergency stop from the command line", "cli")
    assert (await risk.check_order(long(), ACCOUNT, exposures=[])).allowed
    await risk.refresh_entry_view()
    d = await risk.check_order(long(), ACCOUNT, exposures=[])
    assert not d.allowed and d.rule == "state" and "HALTED" in d.reason


async def test_without_a_ttl_every_entry_reads_the_database(db_url: str) -> None:
    risk = RiskManager(CONFIG)
    other_process = RiskManager(CONFIG)
    assert (await risk.check_order(long(), ACCOUNT, exposures=[])).allowed
    await other_process.pause("cli", "maintenance")
    d = await risk.check_order(long(), ACCOUNT, exposures=[])
    assert not d.allowed and d.rule == "state"
