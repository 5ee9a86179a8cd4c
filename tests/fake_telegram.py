"""A local fake Telegram Bot API server (aiohttp on 127.0.0.1, OS-assigned port).

It speaks enough of the Bot API for python-telegram-bot's Application: getMe, getUpdates
(long poll), deleteWebhook (with drop_pending_updates), setMyCommands, sendMessage,
editMessageText, answerCallbackQuery, sendPhoto. Tests push incoming updates with
:meth:`push_command` / :meth:`push_callback` and inspect what the bot sent in :attr:`calls`.
``down`` makes every method answer 502 (a chat outage).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

BOT_ID = 999_000


@dataclass
class Call:
    """One Bot API request the bot made."""

    method: str
    params: dict[str, Any]
    at: float = field(default_factory=time.monotonic)


class FakeTelegram:
    """The fake server; use as ``async with FakeTelegram(token) as tg: ... tg.api_url``."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.calls: list[Call] = []
        self.updates: list[dict[str, Any]] = []
        self.messages: dict[tuple[int, int], dict[str, Any]] = {}
        self.down = False
        self._closing = False
        self.flood_next = 0  # answer this many sendMessage calls with 429 retry_after=1
        self.bad_paths: list[str] = []
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(1000)
        self._callback_ids = itertools.count(1)
        self._new_update = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def api_url(self) -> str:
        """What goes in ``telegram.api_url``."""
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> FakeTelegram:
        app = web.Application()
        app.router.add_route("POST", "/bot{token}/{method}", self._handle)
        app.router.add_route("GET", "/bot{token}/{method}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closing = True
        async with self._new_update:
            self._new_update.notify_all()
        if self._runner is not None:
            await self._runner.cleanup()

    # ---- test helpers ---------------------------------------------------------------------

    def sent(self, method: str, chat_id: int | None = None) -> list[Call]:
        """Calls of ``method`` (to ``chat_id`` when given)."""
        return [c for c in self.calls if c.method == method and (chat_id is None or str(c.params.get("chat_id")) == str(chat_id))]

    def texts(self, chat_id: int | None = None) -> list[str]:
        """Texts of every message sent (and edited) to ``chat_id``."""
        return [str(c.params.get("text", "")) for c in self.calls if c.method in ("sendMessage", "editMessageText") and (chat_id is None or str(c.params.get("chat_id")) == str(chat_id))]

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
        """Poll ``predicate`` until truthy (returns its value) or fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError("condition not met in time")
            await asyncio.sleep(0.01)

    async def push_command(self, user_id: int, chat_id: int, text: str, chat_type: str | None = None) -> int:
        """An incoming message ``text`` (a /command) from ``user_id`` in ``chat_id``."""
        command = text.split(" ", 1)[0]
        message = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": self._chat(chat_id, chat_type),
            "from": {"id": user_id, "is_bot": False, "first_name": f"user{user_id}", "username": f"user{user_id}"},
            "text": text,
            "entities": [{"type": "bot_command", "offset": 0, "length": len(command)}] if text.startswith("/") else [],
        }
        return await self._push({"message": message})

    async def push_callback(self, user_id: int, chat_id: int, message_id: int, data: str) -> str:
        """A button press on the bot's message ``message_id``; returns the callback query id."""
        message = self.messages.get((chat_id, message_id)) or {
            "message_id": message_id,
            "date": int(time.time()),
            "chat": self._chat(chat_id, None),
            "text": "?",
        }
        query_id = f"cbq{next(self._callback_ids)}"
        await self._push(
            {
                "callback_query": {
                    "id": query_id,
                    "from": {"id": user_id, "is_bot": False, "first_name": f"user{user_id}"},
                    "chat_instance": "ci",
                    "data": data,
                    "message": message,
                }
            }
        )
        return query_id

    def button_data(self, chat_id: int, message_id: int) -> list[str]:
        """Callback data of the buttons currently on a message."""
        markup = self.messages.get((chat_id, message_id), {}).get("reply_markup") or {}
        return [b.get("callback_data", "") for row in markup.get("inline_keyboard", []) for b in row]

    def last_message(self, chat_id: int) -> dict[str, Any]:
        """The newest message the bot sent to ``chat_id``."""
        mine = [m for (c, _), m in self.messages.items() if c == chat_id]
        return max(mine, key=lambda m: m["message_id"])

    # ---- server ---------------------------------------------------------------------------

    @staticmethod
    def _chat(chat_id: int, chat_type: str | None) -> dict[str, Any]:
        kind = chat_type or ("private" if chat_id > 0 else "supergroup")
        chat: dict[str, Any] = {"id": chat_id, "type": kind}
        if kind != "private":
            chat["title"] = "ops"
        return chat

    async def _push(self, body: dict[str, Any]) -> int:
        update_id = next(self._update_ids)
        async with self._new_update:
            self.updates.append({"update_id": update_id, **body})
            self._new_update.notify_all()
        return update_id

    async def _params(self, request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query)
        if request.content_type == "application/json":
            params.update(await request.json())
        elif request.can_read_body:
            form = await request.post()
            for key, value in form.items():
                if hasattr(value, "file"):
                    params[key] = {"filename": value.filename, "size": len(value.file.read())}
                else:
                    params[key] = value
        for key in ("reply_markup", "commands", "allowed_updates"):
            if isinstance(params.get(key), str):
                params[key] = json.loads(params[key])
        return params

    @staticmethod
    def _ok(result: Any) -> web.Response:
        return web.json_response({"ok": True, "result": result})

    def _store(self, chat_id: int, text: str | None, markup: Any, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        message: dict[str, Any] = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": self._chat(chat_id, None),
            "from": {"id": BOT_ID, "is_bot": True, "first_name": "bot", "username": "test_bot"},
        }
        if text is not None:
            message["text"] = text
        if markup:
            message["reply_markup"] = markup
        message.update(extra or {})
        self.messages[(chat_id, message["message_id"])] = message
        return message

    async def _handle(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            self.bad_paths.append(request.match_info["method"])
            return web.json_response({"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401)
        method = request.match_info["method"]
        params = await self._params(request)
        if self.down and method != "getUpdates":
            self.calls.append(Call(f"{method}!down", params))
            return web.Response(status=502, text="Bad Gateway")
        if method == "sendMessage" and self.flood_next > 0:
            self.flood_next -= 1
            self.calls.append(Call(f"{method}!429", params))
            return web.json_response(
                {"ok": False, "error_code": 429, "description": "Too Many Requests: retry after 1", "parameters": {"retry_after": 1}},
                status=429,
            )
        self.calls.append(Call(method, params))
        handler = getattr(self, f"_m_{method}", None)
        if handler is None:
            return web.json_response({"ok": False, "error_code": 404, "description": f"Not Found: {method}"}, status=404)
        return await handler(params)

    async def _m_getMe(self, params: dict[str, Any]) -> web.Response:
        return self._ok({"id": BOT_ID, "is_bot": True, "first_name": "bot", "username": "test_bot", "can_join_groups": True, "can_read_all_group_messages": False, "supports_inline_queries": False})

    async def _m_deleteWebhook(self, params: dict[str, Any]) -> web.Response:
        if str(params.get("drop_pending_updates", "")).lower() in ("true", "1"):
            self.updates.clear()
        return self._ok(True)

    async def _m_setMyCommands(self, params: dict[str, Any]) -> web.Response:
        return self._ok(True)

    async def _m_getUpdates(self, params: dict[str, Any]) -> web.Response:
        offset = int(params.get("offset", 0) or 0)
        timeout = float(params.get("timeout", 0) or 0)
        deadline = time.monotonic() + timeout
        async with self._new_update:
            while True:
                self.updates = [u for u in self.updates if u["update_id"] >= offset]
                if self.updates or self._closing or time.monotonic() >= deadline:
                    return self._ok(list(self.updates))
                try:
                    await asyncio.wait_for(self._new_update.wait(), deadline - time.monotonic())
                except TimeoutError:
                    pass

    async def _m_sendMessage(self, params: dict[str, Any]) -> web.Response:
        return self._ok(self._store(int(params["chat_id"]), str(params["text"]), params.get("reply_markup")))

    async def _m_sendPhoto(self, params: dict[str, Any]) -> web.Response:
        photo = [{"file_id": "photo1", "file_unique_id": "u1", "width": 800, "height": 350}]
        extra: dict[str, Any] = {"photo": photo}
        if params.get("caption"):
            extra["caption"] = params["caption"]
        return self._ok(self._store(int(params["chat_id"]), None, params.get("reply_markup"), extra))

    async def _m_editMessageText(self, params: dict[str, Any]) -> web.Response:
        key = (int(params["chat_id"]), int(params["message_id"]))
        message = self.messages.get(key)
        if message is None:
            return web.json_response({"ok": False, "error_code": 400, "description": "Bad Request: message to edit not found"}, status=400)
        if message.get("text") == params["text"] and message.get("reply_markup") == params.get("reply_markup"):
            return web.json_response({"ok": False, "error_code": 400, "description": "Bad Request: message is not modified"}, status=400)
        message["text"] = params["text"]
        if params.get("reply_markup"):
            message["reply_markup"] = params["reply_markup"]
        else:
            message.pop("reply_markup", None)
        return self._ok(message)

    async def _m_answerCallbackQuery(self, params: dict[str, Any]) -> web.Response:
        return self._ok(True)
