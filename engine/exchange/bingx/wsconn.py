"""One self-healing BingX WebSocket connection, shared by the market and account streams.

BingX framing (protocol notes 9.1-9.2): every server frame is a gzip member; the heartbeat is the
text ``Ping`` (about every 5 s) and must be answered with ``Pong``. This class gunzips, answers
pings, treats ``silence_timeout_s`` without any frame as a dead connection, reconnects with
exponential backoff and full jitter, and calls ``on_open`` after each (re)connect so the owner
can resubscribe, then ``on_reconnected`` with the attempt count and downtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import random
import time
import zlib
from typing import Any, Awaitable, Callable

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from .models import loads

log = logging.getLogger(__name__)

_GZIP_MAGIC = b"\x1f\x8b"


class MalformedFrameError(ValueError):
    """A frame that is neither valid gzip nor UTF-8 text."""


def decode_frame(data: bytes | str) -> str:
    """Gunzip a binary frame (tolerating plain text/bytes) and decode UTF-8."""
    if isinstance(data, str):
        return data
    try:
        if data[:2] == _GZIP_MAGIC:
            # zlib in gzip mode (wbits=31) is ~3x faster than gzip.decompress, which parses the header
            # in Python. It stops after the first gzip member, so anything after it (a second member,
            # trailing junk) goes to gzip.decompress, which concatenates members or rejects the junk.
            inflater = zlib.decompressobj(31)
            raw = inflater.decompress(data)
            if not inflater.eof:
                raise EOFError("compressed data ended before the end-of-stream marker")
            if inflater.unused_data:
                raw = gzip.decompress(data)
        else:
            raw = data
        return raw.decode("utf-8")
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        raise MalformedFrameError(f"undecodable frame ({len(data)} bytes): {exc}") from None


class ReconnectingConnection:
    """Runs one WebSocket connection forever (until :meth:`stop`), reconnecting as needed.

    Each text message is decoded with ``decode_json``: the exact :func:`~.models.loads` unless the
    caller passes another (the market stream passes :func:`~.models.loads_market`).
    """

    def __init__(
        self,
        *,
        name: str,
        url_factory: Callable[[], Awaitable[str]],
        on_message: Callable[[Any], Awaitable[None]],
        on_open: Callable[[], Awaitable[None]] | None = None,
        on_reconnected: Callable[[int, float], Awaitable[None]] | None = None,
        silence_timeout_s: float = 20.0,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        open_timeout_s: float = 10.0,
        max_frame_bytes: int = 8 * 1024 * 1024,
        decode_json: Callable[[str], Any] = loads,
    ) -> None:
        self.name = name
        self._url_factory = url_factory
        self._on_message = on_message
        self._on_open = on_open
        self._on_reconnected = on_reconnected
        self._silence_timeout_s = silence_timeout_s
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._open_timeout_s = open_timeout_s
        self._max_frame_bytes = max_frame_bytes
        self._decode_json = decode_json
        self._ws: ClientConnection | None = None
        self._stopped = asyncio.Event()
        self._skip_backoff = False
        self.connected = asyncio.Event()
        self.connect_count = 0
        self._waiting_since: float | None = None  # time.monotonic() when the read loop began waiting for a frame
        self._went_silent = False  # the current connection was closed for silence

    async def send(self, text: str) -> bool:
        """Send a text frame if connected; ``False`` when not (the owner re-sends on open)."""
        ws = self._ws
        if ws is None:
            return False
        try:
            await ws.send(text)
            return True
        except ConnectionClosed:
            return False

    async def reconnect_now(self, reason: str) -> None:
        """Drop the current connection and reconnect at once (no backoff)."""
        log.info("%s: reconnecting now (%s)", self.name, reason)
        self._skip_backoff = True
        ws = self._ws
        if ws is not None:
            await ws.close()

    async def stop(self) -> None:
        """Close the connection and end :meth:`run`."""
        self._stopped.set()
        ws = self._ws
        if ws is not None:
            await ws.close()

    def _delay(self, attempt: int) -> float:
        ceiling = min(self._backoff_max_s, self._backoff_base_s * (2 ** max(0, attempt - 1)))
        return random.uniform(ceiling / 2, ceiling)  # jitter so many clients do not reconnect in lockstep

    async def run(self) -> None:
        """Connect, read, reconnect; returns after :meth:`stop`."""
        attempt = 0
        down_since: float | None = None
        while not self._stopped.is_set():
            try:
                url = await self._url_factory()
                async with connect(url, ping_interval=None, compression=None, proxy=None,
                                   open_timeout=self._open_timeout_s, close_timeout=2,
                                   max_size=self._max_frame_bytes) as ws:
                    self._ws = ws
                    self.connect_count += 1
                    self.connected.set()
                    if self._on_open is not None:
                        await self._on_open()
                    if down_since is not None and self._on_reconnected is not None:
                        await self._on_reconnected(attempt, time.monotonic() - down_since)
                    down_since = None
                    if await self._read_loop(ws):
                        attempt = 0  # the connection carried data: start backoff from scratch next time
            except asyncio.CancelledError:
                raise
            except ConnectionClosed as exc:
                log.warning("%s: connection closed (%s)", self.name, exc)
            except Exception as exc:  # noqa: BLE001 - any failure means: reconnect later
                log.warning("%s: connection failed: %s: %s", self.name, type(exc).__name__, exc)
            finally:
                self._ws = None
                self.connected.clear()
            if self._stopped.is_set():
                break
            if down_since is None:
                down_since = time.monotonic()
            if self._skip_backoff:
                self._skip_backoff = False
                continue
            attempt += 1
            delay = self._delay(attempt)
            log.info("%s: reconnect attempt %d in %.2f s", self.name, attempt, delay)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), timeout=delay)

    async def _read_loop(self, ws: ClientConnection) -> bool:
        """Read until the connection ends; returns whether any data frame arrived."""
        got_data = False
        self._went_silent = False
        watchdog = asyncio.create_task(self._close_when_silent(ws), name=f"{self.name}-silence")
        try:
            while True:
                self._waiting_since = time.monotonic()
                try:
                    frame = await ws.recv()
                except ConnectionClosed as exc:
                    if not (self._stopped.is_set() or self._went_silent):  # the watchdog logged its own reason
                        log.warning("%s: connection closed (%s)", self.name, exc)
                    return got_data
                self._waiting_since = None
                got_data = await self._handle_frame(ws, frame) or got_data
        finally:
            watchdog.cancel()

    async def _close_when_silent(self, ws: ClientConnection) -> None:
        """Close ``ws`` once the read loop has waited ``silence_timeout_s`` for a frame.

        One timer per silence period rather than a timeout around every ``recv()``: on the order
        path (issue 10) ``wait_for`` cost a task and two extra loop turns per frame. As with that
        timeout, only time spent waiting counts, not time spent handling a frame (a REST backfill).
        """
        while True:
            since = self._waiting_since
            remaining = self._silence_timeout_s if since is None else since + self._silence_timeout_s - time.monotonic()
            if remaining <= 0:
                log.warning("%s: no frame for %.1f s; treating the connection as dead", self.name,
                            self._silence_timeout_s)
                self._went_silent = True
                await ws.close()
                return
            await asyncio.sleep(remaining)

    async def _handle_frame(self, ws: ClientConnection, frame: str | bytes) -> bool:
        """Decode one frame: answer a ping, or pass the message on. Returns whether it carried data."""
        try:
            text = decode_frame(frame)
        except MalformedFrameError as exc:
            log.warning("%s: skipping frame: %s", self.name, exc)
            return False
        stripped = text.strip()
        if stripped == "Ping":
            await ws.send("Pong")
            return False
        try:
            message = self._decode_json(stripped)
        except ValueError:
            log.warning("%s: skipping non-JSON frame: %r", self.name, stripped[:120])
            return False
        if isinstance(message, dict) and "ping" in message and len(message) <= 2:
            await ws.send('{"pong":"%s","time":"%s"}' % (message.get("ping"), message.get("time", "")))
            return False
        try:
            await self._on_message(message)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a bad frame must never kill the stream
            log.exception("%s: error while handling a frame; skipped", self.name)
        return True


class EventSink:
    """Delivers events to a callback, or to a bounded queue read with ``async for``."""

    _CLOSED = object()

    def __init__(self, name: str, *, on_event: Callable[[Any], Any] | None, queue_size: int) -> None:
        self._name = name
        self._on_event = on_event
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=queue_size)
        self._dropped = 0

    async def emit(self, event: Any) -> None:
        """Hand one event to the consumer. A full queue drops its oldest event (logged)."""
        if self._on_event is not None:
            try:
                result = self._on_event(event)
                if asyncio.iscoroutine(result):
                    await result
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - consumer bugs must not kill the stream
                log.exception("%s: event callback failed for %s", self._name, type(event).__name__)
            return
        if self._queue.full():
            self._queue.get_nowait()
            self._dropped += 1
            if self._dropped in (1, 10, 100) or self._dropped % 1000 == 0:
                log.warning("%s: consumer too slow, %d events dropped so far", self._name, self._dropped)
        self._queue.put_nowait(event)

    def close(self) -> None:
        """Wake the ``events()`` iterator and end it."""
        if self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(self._CLOSED)

    async def events(self) -> Any:
        """Async iterator over events until :meth:`close`."""
        while True:
            item = await self._queue.get()
            if item is self._CLOSED:
                return
            yield item
