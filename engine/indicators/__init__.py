"""Incremental indicators (O(1) per candle) that reproduce the ``ta`` library's definitions.

See ``shared/strategies.md`` ("Indicators") for the exact formulas; each class documents the
index from which it is ready. ``value`` is ``None`` until then: a rule whose inputs are not
ready is false.
"""

from engine.indicators.atr import Atr
from engine.indicators.bank import IndicatorBank, TimeframeIndicators
from engine.indicators.body import body_pct
from engine.indicators.rsi import Rsi
from engine.indicators.sma import Sma
from engine.indicators.volume import VolumeRatio

__all__ = ["Atr", "IndicatorBank", "Rsi", "Sma", "TimeframeIndicators", "VolumeRatio", "body_pct"]
