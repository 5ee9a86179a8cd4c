"""The /health endpoint over HTTP, and systemd notifications over a real datagram socket."""

from __future__ import annotations

import socket
from pathlib import Path

import aiohttp

from bot.health import HealthServer, HealthState
from bot.systemd_notify import SystemdNotifier


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def fetch(port: int) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/health") as response:
            return response.status, await response.json()


async def test_health_goes_503_when_the_feed_stops_and_back_to_200_when_it_returns() -> None:
    clock = ManualClock()
    state = HealthState(stale_feed_s=120, clock=clock)
    server = HealthServer(state, port=0)
    await server.start()
    try:
        state.market_data_seen()
        assert (await fetch(server.port))[0] == 200

        clock.now += 119
        assert (await fetch(server.port))[0] == 200
        clock.now += 2  # 121 s without market data
        status, body = await fetch(server.port)
        assert status == 503
        assert body["status"] == "unhealthy" and body["problems"] == ["no market data for 121 s"]

        state.market_data_seen()
        status, body = await fetch(server.port)
        assert (status, body["problems"], body["market_data_age_s"]) == (200, [], 0.0)
    finally:
        await server.stop()


async def test_health_reports_failing_api_and_halt() -> None:
    clock = ManualClock()
    state = HealthState(clock=clock, api_failure_threshold=3)
    server = HealthServer(state, port=0)
    await server.start()
    try:
        state.market_data_seen()
        for _ in range(3):
            state.api_failed("HTTP 503")
        status, body = await fetch(server.port)
        assert status == 503 and "API failing (3 in a row: HTTP 503)" in body["problems"]
        state.api_ok()
        state.set_halted("reconciliation mismatch")
        status, body = await fetch(server.port)
        assert status == 503 and body["problems"] == ["trading halted: reconciliation mismatch"] and body["halted"]
        state.set_halted("")
        assert (await fetch(server.port))[0] == 200
    finally:
        await server.stop()


def test_systemd_notifier_sends_ready_watchdog_and_stopping(tmp_path: Path, monkeypatch) -> None:
    path = str(tmp_path / "notify.sock")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(path)
    receiver.settimeout(2)
    try:
        monkeypatch.setenv("WATCHDOG_USEC", "60000000")
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
        notifier = SystemdNotifier(path)
        assert notifier.watchdog_interval_s() == 30.0
        notifier.ready("paper mode")
        notifier.watchdog()
        notifier.stopping()
        messages = [receiver.recv(1024).decode() for _ in range(3)]
        assert messages == ["READY=1\nSTATUS=paper mode", "WATCHDOG=1", "STOPPING=1"]
    finally:
        receiver.close()


def test_notifier_is_a_no_op_outside_systemd(monkeypatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    notifier = SystemdNotifier()
    assert not notifier.enabled and notifier.watchdog_interval_s() is None
    notifier.ready()  # must not raise
