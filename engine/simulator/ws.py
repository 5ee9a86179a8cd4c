"""WebSockets at ``/swap-market``: market channels, and the account stream at ``?listenKey=``.

Every server frame is a binary frame holding one gzip member (``bingx-protocol.md`` 9.1).
The server sends the text ``Ping`` every ``ping_interval_s`` and drops (aborts, the
client sees code 1006) a client that sent nothing for ``idle_timeout_s``. Frames to a
client go through its own queue and writer task, so one slow client never blocks the
replay; at max speed the replay waits until every queue has drained (backpressure), and
at a finite speed a client more than ``max_queue`` frames behind is dropped.

Push cadence: at a finite speed, trades (and ``@lastPrice``) are pushed as they happen,
and kline/ticker/markPrice/depth/bookTicker snapshots every ``push_interval_s`` of wall
time plus a final kline push when a candle closes. At max speed everything is pushed
once per candle: one ``@trade`` frame holding the candle's trades, then the snapshots.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import time
import zlib
from collections import deque
from typing import TYPE_CHECKING, Any, Callable

from aiohttp import WSMsgType, web

from . import formats
from .markets import INTERVAL_MS, Market, bucket_start
from .protocol import dumps, gzip_frame

if TYPE_CHECKING:  # pragma: no cover
    from .matching import MatchingEngine
    from .replay import Step

log = logging.getLogger(__name__)

MAX_TOPICS = 200
DEPTH_LEVELS = frozenset({5, 10, 20, 50, 100})
_TOPIC_RE = re.compile(r"^([A-Z0-9]+-[A-Z0-9]+)@(.+)$")
_DEPTH_RE = re.compile(r"^depth(\d+)(?:@(200ms|500ms))?$")
PING_FRAME = gzip_frame("Ping")


def parse_topic(topic: str, symbols: set[str] | dict[str, Any]) -> tuple[str, str, Any] | None:
    """(symbol, kind, argument) of a supported topic, or None (80015)."""
    match = _TOPIC_RE.match(topic)
    if not match or match.group(1) not in symbols:
        return None
    symbol, channel = match.group(1), match.group(2)
    if channel in ("trade", "ticker", "lastPrice", "markPrice", "bookTicker"):
        return symbol, channel, None
    if channel.startswith("kline_"):
        interval = channel[len("kline_") :]
        return (symbol, "kline", interval) if interval in INTERVAL_MS else None
    depth = _DEPTH_RE.match(channel)
    if depth and int(depth.group(1)) in DEPTH_LEVELS:
        return symbol, "depth", int(depth.group(1))
    return None


class ListenKeyStore:
    """Listen keys and their wall-clock deadlines (the lifetime is a session property, not market time)."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._deadlines: dict[str, float] = {}

    def create(self) -> str:
        """A new 64-hex-character key valid for ``ttl_s``."""
        key = secrets.token_hex(32)
        self._deadlines[key] = time.monotonic() + self.ttl_s
        return key

    def valid(self, key: str) -> bool:
        """Whether ``key`` exists and has not expired."""
        deadline = self._deadlines.get(key)
        return deadline is not None and deadline > time.monotonic()

    def extend(self, key: str) -> bool:
        """Restart the key's lifetime from now (False when unknown or expired)."""
        if not self.valid(key):
            return False
        self._deadlines[key] = time.monotonic() + self.ttl_s
        return True

    def delete(self, key: str) -> bool:
        """Forget a key (False when unknown)."""
        return self._deadlines.pop(key, None) is not None

    def pop_expired(self) -> list[str]:
        """Remove and return the keys whose lifetime is over."""
        now = time.monotonic()
        expired = [k for k, d in self._deadlines.items() if d <= now]
        for key in expired:
            del self._deadlines[key]
        return expired

    def snapshot(self) -> list[dict[str, Any]]:
        """Keys with the seconds they have left."""
        now = time.monotonic()
        return [{"listenKey": k, "expires_in_s": round(d - now, 3)} for k, d in self._deadlines.items()]


