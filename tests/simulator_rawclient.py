"""A deliberately independent BingX client for the simulator tests.

Raw aiohttp plus the signing recipe of ``bingx-protocol.md`` 3.2 (the ccxt scheme: sort
the parameters, HMAC-SHA256 the unencoded ``k=v&...`` string with the secret, send the
same keys percent-encoded in the query string followed by ``&signature=``). It shares no
code with the project's own exchange client or with the simulator.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import hmac
import json
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import aiohttp
import yarl

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
NANO_FILE = SHARED / "data" / "market" / "NANO_USDT-1m.csv.gz"
FIXTURES = SHARED / "data" / "ccxt-bingx-static" / "response.json"


def sign(secret: str, text: str) -> str:
    """Lowercase hex HMAC-SHA256."""
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


def build_query(params: dict[str, Any], secret: str, *, sort: bool = True) -> str:
    """``k=v&...&signature=...`` with values percent-encoded, signature over the raw values."""
    items = sorted(params.items()) if sort else list(params.items())
    raw = "&".join(f"{k}={v}" for k, v in items)
    encoded = "&".join(f"{k}={urllib.parse.quote(str(v), safe='')}" for k, v in items)
    return f"{encoded}&signature={sign(secret, raw)}"


@dataclass
class Reply:
    """One HTTP answer."""

    status: int
    text: str
    headers: dict[str, str]

    @property
    def json(self) -> Any:
        return json.loads(self.text)

    @property
    def code(self) -> int | None:
        body = self.json
        return body.get("code") if isinstance(body, dict) else None

    @property
    def data(self) -> Any:
        return self.json["data"]


class RawBingX:
    """Minimal BingX REST client: public calls, signed calls, server-time sync."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, key: str, secret: str) -> None:
        self.session = session
        self.base_url = base_url
        self.key = key
        self.secret = secret

    async def request(self, method: str, path_and_query: str, *, headers: dict[str, str] | None = None,
                      data: str | None = None, timeout: float = 10.0) -> Reply:
        # encoded=True: send the query bytes exactly as built (yarl would otherwise re-quote them).
        async with self.session.request(
            method, yarl.URL(f"{self.base_url}{path_and_query}", encoded=True), headers=headers, data=data,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            return Reply(resp.status, await resp.text(), dict(resp.headers))

    async def public(self, path: str, **params: Any) -> Reply:
        query = urllib.parse.urlencode(params)
        return await self.request("GET", f"{path}?{query}" if query else path)

    async def server_time(self) -> int:
        reply = await self.public("/openApi/swap/v2/server/time")
        return int(reply.data["serverTime"])

    async def signed(self, method: str, path: str, params: dict[str, Any] | None = None, *,
                     timestamp: int | None = None, key: str | None = None, secret: str | None = None,
                     timeout: float = 10.0) -> Reply:
        params = dict(params or {})
        params["timestamp"] = timestamp if timestamp is not None else await self.server_time()
        query = build_query(params, secret or self.secret)
        return await self.request(method, f"{path}?{query}", headers={"X-BX-APIKEY": key or self.key}, timeout=timeout)

    # conveniences
    async def place(self, **params: Any) -> Reply:
        return await self.signed("POST", "/openApi/swap/v2/trade/order", params)

    async def query_order(self, symbol: str, **ident: Any) -> Reply:
        return await self.signed("GET", "/openApi/swap/v2/trade/order", {"symbol": symbol, **ident})

    async def cancel(self, symbol: str, **ident: Any) -> Reply:
        return await self.signed("DELETE", "/openApi/swap/v2/trade/order", {"symbol": symbol, **ident})

    async def balance(self) -> dict[str, Any]:
        return (await self.signed("GET", "/openApi/swap/v3/user/balance")).data[0]

    async def positions(self, symbol: str | None = None) -> list[dict[str, Any]]:
        params = {"symbol": symbol} if symbol else {}
        return (await self.signed("GET", "/openApi/swap/v2/user/positions", params)).data

    async def admin_state(self) -> dict[str, Any]:
        return (await self.request("GET", "/_sim/state")).json

    async def admin(self, path: str, body: dict[str, Any]) -> Reply:
        return await self.request("POST", path, data=json.dumps(body), headers={"Content-Type": "application/json"})


def gunzip_text(data: bytes) -> str:
    return gzip.decompress(data).decode("utf-8")


async def ws_next(ws: aiohttp.ClientWebSocketResponse, timeout: float = 5.0, *, answer_ping: bool = True) -> Any:
    """Next non-Ping frame, gunzipped and JSON-decoded. Every frame must be a gzip'd binary frame."""
    while True:
        msg = await ws.receive(timeout=timeout)
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.ERROR):
            raise ConnectionError(f"websocket closed: {msg.type} {msg.data!r}")
        assert msg.type == aiohttp.WSMsgType.BINARY, f"expected a binary gzip frame, got {msg.type}"
        text = gunzip_text(msg.data)
        if text == "Ping":
            if answer_ping:
                await ws.send_str("Pong")
            continue
        return json.loads(text)


async def ws_wait_for(ws: aiohttp.ClientWebSocketResponse, predicate: Callable[[Any], bool], timeout: float = 5.0) -> Any:
    """First frame satisfying ``predicate`` within ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        left = deadline - loop.time()
        if left <= 0:
            raise asyncio.TimeoutError("no matching frame")
        frame = await ws_next(ws, left)
        if predicate(frame):
            return frame


async def ws_sub(ws: aiohttp.ClientWebSocketResponse, topic: str, req_id: str = "1") -> Any:
    """Subscribe and return the ack (or error) for ``req_id``."""
    await ws.send_str(json.dumps({"id": req_id, "reqType": "sub", "dataType": topic}))
    return await ws_wait_for(ws, lambda f: isinstance(f, dict) and f.get("id") == req_id)


def load_fixture_response(method: str, description: str) -> Any:
    """Raw exchange body of a ccxt static response fixture."""
    data = json.loads(FIXTURES.read_text())
    for case in data["methods"][method]:
        if case.get("description") == description:
            body = case["httpResponse"]
            return json.loads(body) if isinstance(body, str) else body
    raise KeyError(f"{method}/{description}")
