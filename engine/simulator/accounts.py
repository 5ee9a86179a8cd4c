"""The simulated futures account: wallet, positions, per-symbol settings and income history.

Money is ``Decimal`` throughout. The wallet balance moves only through income records
(realized PnL, trading fees, funding, insurance clearance), so ``wallet == initial +
sum(income)`` holds exactly at all times; margin figures are derived on demand.

Positions: in hedge mode there is one LONG and one SHORT position per symbol, with a
positive amount; in one-way mode one BOTH position whose amount is signed (negative =
short; BingX does not document the sign, see ``bingx-protocol.md`` 4.3). ``cost`` is the
entry notional of the open amount, so the entry price is ``cost / amount`` and PnL on
a full close is exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

EIGHT = Decimal("0.00000001")
ZERO = Decimal(0)


def q8(value: Decimal) -> Decimal:
    """Round money to 1e-8 (half up)."""
    return value.quantize(EIGHT, rounding=ROUND_HALF_UP)


@dataclass(slots=True)
class Position:
    """One position leg."""

    symbol: str
    side: str  # LONG, SHORT or BOTH
    isolated: bool
    leverage: int
    amount: Decimal = ZERO  # LONG/SHORT: >= 0; BOTH: signed
    cost: Decimal = ZERO  # entry notional of |amount|
    margin: Decimal = ZERO  # isolated margin (unused in cross)
    position_id: int = 0
    realised: Decimal = ZERO  # realized PnL + fees + funding since the position opened
    open_time: int = 0
    update_time: int = 0

    @property
    def size(self) -> Decimal:
        """Absolute amount."""
        return abs(self.amount)

    @property
    def direction(self) -> int:
        """+1 long, -1 short, 0 flat."""
        if self.side == "LONG":
            return 1 if self.amount > 0 else 0
        if self.side == "SHORT":
            return -1 if self.amount > 0 else 0
        return (self.amount > 0) - (self.amount < 0)

    @property
    def entry_price(self) -> Decimal:
        """Average entry price (exact quotient, not rounded)."""
        size = self.size
        return self.cost / size if size else ZERO

    def unrealized(self, mark: Decimal) -> Decimal:
        """Unrealized PnL at ``mark``."""
        size = self.size
        if not size:
            return ZERO
        value = mark * size
        return value - self.cost if self.direction > 0 else self.cost - value

    def initial_margin(self) -> Decimal:
        """Margin the position ties up: isolated margin, or entry notional / leverage in cross."""
        if self.isolated:
            return self.margin
        return q8(self.cost / Decimal(self.leverage)) if self.size else ZERO


@dataclass(slots=True)
class Income:
    """One income-history record (``/openApi/swap/v2/user/income``)."""

    symbol: str
    income_type: str  # REALIZED_PNL, TRADING_FEE, FUNDING_FEE, INSURANCE_CLEAR, TRANSFER
    amount: Decimal
    info: str
    time_ms: int
    tran_id: str
    trade_id: str


@dataclass
class SymbolSettings:
    """Per-symbol account settings."""

    long_leverage: int
    short_leverage: int
    margin_type: str = "CROSSED"  # CROSSED or ISOLATED (SEPARATE_ISOLATED is treated as ISOLATED)

    def leverage_for(self, side: str) -> int:
        """Leverage applying to a LONG, SHORT or BOTH position (BOTH uses the long setting)."""
        return self.short_leverage if side == "SHORT" else self.long_leverage


@dataclass
class Account:
    """The single simulated account."""

    initial_balance: Decimal
    wallet: Decimal = ZERO
    hedge_mode: bool = True
    settings: dict[str, SymbolSettings] = field(default_factory=dict)
    positions: dict[tuple[str, str], Position] = field(default_factory=dict)
    income: list[Income] = field(default_factory=list)
    realised_total: Decimal = ZERO
    user_id: str = "116***295"
    short_uid: str = "12851936"

    def __post_init__(self) -> None:
        if self.wallet == ZERO:
            self.wallet = self.initial_balance

    def position(self, symbol: str, side: str) -> Position | None:
        """The position leg, if it was ever opened."""
        return self.positions.get((symbol, side))

    def open_positions(self, symbol: str | None = None) -> list[Position]:
        """Non-flat positions, optionally of one symbol."""
        return [p for p in self.positions.values() if p.amount != 0 and (symbol is None or p.symbol == symbol)]

    def add_income(self, record: Income) -> None:
        """Book an income record against the wallet."""
        self.wallet += record.amount
        if record.income_type == "REALIZED_PNL":
            self.realised_total += record.amount
        self.income.append(record)

    def isolated_margin_total(self) -> Decimal:
        """Sum of isolated margins (part of the wallet, not available to cross)."""
        return sum((p.margin for p in self.positions.values() if p.isolated and p.amount != 0), ZERO)
