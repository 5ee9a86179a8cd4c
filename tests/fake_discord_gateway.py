"""A minimal local fake of the Discord gateway (WebSocket, 127.0.0.1, port 0).

Speaks just enough of gateway v10 for discord.py's :class:`discord.Client` to connect and receive
dispatches: HELLO on connect, READY after IDENTIFY (the token is checked), HEARTBEAT_ACK for
every heartbeat, then whatever :meth:`FakeGateway.dispatch` pushes (e.g. INTERACTION_CREATE).
Frames are plain JSON text (discord.py decompresses only binary frames). discord.py is pointed at
it by setting ``discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY`` to :attr:`FakeGateway.url`.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Self

import yarl
from aiohttp import WSMsgType, web

from tests.fake_discord import APP_ID, BOT_USER

HELLO, IDENTIFY, HEARTBEAT, HEARTBEAT_ACK, DISPATCH, INVALID_SESSION = 10, 2, 1, 11, 0, 9


class FakeGateway:
    """Accepts discord.py gateway connections; tests push dispatch events to every identified client."""

    def __init__(self, token: str, *, heartbeat_interval_ms: int = 41_250) -> None:
        self.token = token
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.identifies: list[dict[str, Any]] = []
        self.heartbeats = 0
        self.ready = asyncio.Event()
        self._sockets: list[web.WebSocketResponse] = []
        self._seq = 0
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> yarl.URL:
        """Value for ``DiscordWebSocket.DEFAULT_GATEWAY``."""
        return yarl.URL(f"ws://127.0.0.1:{self.port}/")

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_get("/", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def connections(self) -> int:
        """Identified connections open right now."""
        return len(self._sockets)

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send one DISPATCH event to every identified connection."""
        assert self._sockets, "no identified gateway connection"
        for ws in list(self._sockets):
            await self._send(ws, {"op": DISPATCH, "t": event, "s": self._next_seq(), "d": data})

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    @staticmethod
    async def _send(ws: web.WebSocketResponse, frame: dict[str, Any]) -> None:
        await ws.send_str(json.dumps(frame))

    async def _handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await self._send(ws, {"op": HELLO, "d": {"heartbeat_interval": self.heartbeat_interval_ms}, "s": None, "t": None})
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                frame = json.loads(msg.data)
                if frame.get("op") == HEARTBEAT:
                    self.heartbeats += 1
                    await self._send(ws, {"op": HEARTBEAT_ACK, "d": None, "s": None, "t": None})
                elif frame.get("op") == IDENTIFY:
                    await self._identify(ws, frame.get("d") or {})
        finally:
            if ws in self._sockets:
                self._sockets.remove(ws)
        return ws

    async def _identify(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> None:
        self.identifies.append(data)
        if data.get("token") != self.token:
            await ws.close(code=4004, message=b"Authentication failed.")
            return
        ready = {
            "v": 10, "user": BOT_USER, "guilds": [], "session_id": f"session-{len(self.identifies)}",
            "resume_gateway_url": str(self.url), "application": {"id": str(APP_ID), "flags": 0},
            "private_channels": [], "relationships": [],
        }
        await self._send(ws, {"op": DISPATCH, "t": "READY", "s": self._next_seq(), "d": ready})
        self._sockets.append(ws)
        self.ready.set()
