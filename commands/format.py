"""Number and time formatting shared by commands and alerts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal


def money(value: Decimal | float | None, places: int = 2) -> str:
    """``1234.5`` -> ``1,234.50``; ``None`` -> ``-``."""
    if value is None:
        return "-"
    return f"{Decimal(str(value)):,.{places}f}"


def signed_money(value: Decimal | float | None, places: int = 2) -> str:
    """Money with an explicit sign: ``+12.30`` / ``-4.00``."""
    if value is None:
        return "-"
    return f"{Decimal(str(value)):+,.{places}f}"


def price(value: Decimal | float | None) -> str:
    """A price with its meaningful digits (no float noise, no trailing zeros)."""
    if value is None:
        return "-"
    d = Decimal(str(value))
    text = f"{d:.8f}".rstrip("0").rstrip(".")
    return text or "0"


def qty(value: Decimal | float | None) -> str:
    """A quantity without trailing zeros."""
    return price(value)


def r_multiple(value: Decimal | float | None) -> str:
    """``1.234`` -> ``+1.23R``."""
    if value is None:
        return "-"
    return f"{Decimal(str(value)):+.2f}R"


def pct(value: Decimal | float | None, places: int = 2, signed: bool = False) -> str:
    """``3.14159`` -> ``3.14%``."""
    if value is None:
        return "-"
    fmt = f"{{:{'+' if signed else ''}.{places}f}}%"
    return fmt.format(Decimal(str(value)))


def duration(seconds: float) -> str:
    """``93784`` -> ``1d 2h 3m``; under a minute -> ``45s``."""
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if not (days or hours or minutes):
        return f"{secs}s"
    parts = [f"{days}d" if days else "", f"{hours}h" if hours or days else "", f"{minutes}m"]
    return " ".join(p for p in parts if p)


def utc(dt: datetime | None) -> str:
    """``2024-05-01 12:30 UTC``."""
    if dt is None:
        return "-"
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def short_time(dt: datetime | None) -> str:
    """``05-01 12:30`` (tables)."""
    if dt is None:
        return "-"
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).strftime("%m-%d %H:%M")


def ago(dt: datetime | None, now: datetime) -> str:
    """``3m ago``."""
    if dt is None:
        return "never"
    return f"{duration((now - dt) / timedelta(seconds=1))} ago"
