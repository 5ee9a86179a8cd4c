"""Position sizing and quantity rounding (shared/strategies.md, "Position sizing")."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.trading.sizing import ContractRules, floor_to_step, size_position

RULES = ContractRules(qty_step=Decimal("0.001"), min_qty=Decimal("0.001"), min_notional=Decimal("2"), price_tick=Decimal("0.01"))


def size(**overrides: object):
    args: dict[str, object] = dict(equity=10_000.0, risk_pct=1.0, max_risk_pct=3.0, entry=100.0, stop=97.0, contract=RULES, leverage=100.0)
    args.update(overrides)
    return size_position(**args)  # type: ignore[arg-type]


def test_quantity_is_risk_over_stop_distance_rounded_down() -> None:
    decision = size()  # 10000 * 1% / 3 = 33.3333...
    assert decision.accepted
    assert decision.qty == Decimal("33.333")
    assert decision.risk_pct == 1.0 and not decision.capped_by_leverage
    assert decision.notional == pytest.approx(3333.3)
    short = size(entry=100.0, stop=103.0)  # same distance above: same size
    assert short.qty == Decimal("33.333")


def test_rounding_is_down_never_up_and_exact_in_decimal() -> None:
    step1 = ContractRules(qty_step=Decimal("1"), min_qty=Decimal("1"), min_notional=Decimal("2"), price_tick=Decimal("0.01"))
    assert size(contract=step1).qty == Decimal("33")  # 33.33 -> 33, not 34
    assert size(equity=9_999.0, stop=99.0, contract=step1).qty == Decimal("99")  # 99.99 -> 99
    assert floor_to_step(0.3, Decimal("0.1")) == Decimal("0.3")  # no float artefact turns 0.3 into 0.2
    assert str(floor_to_step(0.1 * 3, Decimal("0.1"))) == "0.3"  # 0.30000000000000004 -> 0.3 exactly
    assert floor_to_step(Decimal("7.99"), Decimal("0.5")) == Decimal("7.5")
    assert floor_to_step(123.456, Decimal("10")) == Decimal("120")


def test_risk_is_capped_at_the_strategy_maximum() -> None:
    decision = size(risk_pct=5.0, max_risk_pct=3.0)
    assert decision.risk_pct == 3.0
    assert decision.qty == Decimal("100.000")  # 10000 * 3% / 3


def test_leverage_caps_the_notional() -> None:
    tight = size(stop=99.9, leverage=1.0)  # risk sizing wants 1000 units = 100000 notional
    assert tight.capped_by_leverage
    assert tight.qty == Decimal("100.000")  # 10000 * 1 / 100
    assert float(tight.qty) * 100.0 <= 10_000.0
    assert size(stop=99.9, leverage=5.0).qty == Decimal("500.000")
    assert not size(stop=99.9, leverage=20.0).capped_by_leverage


def test_rejects_below_min_qty_and_below_min_notional_with_reasons() -> None:
    coarse = ContractRules(qty_step=Decimal("1"), min_qty=Decimal("1"), min_notional=Decimal("2"), price_tick=Decimal("0.01"))
    small = size(equity=100.0, entry=100.0, stop=90.0, contract=coarse)  # 0.1 unit -> 0
    assert not small.accepted and small.qty == 0
    assert small.reason.startswith("below min qty")
    cheap = size(equity=100.0, entry=0.5, stop=0.4, risk_pct=0.1, contract=RULES)  # 1 unit = 0.5 notional
    assert not cheap.accepted
    assert cheap.reason.startswith("below min notional")
    just_enough = size(equity=100.0, entry=0.5, stop=0.4, risk_pct=0.4, contract=RULES)  # 4 units = 2.0
    assert just_enough.accepted and just_enough.qty == Decimal("4.000")


def test_portfolio_room_shrinks_or_rejects() -> None:
    shrunk = size(risk_pct=1.0, portfolio_risk_room_pct=0.5)
    assert shrunk.risk_pct == 0.5 and shrunk.qty == Decimal("16.666")
    full = size(portfolio_risk_room_pct=0.0)
    assert not full.accepted and full.reason.startswith("max_portfolio_risk")
    roomy = size(portfolio_risk_room_pct=10.0)
    assert roomy.risk_pct == 1.0


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"stop": 100.0}, "stop equals entry"),
        ({"equity": 0.0}, "no equity"),
        ({"equity": float("nan")}, "no equity"),
        ({"stop": -3.0}, "invalid levels"),
        ({"entry": float("inf")}, "invalid levels"),
    ],
)
def test_invalid_inputs_are_rejected_not_raised(overrides: dict[str, float], reason: str) -> None:
    decision = size(**overrides)
    assert not decision.accepted and reason in decision.reason


def test_contract_rules_validate() -> None:
    with pytest.raises(ValueError):
        ContractRules(qty_step=Decimal(0), min_qty=Decimal(1), min_notional=Decimal(2), price_tick=Decimal("0.1"))
    with pytest.raises(ValueError):
        ContractRules(qty_step=0.1, min_qty=Decimal(1), min_notional=Decimal(2), price_tick=Decimal("0.1"))  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(
    equity=st.floats(10, 1e7),
    risk=st.floats(0.01, 5),
    entry=st.floats(1e-4, 1e5),
    stop_frac=st.floats(0.001, 0.5),
    leverage=st.sampled_from([1.0, 3.0, 10.0]),
    step=st.sampled_from([Decimal("1"), Decimal("0.1"), Decimal("0.001"), Decimal("0.000001")]),
)
def test_size_never_exceeds_risk_or_leverage_and_is_on_the_step(
    equity: float, risk: float, entry: float, stop_frac: float, leverage: float, step: Decimal
) -> None:
    rules = ContractRules(qty_step=step, min_qty=step, min_notional=Decimal(2), price_tick=Decimal("0.0001"))
    stop = entry * (1 - stop_frac)
    decision = size_position(equity=equity, risk_pct=risk, max_risk_pct=5, entry=entry, stop=stop, contract=rules, leverage=leverage)
    if not decision.accepted:
        return
    qty = float(decision.qty)
    assert decision.qty % step == 0
    assert qty * abs(entry - stop) <= equity * risk / 100 * (1 + 1e-9)
    assert qty * entry <= equity * leverage * (1 + 1e-9)
    # rounding down by less than one step: one more step would break a limit
    bigger = qty + float(step)
    assert bigger * abs(entry - stop) > equity * risk / 100 * (1 - 1e-9) or bigger * entry > equity * leverage * (1 - 1e-9)
