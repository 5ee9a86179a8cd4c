"""Position sizing (shared/strategies.md, "Position sizing").

``qty = equity * risk_pct / 100 / |entry - stop|``, rounded DOWN to the contract's quantity step,
then capped so that ``qty * entry <= equity * leverage * (1 - margin_reserve_pct / 100)``, then
rejected (with a reason) below the minimum quantity or minimum notional. Quantities are ``Decimal``
so the rounding is exact: a float ``0.1 * 3`` must never become an order for ``0.30000000000000004``
contracts.

The margin reserve (``strategies.margin_reserve_pct``) keeps a capped entry inside the spec's
``qty * entry <= equity * leverage`` while leaving the free margin the risk gate demands
(``risk.min_free_margin_pct``: the gate takes ``notional / leverage`` as the order's margin and
deducts no fee), so a capped entry is sized the same in the backtest, paper and live and the gate
accepts it when no other position holds margin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal, localcontext

HUNDRED = Decimal(100)


@dataclass(frozen=True, slots=True)
class ContractRules:
    """Trading rules of one contract: quantity step, minimums and price tick."""

    qty_step: Decimal
    min_qty: Decimal
    min_notional: Decimal
    price_tick: Decimal

    def __post_init__(self) -> None:
        for name in ("qty_step", "min_qty", "price_tick"):
            value = getattr(self, name)
            if not isinstance(value, Decimal) or not value > 0:
                raise ValueError(f"{name} must be a positive Decimal, got {value!r}")
        if not isinstance(self.min_notional, Decimal) or self.min_notional < 0:
            raise ValueError(f"min_notional must be a non-negative Decimal, got {self.min_notional!r}")


def _dec(value: float | Decimal) -> Decimal:
    """``value`` as an exact Decimal (``repr`` keeps 0.1 as 0.1), the conversion the risk gate uses too."""
    return value if isinstance(value, Decimal) else Decimal(repr(float(value)))


def floor_to_step(value: float | Decimal, step: Decimal) -> Decimal:
    """Largest multiple of ``step`` that is <= ``value`` (for a non-negative value)."""
    dec = _dec(value)
    return (dec / step).to_integral_value(rounding=ROUND_FLOOR) * step


def max_notional(equity: float, leverage: float, margin_reserve_pct: float) -> Decimal:
    """The largest notional an entry may have: ``equity * leverage * (1 - margin_reserve_pct / 100)``.

    Computed in Decimal, rounding down, so the capped quantity never exceeds the limit by a rounding.
    """
    with localcontext() as ctx:
        ctx.rounding = ROUND_FLOOR
        return _dec(equity) * _dec(leverage) * (HUNDRED - _dec(margin_reserve_pct)) / HUNDRED


def _max_qty(budget: Decimal, entry: float, step: Decimal) -> Decimal:
    """Largest quantity on ``step`` whose notional at ``entry`` fits ``budget`` (floor division)."""
    with localcontext() as ctx:
        ctx.rounding = ROUND_FLOOR
        return floor_to_step(budget / _dec(entry), step)


@dataclass(frozen=True, slots=True)
class SizeDecision:
    """The outcome of sizing: a quantity to trade, or ``qty == 0`` and the reason for the rejection.

    ``risk_pct`` is the REQUESTED risk (the strategy's, clamped to its ``max_risk_pct`` and to the
    portfolio room); ``actual_risk_pct`` is what the sized quantity really risks, entry to stop, in
    % of equity (lower after the rounding and, much lower, after the leverage/margin cap; 0 when
    rejected). Logs and records of what was traded must use ``actual_risk_pct``.
    """

    qty: Decimal
    risk_pct: float
    notional: float
    capped_by_leverage: bool
    reason: str = ""
    actual_risk_pct: float = 0.0

    @property
    def accepted(self) -> bool:
        """True when there is something to trade."""
        return self.qty > 0


def size_position(
    *,
    equity: float,
    risk_pct: float,
    max_risk_pct: float,
    entry: float,
    stop: float,
    contract: ContractRules,
    leverage: float = 1.0,
    margin_reserve_pct: float = 0.0,
    portfolio_risk_room_pct: float | None = None,
) -> SizeDecision:
    """Size an entry at ``entry`` with protective ``stop``.

    ``risk_pct`` is clamped to ``max_risk_pct``. ``portfolio_risk_room_pct`` (the portfolio-level
    check: max portfolio risk minus the risk already open) shrinks the risk when smaller, and
    rejects the entry when it is exhausted. ``margin_reserve_pct`` is the share of the
    leverage cap kept free (the trading engine passes ``strategies.margin_reserve_pct``; the
    default 0 is the spec's bare ``qty * entry <= equity * leverage``).
    """

    def reject(reason: str, used_risk: float = risk_pct) -> SizeDecision:
        return SizeDecision(Decimal(0), used_risk, 0.0, False, reason)

    if not (math.isfinite(equity) and equity > 0):
        return reject(f"no equity to risk (equity={equity})")
    if not (math.isfinite(entry) and entry > 0 and math.isfinite(stop) and stop > 0):
        return reject(f"invalid levels: entry={entry} stop={stop}")
    per_unit = abs(entry - stop)
    if per_unit <= 0:
        return reject(f"stop equals entry ({entry}): risk per unit is zero")
    if not (risk_pct > 0 and leverage > 0):
        return reject(f"risk_pct={risk_pct} and leverage={leverage} must be positive")
    if not (0 <= margin_reserve_pct < 100):
        return reject(f"margin_reserve_pct={margin_reserve_pct} must be in [0, 100)")
    used = min(risk_pct, max_risk_pct)
    if portfolio_risk_room_pct is not None:
        if portfolio_risk_room_pct <= 0:
            return reject(f"max_portfolio_risk: no room left ({portfolio_risk_room_pct:.4f}%)", used)
        used = min(used, portfolio_risk_room_pct)
    qty = floor_to_step(equity * used / 100.0 / per_unit, contract.qty_step)
    capped = False
    budget = max_notional(equity, leverage, margin_reserve_pct)
    if qty * _dec(entry) > budget:
        qty = _max_qty(budget, entry, contract.qty_step)
        capped = True
    notional = float(qty) * entry
    if qty < contract.min_qty:
        return SizeDecision(
            Decimal(0), used, 0.0, capped, f"below min qty: {qty} < {contract.min_qty}"
        )
    if Decimal(repr(notional)) < contract.min_notional:
        return SizeDecision(
            Decimal(0), used, 0.0, capped, f"below min notional: {notional:.8g} < {contract.min_notional}"
        )
    actual = float(qty) * per_unit / equity * 100.0
    return SizeDecision(qty, used, notional, capped, actual_risk_pct=actual)
