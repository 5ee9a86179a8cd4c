"""The wallet-balance check of reconciliation: is every change of the exchange wallet explained?

The rule (also summarised at the top of ``reconcile.py``):

- The *wallet balance* is the exchange's ``balance`` of the margin asset (USDT; VST on the demo
  host): realised money only, so unrealised PnL of open positions does not move it.
- The *booked ledger* is what the database says moved that wallet, summed over the mode's rows:
  ``sum(Fill.realized_pnl - Fill.fee) + sum(Trade.funding)`` (fills carry the exchange's realised
  PnL and commission; funding payments are booked on the trades).
- *Noted transfers* are deposits and withdrawals reported by the account stream
  (``ACCOUNT_UPDATE`` reason ``DEPOSIT`` / ``WITHDRAW``), kept as a running total by
  :func:`note_account_update`.
- Each clean reconciliation stores a *baseline* (wallet, ledger total, transfer total) in the KV
  store. The next one computes ``unexplained = change of wallet - change of ledger - change of
  transfers``. Within ``reconciliation.balance_tolerance_usdt``: fine. Beyond it, the balance is
  read once more after a short pause (a fill or a transfer may be on its way into the database)
  and, if still beyond it: a RISE is alerted (a deposit the stream did not report, a refund), a
  DROP is unexplained and halts entries - unless hand-opened positions were seen (now or at the
  baseline), which the database cannot account for: then a drop is alerted only.
- Noted transfers are always alerted, never halt. The baseline then moves to the current reading,
  so each difference is reported once (a halt stays until an admin lifts it).
- No baseline yet (first run for this mode) or another margin asset: the reading becomes the baseline.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Any

from db.kv import kv_get, kv_set
from db.models import Fill, Trade
from engine.exchange.bingx.events import AccountUpdate
from engine.exchange.bingx.models import Balance

log = logging.getLogger(__name__)

ZERO = Decimal(0)
TRANSFER_REASONS = frozenset({"DEPOSIT", "WITHDRAW"})
MARGIN_ASSETS = ("USDT", "VST")
RECENT_TRANSFERS_KEPT = 50  # the transfer list in the KV store stays bounded; the total is exact

BalanceReader = Callable[[], Awaitable[Sequence[Balance]]]


def baseline_key(mode: str) -> str:
    """KV key of the last reconciled wallet reading."""
    return f"reconcile.balance.{mode}"


def transfers_key(mode: str) -> str:
    """KV key of the noted deposits and withdrawals."""
    return f"reconcile.transfers.{mode}"


class BalanceOutcome(str, Enum):
    """What the check concluded."""

    BASELINE = "baseline"  # first reading: nothing to compare with
    OK = "ok"
    RISE = "unexplained_rise"  # alerted
    DROP = "unexplained_drop"  # halts entries (alerted only when manual positions exist)
    UNAVAILABLE = "unavailable"  # no margin-asset balance in the answer


@dataclass
class BalanceCheck:
    """One comparison of the wallet with the booked ledger."""

    outcome: BalanceOutcome
    asset: str = ""
    wallet: Decimal = ZERO
    previous_wallet: Decimal | None = None
    booked: Decimal = ZERO
    transfers: Decimal = ZERO
    unexplained: Decimal = ZERO
    tolerance: Decimal = ZERO
    manual_positions: bool = False
    transfer_notes: list[str] = field(default_factory=list)

    @property
    def halts(self) -> bool:
        """An unexplained drop the database should have explained (no hand-opened positions)."""
        return self.outcome is BalanceOutcome.DROP and not self.manual_positions

    def describe(self) -> str:
        """One line for the reconciliation report."""
        if self.outcome is BalanceOutcome.UNAVAILABLE:
            return "no USDT/VST balance in the exchange's answer: not compared"
        if self.outcome is BalanceOutcome.BASELINE:
            return f"{self.asset} wallet {_fmt(self.wallet)}: first reading, kept as the baseline"
        change = self.wallet - (self.previous_wallet or ZERO)
        text = (f"{self.asset} wallet {_fmt(self.previous_wallet)} -> {_fmt(self.wallet)} (change {_fmt(change)}); "
                f"booked in the DB {_fmt(self.booked)}, noted deposits/withdrawals {_fmt(self.transfers)}; "
                f"unexplained {_fmt(self.unexplained)} (tolerance {_fmt(self.tolerance)})")
        if self.outcome is BalanceOutcome.DROP and self.manual_positions:
            text += "; hand-opened positions exist, so it is not attributed to the bot"
        return text

    def detail(self) -> dict[str, Any]:
        """JSON-ready figures for alerts."""
        return {"outcome": self.outcome.value, "asset": self.asset, "wallet": str(self.wallet),
                "previous_wallet": None if self.previous_wallet is None else str(self.previous_wallet),
                "booked": str(self.booked), "transfers": str(self.transfers),
                "unexplained": str(self.unexplained), "tolerance": str(self.tolerance)}


def _fmt(value: Decimal | None) -> str:
    """A money figure without trailing zeros (DB decimals carry 12 places)."""
    if value is None:
        return "-"
    text = f"{value.normalize():f}"
    return "0" if text in ("-0", "") else text


def _decimal(value: Any, default: Decimal = ZERO) -> Decimal:
    try:
        return Decimal(str(value)) if value is not None else default
    except (InvalidOperation, ValueError):
        return default


def margin_balance(balances: Sequence[Balance]) -> Balance | None:
    """The margin-asset wallet: USDT, else VST (demo host), else the only asset reported."""
    by_asset = {b.asset.upper(): b for b in balances}
    for asset in MARGIN_ASSETS:
        if asset in by_asset:
            return by_asset[asset]
    return balances[0] if len(balances) == 1 else None


async def booked_ledger(mode: str) -> Decimal:
    """``sum(fill realised PnL - fill fee) + sum(trade funding)`` of ``mode``: what the DB says moved the wallet."""
    total = ZERO
    for pnl, fee in await Fill.filter(order__mode=mode).values_list("realized_pnl", "fee"):
        total += _decimal(pnl) - _decimal(fee)
    for funding in await Trade.filter(mode=mode).values_list("funding", flat=True):
        total += _decimal(funding)
    return total


async def _transfers(mode: str) -> dict[str, Any]:
    stored = await kv_get(transfers_key(mode))
    if not isinstance(stored, dict):
        return {"total": "0", "seq": 0, "recent": []}
    return stored


async def note_transfer(mode: str, reason: str, asset: str, amount: Decimal, time_ms: int | None = None) -> None:
    """Record one deposit (positive) or withdrawal (negative) of the margin asset."""
    stored = await _transfers(mode)
    seq = int(stored.get("seq", 0)) + 1
    total = _decimal(stored.get("total")) + amount
    recent = list(stored.get("recent") or [])[-(RECENT_TRANSFERS_KEPT - 1):]
    recent.append({"seq": seq, "reason": reason, "asset": asset, "amount": str(amount), "time_ms": time_ms,
                   "noted_at": datetime.now(UTC).isoformat()})
    await kv_set(transfers_key(mode), {"total": str(total), "seq": seq, "recent": recent})
    log.warning("%s of %s %s noted for the balance check", reason.lower(), amount, asset, extra={"mode": mode})


async def note_account_update(event: AccountUpdate, mode: str) -> list[Decimal]:
    """Feed an account-stream ``ACCOUNT_UPDATE``: DEPOSIT/WITHDRAW balance changes of the margin asset are noted.

    Returns the amounts noted (empty for any other reason or asset). Call it for every
    ``AccountUpdate``; it ignores what is not a transfer.
    """
    if event.reason.upper() not in TRANSFER_REASONS:
        return []
    noted = []
    for change in event.balances:
        if change.asset.upper() in MARGIN_ASSETS and change.balance_change != 0:
            await note_transfer(mode, event.reason.upper(), change.asset.upper(), change.balance_change,
                                event.transaction_time_ms or event.event_time_ms)
            noted.append(change.balance_change)
    return noted


async def _compare(mode: str, balances: Sequence[Balance], baseline: dict[str, Any] | None, tolerance: Decimal,
                   manual: bool) -> tuple[BalanceCheck, dict[str, Any] | None]:
    wallet_row = margin_balance(balances)
    if wallet_row is None:
        return BalanceCheck(BalanceOutcome.UNAVAILABLE, tolerance=tolerance), None
    asset, wallet = wallet_row.asset.upper(), wallet_row.balance
    ledger = await booked_ledger(mode)
    transfers = await _transfers(mode)
    transfer_total = _decimal(transfers.get("total"))
    reading = {"asset": asset, "wallet": str(wallet), "ledger": str(ledger), "transfers_total": str(transfer_total),
               "transfers_seq": int(transfers.get("seq", 0)), "manual": manual,
               "at": datetime.now(UTC).isoformat()}
    if baseline is None or baseline.get("asset") != asset:
        return BalanceCheck(BalanceOutcome.BASELINE, asset, wallet, tolerance=tolerance), reading
    previous = _decimal(baseline.get("wallet"))
    booked = ledger - _decimal(baseline.get("ledger"))
    moved = transfer_total - _decimal(baseline.get("transfers_total"))
    unexplained = wallet - previous - booked - moved
    if abs(unexplained) <= tolerance:
        outcome = BalanceOutcome.OK
    else:
        outcome = BalanceOutcome.RISE if unexplained > 0 else BalanceOutcome.DROP
    since = int(baseline.get("transfers_seq", 0))
    notes = [f"{t.get('reason', '?').lower()} {t.get('amount')} {t.get('asset', '')}"
             for t in transfers.get("recent") or [] if isinstance(t, dict) and int(t.get("seq", 0)) > since]
    check = BalanceCheck(outcome, asset, wallet, previous, booked, moved, unexplained, tolerance,
                         manual or bool(baseline.get("manual")), notes)
    return check, reading


async def check_balance(mode: str, balances: Sequence[Balance], tolerance: Decimal, *, manual_positions: bool,
                        reread: BalanceReader | None = None, settle: Callable[[], Awaitable[None]] | None = None,
                        ) -> BalanceCheck:
    """Compare ``balances`` with the stored baseline (see the module rule), then store the new baseline.

    ``reread`` and ``settle``: when the first comparison is beyond the tolerance, ``settle()`` is
    awaited (a short pause) and the balance read again with ``reread()`` before concluding.
    """
    baseline = await kv_get(baseline_key(mode))
    baseline = baseline if isinstance(baseline, dict) else None
    check, reading = await _compare(mode, balances, baseline, tolerance, manual_positions)
    if check.outcome in (BalanceOutcome.RISE, BalanceOutcome.DROP) and reread is not None:
        if settle is not None:
            await settle()
        check, reading = await _compare(mode, await reread(), baseline, tolerance, manual_positions)
    if reading is not None:
        await kv_set(baseline_key(mode), reading)
    return check
