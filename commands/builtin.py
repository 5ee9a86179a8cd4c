"""Every chat command of the bot, transport-neutral (see ``commands.registry``)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from commands import format as fmt
from commands import stats
from commands.auth import Role
from commands.model import Button, ButtonStyle, Reply, Table
from commands.ports import ApprovalRefusedError, HealthView, NotSavedError, PositionView, ResumeRefusedError
from commands.registry import CommandContext, CommandSpec, UsageError
from db.models import AlertOutbox, AlertStatus, Signal

MAX_ROWS = 50


def _count(ctx: CommandContext, default: int, maximum: int = MAX_ROWS) -> int:
    """The optional numeric first argument (``trades 20``), bounded."""
    if not ctx.args:
        return default
    text = ctx.args[0]
    if not text.isdigit() or not 1 <= int(text) <= maximum:
        raise UsageError(f"expected a number from 1 to {maximum}, got {text[:20]!r}")
    return int(text)


def _refresh(command: str) -> list[list[Button]]:
    return [[Button("Refresh", f"r:{command}", ButtonStyle.SECONDARY)]]


def positions_table(positions: list[PositionView]) -> Table:
    """Open positions with PnL in money and R."""
    return Table(
        headers=("id", "symbol", "side", "qty", "entry", "mark", "pnl", "R"),
        rows=tuple(
            (
                p.id,
                p.symbol,
                p.side,
                fmt.qty(p.qty),
                fmt.price(p.entry_price),
                fmt.price(p.mark_price),
                fmt.signed_money(p.unrealized_pnl),
                fmt.r_multiple(p.r_multiple),
            )
            for p in positions
        ),
        title="Open positions",
    )


def health_line(items: list[HealthView]) -> str:
    """``feed ok (2s), api DOWN: timeout``."""
    parts = []
    for h in items:
        age = f" ({fmt.duration(h.age_s)})" if h.age_s is not None else ""
        parts.append(f"{h.name} {'ok' if h.ok else 'DOWN'}{age}{': ' + h.detail if h.detail and not h.ok else ''}")
    return ", ".join(parts) or "-"


def _signal_line(signal: Signal | None) -> str:
    if signal is None:
        return "none yet"
    return (
        f"{signal.symbol} {signal.side} {signal.strategy} at {fmt.utc(signal.created_at)}: "
        f"{signal.fate.value}{' (' + signal.reason + ')' if signal.reason else ''}"
    )


async def cmd_help(ctx: CommandContext) -> Reply:
    """List the commands this caller may use."""
    lines = []
    for spec in ctx.registry.all():
        if spec.admin and ctx.role is not Role.ADMIN:
            continue
        usage = f" {spec.usage}" if spec.usage else ""
        lines.append(f"/{spec.name}{usage} - {spec.summary}{' (admin)' if spec.admin else ''}")
    return Reply(title="Commands", text="\n".join(lines))


async def cmd_status(ctx: CommandContext) -> Reply:
    """Mode, state, protections, uptime, health, positions, drawdown, last signal."""
    snap = await ctx.deps.reader.status()
    now = ctx.deps.now()
    try:
        last_signal_text = _signal_line(
            await Signal.filter(mode=ctx.deps.config.mode.value).order_by("-created_at", "-id").first())
    except Exception as exc:  # noqa: BLE001 - the engine's in-memory state is still worth showing
        last_signal_text = f"unknown (database unavailable: {type(exc).__name__})"
    protections = "; ".join(
        f"{p.kind}{' ' + p.symbol if p.symbol else ''}: {p.reason}{' until ' + fmt.utc(p.until) if p.until else ''}"
        for p in snap.protections
    )
    total_pnl = sum((p.unrealized_pnl for p in snap.positions), Decimal(0))
    reply = Reply(
        title=f"Status: {snap.mode.upper()} · {snap.state}",
        fields=[
            ("State", snap.state + (f" ({snap.state_reason})" if snap.state_reason else "")),
            ("Approval mode", "on" if snap.approval_enabled else "off"),
            ("Uptime", fmt.duration((now - snap.started_at).total_seconds())),
            ("Equity", fmt.money(snap.equity)),
            ("Drawdown", fmt.pct(snap.drawdown_pct)),
            ("Protections", protections or "none"),
            ("Health", health_line(snap.health)),
            ("Open positions", f"{len(snap.positions)} ({fmt.signed_money(total_pnl)})"),
            ("Last signal", last_signal_text),
        ],
        buttons=_refresh("status"),
        severity="warning" if snap.state != "RUNNING" or not all(h.ok for h in snap.health) else "info",
    )
    if snap.positions:
        reply.tables.append(positions_table(snap.positions))
    return reply


async def cmd_balance(ctx: CommandContext) -> Reply:
    """The account balance."""
    b = await ctx.deps.reader.balance()
    return Reply(
        title=f"Balance ({b.asset})",
        fields=[
            ("Equity", fmt.money(b.equity)),
            ("Available", fmt.money(b.available)),
            ("Used margin", fmt.money(b.used_margin)),
            ("Unrealized PnL", fmt.signed_money(b.unrealized_pnl)),
        ],
        buttons=_refresh("balance"),
    )


async def cmd_positions(ctx: CommandContext) -> Reply:
    """Open positions with PnL in money and R."""
    snap = await ctx.deps.reader.status()
    if not snap.positions:
        return Reply(title="No open positions", buttons=_refresh("positions"))
    stops = [(p.id, f"stop {fmt.price(p.stop)} target {fmt.price(p.target)}") for p in snap.positions]
    return Reply(title=f"Open positions ({len(snap.positions)})", fields=stops, tables=[positions_table(snap.positions)], buttons=_refresh("positions"))


async def cmd_orders(ctx: CommandContext) -> Reply:
    """Open orders."""
    orders = await ctx.deps.reader.open_orders()
    if not orders:
        return Reply(title="No open orders", buttons=_refresh("orders"))
    table = Table(
        headers=("symbol", "side", "type", "qty", "price", "trigger", "intent"),
        rows=tuple(
            (o.symbol, f"{o.side}/{o.position_side}", o.order_type, fmt.qty(o.qty), fmt.price(o.price), fmt.price(o.stop_price), o.intent)
            for o in orders
        ),
    )
    return Reply(title=f"Open orders ({len(orders)})", tables=[table], buttons=_refresh("orders"))


async def cmd_trades(ctx: CommandContext) -> Reply:
    """The last n closed trades."""
    n = _count(ctx, 10)
    trades = await stats.closed_trades(ctx.deps.config.mode.value, n)
    if not trades:
        return Reply(title="No closed trades yet")
    table = Table(
        headers=("id", "closed", "symbol", "side", "pnl", "R", "exit"),
        rows=tuple(
            (str(t.id), fmt.short_time(t.closed_at), t.symbol, t.side, fmt.signed_money(t.realized_pnl), fmt.r_multiple(t.r_multiple), t.exit_reason)
            for t in trades
        ),
    )
    total = sum((Decimal(t.realized_pnl) for t in trades), Decimal(0))
    return Reply(title=f"Last {len(trades)} trades", fields=[("Net PnL", fmt.signed_money(total))], tables=[table])


async def cmd_profit(ctx: CommandContext) -> Reply:
    """Win rate, profit factor, R:R, return and drawdown over n days."""
    days = _count(ctx, 30, maximum=3650)
    balance = await ctx.deps.reader.balance()  # ports never raise: an unreadable balance comes back as zeros
    # without a real equity the return is left out, not shown as -100 %
    equity: Decimal | None = balance.equity if balance.known and balance.equity > 0 else None
    s = await stats.profit_stats(ctx.deps.config.mode.value, days, ctx.deps.now(), equity)
    pf = s.profit_factor
    return Reply(
        title=f"Profit, last {days} days",
        fields=[
            ("Trades", f"{s.trades} ({s.wins} won, {s.losses} lost)"),
            ("Win rate", fmt.pct(s.win_rate_pct, 1)),
            ("Profit factor", f"{pf:.2f}" if pf is not None else ("inf" if s.gross_profit > 0 else "-")),
            ("Avg win / avg loss (R:R)", f"{fmt.money(s.avg_win)} / {fmt.money(s.avg_loss)} ({s.reward_risk:.2f})" if s.reward_risk is not None else f"{fmt.money(s.avg_win)} / {fmt.money(s.avg_loss)}"),
            ("Average R", fmt.r_multiple(s.avg_r)),
            ("Net PnL", fmt.signed_money(s.net_pnl)),
            ("Return", fmt.pct(s.return_pct, signed=True)),
            ("Max drawdown", fmt.pct(s.max_drawdown_pct)),
        ],
    )


async def cmd_daily(ctx: CommandContext) -> Reply:
    """Per-day PnL for the last n days."""
    n = _count(ctx, 7, maximum=90)
    rows = await stats.daily_rows(ctx.deps.config.mode.value, n)
    if not rows:
        return Reply(title="No daily figures yet")
    table = Table(
        headers=("day", "pnl", "trades", "W/L", "equity", "dd"),
        rows=tuple(
            (r.day.isoformat(), fmt.signed_money(r.realized_pnl), str(r.trades), f"{r.wins}/{r.losses}", fmt.money(r.end_equity), fmt.pct(r.max_drawdown_pct, 1))
            for r in rows
        ),
    )
    return Reply(title=f"Daily, last {len(rows)} days", tables=[table])


async def cmd_signals(ctx: CommandContext) -> Reply:
    """The last n signals and what became of them."""
    n = _count(ctx, 10)
    rows = await stats.recent_signals(ctx.deps.config.mode.value, n)
    if not rows:
        return Reply(title="No signals yet")
    table = Table(
        headers=("time", "symbol", "strategy", "side", "fate", "reason"),
        rows=tuple((fmt.short_time(s.created_at), s.symbol, s.strategy, s.side, s.fate.value, s.reason[:40]) for s in rows),
    )
    return Reply(title=f"Last {len(rows)} signals", tables=[table])


async def cmd_health(ctx: CommandContext) -> Reply:
    """Feed, API, database and alert delivery health."""
    snap = await ctx.deps.reader.status()
    fields = [(h.name, ("ok" if h.ok else "DOWN") + (f", {fmt.duration(h.age_s)} ago" if h.age_s is not None else "") + (f", {h.detail}" if h.detail else "")) for h in snap.health]
    try:
        backlog = await AlertOutbox.filter(status=AlertStatus.PENDING).count()
        failed = await AlertOutbox.filter(status=AlertStatus.FAILED).count()
        fields.append(("database", "ok"))
        fields.append(("alert outbox", f"{backlog} pending, {failed} failed"))
        db_ok = True
    except Exception as exc:  # noqa: BLE001 - reporting the failure is the point
        fields.append(("database", f"DOWN: {type(exc).__name__}"))
        db_ok = False
    healthy = db_ok and all(h.ok for h in snap.health)
    return Reply(title="Health: " + ("all good" if healthy else "PROBLEMS"), fields=fields, buttons=_refresh("health"), severity="info" if healthy else "warning")


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(value, dict):
        out: list[tuple[str, str]] = []
        for key, inner in value.items():
            out.extend(_flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return [(prefix, str(value))]


async def cmd_config(ctx: CommandContext) -> Reply:
    """The effective configuration with secrets masked."""
    rows = _flatten(ctx.deps.config.masked_dict())
    section = ctx.args[0].lower() if ctx.args else ""
    if section:
        rows = [r for r in rows if r[0] == section or r[0].startswith(section + ".")]
        if not rows:
            raise UsageError(f"no config section {section[:40]!r}")
    return Reply(title="Configuration" + (f": {section}" if section else "") + " (secrets masked)", tables=[Table(("key", "value"), tuple(rows))])


async def cmd_whoami(ctx: CommandContext) -> Reply:
    """The caller's own ids, to help filling the config."""
    c = ctx.caller
    return Reply(
        title="Who am I",
        fields=[("Transport", c.transport), ("User id", str(c.user_id)), ("Chat id", str(c.chat_id)), ("Role", ctx.role.value)],
    )


