"""Alert events: what happened, already phrased as a transport-neutral :class:`Reply`.

Each builder returns an :class:`AlertEvent` whose ``type`` is a key of ``alerts.*`` in the
config (``entry``, ``exit``, ``partial_exit``, ``stop_moved``, ``risk_rejection``,
``protection``, ``halt``, ``reconnect``, ``error``, ``hourly_status``, ``daily_summary``), so the
per-type level (on / silent / off) applies. ``dedup_key`` collapses repeats inside
``alerts.dedup_window_s`` (reconnect storms, the same error every second).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from decimal import Decimal

from commands import format as fmt
from commands.model import Reply, Table

ERROR_TYPES = frozenset({"error"})
# Delivered before anything else waiting for the same destination: halts, the kill switch and the
# emergency stop all use the ``halt`` type (so does "running again", which keeps them in order).
CRITICAL_TYPES = frozenset({"halt"})

# What varies between two reports of the same error: numbers, hex ids, quoted values.
_VARYING = re.compile(r"0x[0-9a-f]+|\b[0-9a-f]{8,}\b|\d+(?:[.:]\d+)*|'[^']*'|\"[^\"]*\"", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """One alert: its config type, the message, and an optional de-duplication key."""

    type: str
    reply: Reply
    dedup_key: str = ""

    @property
    def is_error(self) -> bool:
        """Errors go to the error chat/channel when one is configured."""
        return self.type in ERROR_TYPES


def derived_dedup_key(event: AlertEvent) -> str:
    """A key for an error alert that came without one: its type and its text with the varying parts removed.

    "job risk_view failed: timeout after 5.0 s (id 1234)" every second is one error, not 3,600 an hour.
    """
    text = " ".join(_VARYING.sub("#", f"{event.reply.title}\n{event.reply.text}".lower()).split())
    digest = hashlib.sha1(text.encode()).hexdigest()[:12]
    return f"auto:{event.type}:{digest}:{text}"[:128]


def entry_placed(symbol: str, side: str, strategy: str, qty: Decimal, price: Decimal | None, stop: Decimal, target: Decimal, client_order_id: str) -> AlertEvent:
    """An entry order was sent."""
    return AlertEvent(
        "entry",
        Reply(
            title=f"Entry placed: {side} {symbol}",
            fields=[("Strategy", strategy), ("Qty", fmt.qty(qty)), ("Price", fmt.price(price) if price is not None else "market"), ("Stop", fmt.price(stop)), ("Target", fmt.price(target)), ("Order", client_order_id)],
        ),
        dedup_key=f"entry_placed:{client_order_id}",
    )


def entry_filled(symbol: str, side: str, strategy: str, qty: Decimal, price: Decimal, stop: Decimal, risk_money: Decimal, trade_id: str) -> AlertEvent:
    """An entry filled: the position is open with its stop on the exchange."""
    return AlertEvent(
        "entry",
        Reply(
            title=f"Opened {side} {symbol} @ {fmt.price(price)}",
            fields=[("Strategy", strategy), ("Qty", fmt.qty(qty)), ("Stop", fmt.price(stop)), ("Risk (1R)", fmt.money(risk_money)), ("Trade", trade_id)],
            severity="success",
        ),
        dedup_key=f"entry_filled:{trade_id}",
    )


def partial_exit(symbol: str, side: str, qty: Decimal, price: Decimal, pnl: Decimal, r: Decimal | None, label: str, trade_id: str) -> AlertEvent:
    """Part of a position was taken off."""
    return AlertEvent(
        "partial_exit",
        Reply(
            title=f"Partial exit {symbol} ({label})",
            fields=[("Side", side), ("Qty", fmt.qty(qty)), ("Price", fmt.price(price)), ("PnL", fmt.signed_money(pnl)), ("R", fmt.r_multiple(r)), ("Trade", trade_id)],
            severity="success" if pnl >= 0 else "warning",
        ),
        dedup_key=f"partial:{trade_id}:{label}",
    )


def stop_moved(symbol: str, side: str, old_stop: Decimal, new_stop: Decimal, reason: str, trade_id: str) -> AlertEvent:
    """The protective stop was moved (breakeven, trailing)."""
    return AlertEvent(
        "stop_moved",
        Reply(title=f"Stop moved {symbol}: {fmt.price(old_stop)} -> {fmt.price(new_stop)}", fields=[("Side", side), ("Why", reason), ("Trade", trade_id)]),
        dedup_key=f"stop:{trade_id}:{new_stop}",
    )


def position_closed(symbol: str, side: str, exit_price: Decimal, pnl: Decimal, r: Decimal | None, reason: str, trade_id: str, duration_s: float | None = None) -> AlertEvent:
    """A position is fully closed, with its result in money and R."""
    fields = [("Side", side), ("Exit", fmt.price(exit_price)), ("PnL", fmt.signed_money(pnl)), ("R", fmt.r_multiple(r)), ("Reason", reason), ("Trade", trade_id)]
    if duration_s is not None:
        fields.append(("Held", fmt.duration(duration_s)))
    return AlertEvent(
        "exit",
        Reply(title=f"Closed {side} {symbol}: {fmt.signed_money(pnl)} ({fmt.r_multiple(r)})", fields=fields, severity="success" if pnl >= 0 else "warning"),
        dedup_key=f"exit:{trade_id}",
    )


def risk_rejection(symbol: str, strategy: str, reason: str) -> AlertEvent:
    """The risk gate refused an entry."""
    return AlertEvent(
        "risk_rejection",
        Reply(title=f"Entry rejected: {symbol}", fields=[("Strategy", strategy), ("Reason", reason)], severity="warning"),
        dedup_key=f"reject:{symbol}:{strategy}:{reason[:60]}",
    )


def protection_fired(kind: str, reason: str, symbol: str | None = None, until: str | None = None) -> AlertEvent:
    """A protection started blocking entries."""
    fields = [("Protection", kind), ("Reason", reason)]
    if symbol:
        fields.append(("Symbol", symbol))
    fields.append(("Until", until or "lifted by an admin (/unlock)"))
    return AlertEvent("protection", Reply(title=f"Protection: {kind}", fields=fields, severity="warning"), dedup_key=f"protection:{kind}:{symbol or ''}")


def halted(state: str, reason: str, actor: str = "system") -> AlertEvent:
    """Trading state changed to PAUSED / HALTED / REDUCING (or back)."""
    return AlertEvent(
        "halt",
        Reply(title=f"Trading {state}", fields=[("Reason", reason), ("By", actor)], severity="error" if state in ("HALTED", "REDUCING") else "warning"),
        dedup_key=f"halt:{state}:{reason[:60]}",
    )


def kill_switch(reason: str, report: str = "") -> AlertEvent:
    """The kill switch / emergency stop fired."""
    return AlertEvent("halt", Reply(title="KILL SWITCH", text=report, fields=[("Reason", reason)], severity="error"))


def reconnect(stream: str, detail: str = "") -> AlertEvent:
    """A stream reconnected (deduplicated per stream within the window)."""
    return AlertEvent("reconnect", Reply(title=f"Reconnected: {stream}", text=detail), dedup_key=f"reconnect:{stream}")


def error(component: str, message: str) -> AlertEvent:
    """An unexpected error (sent to the error chat when one is configured)."""
    return AlertEvent("error", Reply(title=f"Error in {component}", text=message[:1500], severity="error"), dedup_key=f"error:{component}:{message[:80]}")


def hourly_status(title: str, fields: list[tuple[str, str]], positions: Table | None = None) -> AlertEvent:
    """The hourly status report."""
    return AlertEvent("hourly_status", Reply(title=title, fields=fields, tables=[positions] if positions else []))


def daily_summary(day: str, fields: list[tuple[str, str]], chart_path: str | None) -> AlertEvent:
    """The daily summary with the equity chart."""
    return AlertEvent("daily_summary", Reply(title=f"Daily summary {day}", fields=fields, image_path=chart_path), dedup_key=f"daily:{day}")
