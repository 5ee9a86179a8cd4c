"""Tortoise models: everything the bot must remember across a restart.

Money and quantities are ``Decimal`` columns (never floats), exchange ids are strings
(BingX ids exceed 2^53), times are timezone-aware UTC datetimes or exchange
milliseconds where the exchange speaks milliseconds.

Model docstrings become SQL table comments: keep them free of ``;`` and backticks
(tortoise's SQLite schema editor splits statements on ``;``).
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from tortoise import fields
from tortoise.models import Model


def _decimal(**kwargs: Any) -> fields.DecimalField:
    """Wide enough for a 1e12 notional and an 8-decimal altcoin price."""
    return fields.DecimalField(max_digits=32, decimal_places=12, **kwargs)


class OrderIntent(str, Enum):
    """Why an order exists: drives reconciliation and alerts."""

    ENTRY = "entry"
    STOP_LOSS = "stop_loss"
    TAKE_PROFIT = "take_profit"
    PARTIAL_EXIT = "partial_exit"
    CLOSE = "close"
    EMERGENCY_CLOSE = "emergency_close"


class OrderStatus(str, Enum):
    """Our view of an order. UNKNOWN means sent with no answer yet: must be looked up."""

    CREATED = "created"  # stored, not yet sent
    SENT = "sent"  # request on the wire
    UNKNOWN = "unknown"  # timeout/5xx: outcome unknown until looked up
    NEW = "new"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    EXPIRED = "expired"


class TradeState(str, Enum):
    """Lifecycle of a position opened by one signal."""

    PENDING = "pending"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class SignalFate(str, Enum):
    """What became of a strategy signal."""

    TAKEN = "taken"
    SKIPPED = "skipped"
    REJECTED = "rejected"
    DENIED = "denied"
    EXPIRED = "expired"
    PENDING_APPROVAL = "pending_approval"


class ApprovalStatus(str, Enum):
    """State of a trade approval request in approval mode."""

    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    REFUSED = "refused"  # approved, but the price moved too far by decision time


class AlertStatus(str, Enum):
    """Delivery state of one outbox row."""

    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"  # gave up after the configured attempts


class Signal(Model):
    """A strategy signal with the indicator values that produced it and its fate."""

    id = fields.IntField(primary_key=True)
    symbol = fields.CharField(max_length=32, db_index=True)
    strategy = fields.CharField(max_length=64)
    side = fields.CharField(max_length=8)
    candle_time_ms = fields.BigIntField()
    entry = _decimal()
    stop = _decimal()
    target = _decimal()
    inputs: Any = fields.JSONField(default=dict)
    fate = fields.CharEnumField(SignalFate, max_length=24)
    reason = fields.CharField(max_length=255, default="")
    mode = fields.CharField(max_length=8, default="paper")
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "signals"
        unique_together = (("symbol", "strategy", "candle_time_ms", "mode"),)


class Trade(Model):
    """A position opened by one signal, from entry to exit (partials in TradeExit)."""

    id = fields.IntField(primary_key=True)
    symbol = fields.CharField(max_length=32, db_index=True)
    strategy = fields.CharField(max_length=64)
    side = fields.CharField(max_length=8)  # LONG / SHORT (the position side)
    state = fields.CharEnumField(TradeState, max_length=16, default=TradeState.PENDING, db_index=True)
    mode = fields.CharField(max_length=8, default="paper")
    signal: fields.ForeignKeyNullableRelation[Signal] = fields.ForeignKeyField(
        "models.Signal", related_name="trades", null=True, on_delete=fields.SET_NULL
    )
    entry_price = _decimal(null=True)
    initial_qty = _decimal()
    qty = _decimal()  # still open
    initial_stop = _decimal()
    stop = _decimal()
    target = _decimal()
    risk_per_unit = _decimal()  # 1R in price units
    opened_at = fields.DatetimeField(null=True)
    closed_at = fields.DatetimeField(null=True)
    exit_price = _decimal(null=True)  # volume-weighted over all exits
    exit_reason = fields.CharField(max_length=32, default="")
    realized_pnl = _decimal(default=0)
    fees = _decimal(default=0)
    funding = _decimal(default=0)
    r_multiple = _decimal(null=True)
    management: Any = fields.JSONField(default=dict)  # trade-management state (partials done, trailing step)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "trades"


class TradeExit(Model):
    """One exit fill of a trade: a partial, the target, the stop or a manual close."""

    id = fields.IntField(primary_key=True)
    trade: fields.ForeignKeyRelation[Trade] = fields.ForeignKeyField("models.Trade", related_name="exits")
    kind = fields.CharField(max_length=32)  # partial_2r, target, stop, trailing_stop, manual, emergency
    qty = _decimal()
    price = _decimal()
    pnl = _decimal()
    fee = _decimal(default=0)
    time_ms = fields.BigIntField()

    class Meta:
        table = "trade_exits"


class Order(Model):
    """An order, stored with its client order id and intent *before* it is sent."""

    id = fields.IntField(primary_key=True)
    client_order_id = fields.CharField(max_length=40, unique=True)
    exchange_order_id = fields.CharField(max_length=32, null=True, db_index=True)
    trade: fields.ForeignKeyNullableRelation[Trade] = fields.ForeignKeyField(
        "models.Trade", related_name="orders", null=True, on_delete=fields.SET_NULL
    )
    mode = fields.CharField(max_length=8, default="paper")
    symbol = fields.CharField(max_length=32, db_index=True)
    intent = fields.CharEnumField(OrderIntent, max_length=24)
    side = fields.CharField(max_length=8)  # BUY / SELL
    position_side = fields.CharField(max_length=8)  # LONG / SHORT / BOTH
    order_type = fields.CharField(max_length=32)
    quantity = _decimal()
    price = _decimal(null=True)
    stop_price = _decimal(null=True)
    reduce_only = fields.BooleanField(default=False)
    status = fields.CharEnumField(OrderStatus, max_length=24, default=OrderStatus.CREATED, db_index=True)
    filled_qty = _decimal(default=0)
    avg_price = _decimal(null=True)
    error = fields.CharField(max_length=255, default="")
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "orders"


class OrderEvent(Model):
    """Every status change of an order, with where we learned it (stream, poll, lookup)."""

    id = fields.IntField(primary_key=True)
    order: fields.ForeignKeyRelation[Order] = fields.ForeignKeyField("models.Order", related_name="events")
    status = fields.CharEnumField(OrderStatus, max_length=24)
    source = fields.CharField(max_length=16)  # placement, stream, poll, lookup, reconcile
    detail: Any = fields.JSONField(default=dict)
    at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "order_events"


class Fill(Model):
    """One execution of an order (fill_key makes recording idempotent)."""

    id = fields.IntField(primary_key=True)
    order: fields.ForeignKeyRelation[Order] = fields.ForeignKeyField("models.Order", related_name="fills")
    fill_key = fields.CharField(max_length=96, unique=True)
    price = _decimal()
    qty = _decimal()
    fee = _decimal(default=0)  # positive = paid
    fee_asset = fields.CharField(max_length=16, default="USDT")
    realized_pnl = _decimal(default=0)
    time_ms = fields.BigIntField()

    class Meta:
        table = "fills"


class Approval(Model):
    """A trade approval request and its single decision."""

    id = fields.IntField(primary_key=True)
    signal: fields.ForeignKeyRelation[Signal] = fields.ForeignKeyField("models.Signal", related_name="approvals")
    status = fields.CharEnumField(ApprovalStatus, max_length=16, default=ApprovalStatus.PENDING, db_index=True)
    requested_at = fields.DatetimeField(auto_now_add=True)
    expires_at = fields.DatetimeField()
    decided_at = fields.DatetimeField(null=True)
    decided_by = fields.CharField(max_length=64, default="")
    price_at_decision = _decimal(null=True)
    reason = fields.CharField(max_length=255, default="")
    messages: Any = fields.JSONField(default=list)  # [{transport, chat_id, message_id}] to edit on decision

    class Meta:
        table = "approvals"


class ProtectionLock(Model):
    """A protection that blocks entries (cooldown, loss streak, daily loss, drawdown, breaker...)."""

    id = fields.IntField(primary_key=True)
    kind = fields.CharField(max_length=32, db_index=True)
    symbol = fields.CharField(max_length=32, null=True)
    strategy = fields.CharField(max_length=64, null=True)
    reason = fields.CharField(max_length=255)
    until = fields.DatetimeField(null=True)  # None: until lifted by an admin
    active = fields.BooleanField(default=True, db_index=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    lifted_at = fields.DatetimeField(null=True)
    lifted_by = fields.CharField(max_length=64, default="")

    class Meta:
        table = "protection_locks"


class TradingStateRecord(Model):
    """The trading state history (RUNNING, PAUSED, HALTED, REDUCING), the newest row rules."""

    id = fields.IntField(primary_key=True)
    state = fields.CharField(max_length=16)
    reason = fields.CharField(max_length=255, default="")
    actor = fields.CharField(max_length=64, default="system")
    at = fields.DatetimeField(auto_now_add=True, db_index=True)

    class Meta:
        table = "trading_state"


class DailyMetric(Model):
    """One row per UTC day and mode: equity, PnL and trade counts."""

    id = fields.IntField(primary_key=True)
    day = fields.DateField()
    mode = fields.CharField(max_length=8, default="paper")
    start_equity = _decimal()
    end_equity = _decimal()
    peak_equity = _decimal()
    realized_pnl = _decimal(default=0)
    fees = _decimal(default=0)
    funding = _decimal(default=0)
    trades = fields.IntField(default=0)
    wins = fields.IntField(default=0)
    losses = fields.IntField(default=0)
    max_drawdown_pct = _decimal(default=0)

    class Meta:
        table = "daily_metrics"
        unique_together = (("day", "mode"),)


class EquitySnapshot(Model):
    """Periodic equity samples for drawdown tracking and charts."""

    id = fields.IntField(primary_key=True)
    mode = fields.CharField(max_length=8, default="paper")
    equity = _decimal()
    at = fields.DatetimeField(auto_now_add=True, db_index=True)

    class Meta:
        table = "equity_snapshots"


class AuditLog(Model):
    """Every chat command (who, what, outcome) and every risk rejection."""

    id = fields.IntField(primary_key=True)
    at = fields.DatetimeField(auto_now_add=True, db_index=True)
    kind = fields.CharField(max_length=32)  # command, unauthorized, risk_rejection, control
    actor = fields.CharField(max_length=128, default="")  # transport:user_id
    chat = fields.CharField(max_length=128, default="")
    action = fields.CharField(max_length=64)
    arguments = fields.CharField(max_length=512, default="")
    outcome = fields.CharField(max_length=32)
    detail: Any = fields.JSONField(default=dict)

    class Meta:
        table = "audit_log"


class AlertOutbox(Model):
    """An alert waiting for (or done with) delivery to one destination."""

    id = fields.IntField(primary_key=True)
    created_at = fields.DatetimeField(auto_now_add=True, db_index=True)
    event_type = fields.CharField(max_length=32)
    destination = fields.CharField(max_length=32)  # telegram, telegram_errors, discord, discord_webhook, ...
    silent = fields.BooleanField(default=False)
    text = fields.TextField()
    payload: Any = fields.JSONField(default=dict)  # structured body, buttons, image path
    dedup_key = fields.CharField(max_length=128, default="", db_index=True)
    status = fields.CharEnumField(AlertStatus, max_length=16, default=AlertStatus.PENDING, db_index=True)
    attempts = fields.IntField(default=0)
    next_attempt_at = fields.DatetimeField(null=True)
    sent_at = fields.DatetimeField(null=True)
    last_error = fields.CharField(max_length=255, default="")

    class Meta:
        table = "alert_outbox"


class KeyValue(Model):
    """Small persistent values (paper wallet, peak equity, last listen key time, ...)."""

    key = fields.CharField(max_length=128, primary_key=True)
    value: Any = fields.JSONField()
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "kv_store"
