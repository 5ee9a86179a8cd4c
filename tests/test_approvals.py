"""Approval service rules that do not need a chat transport."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from bot.config import ApprovalConfig
from commands.approvals import ApprovalService, price_check
from commands.model import Caller, Reply
from db.models import Approval, ApprovalStatus, Signal, SignalFate
from tests.chatops_fixtures import ADMIN, CHAT, make_signal
from tests.fakes_trading import FakeTrading

D = Decimal


async def test_price_check_long_and_short(db_url: str) -> None:
    long = await make_signal(entry="100", stop="95", target="110", side="LONG")
    short = await make_signal(entry="100", stop="105", target="90", side="SHORT", candle=2)
    assert price_check(long, D("100.4"), 0.5) is None
    assert "moved 0.60%" in price_check(long, D("100.6"), 0.5)
    assert "moved 0.60%" in price_check(long, D("99.4"), 0.5)  # either direction: the setup changed
    assert "past the stop" in price_check(long, D("95"), 50)
    assert price_check(short, D("99.7"), 0.5) is None
    assert "past the stop" in price_check(short, D("105.1"), 50)


class BrokenNotifier:
    name = "broken"

    async def post_request(self, reply: Reply) -> list[dict]:
        raise ConnectionError("chat down")

    async def update_request(self, ref: dict, reply: Reply) -> None:
        raise ConnectionError("chat down")


async def test_unknown_price_refuses_and_a_broken_transport_does_not_block(db_url: str) -> None:
    trading = FakeTrading(prices={})
    service = ApprovalService(ApprovalConfig(timeout_s=30), trading, [BrokenNotifier()])
    approval_id = await service.request(await make_signal())
    result = await service.decide(approval_id, Caller("telegram", ADMIN, CHAT), approve=True)
    assert result.toast.startswith("Refused: price unavailable")
    decision = await service.wait(approval_id)
    assert decision.status is ApprovalStatus.REFUSED and decision.price_at_decision is None
    assert (await Signal.get(approvals__id=approval_id)).fate is SignalFate.DENIED
    await service.close()


async def test_requests_of_an_earlier_run_expire_after_a_restart(db_url: str) -> None:
    signal = await make_signal()
    stale = await Approval.create(signal=signal, expires_at=datetime.now(UTC) - timedelta(seconds=1))
    # Not overdue yet, but its waiter died with the last process: an approval could place nothing.
    fresh = await Approval.create(signal=signal, expires_at=datetime.now(UTC) + timedelta(minutes=5))
    service = ApprovalService(ApprovalConfig(timeout_s=30), FakeTrading())
    assert await service.expire_overdue() == 2
    assert (await Approval.get(id=stale.id)).status is ApprovalStatus.EXPIRED
    assert (await Approval.get(id=fresh.id)).status is ApprovalStatus.EXPIRED
    assert "restarted" in (await Approval.get(id=fresh.id)).reason
    assert (await service.wait(stale.id)).status is ApprovalStatus.EXPIRED  # answered from the database
    assert (await Signal.get(id=signal.id)).fate is SignalFate.EXPIRED


async def test_concurrent_decisions_have_one_winner(db_url: str) -> None:
    service = ApprovalService(ApprovalConfig(timeout_s=30), FakeTrading())
    approval_id = await service.request(await make_signal())
    callers = [Caller("telegram", ADMIN, CHAT), Caller("discord", 5111, 7001)]
    results = await asyncio.gather(*(service.decide(approval_id, c, approve=i % 2 == 0) for i in range(6) for c in callers))
    winners = [r for r in results if r.toast in ("Approved", "Denied")]
    assert len(winners) == 1
    row = await Approval.get(id=approval_id)
    assert row.status in (ApprovalStatus.APPROVED, ApprovalStatus.DENIED) and row.decided_at is not None
    await service.close()
