"""Command registry and dispatcher: authorization, audit, errors, buttons.

Adapters call :meth:`Dispatcher.dispatch` for a command and :meth:`Dispatcher.press` for a
button; both return ``None`` for strangers, which adapters must answer with *nothing*.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from bot.config import AppConfig
from bot.logging_setup import secrets as log_secrets
from commands.audit import write_audit
from commands.auth import Authorizer, Role
from commands.confirm import ConfirmationStore
from commands.model import ButtonResult, Caller, Reply
from commands.ports import PORT_TIMEOUT_S, TradingControl, TradingReader

if TYPE_CHECKING:
    from commands.approvals import ApprovalService

log = logging.getLogger(__name__)

MAX_ARGS_CHARS = 256  # longer argument strings are refused, never parsed


@dataclass(slots=True)
class CommandDeps:
    """What commands may use: the config, the trading ports, approvals and a clock."""

    config: AppConfig
    reader: TradingReader
    control: TradingControl
    approvals: ApprovalService | None = None
    confirmations: ConfirmationStore = field(default_factory=ConfirmationStore)
    now: Callable[[], datetime] = lambda: datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class CommandContext:
    """One invocation: who, with which arguments, and the dependencies."""

    caller: Caller
    role: Role
    args: list[str]
    deps: CommandDeps
    registry: CommandRegistry
    confirmed: bool = False  # true only when run from a Confirm button (never from typed text)


class UsageError(Exception):
    """Bad arguments: the message is shown to the user with the command's usage."""


Handler = Callable[[CommandContext], Awaitable[Reply]]


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """A command: its name, one-line help, usage, whether it is admin-only, and the handler."""

    name: str
    summary: str
    handler: Handler
    usage: str = ""
    admin: bool = False
    # True: once confirmed, the handler runs to its end whatever the chat's patience (the emergency stop:
    # cancelling it halfway could leave orders or positions behind); the handler reports its outcome itself
    never_cancel: bool = False


class CommandRegistry:
    """Ordered collection of :class:`CommandSpec` by name."""

    def __init__(self) -> None:
        self._specs: dict[str, CommandSpec] = {}

    def add(self, spec: CommandSpec) -> None:
        """Register a command (names are lower-case, unique)."""
        if spec.name in self._specs or spec.name != spec.name.lower():
            raise ValueError(f"bad or duplicate command name {spec.name!r}")
        self._specs[spec.name] = spec

    def get(self, name: str) -> CommandSpec | None:
        """The command called ``name``, if any."""
        return self._specs.get(name)

    def all(self) -> list[CommandSpec]:
        """Every command in registration order."""
        return list(self._specs.values())


def parse_command_text(text: str) -> tuple[str, list[str]] | None:
    """``"/trades@MyBot 5"`` -> ``("trades", ["5"])``; not a command -> ``None``."""
    text = text.strip()
    if not text.startswith("/") or len(text) < 2:
        return None
    head, _, rest = text[1:].partition(" ")
    name = head.split("@", 1)[0].lower()
    return name, split_args(rest)


def split_args(rest: str) -> list[str]:
    """Split an argument string like a shell would; unbalanced quotes fall back to whitespace."""
    rest = rest.strip()[:MAX_ARGS_CHARS]
    try:
        return shlex.split(rest)
    except ValueError:
        return rest.split()


