"""Protections: persisted locks that block entries (never exits).

Each protection is a ``ProtectionLock`` row (kind, scope, reason, until), so a restart keeps
it, ``/status`` can show why and until when, and an admin can lift it. Kinds:

- ``cooldown``: after a losing trade, no entry on that symbol and strategy for
  ``risk.cooldown_after_loss_min`` minutes.
- ``loss_streak``: ``risk.max_consecutive_losses`` losses in a row pause every entry for
  ``risk.consecutive_loss_pause_min`` minutes (the streak counter then starts over).
- ``daily_loss``: equity ``risk.daily_loss_limit_pct`` or more below the UTC day's starting
  equity halts entries until the next UTC midnight.
- ``kill_switch``: equity ``risk.max_drawdown_pct`` or more below the peak equity halts entries
  until an admin lifts it (the manager also sets HALTED and may close everything).
- ``breaker``: more than ``risk.api_error_threshold`` API errors within
  ``risk.api_error_window_min`` minutes halts entries for that window. The error times are
  kept in the KV store (a bounded list), so a crash loop keeps counting across restarts.
- ``reconciliation``: a mismatch reconciliation could not explain; until lifted.
- ``reconciliation_unavailable``: reconciliation could not read the exchange; lifted by the
  next clean reconciliation.

Boundaries: a limit is reached AT the configured value (``>=``); the breaker fires on MORE
than the threshold (``>``), as the config says; a lock is in force while ``now < until``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import Enum

from bot.config import RiskConfig
from db.kv import kv_get, kv_set
from db.models import DailyMetric, ProtectionLock

from .clock import Clock, utc_now
from .events import AlertSink, RiskEvent, emit

log = logging.getLogger(__name__)

HUNDRED = Decimal(100)
# Hard cap on stored API-error times, whatever the threshold (the list only needs threshold + 1).
MAX_STORED_API_ERRORS = 1000


class ProtectionKind(str, Enum):
    """The kinds of protection lock."""

    COOLDOWN = "cooldown"
    LOSS_STREAK = "loss_streak"
    DAILY_LOSS = "daily_loss"
    KILL_SWITCH = "kill_switch"
    BREAKER = "breaker"
    RECONCILIATION = "reconciliation"
    RECONCILIATION_UNAVAILABLE = "reconciliation_unavailable"


# Kinds whose firing is an alarm (state HALTED), not just a pause.
HALTING_KINDS = frozenset({ProtectionKind.KILL_SWITCH, ProtectionKind.RECONCILIATION})


@dataclass(frozen=True, slots=True)
class ActiveProtection:
    """A lock in force: what, why, for whom, until when (``None``: until an admin lifts it)."""

    id: int
    kind: str
    reason: str
    symbol: str | None
    strategy: str | None
    until: datetime | None
    created_at: datetime | None
    fresh: bool = False  # True only on the lock() call that created it

    def covers(self, symbol: str | None, strategy: str | None) -> bool:
        """Whether this lock blocks an entry on ``symbol`` by ``strategy`` (unscoped locks block all)."""
        return (self.symbol is None or self.symbol == symbol) and (self.strategy is None or self.strategy == strategy)

    def describe(self) -> str:
        """One line for /status: kind, scope, reason, until."""
        scope = "/".join(x for x in (self.symbol, self.strategy) if x) or "all"
        until = self.until.strftime("%Y-%m-%d %H:%M:%S UTC") if self.until else "lifted by an admin"
        return f"{self.kind} [{scope}]: {self.reason} (until {until})"


def _view(row: ProtectionLock) -> ActiveProtection:
    return ActiveProtection(row.id, row.kind, row.reason, row.symbol, row.strategy, row.until, row.created_at)


def next_utc_midnight(now: datetime) -> datetime:
    """The start of the next UTC day after ``now``."""
    day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return day_start + timedelta(days=1)


class Protections:
    """Fires, lists and lifts protection locks; keeps the counters they need."""

    def __init__(self, risk: RiskConfig, *, mode: str = "paper", clock: Clock = utc_now,
                 alert: AlertSink | None = None) -> None:
        self.risk = risk
        self.mode = mode
        self.clock = clock
        self.alert = alert
        self._api_error_count = 0  # last count seen, for the synchronous accessor
        self.changes = 0  # bumped after every lock or lift written here (the risk manager's entry view)
        self._api_error_lock = asyncio.Lock()

    # --- keys of the persisted counters ---------------------------------------------------------

    @property
    def _peak_key(self) -> str:
        return f"risk.peak_equity.{self.mode}"

    @property
    def _day_key(self) -> str:
        return f"risk.day_start.{self.mode}"

    @property
    def _streak_key(self) -> str:
        return f"risk.loss_streak.{self.mode}"

    @property
    def _last_equity_key(self) -> str:
        return f"risk.last_equity.{self.mode}"

    @property
    def _api_errors_key(self) -> str:
        return f"risk.api_errors.{self.mode}"

    # --- reading --------------------------------------------------------------------------------

    async def active(self) -> list[ActiveProtection]:
        """Every lock in force now; locks whose time is up are retired on the way."""
        now = self.clock()
        rows = await ProtectionLock.filter(active=True).order_by("id")
        live: list[ActiveProtection] = []
        for row in rows:
            if row.until is not None and row.until <= now:
                row.active = False
                row.lifted_at = now
                row.lifted_by = "expired"
                await row.save(update_fields=["active", "lifted_at", "lifted_by"])
                log.info("protection %s expired", row.kind, extra={"symbol": row.symbol, "strategy": row.strategy})
                continue
            live.append(_view(row))
        return live

    async def blocking(self, symbol: str | None, strategy: str | None) -> list[ActiveProtection]:
        """The locks in force that block an entry on ``symbol`` by ``strategy``."""
        return [p for p in await self.active() if p.covers(symbol, strategy)]

    async def loss_streak(self) -> int:
        """Losing trades in a row since the last win or the last streak pause."""
        return int(await kv_get(self._streak_key, 0) or 0)

    async def peak_equity(self) -> Decimal | None:
        """The highest equity seen (the drawdown reference)."""
        value = await kv_get(self._peak_key)
        return Decimal(value) if value is not None else None

    async def drawdown_pct(self, equity: Decimal) -> Decimal:
        """How far ``equity`` is below the peak, in percent (0 at or above the peak)."""
        peak = await self.peak_equity()
        if peak is None or peak <= 0 or equity >= peak:
            return Decimal(0)
        return (peak - equity) / peak * HUNDRED

    # --- firing ---------------------------------------------------------------------------------

    async def lock(self, kind: ProtectionKind, reason: str, until: datetime | None, *,
                   symbol: str | None = None, strategy: str | None = None,
                   detail: dict | None = None) -> ActiveProtection:
        """Put a lock in force (an existing one of the same kind and scope is extended, not duplicated)."""
        existing = await ProtectionLock.filter(active=True, kind=kind.value, symbol=symbol, strategy=strategy).first()
        if existing is not None:
            if existing.until is not None and (until is None or until > existing.until):
                existing.until = until
                existing.reason = reason[:255]
                await existing.save(update_fields=["until", "reason"])
                self.changes += 1
            return _view(existing)
        row = await ProtectionLock.create(kind=kind.value, symbol=symbol, strategy=strategy, reason=reason[:255],
                                          until=until, active=True)
        self.changes += 1
        view = dataclasses.replace(_view(row), fresh=True)
        await emit(self.alert, RiskEvent(
            event_type="halt" if kind in HALTING_KINDS else "protection",
            title=f"Protection: {kind.value}",
            text=view.describe(),
            detail={"kind": kind.value, "symbol": symbol, "strategy": strategy, "reason": reason,
                    "until": until.isoformat() if until else None, **(detail or {})},
            dedup_key=f"protection:{kind.value}:{symbol}:{strategy}:{row.id}",  # a lock set again after /unlock is news
        ))
        return view

    async def on_trade_closed(self, symbol: str, strategy: str, pnl: Decimal) -> list[ActiveProtection]:
        """Account for a closed trade (net PnL): cooldown after a loss, pause after a losing streak."""
        fired: list[ActiveProtection] = []
        now = self.clock()
        if pnl >= 0:
            await kv_set(self._streak_key, 0)
            return fired
        if self.risk.cooldown_after_loss_min > 0:
            fired.append(await self.lock(
                ProtectionKind.COOLDOWN, f"losing trade ({pnl:f} USDT)",
                now + timedelta(minutes=self.risk.cooldown_after_loss_min), symbol=symbol, strategy=strategy))
        streak = await self.loss_streak() + 1
        if streak >= self.risk.max_consecutive_losses:
            await kv_set(self._streak_key, 0)  # the pause is the consequence; the next streak starts over
            if self.risk.consecutive_loss_pause_min > 0:
                fired.append(await self.lock(
                    ProtectionKind.LOSS_STREAK, f"{streak} losing trades in a row",
                    now + timedelta(minutes=self.risk.consecutive_loss_pause_min)))
        else:
            await kv_set(self._streak_key, streak)
        return fired

    async def on_equity(self, equity: Decimal) -> list[ActiveProtection]:
        """Track peak and day-start equity; fire the daily-loss limit and the drawdown kill switch."""
        fired: list[ActiveProtection] = []
        if equity <= 0:
            # Zero or negative equity is either a wiped account or a bad reading: both mean stop.
            fired.append(await self.lock(ProtectionKind.KILL_SWITCH, f"equity reads {equity:f} USDT", None))
            return fired
        now = self.clock()
        await kv_set(self._last_equity_key, str(equity))
        peak = await self.peak_equity()
        if peak is None or equity > peak:
            await kv_set(self._peak_key, str(equity))
            peak = equity
        drawdown = (peak - equity) / peak * HUNDRED
        if drawdown >= Decimal(repr(self.risk.max_drawdown_pct)):
            fired.append(await self.lock(
                ProtectionKind.KILL_SWITCH,
                f"drawdown {drawdown:.2f}% from peak {peak:f} reached the {self.risk.max_drawdown_pct:g}% limit", None,
                detail={"equity": str(equity), "peak": str(peak), "drawdown_pct": f"{drawdown:.4f}"}))
        start = await self._day_start_equity(now, equity)
        loss = (start - equity) / start * HUNDRED if start > 0 else Decimal(0)
        if loss >= Decimal(repr(self.risk.daily_loss_limit_pct)):
            fired.append(await self.lock(
                ProtectionKind.DAILY_LOSS,
                f"down {loss:.2f}% today (from {start:f}), limit {self.risk.daily_loss_limit_pct:g}%",
                next_utc_midnight(now), detail={"equity": str(equity), "day_start": str(start)}))
        return fired

    async def _day_start_equity(self, now: datetime, equity: Decimal) -> Decimal:
        """The UTC day's starting equity: the daily-metrics row if any, else the first reading of the day."""
        today = now.date().isoformat()
        stored = await kv_get(self._day_key)
        if isinstance(stored, dict) and stored.get("day") == today:
            return Decimal(stored["equity"])
        metric = await DailyMetric.get_or_none(day=now.date(), mode=self.mode)
        start = Decimal(metric.start_equity) if metric is not None and metric.start_equity > 0 else equity
        await kv_set(self._day_key, {"day": today, "equity": str(start)})
        return start

    async def record_api_error(self, what: str = "") -> ActiveProtection | None:
        """Count one API error; more than the threshold within the window trips the breaker.

        The times live in the KV store (read, pruned and written back on every error), so a
        restart - or a crash loop - keeps counting within the window instead of starting at 0.
        """
        now = self.clock()
        window = timedelta(minutes=self.risk.api_error_window_min)
        async with self._api_error_lock:
            times = [t for t in await self._stored_api_errors() if t > now - window]
            times.append(now)
            count = len(times)
            tripped = count > self.risk.api_error_threshold
            # Tripping starts a fresh count (the lock covers the window); otherwise keep only what can matter.
            keep = [] if tripped else times[-min(self.risk.api_error_threshold + 1, MAX_STORED_API_ERRORS):]
            await kv_set(self._api_errors_key, [t.isoformat() for t in keep])
            self._api_error_count = len(keep)
        if tripped:
            return await self.lock(
                ProtectionKind.BREAKER,
                f"{count} API errors within {self.risk.api_error_window_min:g} min" + (f" (last: {what[:80]})" if what else ""),
                now + window)
        return None

    async def _stored_api_errors(self) -> list[datetime]:
        """The persisted API-error times, oldest first; unreadable entries are dropped."""
        stored = await kv_get(self._api_errors_key, []) or []
        times: list[datetime] = []
        for text in stored if isinstance(stored, list) else []:
            try:
                moment = datetime.fromisoformat(text)
            except (TypeError, ValueError):
                log.warning("dropping an unreadable API-error time %r", text)
                continue
            if moment.tzinfo is not None:  # a naive time cannot be compared with the aware clock
                times.append(moment)
        return sorted(times)

    async def api_error_count(self) -> int:
        """API errors counted in the current window, read from the database (for /status)."""
        window = timedelta(minutes=self.risk.api_error_window_min)
        now = self.clock()
        self._api_error_count = sum(1 for t in await self._stored_api_errors() if t > now - window)
        return self._api_error_count

    def api_errors_in_window(self) -> int:
        """The count as of the last :meth:`record_api_error` or :meth:`api_error_count` call (no I/O)."""
        return self._api_error_count

    # --- lifting --------------------------------------------------------------------------------

    async def lift(self, what: str, actor: str) -> list[str]:
        """Lift locks matching ``what``: ``all``, a kind, a symbol, or a lock id. Returns what was lifted."""
        what = what.strip()
        active = await self.active()
        chosen = [p for p in active if what.lower() == "all" or p.kind == what.lower()
                  or (p.symbol is not None and p.symbol.upper() == what.upper()) or str(p.id) == what]
        lifted = await self._lift_rows(chosen, actor)
        kinds = {p.kind for p in chosen}
        last_equity = await kv_get(self._last_equity_key)
        if last_equity is not None:
            # Lifting accepts the current equity as the new reference; otherwise the lock fires again at once.
            if ProtectionKind.KILL_SWITCH.value in kinds:
                await kv_set(self._peak_key, str(last_equity))
            if ProtectionKind.DAILY_LOSS.value in kinds:
                await kv_set(self._day_key, {"day": self.clock().date().isoformat(), "equity": str(last_equity)})
        return lifted

    async def lift_kind(self, kind: ProtectionKind, actor: str) -> list[str]:
        """Lift every lock of one kind (used by the system, e.g. a clean reconciliation)."""
        return await self._lift_rows([p for p in await self.active() if p.kind == kind.value], actor)

    async def _lift_rows(self, chosen: Iterable[ActiveProtection], actor: str) -> list[str]:
        now = self.clock()
        lifted = []
        for p in chosen:
            await ProtectionLock.filter(id=p.id).update(active=False, lifted_at=now, lifted_by=actor[:64])
            self.changes += 1
            log.warning("protection lifted by %s: %s", actor, p.describe())
            lifted.append(p.describe())
        return lifted
