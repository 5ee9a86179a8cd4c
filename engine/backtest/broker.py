"""A broker that fills at once with the backtest fill rules of shared/strategies.md.

* Entry: the trigger candle's close plus ``slippage_bps`` against the trade; taker fee.
* Stop (initial or trailed) and out-of-plan closes: the level plus slippage against the trade; taker fee.
* Partial exits and the target: exactly at the level (the spec gives slippage to the entry and the
  stop only); taker fee, as live pays it: partials go out as MARKET orders and the target is a
  TAKE_PROFIT_MARKET order, both taker fills on BingX. No fill is a maker fill (``maker_fee`` is kept
  for the settings record only).
* Fees are a fraction of the fill's notional.

Cash starts at ``balance`` and changes by each fill's gross PnL and fee, so ``equity(mark)``
(cash + open positions marked at ``mark``) is what live sizing would see.
"""

from __future__ import annotations

from engine.trading.manager import ExitIntent, ExitKind, StopMove
from engine.trading.positions import Fill, Position

# exits that fill at their level plus slippage (shared/strategies.md: the entry and the stop slip; the target and
# the partials fill at their level)
_SLIPPED_EXITS = frozenset({ExitKind.STOP, ExitKind.TRAILING_STOP, ExitKind.CLOSE})


class SimulatedBroker:
    """Immediate fills with slippage and fees; tracks cash and the open positions it filled."""

    def __init__(self, balance: float, *, slippage_bps: float, taker_fee: float, maker_fee: float) -> None:
        if not balance > 0:
            raise ValueError(f"balance must be positive, got {balance}")
        self.initial_balance = balance
        self.cash = balance
        self.slippage = slippage_bps / 10_000.0
        self.taker_fee = taker_fee
        self.maker_fee = maker_fee  # unused: every exit the bot sends is a market-type (taker) order
        self.open: dict[str, Position] = {}
        self.fees_paid = 0.0
        self.stop_moves = 0

    def equity(self, mark_price: float) -> float:
        """Cash plus the open positions marked at ``mark_price``."""
        equity = self.cash
        for position in self.open.values():
            manager = position.manager
            if manager is not None:
                equity += manager.unrealized(mark_price)
        return equity

    def submit_entry(self, position: Position, reference_price: float, time_ms: int) -> Fill:
        """Fill at the reference (the close) moved against the trade by the slippage."""
        price = reference_price * (1.0 + position.signal.side.sign * self.slippage)
        fee = float(position.qty) * price * self.taker_fee
        self.cash -= fee
        self.fees_paid += fee
        self.open[position.trade_id] = position
        return Fill(price, position.qty, fee, time_ms)

    def submit_exit(self, position: Position, intent: ExitIntent, time_ms: int) -> Fill:
        """Fill a stop/close with slippage, a partial/target at its level; every exit pays the taker fee."""
        sign = position.signal.side.sign
        qty = intent.qty
        price = intent.price
        if intent.kind in _SLIPPED_EXITS:
            price = intent.price * (1.0 - sign * self.slippage)
        fee = float(qty) * price * self.taker_fee
        assert position.entry is not None
        self.cash += (price - position.entry.price) * sign * float(qty) - fee
        self.fees_paid += fee
        if intent.closes_position:
            self.open.pop(position.trade_id, None)
        return Fill(price, qty, fee, time_ms)

    def move_stop(self, position: Position, move: StopMove, time_ms: int) -> None:
        """Nothing to replace in a simulation; the trade manager applies the move from the next candle."""
        self.stop_moves += 1
