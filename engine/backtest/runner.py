"""Backtest runner: the same ``SymbolEngine`` as live trading, fed one candle at a time.

``BacktestSession`` is the streaming entry point (a ``CandleSink``: give it closed candles one by
one, directly or through :class:`engine.market.feed.MarketFeed`); ``run_backtest`` drives a session
over a candle list through the same ``CandleStream`` validation the live feed uses.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Sequence

from engine.backtest.broker import SimulatedBroker
from engine.backtest.contract import contract_from_candles
from engine.market.candle import Candle
from engine.market.stream import CandleStream, StreamStats
from engine.trading.engine import SymbolEngine
from engine.trading.positions import ExitRecord, Position
from engine.trading.sizing import ContractRules
from strategies.generator import SignalRecord
from strategies.params import StrategiesConfig

PROGRESS_CHUNK = 8192


@dataclass(slots=True)
class EquityCurve:
    """Mark-to-market equity at each candle close, overall and per strategy (balance + that strategy's PnL)."""

    times: list[int] = field(default_factory=list)
    overall: list[float] = field(default_factory=list)
    by_strategy: dict[str, list[float]] = field(default_factory=dict)
    exposure_candles: dict[str, int] = field(default_factory=dict)
    exposure_any: int = 0


@dataclass(slots=True)
class BacktestResult:
    """Everything a backtest produced, in memory; ``engine.backtest.outputs`` writes it out."""

    symbol: str
    config: StrategiesConfig
    contract: ContractRules
    initial_balance: float
    strategies: list[str]
    signals: list[SignalRecord]
    positions: list[Position]  # closed positions, in order of entry
    exits: list[ExitRecord]  # every exit fill, in time order
    equity: EquityCurve
    stream_stats: StreamStats | None
    candles: int
    first_time_ms: int | None
    last_time_ms: int | None
    engine_seconds: float = 0.0
    closes: list[float] = field(default_factory=list)


class BacktestSession:
    """A simulated-broker trading session for one symbol, fed closed candles one at a time."""

    def __init__(
        self,
        symbol: str,
        config: StrategiesConfig,
        contract: ContractRules,
        *,
        balance: float = 10_000.0,
        record_equity: bool = True,
    ) -> None:
        self.symbol = symbol
        self.config = config
        self.contract = contract
        self.balance = balance
        self.broker = SimulatedBroker(
            balance, slippage_bps=config.slippage_bps, taker_fee=config.taker_fee, maker_fee=config.maker_fee
        )
        self.signals: list[SignalRecord] = []
        self.exits: list[ExitRecord] = []
        self.engine = SymbolEngine(
            symbol, config, contract, self.broker, on_signal=self.signals.append, on_exit=self._on_exit
        )
        self.strategy_names = [s.name for s in self.engine.signals.strategies]
        self.record_equity = record_equity
        self.equity = EquityCurve(
            by_strategy={name: [] for name in self.strategy_names},
            exposure_candles={name: 0 for name in self.strategy_names},
        )
        self._realized = {name: 0.0 for name in self.strategy_names}
        self._closes: list[float] = []
        self.candles = 0
        self.first_time_ms: int | None = None
        self.last: Candle | None = None

    def on_warmup_candle(self, candle: Candle) -> None:
        """Indicators only (a live feed's warm-up)."""
        self.engine.on_warmup_candle(candle)

    def on_candle(self, candle: Candle) -> None:
        """One closed, validated 1m candle through the live engine, then bookkeeping for the report."""
        self.engine.on_candle(candle)
        self.candles += 1
        if self.first_time_ms is None:
            self.first_time_ms = candle.open_time_ms
        self.last = candle
        if self.record_equity:
            self._record(candle)

    def _record(self, candle: Candle) -> None:
        curve = self.equity
        curve.times.append(candle.open_time_ms)
        self._closes.append(candle.close)
        open_positions = self.broker.open
        balance = self.balance
        if not open_positions:
            curve.overall.append(self.broker.cash)
            for name, values in curve.by_strategy.items():
                values.append(balance + self._realized[name])
            return
        close = candle.close
        net = dict.fromkeys(self._realized, 0.0)
        for position in open_positions.values():
            manager = position.manager
            entry = position.entry
            if manager is not None and entry is not None:
                # cash already paid the whole entry fee; a strategy's curve books it as its exits do
                net[position.strategy] += manager.unrealized(close) - entry.fee * float(manager.remaining / entry.qty)
        curve.overall.append(self.broker.equity(close))
        curve.exposure_any += 1
        for name, values in curve.by_strategy.items():
            values.append(balance + self._realized[name] + net[name])
        for name in {position.strategy for position in open_positions.values()}:
            curve.exposure_candles[name] += 1

    def _on_exit(self, position: Position, record: ExitRecord) -> None:
        self.exits.append(record)
        self._realized[position.strategy] += record.pnl

    def finish(self, stream_stats: StreamStats | None = None, engine_seconds: float = 0.0) -> BacktestResult:
        """Close what is still open at the last close (``close`` exit) and return the result."""
        if self.last is not None and self.engine.positions:
            self.engine.close_all(self.last.close, self.last.open_time_ms)
            if self.record_equity and self.equity.overall:
                self.equity.overall[-1] = self.broker.cash
                for name, values in self.equity.by_strategy.items():
                    values[-1] = self.balance + self._realized[name]
        positions = sorted(self.engine.closed, key=lambda p: (p.signal.time_ms, p.strategy))
        return BacktestResult(
            symbol=self.symbol,
            config=self.config,
            contract=self.contract,
            initial_balance=self.balance,
            strategies=self.strategy_names,
            signals=self.signals,
            positions=positions,
            exits=self.exits,
            equity=self.equity,
            stream_stats=stream_stats,
            candles=self.candles,
            first_time_ms=self.first_time_ms,
            last_time_ms=self.last.open_time_ms if self.last else None,
            engine_seconds=engine_seconds,
            closes=self._closes,
        )


def run_backtest(
    candles: Sequence[Candle],
    symbol: str,
    config: StrategiesConfig | None = None,
    *,
    balance: float = 10_000.0,
    contract: ContractRules | None = None,
    progress: bool = False,
    record_equity: bool = True,
) -> BacktestResult:
    """Run the engine over ``candles`` (time-ordered 1m candles of one symbol)."""
    config = config or StrategiesConfig()
    contract = contract or contract_from_candles(candles)
    stream = CandleStream(symbol, log_gaps=False)  # data-file gaps are real outages; counted, not logged
    session = BacktestSession(symbol, config, contract, balance=balance, record_equity=record_equity)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(candles), unit="candle", unit_scale=True, file=sys.stderr, disable=None, desc=symbol)
    accept = stream.accept
    feed = session.on_candle
    started = time.perf_counter()
    for start in range(0, len(candles), PROGRESS_CHUNK):
        for candle in candles[start : start + PROGRESS_CHUNK]:
            if accept(candle):
                feed(candle)
        if bar is not None:
            bar.update(min(PROGRESS_CHUNK, len(candles) - start))
    elapsed = time.perf_counter() - started
    if bar is not None:
        bar.close()
    return session.finish(stream.stats, elapsed)
