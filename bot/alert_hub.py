"""One place every alert of the worker goes through (execution, risk, jobs, supervision).

The hub logs each alert and hands it to a *forwarder* - the seam for the chat-ops alert
publisher (``alerts.publisher.AlertPublisher`` with Telegram/Discord routes): set
:attr:`AlertHub.forward` to a callable ``(event_type, text, payload) -> None`` that must not block.
Without a forwarder alerts are only logged (and kept in :attr:`recent` for the dashboard).
It also turns closed-trade alerts into ``RiskManager.on_trade_closed`` calls.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from db.models import Trade, TradeState
from engine.risk.events import RiskEvent

log = logging.getLogger(__name__)

Forwarder = Callable[[str, str, dict[str, Any]], None]
Flusher = Callable[[], Awaitable[None]]


class AlertHub:
    """Alert sink for the execution layer (``on_alert``) and the risk manager (``alert``)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.forward: Forwarder | None = None
        self.flusher: Flusher | None = None
        self.recent: deque[tuple[datetime, str, str]] = deque(maxlen=50)
        self.on_trade_closed: Callable[[Trade], Awaitable[None]] | None = None
        self._reported: set[int] = set()
        self._since = datetime.now(UTC)

    def mark_reported(self, trade_id: int) -> bool:
        """Note that a closed trade was reported to risk; False when it already was (report it once)."""
        if trade_id in self._reported:
            return False
        self._reported.add(trade_id)
        return True

    async def publish(self, event_type: str, text: str, payload: dict[str, Any]) -> None:
        """Record and forward one alert (never raises)."""
        self.recent.append((datetime.now(UTC), event_type, text))
        if self.forward is not None:
            try:
                self.forward(event_type, text, {"mode": self.mode, **payload})
            except Exception:  # chat problems must never reach trading
                log.exception("alert forwarder failed")

    async def execution(self, event_type: str, text: str, payload: dict[str, Any]) -> None:
        """The execution layer's ``on_alert`` hook (it logs the text itself)."""
        await self.publish(event_type, text, payload)
        if event_type == "exit":
            await self._report_closed_trades()

    async def risk(self, event: RiskEvent) -> None:
        """The risk manager's and reconciler's ``AlertSink`` (``emit`` logs the event)."""
        await self.publish(event.event_type, f"[{self.mode.upper()}] {event.title}: {event.text}",
                           {"detail": event.detail, "dedup_key": event.dedup_key})

    async def flush(self) -> None:
        """Flush the outbox (when a publisher is wired)."""
        if self.flusher is not None:
            await self.flusher()

    async def _report_closed_trades(self) -> None:
        if self.on_trade_closed is None:
            return
        try:
            # Written (closed) since this process started: closed_at is exchange time, which is the past
            # on a replaying simulator and may be skewed on the real one; updated_at is our own clock.
            rows = await Trade.filter(mode=self.mode, state=TradeState.CLOSED, updated_at__gte=self._since,
                                      entry_price__not_isnull=True)
            for trade in rows:
                if self.mark_reported(trade.id):
                    await self.on_trade_closed(trade)
        except Exception:
            log.exception("reporting closed trades to the risk manager failed")


def net_pnl(trade: Trade) -> Decimal:
    """Realised PnL net of fees plus funding (what the risk protections count)."""
    return Decimal(trade.realized_pnl) + Decimal(trade.funding)
