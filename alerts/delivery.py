"""Delivering the outbox: retries with backoff, order kept per destination, never blocking.

The loop sends due ``pending`` rows oldest first, critical ones (halt, kill switch, emergency
stop: :data:`alerts.events.CRITICAL_TYPES`) before all others: a halt never waits behind an error
backlog draining at a chat's rate limit, and one stored while a round is sending goes next. A
failure pushes the row's ``next_attempt_at`` out (exponential backoff, or the server's
retry-after) and holds back the rest of that destination's rows for this round, so alerts arrive
in order after an outage. After ``alerts.max_attempts`` attempts (or a permanent error) the row
is marked ``failed``. Rounds never overlap, so one process never sends a row twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from alerts.events import CRITICAL_TYPES
from alerts.senders import AlertSender, DeliveryError, OutgoingAlert
from bot.config import AlertsConfig
from bot.logging_setup import secrets as log_secrets
from commands.model import Reply
from db.models import AlertOutbox, AlertStatus

log = logging.getLogger(__name__)

BATCH = 50
IDLE_WAIT_S = 30.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff: ``base_s * factor**(attempt-1)`` capped at ``max_s``."""

    base_s: float = 2.0
    factor: float = 2.0
    max_s: float = 300.0

    def delay(self, attempts: int, retry_after: float | None = None) -> float:
        """Seconds to wait after the ``attempts``-th failure (a server hint wins when larger)."""
        backoff = min(self.max_s, self.base_s * self.factor ** max(0, attempts - 1))
        return max(backoff, retry_after or 0.0)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class AlertDelivery:
    """Background task that drains the outbox to the registered senders."""

    def __init__(
        self,
        config: AlertsConfig,
        senders: list[AlertSender] | None = None,
        *,
        policy: RetryPolicy = RetryPolicy(),
        now: Callable[[], datetime] = _utcnow,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        send_timeout_s: float = 30.0,
    ) -> None:
        self.config = config
        self.policy = policy
        self._senders: dict[str, AlertSender] = {s.name: s for s in senders or []}
        self._now = now
        self._sleep = sleep
        self._send_timeout_s = send_timeout_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._next_due: datetime | None = None
        # One round at a time: the loop, the outbox job (ChatOps.flush), ChatOps.stop and teardown all
        # call run_once, and two overlapping rounds would read the same pending rows and send them twice.
        self._round_lock = asyncio.Lock()
        self._stored = 0  # bumped by kick(): rows were stored (a round re-checks for critical ones)
        self.sent = 0
        self.failures = 0

    def add_sender(self, sender: AlertSender) -> None:
        """Register a destination (adapters call this once connected)."""
        self._senders[sender.name] = sender
        self.kick()

    def kick(self) -> None:
        """Wake the loop: new rows were stored."""
        self._stored += 1
        self._wake.set()

    async def start(self) -> None:
        """Start the delivery loop."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="alert-delivery")

    async def stop(self) -> None:
        """Stop the loop; undelivered rows stay pending for the next start."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.run_once()
                wait_s = await self._seconds_until_next_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("alert delivery round failed")
                wait_s = 1.0
            if wait_s > 0:
                await self._wait(wait_s)

    async def _wait(self, seconds: float) -> None:
        wake = asyncio.ensure_future(self._wake.wait())
        sleep = asyncio.ensure_future(self._sleep(seconds))
        try:
            await asyncio.wait({wake, sleep}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (wake, sleep):
                task.cancel()
            await asyncio.gather(wake, sleep, return_exceptions=True)

    async def _seconds_until_next_due(self) -> float:
        if self._next_due is None:
            return IDLE_WAIT_S
        return min(IDLE_WAIT_S, max(0.0, (self._next_due - self._now()).total_seconds()))

    async def run_once(self) -> int:
        """Send every due row once (oldest first); returns how many were delivered.

        Rounds never overlap: a caller that finds one running waits for it to end, then runs its
        own (which only sees rows still pending, so nothing is sent twice). Also records when the
        earliest held-back row becomes due, for the loop's sleep.
        """
        async with self._round_lock:
            return await self._round()

    async def _round(self) -> int:
        self._next_due = None
        if not self._senders:
            return 0
        destinations = list(self._senders)
        blocked: set[str] = set()
        seen = self._stored
        delivered = await self._send(await self._pending(destinations, critical=True), blocked)
        rest = await self._pending(destinations, critical=False)
        for row in rest:
            if self._stored != seen:  # stored while this round sends (slowly, at a chat's rate): a halt goes first
                seen = self._stored
                delivered += await self._send(await self._pending(destinations, critical=True), blocked)
            delivered += await self._send([row], blocked)
        if len(rest) >= BATCH * len(destinations) and delivered:
            self._note_due(self._now())  # a full batch: more rows may be waiting
        return delivered

    async def _pending(self, destinations: list[str], *, critical: bool) -> list[AlertOutbox]:
        """Pending rows, oldest first: the critical ones, or all the others."""
        query = AlertOutbox.filter(status=AlertStatus.PENDING, destination__in=destinations)
        query = query.filter(event_type__in=list(CRITICAL_TYPES)) if critical else query.exclude(event_type__in=list(CRITICAL_TYPES))
        return await query.order_by("id").limit(BATCH * len(destinations))

    async def _send(self, rows: list[AlertOutbox], blocked: set[str]) -> int:
        """Deliver due rows in order; a destination whose row waits or fails sends nothing more this round."""
        delivered = 0
        for row in rows:
            if row.destination in blocked or row.status is not AlertStatus.PENDING:
                continue
            if row.next_attempt_at is not None and row.next_attempt_at > self._now():
                blocked.add(row.destination)  # keep order: nothing overtakes a waiting row
                self._note_due(row.next_attempt_at)
                continue
            if await self._deliver(row):
                delivered += 1
            else:
                blocked.add(row.destination)
                if row.status is AlertStatus.PENDING and row.next_attempt_at is not None:
                    self._note_due(row.next_attempt_at)
        return delivered

    def _note_due(self, when: datetime) -> None:
        if self._next_due is None or when < self._next_due:
            self._next_due = when

    async def _deliver(self, row: AlertOutbox) -> bool:
        sender = self._senders[row.destination]
        alert = OutgoingAlert(id=row.id, event_type=row.event_type, reply=Reply.from_payload(row.payload or {}), silent=row.silent)
        try:
            await asyncio.wait_for(sender.send(alert), self._send_timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure is recorded and retried
            await self._failed(row, exc)
            return False
        row.status = AlertStatus.SENT
        row.attempts += 1
        row.sent_at = self._now()
        row.last_error = ""
        await row.save(update_fields=["status", "attempts", "sent_at", "last_error"])
        self.sent += 1
        return True

    async def _failed(self, row: AlertOutbox, exc: Exception) -> None:
        self.failures += 1
        row.attempts += 1
        permanent = isinstance(exc, DeliveryError) and exc.permanent
        retry_after = exc.retry_after if isinstance(exc, DeliveryError) else None
        row.last_error = log_secrets.redact(f"{type(exc).__name__}: {exc}")[:255]
        if permanent or row.attempts >= self.config.max_attempts:
            row.status = AlertStatus.FAILED
            log.error("alert %s to %s failed for good after %d attempts: %s", row.id, row.destination, row.attempts, row.last_error)
        else:
            delay = self.policy.delay(row.attempts, retry_after)
            row.next_attempt_at = self._now() + timedelta(seconds=delay)
            log.warning("alert %s to %s failed (attempt %d), retry in %.1fs: %s", row.id, row.destination, row.attempts, delay, row.last_error)
        await row.save(update_fields=["status", "attempts", "next_attempt_at", "last_error"])
