"""The console status dashboard (hourly, and every few seconds in ``make demo``).

Rendered from the database (trades of the UTC day, open trades) plus in-memory figures the
worker passes in (uptime, equity, last prices, trading state); the same text goes to chat as
the hourly status.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from db.models import Trade, TradeState
from engine.execution.positions import unrealized


@dataclass
class DashboardInputs:
    """What the worker knows in memory."""

    mode: str
    uptime_s: float
    symbols: list[str]
    strategies: dict[str, bool]  # name -> enabled
    equity: Decimal
    peak_equity: Decimal | None
    state: str
    state_reason: str = ""
    last_prices: dict[str, float] = field(default_factory=dict)
    halted_reason: str | None = None


def _uptime(seconds: float) -> str:
    minutes = int(seconds // 60)
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    return (f"{days}d " if days else "") + f"{hours}h {mins:02d}m"


async def render_dashboard(inputs: DashboardInputs, *, now: datetime | None = None) -> str:
    """The status block, as in the user's original design (uptime, positions, today's stats, drawdown, balance)."""
    now = now or datetime.now(UTC)
    day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    open_trades = await Trade.filter(mode=inputs.mode, state__in=[TradeState.OPEN, TradeState.CLOSING]).order_by("id")
    closed_today = await Trade.filter(mode=inputs.mode, state=TradeState.CLOSED, closed_at__gte=day_start,
                                      entry_price__not_isnull=True)
    lines = [f"=== Trading Engine Status [{inputs.mode.upper()}] ===",
             f"Uptime: {_uptime(inputs.uptime_s)}",
             f"Symbols: {', '.join(inputs.symbols)}",
             "Strategies: " + ", ".join(f"{name} ({'active' if on else 'off'})" for name, on in inputs.strategies.items()),
             f"State: {inputs.state}" + (f" ({inputs.state_reason})" if inputs.state_reason else "")
             + (f"; entries halted: {inputs.halted_reason}" if inputs.halted_reason else ""),
             "",
             f"Open Positions: {len(open_trades)}"]
    for trade in open_trades:
        price = inputs.last_prices.get(trade.symbol)
        if price is None or trade.entry_price is None:
            lines.append(f"  - {trade.symbol} {trade.side} {trade.qty} @ {trade.entry_price} ({trade.strategy})")
            continue
        mark = Decimal(repr(price))
        upnl = unrealized(trade, mark)
        pct = (mark - trade.entry_price) / trade.entry_price * 100 * (1 if trade.side == "LONG" else -1)
        lines.append(f"  - {trade.symbol} {trade.side} {trade.qty} @ {trade.entry_price} | stop {trade.stop} | "
                     f"PnL: {pct:+.2f}% ({upnl.r_multiple:+.2f}R, {upnl.money:+.2f}) [{trade.strategy}]")
    wins = sum(1 for t in closed_today if t.realized_pnl > 0)
    losses = len(closed_today) - wins
    pnl = sum((t.realized_pnl for t in closed_today), Decimal(0))
    base = inputs.equity - pnl if inputs.equity - pnl > 0 else None
    lines += ["", "Today's Stats:", f"  Trades: {len(closed_today)} ({wins}W / {losses}L)",
              f"  PnL: {pnl:+.2f}" + (f" ({pnl / base * 100:+.2f}%)" if base else ""),
              f"  Win Rate: {wins / len(closed_today) * 100:.1f}%" if closed_today else "  Win Rate: -", ""]
    if inputs.peak_equity and inputs.peak_equity > 0:
        drawdown = (inputs.equity - inputs.peak_equity) / inputs.peak_equity * 100
        lines.append(f"Current Drawdown: {min(drawdown, Decimal(0)):.2f}%")
    lines.append(f"Account Balance: {inputs.equity:,.2f} USDT")
    return "\n".join(lines)
