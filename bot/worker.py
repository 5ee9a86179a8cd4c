"""The long-running worker: owns the components and their start/stop order."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from bot.config import AppConfig
from bot.health import HealthServer, HealthState
from bot.systemd_notify import SystemdNotifier
from db.database import close_db, init_db

log = logging.getLogger(__name__)


class Worker:
    """Starts the database, health endpoint and trading components; stops them in reverse order."""

    def __init__(self, config: AppConfig, notifier: SystemdNotifier | None = None) -> None:
        self.config = config
        self.health = HealthState(stale_feed_s=config.health.stale_feed_s)
        self.notifier = notifier or SystemdNotifier()
        self._health_server: HealthServer | None = None
        self._watchdog_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Bring every component up; raises if a required one cannot start."""
        mode = self.config.mode.value
        log.info(
            "trading-bot starting in %s mode, symbols %s, database %s",
            mode.upper(),
            ",".join(self.config.symbols),
            self.config.database.url.split("://", 1)[0],
            extra={"mode": mode},
        )
        await init_db(self.config.database.url)
        if self.config.health.enabled:
            self._health_server = HealthServer(self.health, self.config.health.host, self.config.health.port)
            await self._health_server.start()
        interval = self.notifier.watchdog_interval_s()
        if interval:
            self._watchdog_task = asyncio.create_task(self._watchdog(interval), name="systemd-watchdog")
        self.notifier.ready(f"{mode} mode")
        log.info("trading-bot started", extra={"mode": mode})

    async def stop(self) -> None:
        """Stop components and flush the database."""
        mode = self.config.mode.value
        self.notifier.stopping()
        log.info("trading-bot stopping", extra={"mode": mode})
        if self._watchdog_task is not None:
            self._watchdog_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog_task
        if self._health_server is not None:
            await self._health_server.stop()
        await close_db()
        log.info("trading-bot stopped cleanly", extra={"mode": mode})

    async def _watchdog(self, interval_s: float) -> None:
        # Pings come from the event loop itself: a blocked loop stops them and systemd restarts us.
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval_s)