async def cmd_pause(ctx: CommandContext) -> Reply:
    """Stop opening positions."""
    reason = " ".join(ctx.args) or "paused from chat"
    try:
        await ctx.deps.control.pause(ctx.caller.actor, reason)
    except NotSavedError as exc:
        return Reply(title="Paused: no new entries (NOT saved)", text=str(exc), severity="error")
    return Reply(title="Paused: no new entries", text="Open positions stay managed. /resume to continue.", severity="warning")


async def cmd_resume(ctx: CommandContext) -> Reply:
    """Allow entries again, unless what halted them is unresolved; the reply says whether entries are allowed now."""
    try:
        blocked = await ctx.deps.control.resume(ctx.caller.actor)
    except ResumeRefusedError as exc:
        return Reply(title="Not resumed: entries stay halted", text=str(exc), severity="error")
    if blocked:
        return Reply(title="Resumed, but entries are still refused", text=blocked, severity="warning")
    return Reply(title="Resumed: entries allowed", text="Active protections still apply (see /status).", severity="success")


async def cmd_approval(ctx: CommandContext) -> Reply:
    """Turn approval mode on or off."""
    if len(ctx.args) != 1 or ctx.args[0].lower() not in ("on", "off"):
        raise UsageError("say on or off")
    enabled = ctx.args[0].lower() == "on"
    try:
        await ctx.deps.control.set_approval(enabled, ctx.caller.actor)
    except ApprovalRefusedError as exc:
        return Reply(title="Approval mode not turned on", text=str(exc), severity="warning")
    return Reply(title=f"Approval mode {'on: every entry waits for an admin' if enabled else 'off'}", severity="success")


