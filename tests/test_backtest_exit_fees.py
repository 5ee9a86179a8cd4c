"""Backtest exit fees: every exit pays the taker fee, as live pays it on BingX.

Live sends partial exits as MARKET orders and the target as a TAKE_PROFIT_MARKET order: both fill as
taker. shared/strategies.md gives slippage to the entry and the stop only, so partials and the target
fill exactly at their level; their fee is 0.05% (``taker_fee``) of the fill's notional, never the
0.02% maker rate.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from engine.backtest.broker import SimulatedBroker
from engine.market.candle import ONE_MINUTE_MS
from engine.trading.manager import ExitIntent, ExitKind
from engine.trading.positions import Position
from strategies import Side, Signal


M = ONE_MINUTE_MS


def _long_signal() -> Signal:
    """A LONG at 100 with stop 97 (1R = 3) and target 112 (4R)."""
    return Signal("X", "multi_timeframe_long", Side.LONG, 0, 100.0, 97.0, 112.0, 1.0, 1.0, 3.0, 3.0, 12.0)


def test_partial_and_target_pay_the_taker_fee_at_their_level() -> None:
    """10 units long: entry at 100 (+2 bps = 100.02), 3 units out at the 2R partial (106), 7 at the target (112)."""
    broker = SimulatedBroker(10_000.0, slippage_bps=2, taker_fee=0.0005, maker_fee=0.0002)
    position = Position("t1", _long_signal(), Decimal("10"))
    position.entry = broker.submit_entry(position, 100.0, 0)
    assert position.entry.price == pytest.approx(100.02)
    assert position.entry.fee == pytest.approx(0.5001)  # 10 x 100.02 x 0.05%

    partial = broker.submit_exit(position, ExitIntent(ExitKind.PARTIAL, Decimal("3"), 106.0, "partial_2R", False), M)
    assert partial.price == 106.0  # at the level: no slippage for a partial
    assert partial.fee == pytest.approx(0.159)  # 3 x 106 = 318 notional, x 0.05% (maker would be 0.0636)

    target = broker.submit_exit(position, ExitIntent(ExitKind.TARGET, Decimal("7"), 112.0, "target", True), 2 * M)
    assert target.price == 112.0  # at the level: the spec gives the target no slippage
    assert target.fee == pytest.approx(0.392)  # 7 x 112 = 784 notional, x 0.05% (maker would be 0.1568)

    # cash: 10000 - 0.5001 + 3 x 5.98 - 0.159 + 7 x 11.98 - 0.392
    assert broker.cash == pytest.approx(10_000 - 0.5001 + 17.94 - 0.159 + 83.86 - 0.392)
    assert broker.fees_paid == pytest.approx(0.5001 + 0.159 + 0.392)
    assert broker.open == {}


def test_short_partial_pays_taker_and_the_stop_keeps_its_slippage() -> None:
    """A SHORT: the partial fills at its level with taker fee; the trailing stop still slips against the trade."""
    broker = SimulatedBroker(10_000.0, slippage_bps=2, taker_fee=0.0005, maker_fee=0.0002)
    signal = Signal("X", "trend_distance_short", Side.SHORT, 0, 100.0, 103.0, 85.0, 1.0, 1.0, 3.0, 3.0, 15.0)
    position = Position("t2", signal, Decimal("2"))
    position.entry = broker.submit_entry(position, 100.0, 0)
    partial = broker.submit_exit(position, ExitIntent(ExitKind.PARTIAL, Decimal("0.6"), 94.0, "partial_2R", False), M)
    assert partial.price == 94.0 and partial.fee == pytest.approx(0.0282)  # 0.6 x 94 = 56.4 x 0.05%
    stop = broker.submit_exit(position, ExitIntent(ExitKind.TRAILING_STOP, Decimal("1.4"), 97.0, "trailing_stop", True), 2 * M)
    assert stop.price == pytest.approx(97.0194)  # 97 + 2 bps against a short
    assert stop.fee == pytest.approx(1.4 * 97.0194 * 0.0005)