class Connection:
    """One WebSocket client: its subscriptions and its outgoing frame queue."""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request, listen_key: str | None, max_queue: int) -> None:
        self.ws = ws
        self.transport = request.transport
        self.listen_key = listen_key
        self.topics: set[str] = set()
        self.queue: deque[bytes] = deque()
        self.wake = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()
        self.max_queue = max_queue
        self.last_seen = time.monotonic()
        self.last_ping = time.monotonic()
        self.closed = False
        self.frames_sent = 0
        self.writer_task: asyncio.Task[None] | None = None

    def send(self, frame: bytes) -> None:
        """Queue a frame; a client too far behind is dropped."""
        if self.closed:
            return
        if len(self.queue) >= self.max_queue:
            log.warning("dropping a WebSocket client %d frames behind", len(self.queue))
            self.abort()
            return
        self.queue.append(frame)
        self.idle.clear()
        self.wake.set()

    async def writer(self) -> None:
        """Send queued frames in order until the connection ends."""
        try:
            while not self.closed:
                await self.wake.wait()
                self.wake.clear()
                while self.queue and not self.closed:
                    frame = self.queue.popleft()
                    await self.ws.send_bytes(frame)
                    self.frames_sent += 1
                self.idle.set()
        except (ConnectionError, RuntimeError, asyncio.CancelledError):
            pass
        finally:
            self.closed = True
            self.queue.clear()
            self.idle.set()

    def abort(self) -> None:
        """Drop the connection without a close frame (what a network failure looks like)."""
        if self.closed:
            return
        self.closed = True
        self.queue.clear()
        self.idle.set()
        self.wake.set()
        if self.transport is not None:
            self.transport.abort()


