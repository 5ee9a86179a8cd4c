"""Alerts: event builders (``alerts.events``), a never-blocking publisher with a persisted
outbox (``alerts.publisher``), a retrying delivery loop (``alerts.delivery``), scheduled
reports (``alerts.reports``). Transports implement ``alerts.senders.AlertSender``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from alerts.delivery import AlertDelivery, RetryPolicy
from alerts.events import AlertEvent
from alerts.publisher import AlertPublisher
from alerts.senders import AlertSender, DeliveryError, OutgoingAlert, Route

if TYPE_CHECKING:
    from bot.config import AppConfig

__all__ = [
    "AlertDelivery",
    "AlertEvent",
    "AlertPublisher",
    "AlertSender",
    "DeliveryError",
    "OutgoingAlert",
    "RetryPolicy",
    "Route",
    "routes_from_config",
]


def routes_from_config(config: AppConfig) -> list[Route]:
    """Destinations implied by the config: Telegram chat (+ error chat), Discord channel or webhook."""
    routes: list[Route] = []
    tg, dc = config.telegram, config.discord
    if tg.enabled and tg.chat_id is not None:
        routes.append(Route("telegram", "telegram", "telegram_errors" if tg.error_chat_id is not None else None))
    if dc.enabled and dc.channel_id is not None:
        routes.append(Route("discord", "discord", "discord_errors" if dc.error_channel_id is not None else None))
    elif dc.webhook_url.get_secret_value():
        routes.append(Route("discord_webhook", "discord_webhook"))
    return routes
