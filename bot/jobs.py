"""The worker's scheduled jobs (APScheduler through :class:`bot.scheduler.JobScheduler`).

| job | when | what |
|---|---|---|
| ``reconcile`` | every ``reconciliation.interval_min`` (live) | exchange vs database (``engine.risk.reconcile``) |
| ``risk_view`` | every second | trading state and locks re-read for the entry gate (a change from another process) |
| ``equity`` | every minute | equity to the risk manager (daily loss, drawdown kill switch) and an ``EquitySnapshot`` |
| ``clock_resync`` | every 10 min | server time offset (signed requests) |
| ``contracts`` | every hour | contract rules re-read; a symbol that stops trading halts entries |
| ``listen_key`` | every 30 min (live) | checks the account stream's listen key is alive (the stream extends it itself) |
| ``hourly_status`` | every hour at :00 | the console dashboard, logged and sent as the ``hourly_status`` alert |
| ``daily`` | 00:00 UTC | the day's ``DailyMetric`` row and the ``daily_summary`` alert |
| ``outbox`` | every 30 s | alert outbox flush (when a publisher is wired) |
| ``gc`` | every 10 min at :30 s | full garbage collection, then the heap frozen (``bot.gc_tuning``), away from candle closes |
| ``db_checkpoint`` | every minute at :30 s | SQLite's WAL copied into the database file and started over (``db.database.checkpoint``), never inside an order's commit |
| ``housekeeping`` | 03:30 UTC | old rotated logs, old equity samples and delivered alerts deleted |
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

from bot.gc_tuning import freeze_heap
from bot.scheduler import JobSpec
from db.database import checkpoint
from db.models import AlertOutbox, AlertStatus, DailyMetric, EquitySnapshot, Trade, TradeState

if TYPE_CHECKING:
    from bot.worker import Worker

log = logging.getLogger(__name__)

LOG_RETENTION_DAYS = 90  # the seeds ask for at least 90 days of logs
EQUITY_RETENTION_DAYS = 400
OUTBOX_RETENTION_DAYS = 30


class WorkerJobs:
    """The job bodies, bound to one running worker."""

    def __init__(self, worker: "Worker") -> None:
        self.worker = worker

    def specs(self) -> list[JobSpec]:
        """Every job of this mode."""
        config = self.worker.config
        specs = [
            JobSpec("risk_view", self.risk_view, interval_s=1),
            JobSpec("equity", self.equity, interval_s=60),
            JobSpec("clock_resync", self.clock_resync, interval_s=600),
            JobSpec("contracts", self.contracts, interval_s=3600),
            JobSpec("hourly_status", self.hourly_status, cron={"minute": 0}),
            JobSpec("daily", self.daily, cron={"hour": 0, "minute": 0}, misfire_grace_s=3600),
            JobSpec("outbox", self.outbox, interval_s=30),
            JobSpec("housekeeping", self.housekeeping, cron={"hour": 3, "minute": 30}, misfire_grace_s=3600),
            JobSpec("gc", self.gc, cron={"minute": "*/10", "second": 30}),
            JobSpec("db_checkpoint", self.db_checkpoint, cron={"second": 30}),
        ]
        if config.mode.value == "live":
            specs.append(JobSpec("reconcile", self.reconcile, interval_s=config.reconciliation.interval_min * 60))
            specs.append(JobSpec("listen_key", self.listen_key, interval_s=1800))
        return specs

    # -- jobs -------------------------------------------------------------------------------------

    async def risk_view(self) -> None:
        """Re-read the trading state and the locks the entry gate uses, so no entry waits for the database."""
        if self.worker.risk is not None:
            await self.worker.risk.refresh_entry_view()

    async def gc(self) -> None:
        """Collect and freeze the heap between candle closes, so collections never pause an entry."""
        pause_ms = freeze_heap()
        if pause_ms > 250:
            log.info("garbage collection paused the bot %.0f ms", pause_ms)

    async def db_checkpoint(self) -> None:
        """SQLite's WAL into the database file, between candle closes (commits never do it themselves)."""
        await checkpoint()

    async def reconcile(self) -> None:
        """Periodic reconciliation."""
        await self.worker.reconcile("periodic")

    async def equity(self) -> None:
        """Feed the risk manager and store a sample."""
        equity = await self.worker.current_equity()
        if equity is None:
            return
        await self.worker.risk.on_equity(equity)
        await EquitySnapshot.create(mode=self.worker.config.mode.value, equity=equity)

    async def clock_resync(self) -> None:
        """Re-measure the offset to the exchange clock."""
        rest = self.worker.runtime.rest
        try:
            offset = await rest.sync_time()
            self.worker.health.api_ok()
            log.info("clock resynced, offset %s ms", offset)
        except Exception as exc:
            await self.worker.api_failed("clock resync", exc)

    async def contracts(self) -> None:
        """Re-read the contract rules; a contract no longer open for API trading halts entries."""
        rest = self.worker.runtime.rest
        for symbol in self.worker.config.symbols:
            try:
                contract = next((c for c in await rest.contracts() if c.symbol == symbol), None)
                self.worker.health.api_ok()
            except Exception as exc:
                await self.worker.api_failed(f"contract {symbol}", exc)
                continue
            if contract is None or contract.status != 1 or not contract.api_open_allowed:
                await self.worker.halt_entries(f"contract {symbol} is no longer open for API trading")

    async def listen_key(self) -> None:
        """The account stream extends its key itself; this checks it still has one and is connected."""
        stream = self.worker.runtime.account_stream
        if stream is None:
            return
        if stream.listen_key is None or not stream.conn.connected.is_set():
            log.warning("account stream has no live listen key / connection right now; it reconnects on its own")

    async def hourly_status(self) -> None:
        """Console dashboard and the hourly_status alert."""
        text = await self.worker.dashboard_text()
        print(text, flush=True)
        await self.worker.alerts.publish("hourly_status", text, {})

    async def daily(self) -> None:
        """Yesterday's metrics row and the daily summary."""
        today = datetime.now(UTC).date()
        row = await write_daily_metric(self.worker.config.mode.value, today - timedelta(days=1), await self.worker.current_equity())
        text = (f"[{self.worker.config.mode.value.upper()}] daily summary {row.day}: {row.trades} trades ({row.wins}W/{row.losses}L), pnl {row.realized_pnl:+.4f}, "
                f"fees {row.fees:.4f}, equity {row.end_equity}")
        log.info(text)
        await self.worker.alerts.publish("daily_summary", text, {"day": str(row.day)})

    async def outbox(self) -> None:
        """Flush the alert outbox (a no-op until a publisher is wired)."""
        await self.worker.alerts.flush()

    async def housekeeping(self) -> None:
        """Delete what is past its retention."""
        await housekeeping(self.worker.config.logging.file, datetime.now(UTC))


