"""``trading-bot doctor`` checks for the BingX connection, in plain words.

``run_doctor`` never raises for exchange problems: each check records its result or a
sentence explaining what is wrong and what to do, so the report can always be printed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Sequence

from .errors import BingxAuthError, BingxError, BingxSignatureError, plain_words
from .models import Balance, Contract, Leverage, MarginType, Position

if TYPE_CHECKING:
    from .rest import BingxRestClient

log = logging.getLogger(__name__)

# Clock offsets above this are worth a warning (recvWindow is 5 s; the client corrects the offset).
OFFSET_WARN_MS = 1000


@dataclass
class SymbolReport:
    """Per-symbol findings."""

    symbol: str
    contract: Contract | None = None
    leverage: Leverage | None = None
    margin_type: MarginType | None = None
    problems: list[str] = field(default_factory=list)


@dataclass
class DoctorReport:
    """Everything ``doctor`` found. ``ok`` is false when any problem was recorded."""

    rest_url: str = ""
    reachable: bool = False
    latency_ms: float | None = None
    server_time_offset_ms: int | None = None
    authenticated: bool | None = None  # None = not checked (no credentials)
    balances: list[Balance] = field(default_factory=list)
    positions: list[Position] = field(default_factory=list)
    hedge_mode: bool | None = None
    symbols: list[SymbolReport] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing needs attention."""
        return not self.problems and all(not s.problems for s in self.symbols)


async def run_doctor(client: "BingxRestClient", symbols: Sequence[str]) -> DoctorReport:
    """Check connectivity, clock, contract rules, and (with credentials) account state."""
    report = DoctorReport(rest_url=getattr(client, "_base", ""))
    try:
        report.latency_ms = (await client.ping()) * 1000
        report.reachable = True
        report.server_time_offset_ms = await client.sync_time()
        if abs(report.server_time_offset_ms) > OFFSET_WARN_MS:
            report.notes.append(
                f"This machine's clock is {report.server_time_offset_ms / 1000:+.1f} s off BingX time. The bot "
                "corrects for it, but enable NTP time sync to be safe.")
    except BingxError as exc:
        report.problems.append(f"BingX is not reachable: {plain_words(exc)}")
        report.symbols = [SymbolReport(s, problems=["not checked: BingX unreachable"]) for s in symbols]
        return report

    for symbol in symbols:
        sr = SymbolReport(symbol)
        report.symbols.append(sr)
        try:
            sr.contract = await client.contract(symbol)
            if not sr.contract.is_online or not sr.contract.api_open_allowed:
                sr.problems.append(f"{symbol} is not open for new API positions (status {sr.contract.status}).")
        except BingxError as exc:
            sr.problems.append(plain_words(exc))

    if not client.has_credentials:
        report.notes.append("No API key/secret configured: account checks skipped (fine for paper mode).")
        return report

    try:
        report.balances = await client.balance()
        report.authenticated = True
    except BingxError as exc:
        report.authenticated = not isinstance(exc, (BingxAuthError, BingxSignatureError))
        report.problems.append(f"Account check failed: {plain_words(exc)}")
        return report
    for name, call in (("positions", client.positions), ("position mode", client.get_position_mode)):
        try:
            if name == "positions":
                report.positions = await call()  # type: ignore[assignment]
            else:
                report.hedge_mode = await call()  # type: ignore[assignment]
        except BingxError as exc:
            report.problems.append(f"Reading {name} failed: {plain_words(exc)}")
    for sr in report.symbols:
        if sr.contract is None:
            continue
        try:
            sr.leverage = await client.get_leverage(sr.symbol)
        except BingxError as exc:
            sr.problems.append(f"Reading leverage failed: {plain_words(exc)}")
        try:
            sr.margin_type = await client.get_margin_type(sr.symbol)
        except BingxError as exc:
            sr.problems.append(f"Reading margin type failed: {plain_words(exc)}")
    return report


def _fmt(value: Decimal | None) -> str:
    return "-" if value is None else f"{value.normalize():f}"


def render_doctor_report(report: DoctorReport) -> str:
    """Plain-text rendering for the terminal and chat."""
    lines = [f"BingX: {report.rest_url or '?'}"]
    if report.reachable:
        lines.append(f"  reachable, round trip {report.latency_ms:.0f} ms, "
                     f"clock offset {report.server_time_offset_ms:+d} ms (BingX minus local)")
    for sr in report.symbols:
        c = sr.contract
        if c is not None:
            lines.append(f"  {sr.symbol}: tick {_fmt(c.tick_size)}, step {_fmt(c.step_size)}, "
                         f"min qty {_fmt(c.min_qty)}, "
                         f"min notional {_fmt(c.min_notional)} {c.currency}, max leverage {c.max_long_leverage}x, "
                         f"status {'online' if c.is_online else c.status}")
        if sr.leverage is not None:
            lines.append(f"    leverage long {sr.leverage.long_leverage}x / short {sr.leverage.short_leverage}x"
                         + (f", margin {sr.margin_type.value}" if sr.margin_type else ""))
        for problem in sr.problems:
            lines.append(f"    PROBLEM: {problem}")
    if report.authenticated:
        lines.append("  API key: accepted")
        for b in report.balances:
            lines.append(f"  balance {b.asset}: equity {_fmt(b.equity)}, available {_fmt(b.available_margin)}, "
                         f"unrealised {_fmt(b.unrealized_profit)}")
        if report.hedge_mode is not None:
            lines.append(f"  position mode: {'hedge (dual side)' if report.hedge_mode else 'one-way'}")
        if report.positions:
            for p in report.positions:
                lines.append(f"  position {p.symbol} {p.direction} {_fmt(p.size)} @ {_fmt(p.avg_price)}, "
                             f"unrealised {_fmt(p.unrealized_profit)}, leverage {p.leverage}x")
        else:
            lines.append("  positions: none")
    for note in report.notes:
        lines.append(f"  note: {note}")
    for problem in report.problems:
        lines.append(f"  PROBLEM: {problem}")
    lines.append("  result: OK" if report.ok else "  result: needs attention")
    return "\n".join(lines)
