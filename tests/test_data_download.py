"""``trading-bot download`` against the BingX simulator over real sockets on 127.0.0.1.

The simulator replays a file of ``shared/data/market``; a download of days of 1m candles,
many pages long, must reproduce that file's text exactly, resume after an interruption
without duplicates or holes, and report the exchange's real gap (BTC_USDT has a 284-minute
outage on 2021-04-25).
"""

from __future__ import annotations

import asyncio
import gzip
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from engine.data.bingx_provider import BingxProvider
from engine.data.csvfiles import partial_path
from engine.data.download import DownloadError, DownloadRequest, download_klines
from engine.data.paging import Page
from engine.data.providers import UnknownSymbolError
from engine.exchange.bingx.rest import BingxRestClient
from engine.market.candle import Candle, read_candles_csv
from engine.simulator import MarketSpec, SimulatorServer

PROJECT = Path(__file__).resolve().parents[1]
SOURCE = PROJECT.parent / "shared" / "data" / "market" / "BTC_USDT-1m.csv.gz"
SYM = "BTC-USDT"
N_SERVED = 8000  # ~5.5 days replayed
N_WANTED = 7000  # ~4.9 days downloaded: 8 pages of 1000, the 2021-04-25 outage inside
PAGE = 500  # smaller pages in most tests: more pages, same code path


@pytest.fixture(scope="module")
def source_lines() -> list[str]:
    with gzip.open(SOURCE, "rt", encoding="utf-8") as fh:
        return fh.read().splitlines()[: N_SERVED + 1]


@pytest.fixture(scope="module")
def candles() -> list[Candle]:
    return read_candles_csv(SOURCE)[:N_SERVED]


@pytest.fixture
async def sim(candles: list[Candle]) -> AsyncIterator[SimulatorServer]:
    # Precisions of the source (Binance BTCUSDT: 0.01 price tick, 1e-6 volume step) so no value is rounded.
    server = SimulatorServer([MarketSpec(SYM, candles, price_precision=2, quantity_precision=6)], paused=True,
                             start_ms=candles[-1].open_time_ms)
    await server.start()
    yield server
    await server.stop()


ProviderFactory = Callable[..., BingxProvider]


@pytest.fixture
async def make_provider(sim: SimulatorServer) -> AsyncIterator[ProviderFactory]:
    made: list[BingxProvider] = []

    def factory(page_limit: int = PAGE, **kw: Any) -> BingxProvider:
        kw.setdefault("backoff_base_s", 0.01)
        kw.setdefault("backoff_max_s", 0.02)
        client = BingxRestClient(rest_url=sim.rest_url, api_key="", api_secret="", **kw)
        provider = BingxProvider(client, owns_client=True, page_limit=page_limit)
        made.append(provider)
        return provider

    yield factory
    for provider in made:
        await provider.close()


