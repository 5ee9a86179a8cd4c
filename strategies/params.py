"""Strategy, sizing and trade-management parameters (the ``strategies:`` section of config.yaml).

Defaults equal ``shared/strategies.md``; field names are the config keys suggested there.
Every model forbids unknown keys and constrains its values, so a typo or an absurd number
fails at load time with a message naming the key instead of silently trading differently.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Params(BaseModel):
    """Base: unknown keys are errors; assignments are validated too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class MultiTimeframeLongParams(_Params):
    """``multi_timeframe_long``: 5m uptrend context + explosive bullish 1m candle (LONG)."""

    enabled: bool = True
    # 5m context filter
    sma_period: int = Field(50, ge=1, le=1000)
    rsi_period: int = Field(14, ge=1, le=500)
    rsi_min: float = Field(57.0, ge=0, le=100)
    min_distance_pct: float = Field(0.6, ge=0, le=100)
    # explosive 1m candle
    body_pct: float = Field(1.2, ge=0, le=100)
    volume_mult: float = Field(3.0, ge=0)
    volume_window: int = Field(20, ge=1, le=1000)
    # levels
    atr_period: int = Field(14, ge=1, le=500)
    atr_timeframe: Literal["1m", "5m"] = "1m"
    stop_atr: float = Field(3.0, gt=0, le=100)
    target_atr: float = Field(12.0, gt=0, le=1000)
    # sizing
    base_risk_pct: float = Field(1.0, gt=0, le=100)
    max_risk_pct: float = Field(3.0, gt=0, le=100)

    @model_validator(mode="after")
    def _risk_within_cap(self) -> "MultiTimeframeLongParams":
        if self.base_risk_pct > self.max_risk_pct:
            raise ValueError(f"base_risk_pct {self.base_risk_pct} exceeds max_risk_pct {self.max_risk_pct}")
        return self


class TrendDistanceShortParams(_Params):
    """``trend_distance_short``: below SMA50 and SMA200, 2% under SMA50, explosive bearish candle (SHORT)."""

    enabled: bool = True
    sma_fast_period: int = Field(50, ge=1, le=1000)
    sma_slow_period: int = Field(200, ge=1, le=5000)
    min_distance_pct: float = Field(2.0, ge=0, le=100)
    rsi_period: int = Field(14, ge=1, le=500)
    rsi_min: float = Field(25.0, ge=0, le=100)
    rsi_max: float = Field(55.0, ge=0, le=100)
    body_pct: float = Field(1.2, ge=0, le=100)
    volume_mult: float = Field(3.0, ge=0)
    volume_window: int = Field(20, ge=1, le=1000)
    atr_period: int = Field(14, ge=1, le=500)
    stop_atr: float = Field(3.0, gt=0, le=100)
    target_atr: float = Field(15.0, gt=0, le=1000)
    base_risk_pct: float = Field(1.5, gt=0, le=100)
    max_risk_pct: float = Field(4.0, gt=0, le=100)

    @model_validator(mode="after")
    def _consistent(self) -> "TrendDistanceShortParams":
        if self.rsi_min > self.rsi_max:
            raise ValueError(f"rsi_min {self.rsi_min} is above rsi_max {self.rsi_max}")
        if self.base_risk_pct > self.max_risk_pct:
            raise ValueError(f"base_risk_pct {self.base_risk_pct} exceeds max_risk_pct {self.max_risk_pct}")
        return self


class PartialExit(_Params):
    """Close ``fraction`` of the INITIAL quantity once price reaches ``at_r`` R in the trade's favour."""

    at_r: float = Field(gt=0, le=1000)
    fraction: float = Field(gt=0, le=1)


class TrailingStep(_Params):
    """Once price reaches ``at_r`` R, move the stop to ``stop_r`` R (never against the trade)."""

    at_r: float = Field(gt=0, le=1000)
    stop_r: float = Field(ge=-1000, le=1000)

    @model_validator(mode="after")
    def _stop_below_trigger(self) -> "TrailingStep":
        if self.stop_r >= self.at_r:
            raise ValueError(f"stop_r {self.stop_r} must be below at_r {self.at_r} (the stop would sit beyond price)")
        return self


class TradeManagementParams(_Params):
    """Partial exits and step trailing, in R multiples of the initial risk (both strategies)."""

    partial_exits: list[PartialExit] = Field(
        default_factory=lambda: [PartialExit(at_r=2, fraction=0.30), PartialExit(at_r=4, fraction=0.40)]
    )
    trailing: list[TrailingStep] = Field(
        default_factory=lambda: [TrailingStep(at_r=3, stop_r=1), TrailingStep(at_r=5, stop_r=3)]
    )

    @model_validator(mode="after")
    def _ordered(self) -> "TradeManagementParams":
        levels = [p.at_r for p in self.partial_exits]
        if levels != sorted(levels) or len(set(levels)) != len(levels):
            raise ValueError("partial_exits must be in strictly increasing at_r order")
        if sum(p.fraction for p in self.partial_exits) > 1.0 + 1e-12:
            raise ValueError("partial_exits fractions add up to more than 1 (of the initial quantity)")
        steps = [t.at_r for t in self.trailing]
        if steps != sorted(steps) or len(set(steps)) != len(steps):
            raise ValueError("trailing steps must be in strictly increasing at_r order")
        return self


class StrategiesConfig(_Params):
    """Everything the signal, sizing, trade-management and backtest code reads from config."""

    multi_timeframe_long: MultiTimeframeLongParams = Field(default_factory=MultiTimeframeLongParams)
    trend_distance_short: TrendDistanceShortParams = Field(default_factory=TrendDistanceShortParams)
    trade_management: TradeManagementParams = Field(default_factory=TradeManagementParams)
    max_positions: int = Field(1, ge=1, le=100)
    conflict: Literal["skip"] = "skip"
    slippage_bps: float = Field(2.0, ge=0, le=1000)
    taker_fee: float = Field(0.0005, ge=0, le=0.05)
    maker_fee: float = Field(0.0002, ge=-0.01, le=0.05)
    leverage: float = Field(1.0, gt=0, le=125)
    # share of the leverage cap kept free: a capped entry's notional is at most
    # equity * leverage * (1 - margin_reserve_pct / 100), so the risk gate's free-margin rule
    # (risk.min_free_margin_pct, which must not exceed this) accepts it in paper and live as in the backtest
    margin_reserve_pct: float = Field(10.0, ge=0, lt=100)
