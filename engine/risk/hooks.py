"""Adapters from the risk manager to the execution layer's hook types (duck-typed, imported lazily)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from .gate import AccountSnapshot, OrderProposal
from .manager import RiskManager

AccountFn = Callable[[], Awaitable[AccountSnapshot]]
MinimumsFn = Callable[[str], Awaitable[tuple[Decimal, Decimal]]]  # symbol -> (min_qty, min_notional)


def _d(value: Any) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(repr(value) if isinstance(value, float) else str(value))


def pre_trade_gate(risk: RiskManager, *, account: AccountFn | None = None, minimums: MinimumsFn | None = None,
                   leverage: Decimal | None = None) -> Callable[[Any], Awaitable[Any]]:
    """A ``engine.execution.broker.PreTradeGate``: ``TradeRequest -> GateDecision`` through :meth:`RiskManager.check_order`.

    ``account`` gives equity and available margin (default: the request's equity for both);
    ``minimums`` gives the contract minimums; ``leverage`` defaults to ``strategies.leverage``.
    """
    lev = leverage if leverage is not None else _d(risk.config.strategies.leverage)

    async def gate(req: Any) -> Any:
        from engine.execution.broker import GateDecision as ExecutionDecision

        snapshot = await account() if account is not None else AccountSnapshot(_d(req.equity), _d(req.equity))
        min_qty, min_notional = await minimums(req.symbol) if minimums is not None else (Decimal(0), Decimal(0))
        decision = await risk.check_order(OrderProposal(
            symbol=req.symbol, strategy=req.strategy, side=req.side, qty=_d(req.qty), entry_price=_d(req.entry),
            stop_price=_d(req.stop), leverage=lev, min_qty=min_qty, min_notional=min_notional), snapshot)
        return ExecutionDecision(decision.allowed, "" if decision.allowed else f"{decision.rule}: {decision.reason}")

    return gate