class WsHub:
    """All WebSocket connections, their subscriptions and the pushes to them."""

    def __init__(
        self,
        markets: dict[str, Market],
        engine: MatchingEngine,
        listen_keys: ListenKeyStore,
        server_now: Callable[[], int],
        *,
        ping_interval_s: float = 5.0,
        idle_timeout_s: float = 30.0,
        config_interval_s: float = 5.0,
        push_interval_s: float = 1.0,
        max_queue: int = 20_000,
    ) -> None:
        self.markets = markets
        self.engine = engine
        self.listen_keys = listen_keys
        self.server_now = server_now
        self.ping_interval_s = ping_interval_s
        self.idle_timeout_s = idle_timeout_s
        self.config_interval_s = config_interval_s
        self.push_interval_s = push_interval_s
        self.max_queue = max_queue
        self.batch_mode = False  # max speed: push once per candle
        self.connections: set[Connection] = set()
        self.subscribers: dict[str, set[Connection]] = {}
        self.symbol_topics: dict[str, dict[str, tuple[str, Any]]] = {s: {} for s in markets}
        self._kline_aggs: dict[tuple[str, str], list[Any] | None] = {}
        self.listener_arrived = asyncio.Event()  # set while some client listens (subscribed or account)
        self.frames_published = 0
        self.drops = 0

    # ---- connection lifecycle -----------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The ``/swap-market`` handler (market data, or the account stream with ``?listenKey=``)."""
        listen_key = request.query.get("listenKey")
        ws = web.WebSocketResponse(autoping=True, compress=False, max_msg_size=1 << 20)
        await ws.prepare(request)
        if listen_key is not None and not self.listen_keys.valid(listen_key):
            await ws.close(code=4001, message=b"invalid or expired listenKey")
            return ws
        conn = Connection(ws, request, listen_key, self.max_queue)
        self.connections.add(conn)
        if listen_key is not None:
            self.listener_arrived.set()
        conn.writer_task = asyncio.create_task(conn.writer())
        if listen_key is not None:
            self.push_config(conn)
        try:
            async for msg in ws:
                conn.last_seen = time.monotonic()
                if msg.type == WSMsgType.TEXT:
                    self._on_text(conn, msg.data)
                elif msg.type == WSMsgType.BINARY:
                    self._on_text(conn, _decode_binary(msg.data))
                elif msg.type == WSMsgType.ERROR:
                    break
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._forget(conn)
        return ws

    def _forget(self, conn: Connection) -> None:
        conn.closed = True
        conn.wake.set()
        conn.idle.set()
        self.connections.discard(conn)
        for topic in list(conn.topics):
            self._unsubscribe(conn, topic)
        if not self.has_listeners():
            self.listener_arrived.clear()

    def has_listeners(self) -> bool:
        """Whether any client is subscribed to something or on the account stream."""
        return any(c.topics or c.listen_key is not None for c in self.connections)

    def drop_all(self) -> int:
        """Abort every WebSocket connection now; returns how many were dropped."""
        conns = list(self.connections)
        for conn in conns:
            conn.abort()
            self._forget(conn)
        self.drops += len(conns)
        return len(conns)

    async def close_all(self) -> None:
        """Close every connection politely (server shutdown)."""
        for conn in list(self.connections):
            try:
                await asyncio.wait_for(conn.ws.close(code=1001, message=b"server shutdown"), 1.0)
            except (asyncio.TimeoutError, ConnectionError, RuntimeError):
                conn.abort()
            self._forget(conn)
            if conn.writer_task:
                conn.writer_task.cancel()

    # ---- client frames ------------------------------------------------------------------------
    def _reply(self, conn: Connection, payload: dict[str, Any]) -> None:
        conn.send(gzip_frame(dumps(payload)))

    def _on_text(self, conn: Connection, text: str) -> None:
        stripped = text.strip()
        if stripped in ("Pong", "pong", ""):
            return
        if stripped in ("Ping", "ping"):
            conn.send(gzip_frame("Pong"))
            return
        try:
            req = json.loads(stripped)
        except ValueError:
            log.info("WebSocket client sent a malformed frame: %.80r", stripped)
            self._reply(conn, {"id": "", "code": 80014, "msg": "invalid frame: not JSON", "dataType": "", "data": None})
            return
        if not isinstance(req, dict):
            self._reply(conn, {"id": "", "code": 80014, "msg": "invalid frame", "dataType": "", "data": None})
            return
        req_id = req.get("id", "")
        req_type = req.get("reqType")
        topic = req.get("dataType")
        if req_type not in ("sub", "unsub") or not isinstance(topic, str) or not topic:
            self._reply(conn, {"id": req_id, "code": 80014, "msg": "invalid reqType or dataType", "dataType": "", "data": None})
            return
        parsed = parse_topic(topic, self.markets)
        if parsed is None:
            self._reply(conn, {"id": req_id, "code": 80015, "msg": "dataType not support", "dataType": "", "data": None})
            return
        if req_type == "sub":
            if topic not in conn.topics and len(conn.topics) >= MAX_TOPICS:
                self._reply(conn, {"id": req_id, "code": 80403, "msg": "your topic num over max 200", "dataType": "", "data": None})
                return
            self._subscribe(conn, topic, parsed)
            self._reply(conn, {"id": req_id, "code": 0, "msg": "", "dataType": "", "data": None})
            self._push_snapshot(conn, topic, parsed)
        else:
            self._unsubscribe(conn, topic)
            self._reply(conn, {"id": req_id, "code": 0, "msg": "", "dataType": "", "data": None})

    def _subscribe(self, conn: Connection, topic: str, parsed: tuple[str, str, Any]) -> None:
        symbol, kind, arg = parsed
        conn.topics.add(topic)
        self.listener_arrived.set()
        self.subscribers.setdefault(topic, set()).add(conn)
        self.symbol_topics[symbol][topic] = (kind, arg)
        if kind == "kline" and arg != "1m" and (symbol, arg) not in self._kline_aggs:
            self._kline_aggs[(symbol, arg)] = self._closed_bucket(self.markets[symbol], arg)

    def _unsubscribe(self, conn: Connection, topic: str) -> None:
        conn.topics.discard(topic)
        subs = self.subscribers.get(topic)
        if subs is None:
            return
        subs.discard(conn)
        if not subs:
            del self.subscribers[topic]
            parsed = parse_topic(topic, self.markets)
            if parsed:
                self.symbol_topics[parsed[0]].pop(topic, None)

    # ---- publishing ---------------------------------------------------------------------------
    def publish(self, topic: str, payload: dict[str, Any]) -> None:
        """Serialise and gzip once, queue for every subscriber of ``topic``."""
        subs = self.subscribers.get(topic)
        if not subs:
            return
        frame = gzip_frame(dumps(payload))
        self.frames_published += 1
        for conn in tuple(subs):
            conn.send(frame)

    def account_connections(self) -> list[Connection]:
        """Connections on the account stream."""
        return [c for c in self.connections if c.listen_key is not None]

    def publish_account(self, payload: dict[str, Any]) -> None:
        """Push an account event to every account-stream connection."""
        conns = self.account_connections()
        if not conns:
            return
        frame = gzip_frame(dumps(payload))
        for conn in conns:
            conn.send(frame)

    def push_config(self, conn: Connection | None = None, symbol: str | None = None) -> None:
        """ACCOUNT_CONFIG_UPDATE for one symbol or all, to one account connection or all."""
        now = self.server_now()
        targets = [conn] if conn is not None else self.account_connections()
        symbols = [symbol] if symbol else list(self.markets)
        for sym in symbols:
            frame = gzip_frame(dumps(formats.ws_config_update(sym, self.engine, now)))
            for target in targets:
                target.send(frame)

    def expire_listen_key(self, key: str) -> None:
        """Tell the key's connections it expired, then drop them."""
        for conn in [c for c in self.connections if c.listen_key == key]:
            conn.send(gzip_frame(dumps({"e": "listenKeyExpired", "E": self.server_now(), "listenKey": key})))
            asyncio.get_running_loop().call_later(0.2, conn.abort)

    # ---- market pushes ------------------------------------------------------------------------
    def _closed_bucket(self, market: Market, interval: str) -> list[Any] | None:
        """Aggregate of the closed 1m candles in the bucket of the last closed candle."""
        if market.closed_count == 0:
            return None
        last = market.candles[market.closed_count - 1]
        bucket = bucket_start(interval, last.open_time_ms)
        agg: list[Any] | None = None
        for candle in market.candles[market.index_at(bucket) : market.closed_count]:
            agg = _merge(agg, bucket, market.ticks(candle.open), market.ticks(candle.high), market.ticks(candle.low),
                         market.ticks(candle.close), candle.volume)
        return agg

    def _bar(self, market: Market, interval: str) -> tuple[int, int, int, int, int, float] | None:
        current = market.current_1m()
        if interval == "1m" or current is None:
            return current
        agg = self._kline_aggs.get((market.symbol, interval))
        forming = market.forming
        if forming is not None and forming.index == market.closed_count:
            bucket = bucket_start(interval, forming.open_time_ms)
            if agg is not None and agg[0] == bucket:
                merged = _merge(list(agg), bucket, forming.o, forming.h, forming.l, forming.c, forming.v)
                return tuple(merged)  # type: ignore[return-value]
            return bucket, forming.o, forming.h, forming.l, forming.c, forming.v
        return tuple(agg) if agg is not None else None  # type: ignore[return-value]

    def _snapshot_payload(self, market: Market, topic: str, kind: str, arg: Any, now: int) -> dict[str, Any] | None:
        if kind == "kline":
            bar = self._bar(market, arg)
            return formats.ws_kline(market, arg, bar) if bar is not None else None
        if kind == "ticker":
            return formats.ws_ticker(market, now)
        if kind == "markPrice":
            return {"code": 0, "dataType": topic, "data": {"e": "markPriceUpdate", "E": now, "s": market.symbol,
                                                          "p": market.price_str(market.mark_ticks)}}
        if kind == "lastPrice":
            return {"code": 0, "dataType": topic, "data": {"e": "lastPriceUpdate", "E": now, "s": market.symbol,
                                                          "c": market.price_str(market.last_ticks)}}
        if kind == "depth":
            bids, asks = formats.depth_levels(market, arg)
            return {"code": 0, "dataType": topic, "ts": now, "data": {"bids": bids, "asks": asks}}
        if kind == "bookTicker":
            return formats.ws_book_ticker(market, now)
        return None

    def _push_snapshot(self, conn: Connection, topic: str, parsed: tuple[str, str, Any]) -> None:
        symbol, kind, arg = parsed
        if kind == "trade":
            return
        payload = self._snapshot_payload(self.markets[symbol], topic, kind, arg, self.server_now())
        if payload is not None:
            conn.send(gzip_frame(dumps(payload)))

    def _trade_payload(self, market: Market, topic: str, steps: list[Step]) -> dict[str, Any]:
        symbol = market.symbol
        return {
            "code": 0,
            "dataType": topic,
            "data": [
                {"q": market.qty_str(s.qty), "p": market.price_str(s.ticks), "T": s.time_ms, "m": s.buyer_maker, "s": symbol}
                for s in steps
                if s.qty > 0
            ],
        }

    def on_step(self, market: Market, step: Step) -> None:
        """A replayed trade: pushed at once at a finite speed, batched per candle at max speed."""
        topics = self.symbol_topics[market.symbol]
        if not topics:
            return
        if self.batch_mode:
            return  # pushed with the whole candle in on_candle_closed
        now = self.server_now()
        for topic, (kind, arg) in list(topics.items()):
            if kind == "trade" and step.qty > 0:
                self.publish(topic, self._trade_payload(market, topic, [step]))
            elif kind == "lastPrice":
                self.publish(topic, self._snapshot_payload(market, topic, kind, arg, now))  # type: ignore[arg-type]

    def on_candle_closed(self, market: Market, index: int, path: list[Step]) -> None:
        """A candle is final: update aggregates, push its final kline (and, at max speed, everything).

        ``path`` holds the candle's trades (pushed as one ``@trade`` frame at max speed).
        """
        candle = market.candles[index]
        for (symbol, interval), agg in list(self._kline_aggs.items()):
            if symbol != market.symbol:
                continue
            bucket = bucket_start(interval, candle.open_time_ms)
            base = agg if agg is not None and agg[0] == bucket else None
            self._kline_aggs[(symbol, interval)] = _merge(
                base, bucket, market.ticks(candle.open), market.ticks(candle.high), market.ticks(candle.low),
                market.ticks(candle.close), candle.volume,
            )
        topics = self.symbol_topics[market.symbol]
        if not topics:
            return
        now = self.server_now()
        for topic, (kind, arg) in list(topics.items()):
            if kind == "trade":
                if self.batch_mode and any(s.qty > 0 for s in path):
                    self.publish(topic, self._trade_payload(market, topic, path))
                continue
            if kind == "kline" or self.batch_mode:
                payload = self._snapshot_payload(market, topic, kind, arg, now)
                if payload is not None:
                    self.publish(topic, payload)

    def push_periodic(self) -> None:
        """The ~1 s snapshot pushes at a finite speed."""
        now = self.server_now()
        for symbol, topics in self.symbol_topics.items():
            if not topics:
                continue
            market = self.markets[symbol]
            for topic, (kind, arg) in list(topics.items()):
                if kind in ("trade", "lastPrice"):
                    continue
                payload = self._snapshot_payload(market, topic, kind, arg, now)
                if payload is not None:
                    self.publish(topic, payload)

    # ---- heartbeat and backpressure -----------------------------------------------------------
    def heartbeat(self) -> None:
        """Send ``Ping`` to whoever is due; drop clients silent for too long."""
        now = time.monotonic()
        for conn in list(self.connections):
            if now - conn.last_seen > self.idle_timeout_s:
                log.info("dropping a WebSocket client silent for %.1f s", now - conn.last_seen)
                conn.abort()
                self._forget(conn)
                continue
            if now - conn.last_ping >= self.ping_interval_s:
                conn.last_ping = now
                conn.send(PING_FRAME)

    async def wait_drained(self, high_water: int = 32) -> None:
        """Return once no live client has more than ``high_water`` frames queued."""
        for conn in list(self.connections):
            while len(conn.queue) > high_water and not conn.closed:
                await conn.idle.wait()


def _merge(agg: list[Any] | None, bucket: int, o: int, h: int, l: int, c: int, v: float) -> list[Any]:
    if agg is None:
        return [bucket, o, h, l, c, v]
    agg[2] = max(agg[2], h)
    agg[3] = min(agg[3], l)
    agg[4] = c
    agg[5] += v
    return agg


def _decode_binary(data: bytes) -> str:
    """Client frames are text; accept a gzip'd or raw UTF-8 binary frame too."""
    try:
        return zlib.decompress(data, wbits=47).decode("utf-8", "replace")
    except zlib.error:
        return data.decode("utf-8", "replace")
