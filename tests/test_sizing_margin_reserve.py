"""The leverage cap keeps ``strategies.margin_reserve_pct`` free, so the risk gate's free-margin rule accepts capped entries.

Before: an entry capped at ``equity * leverage`` used all the margin and paper/live refused it
("free margin after the order would be 0.04% of equity, below 10%") while the backtest, which has no
gate, took it. Now the cap is ``equity * leverage * (1 - margin_reserve_pct / 100)`` everywhere.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from bot.config import AppConfig, RiskConfig
from db.models import Signal, SignalFate, Trade, TradeState
from engine.backtest.runner import BacktestSession
from engine.risk.gate import AccountSnapshot, OrderProposal, evaluate
from engine.trading.sizing import ContractRules, size_position
from strategies import Fate, StrategiesConfig
from tests.execution_sim import SYMBOL, app_config, options, simulator, step_minutes, window, xrp_candles

BTC = ContractRules(qty_step=Decimal("0.0001"), min_qty=Decimal("0.0001"), min_notional=Decimal("2"), price_tick=Decimal("0.1"))
XRP = ContractRules(qty_step=Decimal("0.01"), min_qty=Decimal("0.01"), min_notional=Decimal("2"), price_tick=Decimal("0.00001"))
CAPPED_XRP_LONG = 33497  # index in the XRP file of a 1% long whose size the leverage cap limits (about 93% of equity uncapped)


def _btc_example(**overrides: Any) -> Any:
    """The reviewer's example: equity 10,000, long at 60,000, stop at 59,880 (1% risk wants 0.8333 BTC)."""
    args: dict[str, Any] = dict(equity=10_000.0, risk_pct=1.0, max_risk_pct=3.0, entry=60_000.0, stop=59_880.0, contract=BTC,
                                leverage=1.0, margin_reserve_pct=10.0)
    args.update(overrides)
    return size_position(**args)


def _gate(qty: Decimal, *, equity: str = "10000", entry: str = "60000", stop: str = "59880", leverage: str = "1",
          min_free_margin_pct: float = 10.0) -> Any:
    """The risk gate's verdict on a long entry of ``qty`` with no other position open (margin = equity)."""
    proposal = OrderProposal(SYMBOL, "multi_timeframe_long", "LONG", qty, Decimal(entry), Decimal(stop), leverage=Decimal(leverage))
    account = AccountSnapshot(Decimal(equity), Decimal(equity))
    risk = RiskConfig(min_free_margin_pct=min_free_margin_pct, max_notional_usdt=1e12, max_leverage=125)
    return evaluate(proposal, account, [], risk, StrategiesConfig())


# -- the cap -----------------------------------------------------------------------------------------------


def test_cap_keeps_the_reserve_free_and_the_gate_accepts_the_entry() -> None:
    decision = _btc_example()
    assert decision.accepted and decision.capped_by_leverage
    assert decision.qty == Decimal("0.15")  # floor(10000 * 0.9 / 60000 to 0.0001)
    assert decision.notional == pytest.approx(9_000.0)
    assert _gate(decision.qty).allowed  # free margin after: exactly 10%, the minimum (which passes)
    # the spec's bare cap (reserve 0) is what was sized before: 0.1666, which the gate refuses
    bare = _btc_example(margin_reserve_pct=0.0)
    assert bare.qty == Decimal("0.1666")
    refused = _gate(bare.qty)
    assert not refused.allowed and refused.rule == "free_margin", refused


def test_uncapped_entries_are_unchanged_and_higher_leverage_scales_the_cap() -> None:
    wide = _btc_example(stop=58_000.0)  # 1% risk over a 2,000 stop = 0.05 BTC = 3,000 notional: below the cap
    assert not wide.capped_by_leverage and wide.qty == Decimal("0.05")
    levered = _btc_example(leverage=3.0)  # cap 10000 * 3 * 0.9 = 27,000 notional -> 0.45 BTC, margin 9,000
    assert levered.capped_by_leverage and levered.qty == Decimal("0.45")
    assert _gate(levered.qty, leverage="3").allowed


def test_reserve_out_of_range_is_a_rejection_not_an_order() -> None:
    assert not _btc_example(margin_reserve_pct=100.0).accepted
    assert not _btc_example(margin_reserve_pct=-1.0).accepted


