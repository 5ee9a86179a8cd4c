"""The delivery side of alerts: what a destination must implement."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from commands.model import Reply


class DeliveryError(Exception):
    """Delivery failed. ``retry_after`` (seconds) is the server's own wait hint, when it gave one.

    ``permanent`` marks failures that retrying cannot fix (bad chat id, message rejected): the row
    is marked failed at once. The message must never contain a token or webhook URL.
    """

    def __init__(self, message: str, *, retry_after: float | None = None, permanent: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.permanent = permanent


@dataclass(frozen=True, slots=True)
class OutgoingAlert:
    """One outbox row ready to send."""

    id: int
    event_type: str
    reply: Reply
    silent: bool


class AlertSender(Protocol):
    """A destination (``telegram``, ``telegram_errors``, ``discord``, ``discord_webhook``...)."""

    name: str

    async def send(self, alert: OutgoingAlert) -> None:
        """Deliver or raise :class:`DeliveryError` (any other exception counts as transient)."""
        ...


@dataclass(frozen=True, slots=True)
class Route:
    """Where alerts of one transport go: ``main`` destination, optional ``errors`` destination."""

    transport: str
    main: str
    errors: str | None = None

    def destination(self, is_error: bool) -> str:
        """The destination name for an event."""
        return self.errors if is_error and self.errors else self.main
