"""Performance figures answered from the database: trades, profit, daily, signals."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from db.models import DailyMetric, EquitySnapshot, Signal, Trade, TradeState

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class ProfitStats:
    """Closed-trade statistics over a window."""

    days: int
    trades: int
    wins: int
    losses: int
    net_pnl: Decimal
    gross_profit: Decimal
    gross_loss: Decimal  # positive number
    avg_win: Decimal | None
    avg_loss: Decimal | None  # positive number
    avg_r: Decimal | None
    start_equity: Decimal | None
    max_drawdown_pct: Decimal | None

    @property
    def win_rate_pct(self) -> Decimal | None:
        """Wins over decided trades, in percent."""
        return Decimal(self.wins * 100) / self.trades if self.trades else None

    @property
    def profit_factor(self) -> Decimal | None:
        """Gross profit over gross loss (``None`` without losses)."""
        return self.gross_profit / self.gross_loss if self.gross_loss > 0 else None

    @property
    def reward_risk(self) -> Decimal | None:
        """Average win over average loss."""
        if self.avg_win is None or not self.avg_loss:
            return None
        return self.avg_win / self.avg_loss

    @property
    def return_pct(self) -> Decimal | None:
        """Net PnL over the equity at the start of the window."""
        if not self.start_equity:
            return None
        return self.net_pnl * 100 / self.start_equity


async def closed_trades(mode: str, limit: int) -> list[Trade]:
    """The newest closed trades of this mode."""
    return await Trade.filter(mode=mode, state=TradeState.CLOSED).order_by("-closed_at", "-id").limit(limit)


async def profit_stats(mode: str, days: int, now: datetime, current_equity: Decimal | None) -> ProfitStats:
    """Statistics of trades closed in the last ``days`` days."""
    since = now - timedelta(days=days)
    trades = await Trade.filter(mode=mode, state=TradeState.CLOSED, closed_at__gte=since).all()
    pnls = [Decimal(t.realized_pnl) for t in trades]
    wins = [p for p in pnls if p > 0]
    losses = [-p for p in pnls if p < 0]
    rs = [Decimal(t.r_multiple) for t in trades if t.r_multiple is not None]
    net = sum(pnls, ZERO)

    snapshots = await EquitySnapshot.filter(mode=mode, at__gte=since).order_by("at").values_list("equity", flat=True)
    equities = [Decimal(e) for e in snapshots]
    start_equity: Decimal | None = equities[0] if equities else None
    if start_equity is None and current_equity is not None:
        start_equity = current_equity - net
    drawdown = _max_drawdown_pct(equities) if equities else None
    if drawdown is None:
        metrics = await DailyMetric.filter(mode=mode, day__gte=since.date()).values_list("max_drawdown_pct", flat=True)
        drawdown = max((Decimal(m) for m in metrics), default=None)

    return ProfitStats(
        days=days,
        trades=len(trades),
        wins=len(wins),
        losses=len(losses),
        net_pnl=net,
        gross_profit=sum(wins, ZERO),
        gross_loss=sum(losses, ZERO),
        avg_win=sum(wins, ZERO) / len(wins) if wins else None,
        avg_loss=sum(losses, ZERO) / len(losses) if losses else None,
        avg_r=sum(rs, ZERO) / len(rs) if rs else None,
        start_equity=start_equity,
        max_drawdown_pct=drawdown,
    )


def _max_drawdown_pct(equities: list[Decimal]) -> Decimal:
    """Largest peak-to-trough fall, in percent of the peak."""
    peak = equities[0]
    worst = ZERO
    for equity in equities:
        peak = max(peak, equity)
        if peak > 0:
            worst = max(worst, (peak - equity) * 100 / peak)
    return worst


async def daily_rows(mode: str, limit: int) -> list[DailyMetric]:
    """The newest daily metric rows."""
    return await DailyMetric.filter(mode=mode).order_by("-day").limit(limit)


async def recent_signals(mode: str, limit: int) -> list[Signal]:
    """The newest signals with their fate."""
    return await Signal.filter(mode=mode).order_by("-created_at", "-id").limit(limit)
