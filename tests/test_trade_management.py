"""Every exit path of the trade manager: stop, target, each partial, each trailing step, stop+target in one candle."""

from __future__ import annotations

from decimal import Decimal

import pytest

from engine.trading.manager import ExitIntent, ExitKind, StopMove, TradeManager
from engine.trading.plan import TradePlan
from strategies.base import Side
from strategies.params import PartialExit, TradeManagementParams, TrailingStep

DEFAULT = TradeManagementParams()
STEP = Decimal("0.001")


def long_manager(qty: str = "10", *, target_atr: float = 12.0, management: TradeManagementParams = DEFAULT) -> TradeManager:
    """LONG entry 100, ATR 1, stop 3 ATR -> 97 (1R = 3), target 12 ATR -> 112 (4R)."""
    plan = TradePlan.from_entry(Side.LONG, 100.0, 1.0, 3.0, target_atr, management)
    return TradeManager(plan, Decimal(qty), qty_step=STEP, min_qty=STEP)


def short_manager(qty: str = "10", *, target_atr: float = 15.0, management: TradeManagementParams = DEFAULT) -> TradeManager:
    """SHORT entry 100, ATR 1, stop 103 (1R = 3), target 85 (5R): partials at 94 (2R) and 88 (4R)."""
    plan = TradePlan.from_entry(Side.SHORT, 100.0, 1.0, 3.0, target_atr, management)
    return TradeManager(plan, Decimal(qty), qty_step=STEP, min_qty=STEP)


def exits(actions: list) -> list[tuple[str, Decimal, float]]:
    return [(a.label, a.qty, a.price) for a in actions if isinstance(a, ExitIntent)]


def moves(actions: list) -> list[float]:
    return [a.new_stop for a in actions if isinstance(a, StopMove)]


def test_plan_levels_and_subsumed_partial() -> None:
    plan = long_manager().plan
    assert (plan.stop, plan.target, plan.risk_per_unit, plan.target_r) == (97.0, 112.0, 3.0, 4.0)
    # the 4R partial coincides with the 12-ATR target (4R): subsumed; the 5R trailing step is beyond it
    assert [(p.at_r, p.price) for p in plan.partials] == [(2.0, 106.0)]
    assert [(t.at_r, t.trigger_price, t.stop_price) for t in plan.trailing] == [(3.0, 109.0, 103.0)]
    short = short_manager().plan
    assert (short.stop, short.target) == (103.0, 85.0)
    assert [(p.at_r, p.fraction, p.price) for p in short.partials] == [(2.0, 0.3, 94.0), (4.0, 0.4, 88.0)]
    assert [t.at_r for t in short.trailing] == [3.0]  # the 5R step coincides with the 5R target


def test_stop_closes_everything_at_the_stop_level() -> None:
    m = long_manager()
    assert m.on_range(97.000001, 105.0) == []  # just above the stop: nothing
    actions = m.on_range(96.0, 101.0)
    assert exits(actions) == [("stop", Decimal("10"), 97.0)]
    assert actions[0].kind is ExitKind.STOP and actions[0].closes_position
    assert m.closed and m.remaining == 0
    assert m.on_range(50.0, 200.0) == []  # nothing after the close


def test_stop_touched_exactly_fires_and_gap_through_fills_at_the_level() -> None:
    assert exits(long_manager().on_range(97.0, 99.0)) == [("stop", Decimal("10"), 97.0)]
    # the whole candle below the stop (a gap): the spec fills stops at their level (+ slippage in the broker)
    assert exits(long_manager().on_range(90.0, 92.0)) == [("stop", Decimal("10"), 97.0)]
    assert exits(short_manager().on_range(99.0, 103.0)) == [("stop", Decimal("10"), 103.0)]
    assert short_manager().on_range(99.0, 102.99999) == []


def test_first_partial_just_below_and_at_2r() -> None:
    m = long_manager()
    assert m.on_range(99.0, 105.99999) == []
    actions = m.on_range(100.0, 106.0)
    assert exits(actions) == [("partial_2R", Decimal("3.000"), 106.0)]  # 30% of the INITIAL quantity
    assert not actions[0].closes_position and m.remaining == Decimal("7.000")
    assert m.on_range(100.0, 107.0) == []  # a partial fires once


