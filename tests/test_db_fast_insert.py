"""The order path's one-transaction writer stores exactly what the ORM stores, all or nothing, on every backend."""

from __future__ import annotations

import asyncio
import struct
import warnings
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
from tortoise import fields
from tortoise.exceptions import IntegrityError
from tortoise.models import Model

from db import models as m
from db.database import checkpoint
from db.fast_insert import Ref, Row, insert_rows, to_db

pytestmark = pytest.mark.usefixtures("db_url")

SIGNAL = dict(symbol="BTC-USDT", strategy="multi_timeframe_long", side="LONG", candle_time_ms=1_700_000_040_000,
              entry=Decimal("37012.5"), stop=Decimal("36900.25"), target=Decimal("37461.5"),
              inputs={"rsi_5m": 61.2, "atr": 37.4166}, fate=m.SignalFate.TAKEN, mode="live")
TRADE = dict(symbol="BTC-USDT", strategy="multi_timeframe_long", side="LONG", state=m.TradeState.PENDING, mode="live",
             initial_qty=Decimal("0.013"), qty=Decimal(0), initial_stop=Decimal("36900.25"), stop=Decimal("36900.25"),
             target=Decimal("37461.5"), risk_per_unit=Decimal("112.25"), management={"entry_reference": 37012.5})
ORDER = dict(mode="live", symbol="BTC-USDT", intent=m.OrderIntent.ENTRY, side="BUY", position_side="LONG",
             order_type="MARKET", quantity=Decimal("0.013"), reduce_only=False, status=m.OrderStatus.SENT)
SKIP = {"id", "created_at", "updated_at", "at", "signal_id", "trade_id", "order_id"}


async def _stored(model: type[Any], pk: int) -> dict[str, Any]:
    row = (await model.filter(id=pk).values())[0]
    return {k: v for k, v in row.items() if k not in SKIP}


async def test_rows_equal_what_the_orm_stores_and_are_linked() -> None:
    signal, trade, order, event = await insert_rows([
        Row(m.Signal, SIGNAL),
        Row(m.Trade, {**TRADE, "signal_id": Ref(0)}),
        Row(m.Order, {**ORDER, "client_order_id": "enfast1", "trade_id": Ref(1)}),
        Row(m.OrderEvent, {"order_id": Ref(2), "status": m.OrderStatus.CREATED, "source": "placement", "detail": {"a": 1}}),
    ])
    orm_signal = await m.Signal.create(**{**SIGNAL, "candle_time_ms": SIGNAL["candle_time_ms"] + 60_000})
    orm_trade = await m.Trade.create(**TRADE, signal_id=orm_signal.id)
    orm_order = await m.Order.create(**ORDER, client_order_id="enorm1", trade_id=orm_trade.id)

    assert await _stored(m.Signal, signal.id) == {**await _stored(m.Signal, orm_signal.id),
                                                  "candle_time_ms": SIGNAL["candle_time_ms"]}
    assert await _stored(m.Trade, trade.id) == await _stored(m.Trade, orm_trade.id)
    assert await _stored(m.Order, order.id) == {**await _stored(m.Order, orm_order.id), "client_order_id": "enfast1"}
    # linked by the ids the database gave, and the returned objects say the same as the rows
    loaded = await m.Order.get(id=order.id).prefetch_related("trade__signal", "events")
    assert loaded.trade.id == trade.id and loaded.trade.signal.id == signal.id
    assert [(e.status, e.detail) for e in loaded.events] == [(m.OrderStatus.CREATED, {"a": 1})]
    assert (order.client_order_id, order.status, trade.signal_id, order.trade_id, event.order_id) == (
        "enfast1", m.OrderStatus.SENT, signal.id, trade.id, order.id)
    assert trade.created_at is not None and trade.updated_at is not None
    # the objects work like fetched ones: a later save updates the row
    trade.state = m.TradeState.OPEN
    await trade.save()
    assert (await m.Trade.get(id=trade.id)).state is m.TradeState.OPEN


async def test_a_failing_row_stores_nothing() -> None:
    await insert_rows([Row(m.Order, {**ORDER, "client_order_id": "endup1"})])
    before = (await m.Signal.all().count(), await m.Trade.all().count(), await m.Order.all().count())
    with pytest.raises(IntegrityError):
        await insert_rows([
            Row(m.Signal, SIGNAL),
            Row(m.Trade, {**TRADE, "signal_id": Ref(0)}),
            Row(m.Order, {**ORDER, "client_order_id": "endup1", "trade_id": Ref(1)}),  # the id is taken
        ])
    assert (await m.Signal.all().count(), await m.Trade.all().count(), await m.Order.all().count()) == before
    # and the connection is usable afterwards
    assert (await insert_rows([Row(m.Order, {**ORDER, "client_order_id": "endup2"})]))[0].id is not None


async def test_bad_rows_are_refused_before_anything_is_written() -> None:
    with pytest.raises(TypeError, match="no insertable column"):
        await insert_rows([Row(m.Order, {**ORDER, "client_order_id": "x", "colour": "red"})])
    with pytest.raises(TypeError, match="required"):
        await insert_rows([Row(m.Order, {"client_order_id": "x"})])
    with pytest.raises(ValueError, match="earlier rows"):
        await insert_rows([Row(m.Trade, {**TRADE, "signal_id": Ref(0)})])
    assert await m.Order.all().count() == 0 and await m.Trade.all().count() == 0


