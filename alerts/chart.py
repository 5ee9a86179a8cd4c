"""The equity chart image for the daily summary (matplotlib, rendered off the event loop)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from decimal import Decimal
from pathlib import Path


def _render(points: list[tuple[datetime, float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on a server
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3.5), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([p[0] for p in points], [p[1] for p in points], linewidth=1.5)
    ax.set_title(title)
    ax.set_ylabel("equity (USDT)")
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")


async def render_equity_chart(points: list[tuple[datetime, Decimal]], path: str | Path, title: str = "Equity") -> str | None:
    """Write a PNG of the equity curve; ``None`` with fewer than two points. Runs in a thread."""
    if len(points) < 2:
        return None
    target = Path(path)
    await asyncio.to_thread(_render, [(t, float(v)) for t, v in points], target, title)
    return str(target)
