"""The emergency stop: halt entries, cancel the orders that could open positions, close every
position reduce-only at market, then read the exchange back until it is flat (or give up and say
so). A position's stop is cancelled only after a read-back shows that position flat.

One function, :func:`emergency_stop`, serves ``trading-bot emergency-stop``, the chat command
(through the lead's ``TradingControl.emergency_stop``) and the kill switch's close-all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol, TypeVar

from db.models import OrderIntent, OrderStatus, Trade, TradeState
from engine.exchange.bingx import (
    BingxError,
    Order,
    OrderRequest,
    OrderStateUnknownError,
    OrderType,
    OrderValidationError,
    PositionSide,
    Side,
    WorkingType,
    new_client_order_id,
)
from engine.exchange.bingx.errors import BingxInvalidParameterError
from engine.exchange.bingx.models import Position

from .events import AlertSink, RiskEvent, emit
from .manager import RiskManager
from .order_sides import is_closing_order, is_protective_stop, position_key
from .orders_db import apply_exchange, create_order, set_status
from .state import TradingState

log = logging.getLogger(__name__)

# The broker's trigger basis for stops (engine/execution/live_venue.py): the last traded price.
STOP_WORKING_TYPE = WorkingType.CONTRACT_PRICE
REDUCE_ONLY_WRONG_SIDE = 101290  # a reduce-only order on the side that would grow the one-way position
T = TypeVar("T")


class ExchangeAccount(Protocol):
    """The part of :class:`~engine.exchange.bingx.BingxRestClient` the emergency stop uses."""

    async def positions(self, symbol: str | None = None) -> list[Position]: ...
    async def open_orders(self, symbol: str | None = None) -> list[Order]: ...
    async def cancel_all_orders(self, symbol: str | None = None) -> object: ...
    async def cancel_order(self, symbol: str, order_id: str | int | None = None,
                           client_order_id: str | None = None) -> Order: ...
    async def place_order(self, req: OrderRequest, *, reference_price: Decimal | None = None) -> Order: ...


@dataclass
class EmergencyReport:
    """Outcome; ``flat`` is what the exchange said when read back, never assumed.

    The first four fields match ``commands.ports.EmergencyStopReport``.
    """

    cancelled_orders: int = 0
    closed_positions: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    flat: bool = False
    remaining_orders: list[str] = field(default_factory=list)
    remaining_positions: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # bookkeeping problems (database down): not about flatness

    def text(self) -> str:
        """Plain-text report for the terminal and chat."""
        lines = [f"cancelled orders: {self.cancelled_orders}"]
        lines += [f"closed: {p}" for p in self.closed_positions] or ["closed: no positions were open"]
        lines += [f"FAILED: {f}" for f in self.failures]
        lines += [f"WARNING: {w}" for w in self.warnings]
        lines += [f"STILL OPEN order: {o}" for o in self.remaining_orders]
        lines += [f"STILL OPEN position: {p}" for p in self.remaining_positions]
        lines.append("account is FLAT with no open orders" if self.flat
                     else "account is NOT flat: check the exchange now")
        return "\n".join(lines)


def close_request(position: Position, client_order_id: str, *, flip: bool = False) -> OrderRequest:
    """A market order that only reduces ``position`` (hedge: closing side; one-way: reduceOnly).

    ``flip``: the opposite side, for a one-way position whose direction was read wrong (see
    :func:`close_positions`).
    """
    direction = position.direction
    side = Side.SELL if (direction == "LONG") != flip else Side.BUY
    if position.position_side in ("LONG", "SHORT"):
        return OrderRequest(symbol=position.symbol, side=side, position_side=PositionSide(position.position_side),
                            type=OrderType.MARKET, quantity=position.size, client_order_id=client_order_id)
    return OrderRequest(symbol=position.symbol, side=side, position_side=PositionSide.BOTH, type=OrderType.MARKET,
                        quantity=position.size, reduce_only=True, client_order_id=client_order_id)


async def _owning_trade_id(position: Position, mode: str) -> int | None:
    """The bot's single open trade behind this position, so reconciliation books the close as its exit.

    Without the link the trade stays open in the database after the account is flat, and the next
    reconciliation halts on "no position and no exit order of it filled".
    """
    owners = await Trade.filter(mode=mode, symbol=position.symbol, side=position.direction,
                                state__in=[TradeState.OPEN, TradeState.CLOSING]).values_list("id", flat=True)
    return owners[0] if len(owners) == 1 else None


async def _bookkeeping(report: EmergencyReport, what: str, step: Awaitable[T]) -> T | None:
    """Await a database step of the emergency stop; on failure log loudly, note it, return None.

    Closing the account beats bookkeeping in an emergency: the exchange part goes on without it.
    """
    try:
        return await step
    except Exception as exc:  # noqa: BLE001 - any database failure; the exchange part must go on
        note = f"database unavailable ({type(exc).__name__}): {what} not recorded"
        if note not in report.warnings:
            report.warnings.append(note)
        log.critical("EMERGENCY STOP: %s; going on with the exchange part anyway", note, exc_info=True)
        return None


async def _db_step(report: EmergencyReport, what: str, step: Awaitable[object]) -> bool:
    """:func:`_bookkeeping` for a step without a result: True when it was done."""
    async def run() -> bool:
        await step
        return True

    return await _bookkeeping(report, what, run()) is True


def _reduce_only_refused(exc: BingxError) -> bool:
    """The exchange refused a reduce-only close as invalid (wrong side for the position: BingX 101290 or alike).

    A local validation error (never sent) is not one: the other side would be refused the same way.
    """
    return exc.code == REDUCE_ONLY_WRONG_SIDE or (
        isinstance(exc, BingxInvalidParameterError) and not isinstance(exc, OrderValidationError))


async def close_positions(client: ExchangeAccount, positions: Sequence[Position], *, mode: str | None,
                          intent: OrderIntent, report: EmergencyReport, source: str) -> None:
    """Close each position at market, reduce-only; ``mode`` set = store each order before sending it.

    A database failure (``mode`` set) does not stop the close: it is sent unrecorded and the report
    says so. A one-way (BOTH) position whose reduce-only close is refused as the wrong side is tried
    once more on the other side: the sign convention of ``positionAmt`` is UNCONFIRMED (protocol
    4.3), and a reduce-only order can never open or flip a position, so the second try is safe.
    """
    for position in positions:
        if position.size <= 0:
            continue
        label = f"{position.symbol} {position.direction} {position.size:f}"
        cid = new_client_order_id("emg")
        request = close_request(position, cid)
        try:
            placed = await _send_close(client, position, request, mode=mode, intent=intent, report=report,
                                       source=source)
        except BingxError as exc:
            if not (position.position_side == "BOTH" and _reduce_only_refused(exc)):
                _close_failed(report, label, position, exc)
                continue
            log.warning("emergency close of one-way %s refused as %s (%s): trying the other side", label,
                        request.side.value, exc, extra={"symbol": position.symbol})
            cid = new_client_order_id("emg")
            request = close_request(position, cid, flip=True)
            label = f"{position.symbol} {'SHORT' if position.direction == 'LONG' else 'LONG'} {position.size:f}"
            try:
                placed = await _send_close(client, position, request, mode=mode, intent=intent, report=report,
                                           source=source)
            except BingxError as again:
                _close_failed(report, label, position, again)
                continue
        price = f" @ {placed.avg_price:f}" if placed.avg_price > 0 else ""
        report.closed_positions.append(f"{label}{price} (client id {cid})")


def _close_failed(report: EmergencyReport, label: str, position: Position, exc: BingxError) -> None:
    report.failures.append(f"close {label}: {exc}")
    log.error("emergency close of %s failed: %s", label, exc, extra={"symbol": position.symbol})


async def _send_close(client: ExchangeAccount, position: Position, request: OrderRequest, *, mode: str | None,
                      intent: OrderIntent, report: EmergencyReport, source: str) -> Order:
    """Store (when the database answers), send, and book one close order; exchange errors are raised."""
    cid = request.client_order_id or ""
    row = None
    if mode is not None:
        owner = await _bookkeeping(report, "the owning trade lookup", _owning_trade_id(position, mode))
        row = await _bookkeeping(report, "the close order", create_order(
            client_order_id=cid, mode=mode, symbol=position.symbol, intent=intent, side=request.side.value,
            position_side=request.position_side.value, order_type="MARKET", quantity=position.size, stop_price=None,
            reduce_only=True, trade_id=owner, source=source))
        if row is not None and not await _db_step(report, "the close order", set_status(row, OrderStatus.SENT, source)):
            row = None
    try:
        placed = await client.place_order(request, reference_price=position.mark_price or position.avg_price)
    except BingxError as exc:
        if row is not None:
            # a definite refusal is REJECTED; anything else may have been executed: UNKNOWN, looked up later
            refused = isinstance(exc, BingxInvalidParameterError) and exc.code is not None
            status = OrderStatus.REJECTED if refused else OrderStatus.UNKNOWN
            await _db_step(report, "the close order's outcome", set_status(row, status, source, error=str(exc)))
        raise
    if row is not None:
        await _db_step(report, "the close order's outcome", apply_exchange(row, placed, source))
    return placed


async def cancel_orders(client: ExchangeAccount, orders: Sequence[Order], report: EmergencyReport, why: str) -> None:
    """Cancel each order by exchange id; a failure is logged and left to the next read-back."""
    for order in orders:
        try:
            await client.cancel_order(order.symbol, order_id=order.order_id)
            report.cancelled_orders += 1
        except BingxError as exc:
            log.warning("emergency cancel of %s order %s failed: %s", why, order.order_id, exc,
                        extra={"symbol": order.symbol, "client_order_id": order.client_order_id})


def _order_label(o: Order) -> str:
    return f"{o.symbol} {o.side}/{o.position_side} {o.type} id {o.order_id}"


async def emergency_stop(client: ExchangeAccount, *, risk: RiskManager | None = None, actor: str = "system",
                         mode: str | None = None, alert: AlertSink | None = None, verify_attempts: int = 6,
                         poll_s: float = 0.5) -> EmergencyReport:
    """Halt, cancel opening orders, close everything, verify flat. Never raises for exchange errors.

    Order matters: only orders that could open or add to a position are cancelled before the
    closes. A position's closing orders (its stop) are cancelled only once a read-back shows that
    position flat, so a close that fails (rate limit, 5xx, validation) never leaves it unprotected.
    A position still open at the end with no stop gets the bot's stop re-placed when its trade is
    known (``mode`` given), else the report and the alert say loudly that it is unprotected.

    ``risk`` given: the trading state becomes HALTED first so nothing new opens meanwhile.
    ``mode`` given (a database is open): the close orders are stored before they are sent.
    """
    report = EmergencyReport()
    if risk is not None:  # in force in memory first (engine.risk.state), so a database failure still halts
        await _db_step(report, "the HALTED trading state",
                       risk.state.set(TradingState.HALTED, f"emergency stop by {actor}", actor))
    log.warning("EMERGENCY STOP requested by %s", actor)
    try:
        openers = [o for o in await client.open_orders() if not is_closing_order(o)]
        await cancel_orders(client, openers, report, "opening")
    except BingxError as exc:  # the read-back below tries again
        report.failures.append(f"read open orders: {exc}")
    try:
        await close_positions(client, await client.positions(), mode=mode, intent=OrderIntent.EMERGENCY_CLOSE,
                              report=report, source="emergency")
    except BingxError as exc:
        report.failures.append(f"read positions: {exc}")

    orders: list[Order] = []
    positions: list[Position] = []
    read_back = False
    for attempt in range(verify_attempts):
        try:
            orders = await client.open_orders()
            positions = [p for p in await client.positions() if p.size > 0]
        except BingxError as exc:
            report.failures.append(f"verify (attempt {attempt + 1}): {exc}")
            read_back = False
            await asyncio.sleep(poll_s)
            continue
        read_back = True
        report.remaining_orders = [_order_label(o) for o in orders]
        report.remaining_positions = [f"{p.symbol} {p.direction} {p.size:f}" for p in positions]
        if not orders and not positions:
            report.flat = True
            break
        if attempt == verify_attempts - 1:
            break
        # Openers (one whose cancel failed, or new) always go; a closing order only once its position is flat.
        held = {(p.symbol, p.direction) for p in positions}
        await cancel_orders(client, [o for o in orders if not is_closing_order(o) or position_key(o) not in held],
                            report, "leftover")
        await asyncio.sleep(poll_s)
        if positions:  # a close that failed, or one not filled yet: read again, close what is still open
            try:
                current = [p for p in await client.positions() if p.size > 0]
            except BingxError:
                current = []
            await close_positions(client, current, mode=mode, intent=OrderIntent.EMERGENCY_CLOSE,
                                  report=report, source="emergency")
    if report.flat:
        report.remaining_orders, report.remaining_positions = [], []
    elif read_back:
        for position in positions:
            await guard_unprotected(client, position, orders, mode=mode, report=report)
    else:
        report.failures.append("UNPROTECTED? the exchange could not be read back: check every position's stop now")
    unprotected = sum(1 for f in report.failures if f.startswith("UNPROTECTED"))
    title = ("EMERGENCY STOP done: account flat" if report.flat else "EMERGENCY STOP INCOMPLETE: account NOT flat"
             + (f", {unprotected} position(s) may have NO STOP" if unprotected else ""))
    await emit(alert if alert is not None else (risk.alert if risk is not None else None), RiskEvent(
        "halt", title, report.text(), {"actor": actor, "flat": report.flat, "cancelled": report.cancelled_orders,
                                       "closed": report.closed_positions, "failures": report.failures}))
    return report


async def guard_unprotected(client: ExchangeAccount, position: Position, orders: Sequence[Order], *,
                            mode: str | None, report: EmergencyReport) -> None:
    """A position the emergency stop could not close keeps a stop: its own, or the bot's trade stop re-placed.

    Without a known trade stop (no database, a hand-opened position, mark already past it) no
    level is guessed: the report carries an ``UNPROTECTED`` failure for the loud alert.
    """
    key = (position.symbol, position.direction)
    label = f"{position.symbol} {position.direction} {position.size:f}"
    if any(is_protective_stop(o) and position_key(o) == key for o in orders):
        return
    trade = None
    if mode is not None:
        owner_id = await _bookkeeping(report, "the owning trade lookup", _owning_trade_id(position, mode))
        if owner_id is not None:
            trade = await _bookkeeping(report, "the owning trade lookup", Trade.get_or_none(id=owner_id))
    stop = Decimal(trade.stop) if trade is not None and trade.stop else None
    mark = position.mark_price or position.avg_price
    crossed = stop is None or not mark or (position.direction == "LONG" and mark <= stop) or (
        position.direction == "SHORT" and mark >= stop)
    if mode is None or trade is None or stop is None or crossed:
        why = "no stop level known" if stop is None else f"mark {mark:f} already past the trade's stop {stop:f}"
        report.failures.append(f"UNPROTECTED: {label} is still open with NO stop on the exchange ({why})")
        log.critical("emergency stop: %s still open with NO stop (%s)", label, why, extra={"symbol": position.symbol})
        return
    cid = new_client_order_id("emgsl")
    hedge = position.position_side in ("LONG", "SHORT")
    side = Side.SELL if position.direction == "LONG" else Side.BUY
    request = OrderRequest(symbol=position.symbol, side=side,
                           position_side=PositionSide(position.direction if hedge else "BOTH"),
                           type=OrderType.STOP_MARKET, quantity=position.size, stop_price=stop,
                           working_type=STOP_WORKING_TYPE, reduce_only=not hedge, client_order_id=cid)
    row = await _bookkeeping(report, "the re-placed stop", create_order(
        client_order_id=cid, mode=mode, symbol=position.symbol, intent=OrderIntent.STOP_LOSS, side=side.value,
        position_side=request.position_side.value, order_type="STOP_MARKET", quantity=position.size, stop_price=stop,
        reduce_only=True, trade_id=trade.id, source="emergency",
        detail={"reason": "emergency close failed, position had no stop"}))
    if row is not None and not await _db_step(report, "the re-placed stop", set_status(row, OrderStatus.SENT, "emergency")):
        row = None
    try:
        placed = await client.place_order(request, reference_price=mark)
    except BingxError as exc:
        if row is not None:
            await _db_step(report, "the re-placed stop's outcome", set_status(
                row, OrderStatus.UNKNOWN if isinstance(exc, OrderStateUnknownError) else OrderStatus.REJECTED,
                "emergency", error=str(exc)))
        report.failures.append(f"UNPROTECTED: {label} is still open with NO stop; re-placing the stop at {stop:f} "
                               f"failed ({exc})")
        log.critical("emergency stop: %s still open with NO stop, re-placing it failed: %s", label, exc,
                     extra={"symbol": position.symbol, "client_order_id": cid})
        return
    if row is not None:
        await _db_step(report, "the re-placed stop's outcome", apply_exchange(row, placed, "emergency"))
    report.failures.append(f"{label} could not be closed; its stop was missing and is re-placed at {stop:f} "
                           f"(client id {cid})")
    log.error("emergency stop: %s could not be closed; stop re-placed at %s", label, stop,
              extra={"symbol": position.symbol, "client_order_id": cid})
