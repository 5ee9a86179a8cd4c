"""Trading strategies: the two entry rules, their parameters and the per-symbol signal generator."""

from strategies.base import Side, Signal, Strategy
from strategies.generator import Fate, SignalGenerator, SignalRecord, build_strategies
from strategies.multi_timeframe_long import MultiTimeframeLong
from strategies.params import (
    MultiTimeframeLongParams,
    PartialExit,
    StrategiesConfig,
    TradeManagementParams,
    TrailingStep,
    TrendDistanceShortParams,
)
from strategies.trend_distance_short import TrendDistanceShort

__all__ = [
    "Fate",
    "MultiTimeframeLong",
    "MultiTimeframeLongParams",
    "PartialExit",
    "Side",
    "Signal",
    "SignalGenerator",
    "SignalRecord",
    "Strategy",
    "StrategiesConfig",
    "TradeManagementParams",
    "TrailingStep",
    "TrendDistanceShort",
    "TrendDistanceShortParams",
    "build_strategies",
]
