"""report.html (self-contained: charts inlined as base64 PNG) and equity.png for chat."""

from __future__ import annotations

import base64
import html
import io
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on a server; must precede pyplot

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from engine.backtest.metrics import drawdown_series  # noqa: E402
from engine.backtest.outputs import TRADE_COLUMNS, trade_rows  # noqa: E402
from engine.backtest.runner import BacktestResult  # noqa: E402

_COLORS = {"overall": "#222222", "multi_timeframe_long": "#1a7f37", "trend_distance_short": "#cf222e"}


def _times(values: list[int]) -> np.ndarray:
    return np.array(values, dtype="datetime64[ms]")


def equity_figure(result: BacktestResult) -> bytes:
    """PNG of the equity curves (overall and per strategy) above their drawdowns."""
    curve = result.equity
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1.3]})
    if curve.times:
        x = _times(curve.times)
        series = {"overall": curve.overall, **curve.by_strategy}
        for name, values in series.items():
            top.plot(x, values, lw=1.3 if name == "overall" else 0.9, color=_COLORS.get(name), label=name)
            bottom.plot(x, drawdown_series(values), lw=0.9, color=_COLORS.get(name))
    top.axhline(result.initial_balance, color="#999999", lw=0.6, ls="--")
    top.set_ylabel("equity")
    top.set_title(f"{result.symbol}: equity (mark-to-market at each 1m close)")
    top.legend(loc="upper left", fontsize=8)
    top.grid(alpha=0.3)
    bottom.set_ylabel("drawdown %")
    bottom.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    return _png(fig)


def price_figure(result: BacktestResult) -> bytes:
    """PNG of the close price with every entry and exit marked."""
    fig, ax = plt.subplots(figsize=(11, 4.5))
    curve = result.equity
    if curve.times:
        ax.plot(_times(curve.times), result.closes, lw=0.6, color="#555555", label="close")
    for position in result.positions:
        entry = position.entry
        if entry is None:
            continue
        long = position.signal.side.value == "long"
        color = _COLORS.get(position.strategy, "#0969da")
        ax.scatter(_times([entry.time_ms]), [entry.price], marker="^" if long else "v", s=36, color=color, zorder=3)
        for exit_ in position.exits:
            ax.scatter(
                _times([exit_.time_ms]), [exit_.price], marker="x", s=22,
                color="#1a7f37" if exit_.pnl > 0 else "#cf222e", zorder=3,
            )
    ax.set_title(f"{result.symbol}: trades (^ long entry, v short entry, x exit: green win / red loss)")
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    return _png(fig)


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e5 else f"{value:,.0f}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items()) or "–"
    return str(value)


def _iso(ms: int | None) -> str:
    if ms is None:
        return "–"
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def write_report(result: BacktestResult, metrics: dict[str, Any], out_dir: str | Path) -> None:
    """Write ``equity.png`` and a self-contained ``report.html`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    equity_png = equity_figure(result)
    price_png = price_figure(result)
    (out / "equity.png").write_bytes(equity_png)
    blocks = {"overall": metrics["overall"], **metrics["strategies"]}
    keys = [
        "trades", "win_rate_pct", "profit_factor", "avg_win_loss_ratio", "expectancy", "expectancy_r",
        "total_return_pct", "max_drawdown_pct", "sharpe_daily", "sortino_daily", "exposure_pct", "fees",
        "exit_reasons", "signals", "trades_sha256",
    ]
    head = "".join(f"<th>{html.escape(name)}</th>" for name in blocks)
    body = "".join(
        "<tr><th>" + html.escape(key) + "</th>" + "".join(f"<td>{html.escape(_fmt(b.get(key)))}</td>" for b in blocks.values()) + "</tr>"
        for key in keys
    )
    trade_head = "".join(f"<th>{c}</th>" for c in TRADE_COLUMNS)
    trade_body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in trade_rows(result.positions)
    )
    quality = metrics["data_quality"]
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Backtest {html.escape(result.symbol)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; font-size: 13px; margin-bottom: 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 3px 7px; text-align: right; }}
th {{ background: #f4f4f4; }} img {{ max-width: 100%; }}
</style></head><body>
<h1>Backtest: {html.escape(result.symbol)}</h1>
<p>{result.candles} candles, {_iso(result.first_time_ms)} → {_iso(result.last_time_ms)}; initial balance
{result.initial_balance:,.2f}; final equity {metrics['overall']['final_equity']:,.2f}.
Data: {quality['gaps']} gaps ({quality['missing_minutes']} missing minutes), {quality['rejected']} rejected candles.
Engine time {metrics['engine_seconds']:.3f} s.</p>
<h2>Metrics</h2><table><tr><th></th>{head}</tr>{body}</table>
<h2>Equity and drawdown</h2><img alt="equity" src="data:image/png;base64,{base64.b64encode(equity_png).decode()}">
<h2>Trades on price</h2><img alt="price" src="data:image/png;base64,{base64.b64encode(price_png).decode()}">
<h2>Trades ({len(result.positions)} positions; one row per exit)</h2>
<table><tr>{trade_head}</tr>{trade_body}</table>
</body></html>
"""
    tmp = out / "report.html.tmp"
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out / "report.html")
