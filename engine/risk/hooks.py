"""The entry gate: the risk manager as the execution broker's ``pre_trade_gate`` (duck-typed, imported lazily)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from .gate import AccountSnapshot, OrderProposal, dec

log = logging.getLogger(__name__)

# Hooks of the entry gate (all optional; without them the gate falls back to the request's own figures):
ReferencePriceFn = Callable[[str], "float | Decimal | None"]  # symbol -> last trusted market price
AvailableMarginFn = Callable[[], Awaitable[Decimal]]  # the account's available margin now (raises when unreadable)
MinimumsFn = Callable[[str], "tuple[Decimal, Decimal]"]  # symbol -> (min_qty, min_notional) of the contract
ExposuresFn = Callable[[], "list[Any]"]  # the open trades as risk exposures (default: read from the database)


def entry_gate(risk: Any, *, reference_price: ReferencePriceFn | None = None, available_margin: AvailableMarginFn | None = None,
               minimums: MinimumsFn | None = None, exposures: ExposuresFn | None = None) -> Any:
    """The broker's ``pre_trade_gate`` over ``risk`` (an ``engine.risk.manager.RiskManager``).

    A first check is the full risk gate (``RiskManager.check_order``: an allowed entry counts toward
    the order-rate cap). The re-check of an entry a human approved (``request.recheck``) sees the
    state (read afresh), the protections and the gate rules again, since minutes may have passed, but
    does not count the order a second time (``check_order(..., recheck=True)``); a refusal is audited
    and alerted like a first one.

    Both see the same proposal: the last trusted price of the symbol (``reference_price``: the
    absurd-price check compares the entry with it), the account's real available margin
    (``available_margin``; an unreadable account refuses the entry) and the contract minimums.
    """
    from engine.execution.broker import GateDecision as ExecutionDecision

    leverage = dec(risk.config.strategies.leverage)

    async def proposal_and_account(request: Any) -> tuple[Any, Any]:
        reference = reference_price(request.symbol) if reference_price is not None else None
        min_qty, min_notional = minimums(request.symbol) if minimums is not None else (Decimal(0), Decimal(0))
        proposal = OrderProposal(symbol=request.symbol, strategy=request.strategy, side=request.side, qty=dec(request.qty),
                                 entry_price=dec(request.entry), stop_price=dec(request.stop), leverage=leverage,
                                 min_qty=dec(min_qty), min_notional=dec(min_notional),
                                 reference_price=dec(reference) if reference else None)
        equity = dec(request.equity)
        margin = await available_margin() if available_margin is not None else equity
        return proposal, AccountSnapshot(equity, dec(margin))

    async def gate(request: Any) -> Any:
        try:
            proposal, account = await proposal_and_account(request)
        except Exception as exc:  # never open on an account we cannot read
            log.warning("entry gate could not read the account: %s: %s", type(exc).__name__, exc, extra={"symbol": request.symbol})
            return ExecutionDecision(False, f"account: available margin unreadable ({type(exc).__name__})")
        decision = await risk.check_order(proposal, account, exposures() if exposures is not None else None,
                                          recheck=getattr(request, "recheck", False))
        return ExecutionDecision(decision.allowed, "" if decision.allowed else f"{decision.rule}: {decision.reason}")

    return gate
