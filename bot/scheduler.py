"""Scheduled jobs on APScheduler's asyncio scheduler.

Every job coalesces missed runs into one, never runs twice at once, and tolerates a
late start (misfire grace) instead of being skipped after a busy moment or a suspend.
A job that raises is logged and reported through ``on_error``; the next run goes ahead.
At shutdown, running jobs get a short grace to finish; one still running after it is cancelled
quietly (a planned stop is not a job failure).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

log = logging.getLogger(__name__)

JobFunc = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class JobSpec:
    """One recurring job: every ``interval_s`` seconds, or at a UTC cron time (``cron`` kwargs)."""

    name: str
    func: JobFunc
    interval_s: float | None = None
    cron: dict[str, str | int] | None = None
    misfire_grace_s: int = 60


class JobScheduler:
    """Thin owner of an ``AsyncIOScheduler`` running in the bot's event loop."""

    def __init__(self, on_error: Callable[[str, BaseException], None] | None = None) -> None:
        self._scheduler = AsyncIOScheduler(
            timezone="UTC",
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 60},
        )
        self._on_error = on_error
        self._running: set[asyncio.Task[Any]] = set()  # tasks of the jobs running now
        self._stopping = False
        self._scheduler.add_listener(self._on_event, EVENT_JOB_ERROR | EVENT_JOB_MISSED)

    def add(self, spec: JobSpec) -> None:
        """Register a job (before or after start)."""
        if (spec.interval_s is None) == (spec.cron is None):
            raise ValueError(f"job {spec.name}: give exactly one of interval_s or cron")
        trigger = (
            IntervalTrigger(seconds=spec.interval_s, timezone="UTC")
            if spec.interval_s is not None
            else CronTrigger(timezone="UTC", **spec.cron)  # type: ignore[arg-type]
        )
        self._scheduler.add_job(
            self._tracked(spec), trigger, id=spec.name, name=spec.name, misfire_grace_time=spec.misfire_grace_s,
            replace_existing=True,
        )

    def start(self) -> None:
        """Start running jobs in the current event loop."""
        self._scheduler.start()

    async def shutdown(self, grace_s: float = 2.0) -> None:
        """Stop scheduling; give the running jobs ``grace_s`` seconds to finish, then cancel the rest."""
        if not self._scheduler.running:
            return
        self._stopping = True
        self._scheduler.pause()
        running = set(self._running)
        if running:
            await asyncio.wait(running, timeout=grace_s)
        self._scheduler.shutdown(wait=False)  # cancels what is still running

    def _tracked(self, spec: JobSpec) -> JobFunc:
        """``spec.func`` registered as running while it runs; its cancellation by :meth:`shutdown` is not an error."""
        async def run() -> None:
            task = asyncio.current_task()
            assert task is not None
            self._running.add(task)
            try:
                await spec.func()
            except asyncio.CancelledError:
                if not self._stopping:
                    raise
                log.info("scheduled job %s cut short by the shutdown", spec.name)
            finally:
                self._running.discard(task)

        return run

    def job_names(self) -> list[str]:
        """Names of the registered jobs."""
        return [job.id for job in self._scheduler.get_jobs()]

    def _on_event(self, event: JobExecutionEvent) -> None:
        if event.code == EVENT_JOB_MISSED:
            log.warning("scheduled job %s missed its run time", event.job_id)
            return
        log.error("scheduled job %s failed: %r", event.job_id, event.exception, exc_info=event.exception)
        if self._on_error is not None and event.exception is not None:
            self._on_error(event.job_id, event.exception)
