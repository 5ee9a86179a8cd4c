"""Alerts through a Discord webhook (``discord.webhook_url`` without a bot).

The URL is a secret (it embeds the webhook token): it is never logged, never put in an
exception message and never stored; errors name only the HTTP status.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
from pydantic import SecretStr

from alerts.senders import DeliveryError, OutgoingAlert
from bot.discord_render import render_embed_dicts

SUPPRESS_NOTIFICATIONS = 1 << 12  # Discord message flag: deliver without a push notification


class DiscordWebhookSender:
    """Outbox destination ``discord_webhook``: one POST per message, with the chart attached."""

    name = "discord_webhook"

    def __init__(self, webhook_url: SecretStr, *, timeout_s: float = 15.0, username: str = "trading-bot") -> None:
        if not webhook_url.get_secret_value():
            raise ValueError("discord.webhook_url is empty")
        self._url = webhook_url
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._username = username
        self._session: aiohttp.ClientSession | None = None
        self._posted: dict[int, int] = {}  # alert id -> messages posted by a failed attempt

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, alert: OutgoingAlert) -> None:
        """Post the alert; 429 and 5xx are retried by the outbox, other 4xx are permanent.

        An alert longer than one message that fails midway continues, on its retry, with the
        first message not yet posted (no duplicates in the channel).
        """
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        messages = render_embed_dicts(alert.reply)
        image = alert.reply.image_path if alert.reply.image_path and Path(alert.reply.image_path).is_file() else None
        try:
            await self._send_messages(alert, messages, image)
        except DeliveryError as exc:
            if exc.permanent:
                self._posted.pop(alert.id, None)
            raise
        self._posted.pop(alert.id, None)

    async def _send_messages(self, alert: OutgoingAlert, messages: list[list[dict[str, Any]]], image: str | None) -> None:
        for index, embeds in enumerate(messages):
            if index < self._posted.get(alert.id, 0):
                continue  # posted by an earlier attempt
            body: dict[str, object] = {"username": self._username, "embeds": embeds, "allowed_mentions": {"parse": []}}
            if alert.silent:
                body["flags"] = SUPPRESS_NOTIFICATIONS
            attach = image if index == 0 else None
            if not attach:
                for embed in embeds:
                    embed.pop("image", None)
            await self._post(body, attach)
            self._posted[alert.id] = index + 1

    async def _post(self, body: dict[str, object], image: str | None) -> None:
        assert self._session is not None
        url = self._url.get_secret_value()
        params = {"wait": "true"}
        try:
            if image:
                form = aiohttp.FormData()
                form.add_field("payload_json", json.dumps(body), content_type="application/json")
                data = await asyncio.to_thread(Path(image).read_bytes)
                form.add_field("files[0]", data, filename="chart.png", content_type="image/png")
                response_cm = self._session.post(url, params=params, data=form)
            else:
                response_cm = self._session.post(url, params=params, json=body)
            async with response_cm as response:
                if response.status < 300:
                    return
                text = await response.text()
                if response.status == 429:
                    retry_after = _retry_after(text, response.headers.get("Retry-After"))
                    raise DeliveryError("Discord webhook rate limited (429)", retry_after=retry_after)
                if response.status >= 500:
                    raise DeliveryError(f"Discord webhook server error {response.status}")
                # 400 (bad body), 401/403/404 (webhook deleted or wrong): retrying cannot help.
                raise DeliveryError(f"Discord webhook refused the message ({response.status})", permanent=True)
        except aiohttp.ClientError as exc:
            # aiohttp errors may carry the URL: report only the class name.
            raise DeliveryError(f"Discord webhook unreachable ({type(exc).__name__})") from None
        except TimeoutError:
            raise DeliveryError("Discord webhook timed out") from None


def _retry_after(body: str, header: str | None) -> float | None:
    try:
        return float(json.loads(body).get("retry_after"))
    except (ValueError, TypeError, AttributeError):
        pass
    try:
        return float(header) if header else None
    except ValueError:
        return None