def test_second_partial_is_a_fraction_of_the_initial_quantity() -> None:
    m = short_manager()
    assert exits(m.on_range(93.5, 100.0)) == [("partial_2R", Decimal("3.000"), 94.0)]
    assert exits(m.on_range(88.00001, 95.0)) == []  # 4R just not reached (the 3R step fired: stop moved)
    assert exits(m.on_range(88.0, 92.0)) == [("partial_4R", Decimal("4.000"), 88.0)]  # 40% of 10, not of 7
    assert m.remaining == Decimal("3.000")


def test_target_closes_the_remainder_and_the_coinciding_partial_is_subsumed() -> None:
    m = long_manager()
    assert exits(m.on_range(100.0, 106.5)) == [("partial_2R", Decimal("3.000"), 106.0)]
    assert exits(m.on_range(104.0, 111.9999)) == []  # 3R step only; target (= the 4R partial) not reached
    actions = m.on_range(104.0, 112.0)
    assert exits(actions) == [("target", Decimal("7.000"), 112.0)]  # no separate 4R partial row
    assert actions[0].kind is ExitKind.TARGET and m.closed


def test_levels_fire_in_price_order_within_one_candle_up_to_the_target() -> None:
    m = long_manager()
    actions = m.on_range(99.5, 112.0)  # 2R partial, 3R trailing step, 4R target in one candle
    assert [type(a).__name__ for a in actions] == ["ExitIntent", "StopMove", "ExitIntent"]
    assert exits(actions) == [("partial_2R", Decimal("3.000"), 106.0), ("target", Decimal("7.000"), 112.0)]
    assert moves(actions) == [103.0]
    assert m.closed and m.remaining == 0


def test_target_just_below_and_at() -> None:
    m = short_manager()
    m.on_range(94.0, 100.0)
    m.on_range(88.0, 95.0)
    assert m.on_range(85.00001, 92.0) == []
    assert exits(m.on_range(85.0, 90.0)) == [("target", Decimal("3.000"), 85.0)]


def test_stop_first_when_stop_and_target_are_inside_one_candle() -> None:
    m = long_manager()
    actions = m.on_range(96.0, 113.0)
    assert exits(actions) == [("stop", Decimal("10"), 97.0)]  # conservative: the stop, everything
    s = short_manager()
    assert exits(s.on_range(84.0, 104.0)) == [("stop", Decimal("10"), 103.0)]


def test_stop_first_when_stop_and_a_partial_are_inside_one_candle() -> None:
    m = long_manager()
    assert exits(m.on_range(96.5, 106.5)) == [("stop", Decimal("10"), 97.0)]


def test_trailing_step_moves_the_stop_from_the_next_candle_on() -> None:
    m = long_manager()
    actions = m.on_range(101.0, 109.0)  # 2R partial and the 3R step: stop -> 1R = 103
    assert moves(actions) == [103.0]
    assert m.stop == 97.0 and m.pending_stop == 103.0
    m2 = long_manager()
    # same candle dips to 102 (below the NEW stop, above the old one): no exit in this candle
    assert exits(m2.on_range(102.0, 109.0)) == [("partial_2R", Decimal("3.000"), 106.0)]
    assert m2.on_range(103.00001, 108.0) == []  # next candle: the new stop is in effect, not touched
    assert m2.stop == 103.0
    actions = m2.on_range(102.9, 104.0)
    assert exits(actions) == [("trailing_stop", Decimal("7.000"), 103.0)]
    assert actions[0].kind is ExitKind.TRAILING_STOP


def test_trailing_just_below_the_step_does_not_move_the_stop() -> None:
    m = long_manager()
    assert moves(m.on_range(100.0, 108.99999)) == []
    assert moves(m.on_range(100.0, 109.0)) == [103.0]


