"""Stops go to the exchange on the tick toward the entry (LONG: up, SHORT: down), never further away.

Nearest rounding could put a LONG's stop half a tick lower (a SHORT's higher) than planned: more risk
than the position was sized for. Targets keep nearest rounding. Checked in the broker's helper, in the
BingX client's own rounding (reconciliation and the emergency stop hand it the trade's unrounded level),
and end to end: the stop working on the local simulator after an entry.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from db.models import Signal, Trade, TradeState
from engine.exchange.bingx.models import parse_contract
from engine.exchange.bingx.orders import OrderRequest, TriggerSpec
from engine.exchange.bingx.contracts import ContractRules
from engine.execution.runtime import TradingRuntime
from engine.execution.trade_ctx import round_to_tick
from engine.simulator import MarketSpec, SimulatorServer

from tests.execution_sim import API_KEY, API_SECRET, SYMBOL, WARMUP, app_config, open_live_trade, options, window

TICK = Decimal("0.0001")


# -- the broker's helper ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("level", "side", "expected"), [
    (1.34271, "LONG", Decimal("1.3428")),   # nearest would be 1.3427: 0.1 tick more risk
    (1.34279, "LONG", Decimal("1.3428")),
    (1.31151, "SHORT", Decimal("1.3115")),  # nearest would be 1.3115 too
    (1.31159, "SHORT", Decimal("1.3115")),  # nearest would be 1.3116: 0.1 tick more risk
])
def test_stop_rounds_toward_the_entry(level: float, side: str, expected: Decimal) -> None:
    assert round_to_tick(level, TICK, stop_of=side) == expected


def test_a_stop_on_the_tick_stays_and_targets_keep_nearest() -> None:
    for side in ("LONG", "SHORT"):
        assert round_to_tick(Decimal("1.3428"), TICK, stop_of=side) == Decimal("1.3428")
        # float noise around a tick is that tick, not the next one
        assert round_to_tick(1.3428000000000002, TICK, stop_of=side) == Decimal("1.3428")
        assert round_to_tick(1.3427999999999998, TICK, stop_of=side) == Decimal("1.3428")
    assert round_to_tick(1.34271, TICK) == Decimal("1.3427")  # a target: nearest
    with pytest.raises(ValueError):
        round_to_tick(1.34271, TICK, stop_of="BOTH")


# -- the BingX client's rounding ------------------------------------------------------------------------------


def _rules() -> ContractRules:
    return ContractRules(parse_contract({
        "symbol": "XRP-USDT", "contractId": "1", "pricePrecision": 4, "quantityPrecision": 0,
        "tradeMinQuantity": 1, "tradeMinUSDT": 2, "status": 1, "apiStateOpen": "true", "asset": "XRP"}))


@pytest.mark.parametrize(("side", "position_side", "stop", "wire"), [
    ("SELL", "LONG", "1.34271", "1.3428"),    # a long's stop: up
    ("BUY", "SHORT", "1.31159", "1.3115"),    # a short's stop: down
    ("SELL", "BOTH", "1.34271", "1.3428"),    # one-way mode: a SELL stop closes a long
    ("BUY", "BOTH", "1.31159", "1.3115"),
])
def test_client_rounds_a_closing_stop_toward_the_entry(side: str, position_side: str, stop: str, wire: str) -> None:
    """Reconciliation and the emergency stop send the trade's unrounded stop: the client must not add risk."""
    req = OrderRequest(symbol="XRP-USDT", side=side, position_side=position_side, type="STOP_MARKET", quantity=Decimal(10),
                       stop_price=Decimal(stop), reduce_only=position_side == "BOTH", client_order_id="s1")
    assert rules_wire(req)["stopPrice"] == Decimal(wire)


def rules_wire(req: OrderRequest) -> dict:
    """The request's parameters as the client sends them."""
    return _rules().prepare(req, reference_price=Decimal("1.33")).to_params()