async def cmd_close(ctx: CommandContext) -> Reply:
    """Close one position by id, or all of them."""
    if len(ctx.args) != 1:
        raise UsageError("name a position id (see /positions) or all")
    target = ctx.args[0]
    report = await ctx.deps.control.close_positions(target, ctx.caller.actor)
    fields = [("Closed", ", ".join(report.closed) or "none")]
    fields += [(f"Failed {key}", why) for key, why in report.failed.items()]
    return Reply(title=f"Close {target}", fields=fields, severity="error" if report.failed else "success")


async def cmd_unlock(ctx: CommandContext) -> Reply:
    """Lift protections."""
    if len(ctx.args) != 1:
        raise UsageError("name a protection kind, a symbol or all (see /status)")
    lifted = await ctx.deps.control.unlock(ctx.args[0], ctx.caller.actor)
    if not lifted:
        return Reply(title=f"Nothing matched {ctx.args[0][:40]!r}", severity="warning")
    return Reply(title="Unlocked", fields=[("Lifted", ", ".join(lifted))], severity="success")


async def cmd_stop(ctx: CommandContext) -> Reply:
    """Emergency stop: asks for confirmation, then cancels all orders and closes all positions."""
    if not ctx.confirmed:
        token = ctx.deps.confirmations.create("stop", ctx.caller.actor)
        return Reply(
            title="EMERGENCY STOP?",
            text="This pauses the bot, cancels every order and closes every position at market. Confirm within 60 s.",
            buttons=[[Button("Confirm emergency stop", f"k:{token}", ButtonStyle.DANGER), Button("Cancel", f"x:{token}", ButtonStyle.SECONDARY)]],
            severity="warning",
        )
    report = await ctx.deps.control.emergency_stop(ctx.caller.actor)
    fields = [
        ("Cancelled orders", str(report.cancelled_orders)),
        ("Closed positions", ", ".join(report.closed_positions) or "none"),
        ("Account flat", "yes" if report.flat else "NO"),
    ]
    fields += [("Failure", f) for f in report.failures]
    fields += [("Warning", w) for w in report.warnings]
    ok = report.flat and not report.failures
    title = "Emergency stop done: flat" if ok else "Emergency stop INCOMPLETE: check the exchange"
    if ok and report.warnings:
        title += " (not all of it was saved: see the warnings)"
    return Reply(
        title=title,
        fields=fields,
        severity=("warning" if report.warnings else "success") if ok else "error",
    )