class Dispatcher:
    """Runs commands and button presses for callers, with authorization and audit."""

    def __init__(self, registry: CommandRegistry, deps: CommandDeps, authorizer: Authorizer) -> None:
        self.registry = registry
        self.deps = deps
        self.authorizer = authorizer
        self._last_stranger_log: dict[str, float] = {}
        self._running: set[asyncio.Task[Any]] = set()  # never-cancel handlers (and their late audit rows)

    async def dispatch(self, caller: Caller, name: str, args: list[str]) -> Reply | None:
        """Run command ``name`` for ``caller``; ``None`` means "stay silent" (stranger)."""
        arguments = " ".join(args)[:512]
        role = self.authorizer.role(caller)
        if role is Role.STRANGER:
            await self._stranger(caller, name, arguments)
            return None
        spec = self.registry.get(name)
        if spec is None:
            await write_audit("command", caller, name, arguments, "unknown")
            return Reply(title=f"Unknown command /{name}", text="Send /help for the list.", severity="warning")
        kind = "control" if spec.admin else "command"
        if spec.admin and role is not Role.ADMIN:
            await write_audit(kind, caller, name, arguments, "denied", {"reason": "not an admin"})
            log.warning("non-admin %s refused /%s", caller.actor, name, extra={"component": "commands"})
            return Reply(title=f"/{name} is for admins only", text="Your user id is not in admin_users.", severity="error")
        return await self._run(spec, CommandContext(caller, role, args, self.deps, self.registry), kind, arguments)

    async def press(self, caller: Caller, data: str) -> ButtonResult | None:
        """Handle a button press (callback data); ``None`` means "stay silent" (stranger)."""
        role = self.authorizer.role(caller)
        if role is Role.STRANGER:
            await self._stranger(caller, "button", data[:64])
            return None
        prefix, _, rest = data.partition(":")
        if prefix == "r":  # run / refresh a command, replacing the message
            name, _, arg_text = rest.partition(" ")
            reply = await self.dispatch(caller, name, split_args(arg_text))
            return ButtonResult(toast="Updated", reply=reply, replace=True) if reply else None
        if prefix == "a":  # approval decision "a:<id>:y|n"
            return await self._approval_press(caller, role, rest)
        if prefix in ("k", "x"):  # confirm / cancel a dangerous action
            return await self._confirmation_press(caller, role, prefix == "k", rest)
        await write_audit("command", caller, "button", data[:64], "unknown")
        return ButtonResult(toast="This button is no longer valid.", replace=False)

    async def _approval_press(self, caller: Caller, role: Role, rest: str) -> ButtonResult:
        approvals = self.deps.approvals
        id_text, _, choice = rest.partition(":")
        if approvals is None or not id_text.isdigit() or choice not in ("y", "n"):
            await write_audit("control", caller, "approval.decide", rest, "invalid")
            return ButtonResult(toast="This approval button is not valid.", replace=False)
        if role is not Role.ADMIN:
            await write_audit("control", caller, "approval.decide", rest, "denied", {"reason": "not an admin"})
            return ButtonResult(toast="Only admins can approve or deny trades.", replace=False)
        return await approvals.decide(int(id_text), caller, approve=choice == "y")

    async def _confirmation_press(self, caller: Caller, role: Role, confirm: bool, token: str) -> ButtonResult:
        store = self.deps.confirmations
        if role is not Role.ADMIN:
            await write_audit("control", caller, "confirm", "", "denied", {"reason": "not an admin"})
            return ButtonResult(toast="Only admins can confirm this.", replace=False)
        if not confirm:
            cancelled = store.cancel(token, caller.actor)
            await write_audit("control", caller, "confirm.cancel", "", "ok" if cancelled else "expired")
            return ButtonResult(toast="Cancelled", reply=Reply(title="Cancelled. Nothing was done."), replace=True)
        action = store.take(token, caller.actor)
        if action is None:
            await write_audit("control", caller, "confirm", "", "expired")
            return ButtonResult(
                toast="Expired or already used.",
                reply=Reply(title="This confirmation expired or was already used. Nothing was done.", severity="warning"),
                replace=True,
            )
        spec = self.registry.get(action)
        if spec is None:
            return ButtonResult(toast="Unknown action", replace=False)
        ctx = CommandContext(caller, role, [], self.deps, self.registry, confirmed=True)
        reply = await self._run(spec, ctx, "control", "confirmed")
        return ButtonResult(toast="Done" if reply.severity != "error" else "Failed", reply=reply, replace=True)

    async def _run(self, spec: CommandSpec, ctx: CommandContext, kind: str, arguments: str) -> Reply:
        started = time.monotonic()
        try:
            if spec.never_cancel and ctx.confirmed:
                finished = await self._run_to_the_end(spec, ctx, kind, arguments)
                if finished is None:
                    await write_audit(kind, ctx.caller, spec.name, arguments, "running", {"patience_s": PORT_TIMEOUT_S})
                    return Reply(
                        title=f"/{spec.name} is still running",
                        text="The exchange is slow. It is NOT cancelled and goes on to the end; its final report "
                        "(flat or NOT flat) follows as an alert. Meanwhile see /status.",
                        severity="warning",
                    )
                reply = finished
            else:
                reply = await asyncio.wait_for(spec.handler(ctx), PORT_TIMEOUT_S)
        except UsageError as exc:
            await write_audit(kind, ctx.caller, spec.name, arguments, "usage", {"error": str(exc)[:200]})
            return Reply(title=f"/{spec.name}: {exc}", text=f"Usage: /{spec.name} {spec.usage}".rstrip(), severity="warning")
        except TimeoutError:
            await write_audit(kind, ctx.caller, spec.name, arguments, "timeout")
            log.error("/%s timed out after %.0fs", spec.name, PORT_TIMEOUT_S, extra={"component": "commands"})
            return Reply(title=f"/{spec.name} timed out", text="The bot did not answer in time; check /health.", severity="error")
        except Exception as exc:
            message = log_secrets.redact(str(exc))[:200]
            log.exception("/%s failed", spec.name, extra={"component": "commands"})
            await write_audit(kind, ctx.caller, spec.name, arguments, "error", {"error": f"{type(exc).__name__}: {message}"})
            return Reply(title=f"/{spec.name} failed", text=f"{type(exc).__name__}: {message}", severity="error")
        outcome = "error" if reply.severity == "error" else "ok"
        await write_audit(
            kind, ctx.caller, spec.name, arguments, outcome, {"ms": round((time.monotonic() - started) * 1000, 1), "title": reply.title[:120]}
        )
        return reply

    async def _run_to_the_end(self, spec: CommandSpec, ctx: CommandContext, kind: str, arguments: str) -> Reply | None:
        """Run the handler as its own task and wait up to the chat's patience; ``None``: still running.

        Neither the timeout nor a cancelled caller (an adapter shutting down) cancels the task.
        """
        if any(t.get_name() == f"command-{spec.name}" and not t.done() for t in self._running):
            # a second emergency stop on top of a running one would only race it on the exchange
            return Reply(title=f"/{spec.name} is already running", text="Its final report follows as an alert.",
                         severity="warning")
        task = asyncio.create_task(spec.handler(ctx), name=f"command-{spec.name}")
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        try:
            done, _ = await asyncio.wait({task}, timeout=PORT_TIMEOUT_S)
        except asyncio.CancelledError:  # the caller went away (adapter stopping): the handler goes on
            task.add_done_callback(lambda t: self._finished_late(spec, ctx, kind, arguments, t))
            raise
        if task in done:
            return task.result()
        log.warning("/%s still running after %.0fs: not cancelled, its report follows as an alert", spec.name,
                    PORT_TIMEOUT_S, extra={"component": "commands"})
        task.add_done_callback(lambda t: self._finished_late(spec, ctx, kind, arguments, t))
        return None

    def _finished_late(self, spec: CommandSpec, ctx: CommandContext, kind: str, arguments: str,
                       task: asyncio.Task[Reply]) -> None:
        """Log and audit the end of a handler the chat stopped waiting for (its alert tells the users)."""
        if task.cancelled():
            outcome, detail = "error", {"error": "cancelled (shutdown)"}
        elif task.exception() is not None:
            exc = task.exception()
            outcome, detail = "error", {"error": f"{type(exc).__name__}: {log_secrets.redact(str(exc))[:200]}"}
        else:
            reply = task.result()
            outcome, detail = ("error" if reply.severity == "error" else "ok"), {"title": reply.title[:120]}
        log.log(logging.ERROR if outcome == "error" else logging.INFO, "/%s finished late: %s", spec.name, detail,
                extra={"component": "commands"})
        audit = asyncio.get_running_loop().create_task(write_audit(kind, ctx.caller, spec.name, arguments, outcome, detail))
        self._running.add(audit)
        audit.add_done_callback(self._running.discard)

    async def _stranger(self, caller: Caller, action: str, arguments: str) -> None:
        await write_audit("unauthorized", caller, action, arguments, "ignored", {"display": caller.display[:64]})
        # One log line per stranger per minute: their ids are what an operator needs for setup.
        now = time.monotonic()
        if now - self._last_stranger_log.get(caller.actor, -1e9) > 60:
            self._last_stranger_log[caller.actor] = now
            log.warning(
                "ignored %s from unauthorized user %s in chat %s",
                action,
                caller.actor,
                caller.chat,
                extra={"component": "commands"},
            )
