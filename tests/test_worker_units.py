"""The worker's building blocks: supervision, scheduled-job bodies, dashboard, job list."""

from __future__ import annotations

import asyncio
import gc
import os
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from bot.config import AppConfig
from bot.gc_tuning import YOUNG_THRESHOLD
from bot.dashboard import DashboardInputs, render_dashboard
from bot.jobs import LOG_RETENTION_DAYS, WorkerJobs, housekeeping, write_daily_metric
from bot.supervisor import Supervisor
from bot.worker import Worker, _is_loopback
from db.models import EquitySnapshot, Trade, TradeState


async def test_a_failing_component_is_restarted_with_backoff_then_given_up() -> None:
    failures: list[tuple[str, bool]] = []

    async def on_failure(name: str, exc: BaseException, gave_up: bool) -> None:
        failures.append((name, gave_up))

    runs = 0

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        raise RuntimeError(f"boom {runs}")

    sup = Supervisor(on_failure, backoff_base_s=0.01, backoff_max_s=0.02, max_failures=3, window_s=60)
    sup.spawn("flaky", flaky)
    for _ in range(200):
        if sup.components["flaky"].gave_up:
            break
        await asyncio.sleep(0.01)
    await sup.stop()
    assert runs == 3
    assert failures == [("flaky", False), ("flaky", False), ("flaky", True)]
    assert sup.components["flaky"].restarts == 2
    assert "boom 3" in sup.components["flaky"].last_error


async def test_a_component_that_recovers_keeps_running_and_a_watched_task_death_is_reported() -> None:
    reported: list[tuple[str, bool]] = []

    async def on_failure(name: str, exc: BaseException, gave_up: bool) -> None:
        reported.append((name, gave_up))

    attempts = 0
    healthy = asyncio.Event()

    async def once_broken() -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise ConnectionError("first try")
        healthy.set()
        await asyncio.sleep(3600)

    sup = Supervisor(on_failure, backoff_base_s=0.01)
    sup.spawn("once", once_broken)
    await asyncio.wait_for(healthy.wait(), 2)

    async def dies() -> None:
        raise ValueError("runtime loop crashed")

    task = asyncio.create_task(dies())
    sup.watch("candles-X", task)
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.sleep(0.05)
    await sup.stop()
    assert ("once", False) in reported
    assert ("candles-X", True) in reported
    assert sup.components["once"].running is False  # stopped by stop(), not failed
    assert not sup.components["once"].gave_up


async def test_daily_metric_row_counts_the_days_closed_trades(db_url: str) -> None:
    from db.database import close_db, init_db

    await init_db(db_url)
    try:
        day = date(2024, 3, 5)
        at = datetime(2024, 3, 5, 12, tzinfo=UTC)
        for pnl in ("12.5", "-4", "3"):
            await Trade.create(symbol="BTC-USDT", strategy="multi_timeframe_long", side="LONG", state=TradeState.CLOSED,
                               mode="paper", initial_qty=Decimal(1), qty=Decimal(0), initial_stop=Decimal(1), stop=Decimal(1),
                               target=Decimal(2), risk_per_unit=Decimal(1), entry_price=Decimal(10), realized_pnl=Decimal(pnl),
                               fees=Decimal("0.1"), closed_at=at)
        await Trade.create(symbol="BTC-USDT", strategy="x", side="LONG", state=TradeState.CLOSED, mode="paper",
                           initial_qty=Decimal(1), qty=Decimal(0), initial_stop=Decimal(1), stop=Decimal(1), target=Decimal(2),
                           risk_per_unit=Decimal(1), entry_price=Decimal(10), realized_pnl=Decimal(100),
                           closed_at=at + timedelta(days=1))  # another day
        row = await write_daily_metric("paper", day, Decimal("10011.5"))
        assert (row.trades, row.wins, row.losses) == (3, 2, 1)
        assert row.realized_pnl == Decimal("11.5")
        assert row.fees == Decimal("0.3")
        again = await write_daily_metric("paper", day, Decimal("10011.5"))  # idempotent: same row updated
        assert again.id == row.id
    finally:
        await close_db()


async def test_housekeeping_removes_old_rotated_logs_and_samples_only(db_url: str, tmp_path: Path) -> None:
    from db.database import close_db, init_db

    await init_db(db_url)
    try:
        log_file = tmp_path / "bot.jsonl"
        log_file.write_text("live\n")
        old, recent = tmp_path / "bot.jsonl.3", tmp_path / "bot.jsonl.1"
        old.write_text("old\n")
        recent.write_text("recent\n")
        past = time.time() - (LOG_RETENTION_DAYS + 5) * 86400
        os.utime(old, (past, past))
        os.utime(log_file, (past, past))  # the live file is never deleted, however old
        sample = await EquitySnapshot.create(mode="paper", equity=Decimal(1))
        sample.at = datetime.now(UTC) - timedelta(days=1000)
        await sample.save()
        await EquitySnapshot.create(mode="paper", equity=Decimal(2))
        result = await housekeeping(str(log_file), datetime.now(UTC))
        assert result["logs"] == 1 and result["equity_snapshots"] == 1
        assert not old.exists() and recent.exists() and log_file.exists()
        assert await EquitySnapshot.all().count() == 1
    finally:
        await close_db()


