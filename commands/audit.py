"""Writing the audit log: every command, who sent it and its outcome; every stranger."""

from __future__ import annotations

import logging
from typing import Any

from commands.model import Caller
from db.models import AuditLog

log = logging.getLogger(__name__)


async def write_audit(
    kind: str,
    caller: Caller,
    action: str,
    arguments: str,
    outcome: str,
    detail: dict[str, Any] | None = None,
) -> None:
    """Store one audit row; a database failure is logged, never raised (chat must keep working)."""
    try:
        await AuditLog.create(
            kind=kind[:32],
            actor=caller.actor[:128],
            chat=caller.chat[:128],
            action=action[:64],
            arguments=arguments[:512],
            outcome=outcome[:32],
            detail=detail or {},
        )
    except Exception:
        log.exception("could not write audit row for %s %s", caller.actor, action, extra={"component": "audit"})
