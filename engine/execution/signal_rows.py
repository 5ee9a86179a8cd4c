"""Signal rows: every signal the engines produce, stored once per symbol, strategy, candle and mode, with its fate.

An entry stores its signal as ``taken`` (in the entry's own transaction, from :meth:`SignalRows.values`)
and marks it ``rejected`` with the reason when it is refused. The engine's own record of the signal
(``ExecutionBroker.record_signal``, queued after the entry) writes a skipped or rejected fate; a ``taken``
record leaves the stored fate as it is, so a veto stored by the entry wins. Every call runs on the
broker's single worker.
"""

from __future__ import annotations

from typing import Any

from db.models import Signal, SignalFate
from engine.execution.positions import dec
from strategies.generator import Fate, SignalRecord


class SignalRows:
    """The ``Signal`` rows of one mode (``paper`` / ``live``)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    async def row(self, signal: Any, fate: SignalFate, reason: str) -> Signal:
        """The stored row of ``signal``, created with ``fate`` and ``reason`` when there is none yet."""
        # a plain look-up then insert, not get_or_create (no savepoint needed): every signal write runs on this
        # broker's single worker, so nothing can insert in between
        values = self.values(signal, fate, reason)
        row = await Signal.filter(symbol=values["symbol"], strategy=values["strategy"], candle_time_ms=values["candle_time_ms"],
                                  mode=values["mode"]).first()
        return row if row is not None else await Signal.create(**values)

    async def refused(self, signal: Any, signal_row: Signal | None, reason: str) -> None:
        """Store that the signal was not traded, and why."""
        signal_row = signal_row or await self.row(signal, SignalFate.TAKEN, "")
        signal_row.fate = SignalFate.REJECTED
        signal_row.reason = reason[:255]
        await signal_row.save(update_fields=["fate", "reason"])

    def values(self, signal: Any, fate: SignalFate, reason: str) -> dict[str, Any]:
        """The column values of ``signal``'s row."""
        return {"symbol": signal.symbol, "strategy": signal.strategy, "candle_time_ms": signal.time_ms, "mode": self.mode,
                "side": signal.side.value.upper(), "entry": dec(signal.entry), "stop": dec(signal.stop),
                "target": dec(signal.target), "inputs": dict(signal.indicators), "fate": fate, "reason": reason[:255]}

    async def store(self, record: SignalRecord) -> None:
        """Store the engine's record of a signal (a ``taken`` record leaves the stored fate as it is)."""
        fate = {Fate.TAKEN: SignalFate.TAKEN, Fate.SKIPPED: SignalFate.SKIPPED}.get(record.fate, SignalFate.REJECTED)
        row = await self.row(record.signal, fate, record.reason)
        if fate is not SignalFate.TAKEN and row.fate is not fate:
            row.fate = fate
            row.reason = record.reason[:255]
            await row.save(update_fields=["fate", "reason"])
