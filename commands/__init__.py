"""Chat commands, transport-neutral: adapters (Telegram, Discord) render what these return.

Build a dispatcher with :func:`build_dispatcher` and feed it ``(Caller, name, args)`` or
button data; see ``commands.ports`` for the interfaces the trading side implements.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from bot.config import AppConfig
from commands.approvals import ApprovalService
from commands.auth import Authorizer
from commands.builtin import builtin_commands
from commands.confirm import ConfirmationStore
from commands.model import Button, ButtonResult, ButtonStyle, Caller, Reply, Table
from commands.ports import TradingControl, TradingReader
from commands.registry import (
    CommandDeps,
    CommandRegistry,
    Dispatcher,
    parse_command_text,
)

__all__ = [
    "Button",
    "ButtonResult",
    "ButtonStyle",
    "Caller",
    "Dispatcher",
    "Reply",
    "Table",
    "build_dispatcher",
    "parse_command_text",
]


def build_dispatcher(
    config: AppConfig,
    reader: TradingReader,
    control: TradingControl,
    approvals: ApprovalService | None = None,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    confirmations: ConfirmationStore | None = None,
) -> Dispatcher:
    """A dispatcher with every built-in command and the config's allow-lists."""
    registry = CommandRegistry()
    for spec in builtin_commands():
        registry.add(spec)
    deps = CommandDeps(
        config=config,
        reader=reader,
        control=control,
        approvals=approvals,
        confirmations=confirmations or ConfirmationStore(),
        now=now,
    )
    return Dispatcher(registry, deps, Authorizer.from_config(config))
