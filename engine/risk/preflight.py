"""Pre-flight checks before anything trades (also ``trading-bot doctor``).

Config sanity, database, API reachability and keys, clock offset, position mode, a
sufficient balance, and positions that would conflict with the bot's (a position on a
traded symbol with no open trade in the database). Each check says what is wrong and what
to do; ``fatal`` checks stop a live start.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from bot.config import AppConfig, TradingMode
from db.models import Trade, TradeState, TradingStateRecord

log = logging.getLogger(__name__)

CLOCK_OFFSET_FAIL_MS = 2500  # half the recommended recvWindow: beyond it signed requests start failing
MIN_BALANCE_USDT = Decimal(10)


@dataclass(frozen=True, slots=True)
class Check:
    """One check's outcome."""

    name: str
    ok: bool
    detail: str
    fatal: bool = True


@dataclass
class PreflightReport:
    """Every check; ``ok`` when no fatal check failed."""

    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No fatal failure."""
        return all(c.ok or not c.fatal for c in self.checks)

    def add(self, name: str, ok: bool, detail: str, *, fatal: bool = True) -> None:
        """Record one check."""
        self.checks.append(Check(name, ok, detail, fatal))

    def text(self) -> str:
        """Plain-text rendering."""
        lines = [f"[{'OK' if c.ok else ('FAIL' if c.fatal else 'WARN')}] {c.name}: {c.detail}" for c in self.checks]
        lines.append("pre-flight: OK" if self.ok else "pre-flight: FAILED")
        return "\n".join(lines)


def check_config(config: AppConfig, report: PreflightReport) -> None:
    """Settings that validate one by one but contradict each other."""
    problems = []
    s = config.strategies
    if not (s.multi_timeframe_long.enabled or s.trend_distance_short.enabled):
        problems.append("no strategy is enabled")
    if s.leverage > config.risk.max_leverage:
        problems.append(f"strategies.leverage {s.leverage:g} exceeds risk.max_leverage {config.risk.max_leverage}")
    for name in ("multi_timeframe_long", "trend_distance_short"):
        cap = getattr(s, name).max_risk_pct
        if cap > config.risk.max_portfolio_risk_pct:
            problems.append(f"{name}.max_risk_pct {cap:g} exceeds risk.max_portfolio_risk_pct "
                            f"{config.risk.max_portfolio_risk_pct:g}")
    report.add("config", not problems, "; ".join(problems) or f"{config.mode.value} mode, symbols "
               + ",".join(config.symbols))


async def check_database(report: PreflightReport) -> None:
    """The database answers a query (the caller has initialised it)."""
    try:
        await TradingStateRecord.all().count()
        report.add("database", True, "reachable, migrations applied")
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        report.add("database", False, f"{type(exc).__name__}: {exc}")


async def check_exchange(config: AppConfig, client: Any, report: PreflightReport) -> None:
    """Reachability, keys, clock, position mode, balance and conflicting positions through ``run_doctor``."""
    from engine.exchange.bingx.doctor import run_doctor

    live = config.mode is TradingMode.LIVE
    doctor = await run_doctor(client, config.symbols)
    report.add("exchange reachable", doctor.reachable,
               f"{doctor.rest_url}, round trip {doctor.latency_ms:.0f} ms" if doctor.reachable
               else "; ".join(doctor.problems) or "unreachable", fatal=live)
    if not doctor.reachable:
        return
    offset = doctor.server_time_offset_ms or 0
    report.add("clock offset", abs(offset) <= CLOCK_OFFSET_FAIL_MS,
               f"{offset:+d} ms against BingX" + ("" if abs(offset) <= CLOCK_OFFSET_FAIL_MS
                                                  else ": enable NTP time sync"), fatal=live)
    for sr in doctor.symbols:
        report.add(f"contract {sr.symbol}", not sr.problems, "; ".join(sr.problems) or "open for API trading",
                   fatal=live)
    if doctor.authenticated is None:
        report.add("API keys", not live, "no API key/secret configured" + ("" if live else " (fine in paper mode)"),
                   fatal=live)
        return
    report.add("API keys", bool(doctor.authenticated) and not doctor.problems,
               "accepted" if doctor.authenticated and not doctor.problems else "; ".join(doctor.problems), fatal=live)
    if doctor.hedge_mode is not None:
        report.add("position mode", doctor.hedge_mode,
                   "hedge (dual side)" if doctor.hedge_mode else
                   "one-way: the bot trades in hedge mode and switches it only when the account is flat", fatal=False)
    usdt = next((b for b in doctor.balances if b.asset in ("USDT", "VST")), None)
    enough = usdt is not None and usdt.available_margin >= MIN_BALANCE_USDT
    report.add("balance", enough or not live,
               f"{usdt.asset} equity {usdt.equity:f}, available {usdt.available_margin:f}" if usdt
               else "no USDT balance found", fatal=live)
    ours = {(t.symbol, t.side.upper()) for t in await Trade.filter(
        mode=config.mode.value, state__in=[TradeState.OPEN, TradeState.CLOSING, TradeState.PENDING])}
    conflicts = [f"{p.symbol} {p.direction} {p.size:f}" for p in doctor.positions
                 if p.size > 0 and p.symbol in config.symbols and (p.symbol, p.direction) not in ours]
    report.add("conflicting positions", not conflicts,
               "none" if not conflicts else "positions on traded symbols the bot did not open: " + ", ".join(conflicts)
               + " (close them or remove the symbol)", fatal=live)


async def run_preflight(config: AppConfig, client: Any | None = None) -> PreflightReport:
    """Every check; the database must already be initialised. ``client=None`` skips the exchange."""
    report = PreflightReport()
    check_config(config, report)
    await check_database(report)
    if client is not None:
        try:
            await check_exchange(config, client, report)
        except Exception as exc:  # noqa: BLE001 - a check must report, not crash the start
            report.add("exchange", False, f"{type(exc).__name__}: {exc}", fatal=config.mode is TradingMode.LIVE)
    else:
        report.add("exchange", True, "not checked (no client)", fatal=False)
    return report
