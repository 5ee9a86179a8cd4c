"""The stop-coverage check used by the end-to-end tests and the soak flags real gaps."""

from __future__ import annotations

from typing import Any

from engine.simulator.audit import position_spans, stop_gaps


def _state(stop_orders: list[tuple[int, int, str]]) -> dict[str, Any]:
    fills = [
        {"symbol": "XRP-USDT", "positionSide": "LONG", "side": "BUY", "qty": "10", "time": 1_000, "tradeId": 1},
        {"symbol": "XRP-USDT", "positionSide": "LONG", "side": "SELL", "qty": "4", "time": 5_000, "tradeId": 2},
        {"symbol": "XRP-USDT", "positionSide": "LONG", "side": "SELL", "qty": "6", "time": 9_000, "tradeId": 3},
    ]
    orders = [{"symbol": "XRP-USDT", "positionSide": "LONG", "side": "SELL", "type": "STOP_MARKET",
               "time": begin, "updateTime": end, "status": status} for begin, end, status in stop_orders]
    return {"fills": fills, "orders": orders, "clock": {"now_ms": 20_000}}


def test_spans_follow_the_position_through_partial_exits() -> None:
    assert position_spans(_state([])) == [("XRP-USDT", "LONG", 1_000, 9_000)]


def test_a_stop_replaced_new_before_old_has_no_gap() -> None:
    state = _state([(1_000, 6_000, "CANCELLED"), (5_500, 9_000, "FILLED")])
    assert stop_gaps(state) == (1, [])


def test_an_unprotected_stretch_is_reported_unless_within_tolerance() -> None:
    state = _state([(1_500, 6_000, "CANCELLED"), (6_800, 20_000, "NEW")])  # late first stop, then an 800 ms hole
    spans, gaps = stop_gaps(state)
    assert spans == 1 and gaps == ["XRP-USDT LONG: no stop 1000..1500 (500 ms market time)",
                                   "XRP-USDT LONG: no stop 6000..6800 (800 ms market time)"]
    assert stop_gaps(state, tolerance_ms=1_000) == (1, [])
    assert stop_gaps(_state([]))[1] == ["XRP-USDT LONG: no stop 1000..9000"]