def test_each_trailing_step_with_a_distant_target() -> None:
    """Target 30 ATR (10R) so both default steps are live: 3R -> stop 1R, 5R -> stop 3R."""
    m = long_manager(target_atr=30.0)
    assert [t.at_r for t in m.plan.trailing] == [3.0, 5.0]
    assert moves(m.on_range(100.0, 109.0)) == [103.0]  # 3R reached
    assert moves(m.on_range(104.0, 114.99999)) == []  # 5R not reached; 4R partial fires
    assert moves(m.on_range(104.0, 115.0)) == [109.0]  # 5R reached: stop -> 3R
    assert m.on_range(109.00001, 116.0) == []
    assert exits(m.on_range(108.0, 110.0)) == [("trailing_stop", Decimal("3.000"), 109.0)]

    s = short_manager(target_atr=30.0)
    assert moves(s.on_range(91.0, 100.0)) == [97.0]
    assert moves(s.on_range(85.0, 95.0)) == [91.0]  # 4R partial and the 5R step in one candle
    assert exits(s.on_range(86.0, 91.0)) == [("trailing_stop", Decimal("3.000"), 91.0)]


def test_two_steps_in_one_candle_keep_the_best_stop() -> None:
    m = long_manager(target_atr=30.0)
    assert moves(m.on_range(100.0, 116.0)) == [103.0, 109.0]
    assert m.pending_stop == 109.0
    assert m.on_range(109.5, 110.0) == []
    assert m.stop == 109.0


def test_stop_never_moves_against_the_trade() -> None:
    management = TradeManagementParams(trailing=[TrailingStep(at_r=3, stop_r=1), TrailingStep(at_r=3.5, stop_r=0.5)])
    m = long_manager(management=management)
    actions = m.on_range(100.0, 110.0)
    assert moves(actions) == [103.0]  # the 3.5R step would lower it to 101.5: ignored
    m.on_range(104.0, 105.0)
    assert m.stop == 103.0


def test_partial_rounding_to_nothing_and_dust_remainder() -> None:
    tiny = long_manager("0.003")  # 30% of 0.003 = 0.0009 -> rounds down to 0 at step 0.001
    assert exits(tiny.on_range(100.0, 106.0)) == []
    assert tiny.remaining == Decimal("0.003")
    management = TradeManagementParams(partial_exits=[PartialExit(at_r=2, fraction=0.95)], trailing=[])
    dust = TradeManager(
        TradePlan.from_entry(Side.LONG, 100.0, 1.0, 3.0, 12.0, management), Decimal("1"), qty_step=STEP, min_qty=Decimal("0.1")
    )
    actions = dust.on_range(100.0, 106.0)  # 0.95 leaves 0.05 < min qty: close it all
    assert exits(actions) == [("partial_2R", Decimal("1"), 106.0)]
    assert actions[0].closes_position and dust.closed


def test_live_ticks_use_the_same_rules() -> None:
    m = short_manager()
    out = []
    for price in (99.0, 96.0, 94.0, 93.0, 91.0, 95.0, 97.5, 97.0):
        out.extend(m.on_price(price))
    assert exits(out) == [("partial_2R", Decimal("3.000"), 94.0), ("trailing_stop", Decimal("7.000"), 97.0)]
    assert moves(out) == [97.0]


def test_close_outside_the_plan_and_unrealized() -> None:
    m = short_manager()
    assert m.unrealized(98.0) == pytest.approx(20.0)
    intent = m.close(98.0)
    assert intent is not None and intent.kind is ExitKind.CLOSE and intent.qty == Decimal("10")
    assert m.close(97.0) is None


def test_bad_quantities_and_plans_are_refused() -> None:
    plan = TradePlan.from_entry(Side.LONG, 100.0, 1.0, 3.0, 12.0, DEFAULT)
    with pytest.raises(ValueError):
        TradeManager(plan, Decimal(0), qty_step=STEP, min_qty=STEP)
    with pytest.raises(ValueError):
        TradePlan.from_entry(Side.LONG, 100.0, 0.0, 3.0, 12.0, DEFAULT)


def test_a_close_that_did_not_execute_is_managed_again_after_reopen() -> None:
    m = long_manager()
    assert m.close(101.0) is not None and m.closed and m.remaining == 0
    assert m.on_range(96.0, 101.0) == []  # closed: the stop no longer fires
    m.reopen(Decimal("10"))  # the exchange never executed the close: the position is still held
    assert not m.closed and m.remaining == Decimal("10")
    assert exits(m.on_range(96.0, 101.0)) == [("stop", Decimal("10"), 97.0)]  # managed again: the stop closes it
    with pytest.raises(ValueError):
        long_manager().reopen(Decimal("0"))