def text_of(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return fh.read().splitlines()


def wanted(candles: list[Candle], out: Path, n: int = N_WANTED, **kw: Any) -> DownloadRequest:
    return DownloadRequest(SYM, "1m", candles[0].open_time_ms, candles[n].open_time_ms, out, **kw)


async def test_multi_day_download_equals_the_source_file(make_provider: ProviderFactory, candles: list[Candle],
                                                         source_lines: list[str], tmp_path: Path) -> None:
    out = tmp_path / "btc.csv.gz"
    pages: list[Page] = []
    result = await download_klines(make_provider(page_limit=1000), wanted(candles, out), progress=False,
                                   on_page=pages.append)
    assert text_of(out) == source_lines[: N_WANTED + 1]  # header + rows, the file's exact text
    assert result.candles == result.fetched == N_WANTED and result.reused == 0
    assert len(pages) >= 8 and result.requests == len(pages)
    # The source's real outage is reported, nothing else.
    outage_start = candles[6198].open_time_ms + 60_000
    assert [(g.start_ms, g.missing) for g in result.gaps] == [(outage_start, 284)]
    assert "284 candles missing" in result.gaps[0].describe()
    assert not partial_path(out).exists()
    # The backtest/simulate reader takes it as it is.
    assert read_candles_csv(out) == candles[:N_WANTED]


async def test_interrupted_download_resumes_without_duplicates_or_gaps(
        sim: SimulatorServer, make_provider: ProviderFactory, candles: list[Candle], source_lines: list[str],
        tmp_path: Path) -> None:
    out = tmp_path / "btc.csv.gz"
    first_pages: list[Page] = []

    def break_after_five(page: Page) -> None:
        first_pages.append(page)
        if len(first_pages) == 5:
            sim.faults.rest_5xx_fraction = 1.0  # the exchange goes down: every request now fails

    with pytest.raises(DownloadError, match="rerun the same command to resume"):
        await download_klines(make_provider(max_retries=1), wanted(candles, out), progress=False,
                              on_page=break_after_five)
    assert not out.exists()  # never a half-written output
    kept = partial_path(out).read_text().splitlines()[1:]
    assert len(kept) == 5 * PAGE and kept == source_lines[1: 5 * PAGE + 1]

    sim.faults.rest_5xx_fraction = 0.0
    second_pages: list[Page] = []
    result = await download_klines(make_provider(), wanted(candles, out), progress=False, on_page=second_pages.append)
    assert text_of(out) == source_lines[: N_WANTED + 1]
    assert result.reused == 5 * PAGE and result.fetched == N_WANTED - 5 * PAGE
    # Only what was missing was asked for.
    assert min(p.start_ms for p in second_pages) == candles[5 * PAGE].open_time_ms
    assert len(second_pages) < len(first_pages) + 10
    assert [g.missing for g in result.gaps] == [284]
    assert not partial_path(out).exists()


async def test_cancelled_download_resumes(make_provider: ProviderFactory, candles: list[Candle],
                                          source_lines: list[str], tmp_path: Path) -> None:
    out = tmp_path / "btc.csv.gz"
    seen: list[Page] = []
    started = asyncio.Event()

    def note(page: Page) -> None:
        seen.append(page)
        if len(seen) == 3:
            started.set()

    task = asyncio.create_task(download_klines(make_provider(), wanted(candles, out), progress=False, on_page=note))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    kept = partial_path(out).read_text().splitlines()[1:]
    assert 3 * PAGE <= len(kept) < N_WANTED
    result = await download_klines(make_provider(), wanted(candles, out), progress=False)
    assert text_of(out) == source_lines[: N_WANTED + 1]
    assert result.reused == len(kept)


async def test_torn_partial_line_is_dropped_and_refetched(make_provider: ProviderFactory, candles: list[Candle],
                                                          source_lines: list[str], tmp_path: Path) -> None:
    out = tmp_path / "btc.csv.gz"
    partial = partial_path(out)
    # What a kill in the middle of a write leaves: complete rows, then half a row without newline.
    partial.write_text(f"# trading-bot download exchange=bingx symbol={SYM} interval=1m\n"
                       + "\n".join(source_lines[1:101]) + "\n" + source_lines[101][:17])
    result = await download_klines(make_provider(), wanted(candles, out, n=1000), progress=False)
    assert result.reused == 100 and result.fetched == 900
    assert text_of(out) == source_lines[:1001]


async def test_partial_file_of_another_download_is_not_mixed_in(make_provider: ProviderFactory,
                                                                 candles: list[Candle], tmp_path: Path) -> None:
    out = tmp_path / "btc.csv.gz"
    partial_path(out).write_text("# trading-bot download exchange=bingx symbol=ETH-USDT interval=1m\n")
    with pytest.raises(DownloadError, match="symbol=ETH-USDT.*--fresh"):
        await download_klines(make_provider(), wanted(candles, out, n=100), progress=False)
    result = await download_klines(make_provider(), wanted(candles, out, n=100, fresh=True), progress=False)
    assert result.candles == 100


async def test_rerun_and_extension_reuse_the_existing_output(make_provider: ProviderFactory, candles: list[Candle],
                                                             source_lines: list[str], tmp_path: Path) -> None:
    out = tmp_path / "btc.csv.gz"
    await download_klines(make_provider(), wanted(candles, out, n=1200), progress=False)
    pages: list[Page] = []
    result = await download_klines(make_provider(), wanted(candles, out, n=2000), progress=False, on_page=pages.append)
    assert result.reused == 1200 and result.fetched == 800
    assert all(p.start_ms >= candles[1200].open_time_ms for p in pages)
    assert text_of(out) == source_lines[:2001]


async def test_range_beyond_the_exchange_clock_is_clipped_to_closed_candles(
        sim: SimulatorServer, make_provider: ProviderFactory, candles: list[Candle], tmp_path: Path) -> None:
    out = tmp_path / "btc.csv"
    await sim.advance(steps=3)  # the clock moves into the last candle: it is forming, not closed
    now = await make_provider().server_time_ms()
    request = DownloadRequest(SYM, "1m", candles[-200].open_time_ms, now + 3_600_000, out)
    result = await download_klines(make_provider(), request, progress=False)
    assert result.end_ms == now - now % 60_000 < result.requested_end_ms
    times = [c.open_time_ms for c in read_candles_csv(out)]
    assert times[-1] < now - now % 60_000 and times == sorted(set(times))
    assert result.gaps == []  # nothing beyond the clock counted as missing


async def test_unknown_symbol_is_a_clear_error(make_provider: ProviderFactory, candles: list[Candle],
                                               tmp_path: Path) -> None:
    request = DownloadRequest("NOPE-USDT", "1m", candles[0].open_time_ms, candles[10].open_time_ms,
                              tmp_path / "x.csv.gz")
    with pytest.raises(UnknownSymbolError, match="NOPE-USDT"):
        await download_klines(make_provider(), request, progress=False)
    assert not (tmp_path / "x.csv.gz").exists()


async def test_provider_is_a_candle_source_for_the_feed(make_provider: ProviderFactory,
                                                        candles: list[Candle]) -> None:
    from engine.market.feed import MarketFeed

    class Sink:
        def __init__(self) -> None:
            self.warm: list[Candle] = []

        def on_candle(self, candle: Candle) -> None:  # pragma: no cover - not reached in warm-up
            raise AssertionError("warm-up must not trade")

        def on_warmup_candle(self, candle: Candle) -> None:
            self.warm.append(candle)

    sink = Sink()
    feed = MarketFeed(SYM, sink, source=make_provider(), warmup_candles=1500, backfill_chunk=1000)
    now = candles[-1].open_time_ms + 30_000  # the simulator's clock: candles[-1] is still forming
    assert await feed.warm_up(now) == 1500
    assert sink.warm == candles[-1501:-1]


# --- the command, killed for real -----------------------------------------------------------------


async def test_cli_killed_mid_download_resumes(sim: SimulatorServer, candles: list[Candle],
                                               source_lines: list[str], tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"exchange:\n  rest_url: {sim.rest_url}\nlogging:\n  file: null\n")
    out = tmp_path / "btc.csv.gz"
    args = [sys.executable, "-m", "engine.data.cli", "--symbol", SYM, "--interval", "1m",
            "--from", str(candles[0].open_time_ms), "--to", str(candles[N_WANTED].open_time_ms),
            "--out", str(out), "--config", str(config), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    sim.faults.latency_ms = 150  # slow enough to be killed in the middle
    proc = await asyncio.create_subprocess_exec(*args, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                                stderr=subprocess.PIPE)
    partial = partial_path(out)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if partial.exists() and len(partial.read_text().splitlines()) > 2000:
            break
        await asyncio.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    kept = len(partial.read_text().splitlines()) - 1
    assert 2000 <= kept < N_WANTED and not out.exists()

    sim.faults.latency_ms = 0
    proc = await asyncio.create_subprocess_exec(*args, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                                stderr=subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, stderr.decode()
    assert text_of(out) == source_lines[: N_WANTED + 1]
    assert f"{kept} reused" in stdout.decode() and "284 candles missing" in stderr.decode()


async def test_cli_exit_codes(sim: SimulatorServer, candles: list[Candle], tmp_path: Path) -> None:
    from engine.data.cli import download_command

    out = tmp_path / "b.csv"
    common: dict[str, Any] = {"interval": "1m", "start_ms": candles[0].open_time_ms, "out": out}
    from bot.config import ExchangeConfig

    cfg = ExchangeConfig(rest_url=sim.rest_url)
    # gaps are reported but the download succeeded
    assert await download_command(exchange="bingx", symbol=SYM, end_ms=candles[6300].open_time_ms,
                                  exchange_config=cfg, progress=False, **common) == 0
    assert await download_command(exchange="bingx", symbol=SYM, end_ms=candles[6300].open_time_ms,
                                  exchange_config=cfg, progress=False, fail_on_gaps=True, **common) == 1
    assert await download_command(exchange="nosuchexchange", symbol=SYM, end_ms=candles[10].open_time_ms,
                                  **common) == 2
    assert await download_command(exchange="bingx", symbol="NOPE-USDT", end_ms=candles[10].open_time_ms,
                                  exchange_config=cfg, **common) == 2
    assert await download_command(exchange="bingx", symbol="BTC/USDT", end_ms=candles[10].open_time_ms,
                                  exchange_config=cfg, **common) == 2
    assert await download_command(exchange="bingx", symbol=SYM, interval="7m", start_ms=candles[0].open_time_ms,
                                  end_ms=candles[10].open_time_ms, out=out, exchange_config=cfg) == 2
    sim.faults.rest_5xx_fraction = 1.0
    assert await download_command(exchange="bingx", symbol=SYM, start_ms=candles[7000].open_time_ms,
                                  end_ms=candles[7100].open_time_ms, interval="1m", out=tmp_path / "c.csv",
                                  exchange_config=cfg, progress=False) == 1
