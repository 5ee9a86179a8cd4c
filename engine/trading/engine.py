"""The per-symbol trading core shared by the backtester, paper and live trading.

``SymbolEngine`` receives closed, validated 1m candles (it is the ``CandleSink`` of
:class:`engine.market.feed.MarketFeed`) and, on each close:

1. manages the open positions with the candle's range (``TradeManager``: stop, partials,
   trailing steps, target) and sends the resulting exits / stop moves to the broker;
2. feeds the candle to the indicators and strategies (``SignalGenerator``), which apply the
   conflict and ``max_positions`` rules;
3. sizes each remaining signal (``size_position``) and sends the entry to the broker.

Only the :class:`Broker` differs between a backtest (``SimulatedBroker``, fills at once) and live
trading (an adapter over the exchange client, which may answer "pending" and report fills later
through ``on_entry_filled`` / ``on_exit_filled``).
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Callable, Protocol

from engine.market.candle import ONE_MINUTE_MS, Candle
from engine.trading.manager import ExitIntent, StopMove, TradeManager
from engine.trading.plan import TradePlan
from engine.trading.positions import ExitRecord, Fill, Position, PositionState
from engine.trading.sizing import ContractRules, SizeDecision, size_position
from strategies.generator import Fate, SignalGenerator, SignalRecord
from strategies.params import StrategiesConfig

logger = logging.getLogger(__name__)


class Broker(Protocol):
    """Execution as seen by the engine. Return a ``Fill`` when done at once, ``None`` when pending."""

    def equity(self, mark_price: float) -> float:
        """Account equity (quote currency) used for sizing, marking open positions at ``mark_price``."""
        ...

    def submit_entry(self, position: Position, reference_price: float, time_ms: int) -> Fill | None:
        """Open ``position.qty`` in ``position.signal.side`` at about ``reference_price``."""
        ...

    def submit_exit(self, position: Position, intent: ExitIntent, time_ms: int) -> Fill | None:
        """Close ``intent.qty`` of ``position`` (a stop, partial, target or close at ``intent.price``)."""
        ...

    def move_stop(self, position: Position, move: StopMove, time_ms: int) -> None:
        """Move the protective stop of ``position`` (live: replace the exchange's stop order)."""
        ...


def _taken_reason(decision: SizeDecision) -> str:
    """The taken signal's reason: the quantity and the risk it REALLY carries (requested risk beside it)."""
    reason = f"qty {decision.qty} risk {decision.actual_risk_pct:.4g}% (requested {decision.risk_pct:g}%"
    if decision.capped_by_leverage:
        reason += ", capped by leverage and margin reserve"
    return reason + ")"


class SymbolEngine:
    """Signals, sizing and trade management for one symbol; the broker is injected."""

    def __init__(
        self,
        symbol: str,
        config: StrategiesConfig,
        contract: ContractRules,
        broker: Broker,
        *,
        on_signal: Callable[[SignalRecord], None] | None = None,
        on_exit: Callable[[Position, ExitRecord], None] | None = None,
        clock_ms: Callable[[], int] | None = None,
        max_signal_age_ms: int = 2 * ONE_MINUTE_MS,
        portfolio_risk_room_pct: Callable[[], float | None] | None = None,
        keep_closed: int | None = None,
    ) -> None:
        self.symbol = symbol
        self.config = config
        self.contract = contract
        self.broker = broker
        self.signals = SignalGenerator(symbol, config)
        self.on_signal = on_signal
        self.on_exit = on_exit
        self.clock_ms = clock_ms
        self.max_signal_age_ms = max_signal_age_ms
        self.portfolio_risk_room_pct = portfolio_risk_room_pct
        self.positions: dict[str, Position] = {}  # open or pending, by trade id
        # the most recent closed positions (``keep_closed``; None: all, which a backtest reads). A long-running bot
        # keeps a bounded number: the database holds the history
        self.closed: deque[Position] = deque(maxlen=keep_closed)
        self.last_candle: Candle | None = None

    # -- CandleSink ---------------------------------------------------------------------------

    def on_warmup_candle(self, candle: Candle) -> None:
        """Historical candle at start: indicators only."""
        self.signals.warm(candle)
        self.last_candle = candle

    def on_candle(self, candle: Candle) -> None:
        """A closed, validated 1m candle: manage positions, then look for entries at its close."""
        if self.positions:
            self._manage(candle)
        records = self.signals.on_candle(candle, self._held)
        self.last_candle = candle
        if records:
            self._handle_signals(candle, records)

    # -- fills reported later (live) ----------------------------------------------------------

    def on_entry_filled(self, trade_id: str, fill: Fill) -> None:
        """The entry of a pending position filled: plan the levels from the fill price."""
        position = self.positions.get(trade_id)
        if position is None or position.state is not PositionState.PENDING:
            # a fill the engine cannot place means a position nobody manages: loud, for the caller to halt and alert
            logger.error("entry fill for unknown or non-pending trade %s ignored", trade_id, extra={"symbol": self.symbol, "trade_id": trade_id})
            return
        signal = position.signal
        management = self.config.trade_management
        plan = TradePlan.from_entry(signal.side, fill.price, signal.atr, signal.stop_atr, signal.target_atr, management)
        position.entry = fill
        position.qty = fill.qty
        position.open_qty = fill.qty
        position.plan = plan
        position.manager = TradeManager(plan, fill.qty, qty_step=self.contract.qty_step, min_qty=self.contract.min_qty)
        position.state = PositionState.OPEN

    def on_entry_failed(self, trade_id: str, reason: str) -> None:
        """The entry was refused or cancelled: forget the pending position."""
        position = self.positions.pop(trade_id, None)
        if position is not None:
            logger.warning("entry %s failed: %s", trade_id, reason, extra={"symbol": self.symbol, "strategy": position.strategy, "trade_id": trade_id})

    def on_exit_filled(self, trade_id: str, intent: ExitIntent, fill: Fill) -> None:
        """An exit of an open position filled."""
        position = self.positions.get(trade_id)
        if position is None or position.manager is None:
            logger.error("exit fill for unknown trade %s ignored", trade_id, extra={"symbol": self.symbol, "trade_id": trade_id})
            return
        record = position.record_exit(intent, fill, position.manager.stop)
        if self.on_exit is not None:
            self.on_exit(position, record)
        if position.open_qty <= 0:
            self._finish(position)

    # -- internals ----------------------------------------------------------------------------

    def _held(self, strategy: str) -> int:
        """Open or pending positions of ``strategy`` (called only when a signal needs the limit)."""
        return sum(1 for p in self.positions.values() if p.signal.strategy == strategy)

    def _manage(self, candle: Candle) -> None:
        broker = self.broker
        time_ms = candle.open_time_ms
        for position in list(self.positions.values()):
            manager = position.manager
            if manager is None:
                continue  # entry still pending
            for action in manager.on_range(candle.low, candle.high):
                if isinstance(action, StopMove):
                    broker.move_stop(position, action, time_ms)
                    continue
                fill = broker.submit_exit(position, action, time_ms)
                if fill is not None:
                    self.on_exit_filled(position.trade_id, action, fill)

    def close_all(self, price: float, time_ms: int) -> None:
        """Close every open position at ``price`` outside the plan (end of a backtest, emergency)."""
        for position in list(self.positions.values()):
            manager = position.manager
            if manager is None:
                continue
            intent = manager.close(price)
            if intent is None:
                continue
            fill = self.broker.submit_exit(position, intent, time_ms)
            if fill is not None:
                self.on_exit_filled(position.trade_id, intent, fill)

    def _finish(self, position: Position) -> None:
        position.state = PositionState.CLOSED
        del self.positions[position.trade_id]
        self.closed.append(position)

    def _handle_signals(self, candle: Candle, records: list[SignalRecord]) -> None:
        stale = False
        if self.clock_ms is not None:
            age = self.clock_ms() - candle.close_time_ms
            stale = age > self.max_signal_age_ms
        for record in records:
            if record.fate is Fate.PENDING:
                if stale:
                    record.fate = Fate.REJECTED
                    record.reason = f"stale: the candle closed more than {self.max_signal_age_ms} ms ago"
                else:
                    self._enter(candle, record)
            if self.on_signal is not None:
                self.on_signal(record)
            if record.fate is not Fate.TAKEN:
                logger.info(
                    "signal %s %s at %d %s: %s",
                    record.signal.strategy,
                    record.signal.side.value,
                    record.signal.time_ms,
                    record.fate.value,
                    record.reason,
                    extra={"symbol": self.symbol, "strategy": record.signal.strategy},
                )

    def _enter(self, candle: Candle, record: SignalRecord) -> None:
        signal = record.signal
        room = self.portfolio_risk_room_pct() if self.portfolio_risk_room_pct is not None else None
        decision = size_position(
            equity=self.broker.equity(candle.close),
            risk_pct=signal.risk_pct,
            max_risk_pct=signal.max_risk_pct,
            entry=signal.entry,
            stop=signal.stop,
            contract=self.contract,
            leverage=self.config.leverage,
            margin_reserve_pct=self.config.margin_reserve_pct,
            portfolio_risk_room_pct=room,
        )
        if not decision.accepted:
            record.fate = Fate.REJECTED
            record.reason = f"sizing: {decision.reason}"
            return
        trade_id = f"{self.symbol}:{signal.strategy}:{signal.time_ms}"
        position = Position(trade_id, signal, decision.qty)
        self.positions[trade_id] = position
        record.fate = Fate.TAKEN
        record.reason = _taken_reason(decision)
        fill = self.broker.submit_entry(position, signal.entry, signal.time_ms)
        if fill is not None:
            self.on_entry_filled(trade_id, fill)
