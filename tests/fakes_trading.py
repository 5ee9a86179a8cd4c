"""In-memory implementations of ``commands.ports`` for tests (the real engine is wired later)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from commands.ports import (
    BalanceView,
    CloseReport,
    EmergencyStopReport,
    HealthView,
    OrderView,
    PositionView,
    ProtectionView,
    StatusSnapshot,
)

D = Decimal


def sample_position(pid: str = "7", symbol: str = "BTC-USDT", pnl: str = "42.5", r: str = "0.85") -> PositionView:
    """A long position in profit."""
    return PositionView(
        id=pid, symbol=symbol, side="LONG", qty=D("0.010"), entry_price=D("60000"), mark_price=D("64250"),
        stop=D("55000"), target=D("70000"), unrealized_pnl=D(pnl), r_multiple=D(r), strategy="multi_timeframe_long",
    )


@dataclass
class FakeTrading:
    """Reader + control + price source in one object, recording every control call."""

    mode: str = "paper"
    state: str = "RUNNING"
    state_reason: str = ""
    approval_enabled: bool = False
    equity: Decimal = D("10250.75")
    positions: list[PositionView] = field(default_factory=lambda: [sample_position()])
    orders: list[OrderView] = field(default_factory=list)
    protections: list[ProtectionView] = field(default_factory=list)
    prices: dict[str, Decimal] = field(default_factory=lambda: {"BTC-USDT": D("60000")})
    calls: list[tuple[str, ...]] = field(default_factory=list)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC) - timedelta(hours=5, minutes=3))

    async def status(self) -> StatusSnapshot:
        return StatusSnapshot(
            mode=self.mode, state=self.state, state_reason=self.state_reason, approval_enabled=self.approval_enabled,
            started_at=self.started_at, equity=self.equity, drawdown_pct=D("1.25"), positions=list(self.positions),
            protections=list(self.protections),
            health=[HealthView("feed", True, age_s=2.0), HealthView("api", True, age_s=1.0)],
        )

    async def balance(self) -> BalanceView:
        return BalanceView("USDT", self.equity, D("9000"), D("1208.25"), D("42.5"))

    async def open_orders(self) -> list[OrderView]:
        return list(self.orders)

    async def pause(self, actor: str, reason: str) -> None:
        self.calls.append(("pause", actor, reason))
        self.state, self.state_reason = "PAUSED", reason

    async def resume(self, actor: str) -> None:
        self.calls.append(("resume", actor))
        self.state, self.state_reason = "RUNNING", ""

    async def set_approval(self, enabled: bool, actor: str) -> None:
        self.calls.append(("set_approval", str(enabled), actor))
        self.approval_enabled = enabled

    async def close_positions(self, target: str, actor: str) -> CloseReport:
        self.calls.append(("close", target, actor))
        chosen = [p for p in self.positions if target in ("all", p.id)]
        if not chosen:
            return CloseReport(failed={target: "no such position"})
        self.positions = [p for p in self.positions if p not in chosen]
        return CloseReport(closed=[p.id for p in chosen])

    async def unlock(self, what: str, actor: str) -> list[str]:
        self.calls.append(("unlock", what, actor))
        lifted = [p.kind for p in self.protections if what in ("all", p.kind, p.symbol)]
        self.protections = [p for p in self.protections if p.kind not in lifted]
        return lifted

    async def emergency_stop(self, actor: str) -> EmergencyStopReport:
        self.calls.append(("emergency_stop", actor))
        closed = [p.id for p in self.positions]
        cancelled = len(self.orders)
        self.positions, self.orders = [], []
        self.state, self.state_reason = "PAUSED", "emergency stop"
        return EmergencyStopReport(cancelled_orders=cancelled, closed_positions=closed, failures=[], flat=True)

    async def last_price(self, symbol: str) -> Decimal:
        if symbol not in self.prices:
            raise LookupError(f"no price for {symbol}")
        return self.prices[symbol]
