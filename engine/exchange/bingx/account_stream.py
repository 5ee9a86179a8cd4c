"""BingX account stream (listen key): balances, positions, order updates, config (protocol notes 9.6).

Creates a listen key over REST, connects to ``<ws_url>?listenKey=<key>`` (no subscription),
extends the key every ``keepalive_interval_s`` (BingX: valid 60 min, extend every 30), and
creates a new key and reconnects when BingX pushes ``listenKeyExpired`` or an extension
answers 404 (or 204: not extended). After any reconnect a :class:`StreamReconnected` event
tells consumers to resync order and position state over REST (events may have been missed).

BingX pushes ``ACCOUNT_CONFIG_UPDATE`` on connect and every 5 s (notes 9.6), so a connection
that carries no account event for ``event_timeout_s`` is on a host that does not serve this
account (the VST account-stream host is UNCONFIRMED, notes 1): that is logged as an error
naming the host, and the stream reconnects, alternating between the candidate hosts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Sequence
from urllib.parse import urlsplit

from .errors import BingxError, BingxListenKeyNotFoundError
from .events import AccountEvent, ListenKeyExpired, StreamReconnected, parse_account_event
from .models import MalformedPayloadError
from .urls import PROD_WS_URL, VST_WS_URL, account_stream_url
from .wsconn import EventSink, ReconnectingConnection

if TYPE_CHECKING:
    from .rest import BingxRestClient

log = logging.getLogger(__name__)


def _hint(key: str | None) -> str:
    """Listen keys grant read access to the account: log only a prefix."""
    return (key[:6] + "…") if key else "-"


class AccountStream:
    """Private account-event stream with listen-key lifecycle management."""

    def __init__(
        self,
        rest_client: "BingxRestClient",
        ws_url: str,
        *,
        keepalive_interval_s: float = 30 * 60,
        keepalive_retry_s: float = 60.0,
        ping_timeout_s: float = 20.0,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        open_timeout_s: float = 10.0,
        queue_size: int = 10_000,
        on_event: Callable[[AccountEvent], Any] | None = None,
        event_timeout_s: float = 30.0,
        alternate_ws_urls: Sequence[str] | None = None,
    ) -> None:
        self._rest = rest_client
        self._ws_url = ws_url
        if alternate_ws_urls is None:
            # On VST the account stream may live on the production WS host instead (notes 1, UNCONFIRMED).
            alternate_ws_urls = (PROD_WS_URL,) if ws_url.rstrip("/") == VST_WS_URL else ()
        self._ws_urls = [ws_url, *alternate_ws_urls]
        self._url_index = 0
        self._event_timeout_s = event_timeout_s
        self._quiet_since: float | None = None  # monotonic s of the last connect or account event
        self._quiet_reconnects = 0  # in a row; each one doubles the wait (in case the 5 s push is not sent)
        self._keepalive_interval_s = keepalive_interval_s
        self._keepalive_retry_s = keepalive_retry_s
        self._sink = EventSink("bingx-account", on_event=on_event, queue_size=queue_size)
        self._listen_key: str | None = None
        self._key_lock = asyncio.Lock()
        self.keys_created = 0
        self.conn = ReconnectingConnection(
            name="bingx-account",
            url_factory=self._url,
            on_message=self._on_message,
            on_open=self._on_open,
            on_reconnected=self._on_reconnected,
            silence_timeout_s=ping_timeout_s,
            backoff_base_s=backoff_base_s,
            backoff_max_s=backoff_max_s,
            open_timeout_s=open_timeout_s,
        )
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def listen_key(self) -> str | None:
        """The key in use (never log it whole)."""
        return self._listen_key

    async def _url(self) -> str:
        async with self._key_lock:
            if self._listen_key is None:
                self._listen_key = await self._rest.create_listen_key()
                self.keys_created += 1
                log.info("bingx-account: new listen key %s", _hint(self._listen_key))
            return account_stream_url(self._ws_urls[self._url_index], self._listen_key)

    async def _renew(self, reason: str) -> None:
        """Forget the key and reconnect: the URL factory creates a fresh one."""
        async with self._key_lock:
            old, self._listen_key = self._listen_key, None
        log.warning("bingx-account: listen key %s %s; creating a new one and reconnecting", _hint(old), reason)
        await self.conn.reconnect_now(f"listen key {reason}")

    async def _keepalive(self) -> None:
        delay = self._keepalive_interval_s
        while True:
            await asyncio.sleep(delay)
            key = self._listen_key
            if key is None:
                delay = self._keepalive_interval_s
                continue
            try:
                await self._rest.extend_listen_key(key)
                log.debug("bingx-account: listen key %s extended", _hint(key))
                delay = self._keepalive_interval_s
            except BingxListenKeyNotFoundError as exc:
                if key == self._listen_key:
                    # 404: expired; 204: "no parameters", not extended. Either way it will lapse: replace it.
                    await self._renew(f"not extended ({exc.http_status} on extend)" if exc.http_status == 204
                                      else "expired (404 on extend)")
                delay = self._keepalive_interval_s
            except BingxError as exc:
                log.warning("bingx-account: extending listen key failed (%s); retrying in %.0f s", exc,
                            self._keepalive_retry_s)
                delay = min(self._keepalive_retry_s, self._keepalive_interval_s)

    async def _on_message(self, msg: Any) -> None:
        if not isinstance(msg, dict):
            log.warning("bingx-account: skipping frame that is not an object")
            return
        try:
            event = parse_account_event(msg)
        except MalformedPayloadError as exc:
            log.warning("bingx-account: skipping malformed %s event: %s", msg.get("e", "?"), exc)
            return
        if event is None:
            if msg.get("code") not in (None, 0, "0"):
                log.warning("bingx-account: error frame %s", str(msg)[:200])
            return
        self._quiet_since = time.monotonic()
        self._quiet_reconnects = 0
        await self._sink.emit(event)
        if isinstance(event, ListenKeyExpired):
            await self._renew("expired (pushed by BingX)")

    async def _on_open(self) -> None:
        self._quiet_since = time.monotonic()

    async def _watch_events(self) -> None:
        """Reconnect (to the next candidate host) when a connection carries no account event."""
        period = max(0.05, min(5.0, self._event_timeout_s / 4))
        while True:
            await asyncio.sleep(period)
            since = self._quiet_since
            if since is None or not self.conn.connected.is_set():
                continue
            quiet_s = time.monotonic() - since
            if quiet_s < self._event_timeout_s * 2 ** min(self._quiet_reconnects, 5):
                continue
            self._quiet_reconnects += 1
            host = urlsplit(self._ws_urls[self._url_index]).netloc  # never the URL: it holds the listen key
            self._url_index = (self._url_index + 1) % len(self._ws_urls)
            nxt = urlsplit(self._ws_urls[self._url_index]).netloc
            log.error("bingx-account: connected to %s but no account event for %.0f s (BingX pushes "
                      "ACCOUNT_CONFIG_UPDATE every 5 s): this host may not serve the account stream; "
                      "reconnecting to %s", host, quiet_s, nxt)
            self._quiet_since = None  # re-armed by the next connect
            await self.conn.reconnect_now(f"no account events on {host}")

    async def _on_reconnected(self, attempt: int, downtime_s: float) -> None:
        log.warning("bingx-account: reconnected after %.1f s (attempt %d); resync orders and positions over REST",
                    downtime_s, attempt)
        await self._sink.emit(StreamReconnected("account", 0, (), attempt, downtime_s))

    async def start(self) -> None:
        """Start the connection and the keep-alive loop."""
        if self._tasks:
            return
        self._tasks = [
            asyncio.create_task(self.conn.run(), name="bingx-account"),
            asyncio.create_task(self._keepalive(), name="bingx-account-keepalive"),
            asyncio.create_task(self._watch_events(), name="bingx-account-events-watch"),
        ]

    async def wait_connected(self, timeout_s: float = 10.0) -> None:
        """Wait until the WebSocket is open."""
        await asyncio.wait_for(self.conn.connected.wait(), timeout_s)

    async def close(self, *, delete_key: bool = True) -> None:
        """Stop, and delete the listen key (best effort)."""
        await self.conn.stop()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        key, self._listen_key = self._listen_key, None
        if delete_key and key:
            try:
                await self._rest.delete_listen_key(key)
            except BingxError as exc:
                log.info("bingx-account: could not delete listen key %s: %s", _hint(key), exc)
        self._sink.close()

    async def __aenter__(self) -> "AccountStream":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def events(self) -> AsyncIterator[AccountEvent]:
        """Async iterator over typed account events (when no ``on_event`` callback was given)."""
        return self._sink.events()
