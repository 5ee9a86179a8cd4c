"""Market data from any exchange ccxt knows, through ``ccxt.async_support``.

Symbols arrive in BingX spelling and are mapped to ccxt's unified perpetual symbol
(``BTC-USDT`` -> ``BTC/USDT:USDT``). ccxt's own throttler (``enableRateLimit``) keeps requests
within the exchange's published rate; network-type failures of these read-only requests are
retried with backoff, anything else becomes a :class:`DataProviderError` with ccxt's message.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any, TypeVar

import ccxt.async_support as ccxt_async
from ccxt.base.decimal_to_precision import DECIMAL_PLACES, TICK_SIZE

from engine.market.candle import ONE_MINUTE_MS, Candle

from .paging import fetch_range
from .providers import (
    ContractInfo,
    DataProviderError,
    UnknownSymbolError,
    UnsupportedIntervalError,
    valid_candle,
)
from .symbols import SymbolError, from_ccxt_symbol, to_ccxt_symbol

log = logging.getLogger(__name__)

T = TypeVar("T")
DEFAULT_PAGE_LIMIT = 500
MAX_PAGE_LIMIT = 1000  # ccxt caps most exchanges' kline pages at or below this anyway


class CcxtProvider:
    """:class:`~engine.data.providers.MarketDataProvider` over one ccxt async exchange instance."""

    def __init__(self, exchange: Any, *, page_limit: int | None = None, max_retries: int = 3,
                 backoff_base_s: float = 0.5, backoff_max_s: float = 8.0) -> None:
        self.exchange = exchange
        self.name: str = str(exchange.id)
        self.page_limit = max(1, min(page_limit or _advertised_page_limit(exchange), MAX_PAGE_LIMIT))
        self._max_retries = max_retries
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._markets_lock = asyncio.Lock()
        self.rejected = 0  # candles dropped as invalid (logged)

    @classmethod
    def create(cls, exchange_id: str, *, request_timeout_s: float = 10.0, **kwargs: Any) -> CcxtProvider:
        """A provider for ccxt exchange ``exchange_id`` (e.g. ``binanceusdm``, ``kucoinfutures``), no API keys."""
        if exchange_id not in ccxt_async.exchanges:
            raise DataProviderError(f"unknown exchange {exchange_id!r}: use bingx or a ccxt exchange id "
                                    f"(binanceusdm, kucoinfutures, bybit, okx, ...)")
        exchange_cls = getattr(ccxt_async, exchange_id)
        exchange = exchange_cls({"enableRateLimit": True, "timeout": int(request_timeout_s * 1000),
                                 "options": {"defaultType": "swap"}})
        return cls(exchange, **kwargs)

    def __repr__(self) -> str:
        return f"CcxtProvider({self.name!r})"

    # --- helpers ----------------------------------------------------------------------------------

    async def _call(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        """Run one read-only ccxt call; retry network-type failures, translate the rest."""
        attempt = 0
        while True:
            try:
                return await fn()
            except ccxt_async.BadSymbol as exc:
                raise UnknownSymbolError(f"{self.name}: {what}: {exc}") from None
            except (ccxt_async.NetworkError, ccxt_async.ExchangeNotAvailable) as exc:
                # NetworkError covers timeouts, DDoS protection and rate-limit answers: all safe to repeat.
                attempt += 1
                if attempt > self._max_retries:
                    raise DataProviderError(f"{self.name}: {what}: {type(exc).__name__}: {exc}") from None
                delay = min(self._backoff_max_s, self._backoff_base_s * 2 ** (attempt - 1)) * random.uniform(0.5, 1)
                log.warning("%s %s failed (%s); retry %d/%d in %.2f s", self.name, what, type(exc).__name__,
                            attempt, self._max_retries, delay)
                await asyncio.sleep(delay)
            except ccxt_async.BaseError as exc:
                raise DataProviderError(f"{self.name}: {what}: {type(exc).__name__}: {exc}") from None

    async def _markets(self, reload: bool = False) -> dict[str, Any]:
        async with self._markets_lock:  # one load for concurrent first callers
            if reload or not self.exchange.markets:
                await self._call("load markets", lambda: self.exchange.load_markets(reload))
        return self.exchange.markets or {}

    async def _market_symbol(self, symbol: str) -> str:
        try:
            unified = to_ccxt_symbol(symbol)
        except SymbolError as exc:
            raise UnknownSymbolError(str(exc)) from None
        markets = await self._markets()
        market = markets.get(unified)
        if market is None or not market.get("swap"):
            raise UnknownSymbolError(f"{self.name} lists no perpetual {unified} (from {symbol})")
        return unified

    # --- interface --------------------------------------------------------------------------------

    def interval_ms(self, interval: str) -> int:
        """Length of ``interval`` if the exchange serves it (``1M`` is refused: no fixed length)."""
        timeframes = self.exchange.timeframes or {}
        if interval == "1M" or interval not in timeframes:
            raise UnsupportedIntervalError(
                f"{self.name} has no fixed-length kline interval {interval!r}; it offers "
                f"{', '.join(k for k in timeframes if k != '1M') or 'none'}")
        return int(self.exchange.parse_timeframe(interval) * 1000)

    async def server_time_ms(self) -> int:
        """The exchange's clock when it publishes one, else the local clock."""
        if self.exchange.has.get("fetchTime"):
            value = await self._call("fetch time", self.exchange.fetch_time)
            if isinstance(value, (int, float)) and value > 0:
                return int(value)
        return int(self.exchange.milliseconds())

    async def check_symbol(self, symbol: str) -> None:
        """Raise :class:`UnknownSymbolError` unless the exchange lists the perpetual."""
        await self._market_symbol(symbol)

    async def fetch_klines(self, symbol: str, interval: str, start_ms: int, end_ms: int, limit: int) -> list[Candle]:
        """One ``fetch_ohlcv`` request from ``start_ms``; rows outside ``[start_ms, end_ms)`` are dropped."""
        self.interval_ms(interval)
        unified = await self._market_symbol(symbol)
        count = max(1, min(limit, self.page_limit))
        rows = await self._call(f"klines {unified} {interval}",
                                lambda: self.exchange.fetch_ohlcv(unified, interval, since=start_ms, limit=count))
        candles: list[Candle] = []
        for row in rows or []:
            candle = _candle(row)
            if candle is None:
                self.rejected += 1
                log.warning("rejected an unreadable %s candle %r", self.name, row, extra={"symbol": symbol})
                continue
            if start_ms <= candle.open_time_ms < end_ms:
                candles.append(candle)
        return candles

    async def fetch_candles(self, symbol: str, start_ms: int, end_ms: int) -> list[Candle]:
        """Closed 1m candles in ``[start_ms, end_ms)`` (``CandleSource`` for the feed)."""

        async def page(lo: int, hi: int, limit: int) -> list[Candle]:
            return await self.fetch_klines(symbol, "1m", lo, hi, limit)

        return await fetch_range(page, start_ms, end_ms, ONE_MINUTE_MS, self.page_limit)

    async def list_contracts(self) -> list[ContractInfo]:
        """Every perpetual (swap) market, reloaded from the exchange."""
        markets = await self._markets(reload=True)
        mode = self.exchange.precisionMode
        out = [self._contract(m, mode) for m in markets.values() if m.get("swap")]
        return sorted(out, key=lambda c: c.symbol)

    async def close(self) -> None:
        """Close ccxt's HTTP session."""
        await self.exchange.close()

    def _contract(self, m: dict[str, Any], mode: int) -> ContractInfo:
        try:
            symbol = from_ccxt_symbol(m["symbol"])
        except SymbolError:
            symbol = str(m["symbol"])  # inverse or unusual: keep ccxt's spelling
        precision = m.get("precision") or {}
        limits = m.get("limits") or {}
        leverage = (limits.get("leverage") or {}).get("max")
        return ContractInfo(
            exchange=self.name, symbol=symbol, exchange_symbol=str(m.get("id")), base=str(m.get("base")),
            quote=str(m.get("quote")), settle=str(m.get("settle")),
            tick_size=_step(precision.get("price"), mode), step_size=_step(precision.get("amount"), mode),
            min_qty=_dec((limits.get("amount") or {}).get("min")),
            min_notional=_dec((limits.get("cost") or {}).get("min")),
            max_leverage=int(leverage) if leverage else None, contract_size=_dec(m.get("contractSize")),
            maker_fee=_dec(m.get("maker")), taker_fee=_dec(m.get("taker")), active=m.get("active") is not False,
            status="trading" if m.get("active") is not False else "inactive",
        )


