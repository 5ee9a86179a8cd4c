"""Alert events emitted by the risk package.

The risk code never talks to Telegram or Discord: it calls an :data:`AlertSink` with a
:class:`RiskEvent`. The worker wires the sink to the alert outbox; tests collect events in
a list. ``event_type`` is one of the ``alerts.*`` keys of the config (``risk_rejection``,
``protection``, ``halt``, ``error``) so the configured level applies.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RiskEvent:
    """One thing a human should hear about: a rejection, a protection firing, a halt."""

    event_type: str  # risk_rejection, protection, halt, error
    title: str
    text: str
    detail: dict[str, Any] = field(default_factory=dict)
    dedup_key: str = ""


AlertSink = Callable[[RiskEvent], Awaitable[None] | None]


async def emit(sink: AlertSink | None, event: RiskEvent) -> None:
    """Deliver ``event`` to ``sink``; a failing sink is logged, never raised (alerts must not stop risk code)."""
    log.warning("%s: %s", event.title, event.text, extra={"event": event.event_type})
    if sink is None:
        return
    try:
        result = sink(event)
        if inspect.isawaitable(result):
            await result
    except Exception:
        log.exception("alert sink failed for %s", event.title)
