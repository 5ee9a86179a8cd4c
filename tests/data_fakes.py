"""A stand-in for Binance USDT-M futures (the ``fapi`` REST API) on 127.0.0.1, for the ccxt path.

Serves the shapes ccxt's ``binanceusdm`` reads: ``/fapi/v1/exchangeInfo``, ``/fapi/v1/time`` and
``/fapi/v1/klines`` (array rows ``[openTime, "o", "h", "l", "c", "v", closeTime, "quoteVolume",
trades, "takerBase", "takerQuote", "0"]``, oldest first, ``limit`` default 500 / max 1500,
``startTime``/``endTime`` inclusive), and Binance's error body ``{"code": -1121, "msg": ...}``.
Candles come from a list (e.g. a file of ``shared/data/market``); the clock is settable.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from aiohttp import web

from engine.market.candle import ONE_MINUTE_MS, Candle


@dataclass
class FakeMarket:
    """One perpetual: its Binance id, candles and rules."""

    symbol: str  # Binance id, e.g. BTCUSDT
    base: str
    quote: str
    candles: list[Candle]
    price_decimals: int = 2
    qty_decimals: int = 6
    tick: str = "0.10"
    step: str = "0.001"
    min_qty: str = "0.001"
    min_notional: str = "100"
    status: str = "TRADING"
    times: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.times = [c.open_time_ms for c in self.candles]

    def info(self) -> dict[str, Any]:
        """The ``exchangeInfo`` symbol entry (documented field set)."""
        return {
            "symbol": self.symbol, "pair": self.symbol, "contractType": "PERPETUAL", "deliveryDate": 4133404800000,
            "onboardDate": 1569398400000, "status": self.status, "maintMarginPercent": "2.5000",
            "requiredMarginPercent": "5.0000", "baseAsset": self.base, "quoteAsset": self.quote,
            "marginAsset": self.quote, "pricePrecision": self.price_decimals, "quantityPrecision": 3,
            "baseAssetPrecision": 8, "quotePrecision": 8, "underlyingType": "COIN", "underlyingSubType": ["PoW"],
            "settlePlan": 0, "triggerProtect": "0.0500", "liquidationFee": "0.012500", "marketTakeBound": "0.05",
            "maxMoveOrderLimit": 10000,
            "filters": [
                {"minPrice": "556.80", "maxPrice": "4529764", "filterType": "PRICE_FILTER", "tickSize": self.tick},
                {"stepSize": self.step, "filterType": "LOT_SIZE", "maxQty": "1000", "minQty": self.min_qty},
                {"stepSize": self.step, "filterType": "MARKET_LOT_SIZE", "maxQty": "120", "minQty": self.min_qty},
                {"limit": 200, "filterType": "MAX_NUM_ORDERS"},
                {"limit": 10, "filterType": "MAX_NUM_ALGO_ORDERS"},
                {"notional": self.min_notional, "filterType": "MIN_NOTIONAL"},
                {"multiplierDown": "0.9500", "multiplierUp": "1.0500", "multiplierDecimal": "4",
                 "filterType": "PERCENT_PRICE"},
            ],
            "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET",
                           "TRAILING_STOP_MARKET"],
            "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
        }

    def row(self, c: Candle) -> list[Any]:
        """A kline row as Binance sends it (prices padded to the symbol's decimals)."""
        p, q = self.price_decimals, self.qty_decimals
        quote_volume = Decimal(repr(c.volume)) * Decimal(repr(c.close))
        return [c.open_time_ms, f"{c.open:.{p}f}", f"{c.high:.{p}f}", f"{c.low:.{p}f}", f"{c.close:.{p}f}",
                f"{c.volume:.{q}f}", c.open_time_ms + ONE_MINUTE_MS - 1, f"{quote_volume:.8f}", 100,
                f"{c.volume / 2:.{q}f}", "0", "0"]


class FakeBinanceFutures:
    """The fake server. ``now_ms`` is its clock; ``fail_klines`` makes the next N kline requests fail."""

    def __init__(self, markets: list[FakeMarket], *, now_ms: int) -> None:
        self.markets = {m.symbol: m for m in markets}
        self.now_ms = now_ms
        self.fail_klines = 0  # next N kline requests answer HTTP 503
        self.requests: list[tuple[str, dict[str, str]]] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        """Listen on 127.0.0.1 with an OS-assigned port."""
        app = web.Application()
        app.router.add_get("/fapi/v1/exchangeInfo", self._exchange_info)
        app.router.add_get("/fapi/v1/time", self._time)
        app.router.add_get("/fapi/v1/klines", self._klines)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()

    def point(self, exchange: Any) -> None:
        """Point a ccxt ``binanceusdm`` instance's API URLs at this server."""
        for key, value in list(exchange.urls["api"].items()):
            if isinstance(value, str):
                exchange.urls["api"][key] = value.replace("https://fapi.binance.com", self.url) \
                    .replace("https://dapi.binance.com", self.url + "/unused-dapi") \
                    .replace("https://api.binance.com", self.url + "/unused-spot")

    def kline_requests(self) -> list[dict[str, str]]:
        """Query parameters of every kline request so far."""
        return [q for path, q in self.requests if path == "/fapi/v1/klines"]

    @staticmethod
    def _error(code: int, msg: str, status: int = 400) -> web.Response:
        return web.json_response({"code": code, "msg": msg}, status=status)

    async def _exchange_info(self, request: web.Request) -> web.Response:
        self.requests.append((request.path, dict(request.query)))
        return web.json_response({
            "timezone": "UTC", "serverTime": self.now_ms, "futuresType": "U_MARGINED",
            "rateLimits": [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400}],
            "exchangeFilters": [], "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
            "symbols": [m.info() for m in self.markets.values()],
        })

    async def _time(self, request: web.Request) -> web.Response:
        self.requests.append((request.path, dict(request.query)))
        return web.json_response({"serverTime": self.now_ms})

    async def _klines(self, request: web.Request) -> web.Response:
        q = dict(request.query)
        self.requests.append((request.path, q))
        if self.fail_klines > 0:
            self.fail_klines -= 1
            return web.Response(status=503, text="<html>503 Service Temporarily Unavailable</html>")
        market = self.markets.get(q.get("symbol", ""))
        if market is None:
            return self._error(-1121, "Invalid symbol.")
        if q.get("interval") != "1m":
            return self._error(-1120, "Invalid interval.")
        try:
            limit = int(q.get("limit", "500"))
            start = int(q["startTime"]) if "startTime" in q else None
            end = int(q["endTime"]) if "endTime" in q else None
        except ValueError:
            return self._error(-1100, "Illegal characters found in a parameter.")
        if not 1 <= limit <= 1500:
            return self._error(-1130, "Data sent for parameter 'limit' is not valid.")
        newest = min(self.now_ms, end if end is not None else self.now_ms)
        hi = bisect.bisect_right(market.times, newest)  # candles opening at or before the newest allowed time
        if start is not None:
            lo = bisect.bisect_left(market.times, start)
            rows = market.candles[lo:min(hi, lo + limit)]
        else:
            rows = market.candles[max(0, hi - limit):hi]
        return web.json_response([market.row(c) for c in rows])
