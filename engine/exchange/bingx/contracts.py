"""Contract rules: a cache of ``/quote/contracts`` plus local rounding and minimum checks.

Prices are rounded to the tick (stop-loss triggers toward the entry, never adding risk; other prices
to the nearest tick), quantities *down* to the step (never round a size up), and an order below the
minimum quantity or notional is refused here with a clear error instead of being sent (BingX would
answer 101400 / 110422 / 110425).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, ROUND_HALF_UP, Decimal
from typing import Any, Awaitable, Callable, Iterable

from .errors import OrderValidationError
from .models import Contract, OrderType, PositionSide, Side
from .orders import OrderRequest, TriggerSpec

log = logging.getLogger(__name__)

# Order types whose execution price is their trigger price (for the notional check).
_TRIGGERED_TYPES = frozenset({
    OrderType.STOP_MARKET, OrderType.TAKE_PROFIT_MARKET, OrderType.TRIGGER_MARKET,
})
# For trailing orders ``price`` is a distance, not a price: it must not be used for the notional.
_TRAILING_TYPES = frozenset({OrderType.TRAILING_STOP_MARKET, OrderType.TRAILING_TP_SL})
# Stop-loss order types: a closing one's trigger is rounded toward the entry (see ``round_stop_price``).
_STOP_TYPES = frozenset({OrderType.STOP_MARKET, OrderType.STOP})
# A value this close to a multiple of the step (in steps) is that multiple: float noise, not a price.
_ON_STEP = Decimal("1e-9")


def round_to_step(value: Decimal, step: Decimal, rounding: str) -> Decimal:
    """Round ``value`` to a multiple of ``step`` (``step`` a power of ten or any positive step)."""
    if step <= 0:
        raise ValueError("step must be positive")
    units = (value / step).to_integral_value(rounding=rounding)
    return (units * step).quantize(step)


def round_stop_to_step(value: Decimal, step: Decimal, protects: str) -> Decimal:
    """A stop-loss trigger on a multiple of ``step``, toward the entry of the position it ``protects``.

    LONG: up, SHORT: down. The stop then never sits further from the entry than asked, so the trade
    never risks more than it was sized for (nearest rounding could add half a tick). A value already
    on the step, or within float noise of it, stays where it is.
    """
    if step <= 0:
        raise ValueError("step must be positive")
    if protects not in ("LONG", "SHORT"):
        raise ValueError(f"a stop protects a LONG or SHORT position, got {protects!r}")
    units = value / step
    whole = units.to_integral_value(rounding=ROUND_HALF_UP)
    if abs(units - whole) > _ON_STEP:
        whole = units.to_integral_value(rounding=ROUND_CEILING if protects == "LONG" else ROUND_FLOOR)
    return (whole * step).quantize(step)


class ContractRules:
    """Rounding and minimum checks for one contract."""

    def __init__(self, contract: Contract, *, price_rounding: str = ROUND_HALF_UP) -> None:
        self.contract = contract
        self._price_rounding = price_rounding

    @property
    def symbol(self) -> str:
        """The contract's symbol."""
        return self.contract.symbol

    def round_price(self, price: Decimal) -> Decimal:
        """Nearest multiple of the tick (half-up by default)."""
        return round_to_step(price, self.contract.tick_size, self._price_rounding)

    def round_stop_price(self, price: Decimal, protects: str) -> Decimal:
        """A stop-loss trigger on the tick toward the entry of the ``protects`` (LONG/SHORT) position."""
        return round_stop_to_step(price, self.contract.tick_size, protects)

    def round_qty(self, qty: Decimal) -> Decimal:
        """Quantity rounded DOWN to the step: never trade more than asked."""
        return round_to_step(qty, self.contract.step_size, ROUND_DOWN)

    def check_minimums(self, qty: Decimal, price: Decimal | None, *, requested: Decimal | None = None) -> None:
        """Raise :class:`OrderValidationError` when ``qty`` (already rounded) or its notional is too small.

        ``requested`` is the quantity before rounding, quoted in the message when it differs.
        """
        c = self.contract
        unit = c.asset or "coins"
        shown = f"{qty}"
        if requested is not None and requested != qty:
            shown = f"{requested} (rounded down to {qty} at step {c.step_size})"
        if qty <= 0 or (c.min_qty and qty < c.min_qty):
            minimum = c.min_qty or c.step_size
            raise OrderValidationError(
                f"{c.symbol}: quantity {shown} is below the minimum {minimum} {unit}; refusing to send")
        if price is not None and c.min_notional:
            notional = qty * price
            if notional < c.min_notional:
                raise OrderValidationError(
                    f"{c.symbol}: order value {notional.normalize():f} {c.currency} (quantity {qty} x price {price}) "
                    f"is below the minimum {c.min_notional} {c.currency}; refusing to send")

    def notional_price(self, req: OrderRequest, reference_price: Decimal | None) -> Decimal | None:
        """The price the notional check uses: the limit price, the trigger price, or a reference."""
        if req.type in _TRAILING_TYPES:
            return reference_price
        if req.price is not None and req.type not in _TRIGGERED_TYPES:
            return req.price
        if req.stop_price is not None:
            return req.stop_price
        return reference_price

    def prepare(self, req: OrderRequest, *, reference_price: Decimal | None = None) -> OrderRequest:
        """Return ``req`` rounded to the contract's tick/step, or raise if it cannot be sent.

        ``reference_price`` (e.g. the last price) is needed for the notional check of market
        orders; without it the notional check is skipped for them.
        """
        c = self.contract
        if req.symbol != c.symbol:
            raise OrderValidationError(f"order for {req.symbol} checked against {c.symbol} rules")
        opening = not is_closing(req)
        if opening and (not c.is_online or not c.api_open_allowed):
            raise OrderValidationError(
                f"{c.symbol}: the contract does not accept new positions through the API "
                f"(status {c.status}, apiStateOpen {c.api_open_allowed}); refusing to send")
        changes: dict[str, Any] = {}
        for name in ("price", "stop_price", "activation_price"):
            value = getattr(req, name)
            if value is None:
                continue
            if value <= 0:
                raise OrderValidationError(f"{c.symbol}: {name} must be positive, got {value}")
            stop = name == "stop_price" and req.type in _STOP_TYPES and not opening
            rounded = self.round_stop_price(value, closed_side(req)) if stop else self.round_price(value)
            if rounded.compare_total(value):  # also a different spelling of the same number ("0.50" for "0.5")
                changes[name] = rounded
        for name in ("stop_loss", "take_profit"):
            trigger = getattr(req, name)
            if trigger is not None:
                prepared_trigger = self._prepare_trigger(trigger, name, opened_side(req))
                if prepared_trigger is not trigger:
                    changes[name] = prepared_trigger
        # values already on the tick (the broker rounds its levels) leave the request as it is: no copy on the order path
        prepared = dataclasses.replace(req, **changes) if changes else req
        if prepared.close_position and prepared.quantity is None:
            return prepared
        if prepared.quantity is None:
            raise OrderValidationError(f"{c.symbol}: {req.type} order needs a quantity")
        qty = self.round_qty(prepared.quantity)
        if opening:
            self.check_minimums(qty, self.notional_price(prepared, reference_price), requested=prepared.quantity)
        elif qty <= 0:
            # A closing order is never refused for the exchange's minimums (a stop for a small remainder must
            # still go out); only a quantity that rounds to nothing cannot be sent.
            raise OrderValidationError(f"{c.symbol}: quantity {prepared.quantity} rounds down to 0 at step "
                                       f"{c.step_size}; refusing to send")
        return dataclasses.replace(prepared, quantity=qty) if qty != prepared.quantity else prepared

    def _prepare_trigger(self, trigger: TriggerSpec, name: str, opened: str) -> TriggerSpec:
        if trigger.stop_price <= 0:
            raise OrderValidationError(f"{self.symbol}: {name}.stop_price must be positive, got {trigger.stop_price}")
        # the stop-loss attached to an entry protects the position the entry opens
        stop_price = (self.round_stop_price(trigger.stop_price, opened) if name == "stop_loss"
                      else self.round_price(trigger.stop_price))
        changes: dict[str, Any] = {"stop_price": stop_price}
        if trigger.price is not None:
            changes["price"] = self.round_price(trigger.price)
        if trigger.quantity is not None:
            changes["quantity"] = self.round_qty(trigger.quantity)
        if not any(value.compare_total(getattr(trigger, name)) for name, value in changes.items()):
            return trigger  # already exactly as it would be sent
        return dataclasses.replace(trigger, **changes)


