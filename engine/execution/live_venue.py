"""``LiveVenue``: real orders on BingX (production or the VST demo host) through ``BingxRestClient``.

Order reports arrive through :class:`~engine.execution.order_tracker.OrderTracker` (account stream,
REST polling as the safety net), which hands them to the same callback the broker registered here.

Choices:
* conditional orders (the stop-loss and take-profit, attached or standalone) trigger on the last
  traded price (``workingType=CONTRACT_PRICE``): the price the strategies' candles are made of,
  so the exchange fires exactly when the engine's candle range says the level traded;
* hedge mode: closing orders use the closing side of the position side and never send
  ``reduceOnly`` (BingX rejects that field in hedge mode); they reduce by construction;
* a placement is idempotent by client order id (``BingxRestClient.place_order`` looks an
  unanswered order up and resends at most once after a confirmed absence); an unresolvable
  outcome becomes :class:`PlacementUnknown`.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from decimal import Decimal

from db.models import OrderStatus
from engine.exchange.bingx.errors import (
    BingxError,
    BingxNetworkError,
    BingxOrderNotFoundError,
    BingxRateLimitError,
    BingxServerError,
    BingxTimestampError,
    BingxDuplicateClientOrderIdError,
    BingxUnknownError,
    OrderStateUnknownError,
)
from engine.exchange.bingx.models import Balance
from engine.exchange.bingx import Order as BingxOrder
from engine.exchange.bingx import OrderRequest, OrderType, PositionSide, Side, TriggerSpec, WorkingType
from engine.exchange.bingx import OrderStatus as BingxStatus
from engine.exchange.bingx.rest import BingxRestClient
from engine.execution.venue import ExecMode, OrderSpec, PlacementRejected, PlacementUnknown, UpdateCallback, VenueUpdate

logger = logging.getLogger(__name__)

ZERO = Decimal(0)

_STATUS = {
    BingxStatus.NEW: OrderStatus.NEW,
    BingxStatus.PENDING: OrderStatus.NEW,
    BingxStatus.RUNNING: OrderStatus.NEW,
    BingxStatus.PARTIALLY_FILLED: OrderStatus.PARTIALLY_FILLED,
    BingxStatus.FILLED: OrderStatus.FILLED,
    BingxStatus.CANCELED: OrderStatus.CANCELLED,
    BingxStatus.EXPIRED: OrderStatus.EXPIRED,
    BingxStatus.FAILED: OrderStatus.REJECTED,
}


def map_status(status: BingxStatus) -> OrderStatus | None:
    """Our status for a BingX status (None: unreadable, keep what we know)."""
    return _STATUS.get(status)


def update_from_order(order: BingxOrder, source: str) -> VenueUpdate | None:
    """A REST order object as a venue update (no individual fill: REST reports totals)."""
    status = map_status(order.status)
    if status is None:
        return None
    return VenueUpdate(
        symbol=order.symbol, exchange_order_id=order.order_id, client_order_id=order.client_order_id, side=order.side,
        position_side=order.position_side, order_type=order.type, status=status, quantity=order.orig_qty,
        stop_price=order.stop_price, executed_qty=order.executed_qty, avg_price=order.avg_price,
        fee_total=-order.commission if order.commission else None, realized_total=order.profit,
        time_ms=order.update_time_ms or order.time_ms, source=source,
    )


class LiveVenue:
    """BingX USDT-M perpetuals, hedge mode."""

    mode = ExecMode.LIVE

    def __init__(self, rest: BingxRestClient, *, quote_asset: str | None = None) -> None:
        self.rest = rest
        self.quote_asset = quote_asset  # USDT on production, VST on the demo host; None: USDT
        self.ticks: dict[str, Decimal] = {}
        self._callback: UpdateCallback | None = None
        self._hedge_checked = False

    def set_update_callback(self, callback: UpdateCallback) -> None:
        """Where order updates go (the tracker calls :meth:`emit`)."""
        self._callback = callback

    async def emit(self, update: VenueUpdate) -> None:
        """Hand one update to the broker."""
        if self._callback is not None:
            await self._callback(update)

    async def load_symbols(self, symbols: list[str]) -> dict[str, Decimal]:
        """Price ticks of ``symbols`` from the contract list (needed before trading them)."""
        for symbol in symbols:
            contract = await self.rest.contract(symbol)
            self.ticks[symbol] = contract.tick_size
        return self.ticks

    def price_tick(self, symbol: str) -> Decimal:
        """Tick of ``symbol`` (from :meth:`load_symbols`)."""
        return self.ticks[symbol]

    async def prepare_symbol(self, symbol: str, leverage: int) -> None:
        """Hedge mode (account-wide, checked once) and the leverage on both sides of ``symbol``."""
        if not self._hedge_checked:
            if not await self.rest.get_position_mode():
                await self.rest.set_position_mode(True)
                logger.warning("[LIVE] account switched to hedge position mode", extra={"mode": "live"})
            self._hedge_checked = True
        for side in (PositionSide.LONG, PositionSide.SHORT):
            await self.rest.set_leverage(symbol, side, leverage)
        logger.info("[LIVE] %s: hedge mode, leverage %dx on both sides", symbol, leverage, extra={"mode": "live", "symbol": symbol})

    async def wallet_balance(self) -> Decimal:
        """The futures wallet balance of the quote asset (USDT; VST on the demo host)."""
        balance = self._margin_balance(await self.rest.balance())
        return balance.balance if balance is not None else ZERO

    async def available_margin(self) -> Decimal:
        """The margin asset's available margin (USDT, or VST on the demo account); raises when there is none."""
        balance = self._margin_balance(await self.rest.balance())
        if balance is None:
            raise LookupError("no margin asset in the balance")
        return balance.available_margin

    def _margin_balance(self, balances: list[Balance]) -> Balance | None:
        """The balance the bot trades with: the configured quote asset's, else USDT's, else the only funded one.

        The fallback is for an account whose listing genuinely lacks the configured asset; it never picks
        another asset over USDT because of its place in the list (a v3 listing may put USDC first).
        """
        for wanted in (self.quote_asset, "USDT"):
            match = next((b for b in balances if wanted is not None and b.asset == wanted), None)
            if match is not None:
                return match
        return _funded(balances)

    async def position_qty(self, symbol: str, position_side: str) -> Decimal:
        """Size of the hedge position on BingX."""
        for position in await self.rest.positions(symbol):
            if position.symbol == symbol and position.direction == position_side:
                return position.size
        return ZERO

    def _request(self, spec: OrderSpec) -> OrderRequest:
        stop_loss = take_profit = None
        if spec.attached_stop is not None:
            stop_loss = TriggerSpec(OrderType.STOP_MARKET, spec.attached_stop, working_type=WorkingType.CONTRACT_PRICE,
                                    quantity=spec.quantity)
        if spec.attached_target is not None:
            take_profit = TriggerSpec(OrderType.TAKE_PROFIT_MARKET, spec.attached_target, working_type=WorkingType.CONTRACT_PRICE,
                                      quantity=spec.quantity)
        conditional = spec.order_type != "MARKET"
        return OrderRequest(
            symbol=spec.symbol, side=Side(spec.side), position_side=PositionSide(spec.position_side), type=OrderType(spec.order_type),
            quantity=spec.quantity, stop_price=spec.stop_price if conditional else None,
            working_type=WorkingType.CONTRACT_PRICE if conditional else None, client_order_id=spec.client_order_id,
            stop_loss=stop_loss, take_profit=take_profit,
        )

    async def place(self, spec: OrderSpec) -> VenueUpdate:
        """Place through the idempotent client; map its failures onto rejected / unknown."""
        try:
            order = await self.rest.place_order(self._request(spec), reference_price=spec.reference_price)
        except OrderStateUnknownError as exc:
            raise PlacementUnknown(str(exc)) from None
        except BingxDuplicateClientOrderIdError as exc:
            # the exchange says an order with this id exists (even if the lookup cannot show it): never "rejected"
            raise PlacementUnknown(f"duplicate client order id: {exc}") from None
        except BingxUnknownError as exc:
            # a code nobody classified: the order may or may not exist
            raise PlacementUnknown(f"unclassified exchange answer: {exc}") from None
        except (BingxNetworkError, BingxServerError) as exc:
            # place_order resolves these by lookup; reaching here means the lookup itself failed
            raise PlacementUnknown(str(exc)) from None
        except (BingxRateLimitError, BingxTimestampError) as exc:
            # refused before it was considered (too many requests, clock outside recvWindow): the order does not
            # exist, but the same order may be accepted shortly; the broker must not treat it as a verdict on it
            retry_after = exc.retry_after_s if isinstance(exc, BingxRateLimitError) else None
            raise PlacementRejected(str(exc), code=exc.code, transient=True, retry_after_s=retry_after) from None
        except BingxError as exc:
            raise PlacementRejected(str(exc), code=exc.code) from None
        update = update_from_order(order, "placement")
        if update is None:
            update = VenueUpdate(spec.symbol, order.order_id, spec.client_order_id, spec.side, spec.position_side, spec.order_type,
                                 OrderStatus.NEW, spec.quantity, spec.stop_price or ZERO, ZERO, ZERO, source="placement")
        if not update.client_order_id:
            update = VenueUpdate(**{**_fields(update), "client_order_id": spec.client_order_id})
        return update

    async def cancel(self, symbol: str, exchange_order_id: str) -> VenueUpdate | None:
        """Cancel by exchange id; None when BingX no longer has it working."""
        try:
            order = await self.rest.cancel_order(symbol, order_id=exchange_order_id)
        except BingxOrderNotFoundError:
            return None
        return update_from_order(order, "placement")

    async def find_conditional(self, spec: OrderSpec, sent_at: datetime) -> VenueUpdate | None:
        """The working conditional order (stop/take-profit) that the placement of ``spec`` created, found without its
        client id (BingX may drop it on conditional orders, protocol 6.5, UNCONFIRMED).

        ``sent_at``: when the placement was first sent (wall clock; the row is stored before it is sent). None only
        when the open orders were read and hold no such order; ambiguous or unreadable raises ``BingxError``.
        """
        # the exchange stamps in its own time: the server-time estimate now, minus the age of the placement
        age_ms = max(0, int((datetime.now(timezone.utc) - sent_at).total_seconds() * 1000))
        order = await self.rest.find_conditional_order(self._request(spec), self.rest.time.now_ms() - age_ms)
        if order is None:
            return None
        update = update_from_order(order, "lookup")
        if update is not None and not update.client_order_id:
            update = VenueUpdate(**{**_fields(update), "client_order_id": spec.client_order_id})
        return update

    async def query(self, symbol: str, exchange_order_id: str | None = None, client_order_id: str | None = None) -> VenueUpdate | None:
        """The order now (any status)."""
        order = await self.rest.query_order(symbol, order_id=exchange_order_id, client_order_id=client_order_id)
        return update_from_order(order, "lookup") if order is not None else None

    async def order_fee(self, symbol: str, exchange_order_id: str, since_ms: int) -> Decimal | None:
        """The fee paid on one order from the account's fills (None when none are listed).

        BingX reports a paid commission as a negative number; the sign of the fill list's
        ``commission`` is not settled, so its size is taken (the orders this asks about are
        MARKET entries: taker, always a fee paid).
        """
        end_ms = self.rest.time.now_ms() + 60_000
        fills = await self.rest.fills(symbol, since_ms - 60_000, end_ms, order_id=exchange_order_id)
        mine = [f for f in fills if f.order_id == exchange_order_id]
        if not mine:
            return None
        return sum((abs(f.commission) for f in mine), ZERO)

    async def funding_income(self, symbol: str, since_ms: int) -> list[tuple[str, Decimal, int]]:
        """``(tranId, amount, time_ms)`` of the FUNDING_FEE income of ``symbol`` since ``since_ms`` (negative = paid).

        No end time: everything up to the exchange's now. (An end of "our estimate of server time" cut off
        payments the exchange had already settled whenever that estimate lagged: a clock offset measured a
        while ago, or a replaying simulator whose clock runs many times faster than the wall clock.)
        """
        records = await self.rest.income(symbol, "FUNDING_FEE", start_ms=since_ms, end_ms=None, limit=1000)
        return [(r.tran_id or f"{r.symbol}:{r.time_ms}", r.income, r.time_ms) for r in records
                if r.income_type == "FUNDING_FEE" and r.symbol == symbol and r.time_ms >= since_ms]

    async def open_orders(self, symbol: str) -> list[VenueUpdate]:
        """Working orders of ``symbol``."""
        updates = [update_from_order(o, "lookup") for o in await self.rest.open_orders(symbol)]
        return [u for u in updates if u is not None]


def _fields(update: VenueUpdate) -> dict[str, object]:
    return {name: getattr(update, name) for name in update.__dataclass_fields__}


def _funded(balances: list[Balance]) -> Balance | None:
    """Neither the configured asset nor USDT is listed: the only asset, or the only one with money in it (else None)."""
    if len(balances) == 1:
        return balances[0]
    funded = [b for b in balances if b.balance != 0]
    return funded[0] if len(funded) == 1 else None
