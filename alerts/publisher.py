"""Publishing alerts: a synchronous, never-blocking call for the trading side.

``AlertPublisher.publish(event)`` applies the per-type level (``off`` drops it), puts the event
on an in-memory queue and returns at once: it never awaits the database or the network, so a
chat outage cannot slow trading. A writer task persists every event into ``AlertOutbox`` (one
row per destination) within milliseconds and wakes the delivery loop; delivery retries from the
table, so nothing is lost while a chat endpoint is down, and pending rows survive a restart.

Repeats collapse: events with the same ``dedup_key`` inside ``alerts.dedup_window_s`` are one
alert (checked in memory first, so an error every second while the database is down neither
grows the queue nor floods the chat, then against the table, which also covers a restart). An
error event without a key gets one derived from its text (:func:`alerts.events.derived_dedup_key`).
The number of repeats is written into the stored alert while it is still waiting for delivery,
otherwise carried by the next alert of that key.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from alerts.events import AlertEvent, derived_dedup_key
from alerts.senders import Route
from bot.config import AlertsConfig
from commands.model import Reply
from db.models import AlertOutbox, AlertStatus

log = logging.getLogger(__name__)

DB_RETRY_S = 1.0
REPEATS_FIELD = "Repeated"  # on a stored alert still waiting for delivery
REPEATED_BEFORE = "Repeats before this"  # on the next alert, when the last one had already gone out
MAX_TRACKED_KEYS = 1000


@dataclass(slots=True)
class _Window:
    """One dedup key's current window: when it opened, how many repeats were collapsed into it."""

    opened: float
    repeats: int = 0
    shown: int = 0  # repeats already written into a stored, still pending alert
    row_ids: list[int] = field(default_factory=list)
    update_queued: bool = False


@dataclass(frozen=True, slots=True)
class _RepeatUpdate:
    """Queue item: write a key's repeat count into its pending rows."""

    key: str


class AlertPublisher:
    """Accepts alerts from anywhere in the bot and persists them to the outbox."""

    def __init__(self, config: AlertsConfig, routes: list[Route], *, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.routes = list(routes)
        self.on_persisted: Callable[[], None] | None = None  # the delivery loop's wake-up
        self._queue: asyncio.Queue[tuple[AlertEvent, bool] | _RepeatUpdate] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._clock = clock
        self._windows: dict[str, _Window] = {}
        self.published = 0
        self.deduplicated = 0  # alerts not stored, counted per destination

    def publish(self, event: AlertEvent) -> bool:
        """Queue ``event`` for delivery; returns False when its type is ``off``. Never blocks."""
        level = self.config.level(event.type)
        log.info("alert %s: %s", event.type, event.reply.title, extra={"event": event.type})
        if level == "off" or not self.routes:
            return False
        if event.is_error and not event.dedup_key:
            event = dataclasses.replace(event, dedup_key=derived_dedup_key(event))
        event = self._collapse(event)
        if event is None:
            return True
        self._queue.put_nowait((event, level == "silent"))
        self.published += 1
        return True

    def _collapse(self, event: AlertEvent) -> AlertEvent | None:
        """``None`` when ``event`` repeats one inside the window (counted); else the event to store."""
        key, window_s = event.dedup_key[:128], self.config.dedup_window_s
        if not key or window_s <= 0:
            return event
        now = self._clock()
        window = self._windows.get(key)
        if window is not None and now - window.opened < window_s:
            window.repeats += 1
            self.deduplicated += len(self.routes)
            if window.row_ids and not window.update_queued:
                window.update_queued = True
                self._queue.put_nowait(_RepeatUpdate(key))
            return None
        if len(self._windows) >= MAX_TRACKED_KEYS:  # bounded memory: forget closed windows, then the oldest
            live = sorted(((k, w) for k, w in self._windows.items() if now - w.opened < window_s), key=lambda kw: kw[1].opened)
            self._windows = dict(live[-MAX_TRACKED_KEYS // 2:])
        self._windows[key] = _Window(opened=now)
        unreported = window.repeats - window.shown if window is not None else 0
        if unreported > 0:  # the last window's repeats went unseen (its alert was already sent)
            reply = dataclasses.replace(event.reply, fields=[*event.reply.fields, (REPEATED_BEFORE, f"{unreported} more in the previous {window_s:g} s")])
            event = dataclasses.replace(event, reply=reply)
        return event

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
            item = await self._queue.get()
            while True:
                try:
                    if isinstance(item, _RepeatUpdate):
                        await self._write_repeats(item.key)
                    else:
                        await self._persist(*item)
                    break
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("alert outbox: cannot store alert, retrying")
                    await asyncio.sleep(DB_RETRY_S)
            self._queue.task_done()
            if self.on_persisted is not None and not isinstance(item, _RepeatUpdate):
                self.on_persisted()

    async def _persist(self, event: AlertEvent, silent: bool) -> None:
        payload = event.reply.to_payload()
        text = event.reply.plain_text()
        window_s = self.config.dedup_window_s
        key = event.dedup_key[:128]
        stored: list[int] = []
        for route in self.routes:
            destination = route.destination(event.is_error)
            if key and window_s > 0:
                # Also across a restart: the previous process may have stored it moments ago.
                since = datetime.now(UTC) - timedelta(seconds=window_s)
                if await AlertOutbox.filter(destination=destination, dedup_key=key, created_at__gte=since).exists():
                    self.deduplicated += 1
                    continue
            row = await AlertOutbox.create(
                event_type=event.type[:32], destination=destination, silent=silent, text=text, payload=payload, dedup_key=key,
            )
            stored.append(row.id)
        window = self._windows.get(key) if key else None
        if window is not None and stored:
            window.row_ids = stored
            if window.repeats > window.shown and not window.update_queued:
                window.update_queued = True  # repeats arrived while this one waited in the queue
                self._queue.put_nowait(_RepeatUpdate(key))

    async def _write_repeats(self, key: str) -> None:
        """Show the repeat count on the key's stored alerts that are still waiting for delivery."""
        window = self._windows.get(key)
        if window is None:
            return
        window.update_queued = False
        repeats = window.repeats
        updated = 0
        for row in await AlertOutbox.filter(id__in=window.row_ids, status=AlertStatus.PENDING):
            reply = Reply.from_payload(row.payload or {})
            fields = [f for f in reply.fields if f[0] != REPEATS_FIELD]
            reply = dataclasses.replace(reply, fields=[*fields, (REPEATS_FIELD, f"{repeats} more time{'s' if repeats != 1 else ''} "
                                                                             f"within {self.config.dedup_window_s:g} s")])
            # Conditional: a row the delivery loop just marked sent keeps what was really sent.
            updated += await AlertOutbox.filter(id=row.id, status=AlertStatus.PENDING).update(
                payload=reply.to_payload(), text=reply.plain_text())
        if updated:
            window.shown = repeats

