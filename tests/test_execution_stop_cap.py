"""The live bot against a simulator that enforces the pending-stop cap (``cap_pending_stops``, protocol notes 6.2,
UNCONFIRMED reading: the pending STOP*/TAKE_PROFIT* quantity on a position cannot exceed its size).

Under the cap every place-then-cancel replacement of a stop (or target) is refused (110406 / 110407); the broker
then falls back to cancel-then-place. These tests run the real runtime over 127.0.0.1 and judge it by the
simulator's own record: one working stop at the new level, the old one cancelled, the only unprotected moments the
fallback's own cancel-to-place window, no market close, no halt. With the cap off, the usual place-then-cancel
leaves no unprotected moment at all."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest

from db.models import Order, OrderIntent, Trade, TradeState
from engine.execution.runtime import TradingRuntime
from engine.execution.trade_ctx import round_to_tick
from engine.simulator import SimulatorServer
from engine.simulator.protocol import ApiError
from engine.trading.manager import StopMove
from tests.execution_sim import (
    SYMBOL,
    app_config,
    assert_db_matches_exchange,
    assert_stop_always_on_exchange,
    open_live_trade,
    options,
    simulator,
    step_minutes,
    window,
)

pytestmark = pytest.mark.timeout(120)

# The fallback is one cancel and one placement on loopback: far below this even on a slow machine (each request
# has a 1 s timeout in these tests). A gap longer than this would mean the position waited on something else.
FALLBACK_BOUND_S = 2.0


@dataclass
class Moment:
    """One order event on the simulator, with what the long position and its stops looked like right after it."""

    at: float  # time.monotonic()
    what: str  # NEW / CANCELED / TRADE / ... or REFUSED
    order_type: str
    order_id: int
    held: Decimal
    working_stops: int
    code: int | None = None


@dataclass
class Recorder:
    """Every order event and every refused placement of the simulator, in order (wall clock, not market time)."""

    sim: SimulatorServer
    moments: list[Moment] = field(default_factory=list)

    def _snapshot(self, what: str, order_type: str, order_id: int, code: int | None = None) -> None:
        engine = self.sim.engine
        pos = engine.account.position(SYMBOL, "LONG")
        stops = [o for o in engine.open_orders[SYMBOL].values() if o.type == "STOP_MARKET" and o.position_side == "LONG"]
        self.moments.append(Moment(time.monotonic(), what, order_type, order_id, pos.size if pos else Decimal(0), len(stops), code))

    def on_event(self, event: tuple[Any, ...]) -> None:
        """The engine's event listener."""
        if event[0] == "order":
            order = event[1]
            self._snapshot(event[2], order.type, order.order_id)

    def install(self) -> None:
        """Listen to the engine, and note each placement it refuses (the refusal still goes back to the bot)."""
        self.sim.engine.listeners.append(self.on_event)
        place = self.sim.engine.place

        def recording_place(params: dict[str, str], **kw: Any) -> Any:
            try:
                return place(params, **kw)
            except ApiError as err:
                self._snapshot("REFUSED", params.get("type", ""), 0, err.code)
                raise

        self.sim.engine.place = recording_place  # type: ignore[method-assign]

    def refusals(self) -> list[tuple[str, int | None]]:
        """(order type, code) of every refused placement."""
        return [(m.order_type, m.code) for m in self.moments if m.what == "REFUSED"]

    def unprotected(self) -> list[tuple[int, int]]:
        """Every stretch during which the long was held with no working stop: (index of the moment that began it,
        index of the moment that ended it) in :attr:`moments`."""
        gaps: list[tuple[int, int]] = []
        start: int | None = None
        for index, moment in enumerate(self.moments):
            bare = moment.held > 0 and moment.working_stops == 0
            if bare and start is None:
                start = index
            elif not bare and start is not None:
                gaps.append((start, index))
                start = None
        if start is not None:
            gaps.append((start, len(self.moments) - 1))
        return gaps


def _is_entry_fill(gap: list[Moment]) -> bool:
    """The entry's fill, then its attached stop created in the same exchange step."""
    first, last = gap[0], gap[-1]
    return ((first.what, first.order_type) == ("TRADE", "MARKET") and (last.what, last.order_type) == ("NEW", "STOP_MARKET")
            and all(m.what in ("TRADE", "NEW") for m in gap))


