"""Positions (``Trade`` rows) per symbol, strategy and side: PENDING -> OPEN -> CLOSING -> CLOSED.

A trade is PENDING from the moment its entry order is stored until the entry fills, OPEN while
any quantity is held, CLOSING once an exit of the whole remainder is under way (a stop or target
the engine saw traded, a close at market), and CLOSED when nothing is left (or the entry failed).
Realised PnL is net of fees (each exit carries its share of the entry fee, as in the backtester),
in money and in R (``pnl / (initial qty * 1R)``); funding is kept apart in ``funding``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from tortoise.transactions import in_transaction

from db.fast_insert import Ref, Row

from db.models import Trade, TradeExit, TradeState
from engine.trading.positions import ExitRecord

logger = logging.getLogger(__name__)

ZERO = Decimal(0)


def dec(value: float | Decimal) -> Decimal:
    """A float price/amount as the Decimal of its shortest repr (exact for what the engine computed)."""
    return value if isinstance(value, Decimal) else Decimal(repr(float(value)))


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000.0, tz=timezone.utc)


@dataclass(frozen=True, slots=True)
class Unrealized:
    """Open PnL of a trade at a mark price, before exit fees."""

    money: Decimal
    r_multiple: Decimal


def unrealized(trade: Trade, mark: Decimal) -> Unrealized:
    """Unrealised PnL of ``trade``'s open quantity at ``mark``, in money and in R of its initial risk."""
    if trade.entry_price is None or trade.qty <= 0:
        return Unrealized(ZERO, ZERO)
    sign = 1 if trade.side == "LONG" else -1
    money = (mark - trade.entry_price) * sign * trade.qty
    risk = trade.initial_qty * trade.risk_per_unit
    return Unrealized(money, money / risk if risk > 0 else ZERO)


class TradeStore:
    """Writes the lifecycle of trades for one mode."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def _ctx(self, trade: Trade) -> dict[str, Any]:
        return {"mode": self.mode, "symbol": trade.symbol, "strategy": trade.strategy, "trade_id": trade.id}

    def pending_row(self, *, symbol: str, strategy: str, side: str, qty: Decimal, stop: float, target: float,
                    risk_per_unit: float, signal_id: int | Ref | None, management: dict[str, Any]) -> Row:
        """A new PENDING trade (the signal's levels until the fill replans them), as a row the entry path commits
        together with its signal and its order intent."""
        return Row(Trade, {
            "symbol": symbol, "strategy": strategy, "side": side, "state": TradeState.PENDING, "mode": self.mode,
            "signal_id": signal_id, "initial_qty": qty, "qty": ZERO, "initial_stop": dec(stop), "stop": dec(stop),
            "target": dec(target), "risk_per_unit": dec(risk_per_unit), "management": management,
        })

    async def mark_open(self, trade: Trade, *, entry_price: Decimal, qty: Decimal, stop: float, target: float,
                        risk_per_unit: float, time_ms: int, management: dict[str, Any]) -> None:
        """The entry filled: levels recomputed from the fill price."""
        trade.state = TradeState.OPEN
        trade.entry_price = entry_price
        trade.initial_qty = qty
        trade.qty = qty
        trade.initial_stop = dec(stop)
        trade.stop = dec(stop)
        trade.target = dec(target)
        trade.risk_per_unit = dec(risk_per_unit)
        trade.opened_at = _utc(time_ms)
        trade.management = management
        await trade.save()
        logger.info("trade %d %s %s %s open: %s @ %s, stop %s, target %s", trade.id, trade.symbol, trade.strategy, trade.side,
                    qty, entry_price, trade.stop, trade.target, extra=self._ctx(trade))

    async def set_stop(self, trade: Trade, stop: float, management: dict[str, Any]) -> None:
        """The protective stop moved (trailing)."""
        trade.stop = dec(stop)
        trade.management = management
        await trade.save(update_fields=["stop", "management", "updated_at"])

    async def set_management(self, trade: Trade, management: dict[str, Any]) -> None:
        """Persist the management state (exchange order ids of the stop and target, partials done)."""
        trade.management = management
        await trade.save(update_fields=["management", "updated_at"])

    async def mark_closing(self, trade: Trade, reason: str) -> None:
        """The whole remainder is being closed."""
        if trade.state in (TradeState.OPEN, TradeState.PENDING):
            trade.state = TradeState.CLOSING
            trade.exit_reason = trade.exit_reason or reason
            await trade.save(update_fields=["state", "exit_reason", "updated_at"])

    async def reopen(self, trade: Trade) -> None:
        """A close that did not happen (the exchange refused it): the trade is OPEN again, position still held."""
        if trade.state is TradeState.CLOSING:
            trade.state = TradeState.OPEN
            await trade.save(update_fields=["state", "updated_at"])

    async def record_exit(self, trade: Trade, record: ExitRecord, open_qty: Decimal) -> None:
        """Book one exit (a partial, the target, the stop or a close) with its net PnL and R."""
        async with in_transaction():
            await TradeExit.create(trade=trade, kind=record.label, qty=record.qty, price=dec(record.price), pnl=dec(record.pnl),
                                   fee=dec(record.fee), time_ms=record.time_ms)
            trade.realized_pnl = trade.realized_pnl + dec(record.pnl)
            trade.fees = trade.fees + dec(record.fee)
            trade.r_multiple = (trade.r_multiple or ZERO) + dec(record.r_multiple)
            trade.qty = max(open_qty, ZERO)
            if trade.qty <= 0:
                exits = await TradeExit.filter(trade=trade)
                total = sum((e.qty for e in exits), ZERO)
                trade.exit_price = sum((e.qty * e.price for e in exits), ZERO) / total if total > 0 else None
                trade.exit_reason = record.label
                trade.state = TradeState.CLOSED
                trade.closed_at = _utc(record.time_ms)
            await trade.save()
        logger.info("trade %d %s exit %s: %s @ %s, pnl %.6f (%.3f R)%s", trade.id, trade.symbol, record.label, record.qty,
                    record.price, record.pnl, record.r_multiple, " - closed" if trade.state is TradeState.CLOSED else "",
                    extra=self._ctx(trade))

    async def add_funding(self, trade: Trade, amount: Decimal) -> None:
        """A funding payment (negative = paid) attributed to this trade."""
        trade.funding = trade.funding + amount
        await trade.save(update_fields=["funding", "updated_at"])

    async def mark_failed(self, trade: Trade, reason: str) -> None:
        """The entry never filled: the trade ends without a position."""
        trade.state = TradeState.CLOSED
        trade.exit_reason = ("entry_failed: " + reason)[:32]
        trade.closed_at = datetime.now(timezone.utc)
        await trade.save()

    async def open_trades(self) -> list[Trade]:
        """Trades of this mode that are not closed."""
        return await Trade.filter(mode=self.mode, state__not=TradeState.CLOSED).order_by("id")
