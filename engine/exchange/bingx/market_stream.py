"""BingX swap market-data stream: klines, trades, depth, ticker, mark price (protocol notes 9.3-9.4).

Topics are spread over connections ("shards") of at most 200 topics each (BingX answers 80403 on
the 201st). Every shard reconnects on its own and resubscribes its topics, then emits
:class:`StreamReconnected` so consumers can backfill over REST.

    stream = MarketStream(ws_url)
    await stream.subscribe(kline_topic("BTC-USDT", "1m"))
    async with stream:
        async for event in stream.events():
            ...
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any, AsyncIterator, Callable

from .events import (
    MarketEvent,
    StreamReconnected,
    SubscriptionError,
    parse_market_push,
    split_topic,
)
from .models import MalformedPayloadError, loads_market, to_int
from .ratelimit import Budget, RateLimiter
from .wsconn import EventSink, ReconnectingConnection

log = logging.getLogger(__name__)

MAX_TOPICS_PER_CONNECTION = 200


def kline_topic(symbol: str, interval: str) -> str:
    """``BTC-USDT@kline_1m``."""
    return f"{symbol}@kline_{interval}"


def trade_topic(symbol: str) -> str:
    """``BTC-USDT@trade``."""
    return f"{symbol}@trade"


def depth_topic(symbol: str, levels: int = 20, speed_ms: int = 500) -> str:
    """``BTC-USDT@depth20@500ms`` (levels in 5/10/20/50/100, speed 200 or 500 ms)."""
    if levels not in (5, 10, 20, 50, 100) or speed_ms not in (200, 500):
        raise ValueError(f"unsupported depth topic levels={levels} speed={speed_ms}ms")
    return f"{symbol}@depth{levels}@{speed_ms}ms"


def ticker_topic(symbol: str) -> str:
    """``BTC-USDT@ticker``."""
    return f"{symbol}@ticker"


def mark_price_topic(symbol: str) -> str:
    """``BTC-USDT@markPrice``."""
    return f"{symbol}@markPrice"


class _Shard:
    """One connection and the topics it carries."""

    def __init__(self, stream: "MarketStream", index: int) -> None:
        self.stream = stream
        self.index = index
        self.topics: dict[str, None] = {}  # insertion-ordered set
        self.pending: dict[str, tuple[str, str]] = {}  # request id -> (reqType, topic)
        self.limiter = RateLimiter(guard_s=0.0)
        # BingX FAQ: at most 10 subscription requests per second.
        self.limiter.configure("sub", [Budget(stream.subscribe_rate_per_s, 1.0)])
        self.conn = ReconnectingConnection(
            name=f"bingx-market[{index}]",
            url_factory=self._url,
            on_message=self._on_message,
            on_open=self._resubscribe,
            on_reconnected=self._on_reconnected,
            silence_timeout_s=stream.ping_timeout_s,
            backoff_base_s=stream.backoff_base_s,
            backoff_max_s=stream.backoff_max_s,
            open_timeout_s=stream.open_timeout_s,
            decode_json=loads_market,  # the busiest stream; its prices are strings (see loads_market)
        )
        self.task: asyncio.Task[None] | None = None
        self.resubscribe_task: asyncio.Task[None] | None = None

    async def _url(self) -> str:
        return self.stream.ws_url

    async def send_request(self, req_type: str, topic: str) -> None:
        if not self.conn.connected.is_set():
            return  # on_open (re)subscribes every topic once connected
        await self.limiter.acquire(["sub"])
        req_id = uuid.uuid4().hex
        self.pending[req_id] = (req_type, topic)
        if not await self.conn.send(json.dumps({"id": req_id, "reqType": req_type, "dataType": topic})):
            self.pending.pop(req_id, None)  # not connected: on_open resubscribes everything

    async def _resubscribe(self) -> None:
        # In the background: at 10 subscriptions/s, 200 topics take 20 s, and the read loop must
        # keep answering Ping meanwhile.
        if self.resubscribe_task is not None:
            self.resubscribe_task.cancel()
        self.pending.clear()
        self.resubscribe_task = asyncio.create_task(self._subscribe_all(), name=f"{self.conn.name}-resubscribe")

    async def _subscribe_all(self) -> None:
        topics = list(self.topics)
        for topic in topics:
            if topic in self.topics:
                await self.send_request("sub", topic)
        log.info("bingx-market[%d]: subscribed %d topics", self.index, len(topics))

    async def _on_reconnected(self, attempt: int, downtime_s: float) -> None:
        log.warning("bingx-market[%d]: reconnected after %.1f s (attempt %d); consumers should backfill",
                    self.index, downtime_s, attempt)
        await self.stream._sink.emit(StreamReconnected("market", self.index, tuple(self.topics), attempt, downtime_s))

    async def _on_message(self, msg: Any) -> None:
        if not isinstance(msg, dict):
            log.warning("bingx-market[%d]: skipping frame that is not an object", self.index)
            return
        req_id = msg.get("id")
        if req_id is not None and not msg.get("dataType"):
            await self._on_ack(str(req_id), msg)
            return
        if msg.get("dataType") and "data" in msg:
            try:
                events = parse_market_push(msg)
            except MalformedPayloadError as exc:
                log.warning("bingx-market[%d]: skipping malformed push: %s", self.index, exc)
                return
            for event in events:
                await self.stream._sink.emit(event)
            return
        code = msg.get("code")
        if code not in (None, 0, "0"):
            log.warning("bingx-market[%d]: error frame %s", self.index, str(msg)[:200])

    async def _on_ack(self, req_id: str, msg: dict[str, Any]) -> None:
        req_type, topic = self.pending.pop(req_id, ("?", "?"))
        try:
            code = to_int(msg.get("code"), "code", default=0)
        except MalformedPayloadError:
            code = None
        if code == 0:
            return
        message = str(msg.get("msg", ""))
        log.warning("bingx-market[%d]: %s %s refused: code %s %s", self.index, req_type, topic, code, message)
        if req_type == "sub" and topic in self.topics:
            del self.topics[topic]  # do not resubscribe a refused topic forever
        await self.stream._sink.emit(SubscriptionError(topic, code, message))


class MarketStream:
    """Public market-data stream over one or more WebSocket connections."""

    def __init__(
        self,
        ws_url: str,
        *,
        ping_timeout_s: float = 20.0,
        max_topics_per_connection: int = MAX_TOPICS_PER_CONNECTION,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        open_timeout_s: float = 10.0,
        subscribe_rate_per_s: int = 10,
        queue_size: int = 10_000,
        on_event: Callable[[MarketEvent], Any] | None = None,
    ) -> None:
        if not 1 <= max_topics_per_connection <= MAX_TOPICS_PER_CONNECTION:
            raise ValueError(f"max_topics_per_connection must be 1..{MAX_TOPICS_PER_CONNECTION}")
        self.ws_url = ws_url
        self.ping_timeout_s = ping_timeout_s
        self.max_topics_per_connection = max_topics_per_connection
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.open_timeout_s = open_timeout_s
        self.subscribe_rate_per_s = subscribe_rate_per_s
        self._sink = EventSink("bingx-market", on_event=on_event, queue_size=queue_size)
        self._shards: list[_Shard] = []
        self._running = False

    @property
    def topics(self) -> list[str]:
        """Every subscribed topic."""
        return [t for shard in self._shards for t in shard.topics]

    @property
    def connections(self) -> list[ReconnectingConnection]:
        """The connection of every shard (their ``connected`` events and ``connect_count`` tell its health)."""
        return [shard.conn for shard in self._shards]

    @property
    def shard_count(self) -> int:
        """Number of connections in use."""
        return len(self._shards)

    async def subscribe(self, topic: str) -> None:
        """Subscribe ``topic`` (idempotent). Works before or after :meth:`start`."""
        split_topic(topic)  # raises on a malformed topic
        if any(topic in shard.topics for shard in self._shards):
            return
        shard = next((s for s in self._shards if len(s.topics) < self.max_topics_per_connection), None)
        if shard is None:
            shard = _Shard(self, len(self._shards))
            self._shards.append(shard)
            if self._running:
                shard.task = asyncio.create_task(shard.conn.run(), name=shard.conn.name)
        shard.topics[topic] = None
        await shard.send_request("sub", topic)

    async def unsubscribe(self, topic: str) -> None:
        """Stop receiving ``topic``."""
        for shard in self._shards:
            if topic in shard.topics:
                del shard.topics[topic]
                await shard.send_request("unsub", topic)
                return

    async def start(self) -> None:
        """Open a connection for every shard."""
        if self._running:
            return
        self._running = True
        for shard in self._shards:
            shard.task = asyncio.create_task(shard.conn.run(), name=shard.conn.name)

    async def wait_connected(self, timeout_s: float = 10.0) -> None:
        """Wait until every shard is connected (handy at start-up and in tests)."""
        await asyncio.wait_for(asyncio.gather(*(s.conn.connected.wait() for s in self._shards)), timeout_s)

    async def close(self) -> None:
        """Close every connection and end :meth:`events`."""
        self._running = False
        for shard in self._shards:
            if shard.resubscribe_task is not None:
                shard.resubscribe_task.cancel()
            await shard.conn.stop()
        tasks = [s.task for s in self._shards if s.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=5)
            for t in tasks:
                if not t.done():
                    t.cancel()
        self._sink.close()

    async def __aenter__(self) -> "MarketStream":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def events(self) -> AsyncIterator[MarketEvent]:
        """Async iterator over typed events (when no ``on_event`` callback was given)."""
        return self._sink.events()
