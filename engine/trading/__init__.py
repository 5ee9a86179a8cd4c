"""Broker-independent trade logic: sizing, trade plans, trade management and the per-symbol engine."""

from engine.trading.engine import Broker, SymbolEngine
from engine.trading.manager import Action, ExitIntent, ExitKind, StopMove, TradeManager
from engine.trading.plan import PartialLevel, TradePlan, TrailLevel
from engine.trading.positions import ExitRecord, Fill, Position, PositionState
from engine.trading.sizing import ContractRules, SizeDecision, floor_to_step, size_position

__all__ = [
    "Action",
    "Broker",
    "ContractRules",
    "ExitIntent",
    "ExitKind",
    "ExitRecord",
    "Fill",
    "PartialLevel",
    "Position",
    "PositionState",
    "SizeDecision",
    "StopMove",
    "SymbolEngine",
    "TradeManager",
    "TradePlan",
    "TrailLevel",
    "floor_to_step",
    "size_position",
]
