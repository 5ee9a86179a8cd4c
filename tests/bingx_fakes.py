"""A small purpose-built BingX server on 127.0.0.1 for the exchange-layer tests.

It speaks the real protocol (signed query strings verified with HMAC, the JSON envelope,
gzip WebSocket frames, ``Ping``/``Pong``, listen keys) for the cases the tests need, and has
switches to inject the faults under test: lost placement responses, clock skew, rate limits,
dropped or silent WebSocket connections, expiring listen keys. Every request is recorded with
its arrival time so tests can assert what the *server* saw.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import hmac
import itertools
import json
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import unquote

from aiohttp import WSMsgType, web

API_KEY = "fake-api-key-0123456789"
API_SECRET = "fake-api-secret-abcdefghijklmnopqrstuvwxyz"
BIG_ORDER_ID_BASE = 1_900_000_000_000_000_000  # > 2**53, like real BingX ids

CONTRACTS = [
    {"contractId": "100", "symbol": "BTC-USDT", "size": "0", "quantityPrecision": 4, "pricePrecision": 1,
     "feeRate": 0.0005, "makerFeeRate": 0.0002, "takerFeeRate": 0.0005, "tradeMinLimit": 0,
     "tradeMinQuantity": 0.0001, "tradeMinUSDT": 2, "maxLongLeverage": 125, "maxShortLeverage": 125,
     "currency": "USDT", "asset": "BTC", "status": 1, "apiStateOpen": "true", "apiStateClose": "true"},
    {"contractId": "101", "symbol": "ETH-USDT", "size": "0", "quantityPrecision": 2, "pricePrecision": 2,
     "feeRate": 0.0005, "makerFeeRate": 0.0002, "takerFeeRate": 0.0005, "tradeMinLimit": 0,
     "tradeMinQuantity": 0.01, "tradeMinUSDT": 2, "maxLongLeverage": 100, "maxShortLeverage": 100,
     "currency": "USDT", "asset": "ETH", "status": 1, "apiStateOpen": "true", "apiStateClose": "true"},
]


@dataclass
class Recorded:
    """One request as the server saw it."""

    at: float  # time.monotonic() on arrival
    method: str
    path: str
    params: dict[str, str]
    signed_ok: bool | None
    answer_code: int | None = None


@dataclass
class ListenKey:
    """Server-side listen key state."""

    key: str
    expires_at: float
    extends: int = 0


@dataclass
class Switches:
    """Fault injection, set by tests."""

    # Placements: store the order, then never answer ("timeout" sleeps, "disconnect" drops the socket).
    lose_place_responses: int = 0
    lose_mode: str = "timeout"
    lose_sleep_s: float = 2.0
    # Placements: answer HTTP 500 *without* storing the order (a confirmed absence afterwards).
    fail_place_unstored: int = 0
    # Reads answered with HTTP 503 before succeeding.
    fail_reads_503: int = 0
    # Answer 100410 (with an expire header) this many times.
    rate_limit_answers: int = 0
    rate_limit_http_status: int = 200
    rate_limit_expire_ms: int = 300
    # Server-side budget check: (limit, window_s) per path, or for a set of paths together.
    budget: tuple[int, float] | None = None
    budget_paths: frozenset[str] = frozenset()
    # Klines: answer newest-first and cap each answer at this many rows (None = no cap).
    klines_newest_first: bool = True
    klines_cap: int | None = None
    # WebSocket.
    ping_interval_s: float = 0.2
    push_interval_s: float = 0.05
    silent: bool = False
    listen_key_ttl_s: float = 3600.0
    # The server-time endpoint reports this much more than the clock used to check timestamps.
    server_time_lie_ms: int = 0


@dataclass
class WsClient:
    """One connected WebSocket client."""

    ws: web.WebSocketResponse
    listen_key: str | None
    topics: set[str] = field(default_factory=set)
    pongs: int = 0


class FakeBingx:
    """REST + WebSocket fake. Use ``async with FakeBingx() as fake:`` then ``fake.rest_url``/``fake.ws_url``."""

    def __init__(self, *, api_key: str = API_KEY, api_secret: str = API_SECRET) -> None:
        self.api_key = api_key
        self.api_secret = api_secret
        self.switches = Switches()
        self.clock_offset_ms = 0
        self.requests: list[Recorded] = []
        self.orders: dict[str, dict[str, Any]] = {}  # by client order id
        self._order_ids = itertools.count(BIG_ORDER_ID_BASE + 12345)
        self.listen_keys: dict[str, ListenKey] = {}
        self.ws_clients: list[WsClient] = []
        self.ws_connections_total = 0
        self.sub_requests: list[tuple[str, str]] = []  # (reqType, topic) in arrival order
        self.kline_start_ms = 1_700_000_000_000 - (1_700_000_000_000 % 60_000)
        self.kline_count = 10_000
        self.kline_gap: tuple[int, int] | None = None  # [start, end) with no candles
        self.position_mode_dual = True
        self._window: deque[float] = deque()
        self.max_in_window = 0
        self.rate_limited = 0
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.port = 0

    # --- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> "FakeBingx":
        app = web.Application()
        app.router.add_route("GET", "/swap-market", self._ws_handler)
        app.router.add_route("*", "/{tail:.*}", self._rest_handler)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._tasks.append(asyncio.create_task(self._ws_pusher()))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for c in list(self.ws_clients):
            await c.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/swap-market"

    def now_ms(self) -> int:
        return int(time.time() * 1000) + self.clock_offset_ms

    def calls(self, path_suffix: str, method: str | None = None) -> list[Recorded]:
        """Recorded requests whose path ends with ``path_suffix``."""
        return [r for r in self.requests if r.path.endswith(path_suffix) and (method is None or r.method == method)]

    # --- REST --------------------------------------------------------------------------------

    def _verify(self, request: web.Request) -> tuple[bool, dict[str, str]]:
        """Variant (a) of the protocol notes: HMAC over the percent-decoded query minus signature."""
        raw = request.query_string
        pairs = [p for p in raw.split("&") if p]
        signature = None
        kept: list[tuple[str, str]] = []
        for pair in pairs:
            key, _, value = pair.partition("=")
            if key == "signature":
                signature = value
            else:
                kept.append((key, unquote(value)))
        params = dict(kept)
        if signature is None:
            return False, params
        payload = "&".join(f"{k}={v}" for k, v in kept)
        expected = hmac.new(self.api_secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, signature.lower()), params

    @staticmethod
    def _ok(data: Any) -> web.Response:
        return web.Response(text=json.dumps({"code": 0, "msg": "", "data": data}), content_type="application/json")

    @staticmethod
    def _err(code: int, msg: str, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
        return web.Response(text=json.dumps({"code": code, "msg": msg, "data": {}}), status=status,
                            content_type="application/json", headers=headers)

    def _count_budget(self, path: str, now: float) -> bool:
        """Track the sliding-window maximum of arrivals on the budgeted paths; False = over budget."""
        sw = self.switches
        if sw.budget is None or path not in sw.budget_paths:
            return True
        limit, window = sw.budget
        self._window.append(now)
        while self._window and self._window[0] <= now - window:
            self._window.popleft()
        self.max_in_window = max(self.max_in_window, len(self._window))
        return len(self._window) <= limit

    async def _rest_handler(self, request: web.Request) -> web.StreamResponse:
        now = time.monotonic()
        path = request.path
        signed = "signature=" in request.query_string
        ok, params = self._verify(request) if signed else (None, {k: v for k, v in request.query.items()})
        rec = Recorded(now, request.method, path, params, ok)
        self.requests.append(rec)
        resp = await self._dispatch(request, rec, params, now)
        return resp

    async def _dispatch(self, request: web.Request, rec: Recorded, params: dict[str, str],
                        now: float) -> web.StreamResponse:
        sw = self.switches
        path, method = rec.path, rec.method
        if not self._count_budget(path, now):
            self.rate_limited += 1
            rec.answer_code = 100410
            return self._err(100410, "The current system is busy, please try again later")
        if sw.rate_limit_answers > 0:
            sw.rate_limit_answers -= 1
            rec.answer_code = 100410
            return self._err(100410, "The current system is busy, please try again later",
                             status=sw.rate_limit_http_status,
                             headers={"X-RateLimit-Requests-Expire": str(sw.rate_limit_expire_ms)})
        private = rec.signed_ok is not None or "/user/" in path or "/trade/" in path
        if private:
            if request.headers.get("X-BX-APIKEY") != self.api_key:
                rec.answer_code = 100413
                return self._err(100413, "Incorrect apiKey")
            if rec.signed_ok is False or rec.signed_ok is None:
                rec.answer_code = 100001
                return self._err(100001, "Signature verification failed due to signature mismatch")
            try:
                ts = int(params.get("timestamp", "0"))
            except ValueError:
                ts = 0
            window = int(params.get("recvWindow", "5000"))
            if abs(ts - self.now_ms()) > window:
                rec.answer_code = 100421
                return self._err(100421, "Null timestamp or timestamp mismatch")
        if method == "GET" and sw.fail_reads_503 > 0 and "/server/time" not in path:
            sw.fail_reads_503 -= 1
            return web.Response(status=503, text="<html>busy</html>")
        handler = self._routes(request).get((method, path))
        if handler is None:
            rec.answer_code = 100400
            return self._err(100400, f"path {path} not supported by the fake", status=404)
        result = handler(params)
        if asyncio.iscoroutine(result):
            result = await result
        if isinstance(result, web.StreamResponse):
            return result
        rec.answer_code = 0
        return self._ok(result)

    def _routes(self, request: web.Request) -> dict[tuple[str, str], Callable[[dict[str, str]], Any]]:
        return {
            ("GET", "/openApi/swap/v2/server/time"): lambda p: {
                "serverTime": self.now_ms() + self.switches.server_time_lie_ms},
            ("GET", "/openApi/swap/v2/quote/contracts"): lambda p: CONTRACTS,
            ("GET", "/openApi/swap/v1/ticker/price"): lambda p: {"symbol": p.get("symbol"), "price": "50000.0",
                                                                "time": self.now_ms()},
            ("GET", "/openApi/swap/v2/quote/depth"): lambda p: {"T": self.now_ms(),
                                                               "bids": [["49999.9", "1.5"], ["49999.8", "2"]],
                                                               "asks": [["50000.2", "3"], ["50000.1", "1"]]},
            ("GET", "/openApi/swap/v3/quote/klines"): self._klines,
            ("GET", "/openApi/swap/v3/user/balance"): lambda p: [{
                "userId": "1", "asset": "USDT", "balance": "1000.0000", "equity": "1001.5000",
                "unrealizedProfit": "1.5000", "realisedProfit": "0", "availableMargin": "990.0000",
                "usedMargin": "10.0000", "freezedMargin": "0.0000", "shortUid": "1"}],
            ("GET", "/openApi/swap/v2/user/positions"): lambda p: [{
                "positionId": str(BIG_ORDER_ID_BASE + 7), "symbol": "BTC-USDT", "currency": "USDT",
                "positionAmt": "0.0100", "availableAmt": "0.0100", "positionSide": "LONG", "isolated": False,
                "avgPrice": "50000.0", "initialMargin": "100", "leverage": 5, "unrealizedProfit": "1.5",
                "realisedProfit": "0", "liquidationPrice": 41000.5, "markPrice": "50150.0",
                "positionValue": "501.5"}],
            ("GET", "/openApi/swap/v2/trade/leverage"): lambda p: {
                "longLeverage": 5, "shortLeverage": 5, "maxLongLeverage": 125, "maxShortLeverage": 125},
            ("GET", "/openApi/swap/v2/trade/marginType"): lambda p: {"marginType": "CROSSED",
                                                                    "symbol": p.get("symbol")},
            ("GET", "/openApi/swap/v1/positionSide/dual"): lambda p: {
                "dualSidePosition": "true" if self.position_mode_dual else "false"},
            ("POST", "/openApi/swap/v2/trade/order"): lambda p: self._place(p, request),
            ("GET", "/openApi/swap/v2/trade/order"): self._query,
            ("GET", "/openApi/swap/v2/trade/openOrders"): lambda p: {
                "orders": [o for o in self.orders.values() if o["status"] in ("NEW", "PENDING")]},
            ("POST", "/openApi/user/auth/userDataStream"): self._lk_create,
            ("PUT", "/openApi/user/auth/userDataStream"): self._lk_extend,
            ("DELETE", "/openApi/user/auth/userDataStream"): self._lk_delete,
        }

    def _klines(self, p: dict[str, str]) -> list[dict[str, Any]]:
        step = 60_000
        limit = int(p.get("limit", "500"))
        start = int(p["startTime"]) if "startTime" in p else None
        end = int(p["endTime"]) if "endTime" in p else None  # inclusive, the stricter reading
        first, last = self.kline_start_ms, self.kline_start_ms + (self.kline_count - 1) * step
        lo = max(first, start if start is not None else first)
        lo += (-lo) % step
        hi = min(last, end if end is not None else last)
        times = [t for t in range(lo, hi + 1, step)
                 if not (self.kline_gap and self.kline_gap[0] <= t < self.kline_gap[1])]
        if self.switches.klines_newest_first:
            times = times[::-1]
        times = times[: min(limit, self.switches.klines_cap or limit)]
        return [{"open": f"{100 + (t // step) % 50}.5", "close": "101.0", "high": "102.25", "low": "99.75",
                 "volume": "12.5", "time": t} for t in times]

    def _order_view(self, o: dict[str, Any]) -> dict[str, Any]:
        return dict(o)

    async def _place(self, p: dict[str, str], request: web.Request) -> Any:
        sw = self.switches
        cid = (p.get("clientOrderId") or p.get("clientOrderID") or "").lower()
        if sw.fail_place_unstored > 0:
            sw.fail_place_unstored -= 1
            return web.Response(status=500, text="internal error")
        if cid and cid in self.orders:
            return self._err(101481, "clientOrderID cannot be repeated")
        order_id = next(self._order_ids)
        order = {"symbol": p["symbol"], "orderId": order_id, "side": p["side"], "positionSide": p.get("positionSide"),
                 "type": p["type"], "origQty": p.get("quantity", "0"), "price": p.get("price", "0"),
                 "executedQty": "0", "avgPrice": "0", "cumQuote": "0", "stopPrice": p.get("stopPrice", ""),
                 "profit": "0", "commission": "0", "status": "NEW", "time": self.now_ms(),
                 "updateTime": self.now_ms(), "clientOrderId": cid, "workingType": "MARK_PRICE",
                 "stopLoss": json.loads(p["stopLoss"]) if "stopLoss" in p else {"type": "", "quantity": "0",
                                                                                 "stopPrice": "0", "price": "0",
                                                                                 "workingType": ""},
                 "takeProfit": json.loads(p["takeProfit"]) if "takeProfit" in p else "",
                 "reduceOnly": p.get("reduceOnly") == "true"}
        self.orders[cid or str(order_id)] = order
        if sw.lose_place_responses > 0:
            sw.lose_place_responses -= 1
            if sw.lose_mode == "disconnect":
                assert request.transport is not None
                request.transport.abort()  # the order is stored; the answer never leaves
                return web.Response(status=200, text="")
            await asyncio.sleep(sw.lose_sleep_s)
        # The real place response: quantity instead of origQty, clientOrderID spelling, stringified SL/TP.
        reply = {"orderId": order_id, "symbol": order["symbol"], "positionSide": order["positionSide"],
                 "side": order["side"], "type": order["type"], "price": p.get("price", 0),
                 "quantity": p.get("quantity"), "stopPrice": 0, "workingType": "MARK_PRICE",
                 "clientOrderID": "", "timeInForce": p.get("timeInForce", "GTC"),
                 "stopLoss": p.get("stopLoss", ""), "takeProfit": p.get("takeProfit", ""), "reduceOnly": False}
        return web.Response(text='{"code":0,"msg":"","data":{"order":' + json.dumps(reply) + "}}",
                            content_type="application/json")

    def _query(self, p: dict[str, str]) -> Any:
        cid = (p.get("clientOrderId") or p.get("clientOrderID") or "").lower()
        oid = p.get("orderId")
        found = None
        if cid:
            found = self.orders.get(cid)
        elif oid:
            found = next((o for o in self.orders.values() if str(o["orderId"]) == oid), None)
        if found is None:
            return self._err(80016, "order not exist")
        return {"order": self._order_view(found)}

    def _lk_create(self, p: dict[str, str]) -> web.Response:
        key = uuid.uuid4().hex + uuid.uuid4().hex
        self.listen_keys[key] = ListenKey(key, time.monotonic() + self.switches.listen_key_ttl_s)
        return web.Response(text=json.dumps({"listenKey": key}), content_type="application/json")

    def _lk_extend(self, p: dict[str, str]) -> web.Response:
        lk = self.listen_keys.get(p.get("listenKey", ""))
        if lk is None or lk.expires_at <= time.monotonic():
            return web.Response(status=404, text="")
        lk.expires_at = time.monotonic() + self.switches.listen_key_ttl_s
        lk.extends += 1
        return web.Response(status=200, text="")

    def _lk_delete(self, p: dict[str, str]) -> web.Response:
        if self.listen_keys.pop(p.get("listenKey", ""), None) is None:
            return web.Response(status=404, text="")
        return web.Response(status=200, text="")

    # --- WebSocket ---------------------------------------------------------------------------

    @staticmethod
    def gz(obj: Any) -> bytes:
        text = obj if isinstance(obj, str) else json.dumps(obj)
        return gzip.compress(text.encode())

    async def _ws_handler(self, request: web.Request) -> web.StreamResponse:
        listen_key = request.query.get("listenKey")
        if listen_key is not None:
            lk = self.listen_keys.get(listen_key)
            if lk is None or lk.expires_at <= time.monotonic():
                return web.Response(status=404, text="listen key not found")
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        client = WsClient(ws, listen_key)
        self.ws_clients.append(client)
        self.ws_connections_total += 1
        try:
            if listen_key is not None:
                await ws.send_bytes(self.gz({"e": "ACCOUNT_CONFIG_UPDATE", "E": self.now_ms(),
                                             "ac": {"s": "BTC-USDT", "l": 5, "S": 5, "mt": "cross"}}))
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                if msg.data == "Pong":
                    client.pongs += 1
                    continue
                try:
                    req = json.loads(msg.data)
                except ValueError:
                    continue
                topic, req_type = req.get("dataType", ""), req.get("reqType")
                self.sub_requests.append((req_type, topic))
                if req_type == "sub":
                    if "@" not in topic or not topic.split("@")[0].isupper():
                        await ws.send_bytes(self.gz({"id": req.get("id"), "code": 80015, "msg": "dataType not support",
                                                     "dataType": "", "data": None}))
                        continue
                    if len(client.topics) >= 200 and topic not in client.topics:
                        await ws.send_bytes(self.gz({"id": req.get("id"), "code": 80403,
                                                     "msg": "your topic num over max 200", "dataType": "",
                                                     "data": None}))
                        continue
                    client.topics.add(topic)
                elif req_type == "unsub":
                    client.topics.discard(topic)
                await ws.send_bytes(self.gz({"id": req.get("id"), "code": 0, "msg": "", "dataType": "", "data": None}))
        finally:
            if client in self.ws_clients:
                self.ws_clients.remove(client)
        return ws

    async def _ws_pusher(self) -> None:
        """Push Ping and a kline frame per subscribed kline topic, on every connection."""
        last_ping = 0.0
        while True:
            await asyncio.sleep(self.switches.push_interval_s)
            if self.switches.silent:
                continue
            now = time.monotonic()
            send_ping = now - last_ping >= self.switches.ping_interval_s
            if send_ping:
                last_ping = now
            for client in list(self.ws_clients):
                try:
                    if send_ping:
                        await client.ws.send_bytes(self.gz("Ping"))
                    for topic in sorted(client.topics):
                        if "@kline_" in topic:
                            await client.ws.send_bytes(self.gz(self.kline_frame(topic)))
                except (ConnectionResetError, RuntimeError):
                    continue

    def kline_frame(self, topic: str) -> dict[str, Any]:
        now = self.now_ms()  # read once: two reads across a minute boundary gave an open time of :59.999
        t = now - now % 60_000
        return {"code": 0, "dataType": topic, "s": topic.split("@")[0],
                "data": [{"c": "50001.5", "o": "50000.0", "h": "50002.0", "l": "49999.0", "v": "1.25", "T": t}]}

    async def push_to_account(self, event: dict[str, Any], *, raw: bytes | None = None) -> int:
        """Send an event to every account-stream connection; returns how many got it."""
        sent = 0
        for client in list(self.ws_clients):
            if client.listen_key is not None:
                await client.ws.send_bytes(raw if raw is not None else self.gz(event))
                sent += 1
        return sent

    async def push_to_market(self, raw: bytes) -> None:
        """Send a raw frame to every market connection."""
        for client in list(self.ws_clients):
            if client.listen_key is None:
                await client.ws.send_bytes(raw)

    async def drop_ws(self) -> int:
        """Abruptly close every WebSocket (no close handshake), as a BingX release would."""
        n = 0
        for client in list(self.ws_clients):
            transport = client.ws._req.transport if client.ws._req else None  # type: ignore[attr-defined]
            if transport is not None:
                transport.abort()
                n += 1
            self.ws_clients.remove(client)
        return n

    async def expire_listen_key(self, key: str) -> None:
        """Expire ``key`` now and push ``listenKeyExpired`` to its connections."""
        lk = self.listen_keys.get(key)
        if lk is not None:
            lk.expires_at = 0.0
        for client in list(self.ws_clients):
            if client.listen_key == key:
                await client.ws.send_bytes(self.gz({"e": "listenKeyExpired", "E": self.now_ms(), "listenKey": key}))


class EventCollector:
    """Collects stream events delivered through a stream's ``on_event`` callback; tests wait on it."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self._changed = asyncio.Event()

    def __call__(self, event: Any) -> None:
        self.events.append(event)
        self._changed.set()

    def of(self, kind: type) -> list[Any]:
        """Every collected event of ``kind``."""
        return [e for e in self.events if isinstance(e, kind)]

    async def wait_until(self, check: Callable[[list[Any]], Any], timeout: float = 5.0) -> Any:
        """Wait until ``check(events)`` returns something truthy, and return it."""
        async def _wait() -> Any:
            while True:
                result = check(self.events)
                if result:
                    return result
                self._changed.clear()
                await self._changed.wait()
        return await asyncio.wait_for(_wait(), timeout)

    async def wait_for(self, kind: type, after: int = 0, timeout: float = 5.0) -> Any:
        """The first event of ``kind`` collected at index ``after`` or later."""
        return await self.wait_until(lambda evs: next((e for e in evs[after:] if isinstance(e, kind)), None), timeout)