@pytest.mark.parametrize(("side", "protects", "stop", "target", "reference", "safe_stop", "nearest_target"), [
    ("BUY", "LONG", "1.34271", "1.40001", "1.35", "1.3428", "1.4000"),  # a long's stop rounds up, toward the entry
    ("SELL", "SHORT", "1.31159", "1.25009", "1.30", "1.3115", "1.2501"),  # a short's stop rounds down
])
def test_client_rounds_the_stop_attached_to_an_entry_toward_it_and_the_target_to_nearest(
        side: str, protects: str, stop: str, target: str, reference: str, safe_stop: str, nearest_target: str) -> None:
    entry = OrderRequest(symbol="XRP-USDT", side=side, position_side=protects, type="MARKET", quantity=Decimal(10),
                         client_order_id="e1", stop_loss=TriggerSpec("STOP_MARKET", Decimal(stop)),
                         take_profit=TriggerSpec("TAKE_PROFIT_MARKET", Decimal(target)))
    prepared = _rules().prepare(entry, reference_price=Decimal(reference))
    assert prepared.stop_loss is not None and prepared.stop_loss.stop_price == Decimal(safe_stop)
    assert prepared.take_profit is not None and prepared.take_profit.stop_price == Decimal(nearest_target)
    assert f'"stopPrice":{safe_stop}' in prepared.to_params()["stopLoss"]


def test_client_sends_a_stop_already_on_the_tick_unchanged() -> None:
    """The broker rounds its stops: the client passes them as they are (no second rounding, no copy)."""
    for side, position_side in (("SELL", "LONG"), ("BUY", "SHORT")):
        req = OrderRequest(symbol="XRP-USDT", side=side, position_side=position_side, type="STOP_MARKET",
                           quantity=Decimal(10), stop_price=Decimal("1.3428"), client_order_id="s2")
        assert _rules().prepare(req) is req
    entry = OrderRequest(symbol="XRP-USDT", side="BUY", position_side="LONG", type="MARKET", quantity=Decimal(10),
                         client_order_id="e3", stop_loss=TriggerSpec("STOP_MARKET", Decimal("1.3428")))
    assert _rules().prepare(entry, reference_price=Decimal("1.35")) is entry


# -- end to end: the stop working on the exchange after an entry --------------------------------------------------

# XRP/USDT replays where nearest rounding would put both the attached stop and the replanned one on the unsafe side
# (found by running them): the long of minute 2640 at a 0.0001 tick, the short of minute ~2792 at 0.00001.
CASES = [pytest.param(2620, 4, "LONG", id="long-tick-0.0001"), pytest.param(2780, 5, "SHORT", id="short-tick-0.00001")]


def _safe(side: str, working: Decimal, planned: Decimal, tick: Decimal) -> bool:
    """``working`` is on the tick and no further from the entry than ``planned`` (and less than a tick closer)."""
    on_tick = working % tick == 0
    if side == "LONG":
        return on_tick and planned <= working < planned + tick
    return on_tick and planned - tick < working <= planned


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("first", "precision", "side"), CASES)
async def test_stop_working_after_an_entry_is_on_the_safe_side(db_url: str, first: int, precision: int, side: str) -> None:
    data, start_ms = window(first, first + 80)
    sim = SimulatorServer([MarketSpec(SYMBOL, data, price_precision=precision)], api_key=API_KEY, api_secret=API_SECRET,
                          paused=True, start_ms=start_ms, warmup_minutes=WARMUP, rate_limit_scale=0)
    await sim.start()
    runtime = TradingRuntime(app_config("live", sim, db_url), clock_ms=sim.server_time_ms, options=options())
    try:
        await runtime.start()
        await open_live_trade(sim, runtime, start_ms)
        state = sim.state()
    finally:
        await runtime.stop()
        await sim.stop()
    tick = Decimal(1).scaleb(-precision)
    [trade] = await Trade.filter(mode="live", state=TradeState.OPEN)
    assert trade.side == side
    signal = await Signal.get(id=trade.signal_id)  # type: ignore[attr-defined]  # tortoise FK id
    stops = [o for o in state["orders"] if o["type"] == "STOP_MARKET" and o["positionSide"] == side]
    # the stop attached to the entry (the exchange creates it at the fill, without a client id): the signal's level
    attached = [o for o in stops if not o["clientOrderId"]]
    assert len(attached) == 1
    assert _safe(side, Decimal(str(attached[0]["stopPrice"])), Decimal(str(signal.stop)), tick), (attached[0], signal.stop)
    # the stop working now: the level replanned from the fill
    working = [o for o in stops if o["status"] == "NEW"]
    assert len(working) == 1
    planned = Decimal(str(trade.stop))
    assert _safe(side, Decimal(str(working[0]["stopPrice"])), planned, tick), (working[0], planned)
    # so the loss at the working stop is at most what the trade was sized for
    loss_at_stop = abs(Decimal(str(working[0]["stopPrice"])) - trade.entry_price) * trade.qty
    assert loss_at_stop <= abs(planned - trade.entry_price) * trade.qty
