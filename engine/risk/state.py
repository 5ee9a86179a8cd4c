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
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
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

    async def current(self) -> StateInfo:
        """The state in force (``default`` when no row exists yet)."""
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
        """Record a transition (also when the state is unchanged: the reason may be new)."""
        previous = await self.current()
        row = await TradingStateRecord.create(state=state.value, reason=reason[:255], actor=actor[:64])
        self.changes += 1  # after the write: a copy read before it completed is stale
        if previous.state is not state:
            log.warning("trading state %s -> %s by %s: %s", previous.state.value, state.value, actor, reason)
        return StateInfo(state, row.reason, row.actor, row.at)

    async def history(self, limit: int = 20) -> list[StateInfo]:
        """The newest transitions first."""
        rows = await TradingStateRecord.all().order_by("-at", "-id").limit(limit)
        return [StateInfo(TradingState(r.state) if r.state in TradingState.__members__ else TradingState.HALTED,
                          r.reason, r.actor, r.at) for r in rows]