async def test_dashboard_shows_positions_todays_stats_and_balance(db_url: str) -> None:
    from db.database import close_db, init_db

    await init_db(db_url)
    try:
        now = datetime(2024, 3, 5, 15, tzinfo=UTC)
        await Trade.create(symbol="XRP-USDT", strategy="multi_timeframe_long", side="LONG", state=TradeState.OPEN, mode="live",
                           initial_qty=Decimal(100), qty=Decimal(100), initial_stop=Decimal("0.9"), stop=Decimal("0.9"),
                           target=Decimal("1.4"), risk_per_unit=Decimal("0.1"), entry_price=Decimal("1.0"))
        await Trade.create(symbol="XRP-USDT", strategy="trend_distance_short", side="SHORT", state=TradeState.CLOSED,
                           mode="live", initial_qty=Decimal(1), qty=Decimal(0), initial_stop=Decimal(1), stop=Decimal(1),
                           target=Decimal(1), risk_per_unit=Decimal(1), entry_price=Decimal(1), realized_pnl=Decimal("-5"),
                           closed_at=now - timedelta(hours=1))
        text = await render_dashboard(DashboardInputs(
            mode="live", uptime_s=5 * 3600 + 23 * 60, symbols=["XRP-USDT"],
            strategies={"multi_timeframe_long": True, "trend_distance_short": False}, equity=Decimal("10234.56"),
            peak_equity=Decimal("10300"), state="RUNNING", last_prices={"XRP-USDT": 1.15}), now=now)
    finally:
        await close_db()
    assert "Uptime: 5h 23m" in text
    assert "Open Positions: 1" in text
    assert "XRP-USDT LONG 100" in text and "+15.00%" in text and "+1.50R" in text
    assert "Trades: 1 (0W / 1L)" in text
    assert "Account Balance: 10,234.56 USDT" in text
    assert "Current Drawdown: -0.64%" in text


def test_job_list_per_mode() -> None:
    paper = WorkerJobs(Worker(AppConfig.model_validate({"mode": "paper"}))).specs()
    live = WorkerJobs(Worker(AppConfig.model_validate({"mode": "live", "reconciliation": {"interval_min": 5}, "exchange": {"api_key": "k", "api_secret": "s"}}))).specs()
    names = {s.name for s in paper}
    assert {"equity", "clock_resync", "contracts", "hourly_status", "daily", "outbox", "housekeeping", "risk_view", "gc",
            "db_checkpoint"} <= names
    # the ones that pause the process run at second 30, away from the candle closes that trigger entries
    assert all(s.cron is not None and s.cron.get("second") == 30 for s in paper if s.name in ("gc", "db_checkpoint"))
    assert "reconcile" not in names
    by_name = {s.name: s for s in live}
    assert by_name["reconcile"].interval_s == 300
    assert by_name["listen_key"].interval_s == 1800
    assert by_name["daily"].cron == {"hour": 0, "minute": 0}


@pytest.mark.parametrize("url,expected", [("http://127.0.0.1:8080", True), ("http://localhost:1", True),
                                          ("https://open-api.bingx.com", False), (None, False), ("", False)])
def test_only_a_local_simulator_relaxes_the_clock_check(url: str | None, expected: bool) -> None:
    assert _is_loopback(url) is expected


async def test_every_job_body_runs_against_a_live_worker_on_the_simulator(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from db.models import DailyMetric
    from engine.execution.runtime import RuntimeOptions
    from tests.execution_sim import simulator, window
    from tests.worker_harness import write_config
    import yaml

    data, start_ms = window(2620, 2640)
    sim = simulator(data, start_ms)
    await sim.start()
    config = AppConfig.model_validate(yaml.safe_load(write_config(tmp_path, sim).read_text()))
    worker = Worker(config, runtime_options=RuntimeOptions(warmup_candles=1000))
    try:
        await worker.start()
        assert worker._trading_task is not None
        await asyncio.wait_for(worker._trading_task, 30)
        assert gc.get_threshold()[0] == YOUNG_THRESHOLD  # trading started: young collections made rarer (bot.gc_tuning)
        assert worker.scheduler is not None
        assert set(worker.scheduler.job_names()) >= {"reconcile", "equity", "hourly_status", "daily", "listen_key"}
        jobs = WorkerJobs(worker)
        for job in (jobs.reconcile, jobs.equity, jobs.clock_resync, jobs.contracts, jobs.listen_key, jobs.hourly_status,
                    jobs.daily, jobs.outbox, jobs.housekeeping):
            await job()
        assert await EquitySnapshot.filter(mode="live").count() == 1
        assert await DailyMetric.filter(mode="live").count() == 1
        assert worker.reconciler.last_report is not None and worker.reconciler.last_report.ok
        status, _ = worker.health.snapshot()["status"], None
        assert status == "ok"
        assert not worker.runtime.broker.halted_reason
        assert "=== Trading Engine Status [LIVE] ===" in capsys.readouterr().out
        kinds = [kind for _, kind, _ in worker.alerts.recent]
        assert "hourly_status" in kinds and "daily_summary" in kinds
    finally:
        await worker.stop()
        await sim.stop()


def test_freeze_heap_takes_the_startup_heap_out_of_collections() -> None:
    import gc

    from bot.gc_tuning import freeze_heap

    gc.unfreeze()
    held = [[i] for i in range(50_000)]  # long-lived objects, like warm-up candles
    before = len(gc.get_objects(generation=2)) + len(gc.get_objects(generation=1)) + len(gc.get_objects(generation=0))
    try:
        assert freeze_heap() >= 0
        after = len(gc.get_objects(generation=2)) + len(gc.get_objects(generation=1)) + len(gc.get_objects(generation=0))
        assert gc.get_freeze_count() >= 50_000 and after < before - 50_000  # a collection no longer walks them
    finally:
        gc.unfreeze()
    del held
