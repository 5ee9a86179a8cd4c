"""Funding payments the bot was not running to see: booked from the exchange's income history at restart.

While the bot runs, the account stream's ``ACCOUNT_UPDATE`` (reason ``FUNDING_FEE``) books each
payment on the open trades of its symbol. A payment settled while the bot was down never reaches
the stream, so at restart recovery (live) the ``FUNDING_FEE`` income records since the last booked
payment of each symbol are booked the same way. What was booked is kept in the KV store:

* per symbol, the time of the last booked payment and where it came from (``stream``/``income``);
  the stream's event carries no transaction id and its time may differ slightly from the income
  record's, so after a stream booking the next ``STREAM_MARGIN_MS`` are treated as that same
  settlement (funding settles every 8 h: nothing else falls in that window);
* the transaction ids (``tranId``) booked from the income history (bounded), so a second restart
  never books one twice.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from db.kv import kv_get, kv_set

STREAM_MARGIN_MS = 5 * 60_000
TRAN_IDS_KEPT = 500


def ledger_key(mode: str) -> str:
    """KV key of the funding bookkeeping of ``mode``."""
    return f"execution.funding.{mode}"


async def _load(mode: str) -> dict[str, Any]:
    stored = await kv_get(ledger_key(mode))
    if not isinstance(stored, dict):
        return {"symbols": {}, "tran_ids": []}
    stored.setdefault("symbols", {})
    stored.setdefault("tran_ids", [])
    return stored


async def booked_since(mode: str, symbol: str) -> int | None:
    """The first time (ms) whose funding of ``symbol`` is not booked yet; None when nothing was ever booked."""
    entry = (await _load(mode))["symbols"].get(symbol)
    if not entry:
        return None
    last = int(entry["last_ms"])
    return last + (STREAM_MARGIN_MS if entry.get("source") == "stream" else 1)


async def is_booked(mode: str, tran_id: str) -> bool:
    """Whether the income record ``tran_id`` was booked already."""
    return bool(tran_id) and tran_id in (await _load(mode))["tran_ids"]


async def note_booked(mode: str, symbol: str | None, time_ms: int | None, source: str, tran_id: str | None = None) -> None:
    """Remember one booked payment (``source``: ``stream`` or ``income``)."""
    ledger = await _load(mode)
    if symbol is not None and time_ms:
        entry = ledger["symbols"].get(symbol)
        if entry is None or int(entry["last_ms"]) <= time_ms:
            ledger["symbols"][symbol] = {"last_ms": int(time_ms), "source": source}
    if tran_id:
        ledger["tran_ids"] = (ledger["tran_ids"] + [tran_id])[-TRAN_IDS_KEPT:]
    await kv_set(ledger_key(mode), ledger)


def split_by_qty(amount: Decimal, quantities: list[Decimal]) -> list[Decimal]:
    """``amount`` shared in proportion to ``quantities`` (the rule the stream's bookings use)."""
    total = sum(quantities, Decimal(0))
    if total <= 0:
        return [Decimal(0) for _ in quantities]
    return [amount * q / total for q in quantities]