def _is_fallback(gap: list[Moment], before: Moment) -> bool:
    """The old stop cancelled right after the exchange refused the new one (110406; ``before`` is the event before the
    gap), then the new one placed as the very next event, within the time a cancel and a placement take."""
    first, last = gap[0], gap[-1]
    return ((before.what, before.order_type, before.code) == ("REFUSED", "STOP_MARKET", 110406)
            and (first.what, first.order_type) == ("CANCELED", "STOP_MARKET")
            and len(gap) == 2 and (last.what, last.order_type) == ("NEW", "STOP_MARKET")
            and last.at - before.at < FALLBACK_BOUND_S)


def _working(sim: SimulatorServer, order_type: str) -> list[dict[str, Any]]:
    return [o for o in sim.state()["orders"] if o["type"] == order_type and o["status"] in ("NEW", "PENDING")]


def _held(sim: SimulatorServer) -> Decimal:
    return sum((Decimal(str(p["positionAmt"])) for p in sim.state()["positions"] if p["positionSide"] == "LONG"), Decimal(0))


class Alerts:
    """The broker's alert hook, recorded."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    async def __call__(self, event_type: str, text: str, payload: dict[str, Any]) -> None:
        self.seen.append((event_type, text))

    def errors(self) -> list[str]:
        return [text for kind, text in self.seen if kind == "error"]


@contextlib.asynccontextmanager
async def _live(db_url: str, alerts: Alerts, *, cap: bool, last_minute: int = 2680
                ) -> AsyncIterator[tuple[SimulatorServer, TradingRuntime, int, Recorder]]:
    """A live runtime on a simulator with the cap ``cap``, its order events recorded; both stopped after."""
    data, start_ms = window(2620, last_minute)
    sim = simulator(data, start_ms, cap_pending_stops=cap)
    await sim.start()
    recorder = Recorder(sim)
    recorder.install()
    runtime = TradingRuntime(app_config("live", sim, db_url), clock_ms=sim.server_time_ms, options=options(), on_alert=alerts)
    try:
        await runtime.start()
        yield sim, runtime, start_ms, recorder
    finally:
        await runtime.stop()
        await sim.stop()


def _assert_protected_but_for_fallbacks(recorder: Recorder, *, cap: bool) -> int:
    """The long was never without a stop except right after its entry filled (one exchange step) and, under the cap,
    inside a fallback's cancel-to-place window. Returns how many fallbacks there were."""
    fallbacks = 0
    for start, end in recorder.unprotected():
        gap = recorder.moments[start:end + 1]
        if _is_entry_fill(gap):
            continue
        assert cap and start > 0 and _is_fallback(gap, recorder.moments[start - 1]), \
            [(m.what, m.order_type, m.code) for m in recorder.moments[max(start - 1, 0):end + 1]]
        fallbacks += 1
    return fallbacks


@pytest.mark.parametrize("cap", [True, False], ids=["capped", "uncapped"])
async def test_trailing_step_leaves_exactly_one_stop_at_the_new_level(db_url: str, cap: bool) -> None:
    """A trailing step of a live trade: with the cap the new stop is refused (110406), the old one is cancelled and the
    new one placed; without it the new one is placed first. Either way one stop works, at the new level, for the whole
    position; the trade stays open, nothing is closed at market, nothing halts."""
    alerts = Alerts()
    async with _live(db_url, alerts, cap=cap) as (sim, runtime, start_ms, recorder):
        await open_live_trade(sim, runtime, start_ms)
        broker = runtime.broker
        assert broker is not None
        ctx = broker.active_trades[0]
        [old_stop] = _working(sim, "STOP_MARKET")
        [target] = _working(sim, "TAKE_PROFIT_MARKET")
        held, orders_before, events_before = _held(sim), len(sim.state()["orders"]), len(recorder.moments)
        assert ctx.stop_level is not None
        new_level = ctx.stop_level + (broker.last_price[SYMBOL] - ctx.stop_level) * 0.5  # favourable, below the price

        broker.move_stop(SYMBOL, ctx.position, StopMove(new_level, 1.0, 0.5), 0)
        await runtime.wait_idle()

        [stop] = _working(sim, "STOP_MARKET")
        tick = broker.venue.price_tick(SYMBOL)
        assert stop["orderId"] != old_stop["orderId"]
        assert Decimal(str(stop["stopPrice"])) == round_to_tick(new_level, tick, stop_of=ctx.side)
        assert Decimal(str(stop["origQty"])) == held == _held(sim)
        old = next(o for o in sim.state()["orders"] if o["orderId"] == old_stop["orderId"])
        assert old["status"] == "CANCELLED"
        assert [t["orderId"] for t in _working(sim, "TAKE_PROFIT_MARKET")] == [target["orderId"]]  # target untouched
        assert [o for o in sim.state()["orders"][orders_before:] if o["type"] == "MARKET"] == []
        assert ctx.stop is not None and ctx.stop.exchange_order_id == str(stop["orderId"])

        step = recorder.moments[events_before:]
        refused = [(m.order_type, m.code) for m in step if m.what == "REFUSED"]
        assert refused == ([("STOP_MARKET", 110406)] if cap else [])
        assert _assert_protected_but_for_fallbacks(recorder, cap=cap) >= (1 if cap else 0)
        assert all(m.working_stops >= 1 for m in step if m.what != "REFUSED") is (not cap)

        assert broker.halted_reason is None and broker.halt_reasons == []
        assert alerts.errors() == []
        assert (await Trade.get(mode="live")).state is TradeState.OPEN
        assert_stop_always_on_exchange(sim.state())  # in market time, no stretch without a stop at all


