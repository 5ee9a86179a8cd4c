"""Position sizing (shared/strategies.md, "Position sizing").

``qty = equity * risk_pct / 100 / |entry - stop|``, rounded DOWN to the contract's quantity step,
then capped so that ``qty * entry <= equity * leverage``, then rejected (with a reason) below the
minimum quantity or minimum notional. Quantities are ``Decimal`` so the rounding is exact: a float
``0.1 * 3`` must never become an order for ``0.30000000000000004`` contracts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal


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


def floor_to_step(value: float | Decimal, step: Decimal) -> Decimal:
    """Largest multiple of ``step`` that is <= ``value`` (for a non-negative value)."""
    dec = value if isinstance(value, Decimal) else Decimal(repr(value))
    return (dec / step).to_integral_value(rounding=ROUND_FLOOR) * step


@dataclass(frozen=True, slots=True)
class SizeDecision:
    """The outcome of sizing: a quantity to trade, or ``qty == 0`` and the reason for the rejection."""

    qty: Decimal
    risk_pct: float
    notional: float
    capped_by_leverage: bool
    reason: str = ""

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
    portfolio_risk_room_pct: float | None = None,
) -> SizeDecision:
    """Size an entry at ``entry`` with protective ``stop``.

    ``risk_pct`` is clamped to ``max_risk_pct``. ``portfolio_risk_room_pct`` (the portfolio-level
    check: max portfolio risk minus the risk already open) shrinks the risk when smaller, and
    rejects the entry when it is exhausted.
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
    used = min(risk_pct, max_risk_pct)
    if portfolio_risk_room_pct is not None:
        if portfolio_risk_room_pct <= 0:
            return reject(f"max_portfolio_risk: no room left ({portfolio_risk_room_pct:.4f}%)", used)
        used = min(used, portfolio_risk_room_pct)
    qty = floor_to_step(equity * used / 100.0 / per_unit, contract.qty_step)
    capped = False
    max_notional = equity * leverage
    if float(qty) * entry > max_notional:
        qty = floor_to_step(max_notional / entry, contract.qty_step)
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
    return SizeDecision(qty, used, notional, capped)
