"""Pre-flight checks against the simulator: all green on a flat account, a conflicting position fails."""

from __future__ import annotations

from decimal import Decimal


from bot.config import load_config
from engine.exchange.bingx import OrderRequest, new_client_order_id
from engine.risk.preflight import run_preflight

from tests.risk_sim import (
    KEY,
    SECRET,
    SYM,
    client_for,
)


async def test_preflight_green_then_conflicting_position(db_url, sim) -> None:
    cfg = load_config(None, env={}, overrides={"mode": "live", "symbols": [SYM],
                                               "exchange": {"api_key": KEY, "api_secret": SECRET}})
    async with client_for(sim) as client:
        report = await run_preflight(cfg, client)
        # The simulator replays a past market, so its clock is far from ours: a true finding.
        failed = [c.name for c in report.checks if not c.ok]
        assert failed == ["clock offset"], report.text()
        names = {c.name for c in report.checks}
        assert {"config", "database", "exchange reachable", "clock offset", "API keys", "position mode",
                "balance", "conflicting positions"} <= names
        await client.place_order(OrderRequest(symbol=SYM, side="BUY", position_side="LONG", type="MARKET",
                                              quantity=Decimal(5), client_order_id=new_client_order_id("h")))
        report = await run_preflight(cfg, client)
    assert not report.ok
    assert [c.name for c in report.checks if not c.ok] == ["clock offset", "conflicting positions"]
    [conflict] = [c for c in report.checks if c.name == "conflicting positions"]
    assert not conflict.ok and "NANO-USDT LONG 5" in conflict.detail
    assert KEY not in report.text() and SECRET not in report.text()


async def test_preflight_flags_contradictory_config(db_url) -> None:
    cfg = load_config(None, env={}, overrides={"risk": {"max_leverage": 2}, "strategies": {"leverage": 3}})
    report = await run_preflight(cfg)
    assert not report.ok and "exceeds risk.max_leverage" in report.text()