def _advertised_page_limit(exchange: Any) -> int:
    """The kline page size ccxt documents for the exchange's linear swaps, else a safe default."""
    try:
        limit = exchange.features["swap"]["linear"]["fetchOHLCV"]["limit"]
    except (KeyError, TypeError):
        return DEFAULT_PAGE_LIMIT
    return int(limit) if isinstance(limit, (int, float)) and limit > 0 else DEFAULT_PAGE_LIMIT


def _candle(row: Any) -> Candle | None:
    try:
        t, o, h, lo, c, v = row[:6]
        candle = Candle(int(t), float(o), float(h), float(lo), float(c), float(v))
    except (TypeError, ValueError):
        return None
    return candle if valid_candle(candle) else None


def _dec(value: Any) -> Decimal | None:
    if value is None:
        return None
    try:
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value))
    except ArithmeticError:
        return None
    return number.normalize() if number.is_finite() else None


def _step(value: Any, mode: int) -> Decimal | None:
    """A price/amount precision as a step: ccxt gives a tick size or a number of decimal places."""
    number = _dec(value)
    if number is None:
        return None
    if mode == TICK_SIZE:
        return number
    if mode == DECIMAL_PLACES:
        return Decimal(1).scaleb(-int(number))
    return None  # significant digits: no fixed step
