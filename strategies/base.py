"""The strategy interface and the signal record every strategy returns.

Strategies are pure decision code: given the shared indicators of a symbol and the 1m candle
that just closed, they return a :class:`Signal` (with the indicator values that produced it) or
``None``. They know nothing about orders, balances or positions.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar

from engine.indicators.bank import IndicatorBank
from engine.market.candle import Candle


class Side(str, Enum):
    """Trade direction."""

    LONG = "long"
    SHORT = "short"

    @property
    def sign(self) -> int:
        """+1 for long, -1 for short: multiplies price moves into profit."""
        return 1 if self is Side.LONG else -1


@dataclass(frozen=True, slots=True)
class Signal:
    """An entry decision at the close of a 1m candle.

    ``time_ms`` is the trigger candle's open time; ``entry`` its close; ``stop``/``target`` are
    computed from that close (live execution recomputes them from the actual fill, with the same
    ATR). ``indicators`` holds the inputs that made the rule true.
    """

    symbol: str
    strategy: str
    side: Side
    time_ms: int
    entry: float
    stop: float
    target: float
    atr: float
    risk_pct: float
    max_risk_pct: float
    stop_atr: float
    target_atr: float
    indicators: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (for the database and chat)."""
        return {
            "symbol": self.symbol,
            "strategy": self.strategy,
            "side": self.side.value,
            "time_ms": self.time_ms,
            "entry": self.entry,
            "stop": self.stop,
            "target": self.target,
            "atr": self.atr,
            "risk_pct": self.risk_pct,
            "max_risk_pct": self.max_risk_pct,
            "indicators": dict(self.indicators),
        }


class Strategy(ABC):
    """One entry rule. Subclasses bind the indicators they need from the bank in ``__init__``."""

    name: ClassVar[str]
    side: ClassVar[Side]

    def __init__(self, bank: IndicatorBank) -> None:
        self.bank = bank

    @property
    @abstractmethod
    def warmup_candles(self) -> int:
        """1m candles needed before every input of this strategy can be ready."""

    @abstractmethod
    def evaluate(self, symbol: str, candle: Candle) -> Signal | None:
        """Decide at the close of ``candle`` (already fed to the bank). Inputs not ready => no signal."""
