"""Funding payments, booked on the trades that held the position when each one settled.

Live, the exchange's ``FUNDING_FEE`` income history is the record (exact per symbol, one
``tranId`` per payment); it is read:

* when the account stream reports a payment (``ACCOUNT_UPDATE`` reason ``FUNDING_FEE``; the event
  may name no position, e.g. cross margin): only what the history does not show yet is booked from
  the stream's amount, split over the open trades by quantity;
* when an entry is booked after a payment that no booked open trade held (the position was open on
  the exchange while its trade was still pending: the fill report was late): the payment is left
  unbooked until then, never dropped;
* after a stream reconnect (a payment may have settled while the stream was down);
* at restart recovery, for the trades it reopens, and at start reconciliation for a trade the
  exchange closed while the bot was down (``engine.risk.reconcile``).

The history is read up to the exchange's now (no end time: our estimate of server time can lag it).
What was booked is kept in the KV store:

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
