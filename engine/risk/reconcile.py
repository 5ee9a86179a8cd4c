"""Reconciliation: the exchange against the database, at start, after every stream reconnect,
and every ``reconciliation.interval_min`` minutes.

What is compared and the rule for each difference:

Orders (open on the exchange vs working in the DB)
- A DB order found open on the exchange (by client order id, else by exchange id) is matched;
  its exchange id and status are brought forward.
- Orders in flight belong to the running broker; reconciliation only reads them. In flight are
  an order never acknowledged (CREATED/SENT/UNKNOWN) whose row changed less than
  ``in_flight_grace_s`` (60 s) ago (the broker's placement: timeout, lookup, one resend), and an
  acknowledged order whose executions the broker still waits for (``orders_settling``; without
  that hook, the entry of a PENDING trade changed less than ``in_flight_grace_s`` ago). Writing
  an exchange fill onto such a row would take it away from the broker (it books fills, opens the
  trade and adopts the entry's attached SL/TP). The differences an order in flight explains (a
  position its entry opened, the SL/TP attached to that entry, a stop not on the exchange yet, a
  position its exit closed, a wallet change its execution caused) are reported as in flight, to
  be checked by the next run, instead of repaired or halted on. When no broker runs (start-up:
  ``orders_settling`` answers None) nothing is in flight: the process that placed those orders is
  gone, so each one is looked up and brought forward for restart recovery.
- A working DB order not open on the exchange is looked up by id: a final exchange status
  (filled, cancelled, expired) is recorded. An order the exchange does not know: if it was
  never acknowledged, it is marked REJECTED (it never arrived) only when the broker is known
  not to be placing it any more (``placements_in_flight`` given and the id not in it); without
  that knowledge it is left as it is and reported as unresolved (alerted, never guessed);
  a protective order is marked CANCELLED (its replacement follows below); an acknowledged
  entry the exchange does not know is unexplained.
- An exchange order the bot lost track of:
  * its client order id is a DB row of ours -> adopted (DB status brought forward), unless
    the DB already called it final (unexplained: the two disagree);
  * no client id, a closing stop/take-profit on the side of an entry in flight, of a PENDING
    trade, or (while a broker runs) of a trade opened less than ``in_flight_grace_s`` ago -> that
    entry's attached SL/TP: left to the execution layer (the broker, or restart recovery, adopts
    it when it books the entry; two writers would race for the same row);
  * no client id, a closing stop/take-profit on a position the bot holds -> adopted as that
    trade's protective order (the exchange creates these from an entry's attached SL/TP);
  * on a symbol the bot does not trade -> someone trades by hand: reported, never touched;
  * otherwise cancelled when ``reconciliation.cancel_unknown_orders``, else unexplained.

Positions (by symbol and side)
- Exchange size equal to the DB's open trades (plus filled quantity of pending entries): matched.
- DB trade open, no position: explained when one of the trade's exit orders filled (the stop
  fired while the bot was away): the trade is closed through ``on_trade_closed`` (the execution
  layer's hook, which books it and sends the trade's "closed" alert) or, without a hook,
  minimally here (with an "exit" alert). Otherwise unexplained.
- A position with no DB trade: on a symbol the bot does not trade, a hand-opened position:
  reported, never touched; on a traded symbol it shares the bot's position and is unexplained.
- Any other size difference: unexplained.

Protective stops: every matched open trade needs a working stop on the exchange (its own, or
one adopted for its position). A missing stop is re-placed at the trade's stop price for the
trade's quantity (stored before it is sent), triggering on the same price as the broker's own
stops (``workingType=CONTRACT_PRICE``, the last traded price) so the broker adopts it by level;
if the mark price is already past the stop, the position is closed at market instead, as the
stop would have done.

Balances (``balance_check``): the margin-asset wallet is read at the end of each run (after
any repairs) and its change since the last run must be explained, within
``reconciliation.balance_tolerance_usdt``, by what the database booked meanwhile (fills'
realised PnL minus fees, trades' funding) plus the deposits/withdrawals the account stream
reported (``ACCOUNT_UPDATE`` DEPOSIT/WITHDRAW, noted by ``balance_check.note_account_update``).
The last reading is kept in the KV store, so the rule holds across restarts. Transfers and an
unexplained rise are alerted; an unexplained drop is unexplained (halts entries) unless
hand-opened positions exist (then alerted only). A difference beyond the tolerance is re-read
once after ``balance_settle_s`` seconds first (a fill may be on its way into the database).
Equity and available margin are reported. While an order is in flight the wallet is not compared
(its fee or PnL may be on the exchange and not booked yet) and the baseline is kept: the next run
compares across it.

Anything unexplained halts entries (state HALTED plus a ``reconciliation`` lock an admin
lifts) and alerts with the details. When the exchange cannot be read, a
``reconciliation_unavailable`` lock blocks entries until the next clean run lifts it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from bot.config import AppConfig
from db.models import Fill, Order, OrderIntent, OrderStatus, Trade, TradeState
from engine.exchange.bingx import (
    BingxError,
    BingxRestClient,
    OrderRequest,
    OrderStateUnknownError,
    OrderType,
    PositionSide,
    Side,
    WorkingType,
    new_client_order_id,
)
from engine.exchange.bingx import Order as ExchangeOrder
from engine.exchange.bingx.models import Position

from .balance_check import BalanceCheck, BalanceOutcome, check_balance
from .events import AlertSink, RiskEvent, emit
from .manager import RiskManager
from .order_sides import is_closing_order as _closing
from .order_sides import position_side_of as _bucket_side
from .orders_db import WORKING, apply_exchange, create_order, set_status
from .protections import ProtectionKind

log = logging.getLogger(__name__)

ZERO = Decimal(0)
STOP_TYPES = frozenset({"STOP_MARKET", "STOP"})
# Stops trigger on the last traded price, as the broker's do (engine/execution/live_venue.py).
STOP_WORKING_TYPE = WorkingType.CONTRACT_PRICE
# An unacknowledged order this young may still be in the broker's placement (timeout + lookup + resend),
# the same allowance as engine/execution/order_tracker.py gives the placing call.
IN_FLIGHT_GRACE_S = 60.0
TP_TYPES = frozenset({"TAKE_PROFIT_MARKET", "TAKE_PROFIT"})
PROTECTIVE_INTENTS = frozenset({OrderIntent.STOP_LOSS, OrderIntent.TAKE_PROFIT})
EXIT_INTENTS = frozenset({OrderIntent.STOP_LOSS, OrderIntent.TAKE_PROFIT, OrderIntent.PARTIAL_EXIT,
                          OrderIntent.CLOSE, OrderIntent.EMERGENCY_CLOSE})
UNACKNOWLEDGED = frozenset({OrderStatus.CREATED, OrderStatus.SENT, OrderStatus.UNKNOWN})
SOURCE = "reconcile"

# Hook for the execution layer: book a trade the exchange closed while the bot was away.
TradeClosedHook = Callable[[Trade, list[Order]], Awaitable[None]]
# Hook for the execution layer: the client order ids whose placement call has not returned yet.
InFlightPlacements = Callable[[], Collection[str]]
# Hook for the execution layer: the DB ids of acknowledged orders whose executions the broker still waits
# for (it books them), or None when no broker runs (nothing is in flight then).
SettlingOrders = Callable[[], Collection[int] | None]


@dataclass
class ReconcileReport:
    """What one reconciliation found and did."""

    reason: str
    started_at: datetime
    finished_at: datetime | None = None
    error: str | None = None  # the exchange could not be read
    positions_matched: list[str] = field(default_factory=list)
    orders_matched: int = 0
    order_updates: list[str] = field(default_factory=list)
    adopted_orders: list[str] = field(default_factory=list)
    cancelled_orders: list[str] = field(default_factory=list)
    stops_replaced: list[str] = field(default_factory=list)
    positions_closed: list[str] = field(default_factory=list)
    trades_closed: list[str] = field(default_factory=list)
    manual: list[str] = field(default_factory=list)
    in_flight: list[str] = field(default_factory=list)  # left to the broker's placement this run
    unresolved: list[str] = field(default_factory=list)  # state unknown; not guessed, alerted
    unexplained: list[str] = field(default_factory=list)
    balances: dict[str, dict[str, str]] = field(default_factory=dict)
    balance_check: BalanceCheck | None = None

    @property
    def ok(self) -> bool:
        """True when the exchange was read and every difference was explained."""
        return self.error is None and not self.unexplained

    def summary(self) -> str:
        """Plain-text report."""
        lines = [f"reconciliation ({self.reason}): " + ("OK" if self.ok else "PROBLEMS")]
        if self.error:
            lines.append(f"  could not read the exchange: {self.error}")
        for title, items in (("positions matched", self.positions_matched), ("order updates", self.order_updates),
                             ("orders adopted", self.adopted_orders), ("orders cancelled", self.cancelled_orders),
                             ("stops re-placed", self.stops_replaced), ("positions closed", self.positions_closed),
                             ("trades closed while away", self.trades_closed), ("manual (not touched)", self.manual),
                             ("in flight (not touched)", self.in_flight), ("UNRESOLVED", self.unresolved),
                             ("UNEXPLAINED", self.unexplained)):
            lines += [f"  {title}: {item}" for item in items]
        for asset, values in self.balances.items():
            lines.append(f"  balance {asset}: " + ", ".join(f"{k} {v}" for k, v in values.items()))
        if self.balance_check is not None:
            lines.append(f"  balance check ({self.balance_check.outcome.value}): {self.balance_check.describe()}")
            lines += [f"  noted transfer: {note}" for note in self.balance_check.transfer_notes]
        return "\n".join(lines)


def _stop_side(position_side: str) -> str:
    return "SELL" if position_side == "LONG" else "BUY"


def _row_position_side(order: Order) -> str:
    """The position side a stored order opens or closes (one-way rows say BOTH: the side decides)."""
    side = order.position_side.upper()
    if side in ("LONG", "SHORT"):
        return side
    buys = order.side.upper() == "BUY"
    return ("LONG" if buys else "SHORT") if order.intent is OrderIntent.ENTRY else ("SHORT" if buys else "LONG")


def closed_text(trade: Trade, exits: list[Order]) -> str:
    """The "closed" alert of a trade booked from exit orders that filled while nobody watched (the broker's format)."""
    label = "/".join(dict.fromkeys(o.intent.value for o in exits)) or "reconciliation"
    pnl = Decimal(trade.realized_pnl or 0)
    risk = Decimal(trade.risk_per_unit or 0) * Decimal(trade.initial_qty or 0)
    r = pnl / risk if risk > 0 else ZERO
    return (f"{trade.symbol} {trade.strategy} {trade.side.upper()} closed by {label} (filled while the bot was not "
            f"watching): pnl {pnl:.4f} ({r:.2f} R)")


def _age_s(order: Order, now: datetime) -> float:
    """Seconds since the row last changed (a placement moves it CREATED -> SENT -> UNKNOWN)."""
    stamp = order.updated_at or order.created_at
    return (now - stamp).total_seconds() if stamp is not None else float("inf")


class Reconciler:
    """Compares the exchange with the database and repairs what a clear rule allows."""

    def __init__(self, client: BingxRestClient, config: AppConfig, risk: RiskManager | None = None, *,
                 alert: AlertSink | None = None, on_trade_closed: TradeClosedHook | None = None,
                 mode: str | None = None, balance_settle_s: float = 2.0,
                 placements_in_flight: InFlightPlacements | None = None,
                 in_flight_grace_s: float = IN_FLIGHT_GRACE_S, orders_settling: SettlingOrders | None = None) -> None:
        """``placements_in_flight``: the broker's placements not yet returned (client order ids). Without
        it the reconciler cannot tell an old unanswered placement from a lost one and never marks such a
        row rejected; pass ``lambda: ()`` when no broker runs (start-up before trading, a CLI check).
        ``orders_settling``: the broker's acknowledged orders whose executions it still books (DB ids), None
        while no broker runs; without it, the entry of a PENDING trade is in flight for ``in_flight_grace_s``."""
        self.client = client
        self.placements_in_flight = placements_in_flight
        self.orders_settling = orders_settling
        self.in_flight_grace_s = in_flight_grace_s
        self._young: list[Order] = []  # this run's in-flight rows (runs never overlap)
        self._entering: set[tuple[str, str]] = set()  # this run's (symbol, side) of entries still settling
        self._broker_running = True  # this run: whether a broker may own rows (False: orders_settling said None)
        self.balance_settle_s = balance_settle_s  # pause before re-reading a wallet that does not add up
        self.config = config
        self.risk = risk
        self.alert = alert if alert is not None else (risk.alert if risk is not None else None)
        self.on_trade_closed = on_trade_closed
        self.mode = mode or config.mode.value
        self.symbols = set(config.symbols)
        self._lock = asyncio.Lock()
        self.last_report: ReconcileReport | None = None

    async def on_stream_reconnect(self) -> ReconcileReport:
        """Call after every account/market stream reconnect: events may have been missed."""
        return await self.run("stream reconnect")

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Reconcile every ``reconciliation.interval_min`` minutes until ``stop`` is set."""
        interval = self.config.reconciliation.interval_min * 60
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval)
                return
            except TimeoutError:
                pass
            try:
                await self.run("periodic")
            except Exception:
                log.exception("periodic reconciliation failed")

    async def run(self, reason: str) -> ReconcileReport:
        """One full reconciliation (runs never overlap)."""
        async with self._lock:
            report = ReconcileReport(reason=reason, started_at=datetime.now(UTC))
            try:
                await self._reconcile(report)
            except BingxError as exc:
                report.error = f"{type(exc).__name__}: {exc}"
            report.finished_at = datetime.now(UTC)
            await self._conclude(report)
            self.last_report = report
            return report

    # --- the comparison -------------------------------------------------------------------------

    async def _reconcile(self, report: ReconcileReport) -> None:
        positions = await self.client.positions()
        open_orders = await self.client.open_orders()

        db_orders = await Order.filter(mode=self.mode, status__in=WORKING).order_by("id")
        trades = await Trade.filter(mode=self.mode, state__in=[TradeState.PENDING, TradeState.OPEN,
                                                                TradeState.CLOSING]).order_by("id")
        self._young = self._in_flight(db_orders, {t.id for t in trades if t.state is TradeState.PENDING})
        young_ids = {o.id for o in self._young}
        self._entering = await self._entries_settling(trades)
        trades_by_id = {t.id: t for t in trades}
        accounted: set[str] = set()  # exchange order ids matched to a DB row
        ex_by_cid = {o.client_order_id: o for o in open_orders if o.client_order_id}
        ex_by_id = {o.order_id: o for o in open_orders}

        # 1. Working DB orders.
        for order in db_orders:
            ex = ex_by_cid.get(order.client_order_id) or (ex_by_id.get(order.exchange_order_id or ""))
            if order.id in young_ids:  # the broker's placement owns it: read, never written
                if ex is not None:
                    accounted.add(ex.order_id)
                report.in_flight.append(f"{order.client_order_id} ({order.intent.value} {order.symbol}, "
                                        f"{order.status.value}): placement in flight, left to the broker")
                continue
            if ex is not None:
                accounted.add(ex.order_id)
                report.orders_matched += 1
                if await apply_exchange(order, ex, SOURCE):
                    report.order_updates.append(f"{order.client_order_id}: now {order.status.value}")
                continue
            await self._resolve_missing(order, report)

        # 2. Exchange orders the bot lost track of.
        held = {(p.symbol, p.direction) for p in positions if p.size > 0}
        for ex in open_orders:
            if ex.order_id in accounted:
                continue
            await self._stray_order(ex, held, trades, report)

        # 3. Positions, then 4. protective stops.
        await self._positions(positions, trades, trades_by_id, report)
        open_orders = await self.client.open_orders()  # after cancels and adoptions above
        await self._stops(positions, open_orders, report)

        # 5. The wallet, read after every repair above so their fills are booked before it is compared. An
        # order in flight may have traded with nothing booked yet (the broker books it): the baseline is kept
        # and the next run compares across it, so the change is neither misread now nor reported twice.
        if self._young:
            report.in_flight.append(f"wallet balance: {len(self._young)} order(s) in flight, compared next run")
        else:
            await self._balance(report)

    async def _entries_settling(self, trades: list[Trade]) -> set[tuple[str, str]]:
        """(symbol, side) of entries whose attached SL/TP the execution layer still adopts: an entry in flight,
        a PENDING trade (the broker, or restart recovery, books it), and, while a broker runs, a trade opened
        less than ``in_flight_grace_s`` ago (the broker adopts them right after booking the fill)."""
        entering = {(o.symbol, _row_position_side(o)) for o in self._young if o.intent is OrderIntent.ENTRY}
        entering |= {(t.symbol, t.side.upper()) for t in trades if t.state is TradeState.PENDING}
        opened = [t.id for t in trades if t.state is not TradeState.PENDING]
        if self._broker_running and opened:
            now = datetime.now(UTC)
            for o in await Order.filter(trade_id__in=opened, intent=OrderIntent.ENTRY):
                if _age_s(o, now) < self.in_flight_grace_s:
                    entering.add((o.symbol, _row_position_side(o)))
        return entering

    def _in_flight(self, db_orders: list[Order], pending_trades: set[int]) -> list[Order]:
        """The working rows the running broker owns this run (see the module rule); none when no broker runs."""
        settling = self.orders_settling() if self.orders_settling is not None else ()
        self._broker_running = settling is not None
        if settling is None:
            return []  # no broker: whoever placed these is gone; each is looked up and brought forward
        now = datetime.now(UTC)
        settling_ids = set(settling)
        young: list[Order] = []
        for o in db_orders:
            recent = _age_s(o, now) < self.in_flight_grace_s
            if o.id in settling_ids or (o.status in UNACKNOWLEDGED and recent):
                young.append(o)
            elif (self.orders_settling is None and recent and o.intent is OrderIntent.ENTRY
                  and o.trade_id in pending_trades):  # type: ignore[attr-defined]  # tortoise FK id
                young.append(o)  # no hook: an entry of a pending trade may still be settling in the broker
        return young

    async def _balance(self, report: ReconcileReport) -> None:
        balances = await self.client.balance()
        for b in balances:
            report.balances[b.asset] = {"wallet": f"{b.balance:f}", "equity": f"{b.equity:f}",
                                        "available": f"{b.available_margin:f}", "unrealised": f"{b.unrealized_profit:f}"}
        tolerance = Decimal(repr(float(self.config.reconciliation.balance_tolerance_usdt)))
        check = await check_balance(
            self.mode, balances, tolerance, manual_positions=any(m.startswith("position ") for m in report.manual),
            reread=self.client.balance, settle=lambda: asyncio.sleep(self.balance_settle_s))
        report.balance_check = check
        if check.halts:
            report.unexplained.append(f"wallet balance: {check.describe()}")
        elif check.outcome is not BalanceOutcome.OK:
            log.info("balance check: %s", check.describe(), extra={"mode": self.mode})

    async def _resolve_missing(self, order: Order, report: ReconcileReport) -> None:
        """A working DB order that is not open on the exchange: find out what became of it."""
        ex: ExchangeOrder | None = None
        real_cid = order.client_order_id if ":" not in order.client_order_id else None
        if real_cid or order.exchange_order_id:
            ex = await self.client.query_order(order.symbol, order_id=order.exchange_order_id or None,
                                               client_order_id=None if order.exchange_order_id else real_cid)
        if ex is not None:
            if await apply_exchange(order, ex, SOURCE):
                report.order_updates.append(f"{order.client_order_id}: now {order.status.value} ({ex.status.value})")
            if ex.status.is_open:  # open by lookup yet missing from the open list: count it as matched
                report.orders_matched += 1
            return
        cid = order.client_order_id
        if order.status in UNACKNOWLEDGED:
            waiting = None if self.placements_in_flight is None else cid in set(self.placements_in_flight())
            if waiting is None or waiting:
                why = ("the broker is still placing it" if waiting
                       else "unknown whether the broker is still placing it")
                report.unresolved.append(f"{order.symbol} {order.intent.value} order {cid} ({order.status.value}) "
                                         f"is not on the exchange and {why}: left as it is")
                return
            await set_status(order, OrderStatus.REJECTED, SOURCE, error="not found on the exchange: never arrived")
            report.order_updates.append(f"{cid}: never reached the exchange, marked rejected")
        elif order.intent in EXIT_INTENTS:
            await set_status(order, OrderStatus.CANCELLED, SOURCE, error="no longer on the exchange")
            report.order_updates.append(f"{cid} ({order.intent.value}): gone from the exchange, marked cancelled")
        else:
            report.unexplained.append(f"{order.symbol} entry order {cid} was acknowledged but the exchange does not know it")

    async def _stray_order(self, ex: ExchangeOrder, held: set[tuple[str, str]], trades: list[Trade],
                           report: ReconcileReport) -> None:
        label = f"{ex.symbol} {ex.side}/{ex.position_side} {ex.type} {ex.orig_qty:f} (id {ex.order_id})"
        if ex.client_order_id:
            row = await Order.get_or_none(client_order_id=ex.client_order_id, mode=self.mode)
            if row is not None:
                if row.status in WORKING:
                    await apply_exchange(row, ex, SOURCE)
                    report.adopted_orders.append(f"{label}: client id {ex.client_order_id} is ours")
                    return
                report.unexplained.append(f"{label}: the DB says {row.status.value} but the exchange has it open")
                return
        side = _bucket_side(ex)
        if (not ex.client_order_id and _closing(ex) and (ex.type in STOP_TYPES or ex.type in TP_TYPES)
                and (ex.symbol, side) in self._entering):
            # the exchange made it from an entry's attached SL/TP; the entry is still the execution layer's
            # (in flight, pending, or just booked): the broker or restart recovery adopts it, never both
            report.in_flight.append(f"order {label}: attached to an entry in flight or pending; left to the "
                                    "execution layer, checked again next run")
            return
        owner = next((t for t in trades if t.symbol == ex.symbol and t.side.upper() == side
                      and t.state is not TradeState.PENDING), None)
        if (not ex.client_order_id and _closing(ex) and (ex.type in STOP_TYPES or ex.type in TP_TYPES)
                and owner is not None and (ex.symbol, side) in held):
            intent = OrderIntent.STOP_LOSS if ex.type in STOP_TYPES else OrderIntent.TAKE_PROFIT
            row = await create_order(
                client_order_id=f"attached:{ex.order_id}", mode=self.mode, symbol=ex.symbol, intent=intent,
                side=ex.side, position_side=ex.position_side or side, order_type=ex.type, quantity=ex.orig_qty,
                stop_price=ex.stop_price or None, reduce_only=True, trade_id=owner.id, source=SOURCE,
                detail={"adopted": True})
            await apply_exchange(row, ex, SOURCE)
            report.adopted_orders.append(f"{label}: {intent.value} of trade {owner.id}")
            return
        if ex.symbol not in self.symbols:
            report.manual.append(f"order {label}: on a symbol the bot does not trade")
            return
        if self.config.reconciliation.cancel_unknown_orders:
            try:
                await self.client.cancel_order(ex.symbol, order_id=ex.order_id)
                report.cancelled_orders.append(f"{label}: unknown to the bot")
            except BingxError as exc:
                report.unexplained.append(f"{label}: unknown to the bot and the cancel failed ({exc})")
            return
        report.unexplained.append(f"order {label}: unknown to the bot (cancel_unknown_orders is false)")

    async def _positions(self, positions: list[Position], trades: list[Trade], trades_by_id: dict[int, Trade],
                         report: ReconcileReport) -> None:
        expected: dict[tuple[str, str], Decimal] = defaultdict(lambda: ZERO)
        owners: dict[tuple[str, str], list[Trade]] = defaultdict(list)
        for t in trades:
            key = (t.symbol, t.side.upper())
            if t.state is TradeState.PENDING:
                filled = sum((o.filled_qty for o in await Order.filter(trade_id=t.id, intent=OrderIntent.ENTRY)), ZERO)
                expected[key] += filled
                if filled > 0:
                    report.order_updates.append(f"trade {t.id} {t.symbol} {t.side}: entry filled {filled:f} while "
                                                "the trade is still pending in the DB")
            else:
                expected[key] += Decimal(t.qty)
            owners[key].append(t)
        actual: dict[tuple[str, str], Decimal] = defaultdict(lambda: ZERO)
        for p in positions:
            actual[(p.symbol, p.direction)] += p.size
        moving = {(o.symbol, _row_position_side(o)) for o in self._young}
        for key in sorted(set(expected) | set(actual)):
            symbol, side = key
            want, have = expected[key].normalize(), actual[key].normalize()
            if want == have:
                if have > 0:
                    report.positions_matched.append(f"{symbol} {side} {have:f}")
                continue
            if key in moving:  # an entry or exit of this position is being placed right now
                report.in_flight.append(f"position {symbol} {side}: exchange {have:f}, DB expects {want:f} while an "
                                        "order of it is in flight; checked again next run")
                continue
            if have > 0 and want == 0:
                if symbol not in self.symbols:
                    report.manual.append(f"position {symbol} {side} {have:f}: opened by hand, not touched")
                else:
                    report.unexplained.append(f"position {symbol} {side} {have:f} has no trade in the DB "
                                              "(opened by hand on a symbol the bot trades?)")
                continue
            if have == 0 and want > 0:
                for trade in owners[key]:
                    await self._closed_while_away(trade, report)
                continue
            report.unexplained.append(f"position {symbol} {side}: exchange {have:f}, DB expects {want:f}")

    async def _closed_while_away(self, trade: Trade, report: ReconcileReport) -> None:
        if trade.state is TradeState.PENDING:
            report.order_updates.append(f"trade {trade.id} pending with no position: left to the execution layer")
            return
        exits = await self._unbooked_exits(trade)
        filled = sum((o.filled_qty for o in exits), ZERO)
        if not exits or filled <= 0:
            report.unexplained.append(f"trade {trade.id} {trade.symbol} {trade.side} {trade.qty:f} is open in the DB "
                                      "but the exchange has no position and no exit order of it filled")
            return
        if not self._broker_running:
            await self._funding_while_away(trade, exits, report)
        if self.on_trade_closed is not None:
            await self.on_trade_closed(trade, list(exits))
        else:
            await self._close_trade_minimal(trade, exits, filled)
        report.trades_closed.append(f"trade {trade.id} {trade.symbol} {trade.side}: closed by "
                                    + ", ".join(f"{o.intent.value} {o.client_order_id}" for o in exits))

    async def _unbooked_exits(self, trade: Trade) -> list[Order]:
        """The exit orders that executed and are not booked on the trade yet, in the order they executed.

        Any final status counts when the order executed: a take-profit for more than the position left
        (the partial exit's resize was in flight) fills what is open and ends EXPIRED. Exits booked
        already (the trade's open quantity went down by them: a partial exit) are left out, so a close
        never books them twice.
        """
        orders = [o for o in await Order.filter(trade_id=trade.id, intent__in=list(EXIT_INTENTS)) if o.filled_qty > 0]
        last_fill: dict[int, int] = {}
        for fill in await Fill.filter(order_id__in=[o.id for o in orders]):
            last_fill[fill.order_id] = max(last_fill.get(fill.order_id, 0), int(fill.time_ms or 0))  # type: ignore[attr-defined]
        orders.sort(key=lambda o: (last_fill.get(o.id, 0), o.id))
        booked = max(Decimal(trade.initial_qty or 0) - Decimal(trade.qty or 0), ZERO)
        unbooked: list[Order] = []
        for order in orders:
            if booked >= order.filled_qty:
                booked -= order.filled_qty
                continue
            unbooked.append(order)
        return unbooked

    async def _funding_while_away(self, trade: Trade, exits: list[Order], report: ReconcileReport) -> None:
        """Start-up: the funding settled on ``trade`` between its last booked payment and its close while the bot
        was down (restart recovery books funding on the trades it reopens only). Shared with the symbol's other
        open trades held at each payment, by quantity; noted once per tranId as recovery notes them."""
        from engine.execution import funding

        if trade.opened_at is None:
            return
        opened = int(trade.opened_at.timestamp() * 1000)
        since = await funding.booked_since(self.mode, trade.symbol)
        start = max(since, opened) if since is not None else opened
        fills = await Fill.filter(order_id__in=[o.id for o in exits])
        closed = max((int(f.time_ms or 0) for f in fills), default=0) or None
        records = await self.client.income(trade.symbol, "FUNDING_FEE", start_ms=start, limit=1000)
        others = [t for t in await Trade.filter(mode=self.mode, symbol=trade.symbol,
                                                 state__in=[TradeState.OPEN, TradeState.CLOSING]).exclude(id=trade.id)
                  if t.opened_at is not None and t.qty > 0]
        for r in sorted(records, key=lambda r: r.time_ms):
            tran_id = r.tran_id or f"{r.symbol}:{r.time_ms}"
            if (r.income_type != "FUNDING_FEE" or r.symbol != trade.symbol or r.time_ms < start
                    or (closed is not None and r.time_ms > closed) or await funding.is_booked(self.mode, tran_id)):
                continue
            holders = [trade] + [t for t in others if t.opened_at is not None and int(t.opened_at.timestamp() * 1000) <= r.time_ms]
            for holder, share in zip(holders, funding.split_by_qty(r.income, [Decimal(h.qty) for h in holders])):
                holder.funding = Decimal(holder.funding or 0) + share
                await holder.save(update_fields=["funding", "updated_at"])
            await funding.note_booked(self.mode, trade.symbol, r.time_ms, "income", tran_id)
            report.order_updates.append(f"trade {trade.id} {trade.symbol}: funding {r.income:f} settled while away "
                                        f"booked ({tran_id})")

    async def _close_trade_minimal(self, trade: Trade, exits: list[Order], filled: Decimal) -> None:
        """Close the trade from its filled exit orders (gross PnL; fees are the execution layer's)."""
        quote = sum(((o.avg_price or ZERO) * o.filled_qty for o in exits), ZERO)
        exit_price = quote / filled if filled > 0 else None
        entry = Decimal(trade.entry_price or 0)
        direction = Decimal(1) if trade.side.upper() == "LONG" else Decimal(-1)
        pnl = (exit_price - entry) * filled * direction if exit_price is not None and entry > 0 else ZERO
        trade.state = TradeState.CLOSED
        trade.qty = ZERO
        trade.closed_at = datetime.now(UTC)
        trade.exit_price = exit_price
        trade.exit_reason = ("reconcile:" + exits[-1].intent.value)[:32]
        trade.realized_pnl = Decimal(trade.realized_pnl or 0) + pnl
        await trade.save()
        if self.risk is not None:
            await self.risk.on_trade_closed(trade.symbol, trade.strategy, Decimal(trade.realized_pnl))
        # the trade's own "closed" alert, as a normal close sends one (the run's summary alert is de-duplicated)
        await emit(self.alert, RiskEvent("exit", f"{trade.symbol} {trade.strategy} {trade.side.upper()} closed",
                                         closed_text(trade, exits), {"trade_id": trade.id}))

    async def _stops(self, positions: list[Position], open_orders: list[ExchangeOrder], report: ReconcileReport) -> None:
        trades = await Trade.filter(mode=self.mode, state__in=[TradeState.OPEN, TradeState.CLOSING]).order_by("id")
        held = {(p.symbol, p.direction): p for p in positions if p.size > 0}
        stops_on: dict[tuple[str, str], list[ExchangeOrder]] = defaultdict(list)
        for o in open_orders:
            if o.type in STOP_TYPES and _closing(o):
                stops_on[(o.symbol, _bucket_side(o))].append(o)
        for trade in trades:
            key = (trade.symbol, trade.side.upper())
            position = held.get(key)
            if position is None or trade.qty <= 0:
                continue
            if any(o.trade_id == trade.id and o.intent in EXIT_INTENTS  # type: ignore[attr-defined]  # tortoise FK id
                   for o in self._young):
                report.in_flight.append(f"trade {trade.id} {trade.symbol} {trade.side}: its stop or exit is being "
                                        "placed; no stop re-placed")
                continue
            own = await Order.filter(trade_id=trade.id, intent=OrderIntent.STOP_LOSS, status__in=WORKING)
            own_ids = {o.exchange_order_id for o in own} | {o.client_order_id for o in own}
            bucket = stops_on[key]
            if any(o.order_id in own_ids or o.client_order_id in own_ids for o in bucket):
                continue
            unlinked_cover = [o for o in bucket if not o.client_order_id or o.close_position]
            owners_in_bucket = [t for t in trades if (t.symbol, t.side.upper()) == key]
            if unlinked_cover and len(owners_in_bucket) == 1:
                continue  # the position's only trade is covered by a stop adopted above
            await self._replace_stop(trade, position, report)

    async def _replace_stop(self, trade: Trade, position: Position, report: ReconcileReport) -> None:
        side = trade.side.upper()
        hedge = position.position_side in ("LONG", "SHORT")
        stop = Decimal(trade.stop)
        qty = min(Decimal(trade.qty), position.size)
        mark = position.mark_price
        if mark is None or mark <= 0:
            mark = (await self.client.premium_index(trade.symbol)).mark_price
        crossed = (side == "LONG" and mark <= stop) or (side == "SHORT" and mark >= stop)
        order_type = OrderType.MARKET if crossed else OrderType.STOP_MARKET
        cid = new_client_order_id("rc")
        row = await create_order(
            client_order_id=cid, mode=self.mode, symbol=trade.symbol, intent=OrderIntent.STOP_LOSS,
            side=_stop_side(side), position_side=side if hedge else "BOTH", order_type=order_type.value,
            quantity=qty, stop_price=None if crossed else stop, reduce_only=True, trade_id=trade.id, source=SOURCE,
            detail={"reason": "stop missing on the exchange", "mark": str(mark)})
        request = OrderRequest(
            symbol=trade.symbol, side=Side(_stop_side(side)), position_side=PositionSide(side if hedge else "BOTH"),
            type=order_type, quantity=qty, stop_price=None if crossed else stop,
            working_type=None if crossed else STOP_WORKING_TYPE, reduce_only=not hedge, client_order_id=cid)
        await set_status(row, OrderStatus.SENT, SOURCE)
        label = f"trade {trade.id} {trade.symbol} {side} {qty:f}"
        try:
            placed = await self.client.place_order(request, reference_price=mark)
        except OrderStateUnknownError as exc:
            await set_status(row, OrderStatus.UNKNOWN, SOURCE, error=str(exc))
            report.unexplained.append(f"{label}: stop re-placement outcome unknown ({exc})")
            return
        except BingxError as exc:
            await set_status(row, OrderStatus.REJECTED, SOURCE, error=str(exc))
            report.unexplained.append(f"{label}: missing stop could not be re-placed ({exc})")
            return
        await apply_exchange(row, placed, SOURCE)
        if crossed:
            report.positions_closed.append(f"{label}: mark {mark:f} already past the stop {stop:f}, closed at market")
        else:
            report.stops_replaced.append(f"{label}: stop at {stop:f} (client id {cid})")
        log.warning("reconciliation re-placed the stop of trade %s", trade.id,
                    extra={"symbol": trade.symbol, "client_order_id": cid, "trade_id": trade.id})

    # --- outcome --------------------------------------------------------------------------------

    async def _balance_alert(self, report: ReconcileReport) -> None:
        """Deposits/withdrawals and unexplained balance changes that do not halt: alerted, never silent."""
        check = report.balance_check
        if check is None or check.halts:
            return  # a halting drop is in the halt alert
        parts = [f"deposit/withdrawal noted: {note}" for note in check.transfer_notes]
        if check.outcome in (BalanceOutcome.RISE, BalanceOutcome.DROP):
            parts.append(check.describe())
        if parts:
            await emit(self.alert, RiskEvent("protection", "Reconciliation: wallet balance changed",
                                             "\n".join(parts), {"reason": report.reason, **check.detail()},
                                             dedup_key=f"reconcile:balance:{check.outcome.value}:{check.wallet}"))

    async def _conclude(self, report: ReconcileReport) -> None:
        detail: dict[str, Any] = {"reason": report.reason, "unexplained": report.unexplained[:20],
                                  "error": report.error}
        if report.balance_check is not None:
            detail["balance"] = report.balance_check.detail()
            await self._balance_alert(report)
        if report.error is not None:
            log.error("reconciliation could not read the exchange: %s", report.error)
            if self.risk is not None:
                await self.risk.protections.lock(ProtectionKind.RECONCILIATION_UNAVAILABLE,
                                                 f"exchange unreadable: {report.error}"[:255], None, detail=detail)
            else:
                await emit(self.alert, RiskEvent("halt", "Reconciliation failed", report.summary(), detail))
            return
        if report.unresolved:
            log.warning("reconciliation left %d orders unresolved: %s", len(report.unresolved),
                        "; ".join(report.unresolved))
            await emit(self.alert, RiskEvent("protection", "Reconciliation: order state unresolved",
                                             "\n".join(report.unresolved), {"reason": report.reason},
                                             dedup_key="reconcile:unresolved"))
        if report.unexplained:
            text = "; ".join(report.unexplained)
            if self.risk is not None:
                await self.risk.halt(f"reconciliation: {text}"[:255], "reconciliation",
                                     lock_kind=ProtectionKind.RECONCILIATION, detail=detail)
            await emit(self.alert, RiskEvent("halt", "Reconciliation found unexplained differences",
                                             report.summary(), detail, dedup_key="reconcile:unexplained"))
            return
        if self.risk is not None:
            await self.risk.protections.lift_kind(ProtectionKind.RECONCILIATION_UNAVAILABLE, "reconciliation")
        changes = report.stops_replaced + report.positions_closed + report.cancelled_orders + report.trades_closed
        if changes or report.manual:
            await emit(self.alert, RiskEvent("protection", "Reconciliation repaired or reported differences",
                                             report.summary(), {"reason": report.reason},
                                             dedup_key="reconcile:changes"))
        log.info("reconciliation (%s) OK: %d positions, %d orders matched", report.reason,
                 len(report.positions_matched), report.orders_matched)
