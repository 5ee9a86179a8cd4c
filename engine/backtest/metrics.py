"""Performance figures of a backtest, per strategy and overall.

Definitions:
* a *trade* is one position (all its partial and final exit rows); it wins when its net PnL > 0;
* ``profit_factor`` = gross profit / gross loss of trades (``null`` without losing trades);
* ``avg_win_loss_ratio`` (R:R) = mean winning trade / |mean losing trade|;
* ``expectancy`` = mean net PnL per trade (quote currency), ``expectancy_r`` the same in R;
* ``total_return_pct`` = net PnL / initial balance * 100;
* ``max_drawdown_pct`` = the largest peak-to-trough fall of the mark-to-market equity curve at
  candle closes, as a negative percentage of the peak (the seeds' "-1.45%" convention);
* ``sharpe`` / ``sortino``: daily returns of that curve (last value of each UTC day), annualised
  with sqrt(365); Sortino's downside deviation is sqrt(mean(min(r, 0)^2)); ``null`` when undefined;
* ``exposure_pct`` = candles closed while the strategy held a position / all candles * 100;
* ``exit_reasons`` counts exit rows (``partial_2R`` rows included) by reason.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Sequence

from engine.trading.positions import Position

DAY_MS = 86_400_000


def max_drawdown_pct(curve: Sequence[float]) -> float:
    """Largest peak-to-trough fall of ``curve`` as a negative percentage of the peak (0.0 if none)."""
    peak = -math.inf
    worst = 0.0
    for value in curve:
        if value > peak:
            peak = value
        elif peak > 0:
            fall = (value - peak) / peak
            if fall < worst:
                worst = fall
    return worst * 100.0


def drawdown_series(curve: Sequence[float]) -> list[float]:
    """Drawdown from the running peak at each point, in percent (<= 0)."""
    peak = -math.inf
    out: list[float] = []
    for value in curve:
        if value > peak:
            peak = value
        out.append((value - peak) / peak * 100.0 if peak > 0 else 0.0)
    return out


def daily_returns(times: Sequence[int], curve: Sequence[float], initial: float) -> list[float]:
    """Simple returns between the last equity values of consecutive UTC days (the first against ``initial``)."""
    closes: list[float] = []
    current_day: int | None = None
    for t, value in zip(times, curve):
        day = t // DAY_MS
        if day != current_day:
            closes.append(value)
            current_day = day
        else:
            closes[-1] = value
    out: list[float] = []
    previous = initial
    for value in closes:
        out.append(value / previous - 1.0 if previous else 0.0)
        previous = value
    return out


def sharpe_sortino(returns: Sequence[float]) -> tuple[float | None, float | None]:
    """Annualised (sqrt(365)) Sharpe and Sortino ratios of daily returns; ``None`` where undefined."""
    n = len(returns)
    if n < 2:
        return None, None
    mean = sum(returns) / n
    variance = sum((r - mean) ** 2 for r in returns) / (n - 1)
    std = math.sqrt(variance)
    downside = math.sqrt(sum(min(r, 0.0) ** 2 for r in returns) / n)
    scale = math.sqrt(365.0)
    sharpe = mean / std * scale if std > 0 else None
    sortino = mean / downside * scale if downside > 0 else None
    return sharpe, sortino


def _finite_or_none(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return value


def trade_stats(
    positions: Sequence[Position],
    *,
    initial_balance: float,
    times: Sequence[int],
    curve: Sequence[float],
    exposure_candles: int,
    candles: int,
) -> dict[str, Any]:
    """The metrics block for one set of positions and its equity curve."""
    pnls = [p.realized_pnl for p in positions]
    r_multiples = [sum(e.r_multiple for e in p.exits) for p in positions]
    wins = [x for x in pnls if x > 0]
    losses = [x for x in pnls if x <= 0]
    gross_profit = sum(wins)
    gross_loss = -sum(x for x in losses if x < 0)
    n = len(pnls)
    avg_win = gross_profit / len(wins) if wins else None
    avg_loss = sum(losses) / len(losses) if losses else None
    sharpe, sortino = sharpe_sortino(daily_returns(times, curve, initial_balance))
    reasons = Counter(e.label for p in positions for e in p.exits)
    total = sum(pnls)
    return {
        "trades": n,
        "wins": len(wins),
        "losses": len(losses),
        "win_rate_pct": len(wins) / n * 100.0 if n else None,
        "profit_factor": _finite_or_none(gross_profit / gross_loss) if gross_loss > 0 else None,
        "avg_win": avg_win,
        "avg_loss": avg_loss,
        "avg_win_loss_ratio": (avg_win / -avg_loss) if (avg_win is not None and avg_loss) else None,
        "expectancy": total / n if n else None,
        "expectancy_r": sum(r_multiples) / n if n else None,
        "net_pnl": total,
        "fees": sum(e.fee for p in positions for e in p.exits),
        "total_return_pct": total / initial_balance * 100.0,
        "max_drawdown_pct": max_drawdown_pct(curve),
        "sharpe_daily": _finite_or_none(sharpe),
        "sortino_daily": _finite_or_none(sortino),
        "exposure_pct": exposure_candles / candles * 100.0 if candles else 0.0,
        "exit_reasons": dict(sorted(reasons.items())),
    }
