"""The hourly status and the daily summary, built from the trading ports and the database."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from alerts import events
from alerts.chart import render_equity_chart
from alerts.publisher import AlertPublisher
from commands import format as fmt
from commands.builtin import health_line, positions_table
from commands.ports import TradingReader
from db.models import DailyMetric, EquitySnapshot, Trade, TradeState

log = logging.getLogger(__name__)


async def hourly_status_event(reader: TradingReader, now: datetime) -> events.AlertEvent:
    """State, equity, drawdown, health and open positions."""
    snap = await reader.status()
    total = sum((p.unrealized_pnl for p in snap.positions), Decimal(0))
    fields = [
        ("State", snap.state),
        ("Equity", fmt.money(snap.equity)),
        ("Drawdown", fmt.pct(snap.drawdown_pct)),
        ("Open positions", f"{len(snap.positions)} ({fmt.signed_money(total)})"),
        ("Protections", ", ".join(p.kind for p in snap.protections) or "none"),
        ("Health", health_line(snap.health)),
        ("Uptime", fmt.duration((now - snap.started_at).total_seconds())),
    ]
    table = positions_table(snap.positions) if snap.positions else None
    return events.hourly_status(f"Hourly status {now:%H:%M} UTC: {snap.mode.upper()} {snap.state}", fields, table)


async def daily_summary_event(mode: str, day: date, chart_dir: str | Path) -> events.AlertEvent:
    """The day's PnL, trades, win rate and the equity chart of the last 30 days."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    end = start + timedelta(days=1)
    trades = await Trade.filter(mode=mode, state=TradeState.CLOSED, closed_at__gte=start, closed_at__lt=end).all()
    pnl = sum((Decimal(t.realized_pnl) for t in trades), Decimal(0))
    wins = sum(1 for t in trades if Decimal(t.realized_pnl) > 0)
    metric = await DailyMetric.get_or_none(mode=mode, day=day)
    fields = [
        ("Net PnL", fmt.signed_money(pnl)),
        ("Trades", f"{len(trades)} ({wins} won)"),
        ("Win rate", fmt.pct(Decimal(wins * 100) / len(trades), 1) if trades else "-"),
    ]
    if metric is not None:
        fields += [("Equity", f"{fmt.money(metric.start_equity)} -> {fmt.money(metric.end_equity)}"), ("Max drawdown", fmt.pct(metric.max_drawdown_pct))]
    snapshots = await EquitySnapshot.filter(mode=mode, at__gte=end - timedelta(days=30), at__lt=end).order_by("at").values_list("at", "equity")
    chart = await render_equity_chart([(at, Decimal(eq)) for at, eq in snapshots], Path(chart_dir) / f"equity-{day.isoformat()}.png", f"Equity to {day.isoformat()}")
    return events.daily_summary(day.isoformat(), fields, chart)


class ReportScheduler:
    """Publishes the hourly status at every full hour and the daily summary after 00:00 UTC."""

    def __init__(
        self,
        publisher: AlertPublisher,
        reader: TradingReader,
        mode: str,
        chart_dir: str | Path = "data/charts",
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.publisher = publisher
        self.reader = reader
        self.mode = mode
        self.chart_dir = chart_dir
        self._now = now
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the schedule."""
        self._task = asyncio.create_task(self._run(), name="alert-reports")

    async def stop(self) -> None:
        """Stop the schedule."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            now = self._now()
            next_hour = (now + timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
            await asyncio.sleep(max(1.0, (next_hour - now).total_seconds()))
            try:
                at = self._now()
                if at.hour == 0:
                    self.publisher.publish(await daily_summary_event(self.mode, (at - timedelta(days=1)).date(), self.chart_dir))
                self.publisher.publish(await hourly_status_event(self.reader, at))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("scheduled report failed")
