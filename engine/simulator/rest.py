"""REST API under ``/openApi/...``: routing, authentication, rate limits, faults and the handlers.

Request pipeline (every ``/openApi`` request): injected latency -> injected 5xx (before
processing) -> route lookup (unknown path or method: HTTP 404, code 100400) -> forced
100410 -> rate limits (100410 + ``X-RateLimit-*`` headers) -> API key (100413) ->
signature (100412 missing, 100001 wrong) -> timestamp/recvWindow (100421) -> handler
-> injected 5xx after processing, if switched on.

``X-RateLimit-Requests-Remain`` is the number of requests left in the tightest window
that applies; ``X-RateLimit-Requests-Expire`` is the milliseconds until that window
frees up (the upstream docs name the headers without defining the units).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from aiohttp import web

from . import formats
from .markets import INTERVAL_MS, Market, bucket_end
from .matching import Order
from .protocol import ApiError, dumps, error_body, fmt_dec, fmt_money, ok_body, parse_decimal, parse_int
from .ratelimit import GROUP_WINDOWS, PER_INTERFACE_IP, Decision, Window
from .signing import request_params, verify

if TYPE_CHECKING:  # pragma: no cover
    from .server import SimulatorServer

log = logging.getLogger(__name__)

SEVEN_DAYS_MS = 7 * 86_400_000
NO_DATA = object()  # handler result meaning "envelope without a data member"
FUTURE_TOLERANCE_MS = 1000  # a timestamp may run this far ahead of server time
MAX_RECV_WINDOW_MS = 60_000


@dataclass(frozen=True)
class Endpoint:
    """One REST route."""

    method: str
    path: str
    handler: Callable[[dict[str, str]], Any]
    signed: bool
    uid_per_s: int | None
    group: int | None
    listen_key: bool = False  # key required, signature optional, answer without envelope


class RestApi:
    """The ``/openApi`` endpoints of one simulator."""

    def __init__(self, sim: SimulatorServer) -> None:
        self.sim = sim
        self.endpoints: dict[str, dict[str, Endpoint]] = {}
        self._register()

    # ---- routing table ------------------------------------------------------------------------
    def _add(self, method: str, path: str, handler: Callable[[dict[str, str]], Any], signed: bool, uid: int | None, group: int | None, **kw: Any) -> None:
        self.endpoints.setdefault(path, {})[method] = Endpoint(method, path, handler, signed, uid, group, **kw)

    def _register(self) -> None:
        a = self._add
        swap = "/openApi/swap"
        # market data: public, IP group 1
        a("GET", f"{swap}/v2/server/time", self.server_time, False, None, 1)
        a("GET", f"{swap}/v2/quote/contracts", self.contracts, False, None, 1)
        a("GET", f"{swap}/v1/tradingRules", self.trading_rules, False, 5, 2)
        a("GET", f"{swap}/v1/ticker/price", self.price, False, None, 1)
        a("GET", f"{swap}/v2/quote/price", self.price, False, None, 1)
        a("GET", f"{swap}/v2/quote/ticker", self.ticker, False, None, 1)
        a("GET", f"{swap}/v2/quote/depth", self.depth, False, None, 1)
        a("GET", f"{swap}/v3/quote/klines", self.klines, False, None, 1)
        a("GET", f"{swap}/v2/quote/klines", self.klines, False, None, 1)
        a("GET", f"{swap}/v1/market/markPriceKlines", self.mark_klines, False, None, 1)
        a("GET", f"{swap}/v2/quote/trades", self.trades, False, None, 1)
        a("GET", f"{swap}/v2/quote/premiumIndex", self.premium_index, False, None, 1)
        a("GET", f"{swap}/v2/quote/fundingRate", self.funding_rate, False, None, 1)
        a("GET", f"{swap}/v2/quote/openInterest", self.open_interest, False, None, 1)
        a("GET", f"{swap}/v2/quote/bookTicker", self.book_ticker, False, None, 1)
        # account
        a("GET", f"{swap}/v3/user/balance", self.balance_v3, True, 5, 3)
        a("GET", f"{swap}/v2/user/balance", self.balance_v2, True, 5, 3)
        a("GET", f"{swap}/v2/user/positions", self.positions, True, 5, 3)
        a("GET", f"{swap}/v2/user/income", self.income, True, 5, 2)
        a("GET", f"{swap}/v2/user/commissionRate", self.commission_rate, True, 5, 2)
        # trading
        a("POST", f"{swap}/v2/trade/order", self.place_order, True, 10, 3)
        a("POST", f"{swap}/v2/trade/order/test", self.test_order, True, 5, 2)
        a("POST", f"{swap}/v2/trade/batchOrders", self.batch_orders, True, 5, 3)
        a("DELETE", f"{swap}/v2/trade/order", self.cancel_order, True, 5, 3)
        a("DELETE", f"{swap}/v2/trade/batchOrders", self.cancel_batch, True, 5, 3)
        a("DELETE", f"{swap}/v2/trade/allOpenOrders", self.cancel_all, True, 5, 2)
        a("GET", f"{swap}/v2/trade/openOrders", self.open_orders, True, 5, 3)
        a("GET", f"{swap}/v2/trade/openOrder", self.open_order, True, 5, 2)
        a("GET", f"{swap}/v2/trade/order", self.query_order, True, 5, 2)
        a("GET", f"{swap}/v2/trade/allOrders", self.all_orders, True, 5, 3)
        a("GET", f"{swap}/v1/trade/fullOrder", self.full_orders, True, 5, 2)
        a("GET", f"{swap}/v2/trade/allFillOrders", self.fill_orders, True, 5, 2)
        a("GET", f"{swap}/v2/trade/fillHistory", self.fill_history, True, 5, 2)
        a("POST", f"{swap}/v2/trade/leverage", self.set_leverage, True, 5, 2)
        a("GET", f"{swap}/v2/trade/leverage", self.get_leverage, True, 5, 2)
        a("POST", f"{swap}/v2/trade/marginType", self.set_margin_type, True, 2, 2)
        a("GET", f"{swap}/v2/trade/marginType", self.get_margin_type, True, 2, 2)
        a("POST", f"{swap}/v1/positionSide/dual", self.set_dual, True, 2, 2)
        a("GET", f"{swap}/v1/positionSide/dual", self.get_dual, True, 2, 2)
        a("POST", f"{swap}/v2/trade/closeAllPositions", self.close_all_positions, True, 5, 2)
        a("POST", f"{swap}/v1/trade/closePosition", self.close_position, True, 5, 2)
        a("POST", f"{swap}/v2/trade/positionMargin", self.position_margin, True, 2, 2)
        a("POST", f"{swap}/v2/trade/cancelAllAfter", self.cancel_all_after, True, 2, 2)
        a("POST", f"{swap}/v1/trade/cancelReplace", self.cancel_replace, True, 5, 2)
        a("GET", f"{swap}/v2/trade/forceOrders", self.force_orders, True, 10, 2)
        a("GET", f"{swap}/v1/maintMarginRatio", self.maint_margin_ratio, True, 5, 2)
        # listen key (no envelope; HTTP status carries PUT/DELETE outcomes)
        path = "/openApi/user/auth/userDataStream"
        a("POST", path, self.listen_key_create, False, 2, None, listen_key=True)
        a("PUT", path, self.listen_key_extend, False, 2, None, listen_key=True)
        a("DELETE", path, self.listen_key_delete, False, 2, None, listen_key=True)

    # ---- pipeline -----------------------------------------------------------------------------
    def _json(self, body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
        return web.Response(text=dumps(body), status=status, content_type="application/json", headers=headers)

    def _error(self, err: ApiError, headers: dict[str, str] | None = None) -> web.Response:
        return self._json(error_body(err.code, err.msg, self.sim.server_time_ms()), err.http_status, headers)

    def _gateway_error(self, status: int) -> web.Response:
        reason = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Temporarily Unavailable", 504: "Gateway Time-out"}
        text = reason.get(status, "Server Error")
        return web.Response(
            text=f"<html>\r\n<head><title>{status} {text}</title></head>\r\n<body>\r\n<center><h1>{status} {text}</h1></center>\r\n</body>\r\n</html>\r\n",
            status=status,
            content_type="text/html",
        )

    @staticmethod
    def _uid_windows(ep: Endpoint) -> list[tuple[Any, Window]]:
        return [(("uid", ep.method, ep.path), Window(ep.uid_per_s, 1.0))] if ep.uid_per_s else []

    @staticmethod
    def _ip_windows(ep: Endpoint) -> list[tuple[Any, Window]]:
        windows: list[tuple[Any, Window]] = []
        if ep.group is not None:
            windows.extend(GROUP_WINDOWS[ep.group])
            if ep.group in (2, 3):
                windows.append((("ip-if", ep.method, ep.path), PER_INTERFACE_IP))
        return windows

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        """Handle one ``/openApi`` request."""
        sim = self.sim
        faults = sim.faults
        delay = faults.latency_s()
        if delay:
            await asyncio.sleep(delay)
        status_5xx = faults.pick_5xx()
        if status_5xx is not None and not faults.rest_5xx_after:
            return self._gateway_error(status_5xx)
        methods = self.endpoints.get(request.path)
        ep = methods.get(request.method) if methods else None
        if ep is None:
            return self._json(error_body(100400, "this api is not exist", sim.server_time_ms()), 404)
        if faults.firewall_forced():
            return web.Response(text="403 Forbidden", status=403, content_type="text/html")
        limited_status = sim.rate_limit_http_status
        if faults.rate_limit_forced():
            left_ms = int(max(0.0, faults.rate_limited_until - time.monotonic()) * 1000)
            return self._error(
                ApiError(100410, http_status=limited_status),
                {} if faults.rate_limit_no_headers else
                {"X-RateLimit-Requests-Remain": "0", "X-RateLimit-Requests-Expire": str(left_ms)},
            )
        # IP limits count every request; the per-UID limit only requests whose API key names the account.
        decision = sim.limiter.check(self._ip_windows(ep))
        headers = self._rate_headers(decision)
        if not decision.allowed:
            return self._error(ApiError(100410, http_status=limited_status),
                               {} if faults.rate_limit_no_headers else headers)
        body = await request.text() if request.can_read_body else ""
        query_raw = request.rel_url.raw_query_string
        content_type = request.headers.get("Content-Type", "")
        params = request_params(query_raw, body, content_type)
        try:
            if ep.signed or ep.listen_key:
                self._check_api_key(request)
            uid_windows = self._uid_windows(ep)
            if uid_windows:
                uid_decision = sim.limiter.check(uid_windows)
                if uid_decision.remaining < decision.remaining or not uid_decision.allowed:
                    headers = self._rate_headers(uid_decision)
                if not uid_decision.allowed:
                    raise ApiError(100410, http_status=limited_status)
            if ep.signed or ep.listen_key:
                self._authenticate(request, params, query_raw, body, content_type, signature_optional=ep.listen_key)
            if ep.path.endswith("/trade/order") and ep.method == "POST":
                rejection = faults.take_reject()
                if rejection is not None:
                    raise ApiError(rejection[0], rejection[1])
            result = ep.handler(params)
            if asyncio.iscoroutine(result):
                result = await result
        except ApiError as err:
            return self._error(err, headers)
        except Exception:
            log.exception("simulator handler failed for %s %s", request.method, request.path)
            return self._json(error_body(100500, "Internal system error", sim.server_time_ms()), 500, headers)
        if ep.path.endswith("/trade/order") and ep.method == "POST" and faults.take_hang():
            # The order exists now; the client never hears about it (the timeout case).
            log.info("fault: holding back the answer to an order placement")
            await sim.hang_until_stopped()
            if request.transport is not None:
                request.transport.abort()  # shutting down: the answer is never sent
        if status_5xx is not None:
            return self._gateway_error(status_5xx)
        if isinstance(result, web.StreamResponse):
            for key, value in headers.items():
                result.headers[key] = value
            return result
        if result is NO_DATA:
            return self._json({"code": 0, "msg": ""}, headers=headers)
        return self._json(ok_body(result), headers=headers)

    @staticmethod
    def _rate_headers(decision: Decision) -> dict[str, str]:
        return {
            "X-RateLimit-Requests-Remain": str(decision.remaining),
            "X-RateLimit-Requests-Expire": str(decision.expire_ms),
        }

    def _check_api_key(self, request: web.Request) -> None:
        key = request.headers.get("X-BX-APIKEY", "")
        if not key or not hmac.compare_digest(key.encode(), self.sim.api_key.encode()):
            raise ApiError(100413)

    def _authenticate(self, request: web.Request, params: dict[str, str], query_raw: str, body: str, content_type: str, *, signature_optional: bool) -> None:
        sim = self.sim
        check = verify(sim.api_secret, query_raw, body, content_type, strict=sim.strict_signing)
        if not check.present:
            if signature_optional:
                return
            raise ApiError(100412)
        if not check.valid:
            raise ApiError(100001)
        raw_ts = params.get("timestamp", "").strip()
        if not raw_ts.isdigit():
            raise ApiError(100421)
        recv_window = parse_int("recvWindow", params.get("recvWindow"), default=5000)
        if recv_window is None or recv_window < 0 or recv_window > MAX_RECV_WINDOW_MS:
            raise ApiError(109400, f"recvWindow must be between 0 and {MAX_RECV_WINDOW_MS}")
        if sim.strict_recv_window:
            now = sim.server_time_ms()
            ts = int(raw_ts)
            if ts > now + FUTURE_TOLERANCE_MS or now - ts > recv_window:
                raise ApiError(100421)

    # ---- helpers ------------------------------------------------------------------------------
    @property
    def engine(self):  # noqa: ANN201 - MatchingEngine (import cycle avoided)
        return self.sim.engine

    def _market(self, params: dict[str, str]) -> Market:
        return self.engine.market(params.get("symbol"))

    def _markets(self, params: dict[str, str]) -> list[Market]:
        if params.get("symbol"):
            return [self._market(params)]
        return list(self.sim.markets.values())

    def _one_or_all(self, params: dict[str, str], build: Callable[[Market], Any]) -> Any:
        if params.get("symbol"):
            return build(self._market(params))
        return [build(m) for m in self.sim.markets.values()]

    def _order_obj(self, order: Order) -> dict[str, Any]:
        return formats.order_object(order, self.sim.markets[order.symbol], one_way=not self.engine.account.hedge_mode)

    def _time_range(self, params: dict[str, str], start_key: str = "startTime", end_key: str = "endTime") -> tuple[int | None, int | None]:
        start = parse_int(start_key, params.get(start_key))
        end = parse_int(end_key, params.get(end_key))
        if start is not None and end is not None and end - start > SEVEN_DAYS_MS:
            raise ApiError(109400, "the time range cannot exceed 7 days")
        return start, end

    def _limit(self, params: dict[str, str], default: int, maximum: int) -> int:
        limit = parse_int("limit", params.get("limit"), default=default)
        if limit is None or limit <= 0:
            raise ApiError(109400, "limit must be positive")
        if limit > maximum:
            raise ApiError(109400, f"limit must not exceed {maximum}")
        return limit

    # ---- market data --------------------------------------------------------------------------
    def server_time(self, params: dict[str, str]) -> Any:
        return {"serverTime": self.sim.server_time_ms()}

    def contracts(self, params: dict[str, str]) -> Any:
        return [formats.contract_object(m) for m in self._markets(params)]

    def trading_rules(self, params: dict[str, str]) -> Any:
        m = self._market(params)
        return {
            "symbol": m.symbol,
            "tickSize": fmt_dec(m.tick),
            "stepSize": fmt_dec(m.step),
            "minQty": fmt_dec(m.min_qty),
            "minNotional": fmt_dec(m.min_notional),
            "maxLeverage": m.max_leverage,
            "pricePrecision": m.pp,
            "quantityPrecision": m.qp,
        }

    def price(self, params: dict[str, str]) -> Any:
        now = self.sim.server_time_ms()
        return self._one_or_all(params, lambda m: {"symbol": m.symbol, "price": m.price_str(m.last_ticks), "time": now})

    def ticker(self, params: dict[str, str]) -> Any:
        now = self.sim.server_time_ms()
        return self._one_or_all(params, lambda m: formats.rest_ticker(m, now))

    def depth(self, params: dict[str, str]) -> Any:
        m = self._market(params)
        limit = parse_int("limit", params.get("limit"), default=20)
        if limit not in (5, 10, 20, 50, 100, 500, 1000):
            raise ApiError(109400, "limit must be one of 5, 10, 20, 50, 100, 500, 1000")
        bids, asks = formats.depth_levels(m, limit)
        return {"T": self.sim.server_time_ms(), "bids": bids, "asks": asks, "bidsCoin": bids, "asksCoin": asks}

    def _bars(self, params: dict[str, str]) -> tuple[Market, str, list[tuple[int, int, int, int, int, float]]]:
        m = self._market(params)
        interval = params.get("interval", "")
        if interval not in INTERVAL_MS:
            raise ApiError(109400, "interval is invalid")
        start = parse_int("startTime", params.get("startTime"))
        end = parse_int("endTime", params.get("endTime"))
        limit = parse_int("limit", params.get("limit"), default=500) or 500
        if limit <= 0:
            raise ApiError(109400, "limit must be positive")
        limit = min(limit, 1000)  # observed: larger limits are silently capped
        bars = m.klines(interval, start_ms=start, end_ms=end, limit=limit, now_ms=self.sim.clock.now_ms())
        return m, interval, bars

    def klines(self, params: dict[str, str]) -> Any:
        m, _, bars = self._bars(params)
        # Newest first, like the live API (third-party finding, bingx-protocol.md 9.5).
        return [
            {"open": m.price_str(o), "close": m.price_str(c), "high": m.price_str(h), "low": m.price_str(l),
             "volume": m.qty_str(v), "time": t}
            for t, o, h, l, c, v in reversed(bars)
        ]

    def mark_klines(self, params: dict[str, str]) -> Any:
        m, interval, bars = self._bars(params)
        return [
            {"open": m.price_str(o), "close": m.price_str(c), "high": m.price_str(h), "low": m.price_str(l),
             "volume": m.qty_str(v), "openTime": t, "closeTime": bucket_end(interval, t) - 1}
            for t, o, h, l, c, v in reversed(bars)
        ]

    def trades(self, params: dict[str, str]) -> Any:
        m = self._market(params)
        limit = self._limit(params, 500, 1000)
        recent = list(m.trades)[-limit:]
        return [
            {"time": t.time_ms, "isBuyerMaker": t.buyer_maker, "price": m.price_str(t.ticks), "qty": m.qty_str(t.qty),
             "quoteQty": f"{t.qty * t.ticks * m.tick_f:.2f}"}
            for t in reversed(recent)
        ]

    def premium_index(self, params: dict[str, str]) -> Any:
        next_funding = self.sim.next_funding_ms
        return self._one_or_all(
            params,
            lambda m: {"symbol": m.symbol, "markPrice": m.price_str(m.mark_ticks), "indexPrice": m.price_str(m.mark_ticks),
                       "lastFundingRate": f"{m.funding_rate:.8f}", "nextFundingTime": next_funding},
        )

    def funding_rate(self, params: dict[str, str]) -> Any:
        m = self._market(params)
        start = parse_int("startTime", params.get("startTime"))
        end = parse_int("endTime", params.get("endTime"))
        limit = self._limit(params, 100, 1000)
        rows = [(t, r) for t, r in m.funding_history if (start is None or t >= start) and (end is None or t <= end)]
        rows = rows[-limit:]
        if not rows:
            return None  # the live API answers "data": null when there is nothing
        return [{"symbol": m.symbol, "fundingRate": f"{r:.8f}", "fundingTime": t} for t, r in reversed(rows)]

    def open_interest(self, params: dict[str, str]) -> Any:
        m = self._market(params)
        return {"openInterest": f"{m.rolling.quote_volume * 0.4:.2f}", "symbol": m.symbol, "time": self.sim.server_time_ms()}

    def book_ticker(self, params: dict[str, str]) -> Any:
        m = self._market(params)
        qty = float(m.level_qty)
        return {"book_ticker": {"symbol": m.symbol, "bid_price": float(m.price_dec(m.best_bid())), "bid_qty": qty,
                                "ask_price": float(m.price_dec(m.best_ask())), "ask_qty": qty}}

    # ---- account ------------------------------------------------------------------------------
    def balance_v3(self, params: dict[str, str]) -> Any:
        return [formats.balance_object(self.engine)]

    def balance_v2(self, params: dict[str, str]) -> Any:
        return {"balance": formats.balance_object(self.engine)}

    def positions(self, params: dict[str, str]) -> Any:
        symbol = self._market(params).symbol if params.get("symbol") else None
        return [formats.position_object(p, self.engine) for p in self.engine.account.open_positions(symbol)]

    def income(self, params: dict[str, str]) -> Any:
        symbol = self._market(params).symbol if params.get("symbol") else None
        kind = params.get("incomeType") or None
        start = parse_int("startTime", params.get("startTime"))
        end = parse_int("endTime", params.get("endTime"))
        limit = self._limit(params, 100, 1000)
        rows = [
            r for r in self.engine.account.income
            if (symbol is None or r.symbol == symbol) and (kind is None or r.income_type == kind)
            and (start is None or r.time_ms >= start) and (end is None or r.time_ms <= end)
        ]
        return [formats.income_object(r) for r in reversed(rows[-limit:])]

    def commission_rate(self, params: dict[str, str]) -> Any:
        cfg = self.engine.config
        return {"commission": {"takerCommissionRate": float(cfg.taker_fee), "makerCommissionRate": float(cfg.maker_fee)}}

    # ---- orders -------------------------------------------------------------------------------
    def place_order(self, params: dict[str, str]) -> Any:
        order = self.engine.place(params)
        return {"order": formats.order_echo(order, self.sim.markets[order.symbol])}

    def test_order(self, params: dict[str, str]) -> Any:
        order = self.engine.place(params, test=True)
        return {"order": formats.order_echo(order, self.sim.markets[order.symbol])}

    @staticmethod
    def _json_list(name: str, text: str | None, max_len: int) -> list[Any]:
        if text is None or text.strip() == "":
            raise ApiError(109400, f"{name} is required")
        try:
            value = json.loads(text, parse_float=str, parse_int=str)
        except ValueError:
            raise ApiError(80014, f"{name}: Syntax error at index 1: invalid char") from None
        if not isinstance(value, list):
            raise ApiError(80014, f"{name} must be a JSON array")
        if len(value) > max_len:
            raise ApiError(109400, f"{name} holds at most {max_len} items")
        return value

    def batch_orders(self, params: dict[str, str]) -> Any:
        items = self._json_list("batchOrders", params.get("batchOrders"), 5)
        orders, errors = [], []
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                errors.append({"index": index, "code": 80014, "msg": "batch item must be an object"})
                continue
            fields = {k: (v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))) for k, v in item.items()}
            try:
                rejection = self.sim.faults.take_reject()
                if rejection is not None:
                    raise ApiError(rejection[0], rejection[1])
                order = self.engine.place(fields)
                orders.append(formats.order_echo(order, self.sim.markets[order.symbol]))
            except ApiError as err:
                errors.append({"index": index, "code": err.code, "msg": err.msg})
        return {"orders": orders, "errors": errors}

    @staticmethod
    def _client_id(params: dict[str, str]) -> str | None:
        return params.get("clientOrderId") or params.get("clientOrderID") or params.get("origClientOrderId")

    def cancel_order(self, params: dict[str, str]) -> Any:
        order = self.engine.cancel(params.get("symbol"), params.get("orderId"), self._client_id(params))
        return {"order": self._order_obj(order)}

    def cancel_batch(self, params: dict[str, str]) -> Any:
        symbol = self._market(params).symbol
        if params.get("orderIdList"):
            ids = [("id", str(x)) for x in self._json_list("orderIdList", params.get("orderIdList"), 10)]
        else:
            text = params.get("clientOrderIdList") or params.get("clientOrderIDList")
            ids = [("cid", str(x)) for x in self._json_list("clientOrderIdList", text, 10)]
        success, failed = [], []
        for kind, value in ids:
            try:
                order = self.engine.cancel(symbol, value if kind == "id" else None, value if kind == "cid" else None)
                success.append(self._order_obj(order))
            except ApiError as err:
                failed.append({"orderId": int(value) if kind == "id" and value.isdigit() else 0,
                               "clientOrderId": value if kind == "cid" else "", "errorCode": err.code, "errorMessage": err.msg})
        return {"success": success, "failed": failed or None}

    def cancel_all(self, params: dict[str, str]) -> Any:
        cancelled = self.engine.cancel_all(params.get("symbol") or None, params.get("type") or None)
        return {"success": [self._order_obj(o) for o in cancelled], "failed": None}

    def open_orders(self, params: dict[str, str]) -> Any:
        orders = self.engine.list_open(params.get("symbol") or None, params.get("type") or None)
        return {"orders": [self._order_obj(o) for o in orders]}

    def open_order(self, params: dict[str, str]) -> Any:
        order = self.engine.find_order(self._market(params).symbol, params.get("orderId"), self._client_id(params))
        if not order.is_open:
            raise ApiError(80016)
        return {"order": self._order_obj(order)}

    def query_order(self, params: dict[str, str]) -> Any:
        order = self.engine.find_order(self._market(params).symbol, params.get("orderId"), self._client_id(params))
        return {"order": self._order_obj(order)}

    def _order_history(self, params: dict[str, str], *, finished_only: bool) -> list[dict[str, Any]]:
        symbol = self._market(params).symbol if params.get("symbol") else None
        start, end = self._time_range(params)
        from_id = parse_int("orderId", params.get("orderId"))
        limit = self._limit(params, 500, 1000)
        rows = [
            o for o in self.engine.orders.values()
            if (symbol is None or o.symbol == symbol) and (not finished_only or not o.is_open)
            and (start is None or o.time_ms >= start) and (end is None or o.time_ms <= end)
            and (from_id is None or o.order_id >= from_id) and o.type != "LIQUIDATION"
        ]
        rows.sort(key=lambda o: o.order_id)
        return [self._order_obj(o) for o in rows[:limit]]

    def all_orders(self, params: dict[str, str]) -> Any:
        return {"orders": self._order_history(params, finished_only=True)}

    def full_orders(self, params: dict[str, str]) -> Any:
        return {"orders": self._order_history(params, finished_only=False)}

    def _fills(self, params: dict[str, str], start_key: str, end_key: str) -> list[Any]:
        symbol = self._market(params).symbol if params.get("symbol") else None
        start, end = self._time_range(params, start_key, end_key)
        order_id = parse_int("orderId", params.get("orderId"))
        return [
            f for f in self.engine.fills
            if (symbol is None or f.symbol == symbol) and (order_id is None or f.order_id == order_id)
            and (start is None or f.time_ms >= start) and (end is None or f.time_ms <= end)
        ]

    def fill_orders(self, params: dict[str, str]) -> Any:
        one_way = not self.engine.account.hedge_mode
        fills = self._fills(params, "startTs", "endTs")
        return {"fill_orders": [formats.fill_order_object(f, self.sim.markets[f.symbol], one_way=one_way) for f in fills]}

    def fill_history(self, params: dict[str, str]) -> Any:
        self._market(params)
        fills = self._fills(params, "startTs", "endTs")
        last_id = parse_int("lastFillId", params.get("lastFillId"))
        if last_id is not None:
            fills = [f for f in fills if f.trade_id > last_id]
        page_size = parse_int("pageSize", params.get("pageSize"), default=50) or 50
        if page_size > 1000 or page_size <= 0:
            raise ApiError(109400, "pageSize must be within 1-1000")
        page = max(1, parse_int("pageIndex", params.get("pageIndex"), default=1) or 1)
        chunk = fills[(page - 1) * page_size : page * page_size]
        return {"fill_history_orders": [formats.fill_history_object(f, self.sim.markets[f.symbol]) for f in chunk], "total": len(fills)}

    # ---- settings -----------------------------------------------------------------------------
    def _leverage_view(self, m: Market) -> dict[str, Any]:
        settings = self.engine.account.settings[m.symbol]
        available = self.engine.available_margin()
        price = m.price_dec(m.last_ticks)
        long_vol = m.trunc_qty(available * settings.long_leverage / price)
        short_vol = m.trunc_qty(available * settings.short_leverage / price)
        return {
            "longLeverage": settings.long_leverage,
            "shortLeverage": settings.short_leverage,
            "maxLongLeverage": m.max_leverage,
            "maxShortLeverage": m.max_leverage,
            "availableLongVol": fmt_dec(long_vol),
            "availableShortVol": fmt_dec(short_vol),
            "availableLongVal": fmt_money(long_vol * price),
            "availableShortVal": fmt_money(short_vol * price),
            "maxPositionLongVal": "10000000",
            "maxPositionShortVal": "10000000",
        }

    def set_leverage(self, params: dict[str, str]) -> Any:
        m = self._market(params)
        leverage = parse_int("leverage", params.get("leverage"))
        if leverage is None:
            raise ApiError(109400, "leverage is required")
        side = params.get("side", "")
        settings = self.engine.set_leverage(m.symbol, side, leverage)
        view = self._leverage_view(m)
        return {"leverage": settings.leverage_for(side if side != "BOTH" else "LONG"), "symbol": m.symbol,
                "availableLongVol": view["availableLongVol"], "availableShortVol": view["availableShortVol"],
                "availableLongVal": view["availableLongVal"], "availableShortVal": view["availableShortVal"],
                "maxPositionLongVal": view["maxPositionLongVal"], "maxPositionShortVal": view["maxPositionShortVal"]}

    def get_leverage(self, params: dict[str, str]) -> Any:
        return self._leverage_view(self._market(params))

    def set_margin_type(self, params: dict[str, str]) -> Any:
        m = self._market(params)
        self.engine.set_margin_type(m.symbol, params.get("marginType", ""))
        return NO_DATA

    def get_margin_type(self, params: dict[str, str]) -> Any:
        m = self._market(params)
        return {"marginType": self.engine.account.settings[m.symbol].margin_type, "symbol": m.symbol}

    def set_dual(self, params: dict[str, str]) -> Any:
        raw = (params.get("dualSidePosition") or "").strip().lower()
        if raw not in ("true", "false"):
            raise ApiError(109400, "dualSidePosition must be true or false")
        self.engine.set_position_mode(raw == "true")
        return {"dualSidePosition": raw}

    def get_dual(self, params: dict[str, str]) -> Any:
        return {"dualSidePosition": "true" if self.engine.account.hedge_mode else "false"}

    def close_all_positions(self, params: dict[str, str]) -> Any:
        orders = self.engine.close_all_positions(params.get("symbol") or None)
        return {"success": [o.order_id for o in orders], "failed": None}

    def close_position(self, params: dict[str, str]) -> Any:
        pos = self.engine.position_by_id(params.get("positionId", ""))
        order = self.engine.close_position(pos)
        m = self.sim.markets[order.symbol]
        return {"orderId": order.order_id, "positionId": str(pos.position_id or order.position_id), "symbol": order.symbol,
                "side": "Ask" if order.side == "SELL" else "Bid", "type": "Market", "positionSide": order.position_side,
                "origQty": fmt_dec(order.qty.quantize(m.step))}

    def position_margin(self, params: dict[str, str]) -> Any:
        m = self._market(params)
        amount = parse_decimal("amount", params.get("amount"), required=True, code=109400)
        kind = parse_int("type", params.get("type"))
        assert amount is not None
        self.engine.adjust_isolated_margin(m.symbol, amount, kind or 0, params.get("positionSide") or None)
        return {"symbol": m.symbol, "amount": fmt_dec(amount), "type": kind}

    def cancel_all_after(self, params: dict[str, str]) -> Any:
        kind = params.get("type", "")
        if kind == "ACTIVATE":
            timeout = parse_int("timeOut", params.get("timeOut"))
            if timeout is None or not 10 <= timeout <= 120:
                raise ApiError(109400, "timeOut must be between 10 and 120 seconds")
            self.sim.arm_cancel_all_after(timeout)
            return {"triggerTime": self.sim.server_time_ms() + timeout * 1000, "status": "ACTIVATED",
                    "note": f"All your perpetual pending orders will be closed automatically after {timeout} seconds"}
        if kind == "CLOSE":
            self.sim.arm_cancel_all_after(None)
            return {"triggerTime": 0, "status": "CLOSED", "note": "Countdown cancelled"}
        raise ApiError(109400, "type must be ACTIVATE or CLOSE")

    def cancel_replace(self, params: dict[str, str]) -> Any:
        mode = params.get("cancelReplaceMode", "STOP_ON_FAILURE")
        cancel_id = params.get("cancelOrderId")
        cancel_cid = params.get("cancelClientOrderId") or params.get("cancelClientOrderID")
        result: dict[str, Any] = {"cancelResult": "true", "cancelMsg": "", "cancelResponse": None,
                                  "replaceResult": "false", "replaceMsg": "", "newOrderResponse": None}
        try:
            cancelled = self.engine.cancel(params.get("symbol"), cancel_id, cancel_cid)
            result["cancelResponse"] = self._order_obj(cancelled)
        except ApiError as err:
            result.update(cancelResult="false", cancelMsg=err.msg)
            if mode == "STOP_ON_FAILURE":
                return result
        new_params = {k: v for k, v in params.items() if not k.startswith("cancel")}
        try:
            order = self.engine.place(new_params)
            result.update(replaceResult="true", newOrderResponse=formats.order_echo(order, self.sim.markets[order.symbol]))
        except ApiError as err:
            result["replaceMsg"] = err.msg
        return result

    def force_orders(self, params: dict[str, str]) -> Any:
        symbol = self._market(params).symbol if params.get("symbol") else None
        start, end = self._time_range(params)
        limit = self._limit(params, 50, 100)
        rows = [
            o for o in self.engine.orders.values()
            if o.type == "LIQUIDATION" and (symbol is None or o.symbol == symbol)
            and (start is None or o.time_ms >= start) and (end is None or o.time_ms <= end)
        ]
        return {"orders": [self._order_obj(o) for o in rows[-limit:]]}

    def maint_margin_ratio(self, params: dict[str, str]) -> Any:
        m = self._market(params)
        return [{"tier": "Tier 1", "symbol": m.symbol, "minPositionVal": "0", "maxPositionVal": "10000000",
                 "maintMarginRatio": f"{m.mmr:.6f}", "maintAmount": "0.000000"}]

    # ---- listen key ---------------------------------------------------------------------------
    def listen_key_create(self, params: dict[str, str]) -> Any:
        return self._json({"listenKey": self.sim.listen_keys.create()})

    def _listen_key_status(self, params: dict[str, str], action: Callable[[str], bool]) -> web.Response:
        key = params.get("listenKey", "").strip()
        if not key:
            return web.Response(status=204)
        if not action(key):
            return self._json({"code": 404, "msg": "listenKey not exist"}, 404)
        return self._json({})

    def listen_key_extend(self, params: dict[str, str]) -> Any:
        return self._listen_key_status(params, self.sim.listen_keys.extend)

    def listen_key_delete(self, params: dict[str, str]) -> Any:
        return self._listen_key_status(params, self.sim.listen_keys.delete)

