"""Contract discovery for BingX (through the project's client, against the simulator) and ``doctor --contracts``."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from bot.config import load_config
from engine.data.bingx_provider import BingxProvider
from engine.data.cli import doctor_contracts
from engine.data.contracts import render_contracts
from engine.data.providers import ContractInfo
from engine.exchange.bingx.rest import BingxRestClient
from engine.market.candle import read_candles_csv
from engine.simulator import MarketSpec, SimulatorServer

MARKET = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "market"


@pytest.fixture
async def sim() -> AsyncIterator[SimulatorServer]:
    btc = read_candles_csv(MARKET / "BTC_USDT-1m.csv.gz")[:100]
    nano = read_candles_csv(MARKET / "NANO_USDT-1m.csv.gz")[:100]
    server = SimulatorServer([MarketSpec("BTC-USDT", btc), MarketSpec("NANO-USDT", nano, min_notional=Decimal(5))],
                             paused=True, warmup_minutes=10, start_ms=btc[50].open_time_ms)
    await server.start()
    yield server
    await server.stop()


async def test_bingx_contracts_have_rules(sim: SimulatorServer) -> None:
    provider = BingxProvider(BingxRestClient(rest_url=sim.rest_url, api_key="", api_secret=""), owns_client=True)
    try:
        contracts = {c.symbol: c for c in await provider.list_contracts()}
    finally:
        await provider.close()
    assert set(contracts) == {"BTC-USDT", "NANO-USDT"}
    btc, nano = contracts["BTC-USDT"], contracts["NANO-USDT"]
    assert btc.tick_size == Decimal("0.1") and btc.step_size == Decimal("0.0001") and btc.max_leverage == 125
    assert nano.tick_size == Decimal("0.0001") and nano.min_notional == Decimal(5) and nano.max_leverage == 50
    assert btc.active and btc.status == "trading"
    assert ContractInfo.from_json(btc.to_json()) == btc


async def test_doctor_contracts_prints_the_configured_symbols_and_caches_for_an_hour(
        sim: SimulatorServer, tmp_path: Path) -> None:
    config = load_config(None, env={}, overrides={"exchange": {"rest_url": sim.rest_url},
                                                  "symbols": ["BTC-USDT", "DOGE-USDT"]})
    out = io.StringIO()
    code = await doctor_contracts(config, cache_dir=tmp_path, out=out)
    text = out.getvalue()
    assert code == 1  # DOGE-USDT is configured but not listed
    assert "bingx: 2 perpetual contract(s), 1 shown" in text
    assert "BTC-USDT" in text and "0.1" in text and "125x" in text and "NANO-USDT" not in text
    assert "not listed on bingx: DOGE-USDT" in text
    assert (tmp_path / "contracts-bingx.json").exists()

    await sim.stop()  # the exchange is gone: within the hour the cached list still answers
    out = io.StringIO()
    assert await doctor_contracts(config, cache_dir=tmp_path, symbols=(), out=out) == 0
    assert "NANO-USDT" in out.getvalue() and "min ago" in out.getvalue()
    out = io.StringIO()
    assert await doctor_contracts(config, cache_dir=tmp_path, refresh=True, out=out) == 1
    assert "cannot load the contract list" in out.getvalue()


def test_render_lists_every_contract_when_no_symbol_is_given() -> None:
    info = ContractInfo(exchange="x", symbol="BTC-USDT", exchange_symbol="BTCUSDT", base="BTC", quote="USDT",
                        settle="USDT", tick_size=Decimal("0.1"), step_size=None, min_qty=None, min_notional=None,
                        max_leverage=None, contract_size=None, maker_fee=None, taker_fee=None, active=False)
    text = render_contracts("x", [info])
    assert text.splitlines()[0] == "x: 1 perpetual contract(s)"
    assert "BTCUSDT" in text and "inactive" in text and " - " in text
