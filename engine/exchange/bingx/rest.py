"""Async BingX USDT-M REST client (one shared aiohttp session, typed results).

Cross-cutting behaviour, all in :meth:`BingxRestClient._call`:
- signing (``signing``), ``timestamp`` from :class:`~.timesync.TimeSync`;
- a 100421 timestamp error triggers an immediate resync and exactly one retry;
- every request first takes a slot from the shared :class:`~.ratelimit.RateLimiter`;
  a 100410 / HTTP 429 blocks the endpoint's buckets until the window resets (logged), a 418 ban or
  403 firewall block pauses every bucket for 5 minutes; a block longer than ``max_rate_limit_wait_s``
  is not slept through: the call raises :class:`BingxRateLimitError` at once and the caller decides;
- network errors, HTTP 5xx and "busy" codes are retried with exponential backoff and jitter,
  but only for repeatable endpoints (reads, idempotent settings). Placements and cancels
  are never repeated blindly: :meth:`place_order` looks the order up by client order id.

Secrets: the API key travels only in the ``X-BX-APIKEY`` header, the secret never leaves
this object, URLs in errors/logs have their signature removed, and ``repr`` shows neither.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, TypeVar

import aiohttp
from yarl import URL

from . import endpoints as ep
from .contracts import ContractCache, ContractRules
from .endpoints import Endpoint
from .errors import (
    AMBIGUOUS_REJECTION_CODES,
    BingxAuthError,
    BingxDuplicateClientOrderIdError,
    BingxError,
    BingxFirewallBlockError,
    BingxInvalidParameterError,
    BingxListenKeyNotExtendedError,
    BingxListenKeyNotFoundError,
    BingxNetworkError,
    BingxOrderNotFoundError,
    BingxRateLimitError,
    BingxResponseError,
    BingxServerError,
    BingxTimestampError,
    OrderStateUnknownError,
    OrderValidationError,
    error_from_code,
)
from .models import (
    Balance,
    CommissionRate,
    Contract,
    Fill,
    FundingRate,
    Income,
    Kline,
    Leverage,
    MaintMarginTier,
    MalformedPayloadError,
    MarginType,
    OrderBook,
    OrderStatus,
    OrderType,
    Position,
    PositionHistoryEntry,
    PositionSide,
    PremiumIndex,
    PublicTrade,
    Ticker24h,
    TickerPrice,
    loads,
    parse_balances,
    parse_commission_rate,
    parse_contract,
    parse_fill,
    parse_funding_rate,
    parse_income,
    parse_kline,
    parse_leverage,
    parse_maint_margin_tier,
    parse_many,
    parse_margin_type,
    parse_one_or_many,
    parse_order_book,
    parse_position,
    parse_position_history,
    parse_position_mode,
    parse_premium_index,
    parse_public_trade,
    parse_ticker_24h,
    parse_ticker_price,
    req_int,
    to_int,
)
from .orders import (
    BatchOrdersResult,
    CancelResult,
    CloseAllResult,
    Order,
    OrderRequest,
    is_valid_client_order_id,
    parse_batch_orders,
    parse_cancel_result,
    parse_close_all,
    parse_order_list,
    unwrap_order,
)
from .ratelimit import RECOVERY_S, RateLimiter, read_expire_header
from .signing import compact_json, encode_params, sign_params, truncate_signature
from .timesync import TimeSync

log = logging.getLogger(__name__)

T = TypeVar("T")

_SIGNATURE_RE = re.compile(r"signature=[0-9a-fA-F]+")

INTERVAL_MS: dict[str, int] = {
    "1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000,
    "1h": 3_600_000, "2h": 7_200_000, "4h": 14_400_000, "6h": 21_600_000, "8h": 28_800_000,
    "12h": 43_200_000, "1d": 86_400_000, "3d": 259_200_000, "1w": 604_800_000,
    "1M": 28 * 86_400_000,  # shortest month: only used to detect holes, never to step blindly
}
# Errors after which a write may or may not have been executed by BingX.
_UNKNOWN_OUTCOME = (BingxNetworkError, BingxServerError, BingxResponseError)
# Conditional orders: BingX may ignore clientOrderId on them (protocol notes 6.5, UNCONFIRMED).
CONDITIONAL_ORDER_TYPES = frozenset({
    OrderType.STOP_MARKET, OrderType.TAKE_PROFIT_MARKET, OrderType.STOP, OrderType.TAKE_PROFIT,
    OrderType.TRIGGER_LIMIT, OrderType.TRIGGER_MARKET, OrderType.TRAILING_STOP_MARKET, OrderType.TRAILING_TP_SL,
})
_TWIN_CLOCK_SLACK_MS = 2000
MAX_KLINE_PAGE = 1000  # the doc says 1440, but >1000 was observed to be capped silently
SEVEN_DAYS_MS = 7 * 86_400_000


def _redact(text: str) -> str:
    return _SIGNATURE_RE.sub("signature=<redacted>", text)


def _same(reported: Decimal, sent: Decimal | None) -> bool:
    """A field BingX echoes matches what we sent (unset on our side matches anything)."""
    return sent is None or reported == sent


def _is_twin(order: Order, req: OrderRequest) -> bool:
    """Whether ``order`` looks like the one ``req`` would have created (client id aside)."""
    if order.client_order_id and order.client_order_id != (req.client_order_id or ""):
        return False  # BingX kept someone else's id on it: another request placed it
    if (order.type, order.side, order.position_side) != (req.type.value, req.side.value, req.position_side.value):
        return False
    if req.close_position:
        return bool(order.close_position)
    limit_price_matters = req.type in (OrderType.STOP, OrderType.TAKE_PROFIT, OrderType.TRIGGER_LIMIT)
    return (_same(order.stop_price, req.stop_price) and _same(order.orig_qty, req.quantity)
            and (not limit_price_matters or _same(order.price, req.price)))


def _interval_ms(interval: str) -> int:
    try:
        return INTERVAL_MS[interval]
    except KeyError:
        raise BingxInvalidParameterError(
            f"unknown kline interval {interval!r}; use one of {', '.join(INTERVAL_MS)}") from None


class BingxRestClient:
    """Typed async client for the BingX USDT-M perpetual REST API.

    Use ``async with BingxRestClient(...) as client:`` or call :meth:`close`. A session passed
    in is shared and not closed by the client. One :class:`RateLimiter` may be shared by
    several clients of the same API key (pass ``rate_limiter``).
    """

    def __init__(
        self,
        *,
        rest_url: str,
        api_key: str,
        api_secret: str,
        recv_window_ms: int = 5000,
        session: aiohttp.ClientSession | None = None,
        request_timeout_s: float = 10,
        rate_limiter: RateLimiter | None = None,
        time_refresh_interval_s: float = 300.0,
        max_retries: int = 3,
        backoff_base_s: float = 0.25,
        backoff_max_s: float = 8.0,
        rate_limit_default_backoff_s: float = 30.0,
        max_rate_limit_wait_s: float = 5.0,
        order_lookup_delay_s: float = 1.0,
        contract_ttl_s: float = 3600.0,
        source_key: str | None = None,
    ) -> None:
        self._base = rest_url.rstrip("/")
        self._api_key = api_key
        self._api_secret = api_secret
        self._recv_window_ms = recv_window_ms
        self._session = session
        self._owns_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=request_timeout_s)
        self.limiter = rate_limiter or ep.default_limiter()
        self.time = TimeSync(self.server_time, refresh_interval_s=time_refresh_interval_s)
        self.contracts_cache = ContractCache(self._fetch_contracts, ttl_s=contract_ttl_s)
        self._max_retries = max_retries
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._rate_limit_default_backoff_s = rate_limit_default_backoff_s
        self._max_rate_limit_wait_s = max_rate_limit_wait_s
        self._last_breach_mono: float | None = None  # when BingX last refused us for rate (monotonic s)
        self._last_block_s = 0.0
        self._order_lookup_delay_s = order_lookup_delay_s
        self._source_key = source_key

    def __repr__(self) -> str:
        return f"BingxRestClient(rest_url={self._base!r}, api_key={'set' if self._api_key else 'unset'})"

    # --- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> "BingxRestClient":
        self._ensure_session()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session if this client created it."""
        if self._owns_session and self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None if self._owns_session else self._session

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            if not self._owns_session:
                raise RuntimeError("the shared aiohttp session passed to BingxRestClient is closed")
            # BingX sets no cookies this client needs; without a jar no request filters cookies (order path, issue 10)
            self._session = aiohttp.ClientSession(timeout=self._timeout, cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    @property
    def has_credentials(self) -> bool:
        """Whether an API key and secret were given (private endpoints need both)."""
        return bool(self._api_key and self._api_secret)

    # --- transport -----------------------------------------------------------------------------

    async def _call(self, endpoint: Endpoint, params: Mapping[str, Any] | None = None) -> Any:
        """Send one logical request with the retry rules described in the module docstring."""
        attempt = 0
        timestamp_retried = False
        while True:
            # A long block (after a 429/418/403) raises at once: the caller decides, nothing waits minutes silently.
            slot = await self.limiter.slot(endpoint.bucket_keys(), max_block_s=self._max_rate_limit_wait_s)
            try:
                return await self._send_once(endpoint, params or {})
            except BingxTimestampError:
                if timestamp_retried:
                    raise
                timestamp_retried = True
                log.warning("BingX rejected the timestamp on %s: resyncing the clock and retrying once", endpoint.key)
                await self.time.sync(reason="timestamp error 100421")
                continue
            except BingxRateLimitError as exc:
                wait = self._rate_limit_block_s(exc)
                exc.retry_after_s = wait
                reason = f"{exc.code or exc.http_status} on {endpoint.key}"
                # 418 (IP ban) and 403 (firewall) refuse the whole IP, not one endpoint.
                whole_ip = exc.http_status in (403, 418)
                self.limiter.block(None if whole_ip else endpoint.bucket_keys(), wait, reason=reason)
                if not endpoint.repeatable or attempt >= self._max_retries or wait > self._max_rate_limit_wait_s:
                    raise
                error: BingxError = exc
            except (BingxNetworkError, BingxServerError) as exc:
                if not endpoint.repeatable or attempt >= self._max_retries:
                    raise
                error = exc
            finally:
                slot.release()
            attempt += 1
            delay = self._backoff(attempt)
            log.warning("%s failed (%s); retry %d/%d in %.2f s", endpoint.key, error, attempt, self._max_retries, delay)
            await asyncio.sleep(delay)

    def _rate_limit_block_s(self, exc: BingxRateLimitError) -> float:
        """How long to pause after a rate-limit answer (protocol notes 8).

        403 (firewall) and 418 (IP ban) pause for the documented 5-minute recovery. A 100410/429
        uses the expiry header when it was readable, else a default; a breach repeated within
        5 minutes of the previous one escalates (doubling; straight to 5 minutes without a header),
        because continuing to send while restricted can turn a 429 into a 418 ban.
        """
        now = time.monotonic()
        repeated = self._last_breach_mono is not None and now - self._last_breach_mono < RECOVERY_S
        if exc.http_status in (403, 418):
            wait = max(RECOVERY_S, exc.retry_after_s or 0.0)
        elif exc.retry_after_s is None:
            wait = RECOVERY_S if repeated else self._rate_limit_default_backoff_s
        else:
            wait = max(exc.retry_after_s, 2 * self._last_block_s) if repeated else exc.retry_after_s
        wait = min(wait, RECOVERY_S)
        self._last_breach_mono = now
        self._last_block_s = wait
        return wait

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with full jitter: uniform(0.5, 1.0) x base x 2^(attempt-1), capped."""
        ceiling = min(self._backoff_max_s, self._backoff_base_s * (2 ** (attempt - 1)))
        return ceiling * random.uniform(0.5, 1.0)

    async def _send_once(self, endpoint: Endpoint, params: Mapping[str, Any]) -> Any:
        headers: dict[str, str] = {}
        if endpoint.signed:
            if not self.has_credentials:
                raise BingxAuthError("no API key/secret configured; private endpoints are unavailable",
                                     endpoint=endpoint.path)
            await self.time.ensure_fresh()
            signed_params = dict(params)
            signed_params["timestamp"] = self.time.now_ms()
            signed_params["recvWindow"] = self._recv_window_ms
            signed = sign_params(signed_params, self._api_secret)
            query = signed.query
            sig_hint = truncate_signature(signed.signature)
            headers["X-BX-APIKEY"] = self._api_key
        else:
            query = encode_params(params)
            sig_hint = "-"
        if self._source_key:
            headers["X-SOURCE-KEY"] = self._source_key
        url = URL(f"{self._base}{endpoint.path}" + (f"?{query}" if query else ""), encoded=True)
        session = self._ensure_session()
        log.debug("BingX %s (sig %s)", endpoint.key, sig_hint)
        try:
            async with session.request(endpoint.method, url, headers=headers, timeout=self._timeout) as resp:
                text = await resp.text()
                status = resp.status
                resp_headers = resp.headers
        except asyncio.TimeoutError:
            raise BingxNetworkError("request timed out", endpoint=endpoint.path) from None
        except aiohttp.ClientError as exc:
            raise BingxNetworkError(f"{type(exc).__name__}: {_redact(str(exc))}", endpoint=endpoint.path) from None
        return self._interpret(endpoint, status, text, resp_headers)

    def _interpret(self, endpoint: Endpoint, status: int, text: str, headers: Mapping[str, str]) -> Any:
        body: Any = None
        if text.strip():
            try:
                body = loads(text)
            except ValueError:
                body = None
        try:
            code = to_int(body.get("code"), "code") if isinstance(body, dict) and "code" in body else None
        except MalformedPayloadError:
            raise BingxResponseError(f"unreadable code in response: {_redact(text[:200])!r}", http_status=status,
                                     endpoint=endpoint.path) from None
        msg = str(body.get("msg", "")) if isinstance(body, dict) else ""
        if status == 429 or status == 418 or code == 100410:
            # None when the header is missing or tells nothing: _rate_limit_block_s picks the pause.
            retry_after = read_expire_header(headers.get("X-RateLimit-Requests-Expire"), now_ms=self.time.now_ms())
            raise BingxRateLimitError(msg or f"HTTP {status}: too many requests", code=code, http_status=status,
                                      endpoint=endpoint.path, retry_after_s=retry_after)
        if status == 403 and code in (None, 0):
            # The firewall refuses the IP, usually for 5 minutes (protocol notes 5 and 8): a block, not bad credentials.
            raise BingxFirewallBlockError("HTTP 403: BingX refused this IP (firewall block, usually 5 minutes; "
                                          "or the IP is not allowed for this key)", http_status=403,
                                          endpoint=endpoint.path)
        if status == 404 and not endpoint.envelope:
            raise BingxListenKeyNotFoundError("listen key not found or expired", http_status=404,
                                              endpoint=endpoint.path)
        if status == 204 and endpoint is ep.LISTEN_KEY_EXTEND:
            # Protocol notes 4: 204 on the PUT means "no parameters": the key was NOT extended.
            raise BingxListenKeyNotExtendedError("HTTP 204 (no parameters): listen key not extended",
                                                 http_status=204, endpoint=endpoint.path)
        if code not in (None, 0):
            raise error_from_code(code, msg, http_status=status, endpoint=endpoint.path)
        if status >= 500:
            raise BingxServerError(f"HTTP {status} from BingX", http_status=status, endpoint=endpoint.path)
        if status in (401, 403):
            raise BingxAuthError(f"HTTP {status}: access refused (bad key, IP not allowed or firewall block)",
                                 http_status=status, endpoint=endpoint.path)
        if status >= 400:
            raise BingxInvalidParameterError(f"HTTP {status}: {_redact(text[:200])}", http_status=status,
                                             endpoint=endpoint.path)
        if not endpoint.envelope:
            return body
        if not isinstance(body, dict) or code is None:
            raise BingxResponseError(f"unexpected response body: {_redact(text[:200])!r}", http_status=status,
                                     endpoint=endpoint.path)
        return body.get("data")

    @staticmethod
    def _parse(endpoint: Endpoint, parser: Callable[..., T], *args: Any) -> T:
        """Run a model parser; a shape surprise becomes a :class:`BingxResponseError`."""
        try:
            return parser(*args)
        except MalformedPayloadError as exc:
            raise BingxResponseError(f"cannot read response: {exc}", endpoint=endpoint.path) from None

    # --- time and health -----------------------------------------------------------------------

    async def server_time(self) -> int:
        """BingX server time in ms."""
        data = await self._call(ep.SERVER_TIME)
        if not isinstance(data, dict) or "serverTime" not in data:
            raise BingxResponseError("server time missing from response", endpoint=ep.SERVER_TIME.path)
        return self._parse(ep.SERVER_TIME, lambda d: req_int(d["serverTime"], "serverTime"), data)

    async def sync_time(self) -> int:
        """Measure the clock offset now; returns BingX time - local time in ms."""
        return await self.time.sync(reason="requested")

    async def ping(self) -> float:
        """Round-trip time of a server-time request, in seconds."""
        started = time.perf_counter()
        await self.server_time()
        return time.perf_counter() - started

    # --- market data ---------------------------------------------------------------------------

    async def _fetch_contracts(self) -> list[Contract]:
        data = await self._call(ep.CONTRACTS)
        return self._parse(ep.CONTRACTS, parse_many, parse_contract, data, "contracts")

    async def contracts(self) -> list[Contract]:
        """Every USDT-M contract (also refreshes the rules cache)."""
        contracts = await self._fetch_contracts()
        self.contracts_cache.store(contracts)
        return contracts

    async def contract(self, symbol: str) -> Contract:
        """One contract from the cache (loaded on first use, refreshed hourly)."""
        return await self.contracts_cache.get(symbol)

    async def rules(self, symbol: str) -> ContractRules:
        """Rounding/minimum rules for ``symbol``."""
        return await self.contracts_cache.rules(symbol)

    async def ticker_price(self, symbol: str) -> TickerPrice:
        """Latest price (``/v1/ticker/price``; falls back to the legacy ``/v2/quote/price``)."""
        try:
            data = await self._call(ep.TICKER_PRICE, {"symbol": symbol})
            endpoint = ep.TICKER_PRICE
        except BingxInvalidParameterError as exc:
            if exc.http_status != 404 and exc.code != 100400:
                raise
            data = await self._call(ep.TICKER_PRICE_LEGACY, {"symbol": symbol})
            endpoint = ep.TICKER_PRICE_LEGACY
        if isinstance(data, list):
            data = next((d for d in data if isinstance(d, dict) and d.get("symbol") == symbol), None)
        if data is None:
            raise BingxResponseError(f"no price for {symbol}", endpoint=endpoint.path)
        return self._parse(endpoint, parse_ticker_price, data)

    async def ticker_24h(self, symbol: str) -> Ticker24h:
        """24 h statistics for ``symbol``."""
        data = await self._call(ep.TICKER_24H, {"symbol": symbol})
        if isinstance(data, list):  # spot-style array answer
            data = next((d for d in data if isinstance(d, dict) and d.get("symbol") == symbol), data[:1] and data[0])
        return self._parse(ep.TICKER_24H, parse_ticker_24h, data)

    async def depth(self, symbol: str, limit: int = 20) -> OrderBook:
        """Order-book snapshot; ``limit`` in {5, 10, 20, 50, 100, 500, 1000}."""
        data = await self._call(ep.DEPTH, {"symbol": symbol, "limit": limit})
        return self._parse(ep.DEPTH, parse_order_book, data, symbol)

    async def klines(self, symbol: str, interval: str, start_ms: int | None = None, end_ms: int | None = None,
                     limit: int = 500) -> list[Kline]:
        """One page of candles, ascending by open time, without duplicates."""
        _interval_ms(interval)
        params = {"symbol": symbol, "interval": interval, "startTime": start_ms, "endTime": end_ms,
                  "limit": min(limit, MAX_KLINE_PAGE)}
        data = await self._call(ep.KLINES, params)
        rows = self._parse(ep.KLINES, parse_many, parse_kline, data, "klines")
        return sorted({k.open_time_ms: k for k in rows}.values(), key=lambda k: k.open_time_ms)

    async def klines_range(self, symbol: str, interval: str, start_ms: int, end_ms: int, *,
                           page_limit: int = MAX_KLINE_PAGE) -> list[Kline]:
        """Every candle with ``start_ms <= open_time < end_ms``, ascending and de-duplicated.

        Pages are windows of at most ``page_limit`` candles. The answer may come newest-first
        or silently capped below the limit, so any hole left at either end of a window is
        fetched again until BingX returns nothing for it (a real gap in the data).
        """
        step = _interval_ms(interval)
        page_limit = max(1, min(page_limit, MAX_KLINE_PAGE))
        found: dict[int, Kline] = {}
        pending: list[tuple[int, int]] = []
        cursor = start_ms
        while cursor < end_ms:  # initial windows, oldest first
            window_end = min(end_ms, cursor + page_limit * step)
            pending.append((cursor, window_end))
            cursor = window_end
        pending.reverse()
        requests = 0
        while pending:
            lo, hi = pending.pop()
            # endTime = hi - 1 keeps the window half-open whether BingX treats endTime as inclusive or not.
            rows = [k for k in await self.klines(symbol, interval, lo, hi - 1, page_limit) if lo <= k.open_time_ms < hi]
            requests += 1
            if not rows:
                continue
            for k in rows:
                found[k.open_time_ms] = k
            first, last = rows[0].open_time_ms, rows[-1].open_time_ms
            if last + step < hi:
                pending.append((last + step, hi))
            if first > lo:
                pending.append((lo, first))  # fetched next (stack): keeps requests roughly in time order
        log.debug("fetched %d %s %s candles in %d requests", len(found), symbol, interval, requests)
        return [found[t] for t in sorted(found)]

    async def recent_trades(self, symbol: str, limit: int = 500) -> list[PublicTrade]:
        """The latest public trades (oldest first)."""
        data = await self._call(ep.TRADES, {"symbol": symbol, "limit": limit})
        trades = self._parse(ep.TRADES, parse_many, lambda o: parse_public_trade(o, symbol), data, "trades")
        return sorted(trades, key=lambda t: t.time_ms)

    async def premium_index(self, symbol: str) -> PremiumIndex:
        """Mark price, index price and funding for ``symbol``."""
        data = await self._call(ep.PREMIUM_INDEX, {"symbol": symbol})
        items = self._parse(ep.PREMIUM_INDEX, parse_one_or_many, parse_premium_index, data, "premiumIndex")
        for item in items:
            if item.symbol in (symbol, ""):
                return item
        raise BingxResponseError(f"no premium index for {symbol}", endpoint=ep.PREMIUM_INDEX.path)

    async def funding_rate_history(self, symbol: str, start_ms: int | None = None, end_ms: int | None = None,
                                   limit: int = 100) -> list[FundingRate]:
        """Past funding rates, oldest first (BingX may answer ``null`` when empty)."""
        data = await self._call(ep.FUNDING_RATE, {"symbol": symbol, "startTime": start_ms, "endTime": end_ms,
                                                  "limit": limit})
        rows = self._parse(ep.FUNDING_RATE, parse_many, parse_funding_rate, data, "fundingRate")
        return sorted(rows, key=lambda r: r.funding_time_ms)

    # --- account -------------------------------------------------------------------------------

    async def balance(self) -> list[Balance]:
        """Futures wallet per asset (USDT live, VST on the demo host)."""
        data = await self._call(ep.BALANCE)
        return self._parse(ep.BALANCE, parse_balances, data)

    async def positions(self, symbol: str | None = None) -> list[Position]:
        """Open positions (``[]`` when flat)."""
        data = await self._call(ep.POSITIONS, {"symbol": symbol})
        return self._parse(ep.POSITIONS, parse_many, parse_position, data, "positions")

    async def income(self, symbol: str | None = None, income_type: str | None = None, start_ms: int | None = None,
                     end_ms: int | None = None, limit: int = 100) -> list[Income]:
        """Income records (funding, realised PnL, fees...)."""
        data = await self._call(ep.INCOME, {"symbol": symbol, "incomeType": income_type, "startTime": start_ms,
                                            "endTime": end_ms, "limit": limit})
        return self._parse(ep.INCOME, parse_many, parse_income, data, "income")

    async def commission_rate(self) -> CommissionRate:
        """The account's taker and maker fee rates."""
        data = await self._call(ep.COMMISSION)
        return self._parse(ep.COMMISSION, parse_commission_rate, data)

    async def fills(self, symbol: str, start_ms: int, end_ms: int, order_id: str | None = None) -> list[Fill]:
        """The account's own fills in ``[start_ms, end_ms]`` (coin units)."""
        data = await self._call(ep.FILLS, {"symbol": symbol, "startTs": start_ms, "endTs": end_ms,
                                           "tradingUnit": "COIN", "orderId": order_id})
        rows = data.get("fill_orders") if isinstance(data, dict) else data
        return self._parse(ep.FILLS, parse_many, parse_fill, rows, "fill_orders")

    async def position_history(self, symbol: str, start_ms: int | None = None, end_ms: int | None = None,
                               page_size: int = 100) -> list[PositionHistoryEntry]:
        """Closed positions for ``symbol``."""
        data = await self._call(ep.POSITION_HISTORY, {"symbol": symbol, "startTs": start_ms, "endTs": end_ms,
                                                      "pageSize": page_size})
        rows = data.get("positionHistory") if isinstance(data, dict) else data
        return self._parse(ep.POSITION_HISTORY, parse_many, parse_position_history, rows, "positionHistory")

    async def maint_margin_tiers(self, symbol: str) -> list[MaintMarginTier]:
        """Maintenance-margin tiers for ``symbol``."""
        data = await self._call(ep.MAINT_MARGIN, {"symbol": symbol})
        return self._parse(ep.MAINT_MARGIN, parse_many, parse_maint_margin_tier, data, "tiers")

    # --- settings ------------------------------------------------------------------------------

    async def set_leverage(self, symbol: str, side: PositionSide | str, leverage: int) -> Leverage:
        """Set leverage for one side (LONG/SHORT in hedge mode, BOTH in one-way mode)."""
        data = await self._call(ep.SET_LEVERAGE, {"symbol": symbol, "side": PositionSide(side).value,
                                                  "leverage": int(leverage)})
        return self._parse(ep.SET_LEVERAGE, parse_leverage, data or {"leverage": leverage}, symbol)

    async def get_leverage(self, symbol: str) -> Leverage:
        """Current long/short leverage and the maxima for ``symbol``."""
        data = await self._call(ep.GET_LEVERAGE, {"symbol": symbol})
        return self._parse(ep.GET_LEVERAGE, parse_leverage, data, symbol)

    async def set_margin_type(self, symbol: str, margin_type: MarginType | str) -> None:
        """ISOLATED / CROSSED / SEPARATE_ISOLATED (fails with positions or open orders)."""
        await self._call(ep.SET_MARGIN_TYPE, {"symbol": symbol, "marginType": MarginType(margin_type).value})

    async def get_margin_type(self, symbol: str) -> MarginType:
        """Current margin type of ``symbol``."""
        data = await self._call(ep.GET_MARGIN_TYPE, {"symbol": symbol})
        return self._parse(ep.GET_MARGIN_TYPE, parse_margin_type, data)

    async def set_position_mode(self, dual_side: bool) -> bool:
        """``True`` = hedge mode, ``False`` = one-way. Returns the mode BingX reports."""
        data = await self._call(ep.SET_POSITION_MODE, {"dualSidePosition": "true" if dual_side else "false"})
        if isinstance(data, dict) and "dualSidePosition" in data:
            return self._parse(ep.SET_POSITION_MODE, parse_position_mode, data)
        return dual_side

    async def get_position_mode(self) -> bool:
        """``True`` when the account is in hedge (dual-side) mode."""
        data = await self._call(ep.GET_POSITION_MODE)
        return self._parse(ep.GET_POSITION_MODE, parse_position_mode, data)

    # --- orders --------------------------------------------------------------------------------

    async def prepare_order(self, req: OrderRequest, *, reference_price: Decimal | None = None) -> OrderRequest:
        """Validate the client order id, round to the contract, and check minimums locally.

        For orders whose notional depends on the market (MARKET, trailing), the last price is
        fetched when ``reference_price`` is not given.
        """
        if not req.client_order_id:
            raise OrderValidationError(
                f"{req.symbol}: every placement needs a client_order_id (use new_client_order_id())")
        if not is_valid_client_order_id(req.client_order_id):
            raise OrderValidationError(
                f"{req.symbol}: client_order_id {req.client_order_id!r} must be 1-40 lower-case letters/digits")
        rules = await self.rules(req.symbol)
        if reference_price is None and rules.notional_price(req, None) is None and req.quantity is not None:
            reference_price = (await self.ticker_price(req.symbol)).price
        return rules.prepare(req, reference_price=reference_price)

    async def place_order(self, req: OrderRequest, *, reference_price: Decimal | None = None) -> Order:
        """Place one order, idempotently.

        The request carries ``req.client_order_id``. If the outcome is unknown (timeout, network
        error, 5xx, busy code, unreadable answer) or BingX says the id was already used, the order
        is looked up and whatever the exchange has is returned. For conditional types BingX may
        ignore the client id (protocol notes 6.5, UNCONFIRMED), so a miss by id is confirmed only
        after the symbol's open orders show no matching order created since the first send.
        Only a confirmed absence allows one resend with the same id. If the state still cannot be
        established, :class:`OrderStateUnknownError` is raised: stop opening positions and alert.
        A 101209 answer ("max position value" or, in an older list, "submitted twice within 1 s")
        is looked up the same way and re-raised as a rejection when the order is absent.
        """
        prepared = await self.prepare_order(req, reference_price=reference_price)
        cid = prepared.client_order_id or ""
        ctx = {"symbol": prepared.symbol, "client_order_id": cid}
        first_send_ms = self.time.now_ms()  # server-time estimate: lower bound for a conditional twin's time
        for attempt in (1, 2):
            try:
                return self._placed(await self._call(ep.PLACE_ORDER, prepared.to_params()), prepared)
            except BingxInvalidParameterError as exc:
                if exc.code not in AMBIGUOUS_REJECTION_CODES:
                    raise
                log.warning("placement of %s on %s answered %s, which may also mean 'already submitted'; "
                            "looking it up", cid, prepared.symbol, exc.code, extra=ctx)
                existing = await self._recover_placed(prepared, first_send_ms, exc)
                if existing is None:
                    raise
                log.warning("order %s exists on the exchange despite %s (status %s); not resending",
                            cid, exc.code, existing.status, extra=ctx)
                return existing
            except (*_UNKNOWN_OUTCOME, BingxDuplicateClientOrderIdError) as exc:
                log.warning("placement of %s on %s has an unknown outcome (%s); looking it up by client order id",
                            cid, prepared.symbol, exc, extra=ctx)
                existing = await self._recover_placed(prepared, first_send_ms, exc)
                if existing is not None:
                    log.warning("order %s found on the exchange after an unknown outcome (status %s); not resending",
                                cid, existing.status, extra=ctx)
                    return existing
                if isinstance(exc, BingxDuplicateClientOrderIdError):
                    raise  # BingX says the id exists but cannot show it: never resend
                if attempt == 2:
                    raise OrderStateUnknownError(
                        f"{prepared.symbol}: order {cid} still absent after one resend; its state is unknown",
                        client_order_id=cid, symbol=prepared.symbol, endpoint=ep.PLACE_ORDER.path) from None
                log.warning("order %s confirmed absent on the exchange; resending once with the same id", cid,
                            extra=ctx)
        raise AssertionError("unreachable")  # pragma: no cover

    def _placed(self, data: Any, req: OrderRequest) -> Order:
        order = self._parse(ep.PLACE_ORDER, lambda d: unwrap_order(d, default_status=OrderStatus.NEW), data)
        if not order.client_order_id and req.client_order_id:
            # The live place response often echoes clientOrderID as "": keep the id we sent.
            order = dataclasses.replace(order, client_order_id=req.client_order_id)
        log.info("order %s placed on %s: id %s, %s %s %s", order.client_order_id, req.symbol, order.order_id,
                 req.side.value, req.type.value, req.quantity,
                 extra={"symbol": req.symbol, "client_order_id": order.client_order_id})
        return order

    async def _recover_placed(self, req: OrderRequest, since_ms: int, cause: BaseException) -> Order | None:
        """The order ``req`` created on the exchange, or ``None`` only for a confirmed absence.

        Looks up by client order id; for conditional types a miss is checked against the open
        orders (BingX may have dropped the id). Raises :class:`OrderStateUnknownError` when the
        state cannot be established.
        """
        cid = req.client_order_id or ""
        found = await self._lookup_after_unknown(req.symbol, cid, cause)
        if found is None and req.type in CONDITIONAL_ORDER_TYPES:
            found = await self._find_conditional_twin(req, since_ms, cause)
        if found is not None and not found.client_order_id:
            found = dataclasses.replace(found, client_order_id=cid)  # BingX may echo an empty id
        return found

    async def find_conditional_order(self, req: OrderRequest, since_ms: int) -> Order | None:
        """The open conditional order that ``req`` created, for a caller that cannot find it by client id.

        BingX may ignore ``clientOrderId`` on conditional orders (protocol 6.5, UNCONFIRMED), so a miss by
        client id proves nothing for them. Matches on type, side, position side, stop price and quantity
        (rounded as a placement would round them), among orders created at/after ``since_ms`` (server time
        of the first send; clock error allowed for). ``None`` only when the open orders were read and hold no
        such order; several matches, or an unreadable list, raise :class:`OrderStateUnknownError` (never guess).
        """
        if req.type not in CONDITIONAL_ORDER_TYPES:
            raise ValueError(f"{req.type.value} is not a conditional order type")
        try:
            req = await self.prepare_order(req)  # the stored request may carry more digits than the exchange keeps
        except (BingxError, ValueError) as exc:
            log.warning("conditional order %s: could not round the request for the search (%s); matching it as stored",
                        req.client_order_id, exc, extra={"symbol": req.symbol, "client_order_id": req.client_order_id})
        found = await self._find_conditional_twin(req, since_ms, "a lookup by client id found nothing")
        if found is not None and not found.client_order_id and req.client_order_id:
            found = dataclasses.replace(found, client_order_id=req.client_order_id)
        return found

    async def _find_conditional_twin(self, req: OrderRequest, since_ms: int, cause: BaseException | str) -> Order | None:
        """An open order matching conditional ``req`` and created at/after ``since_ms`` (allowing for clock error).

        ``None`` only when the open orders were read and hold no such order; several matches, or
        an unreadable list, raise :class:`OrderStateUnknownError` (never guess which is ours).
        """
        cid = req.client_order_id or ""
        try:
            open_now = await self.open_orders(req.symbol)
        except BingxError as exc:
            raise OrderStateUnknownError(
                f"{req.symbol}: conditional order {cid} not found by client id after {cause}, and the open orders "
                f"could not be read ({exc}); its state is unknown", client_order_id=cid, symbol=req.symbol) from None
        # The offset estimate is off by at most half a round trip; the exchange stamps on arrival.
        slack_ms = _TWIN_CLOCK_SLACK_MS + int(self.time.rtt_ms or 0)
        matches = [o for o in open_now if _is_twin(o, req) and (o.time_ms is None or o.time_ms >= since_ms - slack_ms)]
        if len(matches) > 1:
            raise OrderStateUnknownError(
                f"{req.symbol}: {len(matches)} open orders match conditional order {cid} "
                f"({', '.join(o.order_id for o in matches)}); cannot tell which one is ours",
                client_order_id=cid, symbol=req.symbol)
        if matches:
            log.warning("conditional order %s not findable by client id; adopting matching open order %s",
                        cid, matches[0].order_id, extra={"symbol": req.symbol, "client_order_id": cid})
            return matches[0]
        return None

    async def _lookup_after_unknown(self, symbol: str, client_order_id: str, cause: BaseException) -> Order | None:
        """Find an order by client id after an unknown outcome. ``None`` only for a confirmed absence."""
        await asyncio.sleep(self._order_lookup_delay_s)  # let an in-flight request land first
        try:
            return await self.query_order(symbol, client_order_id=client_order_id)
        except BingxError as exc:
            raise OrderStateUnknownError(
                f"{symbol}: order {client_order_id} outcome unknown ({cause}) and the lookup failed ({exc})",
                client_order_id=client_order_id, symbol=symbol) from None

    async def test_order(self, req: OrderRequest, *, reference_price: Decimal | None = None) -> Order:
        """Validate an order on BingX without executing it (``/trade/order/test``)."""
        prepared = await self.prepare_order(req, reference_price=reference_price)
        data = await self._call(ep.TEST_ORDER, prepared.to_params())
        return self._parse(ep.TEST_ORDER, lambda d: unwrap_order(d, default_status=OrderStatus.NEW), data)

    async def place_batch_orders(self, reqs: Sequence[OrderRequest]) -> BatchOrdersResult:
        """Place up to 5 orders in one request, with the same idempotency rules as :meth:`place_order`."""
        if not 1 <= len(reqs) <= 5:
            raise OrderValidationError(f"a batch holds 1 to 5 orders, got {len(reqs)}")
        prepared = [await self.prepare_order(r) for r in reqs]
        ids = [p.client_order_id for p in prepared]
        if len(set(ids)) != len(ids):
            raise OrderValidationError("client order ids in one batch must be distinct")
        to_send = prepared
        recovered: list[Order] = []
        first_send_ms = self.time.now_ms()
        for attempt in (1, 2):
            try:
                data = await self._call(ep.BATCH_ORDERS, {"batchOrders": [p.to_params() for p in to_send]})
                result = self._parse(ep.BATCH_ORDERS, parse_batch_orders, data)
                return BatchOrdersResult(orders=tuple(recovered) + result.orders, errors=result.errors)
            except _UNKNOWN_OUTCOME as exc:
                log.warning("batch placement has an unknown outcome (%s); looking up %d orders", exc, len(to_send))
                absent: list[OrderRequest] = []
                for p in to_send:
                    found = await self._recover_placed(p, first_send_ms, exc)
                    if found is None:
                        absent.append(p)
                    else:
                        recovered.append(found)
                if not absent:
                    return BatchOrdersResult(orders=tuple(recovered))
                if attempt == 2:
                    raise OrderStateUnknownError(
                        f"batch orders {[p.client_order_id for p in absent]} absent after one resend; state unknown",
                        client_order_id=absent[0].client_order_id or "", symbol=absent[0].symbol) from None
                to_send = absent
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _id_params(order_id: str | int | None, client_order_id: str | None) -> dict[str, Any]:
        if order_id in (None, "") and not client_order_id:
            raise OrderValidationError("give order_id or client_order_id")
        if order_id not in (None, ""):
            if not str(order_id).isdigit():
                raise OrderValidationError(f"order_id must be digits, got {order_id!r}")
            return {"orderId": str(order_id)}
        return {"clientOrderId": (client_order_id or "").lower()}

    async def cancel_order(self, symbol: str, order_id: str | int | None = None,
                           client_order_id: str | None = None) -> Order:
        """Cancel one order by exchange id or client id; returns the cancelled order."""
        data = await self._call(ep.CANCEL_ORDER, {"symbol": symbol, **self._id_params(order_id, client_order_id)})
        return self._parse(ep.CANCEL_ORDER, unwrap_order, data)

    async def cancel_orders(self, symbol: str, order_ids: Sequence[str | int] | None = None,
                            client_order_ids: Sequence[str] | None = None) -> CancelResult:
        """Cancel up to 10 orders of ``symbol`` by exchange ids or by client ids."""
        if bool(order_ids) == bool(client_order_ids):
            raise OrderValidationError("give either order_ids or client_order_ids")
        ids: Sequence[Any] = order_ids or client_order_ids or []
        if len(ids) > 10:
            raise OrderValidationError(f"at most 10 orders per batch cancel, got {len(ids)}")
        params: dict[str, Any] = {"symbol": symbol}
        if order_ids:
            if not all(str(i).isdigit() for i in order_ids):
                raise OrderValidationError("order ids must be digits")
            params["orderIdList"] = compact_json([int(i) for i in order_ids])  # JSON numbers, as BingX expects
        else:
            params["clientOrderIdList"] = compact_json([c.lower() for c in client_order_ids or []])
        data = await self._call(ep.CANCEL_BATCH, params)
        return self._parse(ep.CANCEL_BATCH, parse_cancel_result, data)

    async def cancel_all_orders(self, symbol: str | None = None) -> CancelResult:
        """Cancel every open order (of ``symbol``, or of all symbols)."""
        data = await self._call(ep.CANCEL_ALL, {"symbol": symbol})
        return self._parse(ep.CANCEL_ALL, parse_cancel_result, data)

    async def open_orders(self, symbol: str | None = None) -> list[Order]:
        """Open orders (resting limit orders show status PENDING)."""
        data = await self._call(ep.OPEN_ORDERS, {"symbol": symbol})
        return self._parse(ep.OPEN_ORDERS, parse_order_list, data)

    async def query_order(self, symbol: str, order_id: str | int | None = None,
                          client_order_id: str | None = None) -> Order | None:
        """One order in any status; ``None`` when BingX says it does not exist."""
        try:
            data = await self._call(ep.QUERY_ORDER, {"symbol": symbol, **self._id_params(order_id, client_order_id)})
        except BingxOrderNotFoundError:
            return None
        if data is None or data == {} or (isinstance(data, dict) and data.get("order") in (None, {})
                                           and "order" in data):
            return None
        return self._parse(ep.QUERY_ORDER, unwrap_order, data)

    async def order_history(self, symbol: str | None = None, start_ms: int | None = None,
                            end_ms: int | None = None, limit: int = 500, order_id: str | None = None) -> list[Order]:
        """Finished orders (``/trade/allOrders``); BingX refuses spans over 7 days."""
        if start_ms is not None and end_ms is not None and end_ms - start_ms > SEVEN_DAYS_MS:
            raise OrderValidationError("order_history spans at most 7 days per request")
        data = await self._call(ep.ORDER_HISTORY, {"symbol": symbol, "startTime": start_ms, "endTime": end_ms,
                                                   "limit": limit, "orderId": order_id})
        return self._parse(ep.ORDER_HISTORY, parse_order_list, data)

    async def close_all_positions(self, symbol: str | None = None) -> CloseAllResult:
        """Market-close every position (of ``symbol``, or all). Never retried automatically."""
        data = await self._call(ep.CLOSE_ALL_POSITIONS, {"symbol": symbol})
        return self._parse(ep.CLOSE_ALL_POSITIONS, parse_close_all, data)

    # --- listen key ----------------------------------------------------------------------------

    async def create_listen_key(self) -> str:
        """A new listen key for the account stream (valid 60 min unless extended)."""
        body = await self._call(ep.LISTEN_KEY_CREATE)
        key = None
        if isinstance(body, dict):
            key = body.get("listenKey")
            if key is None and isinstance(body.get("data"), dict):
                key = body["data"].get("listenKey")  # tolerate an enveloped answer
        if not isinstance(key, str) or not key:
            raise BingxResponseError("no listenKey in the answer", endpoint=ep.LISTEN_KEY_CREATE.path)
        return key

    async def extend_listen_key(self, listen_key: str) -> None:
        """Extend ``listen_key`` to 60 min from now.

        Raises :class:`BingxListenKeyNotFoundError` if expired (404), and its subclass
        :class:`BingxListenKeyNotExtendedError` on a 204 ("no parameters": not extended); either
        way the caller should create a new key.
        """
        await self._call(ep.LISTEN_KEY_EXTEND, {"listenKey": listen_key})

    async def delete_listen_key(self, listen_key: str) -> None:
        """Close ``listen_key`` (404 = already gone, ignored)."""
        with contextlib.suppress(BingxListenKeyNotFoundError):
            await self._call(ep.LISTEN_KEY_DELETE, {"listenKey": listen_key})

