"""A local fake of the Discord HTTP API and of a Discord webhook (aiohttp, 127.0.0.1, port 0).

discord.py is pointed at it by setting ``discord.http.Route.BASE``; tests feed
INTERACTION_CREATE payloads through the client's own parser (:func:`interaction_payload`)
and read what the bot answered in :attr:`FakeDiscord.requests`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

APP_ID = 424242
BOT_USER = {"id": str(APP_ID), "username": "bot", "discriminator": "0", "avatar": None, "bot": True, "global_name": "bot"}
GUILD_ID = 9001


@dataclass
class Request:
    """One HTTP request the bot made."""

    method: str
    path: str
    body: Any
    query: dict[str, str]


class FakeDiscord:
    """Fake API (``api_base``) plus a webhook endpoint (``webhook_url(token)``)."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.messages: dict[int, dict[str, Any]] = {}
        self.webhook_down = False
        self.webhook_429 = 0  # answer this many webhook posts with 429
        self._ids = itertools.count(10_000)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def api_base(self) -> str:
        """Value for ``discord.http.Route.BASE``."""
        return f"http://127.0.0.1:{self.port}/api/v10"

    def webhook_url(self, token: str) -> str:
        """A webhook URL on this server."""
        return f"http://127.0.0.1:{self.port}/api/webhooks/555/{token}"

    async def __aenter__(self) -> FakeDiscord:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def matching(self, method: str, path_part: str) -> list[Request]:
        """Requests whose method matches and path contains ``path_part``."""
        return [r for r in self.requests if r.method == method and path_part in r.path]

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
        """Poll ``predicate`` until truthy."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError("condition not met in time")
            await asyncio.sleep(0.01)

    def _message(self, channel_id: int, body: dict[str, Any]) -> dict[str, Any]:
        message = {
            "id": str(next(self._ids)), "channel_id": str(channel_id), "author": BOT_USER, "content": body.get("content") or "",
            "timestamp": "2024-01-01T00:00:00+00:00", "edited_timestamp": None, "tts": False, "mention_everyone": False,
            "mentions": [], "mention_roles": [], "attachments": [], "embeds": body.get("embeds") or [], "pinned": False,
            "type": 0, "components": body.get("components") or [], "flags": body.get("flags", 0),
        }
        self.messages[int(message["id"])] = message
        return message

    async def _body(self, request: web.Request) -> Any:
        if not request.can_read_body:
            return None
        if request.content_type == "application/json":
            return await request.json()
        if request.content_type.startswith("multipart/"):
            form = await request.post()
            raw = form.get("payload_json", "{}")
            if hasattr(raw, "file"):
                raw = raw.file.read()
            body = json.loads(raw.decode() if isinstance(raw, (bytes, bytearray)) else str(raw))
            body["_files"] = {k: len(v.file.read()) for k, v in form.items() if hasattr(v, "file") and k != "payload_json"}
            return body
        return await request.text()

    async def _handle(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["tail"]
        body = await self._body(request)
        self.requests.append(Request(request.method, path, body, dict(request.query)))
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "webhooks"]:
            return self._webhook(body)
        parts = parts[2:]  # drop api/v10
        if request.method == "GET" and parts == ["users", "@me"]:
            return _json(BOT_USER)
        if request.method == "GET" and parts == ["oauth2", "applications", "@me"]:
            return _json({
                "id": str(APP_ID), "name": "bot", "icon": None, "description": "", "bot_public": False,
                "bot_require_code_grant": False, "verify_key": "00", "team": None, "owner": BOT_USER, "flags": 0,
                "rpc_origins": [], "summary": "",
            })
        if parts[:1] == ["interactions"] and parts[-1] == "callback":
            response: dict[str, Any] = {"interaction": {"id": parts[1], "type": 2}}
            if isinstance(body, dict) and body.get("type") == 4:
                message = self._message(0, body.get("data") or {})
                response["interaction"]["response_message_id"] = message["id"]
                response["resource"] = {"type": 4, "message": message}
            return _json(response)
        if parts[:1] == ["webhooks"]:  # interaction follow-ups and original-message edits
            return _json(self._message(0, body if isinstance(body, dict) else {}))
        if parts[:1] == ["channels"] and len(parts) == 2 and request.method == "GET":
            return _json({"id": parts[1], "type": 0, "guild_id": str(GUILD_ID), "name": "ops", "position": 0, "permission_overwrites": [], "nsfw": False, "parent_id": None})
        if parts[:1] == ["channels"] and parts[2:3] == ["messages"]:
            if request.method == "POST":
                return _json(self._message(int(parts[1]), body))
            if request.method == "PATCH":
                message = self.messages.setdefault(int(parts[3]), self._message(int(parts[1]), {}))
                message["embeds"] = body.get("embeds", message["embeds"])
                message["components"] = body.get("components", [])
                return _json(message)
        if parts[:1] == ["applications"]:
            return _json(body if isinstance(body, list) else [])
        return _json({"message": "404: Not Found", "code": 0}, status=404)

    def _webhook(self, body: Any) -> web.Response:
        if self.webhook_down:
            return web.Response(status=503, text="upstream down")
        if self.webhook_429 > 0:
            self.webhook_429 -= 1
            return _json({"message": "You are being rate limited.", "retry_after": 0.05, "global": False}, status=429)
        return _json(self._message(555, body if isinstance(body, dict) else {}))


def _json(data: Any, status: int = 200) -> web.Response:
    # discord.py only decodes bodies whose content type is exactly "application/json".
    return web.Response(body=json.dumps(data).encode(), status=status, headers={"Content-Type": "application/json"})


def _channel(channel_id: int, guild: bool) -> dict[str, Any]:
    """The channel object Discord embeds in an interaction (guild text channel or DM)."""
    if not guild:
        return {"id": str(channel_id), "type": 1, "last_message_id": None, "flags": 0, "recipients": []}
    return {
        "id": str(channel_id), "type": 0, "name": "ops", "guild_id": str(GUILD_ID), "position": 0,
        "permission_overwrites": [], "nsfw": False, "parent_id": None, "topic": None, "rate_limit_per_user": 0,
        "last_message_id": None, "flags": 0, "permissions": "0",
    }


def interaction_payload(
    *,
    user_id: int,
    channel_id: int,
    command: str | None = None,
    args: str | None = None,
    custom_id: str | None = None,
    message: dict[str, Any] | None = None,
    guild: bool = True,
) -> dict[str, Any]:
    """An INTERACTION_CREATE payload: a slash command (``command``) or a button (``custom_id``)."""
    interaction_id = str(next(_interaction_ids))
    user = {"id": str(user_id), "username": f"user{user_id}", "discriminator": "0", "avatar": None, "global_name": None}
    payload: dict[str, Any] = {
        "id": interaction_id, "application_id": str(APP_ID), "token": f"itoken{interaction_id}", "version": 1,
        "channel_id": str(channel_id), "channel": _channel(channel_id, guild),
        "locale": "en-US", "app_permissions": "0", "attachment_size_limit": 10485760, "entitlements": [], "authorizing_integration_owners": {}, "context": 0,
    }
    if guild:
        payload["guild_id"] = str(GUILD_ID)
        payload["guild_locale"] = "en-US"
        payload["member"] = {"user": user, "roles": [], "joined_at": "2024-01-01T00:00:00+00:00", "deaf": False, "mute": False, "permissions": "0", "flags": 0}
    else:
        payload["user"] = user
    if command is not None:
        payload["type"] = 2
        options = [{"name": "args", "type": 3, "value": args}] if args is not None else []
        payload["data"] = {"id": "1", "name": command, "type": 1, "options": options}
    else:
        payload["type"] = 3
        payload["data"] = {"custom_id": custom_id, "component_type": 2}
        payload["message"] = message or {}
    return payload


_interaction_ids = itertools.count(7_000_000)
