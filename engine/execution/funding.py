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

:class:`FundingBooker` books the payments for the ``ExecutionBroker`` (on its worker); the functions
below keep that ledger.
"""

from __future__ import annotations

import logging
from collections import deque
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Mapping

from db.kv import kv_get, kv_set
from engine.execution.positions import TradeStore
from engine.execution.trade_ctx import ZERO, TradeCtx, epoch_ms
from engine.execution.venue import Venue

if TYPE_CHECKING:
    from engine.execution.recovery import RecoveryReport

logger = logging.getLogger(__name__)

STREAM_MARGIN_MS = 5 * 60_000
TRAN_IDS_KEPT = 500
RECENTLY_CLOSED_KEPT = 50  # closed trades a late funding payment can still be booked on


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


class FundingBooker:
    """Books funding payments on the broker's trades: from the account stream, the income history, at restart.

    ``ctx`` is the broker's own map of pending/open trades (read, never changed here); ``refresh_wallet``
    and ``log_extra`` are the broker's. ``unheld`` holds the symbols with a payment no open trade could
    take yet (booking an entry of one syncs it); ``recently_closed`` the trades the broker closed in this run.
    """

    def __init__(self, mode: str, venue: Venue, trades: TradeStore, ctx: Mapping[str, TradeCtx],
                 refresh_wallet: Callable[[], Awaitable[None]], log_extra: Callable[..., dict[str, Any]]) -> None:
        self.mode = mode
        self.venue = venue
        self.trades = trades
        self._ctx = ctx
        self._refresh_wallet = refresh_wallet
        self._log_extra = log_extra
        self.unheld: set[str] = set()  # symbols with a funding payment no open trade could take yet
        # trades closed by their exits in this run: a payment settled while one was open can be reported (or read from
        # the income history) after its close was booked, when its fills were learned first (a lookup, a slow queue)
        self.recently_closed: deque[TradeCtx] = deque(maxlen=RECENTLY_CLOSED_KEPT)

    def note_closed(self, ctx: TradeCtx) -> None:
        """A trade the broker closed in this run: a payment settled while it was open can still be booked on it."""
        self.recently_closed.append(ctx)

    async def book(self, symbol: str | None, amount: Decimal, time_ms: int | None = None) -> None:
        """A funding payment the account stream reported (``symbol`` None: the event named no single position).

        Live, the payment is booked from the exchange's income history (exact per symbol, once per tranId);
        only what that history does not show (yet) is booked from the stream's amount, split by quantity.
        A payment on a position whose entry fill is not booked yet (its trade is still pending) is not
        dropped: it stays unbooked and is booked from the income history when the entry is booked.
        """
        scope = {symbol} if symbol is not None else {c.symbol for c in [*self._ctx.values(), *self.recently_closed]
                                                     if c.db_trade is not None}
        remainder, unread = amount, set(scope)
        if getattr(self.venue, "funding_income", None) is not None:
            for sym in sorted(scope):
                seen = await self.sync(sym, near_ms=time_ms)
                if seen is not None:
                    unread.discard(sym)
                    remainder -= seen
        if remainder == 0:
            await self._refresh_wallet()
            return
        open_ctx = [c for c in self._ctx.values() if c.db_trade is not None and c.open_qty > 0 and c.symbol in unread]
        if not open_ctx:
            logger.warning("[%s] funding %s (%s) at %s: no open trade to book it on; left to the income history", self.mode.upper(),
                           remainder, symbol or "several symbols", time_ms, extra=self._log_extra(symbol=symbol))
            self.unheld |= scope
            return
        for ctx, share in zip(open_ctx, split_by_qty(remainder, [c.open_qty for c in open_ctx])):
            assert ctx.db_trade is not None
            await self.trades.add_funding(ctx.db_trade, share)
        for booked_symbol in {c.symbol for c in open_ctx}:
            await note_booked(self.mode, booked_symbol, time_ms, "stream")
        await self._refresh_wallet()

    async def sync(self, symbol: str, near_ms: int | None = None, report: RecoveryReport | None = None) -> Decimal | None:
        """Book ``symbol``'s funding income not booked yet on the trades open at each payment (once per tranId).

        A payment no booked open trade held (its entry fill is not booked yet) is left unbooked and the
        symbol remembered, so booking that entry books it. Returns the total of the records within
        ``STREAM_MARGIN_MS`` of ``near_ms`` the history shows (booked now, before, or left for a
        pending entry: what a stream event at ``near_ms`` is explained by), None when it cannot be read.
        """
        income = getattr(self.venue, "funding_income", None)
        if income is None:
            return None
        trades = [c for c in self._candidates() if c.symbol == symbol]
        opened = [epoch_ms(c.db_trade.opened_at) for c in trades if c.db_trade is not None and c.db_trade.opened_at]
        since = await booked_since(self.mode, symbol)
        # booked: from the first payment not booked yet, but never before the first open trade of the symbol
        start = max(t for t in (since, min(opened)) if t is not None) if opened else None
        # read: also the records around ``near_ms`` (a stream event's payment, booked or not)
        reads = [t for t in (start, near_ms - STREAM_MARGIN_MS if near_ms is not None else None) if t is not None]
        if not reads:
            return ZERO  # nothing open to book on and nothing to explain
        try:
            records = await income(symbol, min(reads))
        except Exception as exc:  # bookkeeping only: the positions themselves are known
            if report is not None:
                report.problems.append(f"{symbol}: funding paid while away could not be read ({type(exc).__name__}: {exc})")
            logger.warning("[%s] %s: funding history could not be read (%s: %s)", self.mode.upper(), symbol, type(exc).__name__,
                           exc, extra=self._log_extra(symbol=symbol))
            return None
        if report is not None:
            logger.info("[%s] %s: %d funding record(s) since %s at restart", self.mode.upper(), symbol, len(records), start,
                        extra=self._log_extra(symbol=symbol))
        seen = ZERO
        unheld = False
        for tran_id, amount, time_ms in sorted(records, key=lambda r: r[2]):
            near = near_ms is not None and abs(time_ms - near_ms) <= STREAM_MARGIN_MS
            if near:
                seen += amount
            if await is_booked(self.mode, tran_id):
                continue
            if start is None or time_ms < start:
                unheld = unheld or near  # this event's payment and no booked open trade held it
                continue
            holders = [c for c in trades if _held_at(c, time_ms)]
            if not holders:
                unheld = True  # paid on a position whose trade is not open in the books yet: booked when it opens
                continue
            for ctx, share in zip(holders, split_by_qty(amount, [_funding_qty(c) for c in holders])):
                assert ctx.db_trade is not None
                await self.trades.add_funding(ctx.db_trade, share)
            await note_booked(self.mode, symbol, time_ms, "income", tran_id)
            if report is not None:
                report.restored.append(f"{symbol}: funding {amount} settled while away booked ({tran_id})")
        if unheld:
            self.unheld.add(symbol)
        else:
            self.unheld.discard(symbol)
        return seen

    async def catch_up(self) -> None:
        """Stream events may have been missed (a reconnect): book the funding the income history shows and the
        books do not (live; once per tranId; the broker queues it behind earlier work)."""
        for symbol in sorted({c.symbol for c in self._candidates()} | self.unheld):
            await self.sync(symbol)

    async def book_missed(self, report: RecoveryReport) -> None:
        """Live restart: the funding settled while the bot was down, from the income history (once per tranId)."""
        for symbol in sorted({c.symbol for c in self._holders()}):
            await self.sync(symbol, report=report)

    def _holders(self) -> list[TradeCtx]:
        """The trades a funding payment is booked on: open in the books (opened, not closed) with quantity held."""
        return [c for c in self._ctx.values() if c.db_trade is not None and c.open_qty > 0 and not c.closed
                and c.db_trade.opened_at is not None]

    def _candidates(self) -> list[TradeCtx]:
        """The trades a payment may belong to: the open holders and the trades closed in this run (see ``_held_at``)."""
        return [*self._holders(), *self.recently_closed]


def _held_at(ctx: TradeCtx, time_ms: int) -> bool:
    """Whether ``ctx``'s trade held its position at ``time_ms`` (opened by then; if closed, not before it)."""
    trade = ctx.db_trade
    if trade is None or trade.opened_at is None or epoch_ms(trade.opened_at) > time_ms:
        return False
    return not ctx.closed or (trade.closed_at is not None and epoch_ms(trade.closed_at) >= time_ms)


def _funding_qty(ctx: TradeCtx) -> Decimal:
    """The weight of ``ctx`` when a payment is shared: its open quantity, or, closed since, what it opened with."""
    if ctx.closed and ctx.db_trade is not None:
        return Decimal(ctx.db_trade.initial_qty)
    return ctx.open_qty
