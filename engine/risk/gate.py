"""The pre-trade gate: every order that opens risk passes these rules first.

:func:`evaluate` is pure (no I/O): given the proposed order, the account and the open
exposure it says yes, or no with the rule that fired. :class:`RiskManager` adds the state and
protection checks, stores each rejection in ``AuditLog`` and alerts.

Rules, in order (the first that fails is reported): ``reduce_only`` orders always pass;
``order`` (sane quantity and prices, stop on the losing side); ``price_deviation`` (entry far
from the last trusted price); ``contract_minimum``; ``balance``; ``risk_per_trade`` (within the
strategy's ``max_risk_pct``); ``portfolio_risk`` (``risk.max_portfolio_risk_pct``);
``max_positions``; ``max_notional``; ``max_leverage`` (the order's leverage and the account's
effective leverage); ``free_margin`` (``risk.min_free_margin_pct`` left after the order);
``order_rate`` (``risk.max_orders_per_minute``). A value exactly AT a cap passes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from bot.config import RiskConfig
from strategies.params import StrategiesConfig

HUNDRED = Decimal(100)
ZERO = Decimal(0)


def dec(value: float | str | Decimal) -> Decimal:
    """A config number as an exact Decimal (``repr`` keeps 0.1 as 0.1)."""
    return value if isinstance(value, Decimal) else Decimal(repr(value) if isinstance(value, float) else str(value))


@dataclass(frozen=True, slots=True)
class OrderProposal:
    """An order about to be sent. ``side`` is the position side (LONG/SHORT); prices in USDT."""

    symbol: str
    strategy: str
    side: str
    qty: Decimal
    entry_price: Decimal
    stop_price: Decimal | None
    leverage: Decimal = Decimal(1)
    reduce_only: bool = False
    min_qty: Decimal = ZERO
    min_notional: Decimal = ZERO
    reference_price: Decimal | None = None  # last trusted market price, for the deviation check

    @property
    def notional(self) -> Decimal:
        """Position value at the entry price."""
        return self.qty * self.entry_price

    @property
    def risk_usdt(self) -> Decimal:
        """Loss if the stop is hit (entry to stop), in USDT."""
        if self.stop_price is None:
            return ZERO
        return abs(self.entry_price - self.stop_price) * self.qty


@dataclass(frozen=True, slots=True)
class AccountSnapshot:
    """What the account holds right now (from the broker or the exchange)."""

    equity: Decimal
    available_margin: Decimal


@dataclass(frozen=True, slots=True)
class Exposure:
    """One open position (or pending entry) for the portfolio checks."""

    symbol: str
    strategy: str
    side: str
    qty: Decimal
    entry_price: Decimal
    stop_price: Decimal | None

    @property
    def risk_usdt(self) -> Decimal:
        """Open risk to the current stop; a stop past the entry (locked profit) risks nothing."""
        if self.stop_price is None:
            return self.qty * self.entry_price  # no stop known: the whole notional is at risk
        per_unit = self.entry_price - self.stop_price if self.side.upper() == "LONG" else self.stop_price - self.entry_price
        return max(per_unit, ZERO) * self.qty

    @property
    def notional(self) -> Decimal:
        """Position value at the entry price."""
        return self.qty * self.entry_price


@dataclass(frozen=True, slots=True)
class GateDecision:
    """Yes, or no with the rule that fired and a sentence for humans."""

    allowed: bool
    rule: str = ""
    reason: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def ok() -> GateDecision:
        """An approval."""
        return GateDecision(True)


def _no(rule: str, reason: str, **detail: Any) -> GateDecision:
    return GateDecision(False, rule, reason, {k: str(v) for k, v in detail.items()})


def strategy_risk_cap_pct(strategies: StrategiesConfig, strategy: str) -> Decimal | None:
    """The strategy's ``max_risk_pct``; ``None`` for a strategy the config does not know."""
    params = getattr(strategies, strategy, None)
    cap = getattr(params, "max_risk_pct", None)
    return dec(cap) if cap is not None else None


