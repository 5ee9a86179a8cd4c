"""BingX USDT-M perpetual connector, split in the style of hummingbot's per-exchange packages.

- ``urls``: production / VST hosts and overrides
- ``signing``: canonical string, HMAC-SHA256, query encoding
- ``errors``: exception hierarchy keyed by BingX codes, with ``retryable`` flags
- ``models``: typed market/account records (Decimal prices, string ids) and tolerant REST parsers
- ``orders``: client order ids, ``OrderRequest``, attached SL/TP, order-shaped answers
- ``events``: typed WebSocket events and their parsers
- ``endpoints`` / ``ratelimit``: endpoint table and shared request budgets
- ``timesync``: offset to BingX server time
- ``contracts``: contract cache, tick/step rounding, local minimum checks
- ``rest``: :class:`BingxRestClient`
- ``wsconn``, ``market_stream``, ``account_stream``: WebSocket streams
- ``doctor``: connection checks in plain words
"""

from .errors import (  # noqa: F401
    BingxAuthError,
    BingxError,
    BingxRateLimitError,
    BingxSignatureError,
    OrderStateUnknownError,
    OrderValidationError,
)
from .models import OrderStatus, OrderType, PositionSide, Side, TimeInForce, WorkingType  # noqa: F401
from .orders import Order, OrderRequest, OrderResult, TriggerSpec, new_client_order_id  # noqa: F401
from .rest import BingxRestClient  # noqa: F401
from .urls import resolve_urls  # noqa: F401
