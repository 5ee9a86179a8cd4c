"""Process health: what `/health` reports, and the tiny HTTP server that serves it.

Components report into :class:`HealthState` (market data seen, API success/failure,
halted); the endpoint answers 200 when healthy and 503 otherwise, with the reasons, so a
systemd/docker health check or an uptime monitor can act on it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

from aiohttp import web

log = logging.getLogger(__name__)


@dataclass
class HealthState:
    """Health inputs, updated by the components that know them."""

    stale_feed_s: float = 120.0
    api_failure_threshold: int = 3
    clock: Callable[[], float] = time.monotonic
    started_at: float = field(default=0.0)
    last_market_data_at: float | None = None
    consecutive_api_failures: int = 0
    last_api_error: str = ""
    halted_reason: str = ""
    extra: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.started_at:
            self.started_at = self.clock()

    def market_data_seen(self) -> None:
        """Call on every market data frame (cheap: one float store)."""
        self.last_market_data_at = self.clock()

    def api_ok(self) -> None:
        """A REST call succeeded."""
        self.consecutive_api_failures = 0

    def api_failed(self, error: str) -> None:
        """A REST call failed (network, 5xx, auth)."""
        self.consecutive_api_failures += 1
        self.last_api_error = error[:200]

    def set_halted(self, reason: str) -> None:
        """Trading is halted (empty reason: not halted)."""
        self.halted_reason = reason

    def problems(self) -> list[str]:
        """Why the process is unhealthy; empty when healthy."""
        now = self.clock()
        problems: list[str] = []
        reference = self.last_market_data_at if self.last_market_data_at is not None else self.started_at
        if now - reference > self.stale_feed_s:
            problems.append(f"no market data for {now - reference:.0f} s")
        if self.consecutive_api_failures >= self.api_failure_threshold:
            problems.append(f"API failing ({self.consecutive_api_failures} in a row: {self.last_api_error})")
        if self.halted_reason:
            problems.append(f"trading halted: {self.halted_reason}")
        return problems

    def snapshot(self) -> dict[str, object]:
        """The JSON body of `/health`."""
        now = self.clock()
        problems = self.problems()
        return {
            "status": "ok" if not problems else "unhealthy",
            "problems": problems,
            "uptime_s": round(now - self.started_at, 1),
            "market_data_age_s": None
            if self.last_market_data_at is None
            else round(now - self.last_market_data_at, 1),
            "api_consecutive_failures": self.consecutive_api_failures,
            "halted": bool(self.halted_reason),
            **self.extra,
        }


class HealthServer:
    """Serves ``GET /health`` on a loopback address."""

    def __init__(self, state: HealthState, host: str = "127.0.0.1", port: int = 8787) -> None:
        self.state = state
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Bind and serve; ``port=0`` picks a free port (read it back from ``self.port``)."""
        app = web.Application()
        app.router.add_get("/health", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server  # aiohttp exposes the bound socket only here
        if server is not None and server.sockets:  # type: ignore[union-attr]
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        log.info("health endpoint on http://%s:%d/health", self.host, self.port)

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, _request: web.Request) -> web.Response:
        body = self.state.snapshot()
        return web.json_response(body, status=200 if body["status"] == "ok" else 503)
