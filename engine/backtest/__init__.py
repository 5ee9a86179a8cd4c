"""Backtesting: the live engine code fed from candle files, with a simulated broker."""

from engine.backtest.broker import SimulatedBroker
from engine.backtest.contract import contract_from_candles
from engine.backtest.runner import BacktestResult, BacktestSession, run_backtest

__all__ = ["BacktestResult", "BacktestSession", "SimulatedBroker", "contract_from_candles", "run_backtest"]
