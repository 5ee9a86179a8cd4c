"""One-shot confirmations for dangerous commands (the emergency stop)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PendingConfirmation:
    """An action waiting for its requester to press Confirm."""

    action: str
    actor: str
    expires_at: float


class ConfirmationStore:
    """Tokens for confirm buttons: single use, bound to the requesting user, short-lived."""

    def __init__(self, ttl_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._pending: dict[str, PendingConfirmation] = {}

    def create(self, action: str, actor: str) -> str:
        """Register a pending confirmation and return its token (fits in button data)."""
        now = self._clock()
        self._pending = {t: p for t, p in self._pending.items() if p.expires_at > now}
        token = secrets.token_urlsafe(9)
        self._pending[token] = PendingConfirmation(action, actor, now + self._ttl_s)
        return token

    def take(self, token: str, actor: str) -> str | None:
        """The confirmed action, once; ``None`` when unknown, expired, used or someone else's."""
        pending = self._pending.get(token)
        if pending is None or pending.actor != actor:
            return None
        del self._pending[token]
        return pending.action if pending.expires_at > self._clock() else None

    def cancel(self, token: str, actor: str) -> bool:
        """Drop a pending confirmation of this actor; true if there was one."""
        pending = self._pending.get(token)
        if pending is None or pending.actor != actor:
            return False
        del self._pending[token]
        return True
