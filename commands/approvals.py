"""Approval mode: every entry waits for an admin's Approve / Deny in chat.

Flow: the trading side stores a :class:`db.models.Signal` and calls
:meth:`ApprovalService.request`; the request (trade details plus Approve / Deny buttons) is
posted on every transport through :class:`ApprovalNotifier`; the first admin decision wins
(a conditional ``UPDATE ... WHERE status = 'pending'``, so double taps and races between chats
are harmless); an approval re-checks the price and is *refused* when it moved further than
``approval.max_slippage_pct`` from the signal's entry or through its stop; no decision within
``approval.timeout_s`` means expired (= denied). Every request and decision is an ``Approval``
row; the trading side gets the outcome from :meth:`ApprovalService.wait`.

A decision only counts while someone in *this* process waits for it: a request past its
``expires_at`` or left pending by an earlier run is expired (never "approved" with no trade
following), at start by :meth:`ApprovalService.expire_overdue` and on a late button press by
:meth:`ApprovalService.decide`. The timer counts down to ``expires_at`` (the deadline shown in
chat) and is armed before posting, so a slow or failed post cannot leave buttons without one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from bot.config import ApprovalConfig
from commands import format as fmt
from commands.audit import write_audit
from commands.model import Button, ButtonResult, ButtonStyle, Caller, Reply
from commands.ports import PriceSource
from db.models import Approval, ApprovalStatus, Signal, SignalFate

log = logging.getLogger(__name__)

PRICE_CHECK_TIMEOUT_S = 5.0
SYSTEM = Caller(transport="system", user_id=0, chat_id=0, display="approval timer")
OVERDUE = "no decision in time"
ORPHANED = "the bot restarted before a decision (nobody waits for it any more)"


class ApprovalNotifier(Protocol):
    """A transport that can post an approval request and later edit it."""

    name: str

    async def post_request(self, reply: Reply) -> list[dict[str, Any]]:
        """Post the request; return references to edit later (e.g. ``{"chat_id":..,"message_id":..}``)."""
        ...

    async def update_request(self, ref: dict[str, Any], reply: Reply) -> None:
        """Replace a posted request with the outcome (no buttons)."""
        ...


@dataclass(frozen=True, slots=True)
class ApprovalDecision:
    """The final state of one request, as the trading side sees it."""

    approval_id: int
    status: ApprovalStatus
    decided_by: str
    price_at_decision: Decimal | None
    reason: str

    @property
    def approved(self) -> bool:
        """True only when an admin approved and the price check passed."""
        return self.status is ApprovalStatus.APPROVED


def price_check(signal: Signal, price: Decimal, max_slippage_pct: float) -> str | None:
    """Why the trade must not go ahead at ``price`` (``None`` when it may)."""
    entry, stop = Decimal(signal.entry), Decimal(signal.stop)
    long = signal.side.upper() in ("LONG", "BUY")
    if (long and price <= stop) or (not long and price >= stop):
        return f"price {fmt.price(price)} is past the stop {fmt.price(stop)}"
    moved = abs(price - entry) * 100 / entry if entry > 0 else Decimal(0)
    if moved > Decimal(str(max_slippage_pct)):
        return f"price moved {moved:.2f}% from {fmt.price(entry)} (limit {max_slippage_pct}%)"
    return None


class ApprovalService:
    """Creates approval requests, takes decisions, expires them, and tells the trading side."""

    def __init__(
        self,
        config: ApprovalConfig,
        prices: PriceSource,
        notifiers: list[ApprovalNotifier] | None = None,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        mode: str | None = None,
    ) -> None:
        """``mode`` (paper/live) limits the start-up sweep to this bot's own signals when two bots share a database."""
        self.config = config
        self.prices = prices
        self.notifiers: list[ApprovalNotifier] = list(notifiers or [])
        self._now = now
        self._waiters: dict[int, asyncio.Future[ApprovalDecision]] = {}
        self._timers: dict[int, asyncio.Task[None]] = {}
        self._decide_lock = asyncio.Lock()
        self.mode = mode
        self._posted: dict[int, list[dict[str, Any]]] = {}  # refs of a request whose row may not hold them yet
        self._swept: list[int] = []  # expired at start, before any transport could edit their messages
        self._edits: set[asyncio.Task[None]] = set()

    def add_notifier(self, notifier: ApprovalNotifier) -> None:
        """Register a transport (adapters call this when they start).

        Requests the start-up sweep expired still show Approve / Deny on this transport: their
        messages are edited now that it can reach them.
        """
        self.notifiers.append(notifier)
        if self._swept:
            task = asyncio.get_running_loop().create_task(self._edit_swept(notifier), name="approval-edit-swept")
            self._edits.add(task)
            task.add_done_callback(self._edits.discard)

    async def request(self, signal: Signal) -> int:
        """Store a request for ``signal``, post it everywhere, start its timer; returns its id."""
        expires_at = self._now() + timedelta(seconds=self.config.timeout_s)
        approval = await Approval.create(signal=signal, expires_at=expires_at)
        self._waiters[approval.id] = asyncio.get_running_loop().create_future()
        # Armed before posting and aimed at expires_at: the deadline in chat is the real one, and a
        # failure below cannot leave a pending request without a timer.
        self._timers[approval.id] = asyncio.create_task(self._expire_at(approval.id, expires_at))
        refs = self._posted.setdefault(approval.id, [])
        try:
            if signal.fate is not SignalFate.PENDING_APPROVAL:
                signal.fate = SignalFate.PENDING_APPROVAL
                await signal.save(update_fields=["fate"])
            reply = self._request_reply(approval.id, signal, expires_at)
            for notifier in list(self.notifiers):
                try:
                    for ref in await notifier.post_request(reply):
                        refs.append({"transport": notifier.name, **ref})
                except Exception:
                    log.exception("could not post approval %s on %s", approval.id, notifier.name, extra={"symbol": signal.symbol})
            approval.messages = refs
            await approval.save(update_fields=["messages"])
            await write_audit("approval", SYSTEM, "approval.request", str(approval.id), "posted" if refs else "not_posted", {"signal": signal.id})
        except Exception:
            # The caller gets an exception and will never wait on this request: close it now so no
            # posted button can "approve" a trade nobody will place (the timer stays as a fallback).
            with contextlib.suppress(Exception):
                await self._finish(approval.id, ApprovalStatus.EXPIRED, "system", None, "the request could not be completed")
            self._posted.pop(approval.id, None)
            raise
        if approval.id not in self._waiters:
            # Decided (expired) while the messages were still being posted: show the outcome on them too.
            await self._edit_everywhere(await Approval.get(id=approval.id).prefetch_related("signal"))
        self._posted.pop(approval.id, None)
        log.info("approval %s requested for %s %s", approval.id, signal.symbol, signal.side, extra={"symbol": signal.symbol, "strategy": signal.strategy})
        return approval.id

    async def wait(self, approval_id: int) -> ApprovalDecision:
        """Wait for the decision (approved, denied, refused or expired)."""
        future = self._waiters.get(approval_id)
        if future is None:
            row = await Approval.get(id=approval_id)
            if row.status is not ApprovalStatus.PENDING:
                return _decision(row)
            future = self._waiters.setdefault(approval_id, asyncio.get_running_loop().create_future())
        return await asyncio.shield(future)

    async def decide(self, approval_id: int, caller: Caller, approve: bool) -> ButtonResult:
        """An admin pressed Approve or Deny (authorization is the dispatcher's job)."""
        action = "approval.approve" if approve else "approval.deny"
        row = await Approval.get_or_none(id=approval_id).prefetch_related("signal")
        if row is None:
            await write_audit("control", caller, action, str(approval_id), "unknown")
            return ButtonResult(toast="Unknown approval request.", replace=False)
        if row.status is not ApprovalStatus.PENDING:
            return await self._already_decided(row, caller, action)
        overdue = row.expires_at <= self._now()
        if overdue or approval_id not in self._waiters:
            # Past the deadline, or left from an earlier run: nobody would act on an approval now.
            reason = OVERDUE if overdue else ORPHANED
            if await self._finish(approval_id, ApprovalStatus.EXPIRED, "timeout", None, reason):
                await write_audit("control", caller, action, str(approval_id), "expired", {"reason": reason})
                return ButtonResult(toast=f"Too late: expired ({reason}). Nothing was traded.", replace=False)
            return await self._already_decided(await self._reload(approval_id), caller, action)
        status, price, reason = ApprovalStatus.DENIED, None, "denied by an admin"
        if approve:
            status, price, reason = await self._check_price(row.signal)
        won = await self._finish(approval_id, status, caller.actor, price, reason)
        if not won:
            return await self._already_decided(await self._reload(approval_id), caller, action)
        await write_audit("control", caller, action, str(approval_id), status.value, {"price": str(price) if price is not None else None, "reason": reason})
        toast = {ApprovalStatus.APPROVED: "Approved", ApprovalStatus.DENIED: "Denied"}.get(status, f"Refused: {reason}")
        return ButtonResult(toast=toast[:190], replace=False)

    async def expire_overdue(self) -> int:
        """At start: expire every pending request this process does not wait for; returns how many.

        That is every request of an earlier run (its waiter died with it), overdue or not: an
        approval pressed later could only say "APPROVED" with no trade following. With ``mode``
        set, only requests for this bot's own signals (another bot may share the database).
        """
        query = Approval.filter(status=ApprovalStatus.PENDING)
        if self.mode is not None:
            query = query.filter(signal__mode=self.mode)
        count = 0
        now = self._now()
        for row in await query:
            if row.id in self._waiters:
                continue
            reason = OVERDUE if row.expires_at <= now else ORPHANED
            if await self._finish(row.id, ApprovalStatus.EXPIRED, "timeout", None, reason):
                await write_audit("approval", SYSTEM, "approval.expire", str(row.id), "expired", {"reason": reason})
                self._swept.append(row.id)
                count += 1
        return count

    async def close(self) -> None:
        """Cancel the expiry timers and pending edits (pending requests expire on the next start)."""
        tasks = [*self._timers.values(), *self._edits]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._timers.clear()
        self._edits.clear()

    async def _expire_at(self, approval_id: int, expires_at: datetime) -> None:
        await asyncio.sleep(max(0.0, (expires_at - self._now()).total_seconds()))
        try:
            if await self._finish(approval_id, ApprovalStatus.EXPIRED, "timeout", None, OVERDUE):
                await write_audit("approval", SYSTEM, "approval.expire", str(approval_id), "expired")
            else:
                # Decided elsewhere (e.g. swept by another bot on the same database): never leave the waiter hanging.
                self._resolve(await self._reload(approval_id))
        except Exception:
            log.exception("could not expire approval %s", approval_id)

    async def _already_decided(self, row: Approval, caller: Caller, action: str) -> ButtonResult:
        """A press on a request that is no longer pending: say so, and replace the stale buttons with the outcome."""
        await write_audit("control", caller, action, str(row.id), "already_decided", {"status": row.status.value})
        by = f" by {row.decided_by}" if row.decided_by else ""
        return ButtonResult(toast=f"Already {row.status.value}{by}.", reply=self._outcome_reply(row), replace=True)

    @staticmethod
    async def _reload(approval_id: int) -> Approval:
        return await Approval.get(id=approval_id).prefetch_related("signal")

    def _resolve(self, row: Approval) -> None:
        """Hand a final decision to the waiter, if any (a pending row is not final)."""
        if row.status is ApprovalStatus.PENDING:
            return
        future = self._waiters.pop(row.id, None)
        if future is not None and not future.done():
            future.set_result(_decision(row))

    async def _edit_swept(self, notifier: ApprovalNotifier) -> None:
        for approval_id in list(self._swept):
            try:
                row = await self._reload(approval_id)
            except Exception:
                log.warning("could not read approval %s to edit its message", approval_id, exc_info=True)
                continue
            await self._edit_everywhere(row, only=notifier.name)

    async def _check_price(self, signal: Signal) -> tuple[ApprovalStatus, Decimal | None, str]:
        try:
            price = Decimal(str(await asyncio.wait_for(self.prices.last_price(signal.symbol), PRICE_CHECK_TIMEOUT_S)))
        except Exception as exc:  # noqa: BLE001 - unknown price means we must not trade
            return ApprovalStatus.REFUSED, None, f"price unavailable ({type(exc).__name__})"
        problem = price_check(signal, price, self.config.max_slippage_pct)
        if problem:
            return ApprovalStatus.REFUSED, price, problem
        return ApprovalStatus.APPROVED, price, "approved"

    async def _finish(self, approval_id: int, status: ApprovalStatus, by: str, price: Decimal | None, reason: str) -> bool:
        """Record the single decision; false when another decision got there first."""
        async with self._decide_lock:  # one writer at a time: SQLite cannot do row locks
            updated = await Approval.filter(id=approval_id, status=ApprovalStatus.PENDING).update(
                status=status, decided_at=self._now(), decided_by=by[:64], price_at_decision=price, reason=reason[:255]
            )
        if not updated:
            return False
        timer = self._timers.pop(approval_id, None)
        if timer is not None and timer is not asyncio.current_task():
            timer.cancel()
        row = await self._reload(approval_id)
        if status is not ApprovalStatus.APPROVED:
            fate = SignalFate.EXPIRED if status is ApprovalStatus.EXPIRED else SignalFate.DENIED
            await Signal.filter(id=row.signal.id).update(fate=fate, reason=reason[:255])
        self._resolve(row)
        await self._edit_everywhere(row)
        log.info("approval %s %s by %s: %s", approval_id, status.value, by, reason, extra={"symbol": row.signal.symbol})
        return True

    async def _edit_everywhere(self, row: Approval, *, only: str | None = None) -> None:
        """Replace the request's messages with its outcome (on one transport with ``only``)."""
        reply = self._outcome_reply(row)
        by_name = {n.name: n for n in self.notifiers}
        # A request still being posted has its references only in memory.
        for ref in row.messages or self._posted.get(row.id, []):
            notifier = by_name.get(ref.get("transport", ""))
            if notifier is None or (only is not None and notifier.name != only):
                continue
            try:
                await notifier.update_request({k: v for k, v in ref.items() if k != "transport"}, reply)
            except Exception:
                log.warning("could not update approval message on %s", notifier.name, exc_info=True)

    def _request_reply(self, approval_id: int, signal: Signal, expires_at: datetime) -> Reply:
        entry, stop, target = Decimal(signal.entry), Decimal(signal.stop), Decimal(signal.target)
        risk = abs(entry - stop)
        rr = abs(target - entry) / risk if risk > 0 else None
        return Reply(
            title=f"Approve {signal.side} {signal.symbol}?",
            fields=[
                ("Strategy", signal.strategy),
                ("Entry", fmt.price(entry)),
                ("Stop", fmt.price(stop)),
                ("Target", fmt.price(target) + (f" ({rr:.2f}R)" if rr is not None else "")),
                ("Max slippage", f"{self.config.max_slippage_pct}%"),
                ("Expires", fmt.utc(expires_at) + f" (in {fmt.duration(self.config.timeout_s)})"),
                ("Request", f"#{approval_id}"),
            ],
            buttons=[[Button("Approve", f"a:{approval_id}:y", ButtonStyle.SUCCESS), Button("Deny", f"a:{approval_id}:n", ButtonStyle.DANGER)]],
            severity="warning",
        )

    @staticmethod
    def _outcome_reply(row: Approval) -> Reply:
        signal = row.signal
        words = {
            ApprovalStatus.APPROVED: "APPROVED",
            ApprovalStatus.DENIED: "DENIED",
            ApprovalStatus.EXPIRED: "EXPIRED (denied)",
            ApprovalStatus.REFUSED: "REFUSED",
        }
        fields = [("Request", f"#{row.id}"), ("Decided by", row.decided_by or "-"), ("Reason", row.reason or "-")]
        if row.price_at_decision is not None:
            fields.append(("Price at decision", fmt.price(row.price_at_decision)))
        return Reply(
            title=f"{signal.side} {signal.symbol}: {words.get(row.status, row.status.value)}",
            fields=fields,
            severity="success" if row.status is ApprovalStatus.APPROVED else "warning",
        )


def _decision(row: Approval) -> ApprovalDecision:
    return ApprovalDecision(
        approval_id=row.id,
        status=row.status,
        decided_by=row.decided_by,
        price_at_decision=Decimal(row.price_at_decision) if row.price_at_decision is not None else None,
        reason=row.reason,
    )
