"""``RiskManager``: the single object the worker, the execution runtime and chat commands hold.

- :meth:`RiskManager.check_order` is the pre-trade hook: trading state, protections, then
  the gate rules; a rejection is stored in ``AuditLog`` (kind ``risk_rejection``) and alerted.
  Orders that only reduce risk always pass.
- :meth:`on_trade_closed`, :meth:`on_equity` and :meth:`record_api_error` feed the protections.
- :meth:`pause`, :meth:`resume`, :meth:`reduce_only`, :meth:`halt`, :meth:`lift` are the controls.
- :meth:`status` is what ``/status`` shows: state with why, protections with why and until when.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from bot.config import AppConfig
from db.kv import kv_get, kv_set
from db.models import AuditLog

from .clock import Clock, utc_now
from .events import AlertSink, RiskEvent, emit
from .exposure import open_exposures
from .gate import (
    AccountSnapshot,
    Exposure,
    GateDecision,
    OrderProposal,
    OrderRateCounter,
    evaluate,
)
from .protections import ActiveProtection, ProtectionKind, Protections
from .state import StateInfo, TradingState, TradingStateStore

log = logging.getLogger(__name__)

RATE_SAVE_DELAY_S = 0.05  # how long after an order its count is written (well after the order has left)

# Called when the kill switch fires with close_positions_on_kill_switch (e.g. emergency close).
CloseAllFn = Callable[[str], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class RiskStatus:
    """Everything ``/status`` shows about risk."""

    state: TradingState
    state_reason: str
    state_actor: str
    state_since: datetime | None
    protections: list[ActiveProtection] = field(default_factory=list)
    drawdown_pct: Decimal | None = None
    peak_equity: Decimal | None = None
    loss_streak: int = 0
    api_errors_in_window: int = 0

    @property
    def entries_allowed(self) -> bool:
        """True when a new entry could pass (state RUNNING and no unscoped lock)."""
        return self.state.allows_entries and not any(p.symbol is None and p.strategy is None for p in self.protections)

    def lines(self) -> list[str]:
        """Plain-text rendering for chat and the terminal."""
        out = [f"state: {self.state.value} ({self.state_reason}, by {self.state_actor})"]
        out += [f"protection {p.describe()}" for p in self.protections] or ["protections: none"]
        if self.drawdown_pct is not None:
            out.append(f"drawdown from peak: {self.drawdown_pct:.2f}%")
        out.append(f"losing streak: {self.loss_streak}; API errors in window: {self.api_errors_in_window}")
        return out


@dataclass(frozen=True, slots=True)
class EntryView:
    """The trading state and the locks in force as read at ``read_at`` (``time.monotonic``)."""

    state: StateInfo
    locks: list[ActiveProtection]
    read_at: float
    changes: tuple[int, int]  # the state's and the protections' change counters when read

    def blocking(self, symbol: str, strategy: str, now: datetime) -> list[ActiveProtection]:
        """The locks that block an entry on ``symbol`` by ``strategy`` at ``now`` (expired ones do not)."""
        return [p for p in self.locks if p.covers(symbol, strategy) and (p.until is None or now < p.until)]


class RiskManager:
    """State, protections and the pre-trade gate, bound to one config and one trading mode."""

    RATE_KEY = "risk.order_times"

    def __init__(self, config: AppConfig, *, clock: Clock = utc_now, alert: AlertSink | None = None,
                 close_all: CloseAllFn | None = None, entry_view_ttl_s: float = 0.0) -> None:
        self.config = config
        self.mode = config.mode.value
        self.clock = clock
        self.alert = alert
        self.close_all = close_all
        self.state = TradingStateStore()
        self.protections = Protections(config.risk, mode=self.mode, clock=clock, alert=alert)
        self._rate: OrderRateCounter | None = None
        self._rate_saving: asyncio.Task[None] | None = None
        self._rate_save_timer: asyncio.TimerHandle | None = None
        self._rate_unsaved = False
        # The state and the locks an entry is checked against, read ahead of the entry (issue 10: no database
        # read between a closed candle and its order). Every change made through this manager makes the view
        # stale at once; ``entry_view_ttl_s`` bounds how late a change written by ANOTHER process (the
        # ``emergency-stop`` command) is seen. 0 (the default): the database is read for every entry.
        self.entry_view_ttl_s = entry_view_ttl_s
        self._entry_view: EntryView | None = None
        self._halt_episode = ""  # when the current HALTED spell began: part of the halt alert's dedup key

    async def _rate_counter(self) -> OrderRateCounter:
        if self._rate is None:  # restored from the database so a restart keeps the minute's count
            stored = await kv_get(f"{self.RATE_KEY}.{self.mode}", []) or []
            times = []
            for text in stored:
                try:
                    times.append(datetime.fromisoformat(text))
                except (TypeError, ValueError):
                    continue
            self._rate = OrderRateCounter(times)
        return self._rate

    async def _record_order(self) -> None:
        rate = await self._rate_counter()
        now = self.clock()
        rate.record(now)
        rate.count(now)
        # written behind the order (a crash loses at most the count of the last moments before it)
        self._rate_unsaved = True
        if self._rate_save_timer is None and (self._rate_saving is None or self._rate_saving.done()):
            # a timer, not a task that sleeps first: a task's first step would run while the order's intent is being
            # committed, on the order path (issue 10); the order that was just counted goes first
            self._rate_save_timer = asyncio.get_running_loop().call_later(RATE_SAVE_DELAY_S, self._start_rate_save)

    def _start_rate_save(self) -> None:
        self._rate_save_timer = None
        self._rate_saving = asyncio.create_task(self._save_rate(), name="risk-rate-save")

    async def _save_rate(self) -> None:
        assert self._rate is not None
        while self._rate_unsaved:  # orders counted while a write was under way are written by the next pass
            self._rate_unsaved = False
            try:
                await kv_set(f"{self.RATE_KEY}.{self.mode}", self._rate.snapshot())
            except Exception:  # the count in memory still applies; the next order writes it again
                log.exception("could not store the order-rate count")
                return
            if self._rate_unsaved:  # counted during the write: that order may still be on its way out
                await asyncio.sleep(RATE_SAVE_DELAY_S)

    async def flush(self) -> None:
        """Write the order-rate count now if a write is pending, and wait for it (shutdown, tests)."""
        if self._rate_save_timer is not None:
            self._rate_save_timer.cancel()
            self._start_rate_save()
        if self._rate_saving is not None:
            await asyncio.gather(self._rate_saving, return_exceptions=True)

    # --- the entry view -------------------------------------------------------------------------

    async def refresh_entry_view(self) -> EntryView:
        """Read the trading state and the locks in force from the database (a scheduled job keeps this fresh)."""
        await self._rate_counter()  # loaded with the view, so the first entry does not read it either
        changes = (self.state.changes, self.protections.changes)
        view = EntryView(await self.state.current(), await self.protections.active(), time.monotonic(), changes)
        if (self.state.changes, self.protections.changes) == changes:  # nothing was written while reading
            self._entry_view = view
        return view

    async def _current_entry_view(self) -> EntryView:
        view = self._entry_view
        if (view is None or time.monotonic() - view.read_at > self.entry_view_ttl_s
                or view.changes != (self.state.changes, self.protections.changes)):
            view = await self.refresh_entry_view()
        return view

    # --- the pre-trade hook ---------------------------------------------------------------------

    async def check_order(self, proposal: OrderProposal, account: AccountSnapshot,
                          exposures: Sequence[Exposure] | None = None, *, recheck: bool = False) -> GateDecision:
        """Approve or reject one order. An approval counts toward the order-rate cap.

        ``recheck``: the same entry once more after a human approved it (minutes may have passed). The trading
        state and locks are read afresh, and the order-rate rule is left out: the first check counted the order.
        """
        if proposal.reduce_only:
            await self._record_order()
            return GateDecision.ok()
        view = await (self.refresh_entry_view() if recheck else self._current_entry_view())
        info = view.state
        if not info.state.allows_entries:
            decision = GateDecision(False, "state", f"trading is {info.state.value}: {info.reason}",
                                    {"state": info.state.value})
            return await self._reject(proposal, decision)
        blocking = view.blocking(proposal.symbol, proposal.strategy, self.clock())
        if blocking:
            lock = blocking[0]
            decision = GateDecision(False, f"protection:{lock.kind}", lock.describe(), {"lock_id": str(lock.id)})
            return await self._reject(proposal, decision)
        if exposures is None:
            exposures = await open_exposures(self.mode)
        orders_last_minute = 0 if recheck else (await self._rate_counter()).count(self.clock())
        decision = evaluate(proposal, account, exposures, self.config.risk, self.config.strategies,
                            orders_last_minute=orders_last_minute)
        if not decision.allowed:
            return await self._reject(proposal, decision)
        if not recheck:
            await self._record_order()
        return decision

    async def note_order_sent(self) -> None:
        """Count an order that did not go through :meth:`check_order` toward the rate cap."""
        await self._record_order()

    async def _reject(self, p: OrderProposal, decision: GateDecision) -> GateDecision:
        ctx = {"symbol": p.symbol, "strategy": p.strategy}
        log.warning("entry rejected by %s: %s", decision.rule, decision.reason, extra=ctx)
        detail = {"rule": decision.rule, "reason": decision.reason, "symbol": p.symbol, "strategy": p.strategy,
                  "side": p.side, "qty": str(p.qty), "entry": str(p.entry_price),
                  "stop": str(p.stop_price) if p.stop_price is not None else None, **decision.detail}
        await AuditLog.create(kind="risk_rejection", actor=f"strategy:{p.strategy}"[:128], action="entry",
                              arguments=f"{p.symbol} {p.side} {p.qty} @ {p.entry_price}"[:512],
                              outcome="rejected", detail=detail)
        await emit(self.alert, RiskEvent("risk_rejection", f"Entry rejected: {decision.rule}",
                                         f"{p.symbol} {p.side} ({p.strategy}): {decision.reason}", detail,
                                         dedup_key=f"reject:{p.symbol}:{p.strategy}:{decision.rule}"))
        return decision

    # --- feeding the protections ----------------------------------------------------------------

    async def on_trade_closed(self, symbol: str, strategy: str, pnl: Decimal) -> list[ActiveProtection]:
        """A trade closed with net ``pnl``: cooldown and losing-streak protections."""
        return await self.protections.on_trade_closed(symbol, strategy, pnl)

    async def on_equity(self, equity: Decimal) -> list[ActiveProtection]:
        """A fresh equity reading: daily loss and the drawdown kill switch (HALTED, optional close-all)."""
        fired = await self.protections.on_equity(equity)
        for lock in fired:
            if lock.kind == ProtectionKind.KILL_SWITCH.value and lock.fresh:
                await self.state.set(TradingState.HALTED, f"kill switch: {lock.reason}", "kill_switch")
                if self.config.risk.close_positions_on_kill_switch and self.close_all is not None:
                    try:
                        await self.close_all("kill switch")
                    except Exception as exc:
                        log.exception("kill switch close-all failed")
                        await emit(self.alert, RiskEvent("error", "Kill switch could not close positions",
                                                         f"{type(exc).__name__}: {exc}"))
        return fired

    async def record_api_error(self, what: str = "") -> ActiveProtection | None:
        """Count one exchange API error toward the circuit breaker."""
        return await self.protections.record_api_error(what)

    # --- controls -------------------------------------------------------------------------------

    async def pause(self, actor: str, reason: str = "paused") -> StateInfo:
        """No entries; open positions stay managed."""
        return await self.state.set(TradingState.PAUSED, reason, actor)

    async def resume(self, actor: str) -> StateInfo:
        """Entries allowed again (active protections still apply)."""
        return await self.state.set(TradingState.RUNNING, "resumed", actor)

    async def reduce_only(self, actor: str, reason: str = "reduce only") -> StateInfo:
        """Only risk-reducing orders."""
        return await self.state.set(TradingState.REDUCING, reason, actor)

    async def halt(self, reason: str, actor: str = "system", *, lock_kind: ProtectionKind | None = None,
                   detail: dict | None = None) -> StateInfo:
        """HALTED with an alarm; with ``lock_kind`` also a lock an admin must lift."""
        if lock_kind is not None:
            await self.protections.lock(lock_kind, reason, None, detail=detail)
        previous = await self.state.current()
        info = await self.state.set(TradingState.HALTED, reason, actor)
        if previous.state is not TradingState.HALTED or not self._halt_episode:
            # A new HALTED spell (e.g. after a /resume): its alert must not be deduplicated against the
            # last spell's; repeats inside one spell still collapse.
            self._halt_episode = (info.at or self.clock()).isoformat()
        await emit(self.alert, RiskEvent("halt", "Trading HALTED", reason, {"actor": actor, **(detail or {})},
                                         dedup_key=f"halt:{self._halt_episode}:{reason[:60]}"))
        return info

    async def lift(self, what: str, actor: str) -> list[str]:
        """Lift protections matching ``what`` (kind, symbol, lock id or ``all``)."""
        return await self.protections.lift(what, actor)

    async def entries_allowed(self, symbol: str | None = None, strategy: str | None = None) -> bool:
        """Whether an entry could pass the state and protection checks now."""
        if not (await self.state.current()).state.allows_entries:
            return False
        return not await self.protections.blocking(symbol, strategy)

    async def status(self, equity: Decimal | None = None) -> RiskStatus:
        """State, protections, drawdown, losing streak and the breaker count."""
        info = await self.state.current()
        peak = await self.protections.peak_equity()
        return RiskStatus(
            state=info.state, state_reason=info.reason, state_actor=info.actor, state_since=info.at,
            protections=await self.protections.active(),
            drawdown_pct=await self.protections.drawdown_pct(equity) if equity is not None else None,
            peak_equity=peak, loss_streak=await self.protections.loss_streak(),
            api_errors_in_window=await self.protections.api_error_count(),
        )
