"""The data-provider interface: historical klines (a ``CandleSource``) plus contract discovery.

A :class:`MarketDataProvider` is what the downloader, the feed's warm-up/gap backfill
(through :meth:`MarketDataProvider.fetch_candles`, the ``engine.market.feed.CandleSource``
protocol) and ``doctor --contracts`` use, whatever the exchange behind it:
:class:`~engine.data.bingx_provider.BingxProvider` (the project's own BingX client) or
:class:`~engine.data.ccxt_provider.CcxtProvider` (any ccxt exchange id). Symbols are always
given in BingX spelling (``BTC-USDT``); providers translate them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from engine.market.candle import ONE_MINUTE_MS, Candle

if TYPE_CHECKING:  # pragma: no cover
    from bot.config import ExchangeConfig

BINGX = "bingx"


class DataProviderError(Exception):
    """A market-data request failed (network, exchange error, unreadable answer)."""


class UnknownSymbolError(DataProviderError):
    """The exchange lists no such perpetual contract."""


class UnsupportedIntervalError(DataProviderError, ValueError):
    """The exchange has no klines of that interval (or its length is not fixed, like ``1M``)."""


@dataclass(frozen=True, slots=True)
class ContractInfo:
    """One perpetual contract and its trading rules, in exchange-neutral terms.

    ``symbol`` is the BingX spelling (``BTC-USDT``), ``exchange_symbol`` the exchange's own id
    (``BTCUSDT`` on Binance). Unknown values are ``None``.
    """

    exchange: str
    symbol: str
    exchange_symbol: str
    base: str
    quote: str
    settle: str
    tick_size: Decimal | None
    step_size: Decimal | None
    min_qty: Decimal | None
    min_notional: Decimal | None
    max_leverage: int | None
    contract_size: Decimal | None
    maker_fee: Decimal | None
    taker_fee: Decimal | None
    active: bool
    status: str = ""

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict (Decimals as strings, exact)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = str(value) if isinstance(value, Decimal) else value
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ContractInfo:
        """Inverse of :meth:`to_json`; raises ``ValueError``/``KeyError`` for a damaged record."""
        def dec(key: str) -> Decimal | None:
            value = data.get(key)
            return None if value is None else Decimal(str(value))

        lev = data.get("max_leverage")
        return cls(
            exchange=str(data["exchange"]), symbol=str(data["symbol"]), exchange_symbol=str(data["exchange_symbol"]),
            base=str(data["base"]), quote=str(data["quote"]), settle=str(data["settle"]),
            tick_size=dec("tick_size"), step_size=dec("step_size"), min_qty=dec("min_qty"),
            min_notional=dec("min_notional"), max_leverage=None if lev is None else int(lev),
            contract_size=dec("contract_size"), maker_fee=dec("maker_fee"), taker_fee=dec("taker_fee"),
            active=bool(data["active"]), status=str(data.get("status", "")),
        )


@runtime_checkable
class MarketDataProvider(Protocol):
    """Historical klines and contract listings from one exchange."""

    name: str
    page_limit: int  # candles per request this exchange serves at most

    def interval_ms(self, interval: str) -> int:
        """Length of ``interval`` in ms; raises :class:`UnsupportedIntervalError`."""
        ...

    async def server_time_ms(self) -> int:
        """The exchange's clock (the newest closed candle is decided by it)."""
        ...

    async def check_symbol(self, symbol: str) -> None:
        """Raise :class:`UnknownSymbolError` when the exchange lists no such perpetual."""
        ...

    async def fetch_klines(self, symbol: str, interval: str, start_ms: int, end_ms: int, limit: int) -> list[Candle]:
        """ONE request for candles opening in ``[start_ms, end_ms)`` (at most ``limit``; may return fewer)."""
        ...

    async def fetch_candles(self, symbol: str, start_ms: int, end_ms: int) -> list[Candle]:
        """Every closed 1m candle in ``[start_ms, end_ms)``, paged (the feed's ``CandleSource``)."""
        ...

    async def list_contracts(self) -> list[ContractInfo]:
        """Every perpetual contract the exchange lists, with its rules (one fresh request)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def valid_candle(candle: Candle) -> bool:
    """Whether a candle from an exchange is usable: finite, non-negative, low <= open/close <= high."""
    values = (candle.open, candle.high, candle.low, candle.close, candle.volume)
    if not all(math.isfinite(v) and v >= 0 for v in values):
        return False
    return candle.low <= min(candle.open, candle.close) and max(candle.open, candle.close) <= candle.high


def create_provider(exchange: str, *, exchange_config: ExchangeConfig | None = None,
                    request_timeout_s: float | None = None) -> MarketDataProvider:
    """A provider for ``exchange``: ``"bingx"`` (project client, hosts from ``exchange_config``) or a ccxt id.

    Public market data needs no API key, so none is passed to either side.
    Raises :class:`DataProviderError` for an exchange ccxt does not know.
    """
    name = exchange.strip().lower()
    if name == BINGX:
        from engine.exchange.bingx import BingxRestClient, resolve_urls

        from .bingx_provider import BingxProvider

        testnet = exchange_config.testnet if exchange_config else False
        rest_url, _ = resolve_urls(testnet, exchange_config.rest_url if exchange_config else None)
        timeout = request_timeout_s or (exchange_config.request_timeout_s if exchange_config else 10.0)
        client = BingxRestClient(rest_url=rest_url, api_key="", api_secret="", request_timeout_s=timeout)
        return BingxProvider(client, owns_client=True)
    from .ccxt_provider import CcxtProvider

    return CcxtProvider.create(name, request_timeout_s=request_timeout_s or 10.0)


__all__ = [
    "BINGX", "ONE_MINUTE_MS", "ContractInfo", "DataProviderError", "MarketDataProvider", "UnknownSymbolError",
    "UnsupportedIntervalError", "create_provider", "valid_candle",
]
