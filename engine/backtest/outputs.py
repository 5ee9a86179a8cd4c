"""Writing a backtest's files: signals.csv, trades.csv, metrics.json (report.html/equity.png: ``report``)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path
from typing import Any, Iterable

from engine.backtest.metrics import trade_stats
from engine.backtest.runner import BacktestResult
from engine.trading.positions import Position

SIGNAL_COLUMNS = ("time_ms", "strategy", "side", "entry", "stop", "target", "fate", "reason")
TRADE_COLUMNS = (
    "id", "strategy", "side", "entry_time_ms", "entry_price", "qty", "stop", "target",
    "exit_time_ms", "exit_price", "exit_reason", "pnl", "fees", "r_multiple",
)


def _num(value: float) -> str:
    """Shortest round-trip text of a float: exact, deterministic, diff-able."""
    return repr(float(value))


def signal_rows(result: BacktestResult) -> list[tuple[str, ...]]:
    """One row per signal (taken, skipped or rejected), in candle order."""
    rows = []
    for record in result.signals:
        s = record.signal
        rows.append(
            (str(s.time_ms), s.strategy, s.side.value, _num(s.entry), _num(s.stop), _num(s.target), record.fate.value, record.reason)
        )
    return rows


def trade_rows(positions: Iterable[Position]) -> list[tuple[str, ...]]:
    """One row per exit fill (each partial, then the final exit), positions numbered in entry order.

    ``qty``/``pnl``/``fees``/``r_multiple`` are those of the row's exit; ``stop`` and ``target`` are
    the position's initial levels, planned from the entry fill.
    """
    rows = []
    for number, position in enumerate(positions, start=1):
        entry = position.entry
        plan = position.plan
        assert entry is not None and plan is not None
        for exit_ in position.exits:
            rows.append(
                (
                    str(number),
                    position.strategy,
                    position.signal.side.value,
                    str(entry.time_ms),
                    _num(entry.price),
                    str(exit_.qty),
                    _num(plan.stop),
                    _num(plan.target),
                    str(exit_.time_ms),
                    _num(exit_.price),
                    exit_.label,
                    _num(exit_.pnl),
                    _num(exit_.fee),
                    _num(exit_.r_multiple),
                )
            )
    return rows


def _csv_text(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def trades_sha256(rows: list[tuple[str, ...]]) -> str:
    """SHA-256 of the trade list as written to trades.csv (header included), to compare two runs."""
    return hashlib.sha256(_csv_text(TRADE_COLUMNS, rows).encode("utf-8")).hexdigest()


def build_metrics(result: BacktestResult) -> dict[str, Any]:
    """metrics.json content: per strategy and overall, plus run facts."""
    curve = result.equity
    per_strategy: dict[str, Any] = {}
    for name in result.strategies:
        positions = [p for p in result.positions if p.strategy == name]
        block = trade_stats(
            positions,
            initial_balance=result.initial_balance,
            times=curve.times,
            curve=curve.by_strategy.get(name, []),
            exposure_candles=curve.exposure_candles.get(name, 0),
            candles=result.candles,
        )
        block["signals"] = _fate_counts(result, name)
        block["trades_sha256"] = trades_sha256(trade_rows(positions))
        per_strategy[name] = block
    overall = trade_stats(
        result.positions,
        initial_balance=result.initial_balance,
        times=curve.times,
        curve=curve.overall,
        exposure_candles=curve.exposure_any,
        candles=result.candles,
    )
    overall["signals"] = _fate_counts(result, None)
    overall["trades_sha256"] = trades_sha256(trade_rows(result.positions))
    overall["final_equity"] = curve.overall[-1] if curve.overall else result.initial_balance
    stats = result.stream_stats
    config = result.config
    return {
        "symbol": result.symbol,
        "candles": result.candles,
        "first_time_ms": result.first_time_ms,
        "last_time_ms": result.last_time_ms,
        "initial_balance": result.initial_balance,
        "engine_seconds": result.engine_seconds,
        "candles_per_second": result.candles / result.engine_seconds if result.engine_seconds > 0 else None,
        "contract": {
            "qty_step": str(result.contract.qty_step),
            "min_qty": str(result.contract.min_qty),
            "min_notional": str(result.contract.min_notional),
            "price_tick": str(result.contract.price_tick),
        },
        "data_quality": {
            "accepted": stats.accepted if stats else result.candles,
            "rejected": stats.rejected if stats else 0,
            "gaps": stats.gaps if stats else 0,
            "missing_minutes": stats.missing_minutes if stats else 0,
            "rejections_by_reason": dict(stats.rejections_by_reason) if stats else {},
        },
        "settings": {
            "slippage_bps": config.slippage_bps,
            "taker_fee": config.taker_fee,
            "maker_fee": config.maker_fee,
            "leverage": config.leverage,
            "max_positions": config.max_positions,
        },
        "overall": overall,
        "strategies": per_strategy,
    }


def _fate_counts(result: BacktestResult, strategy: str | None) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in result.signals:
        if strategy is None or record.signal.strategy == strategy:
            counts[record.fate.value] = counts.get(record.fate.value, 0) + 1
    return dict(sorted(counts.items()))


def write_outputs(result: BacktestResult, out_dir: str | Path) -> dict[str, Any]:
    """Write signals.csv, trades.csv and metrics.json into ``out_dir``; return the metrics.

    Each file is written to a temporary name and renamed, so an interrupted run never leaves a
    half-written file that looks complete.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = build_metrics(result)
    _atomic_write(out / "signals.csv", _csv_text(SIGNAL_COLUMNS, signal_rows(result)))
    _atomic_write(out / "trades.csv", _csv_text(TRADE_COLUMNS, trade_rows(result.positions)))
    _atomic_write(out / "metrics.json", json.dumps(metrics, indent=2, sort_keys=False, allow_nan=False) + "\n")
    return metrics


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