async def test_concurrent_orm_work_does_not_interleave() -> None:
    """ORM transactions running at the same moment neither break the batch nor see half of it."""

    async def orm_transactions() -> None:
        for i in range(20):
            await m.KeyValue.update_or_create(key=f"k{i % 3}", defaults={"value": {"v": i}})

    async def batches() -> None:
        for i in range(20):
            await insert_rows([Row(m.Trade, TRADE), Row(m.Order, {**ORDER, "client_order_id": f"enc{i}", "trade_id": Ref(0)})])

    await asyncio.gather(orm_transactions(), batches(), orm_transactions())
    orders = await m.Order.all().prefetch_related("trade")
    assert len(orders) == 20 and all(o.trade is not None for o in orders)
    assert await m.Trade.all().count() == 20


async def test_commits_never_checkpoint_the_wal_the_job_does(db_url: str) -> None:
    """A checkpoint (WAL copied into the file, with an fsync) inside an order's commit was a pause of
    several ms on the order path; on SQLite only the ``db_checkpoint`` job runs one."""
    if not db_url.startswith("sqlite"):
        assert await checkpoint() is None
        return
    page = "x" * 3000
    for batch in range(15):  # 15 commits, > 1000 pages in all: SQLite's default would checkpoint in one of them
        await insert_rows([Row(m.KeyValue, {"key": f"k{batch}-{i}", "value": {"v": page}}) for i in range(100)])
    wal_pages, copied = await checkpoint()  # type: ignore[misc]
    assert wal_pages > 1000 and copied == wal_pages  # no commit checkpointed on its own; this call copied it all


def _wal_restarts(db_url: str) -> int:
    """The WAL header's checkpoint sequence number: it goes up each time a commit starts the WAL over."""
    wal = Path(db_url[len("sqlite://"):].split("?", 1)[0] + "-wal")
    return struct.unpack(">I", wal.read_bytes()[12:16])[0]


async def test_the_order_commit_after_a_checkpoint_does_not_restart_the_wal(db_url: str) -> None:
    """Starting the WAL over fdatasyncs its header: 5-10 ms measured inside an entry's commit, the first one
    after each checkpoint. The checkpoint job starts it over itself, so the order's commit only appends."""
    if not db_url.startswith("sqlite"):
        return
    for i in range(5):
        await insert_rows([Row(m.KeyValue, {"key": f"before-{i}", "value": {"v": i}})])
    wal_pages, copied = await checkpoint()  # type: ignore[misc]
    assert wal_pages > 0 and copied == wal_pages
    restarts = _wal_restarts(db_url)
    await insert_rows([Row(m.Trade, TRADE), Row(m.Order, {**ORDER, "client_order_id": "enafter", "trade_id": Ref(0)})])
    assert _wal_restarts(db_url) == restarts  # the entry appended to the WAL the job had already started over
    assert await m.Order.filter(client_order_id="enafter").count() == 1


def _outcome(convert: Any, value: Any) -> tuple[Any, ...]:
    """What a conversion gives: its result and the result's type, or the error it raises and its message."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tortoise warns about a naive datetime (and converts it)
        try:
            result = convert(value)
        except Exception as exc:  # noqa: BLE001
            return ("error", type(exc), str(exc))
    return ("value", type(result), result)


async def test_the_short_conversion_route_gives_what_tortoise_gives_for_every_column() -> None:
    """``to_db`` skips tortoise's calls for the usual values: for every column of every model and a spread of values
    (the usual ones, too long, wrong types, naive times, enum members and their names), it gives tortoise's result or
    tortoise's error."""
    models = [obj for obj in vars(m).values() if isinstance(obj, type) and issubclass(obj, Model) and obj is not Model]
    members = [member for model in models for field in model._meta.fields_map.values()
               if isinstance(field, fields.data.CharEnumFieldInstance) for member in field.enum_type]
    values: list[Any] = [
        None, "", "BTC-USDT", "x" * 300, 0, 7, -3, 2**70, True, False, 1.5, "1.5", Decimal("37012.5"), Decimal("-0.001"),
        datetime(2026, 11, 21, 12, 0, tzinfo=timezone.utc), datetime(2026, 11, 21, 12, 0, tzinfo=timezone(timedelta(hours=2))),
        datetime(2026, 11, 21, 12, 0), {}, {"rsi": 61.2, "nested": [1, {"a": None}]}, [1, "two"], "{}", "not json", b"[1]",
        *members, *(member.value for member in members), "NOT_A_MEMBER",
    ]
    checked = 0
    for model in models:
        for name, field in model._meta.fields_map.items():
            if isinstance(field, (fields.relational.RelationalField, fields.relational.BackwardFKRelation)):
                continue  # relations are stored through their ``<name>_id`` column, which is checked as its own field
            short = to_db(field)
            for value in values:
                expected = _outcome(lambda v: field.to_db_value(v, None), value)
                assert _outcome(short, value) == expected, (model.__name__, name, value)
                checked += 1
    assert checked > 2000 and any(isinstance(v, Enum) for v in values)
