"""The long-running worker: owns the components and their start/stop order."""

from __future__ import annotations

import logging
import time

from bot.config import AppConfig
from db.database import close_db, init_db

log = logging.getLogger(__name__)


class Worker:
    """Starts the database and the trading components; stops them in reverse order."""

    def __init__(self, config: AppConfig) -> None:
        self.config = config
        self.started_at: float | None = None

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
        self.started_at = time.monotonic()
        log.info("trading-bot started", extra={"mode": mode})

    async def stop(self) -> None:
        """Stop components and flush the database."""
        log.info("trading-bot stopping", extra={"mode": self.config.mode.value})
        await close_db()
        log.info("trading-bot stopped cleanly", extra={"mode": self.config.mode.value})
