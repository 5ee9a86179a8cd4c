"""Every model round-trips through the migrated database (SQLite always, PostgreSQL when configured)."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from tortoise.exceptions import IntegrityError

from db import models as m
from db.database import close_db, init_db
from db.kv import kv_get, kv_set

pytestmark = pytest.mark.usefixtures("db_url")

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=timezone.utc)


async def _signal(**overrides: object) -> m.Signal:
    fields = dict(
        symbol="BTC-USDT",
        strategy="multi_timeframe_long",
        side="LONG",
        candle_time_ms=1_700_000_040_000,
        entry=Decimal("37012.5"),
        stop=Decimal("36900.25"),
        target=Decimal("37461.5"),
        inputs={"rsi_5m": 61.2, "atr": 37.4166},
        fate=m.SignalFate.TAKEN,
    )
    fields.update(overrides)
    return await m.Signal.create(**fields)


async def test_signal_round_trip_keeps_decimals_and_inputs() -> None:
    created = await _signal()
    loaded = await m.Signal.get(id=created.id)
    assert loaded.entry == Decimal("37012.5")
    assert loaded.stop == Decimal("36900.25")
    assert loaded.inputs == {"rsi_5m": 61.2, "atr": 37.4166}
    assert loaded.fate is m.SignalFate.TAKEN


async def test_signal_is_unique_per_candle_strategy_and_mode() -> None:
    await _signal()
    with pytest.raises(IntegrityError):
        await _signal()
    await _signal(mode="live")  # the same candle in another mode is a different record


async def test_trade_orders_fills_and_exits_round_trip() -> None:
    signal = await _signal()
    trade = await m.Trade.create(
        symbol="BTC-USDT",
        strategy="multi_timeframe_long",
        side="LONG",
        signal=signal,
        entry_price=Decimal("37015.1"),
        initial_qty=Decimal("0.0270"),
        qty=Decimal("0.0189"),
        initial_stop=Decimal("36902.85"),
        stop=Decimal("36902.85"),
        target=Decimal("37464.1"),
        risk_per_unit=Decimal("112.25"),
        state=m.TradeState.OPEN,
        opened_at=NOW,
        management={"partials_done": [2.0], "trail_step": 0},
    )
    order = await m.Order.create(
        client_order_id="tbentry0001",
        trade=trade,
        symbol="BTC-USDT",
        intent=m.OrderIntent.ENTRY,
        side="BUY",
        position_side="LONG",
        order_type="MARKET",
        quantity=Decimal("0.0270"),
    )
    order.exchange_order_id = "1743623387810590720"  # > 2**53: must survive as text
    order.status = m.OrderStatus.FILLED
    await order.save()
    await m.OrderEvent.create(order=order, status=m.OrderStatus.FILLED, source="stream", detail={"X": "FILLED"})
    await m.Fill.create(order=order, fill_key="1743623387810590720:1", price=Decimal("37015.1"),
                        qty=Decimal("0.0270"), fee=Decimal("0.49970385"), time_ms=1_700_000_100_000)
    await m.TradeExit.create(trade=trade, kind="partial_2r", qty=Decimal("0.0081"), price=Decimal("37239.6"),
                             pnl=Decimal("1.818450"), fee=Decimal("0.150820"), time_ms=1_700_000_400_000)

    loaded = await m.Trade.get(id=trade.id).prefetch_related("orders", "exits", "signal")
    assert loaded.signal.id == signal.id
    assert loaded.management == {"partials_done": [2.0], "trail_step": 0}
    assert [o.exchange_order_id for o in loaded.orders] == ["1743623387810590720"]
    assert loaded.orders[0].status is m.OrderStatus.FILLED
    assert [e.pnl for e in loaded.exits] == [Decimal("1.818450")]
    fills = await m.Fill.filter(order__trade_id=trade.id)
    assert [f.fee for f in fills] == [Decimal("0.49970385")]
    events = await m.OrderEvent.filter(order=order)
    assert [(e.status, e.source) for e in events] == [(m.OrderStatus.FILLED, "stream")]


async def test_client_order_id_and_fill_key_are_unique() -> None:
    kwargs = dict(symbol="BTC-USDT", intent=m.OrderIntent.ENTRY, side="BUY", position_side="LONG",
                  order_type="MARKET", quantity=Decimal("1"))
    order = await m.Order.create(client_order_id="dup1", **kwargs)
    with pytest.raises(IntegrityError):
        await m.Order.create(client_order_id="dup1", **kwargs)
    await m.Fill.create(order=order, fill_key="k1", price=Decimal("1"), qty=Decimal("1"), time_ms=1)
    with pytest.raises(IntegrityError):
        await m.Fill.create(order=order, fill_key="k1", price=Decimal("1"), qty=Decimal("1"), time_ms=1)


async def test_approval_lock_state_metrics_audit_outbox_kv_round_trip() -> None:
    signal = await _signal(fate=m.SignalFate.PENDING_APPROVAL)
    approval = await m.Approval.create(signal=signal, expires_at=NOW + timedelta(minutes=2),
                                       messages=[{"transport": "telegram", "chat_id": 1, "message_id": 9}])
    lock = await m.ProtectionLock.create(kind="cooldown", symbol="BTC-USDT", strategy="multi_timeframe_long",
                                         reason="losing trade", until=NOW + timedelta(minutes=15))
    await m.TradingStateRecord.create(state="PAUSED", reason="admin", actor="telegram:42")
    await m.DailyMetric.create(day=date(2026, 11, 21), start_equity=Decimal("10000"), end_equity=Decimal("10125.5"),
                               peak_equity=Decimal("10150"), trades=3, wins=2, losses=1)
    await m.EquitySnapshot.create(equity=Decimal("10125.5"))
    await m.AuditLog.create(kind="command", actor="telegram:42", chat="telegram:-100", action="status",
                            outcome="ok", detail={"ms": 12})
    await m.AlertOutbox.create(event_type="entry", destination="telegram", text="LONG BTC-USDT filled",
                               payload={"buttons": []}, dedup_key="entry:1")
    await m.KeyValue.create(key="paper_wallet", value={"balance": "10000.00"})

    assert (await m.Approval.get(id=approval.id)).expires_at == NOW + timedelta(minutes=2)
    assert (await m.Approval.get(id=approval.id)).status is m.ApprovalStatus.PENDING
    assert (await m.ProtectionLock.get(id=lock.id)).until == NOW + timedelta(minutes=15)
    assert (await m.TradingStateRecord.first()).state == "PAUSED"
    metric = await m.DailyMetric.get(day=date(2026, 11, 21), mode="paper")
    assert (metric.end_equity, metric.wins) == (Decimal("10125.5"), 2)
    assert (await m.EquitySnapshot.first()).equity == Decimal("10125.5")
    assert (await m.AuditLog.first()).detail == {"ms": 12}
    outbox = await m.AlertOutbox.first()
    assert (outbox.status, outbox.attempts, outbox.payload) == (m.AlertStatus.PENDING, 0, {"buttons": []})
    assert (await m.KeyValue.get(key="paper_wallet")).value == {"balance": "10000.00"}


async def test_data_survives_a_restart(db_url: str) -> None:
    await kv_set("peak_equity", "10500.25")
    await close_db()
    await init_db(db_url)  # second start: migrations are already applied, data is kept
    assert await kv_get("peak_equity") == "10500.25"
    await kv_set("peak_equity", "10600")
    assert await kv_get("peak_equity") == "10600"
    assert await kv_get("missing", default="none") == "none"
