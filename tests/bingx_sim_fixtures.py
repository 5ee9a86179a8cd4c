"""A BingX simulator on loopback for client-level tests: ``make_sim`` starts one per call, ``client_for`` signs for it.

Import the fixtures into a test module (``from tests.bingx_sim_fixtures import btc_candles, make_sim``) to use them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import pytest

from engine.exchange.bingx.rest import BingxRestClient
from engine.market.candle import read_candles_csv
from engine.simulator import MarketSpec, SimulatorServer

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SYM = "BTC-USDT"
KEY, SECRET = "sim-key", "sim-secret"

SimFactory = Callable[..., Awaitable[SimulatorServer]]


@pytest.fixture(scope="module")
def btc_candles() -> list[Any]:
    """The first 3,000 real BTC-USDT minutes."""
    return read_candles_csv(SHARED / "data/market/BTC_USDT-1m.csv.gz")[:3000]


@pytest.fixture
async def make_sim(btc_candles: list[Any]) -> AsyncIterator[SimFactory]:
    """Start simulators (fast pings and pushes unless told otherwise); all are stopped after the test."""
    started: list[SimulatorServer] = []

    async def factory(**kw: Any) -> SimulatorServer:
        kw.setdefault("ping_interval_s", 0.5)
        kw.setdefault("push_interval_s", 0.1)
        kw.setdefault("config_interval_s", 0.5)
        server = SimulatorServer([MarketSpec(SYM, btc_candles)], api_key=KEY, api_secret=SECRET, **kw)
        await server.start()
        started.append(server)
        return server

    yield factory
    for server in started:
        await server.stop()


def client_for(sim: SimulatorServer, **kw: Any) -> BingxRestClient:
    """A REST client with the simulator's keys (a short lookup delay unless told otherwise)."""
    kw.setdefault("order_lookup_delay_s", 0.1)
    return BingxRestClient(rest_url=sim.rest_url, api_key=KEY, api_secret=SECRET, **kw)