async def write_daily_metric(mode: str, day: date, equity: Decimal | None) -> DailyMetric:
    """Create or update the ``DailyMetric`` row of ``day`` from the trades closed that day."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    end = start + timedelta(days=1)
    closed = await Trade.filter(mode=mode, state=TradeState.CLOSED, closed_at__gte=start, closed_at__lt=end,
                                entry_price__not_isnull=True)
    samples = await EquitySnapshot.filter(mode=mode, at__gte=start, at__lt=end).order_by("at")
    values = [s.equity for s in samples] or ([equity] if equity is not None else [Decimal(0)])
    peak, trough_dd = values[0], Decimal(0)
    for v in values:
        peak = max(peak, v)
        if peak > 0:
            trough_dd = max(trough_dd, (peak - v) / peak * 100)
    fields = {
        "start_equity": values[0], "end_equity": values[-1] if equity is None else equity, "peak_equity": max(values),
        "realized_pnl": sum((t.realized_pnl for t in closed), Decimal(0)), "fees": sum((t.fees for t in closed), Decimal(0)),
        "funding": sum((t.funding for t in closed), Decimal(0)), "trades": len(closed),
        "wins": sum(1 for t in closed if t.realized_pnl > 0), "losses": sum(1 for t in closed if t.realized_pnl <= 0),
        "max_drawdown_pct": trough_dd.quantize(Decimal("0.0001")),
    }
    row, created = await DailyMetric.get_or_create(day=day, mode=mode, defaults=fields)
    if not created:
        for key, value in fields.items():
            setattr(row, key, value)
        await row.save()
    return row


async def housekeeping(log_file: str | None, now: datetime) -> dict[str, int]:
    """Rotated log files older than :data:`LOG_RETENTION_DAYS`, old equity samples and delivered alerts."""
    removed_logs = 0
    if log_file:
        path = Path(log_file)
        cutoff = time.time() - LOG_RETENTION_DAYS * 86400

        def sweep() -> int:
            count = 0
            if not path.parent.is_dir():
                return 0
            for old in path.parent.glob(path.name + ".*"):  # rotated copies only, never the live file
                try:
                    if old.stat().st_mtime < cutoff:
                        old.unlink()
                        count += 1
                except OSError:
                    continue
            return count

        removed_logs = await asyncio.to_thread(sweep)
    equity = await EquitySnapshot.filter(at__lt=now - timedelta(days=EQUITY_RETENTION_DAYS)).delete()
    alerts = await AlertOutbox.filter(status=AlertStatus.SENT, created_at__lt=now - timedelta(days=OUTBOX_RETENTION_DAYS)).delete()
    result = {"logs": removed_logs, "equity_snapshots": equity, "alerts": alerts}
    log.info("housekeeping: %s", result)
    return result
