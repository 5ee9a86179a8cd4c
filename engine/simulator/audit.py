"""Judging a bot by the simulator's own record (``SimulatorServer.state()`` / ``GET /_sim/state``).

Tests and the soak check the bot against what the exchange holds, never against the bot's
own view; the checks that read that record live here so they are written once.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

_WORKING = ("NEW", "PENDING", "PARTIALLY_FILLED")


def position_spans(state: dict[str, Any]) -> list[tuple[str, str, int, int]]:
    """``(symbol, position side, opened_ms, closed_ms)`` for every position, from the exchange's fills.

    A position still open at the end runs to the simulator's current time.
    """
    fills = sorted(state["fills"], key=lambda f: (f["time"], str(f["tradeId"])))
    amount: dict[tuple[str, str], Decimal] = {}
    opened: dict[tuple[str, str], int] = {}
    spans: list[tuple[str, str, int, int]] = []
    for fill in fills:
        key = (fill["symbol"], fill["positionSide"])
        opening = (fill["side"] == "BUY") == (fill["positionSide"] == "LONG")
        before = amount.get(key, Decimal(0))
        after = before + Decimal(str(fill["qty"])) if opening else before - Decimal(str(fill["qty"]))
        amount[key] = after
        if before == 0 and after > 0:
            opened[key] = fill["time"]
        elif before > 0 and after == 0:
            spans.append((key[0], key[1], opened.pop(key), fill["time"]))
    end = state["clock"]["now_ms"]
    return spans + [(symbol, side, start, end) for (symbol, side), start in opened.items()]


def stop_gaps(state: dict[str, Any], tolerance_ms: int = 0) -> tuple[int, list[str]]:
    """Position spans, and every stretch longer than ``tolerance_ms`` (market time) with no working stop order.

    A stop counts from its creation until it stopped working (filled, cancelled, expired).
    """
    end = state["clock"]["now_ms"]
    spans = position_spans(state)
    problems: list[str] = []
    for symbol, side, start, stop in spans:
        closing = "SELL" if side == "LONG" else "BUY"
        intervals = sorted(
            (o["time"], o["updateTime"] if o["status"] not in _WORKING else end)
            for o in state["orders"]
            if o["symbol"] == symbol and o["positionSide"] == side and o["type"] == "STOP_MARKET" and o["side"] == closing
        )
        covered = start
        for begin, finish in intervals:
            if begin > covered + tolerance_ms:
                problems.append(f"{symbol} {side}: no stop {covered}..{begin} ({begin - covered} ms market time)")
            covered = max(covered, finish)
            if covered >= stop:
                break
        if covered < stop - tolerance_ms:
            problems.append(f"{symbol} {side}: no stop {covered}..{stop}")
    return len(spans), problems
