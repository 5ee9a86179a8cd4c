"""Publishing alerts: a synchronous, never-blocking call for the trading side.

``AlertPublisher.publish(event)`` applies the per-type level (``off`` drops it), puts the event
on an in-memory queue and returns at once: it never awaits the database or the network, so a
chat outage cannot slow trading. A writer task persists every event into ``AlertOutbox`` (one
row per destination, de-duplicated inside ``alerts.dedup_window_s``) within milliseconds and
wakes the delivery loop; delivery retries from the table, so nothing is lost while a chat
endpoint is down, and pending rows survive a restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from alerts.events import AlertEvent
from alerts.senders import Route
from bot.config import AlertsConfig
from db.models import AlertOutbox

log = logging.getLogger(__name__)

DB_RETRY_S = 1.0


class AlertPublisher:
    """Accepts alerts from anywhere in the bot and persists them to the outbox."""

    def __init__(self, config: AlertsConfig, routes: list[Route]) -> None:
        self.config = config
        self.routes = list(routes)
        self.on_persisted: Callable[[], None] | None = None  # the delivery loop's wake-up
        self._queue: asyncio.Queue[tuple[AlertEvent, bool]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.published = 0
        self.deduplicated = 0

    def publish(self, event: AlertEvent) -> bool:
        """Queue ``event`` for delivery; returns False when its type is ``off``. Never blocks."""
        level = self.config.level(event.type)
        log.info("alert %s: %s", event.type, event.reply.title, extra={"event": event.type})
        if level == "off" or not self.routes:
            return False
        self._queue.put_nowait((event, level == "silent"))
        self.published += 1
        return True

    async def start(self) -> None:
        """Start the writer task."""
        if self._task is None:
            self._task = asyncio.create_task(self._writer(), name="alert-outbox-writer")

    async def flush(self) -> None:
        """Wait until every published event is in the outbox table."""
        await self._queue.join()

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Persist what is queued (bounded wait), then stop the writer."""
        if self._task is None:
            return
        try:
            await asyncio.wait_for(self.flush(), timeout_s)
        except TimeoutError:
            log.error("alert outbox: %d alerts not persisted at shutdown", self._queue.qsize())
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None

    async def _writer(self) -> None:
        while True:
            event, silent = await self._queue.get()
            while True:
                try:
                    await self._persist(event, silent)
                    break
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("alert outbox: cannot store alert, retrying", extra={"event": event.type})
                    await asyncio.sleep(DB_RETRY_S)
            self._queue.task_done()
            if self.on_persisted is not None:
                self.on_persisted()

    async def _persist(self, event: AlertEvent, silent: bool) -> None:
        payload = event.reply.to_payload()
        text = event.reply.plain_text()
        window = self.config.dedup_window_s
        for route in self.routes:
            destination = route.destination(event.is_error)
            if event.dedup_key and window > 0:
                since = datetime.now(UTC) - timedelta(seconds=window)
                if await AlertOutbox.filter(destination=destination, dedup_key=event.dedup_key[:128], created_at__gte=since).exists():
                    self.deduplicated += 1
                    continue
            await AlertOutbox.create(
                event_type=event.type[:32],
                destination=destination,
                silent=silent,
                text=text,
                payload=payload,
                dedup_key=event.dedup_key[:128],
            )
