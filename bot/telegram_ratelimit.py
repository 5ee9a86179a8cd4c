"""Telegram's flood limits, without extra dependencies (PTB's AIORateLimiter needs aiolimiter).

Telegram documents roughly: 30 messages per second overall, 1 message per second per chat,
20 messages per minute per group. Requests are delayed (never dropped) to stay inside those
windows; a 429 ``RetryAfter`` pauses *every* request for the time Telegram asks, then the
request is retried up to ``max_retries`` times.
"""

from __future__ import annotations

import asyncio
import logging
import time
import warnings
from collections import deque
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any

from telegram.error import RetryAfter
from telegram.ext import BaseRateLimiter

log = logging.getLogger(__name__)


def retry_after_seconds(exc: RetryAfter) -> float:
    """Seconds Telegram asked us to wait (PTB 22 warns when ``retry_after`` is read as int)."""
    value = getattr(exc, "_retry_after", None)
    if isinstance(value, timedelta):
        return value.total_seconds()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class SlidingWindow:
    """At most ``limit`` acquisitions per ``period_s``; :meth:`acquire` sleeps until allowed."""

    def __init__(self, limit: int, period_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.period_s = period_s
        self._clock = clock
        self._stamps: deque[float] = deque()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        """Wait for a free slot and take it."""
        async with self._lock:
            while True:
                now = self._clock()
                while self._stamps and now - self._stamps[0] >= self.period_s:
                    self._stamps.popleft()
                if len(self._stamps) < self.limit:
                    self._stamps.append(now)
                    return
                await asyncio.sleep(self.period_s - (now - self._stamps[0]) + 0.001)


class TelegramRateLimiter(BaseRateLimiter[int]):
    """Per-chat, per-group and overall windows plus a global pause on 429."""

    def __init__(
        self,
        overall_per_s: int = 30,
        chat_per_s: int = 1,
        group_per_min: int = 20,
        max_retries: int = 3,
    ) -> None:
        self._overall = SlidingWindow(overall_per_s, 1.0)
        self._chat_per_s = chat_per_s
        self._group_per_min = group_per_min
        self._max_retries = max_retries
        self._chats: dict[int | str, SlidingWindow] = {}
        self._groups: dict[int | str, SlidingWindow] = {}
        self._open = asyncio.Event()
        self._open.set()

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    def _window(self, table: dict[int | str, SlidingWindow], key: int | str, limit: int, period_s: float) -> SlidingWindow:
        window = table.get(key)
        if window is None:
            if len(table) > 10_000:  # bounded memory: forget idle chats
                table.clear()
            window = table[key] = SlidingWindow(limit, period_s)
        return window

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, bool | dict[str, Any] | list[dict[str, Any]]]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: int | None,
    ) -> bool | dict[str, Any] | list[dict[str, Any]]:
        """Delay the request as needed, run it, and retry on RetryAfter."""
        chat_id = data.get("chat_id")
        retries = rate_limit_args if rate_limit_args is not None else self._max_retries
        for attempt in range(retries + 1):
            await self._open.wait()
            if chat_id is not None:
                await self._overall.acquire()
                key: int | str = chat_id
                try:
                    key = int(chat_id)
                except (TypeError, ValueError):
                    pass
                await self._window(self._chats, key, self._chat_per_s, 1.0).acquire()
                if (isinstance(key, int) and key < 0) or isinstance(key, str):
                    await self._window(self._groups, key, self._group_per_min, 60.0).acquire()
            try:
                return await callback(*args, **kwargs)
            except RetryAfter as exc:
                if attempt >= retries:
                    raise
                wait_s = retry_after_seconds(exc)
                log.warning("Telegram flood control on %s: waiting %.1fs", endpoint, wait_s)
                self._open.clear()
                try:
                    await asyncio.sleep(wait_s + 0.1)
                finally:
                    self._open.set()
        raise RuntimeError("unreachable")  # pragma: no cover
