"""BingX market data through the project's own :class:`~engine.exchange.bingx.rest.BingxRestClient`.

Requests go through the client, so they share its rate limiter (the klines endpoint budget),
its retry/backoff rules and its hourly contract cache.
"""

from __future__ import annotations

import logging
from decimal import Decimal

from engine.exchange.bingx.errors import BingxError, OrderValidationError
from engine.exchange.bingx.models import Contract
from engine.exchange.bingx.rest import INTERVAL_MS, MAX_KLINE_PAGE, BingxRestClient
from engine.market.candle import ONE_MINUTE_MS, Candle

from .paging import fetch_range
from .providers import (
    BINGX,
    ContractInfo,
    DataProviderError,
    UnknownSymbolError,
    UnsupportedIntervalError,
    valid_candle,
)
from .symbols import SymbolError, to_bingx_symbol

log = logging.getLogger(__name__)


class BingxProvider:
    """:class:`~engine.data.providers.MarketDataProvider` for BingX USDT-M perpetuals."""

    name = BINGX

    def __init__(self, client: BingxRestClient, *, owns_client: bool = False,
                 page_limit: int = MAX_KLINE_PAGE) -> None:
        self.client = client
        self._owns_client = owns_client
        self.page_limit = max(1, min(page_limit, MAX_KLINE_PAGE))
        self.rejected = 0  # candles dropped as invalid (logged)

    def __repr__(self) -> str:
        return f"BingxProvider({self.client!r})"

    def interval_ms(self, interval: str) -> int:
        """Length of a BingX kline interval; ``1M`` (no fixed length) is refused."""
        if interval == "1M" or interval not in INTERVAL_MS:
            raise UnsupportedIntervalError(
                f"BingX has no fixed-length kline interval {interval!r}; use one of "
                f"{', '.join(k for k in INTERVAL_MS if k != '1M')}")
        return INTERVAL_MS[interval]

    async def server_time_ms(self) -> int:
        """BingX server time (the simulator's replay clock when pointed at it)."""
        try:
            return await self.client.server_time()
        except BingxError as exc:
            raise DataProviderError(f"bingx: cannot read the server time: {exc}") from exc

    async def check_symbol(self, symbol: str) -> None:
        """Raise :class:`UnknownSymbolError` unless BingX lists ``symbol`` (uses the hourly contract cache)."""
        try:
            await self.client.contract(_bingx(symbol))
        except OrderValidationError as exc:
            raise UnknownSymbolError(f"bingx: {exc}") from None
        except BingxError as exc:
            raise DataProviderError(f"bingx: cannot load the contract list: {exc}") from exc

    async def fetch_klines(self, symbol: str, interval: str, start_ms: int, end_ms: int, limit: int) -> list[Candle]:
        """One ``/v3/quote/klines`` request; ``endTime`` is ``end_ms - 1`` whatever BingX's inclusivity."""
        self.interval_ms(interval)
        try:
            rows = await self.client.klines(_bingx(symbol), interval, start_ms, end_ms - 1, min(limit, self.page_limit))
        except BingxError as exc:
            raise DataProviderError(f"bingx klines {symbol} {interval}: {exc}") from exc
        candles = []
        for row in rows:
            candle = row.to_candle()
            if valid_candle(candle):
                candles.append(candle)
            else:
                self.rejected += 1
                log.warning("rejected an invalid BingX candle %s", candle, extra={"symbol": symbol})
        return candles

    async def fetch_candles(self, symbol: str, start_ms: int, end_ms: int) -> list[Candle]:
        """Closed 1m candles in ``[start_ms, end_ms)`` (``CandleSource`` for the feed's warm-up and backfill)."""

        async def page(lo: int, hi: int, limit: int) -> list[Candle]:
            return await self.fetch_klines(symbol, "1m", lo, hi, limit)

        return await fetch_range(page, start_ms, end_ms, ONE_MINUTE_MS, self.page_limit)

    async def list_contracts(self) -> list[ContractInfo]:
        """Every BingX USDT-M contract (one request; also refreshes the client's rules cache)."""
        try:
            contracts = await self.client.contracts()
        except BingxError as exc:
            raise DataProviderError(f"bingx: cannot load the contract list: {exc}") from exc
        return [contract_info(c) for c in contracts]

    async def close(self) -> None:
        """Close the client if this provider created it."""
        if self._owns_client:
            await self.client.close()


def _bingx(symbol: str) -> str:
    try:
        return to_bingx_symbol(symbol)
    except SymbolError as exc:
        raise UnknownSymbolError(str(exc)) from None


def contract_info(c: Contract) -> ContractInfo:
    """A BingX :class:`Contract` in exchange-neutral terms."""
    base, _, quote = c.symbol.partition("-")
    levs = [x for x in (c.max_long_leverage, c.max_short_leverage) if x]
    return ContractInfo(
        exchange=BINGX, symbol=c.symbol, exchange_symbol=c.symbol, base=c.asset or base, quote=quote or c.currency,
        settle=c.currency, tick_size=c.tick_size, step_size=c.step_size, min_qty=c.min_qty or None,
        min_notional=c.min_notional or None, max_leverage=max(levs) if levs else None, contract_size=Decimal(1),
        maker_fee=c.maker_fee_rate, taker_fee=c.taker_fee_rate, active=c.is_online and c.api_open_allowed,
        status={1: "trading", 25: "close-only", 5: "pre-online", 0: "offline"}.get(c.status, f"status {c.status}"),
    )
