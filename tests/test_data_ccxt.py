"""The ccxt path (``binanceusdm``) against a local Binance-futures stand-in on 127.0.0.1: no network."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from pathlib import Path

import ccxt.async_support as ccxt_async
import pytest

from engine.data.ccxt_provider import CcxtProvider
from engine.data.cli import doctor_contracts
from engine.data.contracts import ContractDirectory
from engine.data.download import DownloadRequest, download_klines
from engine.data.paging import Page
from engine.data.providers import (
    DataProviderError,
    UnknownSymbolError,
    UnsupportedIntervalError,
)
from engine.market.candle import Candle, read_candles_csv

from tests.data_fakes import FakeBinanceFutures, FakeMarket

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
BTC = SHARED / "data/market/BTC_USDT-1m.csv.gz"
N = 3000


@pytest.fixture(scope="module")
def candles() -> list[Candle]:
    return read_candles_csv(BTC)[:N]


@pytest.fixture(scope="module")
def source_lines() -> list[str]:
    with gzip.open(BTC, "rt", encoding="utf-8") as fh:
        return fh.read().splitlines()[: N + 1]


@pytest.fixture
async def fake(candles: list[Candle]) -> AsyncIterator[FakeBinanceFutures]:
    eth = read_candles_csv(SHARED / "data/market/ETH_USDT-1m.csv.gz")[:10]
    server = FakeBinanceFutures([FakeMarket("BTCUSDT", "BTC", "USDT", candles),
                                 FakeMarket("ETHUSDT", "ETH", "USDT", eth, tick="0.01", min_notional="20")],
                                now_ms=candles[-1].open_time_ms + 30_000)  # the last candle is still forming
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def provider(fake: FakeBinanceFutures) -> AsyncIterator[CcxtProvider]:
    # ccxt's throttler stays on; its 50 ms base interval is shortened only to keep the suite fast.
    exchange = ccxt_async.binanceusdm({"enableRateLimit": True, "rateLimit": 10})
    fake.point(exchange)
    prov = CcxtProvider(exchange, backoff_base_s=0.01, backoff_max_s=0.02)
    yield prov
    await prov.close()


async def test_fetch_candles_maps_the_symbol_and_pages(provider: CcxtProvider, fake: FakeBinanceFutures,
                                                       candles: list[Candle]) -> None:
    got = await provider.fetch_candles("BTC-USDT", candles[100].open_time_ms, candles[1600].open_time_ms)
    assert got == candles[100:1600]
    requests = fake.kline_requests()
    assert {r["symbol"] for r in requests} == {"BTCUSDT"} and len(requests) >= 3  # 500 a page
    assert all(int(r["limit"]) <= 500 for r in requests)


async def test_download_through_ccxt_equals_the_source(provider: CcxtProvider, candles: list[Candle],
                                                       source_lines: list[str], tmp_path: Path) -> None:
    out = tmp_path / "binance-btc.csv.gz"
    request = DownloadRequest("BTC-USDT", "1m", candles[0].open_time_ms, candles[-1].open_time_ms + 60_000, out)
    result = await download_klines(provider, request, progress=False)
    # The forming last candle is not written; everything before it is, exactly.
    with gzip.open(out, "rt", encoding="utf-8") as fh:
        assert fh.read().splitlines() == source_lines[:N]
    assert result.end_ms == candles[-1].open_time_ms and result.gaps == []


async def test_transient_failures_are_retried_and_an_outage_resumes(provider: CcxtProvider, fake: FakeBinanceFutures,
                                                                    candles: list[Candle], source_lines: list[str],
                                                                    tmp_path: Path) -> None:
    out = tmp_path / "b.csv.gz"
    request = DownloadRequest("BTC-USDT", "1m", candles[0].open_time_ms, candles[2500].open_time_ms, out)
    fake.fail_klines = 2  # two 503s: retried, the download still completes
    pages: list[Page] = []

    def go_down_after_two(page: Page) -> None:
        pages.append(page)
        if len(pages) == 2:
            fake.fail_klines = 100

    with pytest.raises(Exception, match="rerun the same command"):
        await download_klines(provider, request, progress=False, on_page=go_down_after_two)
    fake.fail_klines = 0
    result = await download_klines(provider, request, progress=False)
    assert result.reused == 1000 and result.fetched == 1500
    with gzip.open(out, "rt", encoding="utf-8") as fh:
        assert fh.read().splitlines() == source_lines[:2501]


async def test_unknown_symbol_and_interval(provider: CcxtProvider, candles: list[Candle]) -> None:
    with pytest.raises(UnknownSymbolError, match="DOGE/USDT:USDT"):
        await provider.check_symbol("DOGE-USDT")
    with pytest.raises(UnknownSymbolError, match="spot symbol"):
        await provider.check_symbol("BTC/USDT")
    with pytest.raises(UnsupportedIntervalError):
        provider.interval_ms("7m")
    assert provider.interval_ms("1h") == 3_600_000


async def test_contracts_carry_the_exchange_rules(provider: CcxtProvider) -> None:
    contracts = {c.symbol: c for c in await provider.list_contracts()}
    assert set(contracts) == {"BTC-USDT", "ETH-USDT"}
    btc = contracts["BTC-USDT"]
    assert btc.exchange_symbol == "BTCUSDT" and btc.settle == "USDT"
    assert str(btc.tick_size) == "0.1" and str(btc.step_size) == "0.001"
    assert str(btc.min_qty) == "0.001" and btc.min_notional == 100 and btc.active


async def test_contract_list_is_cached_for_an_hour(provider: CcxtProvider, fake: FakeBinanceFutures,
                                                   tmp_path: Path) -> None:
    now = [1_000_000.0]
    directory = ContractDirectory.for_provider(provider, cache_dir=tmp_path, clock=lambda: now[0])
    await directory.contracts()
    loads = len([p for p, _ in fake.requests if p.endswith("exchangeInfo")])
    now[0] += 3599
    assert (await directory.get("BTC-USDT")) is not None
    # a second process within the hour: the file cache answers
    other = ContractDirectory.for_provider(provider, cache_dir=tmp_path, clock=lambda: now[0])
    assert [c.symbol for c in await other.contracts()] == ["BTC-USDT", "ETH-USDT"]
    assert len([p for p, _ in fake.requests if p.endswith("exchangeInfo")]) == loads
    now[0] += 2
    await directory.contracts()
    assert len([p for p, _ in fake.requests if p.endswith("exchangeInfo")]) == loads + 1
    (tmp_path / "contracts-binanceusdm.json").write_text("{damaged")
    assert len(await ContractDirectory.for_provider(provider, cache_dir=tmp_path,
                                                    clock=lambda: now[0]).contracts()) == 2


async def test_doctor_contracts_refuses_an_unknown_exchange() -> None:
    import io

    buf = io.StringIO()
    assert await doctor_contracts(None, exchange="nosuchexchange", out=buf) == 2
    assert "unknown exchange" in buf.getvalue()


async def test_network_failure_is_a_provider_error(fake: FakeBinanceFutures) -> None:
    exchange = ccxt_async.binanceusdm({"enableRateLimit": True, "timeout": 2000})
    fake.point(exchange)
    await fake.stop()  # nothing listens any more
    prov = CcxtProvider(exchange, max_retries=1, backoff_base_s=0.01)
    try:
        with pytest.raises(DataProviderError, match="binanceusdm"):
            await prov.check_symbol("BTC-USDT")
    finally:
        await prov.close()
