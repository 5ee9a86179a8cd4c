"""Helpers of the worker tests: ``trading-bot run`` as a real subprocess against an in-process simulator."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from engine.simulator import SimulatorServer
from tests.execution_sim import API_KEY, API_SECRET, SYMBOL

PROJECT_ROOT = Path(__file__).resolve().parents[1]
HEALTH_RE = re.compile(r"health endpoint on http://127\.0\.0\.1:(\d+)/health")


def bot_env() -> dict[str, str]:
    """The environment of the bot: no real credentials or chat settings leak in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BINGX_", "TELEGRAM_", "DISCORD_"))}
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def write_config(tmp: Path, sim: SimulatorServer, *, mode: str = "live", stale_feed_s: float = 120.0,
                 **more: Any) -> Path:
    """A config file for the bot against ``sim`` (SQLite and logs under ``tmp``, health on a free port)."""
    config: dict[str, Any] = {
        "mode": mode,
        "symbols": [SYMBOL],
        "exchange": {"rest_url": sim.rest_url, "ws_url": sim.ws_url, "api_key": API_KEY, "api_secret": API_SECRET,
                     "request_timeout_s": 2},
        "database": {"url": f"sqlite://{tmp / 'bot.db'}"},
        "logging": {"file": str(tmp / "logs" / "bot.jsonl"), "level": "INFO"},
        "emergency": {"stop_file": str(tmp / "STOP")},
        "health": {"port": 0, "stale_feed_s": stale_feed_s},
    }
    for key, value in more.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class BotProcess:
    """``python -m bot.cli run --config ...`` with its stderr collected in a file."""

    def __init__(self, config: Path, cwd: Path, name: str = "bot") -> None:
        self.config = config
        self.cwd = cwd
        self.stderr_path = cwd / f"{name}.stderr"
        self.stdout_path = cwd / f"{name}.stdout"
        self.proc: subprocess.Popen[bytes] | None = None
        self.health_port: int | None = None

    def start(self) -> None:
        """Launch the process."""
        self._err = self.stderr_path.open("wb")
        self._out = self.stdout_path.open("wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "run", "--config", str(self.config)], cwd=self.cwd,
                                     env=bot_env(), stdout=self._out, stderr=self._err)

    def output(self) -> str:
        """Everything the bot wrote to stderr (console log) so far."""
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    async def wait_for_output(self, needle: str | re.Pattern[str], timeout_s: float = 30.0, *, after: int = 0) -> str:
        """Wait until the console log (from offset ``after``) contains ``needle``; returns that text."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = self.output()[after:]
            found = needle.search(text) if isinstance(needle, re.Pattern) else (needle in text)
            if found:
                return text
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"bot exited with {self.proc.returncode} before {needle!r}:\n{self.output()[-4000:]}")
            await asyncio.sleep(0.1)
        raise AssertionError(f"timed out waiting for {needle!r}; log tail:\n{self.output()[-4000:]}")

    async def wait_started(self, timeout_s: float = 40.0) -> None:
        """Until trading runs; learns the health port."""
        text = await self.wait_for_output("trading started", timeout_s)
        match = HEALTH_RE.search(text)
        assert match, "health endpoint not logged"
        self.health_port = int(match.group(1))

    async def health(self) -> tuple[int, dict[str, Any]]:
        """GET /health of the running bot."""
        assert self.health_port is not None
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{self.health_port}/health", timeout=aiohttp.ClientTimeout(total=5)) as resp:
                return resp.status, json.loads(await resp.text())

    async def terminate(self, timeout_s: float = 10.0) -> tuple[int, float]:
        """SIGTERM; returns (exit code, seconds to exit)."""
        assert self.proc is not None
        began = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        while self.proc.poll() is None and time.monotonic() - began < timeout_s + 5:
            await asyncio.sleep(0.05)
        elapsed = time.monotonic() - began
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close()
        return self.proc.returncode, elapsed

    def kill9(self) -> None:
        """SIGKILL: no cleanup at all, as in a crash or power loss."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._close()

    def ensure_dead(self) -> None:
        """Test cleanup."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close()

    def _close(self) -> None:
        for f in (getattr(self, "_err", None), getattr(self, "_out", None)):
            if f is not None and not f.closed:
                f.close()


def bot_orders(state: dict[str, Any]) -> list[dict[str, Any]]:
    """Every order of the simulator's account."""
    return list(state["orders"])


def open_position(state: dict[str, Any]) -> dict[str, Any] | None:
    """The non-zero position of ``SYMBOL``, if any."""
    for p in state["positions"]:
        if p["symbol"] == SYMBOL and float(p["positionAmt"]) != 0:
            return p
    return None


def working_stops(state: dict[str, Any], position_side: str) -> list[dict[str, Any]]:
    """STOP_MARKET orders still working on ``position_side``."""
    return [o for o in state["orders"] if o["type"] == "STOP_MARKET" and o["positionSide"] == position_side
            and o["status"] in ("NEW", "PENDING")]


async def wait_until(predicate: Any, timeout_s: float, what: str, poll_s: float = 0.1) -> Any:
    """Poll ``predicate()`` (sync) until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(poll_s)
    raise AssertionError(f"timed out waiting for {what}")
