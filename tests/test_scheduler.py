"""Scheduled jobs: they run, never overlap, and a failing job does not stop the others."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bot.scheduler import JobScheduler, JobSpec


async def test_jobs_run_repeatedly_without_overlap_and_failures_are_reported() -> None:
    runs: list[str] = []
    running = 0
    max_running = 0
    errors: list[str] = []

    async def slow_job() -> None:
        nonlocal running, max_running
        running += 1
        max_running = max(max_running, running)
        runs.append("slow")
        await asyncio.sleep(0.25)  # longer than its interval: the scheduler must not start a second copy
        running -= 1

    async def failing_job() -> None:
        runs.append("fail")
        raise RuntimeError("boom")

    scheduler = JobScheduler(on_error=lambda name, exc: errors.append(f"{name}:{exc}"))
    scheduler.add(JobSpec("slow", slow_job, interval_s=0.1))
    scheduler.add(JobSpec("failing", failing_job, interval_s=0.1))
    scheduler.start()
    try:
        await asyncio.sleep(0.9)
    finally:
        await scheduler.shutdown()
    assert max_running == 1
    assert runs.count("slow") >= 2
    assert runs.count("fail") >= 3  # it keeps being scheduled after raising
    assert errors and errors[0] == "failing:boom"
    assert sorted(scheduler.job_names()) == ["failing", "slow"]


def test_job_needs_exactly_one_schedule() -> None:
    async def job() -> None:
        return None

    scheduler = JobScheduler()
    with pytest.raises(ValueError, match="exactly one"):
        scheduler.add(JobSpec("bad", job))
    with pytest.raises(ValueError, match="exactly one"):
        scheduler.add(JobSpec("bad", job, interval_s=1, cron={"hour": 0}))
    scheduler.add(JobSpec("daily", job, cron={"hour": 0, "minute": 0}))
    assert scheduler.job_names() == ["daily"]


async def test_shutdown_lets_a_running_job_finish_and_cuts_a_long_one_short_without_an_error(caplog: pytest.LogCaptureFixture) -> None:
    finished: list[str] = []
    errors: list[str] = []

    def job(name: str, seconds: float):  # type: ignore[no-untyped-def]
        async def run() -> None:
            await asyncio.sleep(seconds)
            finished.append(name)
        return run

    caplog.set_level(logging.INFO, logger="bot.scheduler")
    scheduler = JobScheduler(on_error=lambda name, exc: errors.append(name))
    scheduler.add(JobSpec("short", job("short", 0.3), interval_s=0.05))
    scheduler.add(JobSpec("long", job("long", 30.0), interval_s=0.05))
    scheduler.start()
    await asyncio.sleep(0.15)  # both are running now
    await scheduler.shutdown(grace_s=1.0)
    await asyncio.sleep(0.05)  # the cancelled job's executor callback runs
    assert finished == ["short"]  # the short one finished within the grace; the long one did not
    assert errors == []
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    assert "scheduled job long cut short by the shutdown" in caplog.text
