"""Orders: client order ids, the placement request, attached SL/TP, and order-shaped answers.

Parsers accept both spellings BingX uses (``clientOrderID``/``clientOrderId``, ``CANCELLED``/
``CANCELED``), ``stopLoss``/``takeProfit`` as objects or JSON strings, and ``""`` for empty numbers.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from .models import (
    MalformedPayloadError,
    OrderStatus,
    OrderType,
    PositionSide,
    Side,
    TimeInForce,
    WorkingType,
    _leverage,
    _list,
    _mapping,
    _str,
    loads,
    req_decimal,
    to_bool,
    to_decimal,
    to_id,
    to_int,
    zero_decimal,
)
from .signing import compact_json

# --- orders ----------------------------------------------------------------------------------

_CLIENT_ID_RE = re.compile(r"^[a-z0-9]{1,40}$")
_PREFIX_RE = re.compile(r"^[a-z0-9]{0,16}$")


def new_client_order_id(prefix: str = "") -> str:
    """A fresh client order id: lower-case alphanumeric, at most 40 chars, unique in practice.

    Layout: ``prefix`` (<=16 chars) + base-36 milliseconds + 64 random bits in hex. BingX
    lower-cases client ids, so only lower-case is used to keep lookups exact.
    """
    prefix = prefix.lower()
    if not _PREFIX_RE.match(prefix):
        raise ValueError(f"client order id prefix must be 0-16 lower-case letters/digits, got {prefix!r}")
    return f"{prefix}{_base36(int(time.time() * 1000))}{secrets.token_hex(8)}"[:40]


def is_valid_client_order_id(value: str) -> bool:
    """Lower-case alphanumeric, 1-40 characters."""
    return bool(_CLIENT_ID_RE.match(value))


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while n:
        n, r = divmod(n, 36)
        out = digits[r] + out
    return out or "0"


@dataclass(frozen=True, slots=True)
class TriggerSpec:
    """A stop-loss or take-profit attached to an entry order (sent as a compact JSON string)."""

    type: OrderType
    stop_price: Decimal
    price: Decimal | None = None
    working_type: WorkingType | None = WorkingType.MARK_PRICE
    quantity: Decimal | None = None
    stop_guaranteed: bool | None = None

    def __post_init__(self) -> None:
        # members pass as they are: ``Enum(member)`` costs two Python calls each, and entries run cold (issue 10)
        if type(self.type) is not OrderType:
            object.__setattr__(self, "type", OrderType(self.type))
        if self.working_type is not None and type(self.working_type) is not WorkingType:
            object.__setattr__(self, "working_type", WorkingType(self.working_type))

    def to_wire(self) -> dict[str, Any]:
        """The JSON object BingX expects (key order as in the docs' example)."""
        # ``_value_``, not ``.value``: the same text without the property's two Python calls (the order path runs cold)
        out: dict[str, Any] = {"type": self.type._value_, "stopPrice": self.stop_price}
        if self.price is not None:
            out["price"] = self.price
        if self.working_type is not None:
            out["workingType"] = self.working_type._value_
        if self.quantity is not None:
            out["quantity"] = self.quantity
        if self.stop_guaranteed is not None:
            out["stopGuaranteed"] = "true" if self.stop_guaranteed else "false"
        return out

    def to_json(self) -> str:
        """Compact JSON text of :meth:`to_wire`."""
        return compact_json(self.to_wire())


def parse_trigger(value: Any, name: str) -> TriggerSpec | None:
    """An attached SL/TP from an object or a JSON string; empty placeholders give ``None``."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = loads(value)
        except json.JSONDecodeError:
            raise MalformedPayloadError(f"{name}: not JSON: {value[:60]!r}") from None
    o = _mapping(value, name)
    stop_price = to_decimal(o.get("stopPrice"), f"{name}.stopPrice")
    type_text = _str(o.get("type")).upper()
    if not stop_price:  # BingX fills unused SL/TP with type "" and zeros
        return None
    try:
        order_type = OrderType(type_text) if type_text else (
            OrderType.STOP_MARKET if name.lower().startswith("stop") else OrderType.TAKE_PROFIT_MARKET)
    except ValueError:
        raise MalformedPayloadError(f"{name}.type: unknown order type {type_text!r}") from None
    wt = _str(o.get("workingType")).upper()
    return TriggerSpec(
        type=order_type,
        stop_price=stop_price,
        price=to_decimal(o.get("price"), f"{name}.price") or None,
        working_type=WorkingType(wt) if wt in WorkingType.__members__ else None,
        quantity=to_decimal(o.get("quantity"), f"{name}.quantity") or None,
        stop_guaranteed=to_bool(o.get("stopGuaranteed")),
    )


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """Everything needed to place one order. ``client_order_id`` is required for placement.

    Quantities are in coins. Prices are rounded to the tick and quantities down to the step
    by the REST client (``contracts.ContractRules.prepare``) before sending.
    """

    symbol: str
    side: Side
    position_side: PositionSide
    type: OrderType
    quantity: Decimal | None = None
    price: Decimal | None = None
    stop_price: Decimal | None = None
    working_type: WorkingType | None = None
    time_in_force: TimeInForce | None = None
    reduce_only: bool = False
    close_position: bool = False
    client_order_id: str | None = None
    stop_loss: TriggerSpec | None = None
    take_profit: TriggerSpec | None = None
    price_rate: Decimal | None = None
    activation_price: Decimal | None = None

    def __post_init__(self) -> None:
        # Accept plain strings for the enum fields; fail early on typos. Members pass as they are (see TriggerSpec).
        if type(self.side) is not Side:
            object.__setattr__(self, "side", Side(self.side))
        if type(self.position_side) is not PositionSide:
            object.__setattr__(self, "position_side", PositionSide(self.position_side))
        if type(self.type) is not OrderType:
            object.__setattr__(self, "type", OrderType(self.type))
        if self.working_type is not None and type(self.working_type) is not WorkingType:
            object.__setattr__(self, "working_type", WorkingType(self.working_type))
        if self.time_in_force is not None and type(self.time_in_force) is not TimeInForce:
            object.__setattr__(self, "time_in_force", TimeInForce(self.time_in_force))
        for name in ("quantity", "price", "stop_price", "price_rate", "activation_price"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Decimal):
                text = repr(value) if isinstance(value, float) else value
                object.__setattr__(self, name, req_decimal(text, name))

    def to_params(self) -> dict[str, Any]:
        """Wire parameters for ``POST /trade/order`` (also one element of ``batchOrders``)."""
        params: dict[str, Any] = {
            "symbol": self.symbol,
            "side": self.side._value_,  # ``_value_``: see TriggerSpec.to_wire
            "positionSide": self.position_side._value_,
            "type": self.type._value_,
        }
        optional: dict[str, Any] = {
            "quantity": self.quantity,
            "price": self.price,
            "stopPrice": self.stop_price,
            "workingType": self.working_type._value_ if self.working_type else None,
            "timeInForce": self.time_in_force._value_ if self.time_in_force else None,
            "clientOrderId": self.client_order_id,
            "priceRate": self.price_rate,
            "activationPrice": self.activation_price,
            "stopLoss": self.stop_loss.to_json() if self.stop_loss else None,
            "takeProfit": self.take_profit.to_json() if self.take_profit else None,
        }
        params.update({k: v for k, v in optional.items() if v is not None})
        # Sent only when set: hedge mode rejects the reduceOnly field even when false.
        if self.reduce_only:
            params["reduceOnly"] = "true"
        if self.close_position:
            params["closePosition"] = "true"
        return params


@dataclass(frozen=True, slots=True)
class Order:
    """An order as BingX reports it (place, query, cancel, open orders, history)."""

    order_id: str
    client_order_id: str
    symbol: str
    side: str
    position_side: str
    type: str
    status: OrderStatus
    orig_qty: Decimal
    price: Decimal
    stop_price: Decimal
    executed_qty: Decimal
    avg_price: Decimal
    cum_quote: Decimal
    commission: Decimal
    profit: Decimal
    working_type: str
    time_in_force: str
    reduce_only: bool | None
    close_position: bool | None
    stop_loss: TriggerSpec | None
    take_profit: TriggerSpec | None
    leverage: int | None
    position_id: str
    time_ms: int | None
    update_time_ms: int | None
    raw_status: str = ""

    @property
    def remaining_qty(self) -> Decimal:
        """Quantity still to fill."""
        return max(self.orig_qty - self.executed_qty, Decimal(0))


# The REST answer to a placement is an ``Order`` (kept as a name for callers' readability).
OrderResult = Order


def parse_order(obj: Any, *, default_status: OrderStatus = OrderStatus.UNKNOWN) -> Order:
    """Parse any order object: place response (``quantity``, ``clientOrderID``, stringified
    SL/TP), query/open/cancel objects (``origQty``, ``clientOrderId``, SL/TP objects)."""
    o = _mapping(obj, "order")
    sym = _str(o.get("symbol"))
    order_id = to_id(o.get("orderId", o.get("orderID")))
    raw_status = _str(o.get("status"))
    label = f"order {order_id or '?'}"
    return Order(
        order_id=order_id,
        client_order_id=_str(o.get("clientOrderId", o.get("clientOrderID"))).lower(),
        symbol=sym,
        side=_str(o.get("side")).upper(),
        position_side=_str(o.get("positionSide")).upper(),
        type=_str(o.get("type")).upper(),
        status=OrderStatus.parse(raw_status) if raw_status else default_status,
        orig_qty=zero_decimal(o.get("origQty", o.get("quantity")), f"{label}.origQty"),
        price=zero_decimal(o.get("price"), f"{label}.price"),
        stop_price=zero_decimal(o.get("stopPrice", o.get("StopPrice")), f"{label}.stopPrice"),
        executed_qty=zero_decimal(o.get("executedQty"), f"{label}.executedQty"),
        avg_price=zero_decimal(o.get("avgPrice"), f"{label}.avgPrice"),
        cum_quote=zero_decimal(o.get("cumQuote"), f"{label}.cumQuote"),
        commission=zero_decimal(o.get("commission"), f"{label}.commission"),
        profit=zero_decimal(o.get("profit"), f"{label}.profit"),
        working_type=_str(o.get("workingType")),
        time_in_force=_str(o.get("timeInForce")),
        reduce_only=to_bool(o.get("reduceOnly")),
        close_position=to_bool(o.get("closePosition")),
        stop_loss=parse_trigger(o.get("stopLoss"), "stopLoss"),
        take_profit=parse_trigger(o.get("takeProfit"), "takeProfit"),
        leverage=_leverage(o.get("leverage"), f"{label}.leverage"),
        position_id=to_id(o.get("positionID", o.get("positionId"))),
        time_ms=to_int(o.get("time", o.get("transactTime")), f"{label}.time"),
        update_time_ms=to_int(o.get("updateTime"), f"{label}.updateTime"),
        raw_status=raw_status,
    )


def unwrap_order(data: Any, *, default_status: OrderStatus = OrderStatus.UNKNOWN) -> Order:
    """``{"order": {...}}`` (or a bare order object) -> ``Order``."""
    o = _mapping(data, "data")
    return parse_order(o.get("order", o), default_status=default_status)


def parse_order_list(data: Any, key: str = "orders") -> list[Order]:
    """``{"orders": [...]}`` or a bare array (``null`` = empty)."""
    if isinstance(data, Mapping):
        data = data.get(key)
    return [parse_order(item) for item in _list(data, key)]


@dataclass(frozen=True, slots=True)
class CancelFailure:
    """One order a batch cancel could not cancel."""

    order_id: str
    client_order_id: str
    error_code: int | None
    error_message: str


@dataclass(frozen=True, slots=True)
class CancelResult:
    """Outcome of a batch or cancel-all request."""

    cancelled: tuple[Order, ...]
    failed: tuple[CancelFailure, ...]


def parse_cancel_result(data: Any) -> CancelResult:
    """Parse ``{"success": [order...], "failed": [...] | null}``."""
    o = _mapping(data, "cancel") if data is not None else {}
    cancelled = tuple(parse_order(item) for item in _list(o.get("success"), "success"))
    failed = tuple(
        CancelFailure(
            order_id=to_id(f.get("orderId")),
            client_order_id=_str(f.get("clientOrderId", f.get("clientOrderID"))),
            error_code=to_int(f.get("errorCode"), "failed.errorCode"),
            error_message=_str(f.get("errorMessage")),
        )
        for f in (_mapping(item, "failed[]") for item in _list(o.get("failed"), "failed"))
    )
    return CancelResult(cancelled=cancelled, failed=failed)


@dataclass(frozen=True, slots=True)
class BatchOrderError:
    """One element of a batch placement that BingX refused."""

    client_order_id: str
    code: int | None
    message: str


@dataclass(frozen=True, slots=True)
class BatchOrdersResult:
    """Outcome of ``place_batch_orders``: accepted orders and per-order errors."""

    orders: tuple[Order, ...]
    errors: tuple[BatchOrderError, ...] = field(default_factory=tuple)


def parse_batch_orders(data: Any) -> BatchOrdersResult:
    """Parse ``{"orders": [...], "errors"?: [...]}``."""
    o = _mapping(data, "batchOrders") if data is not None else {}
    orders = tuple(parse_order(item, default_status=OrderStatus.NEW) for item in _list(o.get("orders"), "orders"))
    errors = tuple(
        BatchOrderError(
            client_order_id=_str(e.get("clientOrderId", e.get("clientOrderID"))).lower(),
            code=to_int(e.get("code", e.get("errorCode")), "errors.code"),
            message=_str(e.get("msg", e.get("errorMessage", e.get("message")))),
        )
        for e in (_mapping(item, "errors[]") for item in _list(o.get("errors"), "errors"))
    )
    return BatchOrdersResult(orders=orders, errors=errors)


@dataclass(frozen=True, slots=True)
class CloseAllResult:
    """Ids of the close orders created by ``closeAllPositions`` and of failures."""

    success_ids: tuple[str, ...]
    failed_ids: tuple[str, ...]


def parse_close_all(data: Any) -> CloseAllResult:
    """Parse ``{"success": [ids], "failed": null | [ids]}``."""
    o = _mapping(data, "closeAllPositions") if data is not None else {}
    return CloseAllResult(
        success_ids=tuple(to_id(x) for x in _list(o.get("success"), "success")),
        failed_ids=tuple(to_id(x) for x in _list(o.get("failed"), "failed")),
    )
