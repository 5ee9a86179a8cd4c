"""The emergency stop: halt entries, cancel every open order, close every position reduce-only
at market, then read the exchange back until it is flat (or give up and say so).

One function, :func:`emergency_stop`, serves ``trading-bot emergency-stop``, the chat command
(through the lead's ``TradingControl.emergency_stop``) and the kill switch's close-all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol

from db.models import OrderIntent, OrderStatus, Trade, TradeState
from engine.exchange.bingx import (
    BingxError,
    Order,
    OrderRequest,
    OrderType,
    PositionSide,
    Side,
    new_client_order_id,
)
from engine.exchange.bingx.models import Position

from .events import AlertSink, RiskEvent, emit
from .manager import RiskManager
from .orders_db import apply_exchange, create_order, set_status
from .state import TradingState

log = logging.getLogger(__name__)


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

    def text(self) -> str:
        """Plain-text report for the terminal and chat."""
        lines = [f"cancelled orders: {self.cancelled_orders}"]
        lines += [f"closed: {p}" for p in self.closed_positions] or ["closed: no positions were open"]
        lines += [f"FAILED: {f}" for f in self.failures]
        lines += [f"STILL OPEN order: {o}" for o in self.remaining_orders]
        lines += [f"STILL OPEN position: {p}" for p in self.remaining_positions]
        lines.append("account is FLAT with no open orders" if self.flat
                     else "account is NOT flat: check the exchange now")
        return "\n".join(lines)


def close_request(position: Position, client_order_id: str) -> OrderRequest:
    """A market order that only reduces ``position`` (hedge: closing side; one-way: reduceOnly)."""
    direction = position.direction
    side = Side.SELL if direction == "LONG" else Side.BUY
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


async def close_positions(client: ExchangeAccount, positions: Sequence[Position], *, mode: str | None,
                          intent: OrderIntent, report: EmergencyReport, source: str) -> None:
    """Close each position at market, reduce-only; ``mode`` set = store each order before sending it."""
    for position in positions:
        if position.size <= 0:
            continue
        cid = new_client_order_id("emg")
        request = close_request(position, cid)
        label = f"{position.symbol} {position.direction} {position.size:f}"
        row = None
        if mode is not None:
            row = await create_order(client_order_id=cid, mode=mode, symbol=position.symbol, intent=intent,
                                     side=request.side.value, position_side=request.position_side.value,
                                     order_type="MARKET", quantity=position.size, stop_price=None, reduce_only=True,
                                     trade_id=await _owning_trade_id(position, mode), source=source)
            await set_status(row, OrderStatus.SENT, source)
        try:
            placed = await client.place_order(request, reference_price=position.mark_price or position.avg_price)
        except BingxError as exc:
            if row is not None:
                await set_status(row, OrderStatus.UNKNOWN, source, error=str(exc))
            report.failures.append(f"close {label}: {exc}")
            log.error("emergency close of %s failed: %s", label, exc, extra={"symbol": position.symbol})
            continue
        if row is not None:
            await apply_exchange(row, placed, source)
        price = f" @ {placed.avg_price:f}" if placed.avg_price > 0 else ""
        report.closed_positions.append(f"{label}{price} (client id {cid})")


async def emergency_stop(client: ExchangeAccount, *, risk: RiskManager | None = None, actor: str = "system",
                         mode: str | None = None, alert: AlertSink | None = None, verify_attempts: int = 6,
                         poll_s: float = 0.5) -> EmergencyReport:
    """Halt, cancel everything, close everything, verify flat. Never raises for exchange errors.

    ``risk`` given: the trading state becomes HALTED first so nothing new opens meanwhile.
    ``mode`` given (a database is open): the close orders are stored before they are sent.
    """
    report = EmergencyReport()
    if risk is not None:
        await risk.state.set(TradingState.HALTED, f"emergency stop by {actor}", actor)
    log.warning("EMERGENCY STOP requested by %s", actor)
    try:
        result = await client.cancel_all_orders()
        report.cancelled_orders += len(getattr(result, "cancelled", ()) or ())
        for failure in getattr(result, "failed", ()) or ():
            report.failures.append(f"cancel {failure.order_id}: {failure.error_message}")
    except BingxError as exc:
        report.failures.append(f"cancel all orders: {exc}")
    try:
        await close_positions(client, await client.positions(), mode=mode, intent=OrderIntent.EMERGENCY_CLOSE,
                              report=report, source="emergency")
    except BingxError as exc:
        report.failures.append(f"read positions: {exc}")

    for attempt in range(verify_attempts):
        try:
            orders = await client.open_orders()
            positions = [p for p in await client.positions() if p.size > 0]
        except BingxError as exc:
            report.failures.append(f"verify (attempt {attempt + 1}): {exc}")
            await asyncio.sleep(poll_s)
            continue
        report.remaining_orders = [f"{o.symbol} {o.side}/{o.position_side} {o.type} id {o.order_id}" for o in orders]
        report.remaining_positions = [f"{p.symbol} {p.direction} {p.size:f}" for p in positions]
        if not orders and not positions:
            report.flat = True
            break
        if attempt == verify_attempts - 1:
            break
        # Something is left (a stop fired and re-opened? a close not filled yet?): try again.
        for order in orders:
            try:
                await client.cancel_order(order.symbol, order_id=order.order_id)
                report.cancelled_orders += 1
            except BingxError as exc:
                log.warning("emergency cancel of %s failed: %s", order.order_id, exc)
        await asyncio.sleep(poll_s)
        if positions:
            try:
                current = [p for p in await client.positions() if p.size > 0]
            except BingxError:
                current = []
            await close_positions(client, current, mode=mode, intent=OrderIntent.EMERGENCY_CLOSE,
                                  report=report, source="emergency")
    if report.flat:
        report.remaining_orders, report.remaining_positions = [], []
    await emit(alert if alert is not None else (risk.alert if risk is not None else None), RiskEvent(
        "halt", "EMERGENCY STOP " + ("done: account flat" if report.flat else "INCOMPLETE: account NOT flat"),
        report.text(), {"actor": actor, "flat": report.flat, "cancelled": report.cancelled_orders,
                        "closed": report.closed_positions, "failures": report.failures}))
    return report