def builtin_commands() -> list[CommandSpec]:
    """Every command, in the order /help shows them."""
    return [
        CommandSpec("help", "this list", cmd_help),
        CommandSpec("status", "mode, state, protections, health, positions", cmd_status),
        CommandSpec("balance", "account balance", cmd_balance),
        CommandSpec("positions", "open positions with PnL and R", cmd_positions),
        CommandSpec("orders", "open orders", cmd_orders),
        CommandSpec("trades", "last closed trades", cmd_trades, usage="[n]"),
        CommandSpec("profit", "win rate, profit factor, R:R, return, drawdown", cmd_profit, usage="[days]"),
        CommandSpec("daily", "per-day PnL", cmd_daily, usage="[n]"),
        CommandSpec("signals", "last signals and their fate", cmd_signals, usage="[n]"),
        CommandSpec("health", "feed, API, database, alert delivery", cmd_health),
        CommandSpec("config", "configuration, secrets masked", cmd_config, usage="[section]"),
        CommandSpec("whoami", "your user and chat ids", cmd_whoami),
        CommandSpec("pause", "stop opening positions", cmd_pause, usage="[reason]", admin=True),
        CommandSpec("resume", "allow entries again", cmd_resume, admin=True),
        CommandSpec("approval", "approval mode on or off", cmd_approval, usage="on|off", admin=True),
        CommandSpec("close", "close a position or all", cmd_close, usage="<id|all>", admin=True),
        CommandSpec("unlock", "lift a protection", cmd_unlock, usage="<what>", admin=True),
        CommandSpec("stop", "EMERGENCY STOP: cancel all, close all", cmd_stop, admin=True, never_cancel=True),
    ]
