"""Evaluates every enabled strategy of one symbol on each 1m close and applies the limits.

Order of the rules for the signals of one candle:
1. conflict (``conflict: skip``): a LONG and a SHORT signal on the same candle are both skipped;
2. ``max_positions``: a signal from a strategy that already holds that many positions (open or
   pending) on the symbol is skipped.
Everything else comes out ``PENDING``; sizing and risk then make it ``TAKEN`` or ``REJECTED``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Callable

from engine.indicators.bank import IndicatorBank
from engine.market.candle import Candle
from strategies.base import Signal, Strategy
from strategies.multi_timeframe_long import MultiTimeframeLong
from strategies.params import StrategiesConfig
from strategies.trend_distance_short import TrendDistanceShort


class Fate(str, Enum):
    """What became of a signal."""

    PENDING = "pending"
    TAKEN = "taken"
    SKIPPED = "skipped"
    REJECTED = "rejected"


@dataclass(slots=True)
class SignalRecord:
    """A signal and its fate, with the reason for a skip or a rejection."""

    signal: Signal
    fate: Fate = Fate.PENDING
    reason: str = ""


def build_strategies(config: StrategiesConfig, bank: IndicatorBank) -> list[Strategy]:
    """The enabled strategies of ``config``, bound to ``bank`` (in a fixed order: long, then short)."""
    strategies: list[Strategy] = []
    if config.multi_timeframe_long.enabled:
        strategies.append(MultiTimeframeLong(config.multi_timeframe_long, bank))
    if config.trend_distance_short.enabled:
        strategies.append(TrendDistanceShort(config.trend_distance_short, bank))
    return strategies


class SignalGenerator:
    """Per-symbol signal engine: indicators + strategies + limits. Knows nothing about orders."""

    __slots__ = ("symbol", "config", "bank", "strategies", "_evaluators")

    def __init__(
        self,
        symbol: str,
        config: StrategiesConfig,
        bank: IndicatorBank | None = None,
        strategies: list[Strategy] | None = None,
    ) -> None:
        self.symbol = symbol
        self.config = config
        self.bank = bank if bank is not None else IndicatorBank()
        # ``strategies`` (bound to ``bank``) replaces the configured pair, e.g. to add a third rule.
        self.strategies = strategies if strategies is not None else build_strategies(config, self.bank)
        self._evaluators = tuple(s.evaluate for s in self.strategies)

    @property
    def warmup_candles(self) -> int:
        """1m candles after which every enabled strategy's inputs can be ready."""
        return max((s.warmup_candles for s in self.strategies), default=0)

    def warm(self, candle: Candle) -> None:
        """Feed a historical candle to the indicators without evaluating the strategies."""
        self.bank.update(candle)

    def on_candle(self, candle: Candle, open_positions: Callable[[str], int]) -> list[SignalRecord]:
        """Feed the closed ``candle`` and return this candle's signals with their preliminary fates.

        ``open_positions(strategy_name)`` gives how many positions (open or pending) that strategy
        holds on this symbol.
        """
        self.bank.update(candle)
        symbol = self.symbol
        records: list[SignalRecord] | None = None
        for evaluate in self._evaluators:
            signal = evaluate(symbol, candle)
            if signal is not None:
                if records is None:
                    records = []
                records.append(SignalRecord(signal))
        if records is None:
            return []
        return self._apply_limits(records, open_positions)

    def _apply_limits(
        self, records: list[SignalRecord], open_positions: Callable[[str], int]
    ) -> list[SignalRecord]:
        sides = {r.signal.side for r in records}
        if len(sides) > 1:  # conflict: skip (the only policy the spec defines)
            for record in records:
                others = ", ".join(o.signal.strategy for o in records if o.signal.side is not record.signal.side)
                record.fate = Fate.SKIPPED
                record.reason = f"conflict: opposite signal from {others} on the same candle"
            return records
        limit = self.config.max_positions
        for record in records:
            held = open_positions(record.signal.strategy)
            if held >= limit:
                record.fate = Fate.SKIPPED
                record.reason = f"max_positions: {record.signal.strategy} already holds {held} position(s) on {self.symbol}"
        return records