def closed_side(req: OrderRequest) -> str:
    """LONG / SHORT: the position a closing order reduces (its position side; in one-way mode, SELL closes a long)."""
    if req.position_side in (PositionSide.LONG, PositionSide.SHORT):
        return str(req.position_side)
    return "LONG" if req.side == Side.SELL else "SHORT"


def opened_side(req: OrderRequest) -> str:
    """LONG / SHORT: the position an order adds to (its position side; in one-way mode, BUY opens a long)."""
    if req.position_side in (PositionSide.LONG, PositionSide.SHORT):
        return str(req.position_side)
    return "LONG" if req.side == Side.BUY else "SHORT"


def is_closing(req: OrderRequest) -> bool:
    """True for an order that can only reduce a position.

    In hedge mode BingX rejects ``reduceOnly``, so a stop, target or exit is recognised by its
    side: SELL on the LONG side and BUY on the SHORT side close. Closing orders must never be held
    back by the checks meant for new positions (API opening switched off, minimum size).
    """
    if req.reduce_only or req.close_position:
        return True
    return (req.side, req.position_side) in ((Side.SELL, PositionSide.LONG), (Side.BUY, PositionSide.SHORT))


class ContractCache:
    """All contracts, loaded once and refreshed after ``ttl_s`` or when a symbol is unknown."""

    def __init__(self, loader: Callable[[], Awaitable[list[Contract]]], *, ttl_s: float = 3600.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._loader = loader
        self._ttl_s = ttl_s
        self._mono = monotonic
        self._by_symbol: dict[str, Contract] = {}
        self._loaded_at: float | None = None
        self._lock = asyncio.Lock()

    def store(self, contracts: Iterable[Contract]) -> None:
        """Replace the cache content (called after any full contracts fetch)."""
        self._by_symbol = {c.symbol: c for c in contracts}
        self._loaded_at = self._mono()

    def _fresh(self) -> bool:
        return self._loaded_at is not None and self._mono() - self._loaded_at < self._ttl_s

    async def refresh(self) -> None:
        """Reload every contract (one request; concurrent callers share it)."""
        requested = self._mono()
        async with self._lock:
            if self._loaded_at is not None and self._loaded_at >= requested:
                return
            self.store(await self._loader())
            log.debug("loaded %d BingX contracts", len(self._by_symbol))

    async def get(self, symbol: str) -> Contract:
        """The contract for ``symbol``; raises :class:`OrderValidationError` if BingX does not list it."""
        if not self._fresh() or symbol not in self._by_symbol:
            await self.refresh()
        try:
            return self._by_symbol[symbol]
        except KeyError:
            raise OrderValidationError(
                f"{symbol}: BingX lists no such perpetual contract (symbols look like BTC-USDT)") from None

    async def rules(self, symbol: str) -> ContractRules:
        """:class:`ContractRules` for ``symbol``."""
        return ContractRules(await self.get(symbol))
