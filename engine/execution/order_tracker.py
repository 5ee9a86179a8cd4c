"""Live order status: the account stream first, REST polling as the safety net.

* Every ``ORDER_TRADE_UPDATE`` becomes a :class:`VenueUpdate` (with its execution when it is a
  trade) for the broker; ``ACCOUNT_UPDATE`` funding payments are booked on the open trades.
* A poll loop queries every order the database holds as working: every ``fast_poll_s`` while
  the stream is down (or just reconnected), every ``slow_poll_s`` while it is healthy. A poll
  books missed executions as one aggregated fill, but only for orders the stream has been quiet
  about for ``fill_grace_s`` (the stream's own fills are on their way otherwise).
* Orders in state UNKNOWN are looked up by client order id on every pass; a confirmed absence
  ends them (EXPIRED, source ``lookup``) - they are never resent from here. A stop/take-profit
  missed by client id is searched among the open orders first (BingX may drop the client id of
  conditional orders, protocol 6.5, UNCONFIRMED): found, it is reported with its exchange id;
  ambiguous or unreadable, it stays UNKNOWN for the next pass.
* An order still CREATED/SENT after ``stale_sent_s`` (60 s: longer than a placing call normally
  lives) lost its placing call: it becomes UNKNOWN (``on_unknown`` halts entries and alerts) and is
  looked up like one. Never one whose placing call is still running (``in_flight``, the broker's
  ``placements_in_flight``): a slow call may still resend and fill it, so a lookup miss proves nothing.
* Status changes are decided on the row as it is now (re-read), never on the copy the pass started with.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from db.models import Order, OrderStatus
from engine.exchange.bingx.events import AccountUpdate, OrderUpdate, StreamReconnected
from engine.exchange.bingx.errors import BingxError
from engine.exchange.bingx.rest import CONDITIONAL_ORDER_TYPES
from engine.execution.live_venue import LiveVenue, map_status
from engine.execution.order_store import ATTACHED_PREFIX, OrderStore
from engine.execution.trade_ctx import dataclass_replace
from engine.execution.venue import OrderSpec, VenueFill, VenueUpdate

logger = logging.getLogger(__name__)

ZERO = Decimal(0)
_EXTRA = {"mode": "live"}
_ABSENT = object()  # the search among open orders found no such order
_UNDECIDED = object()  # it could not tell (ambiguous, unreadable)


def update_from_event(event: OrderUpdate) -> VenueUpdate | None:
    """An ``ORDER_TRADE_UPDATE`` as a venue update (its execution attached when it is one)."""
    status = map_status(event.status)
    if status is None:
        logger.warning("[LIVE] order update with unreadable status %r for %s ignored", event.raw_status, event.order_id, extra=_EXTRA)
        return None
    fill = None
    if event.execution_type in ("TRADE", "CALCULATED") and event.last_filled_qty and event.last_filled_qty > 0:
        fill = VenueFill(
            price=event.last_filled_price or event.avg_price, qty=event.last_filled_qty, fee=-event.fee,
            realized_pnl=event.realized_pnl, time_ms=event.trade_time_ms or event.event_time_ms or 0,
            cumulative_qty=event.cumulative_filled_qty,
        )
    return VenueUpdate(
        symbol=event.symbol, exchange_order_id=event.order_id, client_order_id=event.client_order_id, side=event.side,
        position_side=event.position_side, order_type=event.type, status=status, quantity=event.orig_qty,
        stop_price=event.stop_price, executed_qty=event.cumulative_filled_qty, avg_price=event.avg_price, fill=fill,
        time_ms=event.transaction_time_ms or event.event_time_ms, source="stream",
    )


class OrderTracker:
    """Feeds the broker with order reports from the account stream and REST polls."""

    def __init__(self, venue: LiveVenue, *, fast_poll_s: float = 2.0, slow_poll_s: float = 30.0, fill_grace_s: float = 3.0,
                 on_funding: Any = None, stale_sent_s: float = 60.0,
                 on_unknown: Callable[[Order], Awaitable[None]] | None = None,
                 in_flight: Callable[[], frozenset[str]] | None = None) -> None:
        """``stale_sent_s``: age after which an order still CREATED/SENT is treated as UNKNOWN (no placing call
        lives that long); ``on_unknown`` is told about each such order (the broker halts entries and alerts);
        ``in_flight``: the client order ids whose placing call is still running (left alone until it returns)."""
        self.venue = venue
        self.store = OrderStore("live")
        self.fast_poll_s = fast_poll_s
        self.slow_poll_s = slow_poll_s
        self.fill_grace_s = fill_grace_s
        self.on_funding = on_funding
        self.stale_sent_s = stale_sent_s
        self.on_unknown = on_unknown
        self.in_flight = in_flight
        self.stream_connected = False
        self.polls = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- the stream ------------------------------------------------------------------------------

    async def on_account_event(self, event: Any) -> None:
        """The account stream's callback."""
        if isinstance(event, OrderUpdate):
            update = update_from_event(event)
            if update is not None:
                await self.venue.emit(update)
        elif isinstance(event, AccountUpdate):
            if event.reason == "FUNDING_FEE" and self.on_funding is not None:
                change = sum((b.balance_change for b in event.balances), ZERO)
                symbols = {p.symbol for p in event.positions}
                self.on_funding(symbols.pop() if len(symbols) == 1 else None, change,
                                event.transaction_time_ms or event.event_time_ms)
        elif isinstance(event, StreamReconnected):
            logger.warning("[LIVE] account stream reconnected: polling orders now", extra=_EXTRA)
            self._wake.set()

    def set_stream_state(self, connected: bool) -> None:
        """The stream went up or down (down: fast polling at once)."""
        if connected != self.stream_connected:
            self.stream_connected = connected
            self._wake.set()

    # -- polling -----------------------------------------------------------------------------------

    def start(self) -> None:
        """Run the poll loop."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="order-tracker")

    async def stop(self) -> None:
        """Stop polling."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            interval = self.slow_poll_s if self.stream_connected else self.fast_poll_s
            try:
                await asyncio.wait_for(self._wake.wait(), interval)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # a failed pass is retried on the next interval
                logger.exception("[LIVE] order poll failed", extra=_EXTRA)

    async def poll_once(self) -> int:
        """Query every working order once; returns how many were queried."""
        self.polls += 1
        now = datetime.now(timezone.utc)
        count = 0
        for order in await self.store.working():
            quiet = (now - order.updated_at).total_seconds() if order.updated_at else 1e9
            if self._placing(order):
                continue  # its placing call is still running: it owns the order (and looks it up if unanswered)
            if order.status in (OrderStatus.CREATED, OrderStatus.SENT):
                if quiet < self.stale_sent_s:
                    continue  # its placement is in flight: the placing call owns it (and looks it up if unanswered)
                # no placing call is running for it and none lives that long: it died without an answer
                if not await self._stale_placement(order):
                    continue
                count += 1
                await self._poll(order)
                continue
            if self.stream_connected and quiet < self.fill_grace_s and order.status is not OrderStatus.UNKNOWN:
                continue  # the stream is on it
            count += 1
            await self._poll(order)
        return count

    def _placing(self, order: Order) -> bool:
        """Whether the broker's placing call for ``order`` is still running."""
        return self.in_flight is not None and order.client_order_id in self.in_flight()

    async def _stale_placement(self, order: Order) -> bool:
        """A placement left SENT/CREATED: its outcome is unknown from now on (halt, look it up).

        False (nothing changed) when the row moved on meanwhile: the placing call answered after the pass read it.
        """
        if not await self.store.mark_unknown_if_unanswered(order, "poll", error="placement never answered"):
            return False
        logger.error("[LIVE] order %s has been %s for over %.0f s: outcome unknown, looking it up", order.client_order_id,
                     order.status.value, self.stale_sent_s,
                     extra={**_EXTRA, "symbol": order.symbol, "client_order_id": order.client_order_id})
        if self.on_unknown is not None:
            await self.on_unknown(order)
        return True

    async def _poll(self, order: Order) -> None:
        by_client_id = order.exchange_order_id is None and not order.client_order_id.startswith(ATTACHED_PREFIX)
        try:
            update = await self.venue.query(order.symbol, exchange_order_id=None if by_client_id else order.exchange_order_id,
                                            client_order_id=order.client_order_id if by_client_id else None)
        except BingxError as exc:
            logger.warning("[LIVE] poll of %s failed: %s", order.client_order_id, exc,
                           extra={**_EXTRA, "symbol": order.symbol, "client_order_id": order.client_order_id})
            return
        if update is None:
            await order.refresh_from_db()  # the pass's copy may be stale: only a row still UNKNOWN is ended here
            if order.status is not OrderStatus.UNKNOWN or self._placing(order):
                return
            if by_client_id and order.order_type in CONDITIONAL_ORDER_TYPES:
                # BingX may drop the client id of a conditional order (protocol 6.5, UNCONFIRMED): a miss by client id
                # is no proof. Declaring an existing stop absent would make the broker place a second one
                found = await self._find_conditional(order)
                if isinstance(found, VenueUpdate):
                    await self.venue.emit(found)  # the broker adopts it by this row's client id
                if found is not _ABSENT:
                    return
            logger.warning("[LIVE] order %s confirmed absent on the exchange", order.client_order_id,
                           extra={**_EXTRA, "symbol": order.symbol, "client_order_id": order.client_order_id})
            await self.venue.emit(VenueUpdate(order.symbol, "", order.client_order_id, order.side, order.position_side,
                                              order.order_type, OrderStatus.EXPIRED, order.quantity, order.stop_price or ZERO,
                                              ZERO, ZERO, source="lookup"))
            return
        await self.venue.emit(dataclass_replace(update, source="poll"))

    async def _find_conditional(self, order: Order) -> VenueUpdate | object:
        """The working conditional order the placement of ``order`` created, searched without its client id.

        The update to emit (with its exchange order id, source ``lookup``) when found; ``_ABSENT`` when the open
        orders hold no such order; ``_UNDECIDED`` when it cannot be told (ambiguous, unreadable): the row stays
        UNKNOWN for the next pass.
        """
        spec = OrderSpec(symbol=order.symbol, side=order.side, position_side=order.position_side,
                         order_type=order.order_type, quantity=order.quantity, client_order_id=order.client_order_id,
                         stop_price=order.stop_price)
        extra = {**_EXTRA, "symbol": order.symbol, "client_order_id": order.client_order_id}
        try:
            found = await self.venue.find_conditional(spec, order.created_at)
        except (BingxError, ValueError) as exc:
            logger.warning("[LIVE] order %s not found by client id and the search among open orders could not decide "
                           "(%s); still unknown", order.client_order_id, exc, extra=extra)
            return _UNDECIDED
        if found is None:
            return _ABSENT
        known = await self.store.find(exchange_order_id=found.exchange_order_id)
        if known is not None and known.id != order.id:
            return _ABSENT  # that one is another of our orders, not this placement's
        logger.warning("[LIVE] order %s not found by client id but working as %s (the exchange dropped the id)",
                       order.client_order_id, found.exchange_order_id, extra=extra)
        return dataclass_replace(found, client_order_id=order.client_order_id, source="lookup")
