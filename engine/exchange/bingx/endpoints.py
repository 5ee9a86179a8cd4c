"""The BingX USDT-M endpoints this client uses, with their rate-limit groups (protocol notes 4 and 8)."""

from __future__ import annotations

from dataclasses import dataclass

from .ratelimit import Budget, RateLimiter


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One REST endpoint.

    ``group`` is the IP limit group (1 market data, 2/3 account and trade, 0 none known);
    ``uid_per_s`` the per-account budget; ``repeatable`` whether repeating it after an unknown
    outcome (timeout, 5xx) is harmless. Order placement and cancels are never repeatable here.
    """

    method: str
    path: str
    signed: bool
    group: int
    uid_per_s: float | None = None
    repeatable: bool = True
    envelope: bool = True

    @property
    def key(self) -> str:
        """``METHOD path`` (used for bucket names and logs)."""
        return f"{self.method} {self.path}"

    def bucket_keys(self) -> tuple[str, ...]:
        """Names of the limiter buckets this endpoint draws from."""
        keys = [f"uid:{self.key}"]
        if self.group == 1:
            keys.append("ip:group1")
        elif self.group in (2, 3):
            keys += ["ip:account", f"ip:{self.key}"]
        return tuple(keys)


def _pub(path: str) -> Endpoint:
    return Endpoint("GET", path, signed=False, group=1)


SERVER_TIME = _pub("/openApi/swap/v2/server/time")
CONTRACTS = _pub("/openApi/swap/v2/quote/contracts")
TICKER_PRICE = _pub("/openApi/swap/v1/ticker/price")
TICKER_PRICE_LEGACY = _pub("/openApi/swap/v2/quote/price")
TICKER_24H = _pub("/openApi/swap/v2/quote/ticker")
DEPTH = _pub("/openApi/swap/v2/quote/depth")
KLINES = _pub("/openApi/swap/v3/quote/klines")
TRADES = _pub("/openApi/swap/v2/quote/trades")
PREMIUM_INDEX = _pub("/openApi/swap/v2/quote/premiumIndex")
FUNDING_RATE = _pub("/openApi/swap/v2/quote/fundingRate")

BALANCE = Endpoint("GET", "/openApi/swap/v3/user/balance", True, 3, 5)
POSITIONS = Endpoint("GET", "/openApi/swap/v2/user/positions", True, 3, 5)
INCOME = Endpoint("GET", "/openApi/swap/v2/user/income", True, 2, 5)
COMMISSION = Endpoint("GET", "/openApi/swap/v2/user/commissionRate", True, 2, 5)
# 5/s is the docs-bundle value (10/s since 2025-10-16): the lower one can never be exceeded.
PLACE_ORDER = Endpoint("POST", "/openApi/swap/v2/trade/order", True, 3, 5, repeatable=False)
TEST_ORDER = Endpoint("POST", "/openApi/swap/v2/trade/order/test", True, 2, 5, repeatable=False)
BATCH_ORDERS = Endpoint("POST", "/openApi/swap/v2/trade/batchOrders", True, 3, 5, repeatable=False)
CANCEL_ORDER = Endpoint("DELETE", "/openApi/swap/v2/trade/order", True, 3, 5, repeatable=False)
CANCEL_BATCH = Endpoint("DELETE", "/openApi/swap/v2/trade/batchOrders", True, 3, 5, repeatable=False)
CANCEL_ALL = Endpoint("DELETE", "/openApi/swap/v2/trade/allOpenOrders", True, 2, 5, repeatable=False)
OPEN_ORDERS = Endpoint("GET", "/openApi/swap/v2/trade/openOrders", True, 3, 5)
QUERY_ORDER = Endpoint("GET", "/openApi/swap/v2/trade/order", True, 2, 5)
ORDER_HISTORY = Endpoint("GET", "/openApi/swap/v2/trade/allOrders", True, 3, 5)
FILLS = Endpoint("GET", "/openApi/swap/v2/trade/allFillOrders", True, 2, 5)
POSITION_HISTORY = Endpoint("GET", "/openApi/swap/v1/trade/positionHistory", True, 2, 5)
MAINT_MARGIN = Endpoint("GET", "/openApi/swap/v1/maintMarginRatio", True, 2, 5)
SET_LEVERAGE = Endpoint("POST", "/openApi/swap/v2/trade/leverage", True, 2, 5)
GET_LEVERAGE = Endpoint("GET", "/openApi/swap/v2/trade/leverage", True, 2, 5)
SET_MARGIN_TYPE = Endpoint("POST", "/openApi/swap/v2/trade/marginType", True, 2, 2)
GET_MARGIN_TYPE = Endpoint("GET", "/openApi/swap/v2/trade/marginType", True, 2, 2)
SET_POSITION_MODE = Endpoint("POST", "/openApi/swap/v1/positionSide/dual", True, 2, 2)
GET_POSITION_MODE = Endpoint("GET", "/openApi/swap/v1/positionSide/dual", True, 2, 2)
CLOSE_ALL_POSITIONS = Endpoint("POST", "/openApi/swap/v2/trade/closeAllPositions", True, 2, 5, repeatable=False)
LISTEN_KEY_CREATE = Endpoint("POST", "/openApi/user/auth/userDataStream", True, 0, 2, envelope=False)
LISTEN_KEY_EXTEND = Endpoint("PUT", "/openApi/user/auth/userDataStream", True, 0, 2, envelope=False)
LISTEN_KEY_DELETE = Endpoint("DELETE", "/openApi/user/auth/userDataStream", True, 0, 2, envelope=False)

ALL_ENDPOINTS: tuple[Endpoint, ...] = tuple(v for v in dict(globals()).values() if isinstance(v, Endpoint))


def default_limiter(*, guard_s: float = 0.05, uid_scale: float = 1.0) -> RateLimiter:
    """A limiter with BingX's documented budgets for every endpoint above.

    IP group 1: 500 / 10 s and 1000 / 60 s. Groups 2 and 3 share 2000 / 10 s (treated as one pool,
    the stricter reading) and 300 / 10 s per endpoint. Per-UID budgets as listed per endpoint.
    ``uid_scale`` < 1 leaves headroom for other programs using the same API key.
    """
    limiter = RateLimiter(guard_s=guard_s)
    limiter.configure("ip:group1", [Budget(500, 10.0), Budget(1000, 60.0)])
    limiter.configure("ip:account", [Budget(2000, 10.0)])
    for ep in ALL_ENDPOINTS:
        if ep.group in (2, 3):
            limiter.configure(f"ip:{ep.key}", [Budget(300, 10.0)])
        if ep.uid_per_s:
            limiter.configure(f"uid:{ep.key}", [Budget(max(1, int(ep.uid_per_s * uid_scale)), 1.0)])
    return limiter
