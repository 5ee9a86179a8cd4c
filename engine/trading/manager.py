"""Trade management as a deterministic state machine over price ranges.

The backtester feeds it each candle's ``(low, high)``; the live engine feeds it ticks
(``on_price``) and applies the same decisions with real orders. Rules (shared/strategies.md):

* If the stop in effect is inside the range, the stop closes everything, even if profit levels
  are inside the range too (stop first: conservative).
* Otherwise the profit levels inside the range fire in price order: partial exits (fractions of
  the INITIAL quantity, rounded down to the quantity step), trailing steps (the stop moves to
  ``stop_r``, only ever in the trade's favour, effective from the NEXT range), and the target,
  which closes whatever remains.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import Enum

from engine.trading.plan import TradePlan
from engine.trading.sizing import floor_to_step
from strategies.base import Side


class ExitKind(str, Enum):
    """Why quantity leaves a position."""

    STOP = "stop"
    TRAILING_STOP = "trailing_stop"
    PARTIAL = "partial"
    TARGET = "target"
    CLOSE = "close"  # outside the plan: end of a backtest, manual close, emergency


@dataclass(frozen=True, slots=True)
class ExitIntent:
    """Close ``qty`` at ``price`` (the level; fills may add slippage). ``label`` names the rule for reports."""

    kind: ExitKind
    qty: Decimal
    price: float
    label: str
    closes_position: bool


@dataclass(frozen=True, slots=True)
class StopMove:
    """The protective stop moves to ``new_stop`` (effective from the next range / after the exchange confirms)."""

    new_stop: float
    at_r: float
    stop_r: float


Action = ExitIntent | StopMove


class TradeManager:
    """Management state of one open position (quantities are ``Decimal``, prices float)."""

    __slots__ = (
        "plan", "initial_qty", "remaining", "qty_step", "min_qty", "stop", "trailed", "_pending_stop",
        "_next_partial", "_next_trail", "closed", "best_price",
    )

    def __init__(self, plan: TradePlan, qty: Decimal, *, qty_step: Decimal, min_qty: Decimal) -> None:
        if not qty > 0:
            raise ValueError(f"cannot manage a position of {qty}")
        self.plan = plan
        self.initial_qty = qty
        self.remaining = qty
        self.qty_step = qty_step
        self.min_qty = min_qty
        self.stop = plan.stop
        self.trailed = False
        self._pending_stop: float | None = None
        self._next_partial = 0
        self._next_trail = 0
        self.closed = False
        self.best_price = plan.entry

    @classmethod
    def restore(
        cls,
        plan: TradePlan,
        initial_qty: Decimal,
        *,
        qty_step: Decimal,
        min_qty: Decimal,
        remaining: Decimal,
        partials_done: int,
        stop: float,
        trailed: bool,
    ) -> "TradeManager":
        """A manager in the state a stored trade reached (restart recovery; the backtester never needs it).

        ``remaining`` is the open quantity, ``partials_done`` how many of ``plan.partials`` already
        fired (they fire in order), ``stop`` the stop in effect and ``trailed`` whether it came from
        a trailing step. The trailing steps whose stop is at or behind ``stop`` count as done, so
        none of them moves the stop again; the ones beyond it still fire.
        """
        if not 0 < remaining <= initial_qty:
            raise ValueError(f"cannot restore a position of {remaining} out of {initial_qty}")
        if not 0 <= partials_done <= len(plan.partials):
            raise ValueError(f"{partials_done} partial exits done, but the plan has {len(plan.partials)}")
        manager = cls(plan, initial_qty, qty_step=qty_step, min_qty=min_qty)
        manager.remaining = remaining
        manager._next_partial = partials_done
        manager.stop = stop
        manager.trailed = trailed
        long = plan.side is Side.LONG
        manager._next_trail = sum(1 for t in plan.trailing if (t.stop_price <= stop if long else t.stop_price >= stop))
        return manager

    @property
    def pending_stop(self) -> float | None:
        """A stop moved by a trailing step that is not in effect yet."""
        return self._pending_stop

    def on_price(self, price: float) -> list[Action]:
        """A single traded price (live ticks)."""
        return self.on_range(price, price)

    def on_range(self, low: float, high: float) -> list[Action]:
        """The market traded through ``[low, high]`` since the previous call (a candle in backtests)."""
        if self.closed:
            return []
        if self._pending_stop is not None:
            self.stop = self._pending_stop
            self._pending_stop = None
            self.trailed = True
        plan = self.plan
        long = plan.side is Side.LONG
        stop = self.stop
        if (low <= stop) if long else (high >= stop):
            return [self._close(ExitKind.TRAILING_STOP if self.trailed else ExitKind.STOP, stop)]
        reach = high if long else low  # how far price went in the trade's favour
        if long:
            if reach > self.best_price:
                self.best_price = reach
        elif reach < self.best_price:
            self.best_price = reach
        return self._profit_levels(reach, long)

    def close(self, price: float) -> ExitIntent | None:
        """Close the remainder outside the plan (end of a backtest, manual or emergency close)."""
        if self.closed:
            return None
        return self._close(ExitKind.CLOSE, price)

    def reopen(self, open_qty: Decimal) -> None:
        """An exit this manager decided did not execute: manage ``open_qty`` again.

        The level that triggered the exit (a partial's R, the close) stays used; the stop, the
        trailing and the later levels go on from the position as it is.
        """
        if open_qty <= 0:
            raise ValueError(f"cannot reopen with {open_qty} open")
        self.remaining = open_qty
        self.closed = False

    def unrealized(self, price: float) -> float:
        """Gross PnL of the remaining quantity at ``price`` (quote currency, before fees)."""
        return (price - self.plan.entry) * self.plan.side.sign * float(self.remaining)

    def _profit_levels(self, reach: float, long: bool) -> list[Action]:
        plan = self.plan
        partials = plan.partials
        trailing = plan.trailing
        actions: list[Action] = []
        while not self.closed:
            # The nearest unfired level: partial, trailing step or target (ties: partial, trail, target).
            best_price = plan.target
            best = 2
            if self._next_partial < len(partials):
                price = partials[self._next_partial].price
                if (price <= best_price) if long else (price >= best_price):
                    best_price, best = price, 0
            if self._next_trail < len(trailing):
                price = trailing[self._next_trail].trigger_price
                if (price < best_price) if long else (price > best_price):
                    best_price, best = price, 1
            if (best_price > reach) if long else (best_price < reach):
                break
            if best == 0:
                level = partials[self._next_partial]
                self._next_partial += 1
                intent = self._partial(level.at_r, level.fraction, level.price)
                if intent is not None:
                    actions.append(intent)
            elif best == 1:
                step = trailing[self._next_trail]
                self._next_trail += 1
                current = self._pending_stop if self._pending_stop is not None else self.stop
                if (step.stop_price > current) if long else (step.stop_price < current):
                    self._pending_stop = step.stop_price
                    actions.append(StopMove(step.stop_price, step.at_r, step.stop_r))
            else:
                actions.append(self._close(ExitKind.TARGET, plan.target))
        return actions

    def _partial(self, at_r: float, fraction: float, price: float) -> ExitIntent | None:
        qty = floor_to_step(self.initial_qty * Decimal(repr(fraction)), self.qty_step)
        if qty <= 0:
            return None  # the fraction rounds to nothing at this step size
        if qty > self.remaining:
            qty = self.remaining
        closes = self.remaining - qty < self.min_qty  # a dust remainder could not be closed on its own
        if closes:
            qty = self.remaining
        self.remaining -= qty
        if closes:
            self.closed = True
        return ExitIntent(ExitKind.PARTIAL, qty, price, f"partial_{at_r:g}R", closes)

    def _close(self, kind: ExitKind, price: float) -> ExitIntent:
        qty = self.remaining
        self.remaining = Decimal(0)
        self.closed = True
        return ExitIntent(kind, qty, price, kind.value, True)
