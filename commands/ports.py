"""The only doors from chat-ops into the trading side.

Commands read the bot through :class:`TradingReader` and control it through
:class:`TradingControl`; approvals re-check prices through :class:`PriceSource`. The lead
wires the real engine to these protocols; tests use ``tests/fakes_trading.py``.

Rules for implementers:
- every method is ``async`` and must answer quickly (read in-memory state, not the exchange,
  for the read side); chat commands time out after :data:`PORT_TIMEOUT_S`, except the confirmed
  emergency stop, which is never cancelled (the chat is told it still runs; it must alert its outcome);
- money is ``Decimal``; times are aware UTC datetimes;
- control methods receive ``actor`` ("telegram:123") for the state history and audit;
- raising an exception is fine: the dispatcher turns it into an error reply and an audit row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Protocol, runtime_checkable

PORT_TIMEOUT_S = 20.0  # a control such as the emergency stop may need several exchange round trips


@dataclass(frozen=True, slots=True)
class PositionView:
    """An open position with its live result (``r_multiple`` = unrealized PnL / initial risk)."""

    id: str  # the trade id used by `close <id>`
    symbol: str
    side: str  # LONG / SHORT
    qty: Decimal
    entry_price: Decimal
    mark_price: Decimal
    stop: Decimal | None
    target: Decimal | None
    unrealized_pnl: Decimal
    r_multiple: Decimal | None
    strategy: str = ""
    opened_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class OrderView:
    """An open order on the exchange (or the paper book)."""

    client_order_id: str
    symbol: str
    side: str  # BUY / SELL
    position_side: str
    order_type: str
    qty: Decimal
    price: Decimal | None
    stop_price: Decimal | None
    status: str
    intent: str = ""


BALANCE_UNKNOWN = "unknown"  # BalanceView.asset of a balance that could not be read (its figures are zeros)


@dataclass(frozen=True, slots=True)
class BalanceView:
    """Account balance in the margin asset (``asset`` is ``BALANCE_UNKNOWN`` when it could not be read)."""

    asset: str
    equity: Decimal
    available: Decimal
    used_margin: Decimal
    unrealized_pnl: Decimal

    @property
    def known(self) -> bool:
        """False for the zeros a port answers when the balance cannot be read."""
        return self.asset != BALANCE_UNKNOWN


@dataclass(frozen=True, slots=True)
class ProtectionView:
    """An active protection that blocks entries (see `unlock <what>`)."""

    kind: str  # cooldown, loss_streak, daily_loss, drawdown, breaker, kill_switch...
    reason: str
    symbol: str | None = None
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class HealthView:
    """One component's health: feed, exchange API, account stream, database..."""

    name: str
    ok: bool
    detail: str = ""
    age_s: float | None = None  # seconds since the last data/answer, when meaningful


@dataclass(frozen=True, slots=True)
class StatusSnapshot:
    """Everything `/status` shows that lives in the engine's memory."""

    mode: str  # paper / live
    state: str  # RUNNING / PAUSED / HALTED / REDUCING
    state_reason: str
    approval_enabled: bool
    started_at: datetime
    equity: Decimal
    drawdown_pct: Decimal  # from the equity peak, positive number
    positions: list[PositionView] = field(default_factory=list)
    protections: list[ProtectionView] = field(default_factory=list)
    health: list[HealthView] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class CloseReport:
    """Outcome of `close <id|all>`: ids closed, and failures with a human reason."""

    closed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EmergencyStopReport:
    """Outcome of the emergency stop: the account must end flat with no open orders."""

    cancelled_orders: int
    closed_positions: list[str]
    failures: list[str]
    flat: bool  # verified by reading the exchange back, not assumed
    warnings: list[str] = field(default_factory=list)  # bookkeeping problems (database down), not about flatness


class NotSavedError(Exception):
    """A control took effect in the running bot but could not be stored (the database is down).

    Raised by :class:`TradingControl` methods after the in-memory part is done; the message says
    what is in force and what a restart would forget.
    """


class ResumeRefusedError(Exception):
    """``resume`` refused: what halted the execution side is not resolved (the message says what). Nothing changed."""


class ApprovalRefusedError(Exception):
    """``set_approval`` refused to turn approval mode on (the message says why). Nothing changed."""


@runtime_checkable
class TradingReader(Protocol):
    """Read side of the engine (in-memory state; must be fast)."""

    async def status(self) -> StatusSnapshot:
        """Mode, state, protections, uptime, health, positions, equity and drawdown."""
        ...

    async def balance(self) -> BalanceView:
        """The account balance."""
        ...

    async def open_orders(self) -> list[OrderView]:
        """Open orders the bot knows about."""
        ...


@runtime_checkable
class TradingControl(Protocol):
    """Control side of the engine (admin commands)."""

    async def pause(self, actor: str, reason: str) -> None:
        """Stop opening positions (open ones stay managed); in force at once even when it cannot be
        stored (then :class:`NotSavedError`)."""
        ...

    async def resume(self, actor: str) -> str | None:
        """Allow entries again (protections still apply). Returns why entries stay refused, if they do
        (an unresolved problem the execution side halted on): ``None`` means entries are allowed."""
        ...

    async def set_approval(self, enabled: bool, actor: str) -> None:
        """Turn approval mode on or off (persisted by the engine); :class:`ApprovalRefusedError` when it cannot be on."""
        ...

    async def close_positions(self, target: str, actor: str) -> CloseReport:
        """Close one position by id, or every position with ``target == "all"``."""
        ...

    async def unlock(self, what: str, actor: str) -> list[str]:
        """Lift protections matching ``what`` (a kind, a symbol or "all"); returns what was lifted."""
        ...

    async def emergency_stop(self, actor: str) -> EmergencyStopReport:
        """Pause, cancel every order, close every position at market, verify flat."""
        ...


@runtime_checkable
class PriceSource(Protocol):
    """Latest trade/mark price of a symbol, for approval re-checks."""

    async def last_price(self, symbol: str) -> Decimal:
        """Current price; raise when unknown or stale (the approval is then refused)."""
        ...