@settings(max_examples=300, deadline=None)
@given(
    equity=st.floats(50, 1e7),
    entry=st.floats(1e-3, 1e5),
    leverage=st.sampled_from([0.5, 1.0, 2.0, 3.0, 5.0]),
    reserve=st.sampled_from([0.0, 5.0, 10.0, 12.5, 33.3]),
    step=st.sampled_from([Decimal("1"), Decimal("0.01"), Decimal("0.0001")]),
)
def test_a_capped_entry_always_passes_the_free_margin_rule(equity: float, entry: float, leverage: float, reserve: float,
                                                            step: Decimal) -> None:
    rules = ContractRules(qty_step=step, min_qty=step, min_notional=Decimal(0), price_tick=Decimal("0.0001"))
    stop = entry * 0.999  # a tight stop: the risk sizing wants far more than the cap
    decision = size_position(equity=equity, risk_pct=2.0, max_risk_pct=3.0, entry=entry, stop=stop, contract=rules,
                             leverage=leverage, margin_reserve_pct=reserve)
    if not decision.accepted:
        return
    assert decision.capped_by_leverage
    verdict = _gate(decision.qty, equity=repr(equity), entry=repr(entry), stop=repr(stop), leverage=repr(leverage),
                    min_free_margin_pct=reserve)
    assert verdict.allowed, verdict


# -- the risk actually taken --------------------------------------------------------------------------------


def test_decision_reports_the_real_risk_after_the_cap() -> None:
    decision = _btc_example()
    assert decision.risk_pct == 1.0  # requested
    assert decision.actual_risk_pct == pytest.approx(0.15 * 120 / 10_000 * 100)  # 0.18%: what the order risks
    uncapped = _btc_example(stop=58_000.0)
    assert uncapped.actual_risk_pct == pytest.approx(1.0)
    assert _btc_example(margin_reserve_pct=100.0).actual_risk_pct == 0.0


def test_the_engine_records_the_real_risk_of_a_capped_entry() -> None:
    candles = xrp_candles()
    session = BacktestSession(SYMBOL, StrategiesConfig(), XRP, balance=10_000.0)
    for candle in candles[CAPPED_XRP_LONG - 1200 : CAPPED_XRP_LONG + 1]:
        session.on_candle(candle)
    [record] = [r for r in session.signals if r.fate is Fate.TAKEN]
    signal = record.signal
    assert signal.strategy == "multi_timeframe_long" and signal.time_ms == candles[CAPPED_XRP_LONG].open_time_ms
    qty = Decimal(re.match(r"qty (\S+) ", record.reason).group(1))  # type: ignore[union-attr]
    assert qty == Decimal(repr(10_000 * 0.9 / signal.entry)).quantize(Decimal("0.01"), rounding="ROUND_FLOOR")
    real = float(qty) * abs(signal.entry - signal.stop) / 10_000 * 100
    assert real < 0.97  # well below the 1% the strategy asked for
    shown = float(re.search(r" risk (\S+)% ", record.reason).group(1))  # type: ignore[union-attr]
    assert shown == pytest.approx(real, rel=1e-3), record.reason
    assert "requested 1%" in record.reason and "capped" in record.reason


# -- config ---------------------------------------------------------------------------------------------------


def test_reserve_below_the_gates_free_margin_is_a_config_error() -> None:
    assert AppConfig().strategies.margin_reserve_pct == 10.0 == AppConfig().risk.min_free_margin_pct
    with pytest.raises(ValidationError, match=r"strategies.margin_reserve_pct \(5\) is below risk.min_free_margin_pct \(10\)"):
        AppConfig.model_validate({"strategies": {"margin_reserve_pct": 5}})
    AppConfig.model_validate({"strategies": {"margin_reserve_pct": 15}})  # more reserve than the gate needs: fine
    AppConfig.model_validate({"strategies": {"margin_reserve_pct": 5}, "risk": {"min_free_margin_pct": 5}})
    with pytest.raises(ValidationError):
        StrategiesConfig(margin_reserve_pct=100)  # nothing left to trade with


# -- paper, end to end, through the real risk gate --------------------------------------------------------


async def test_paper_takes_the_capped_entry_the_backtest_takes(db_url: str) -> None:
    """XRP, default config: the 1% long at minute 33497 is capped; paper (real gate, paper wallet margin) opens it."""
    from bot.worker import wire_entry_gate
    from engine.execution.runtime import TradingRuntime
    from engine.risk.manager import RiskManager

    data, start_ms = window(CAPPED_XRP_LONG - 5, CAPPED_XRP_LONG + 2)
    sim = simulator(data, start_ms)
    await sim.start()
    config = app_config("paper", sim, db_url, api_key="", api_secret="")
    risk = RiskManager(config)
    runtime = TradingRuntime(config, clock_ms=sim.server_time_ms, options=options())
    wire_entry_gate(runtime, risk)  # the worker's gate: the paper wallet's available margin, the real rules
    try:
        await runtime.start()
        await step_minutes(sim, runtime, start_ms, 7)
        signals = await Signal.filter(strategy="multi_timeframe_long")
        assert [(s.fate, s.reason) for s in signals] == [(SignalFate.TAKEN, "")], [(s.fate, s.reason) for s in signals]
        trade = await Trade.get(mode="paper", strategy="multi_timeframe_long")
        assert trade.state is TradeState.OPEN
        notional = trade.qty * trade.entry_price
        assert Decimal(8_900) < notional < Decimal(9_010)  # ~90% of the 10,000 wallet (fill slippage aside)
    finally:
        await runtime.stop()
        await sim.stop()