def evaluate(
    proposal: OrderProposal,
    account: AccountSnapshot,
    exposures: Sequence[Exposure],
    risk: RiskConfig,
    strategies: StrategiesConfig,
    *,
    orders_last_minute: int = 0,
) -> GateDecision:
    """Apply every rule to ``proposal``; the first that fails decides."""
    p = proposal
    if p.reduce_only:
        return GateDecision.ok()
    if not (p.qty > 0 and p.entry_price > 0):
        return _no("order", f"quantity {p.qty} and price {p.entry_price} must be positive", qty=p.qty, price=p.entry_price)
    if p.stop_price is None or p.stop_price <= 0:
        return _no("order", "an entry needs a protective stop price", stop=p.stop_price)
    side = p.side.upper()
    if (side == "LONG" and p.stop_price >= p.entry_price) or (side == "SHORT" and p.stop_price <= p.entry_price):
        return _no("order", f"stop {p.stop_price} is on the wrong side of the {side} entry {p.entry_price}",
                   stop=p.stop_price, entry=p.entry_price)
    if p.reference_price is not None and p.reference_price > 0:
        deviation = abs(p.entry_price - p.reference_price) / p.reference_price * HUNDRED
        if deviation > dec(risk.max_price_deviation_pct):
            return _no("price_deviation", f"entry {p.entry_price} is {deviation:.2f}% from the last price "
                       f"{p.reference_price} (max {risk.max_price_deviation_pct:g}%)", deviation_pct=f"{deviation:.4f}")
    if p.qty < p.min_qty:
        return _no("contract_minimum", f"quantity {p.qty} is below the contract minimum {p.min_qty}",
                   qty=p.qty, min_qty=p.min_qty)
    if p.notional < p.min_notional:
        return _no("contract_minimum", f"notional {p.notional:f} USDT is below the contract minimum {p.min_notional}",
                   notional=p.notional, min_notional=p.min_notional)
    if account.equity <= 0:
        return _no("balance", f"no equity to trade with ({account.equity} USDT)", equity=account.equity)

    cap = strategy_risk_cap_pct(strategies, p.strategy)
    if cap is None:
        return _no("risk_per_trade", f"unknown strategy {p.strategy!r}: no risk cap configured")
    risk_pct = p.risk_usdt / account.equity * HUNDRED
    if risk_pct > cap:
        return _no("risk_per_trade", f"risk {risk_pct:.4f}% of equity exceeds the {p.strategy} cap {cap}%",
                   risk_pct=f"{risk_pct:.6f}", cap_pct=cap)

    open_risk = sum((e.risk_usdt for e in exposures), ZERO)
    total_pct = (open_risk + p.risk_usdt) / account.equity * HUNDRED
    if total_pct > dec(risk.max_portfolio_risk_pct):
        return _no("portfolio_risk", f"open risk would be {total_pct:.4f}% of equity, above the "
                   f"{risk.max_portfolio_risk_pct:g}% limit", total_pct=f"{total_pct:.6f}",
                   open_risk_usdt=open_risk)

    if len(exposures) >= risk.max_open_positions:
        return _no("max_positions", f"{len(exposures)} positions open, the limit is {risk.max_open_positions}",
                   open_positions=len(exposures))
    if p.notional > dec(risk.max_notional_usdt):
        return _no("max_notional", f"notional {p.notional:f} USDT exceeds the {risk.max_notional_usdt:g} USDT limit",
                   notional=p.notional)
    if p.leverage > risk.max_leverage:
        return _no("max_leverage", f"leverage {p.leverage}x exceeds the {risk.max_leverage}x limit", leverage=p.leverage)
    effective = (sum((e.notional for e in exposures), ZERO) + p.notional) / account.equity
    if effective > risk.max_leverage:
        return _no("max_leverage", f"account leverage would be {effective:.3f}x, above the {risk.max_leverage}x limit",
                   effective_leverage=f"{effective:.6f}")
    required_margin = p.notional / (p.leverage if p.leverage > 0 else Decimal(1))
    free_after_pct = (account.available_margin - required_margin) / account.equity * HUNDRED
    if free_after_pct < dec(risk.min_free_margin_pct):
        return _no("free_margin", f"free margin after the order would be {free_after_pct:.2f}% of equity, below "
                   f"{risk.min_free_margin_pct:g}%", available=account.available_margin, required=required_margin)
    if orders_last_minute >= risk.max_orders_per_minute:
        return _no("order_rate", f"{orders_last_minute} orders in the last minute, the cap is "
                   f"{risk.max_orders_per_minute}", orders_last_minute=orders_last_minute)
    return GateDecision.ok()


class OrderRateCounter:
    """Orders sent in the last minute (entries and exits together)."""

    WINDOW = timedelta(minutes=1)

    def __init__(self, times: Iterable[datetime] = ()) -> None:
        self._times: deque[datetime] = deque(sorted(times))

    def count(self, now: datetime) -> int:
        """Orders within the minute before ``now``."""
        while self._times and self._times[0] <= now - self.WINDOW:
            self._times.popleft()
        return len(self._times)

    def record(self, now: datetime) -> None:
        """Count one order sent at ``now``."""
        self._times.append(now)

    def snapshot(self) -> list[str]:
        """ISO times in the window (persisted so a restart keeps the count)."""
        return [t.isoformat() for t in self._times]
