"""doctor: plain-word reports for the cases the simulator tests do not cover."""

from __future__ import annotations

import socket
from decimal import Decimal
from typing import AsyncIterator

import pytest

from engine.exchange.bingx.doctor import render_doctor_report, run_doctor
from engine.exchange.bingx.rest import BingxRestClient

from tests.bingx_fakes import FakeBingx


@pytest.fixture
async def fake() -> AsyncIterator[FakeBingx]:
    async with FakeBingx() as server:
        yield server


async def test_without_credentials_only_public_checks_run(fake: FakeBingx) -> None:
    async with BingxRestClient(rest_url=fake.rest_url, api_key="", api_secret="") as client:
        report = await run_doctor(client, ["ETH-USDT"])
    assert report.ok and report.authenticated is None
    assert report.symbols[0].contract is not None and report.symbols[0].contract.step_size == Decimal("0.01")
    assert not [r for r in fake.requests if r.signed_ok is not None]  # nothing private was attempted
    text = render_doctor_report(report)
    assert "account checks skipped" in text and "ETH-USDT: tick 0.01, step 0.01, min qty 0.01" in text


async def test_clock_offset_is_reported(fake: FakeBingx) -> None:
    fake.clock_offset_ms = -4_000
    async with BingxRestClient(rest_url=fake.rest_url, api_key="", api_secret="") as client:
        report = await run_doctor(client, ["BTC-USDT"])
    assert report.server_time_offset_ms is not None and -4_500 < report.server_time_offset_ms < -3_500
    assert "-4.0 s off BingX time" in render_doctor_report(report)


async def test_unreachable_exchange_is_a_plain_problem() -> None:
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with BingxRestClient(rest_url=f"http://127.0.0.1:{port}", api_key="k", api_secret="s",
                               max_retries=1, backoff_base_s=0.01, request_timeout_s=1) as client:
        report = await run_doctor(client, ["BTC-USDT"])
    assert not report.ok and not report.reachable
    assert report.problems[0].startswith("BingX is not reachable: Could not reach BingX")
    assert "needs attention" in render_doctor_report(report)
