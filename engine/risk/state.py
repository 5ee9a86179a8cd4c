"""Trading state: RUNNING, PAUSED, HALTED, REDUCING, persisted in ``trading_state``.

- RUNNING: entries and exits allowed (protections still apply to entries).
- PAUSED: no entries; open positions stay managed (an operator's or the STOP file's choice).
- HALTED: no entries, and an alarm: something is wrong (kill switch, failed reconciliation,
  emergency stop). Only an admin resumes.
- REDUCING: only risk-reducing orders (exits, stop moves, reduce-only closes).

The newest ``TradingStateRecord`` row rules, so a restart keeps the state, and another
process (``trading-bot emergency-stop``) can halt a running bot: :meth:`TradingStateStore.current`
reads the database every time. The risk manager's entry gate reads it ahead of entries instead
(``RiskManager.entry_view_ttl_s``), and ``changes`` tells it when a write here made its copy stale.

A state that stops entries (PAUSED, HALTED, REDUCING) is in force in this process *before* it is
written: if the database write fails, the store keeps it in memory (``unsaved``) and
:meth:`TradingStateStore.current` answers it without reading the database, until a later write
succeeds. A pause or an emergency stop must work while the database is down; RUNNING is never
applied in memory only (a failed resume leaves the bot stopped).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum

from db.models import TradingStateRecord

log = logging.getLogger(__name__)


class TradingState(str, Enum):
    """What the bot may do right now."""

    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    HALTED = "HALTED"
    REDUCING = "REDUCING"

    @property
    def allows_entries(self) -> bool:
        """Only RUNNING opens new risk."""
        return self is TradingState.RUNNING

    @property
    def allows_reducing(self) -> bool:
        """Every state lets risk go down (exits, stops, reduce-only closes)."""
        return True


@dataclass(frozen=True, slots=True)
class StateInfo:
    """The current state with why, who and when."""

    state: TradingState
    reason: str
    actor: str
    at: datetime | None


class TradingStateStore:
    """Reads and changes the persisted trading state (the newest row rules)."""

    def __init__(self, default: TradingState = TradingState.RUNNING) -> None:
        self.default = default
        self.changes = 0  # bumped by every write through this store (readers holding a copy know it is stale)
        self._held: StateInfo | None = None  # a stopping state in force here that is not (yet) in the database

    @property
    def unsaved(self) -> StateInfo | None:
        """The stopping state in force in memory whose database write failed (None when all is stored)."""
        return self._held

    async def current(self) -> StateInfo:
        """The state in force (``default`` when no row exists yet; the unsaved in-memory state first)."""
        if self._held is not None:
            return self._held
        return await self._stored()

    async def _stored(self) -> StateInfo:
        """The newest row of the database (``default`` when none)."""
        row = await TradingStateRecord.all().order_by("-at", "-id").first()
        if row is None:
            return StateInfo(self.default, "initial state", "system", None)
        try:
            state = TradingState(row.state)
        except ValueError:
            # A row we cannot read is not permission to trade.
            log.error("unknown trading state %r in the database: treating it as HALTED", row.state)
            return StateInfo(TradingState.HALTED, f"unreadable state {row.state!r}", row.actor, row.at)
        return StateInfo(state, row.reason, row.actor, row.at)

    async def set(self, state: TradingState, reason: str, actor: str = "system") -> StateInfo:
        """Record a transition (also when the state is unchanged: the reason may be new).

        A state that stops entries takes effect in memory first, so it holds even when the write
        raises (the exception still propagates: the caller says the state is not saved).
        """
        previous = self._held
        mine = StateInfo(state, reason[:255], actor[:64], datetime.now(UTC)) if not state.allows_entries else None
        if mine is not None:
            self._held = mine
            self.changes += 1  # readers holding a copy re-read: entries stop now, not after the write
        try:
            if previous is None:
                previous = await self._stored()
            row = await TradingStateRecord.create(state=state.value, reason=reason[:255], actor=actor[:64])
        except Exception:
            if mine is not None and self._held is None:
                # another write succeeded meanwhile and cleared what was held (a flapping database): this stop
                # was never stored, so it is in force again (a halt must not be lost to a later pause)
                self._held = mine
                self.changes += 1
            if self._held is not None:
                log.critical("trading state %s by %s is in force in memory only: the database write failed "
                             "(a restart would forget it)", self._held.state.value, actor, exc_info=True)
            raise
        self._held = None  # stored: the database rules again
        self.changes += 1  # after the write: a copy read before it completed is stale
        if previous.state is not state:
            log.warning("trading state %s -> %s by %s: %s", previous.state.value, state.value, actor, reason)
        return StateInfo(state, row.reason, row.actor, row.at)

    async def history(self, limit: int = 20) -> list[StateInfo]:
        """The newest transitions first."""
        rows = await TradingStateRecord.all().order_by("-at", "-id").limit(limit)
        return [StateInfo(TradingState(r.state) if r.state in TradingState.__members__ else TradingState.HALTED,
                          r.reason, r.actor, r.at) for r in rows]
