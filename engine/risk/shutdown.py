"""Pieces of a graceful shutdown (the worker orders them; SIGTERM must finish within ``shutdown.timeout_s``).

1. the worker stops feeding signals (no new entries);
2. :func:`cancel_entry_orders` cancels entry orders that have not filled;
3. exchange stops stay in place, or with ``shutdown.close_positions: true``
   :func:`close_bot_positions` closes the bot's positions reduce-only at market
   (hand-opened positions too only when ``reconciliation.manage_manual_positions``);
4. the worker flushes the alert outbox and closes the database.

The trading state is NOT changed: a restart resumes in the state it had.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from bot.config import AppConfig
from db.models import Order, OrderIntent, Trade, TradeState
from engine.exchange.bingx import BingxError

from .emergency import EmergencyReport, ExchangeAccount, close_positions
from .orders_db import WORKING, apply_exchange

log = logging.getLogger(__name__)


@dataclass
class ShutdownReport:
    """What the shutdown steps did."""

    cancelled_entries: list[str] = field(default_factory=list)
    closed_positions: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


async def cancel_entry_orders(client: ExchangeAccount, mode: str, report: ShutdownReport | None = None) -> ShutdownReport:
    """Cancel every working ENTRY order of ``mode`` on the exchange and record the outcome."""
    report = report or ShutdownReport()
    for order in await Order.filter(mode=mode, intent=OrderIntent.ENTRY, status__in=WORKING):
        try:
            if order.exchange_order_id:
                cancelled = await client.cancel_order(order.symbol, order_id=order.exchange_order_id)
            else:
                cancelled = await client.cancel_order(order.symbol, client_order_id=order.client_order_id)
        except BingxError as exc:
            report.failures.append(f"cancel entry {order.client_order_id}: {exc}")
            continue
        await apply_exchange(order, cancelled, "shutdown")
        report.cancelled_entries.append(f"{order.symbol} {order.client_order_id}")
    return report


async def close_bot_positions(client: ExchangeAccount, config: AppConfig,
                              report: ShutdownReport | None = None) -> ShutdownReport:
    """Close the positions the bot holds (and hand-opened ones only when configured to manage them)."""
    report = report or ShutdownReport()
    mode = config.mode.value
    ours = {(t.symbol, t.side.upper()) for t in
            await Trade.filter(mode=mode, state__in=[TradeState.OPEN, TradeState.CLOSING])}
    try:
        positions = await client.positions()
    except BingxError as exc:
        report.failures.append(f"read positions: {exc}")
        return report
    chosen = [p for p in positions if p.size > 0 and ((p.symbol, p.direction) in ours
                                                       or config.reconciliation.manage_manual_positions)]
    inner = EmergencyReport()
    await close_positions(client, chosen, mode=mode, intent=OrderIntent.CLOSE, report=inner, source="shutdown")
    report.closed_positions += inner.closed_positions
    report.failures += inner.failures
    return report


async def shutdown_trading(client: ExchangeAccount, config: AppConfig) -> ShutdownReport:
    """Steps 2 and 3 above, per the config."""
    report = await cancel_entry_orders(client, config.mode.value)
    if config.shutdown.close_positions:
        await close_bot_positions(client, config, report)
    log.info("shutdown: %d entry orders cancelled, %d positions closed, %d failures",
             len(report.cancelled_entries), len(report.closed_positions), len(report.failures))
    return report