@pytest.mark.parametrize("cap", [True, False], ids=["capped", "uncapped"])
async def test_managed_trade_keeps_one_stop_through_partial_and_breakeven(db_url: str, cap: bool) -> None:
    """The strategy's own management of a live trade (entry replanned from the fill, a partial exit that resizes stop
    and target, a stop moved to 1R) until the exchange's stop closes it: after every minute exactly one stop works,
    for the whole position, at the trade's level; under the cap every replacement went through the fallback."""
    alerts = Alerts()
    async with _live(db_url, alerts, cap=cap, last_minute=2720) as (sim, runtime, start_ms, recorder):
        minutes = await open_live_trade(sim, runtime, start_ms)
        broker = runtime.broker
        assert broker is not None
        tick = broker.venue.price_tick(SYMBOL)
        seen_levels: set[Decimal] = set()

        def after_minute(_: int) -> None:
            trades = broker.active_trades
            if not trades or _held(sim) == 0:
                return
            ctx = trades[0]
            [stop] = _working(sim, "STOP_MARKET")
            assert Decimal(str(stop["origQty"])) == _held(sim) == ctx.open_qty
            assert ctx.stop_level is not None and Decimal(str(stop["stopPrice"])) == round_to_tick(ctx.stop_level, tick, stop_of=ctx.side)
            seen_levels.add(Decimal(str(stop["stopPrice"])))

        after_minute(0)
        for i in range(60):
            if await Trade.filter(mode="live", state=TradeState.CLOSED).count():
                break
            await step_minutes(sim, runtime, start_ms + (minutes + i) * 60_000, 1, on_step=after_minute)
        await runtime.wait_idle()

        trade = await Trade.get(mode="live")
        assert trade.state is TradeState.CLOSED
        assert len(seen_levels) >= 2, seen_levels  # the stop did move (to 1R) while the trade was open
        intents = {o.intent for o in await Order.filter(mode="live")}
        assert intents <= {OrderIntent.ENTRY, OrderIntent.STOP_LOSS, OrderIntent.TAKE_PROFIT, OrderIntent.PARTIAL_EXIT}
        assert OrderIntent.PARTIAL_EXIT in intents  # the resize at the partial exit was exercised
        stop_fills = [f for f in sim.state()["fills"] if f["type"] == "STOP_MARKET"]
        assert stop_fills and _held(sim) == 0  # the exchange's stop closed it

        refused = recorder.refusals()
        if cap:
            # entry replan, partial resize and the 1R move each refused once for the stop; targets alike
            assert refused.count(("STOP_MARKET", 110406)) >= 3 and ("TAKE_PROFIT_MARKET", 110407) in refused
            assert set(refused) <= {("STOP_MARKET", 110406), ("TAKE_PROFIT_MARKET", 110407)}
        else:
            assert refused == []
        fallbacks = _assert_protected_but_for_fallbacks(recorder, cap=cap)
        assert fallbacks == refused.count(("STOP_MARKET", 110406))

        assert broker.halted_reason is None and broker.halt_reasons == []
        assert alerts.errors() == []
        state = sim.state()
        assert_stop_always_on_exchange(state)
        await assert_db_matches_exchange(state, sim.initial_balance)
