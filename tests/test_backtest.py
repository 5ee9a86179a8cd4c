"""The backtester: fill rules, the engine end to end, outputs, CLI, and streaming/backtest parity."""

from __future__ import annotations

import argparse
import bisect
import csv
import hashlib
import json
import logging
import math
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.backtest import contract as contract_module
from engine.backtest.broker import SimulatedBroker
from engine.backtest.cli import configure_parser, format_summary, parse_time_ms, run
from engine.backtest.contract import contract_from_candles
from engine.backtest.metrics import daily_returns, max_drawdown_pct, sharpe_sortino
from engine.backtest.outputs import SIGNAL_COLUMNS, TRADE_COLUMNS, build_metrics, signal_rows, trade_rows, write_outputs
from engine.backtest.runner import BacktestSession, run_backtest
from engine.market.candle import ONE_MINUTE_MS, Candle, read_candles_csv
from engine.market.events import KlineUpdate
from engine.market.feed import MarketFeed
from engine.trading.engine import SymbolEngine
from engine.trading.manager import ExitIntent, ExitKind
from engine.trading.positions import Fill, Position
from engine.trading.sizing import ContractRules
from strategies import Fate, Side, Signal, StrategiesConfig
from strategies.params import MultiTimeframeLongParams

from tests.strategy_scenarios import short_candles

MARKET = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "market"
M = ONE_MINUTE_MS
RULES = ContractRules(qty_step=Decimal("0.01"), min_qty=Decimal("0.01"), min_notional=Decimal("2"), price_tick=Decimal("0.0001"))
SHORT_ONLY = StrategiesConfig(multi_timeframe_long=MultiTimeframeLongParams(enabled=False))


def _signal(side: Side = Side.LONG) -> Signal:
    return Signal("X", "multi_timeframe_long", side, 0, 100.0, 97.0 if side is Side.LONG else 103.0, 112.0, 1.0, 1.0, 3.0, 3.0, 12.0)


# -- simulated broker -----------------------------------------------------------------------------


def test_broker_fill_rules_slippage_and_fees() -> None:
    broker = SimulatedBroker(10_000.0, slippage_bps=2, taker_fee=0.0005, maker_fee=0.0002)
    long = Position("t1", _signal(Side.LONG), Decimal("10"))
    entry = broker.submit_entry(long, 100.0, 0)
    assert entry.price == pytest.approx(100.02)  # close + 2 bps against a long
    assert entry.fee == pytest.approx(10 * 100.02 * 0.0005)  # taker
    long.entry = entry
    stop = broker.submit_exit(long, ExitIntent(ExitKind.STOP, Decimal("4"), 97.0, "stop", False), M)
    assert stop.price == pytest.approx(97.0 * (1 - 0.0002)) and stop.fee == pytest.approx(4 * stop.price * 0.0005)
    target = broker.submit_exit(long, ExitIntent(ExitKind.TARGET, Decimal("6"), 112.0, "target", True), 2 * M)
    assert target.price == 112.0 and target.fee == pytest.approx(6 * 112.0 * 0.0005)  # at the level, taker (live: TAKE_PROFIT_MARKET)
    expected_cash = 10_000 - entry.fee + (stop.price - entry.price) * 4 - stop.fee + (112.0 - entry.price) * 6 - target.fee
    assert broker.cash == pytest.approx(expected_cash)
    assert broker.open == {}

    short = Position("t2", _signal(Side.SHORT), Decimal("1"))
    fill = broker.submit_entry(short, 100.0, 0)
    assert fill.price == pytest.approx(99.98)  # a short sells 2 bps lower
    short.entry = fill
    partial = broker.submit_exit(short, ExitIntent(ExitKind.PARTIAL, Decimal("0.3"), 94.0, "partial_2R", False), M)
    assert partial.price == 94.0 and partial.fee == pytest.approx(0.3 * 94.0 * 0.0005)  # taker (live: MARKET)
    trailing = broker.submit_exit(short, ExitIntent(ExitKind.TRAILING_STOP, Decimal("0.7"), 97.0, "trailing_stop", True), M)
    assert trailing.price == pytest.approx(97.0 * 1.0002) and trailing.fee == pytest.approx(0.7 * trailing.price * 0.0005)


# -- engine end to end on a hand-built sequence -------------------------------------------------------


def _bar(t: int, low: float, high: float) -> Candle:
    mid = (low + high) / 2
    return Candle(t, mid, high, low, mid, 100.0)


def test_engine_short_trade_partial_trailing_step_and_trailing_stop() -> None:
    candles = short_candles()
    session = BacktestSession("TEST-USDT", SHORT_ONLY, RULES, balance=10_000.0)
    for candle in candles:
        session.on_candle(candle)
    [record] = session.signals
    assert record.fate is Fate.TAKEN
    signal = record.signal
    # sizing from the signal (close, stop before slippage): 10000 * 1.5% / (3 ATR), rounded down to 0.01
    qty = Decimal(repr(10_000 * 0.015 / (signal.stop - signal.entry))).quantize(Decimal("0.01"), rounding="ROUND_FLOOR")
    fill = signal.entry * (1 - 0.0002)
    r = 3 * signal.atr
    t = candles[-1].open_time_ms
    # 1: trades down to 2R (partial 30%), not to 3R;  2: reaches 3R (stop -> 1R from the next candle)
    # and bounces above 1R in the same candle (no exit yet);  3: back up through 1R: trailing stop
    session.on_candle(_bar(t + M, fill - 2.2 * r, fill + 0.5 * r))
    session.on_candle(_bar(t + 2 * M, fill - 3.1 * r, fill - 0.5 * r))
    session.on_candle(_bar(t + 3 * M, fill - 1.5 * r, fill - 0.2 * r))
    result = session.finish()
    rows = trade_rows(result.positions)
    assert [row[10] for row in rows] == ["partial_2R", "trailing_stop"]
    entry_fee = float(qty) * fill * 0.0005
    partial_qty = (qty * Decimal("0.3")).quantize(Decimal("0.01"), rounding="ROUND_FLOOR")
    rest = qty - partial_qty
    p_price = fill - 2 * r
    s_price = (fill - r) * (1 + 0.0002)
    p_fee = float(partial_qty) * p_price * 0.0005 + entry_fee * float(partial_qty / qty)
    s_fee = float(rest) * s_price * 0.0005 + entry_fee * float(rest / qty)
    p_pnl = (fill - p_price) * float(partial_qty) - p_fee
    s_pnl = (fill - s_price) * float(rest) - s_fee
    first, second = rows
    assert first[:5] == ("1", "trend_distance_short", "short", str(t), repr(fill))
    assert Decimal(first[5]) == partial_qty and Decimal(second[5]) == rest
    assert float(first[6]) == pytest.approx(fill + r) and float(first[7]) == pytest.approx(fill - 15 * signal.atr)
    assert (first[8], second[8]) == (str(t + M), str(t + 3 * M))
    assert float(first[9]) == pytest.approx(p_price) and float(second[9]) == pytest.approx(s_price)
    assert float(first[11]) == pytest.approx(p_pnl) and float(second[11]) == pytest.approx(s_pnl)
    assert float(first[12]) == pytest.approx(p_fee) and float(second[12]) == pytest.approx(s_fee)
    assert float(first[13]) + float(second[13]) == pytest.approx((p_pnl + s_pnl) / (float(qty) * r))
    assert result.equity.overall[-1] == pytest.approx(10_000 + p_pnl + s_pnl)
    metrics = build_metrics(result)["strategies"]["trend_distance_short"]
    assert metrics["trades"] == 1 and metrics["win_rate_pct"] == 100.0
    assert metrics["exit_reasons"] == {"partial_2R": 1, "trailing_stop": 1}


def test_engine_books_partials_and_target_filled_in_one_candle(caplog: pytest.LogCaptureFixture) -> None:
    candles = short_candles()
    session = BacktestSession("TEST-USDT", SHORT_ONLY, RULES, balance=10_000.0)
    for candle in candles:
        session.on_candle(candle)
    signal = session.signals[0].signal
    fill = signal.entry * (1 - 0.0002)
    t = candles[-1].open_time_ms
    with caplog.at_level(logging.WARNING):
        session.on_candle(_bar(t + M, fill - 5.5 * 3 * signal.atr, fill + 0.1))  # 2R, 4R and the 5R target at once
    assert not caplog.records
    assert session.engine.positions == {} and session.broker.open == {}
    result = session.finish()
    [position] = result.positions
    assert [e.label for e in position.exits] == ["partial_2R", "partial_4R", "target"]
    assert sum(e.qty for e in position.exits) == position.qty
    assert [e.qty for e in position.exits[:2]] == [
        (position.qty * Decimal(f)).quantize(Decimal("0.01"), rounding="ROUND_FLOOR") for f in ("0.3", "0.4")
    ]
    assert position.exits[-1].price == pytest.approx(fill - 15 * signal.atr)
    # every exit at its level with the taker fee (live: MARKET partials, a TAKE_PROFIT_MARKET target); each
    # trades.csv row carries its exit's fee plus its share of the entry fee
    r, qty = 3 * signal.atr, position.qty
    entry_fee = float(qty) * fill * 0.0005
    levels = [fill - 2 * r, fill - 4 * r, fill - 5 * r]
    rows = trade_rows(result.positions)
    for row, level in zip(rows, levels, strict=True):
        row_qty = Decimal(row[5])
        assert float(row[9]) == pytest.approx(level)
        assert float(row[12]) == pytest.approx(float(row_qty) * level * 0.0005 + entry_fee * float(row_qty / qty))
    exit_notional = sum(float(Decimal(row[5])) * level for row, level in zip(rows, levels))
    assert session.broker.fees_paid == pytest.approx(entry_fee + exit_notional * 0.0005)


def test_engine_closes_leftovers_at_the_end_and_rejects_unaffordable_entries() -> None:
    candles = short_candles()
    session = BacktestSession("TEST-USDT", SHORT_ONLY, RULES, balance=10_000.0)
    for candle in candles:
        session.on_candle(candle)
    result = session.finish()
    [position] = result.positions
    assert [e.label for e in position.exits] == ["close"]
    assert position.exits[0].price == pytest.approx(candles[-1].close * 1.0002)  # market close: slippage
    # 1.5% of 1.0 over a 2.2 stop distance: 0.0067 -> 0.00 at step 0.01; of 2.0: 0.01 units = 0.98 notional
    for balance, reason in ((1.0, "below min qty"), (2.0, "below min notional")):
        poor = BacktestSession("TEST-USDT", SHORT_ONLY, RULES, balance=balance)
        for candle in candles:
            poor.on_candle(candle)
        [record] = poor.signals
        assert record.fate is Fate.REJECTED and reason in record.reason
        assert poor.finish().positions == []


class PendingBroker:
    """A broker that answers every order 'pending', like a live exchange before its fill report."""

    def __init__(self) -> None:
        self.entries: list[Position] = []
        self.exits: list[ExitIntent] = []

    def equity(self, mark_price: float) -> float:
        return 10_000.0

    def submit_entry(self, position: Position, reference_price: float, time_ms: int) -> Fill | None:
        self.entries.append(position)
        return None

    def submit_exit(self, position: Position, intent: ExitIntent, time_ms: int) -> Fill | None:
        self.exits.append(intent)
        return None

    def move_stop(self, position, move, time_ms) -> None:  # type: ignore[no-untyped-def]
        pass


def test_pending_entry_counts_for_max_positions_and_fills_later() -> None:
    candles = short_candles()
    broker = PendingBroker()
    seen = []
    engine = SymbolEngine("TEST-USDT", SHORT_ONLY, RULES, broker, on_signal=seen.append)
    for candle in candles:
        engine.on_candle(candle)
    again = candles[-1].__class__(candles[-1].open_time_ms + M, *[getattr(candles[-1], f) for f in ("open", "high", "low", "close", "volume")])
    engine.on_candle(again)  # the same explosive candle one minute later: signal, but a position is pending
    assert [r.fate for r in seen] == [Fate.TAKEN, Fate.SKIPPED]
    assert seen[1].reason.startswith("max_positions")
    [position] = broker.entries
    engine.on_entry_filled(position.trade_id, Fill(100.0, position.qty, 0.0, again.open_time_ms))
    assert position.plan is not None and position.plan.entry == 100.0  # levels re-planned from the fill
    engine.on_candle(Candle(again.open_time_ms + M, 100.0, position.plan.stop + 1, 99.0, 100.0, 1.0))
    assert [i.kind for i in broker.exits] == [ExitKind.STOP]
    assert position.trade_id in engine.positions  # still open until the exchange reports the fill
    engine.on_exit_filled(position.trade_id, broker.exits[0], Fill(position.plan.stop, position.qty, 0.0, 0))
    assert engine.positions == {} and list(engine.closed) == [position]


def test_a_long_running_engine_keeps_only_its_most_recent_closed_positions() -> None:
    candles = short_candles()
    broker = PendingBroker()
    engine = SymbolEngine("TEST-USDT", SHORT_ONLY, RULES, broker, keep_closed=1)
    for candle in candles[:-1]:
        engine.on_candle(candle)
    explosive = candles[-1]
    for n in range(2):  # the same explosive candle twice, each trade stopped out before the next
        candle = explosive.__class__(explosive.open_time_ms + 2 * n * M, *[getattr(explosive, f) for f in ("open", "high", "low", "close", "volume")])
        engine.on_candle(candle)
        position = broker.entries[n]
        engine.on_entry_filled(position.trade_id, Fill(100.0, position.qty, 0.0, candle.open_time_ms))
        assert position.plan is not None
        engine.on_candle(Candle(candle.open_time_ms + M, 100.0, position.plan.stop + 1, 99.0, 100.0, 1.0))
        engine.on_exit_filled(position.trade_id, broker.exits[n], Fill(position.plan.stop, position.qty, 0.0, 0))
    assert len(broker.entries) == 2 and engine.positions == {}
    assert list(engine.closed) == [broker.entries[1]]  # the first one is in the database, not in memory


def test_stale_signals_are_rejected_when_a_clock_is_given() -> None:
    candles = short_candles()
    seen = []
    engine = SymbolEngine(
        "TEST-USDT", SHORT_ONLY, RULES, PendingBroker(), on_signal=seen.append,
        clock_ms=lambda: candles[-1].close_time_ms + 5 * M,
    )
    for candle in candles:
        engine.on_candle(candle)
    assert seen[0].fate is Fate.REJECTED and seen[0].reason.startswith("stale")


# -- metrics ----------------------------------------------------------------------------------------


def test_metric_helpers() -> None:
    assert max_drawdown_pct([100, 120, 90, 130, 117]) == pytest.approx(-25.0)
    assert max_drawdown_pct([100, 101, 102]) == 0.0
    day = 86_400_000
    times = [0, day // 2, day, day + 1, 2 * day]
    # last value of each UTC day: 105, 99, 99
    assert daily_returns(times, [100, 105, 110, 99, 99], 100.0) == pytest.approx([0.05, 99 / 105 - 1, 0.0])
    sharpe, sortino = sharpe_sortino([0.01, -0.01, 0.02])
    mean, std = 0.02 / 3, math.sqrt(((0.01 - 0.02 / 3) ** 2 + (-0.01 - 0.02 / 3) ** 2 + (0.02 - 0.02 / 3) ** 2) / 2)
    assert sharpe == pytest.approx(mean / std * math.sqrt(365))
    assert sortino == pytest.approx(mean / math.sqrt(0.0001 / 3) * math.sqrt(365))
    assert sharpe_sortino([0.01]) == (None, None)


# -- real files, outputs, CLI -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nano() -> list[Candle]:
    return read_candles_csv(MARKET / "NANO_USDT-1m.csv.gz")


def test_contract_from_data_decimals(nano: list[Candle]) -> None:
    rules = contract_from_candles(nano)
    assert rules.price_tick == Decimal("0.0001") and rules.qty_step == Decimal("0.01")
    assert rules.min_qty == rules.qty_step and rules.min_notional == Decimal(2)
    btc = contract_from_candles(read_candles_csv(MARKET / "BTC_USDT-1m.csv.gz"))
    assert btc.price_tick == Decimal("0.01") and btc.qty_step == Decimal("0.000001")


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.floats(allow_nan=False, allow_infinity=False),
                 st.builds(round, st.floats(-1e6, 1e6), st.integers(0, 14))))
def test_a_floats_decimals_are_read_from_its_text_as_decimal_reads_them(value: float) -> None:
    exponent = Decimal(repr(value)).normalize().as_tuple().exponent
    assert isinstance(exponent, int)
    assert contract_module._decimals(value) == min(max(0, -exponent), 12)


def test_backtest_outputs_are_complete_and_deterministic(nano: list[Candle], tmp_path: Path) -> None:
    first = run_backtest(nano, "NANO-USDT")
    second = run_backtest(nano, "NANO-USDT")
    metrics = write_outputs(first, tmp_path)
    assert build_metrics(second)["overall"]["trades_sha256"] == metrics["overall"]["trades_sha256"]
    with open(tmp_path / "signals.csv", newline="") as fh:
        signals = list(csv.reader(fh))
    with open(tmp_path / "trades.csv", newline="") as fh:
        trades = list(csv.reader(fh))
    assert tuple(signals[0]) == SIGNAL_COLUMNS and tuple(trades[0]) == TRADE_COLUMNS
    assert len(signals) - 1 == len(first.signals) > 0
    assert {row[6] for row in signals[1:]} <= {"taken", "skipped", "rejected"}
    taken = [row for row in signals[1:] if row[6] == "taken"]
    assert len({row[0] for row in trades[1:]}) == len(taken) == metrics["overall"]["trades"]
    # every position's rows share its entry; times are candle open times; partial rows precede the final one
    by_id: dict[str, list[list[str]]] = {}
    for row in trades[1:]:
        by_id.setdefault(row[0], []).append(row)
    for rows in by_id.values():
        assert len({(r[3], r[4]) for r in rows}) == 1
        assert all(r[10].startswith("partial_") for r in rows[:-1])
        assert int(rows[-1][8]) > int(rows[-1][3])
    assert hashlib.sha256((tmp_path / "trades.csv").read_bytes()).hexdigest() == metrics["overall"]["trades_sha256"]
    loaded = json.loads((tmp_path / "metrics.json").read_text())
    for block in (loaded["overall"], *loaded["strategies"].values()):
        for key in ("trades", "win_rate_pct", "profit_factor", "avg_win_loss_ratio", "expectancy", "total_return_pct",
                    "max_drawdown_pct", "sharpe_daily", "sortino_daily", "exposure_pct", "exit_reasons", "trades_sha256"):
            assert key in block
    overall_pnl = sum(float(row[11]) for row in trades[1:])
    assert loaded["overall"]["final_equity"] == pytest.approx(10_000 + overall_pnl)
    assert loaded["overall"]["total_return_pct"] == pytest.approx(overall_pnl / 100)


def test_cli_writes_every_file_and_respects_the_time_range(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = configure_parser(argparse.ArgumentParser())
    args = parser.parse_args(
        ["--data", str(MARKET / "ICP_USDT-1m.csv.gz"), "--symbol", "ICP-USDT", "--out", str(tmp_path / "icp"),
         "--from", "2021-05-20", "--to", "2021-06-01T00:00", "--balance", "5000"]
    )
    assert run(args) == 0
    out = tmp_path / "icp"
    for name in ("signals.csv", "trades.csv", "metrics.json", "report.html", "equity.png"):
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["first_time_ms"] >= parse_time_ms("2021-05-20") and metrics["last_time_ms"] < parse_time_ms("2021-06-01")
    assert metrics["initial_balance"] == 5000
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "<script" not in page  # self-contained, static
    assert (out / "equity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "multi_timeframe_long" in printed and "trend_distance_short" in printed


def test_cli_config_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = configure_parser(argparse.ArgumentParser())
    data = str(MARKET / "XRP_ETH-1m.csv.gz")
    config = tmp_path / "config.yaml"
    config.write_text("strategies:\n  trend_distance_short:\n    enabled: false\n  slippage_bps: 5\n")
    assert run(parser.parse_args(["--data", data, "--symbol", "XRP-ETH", "--out", str(tmp_path / "a"), "--config", str(config), "--no-report"])) == 0
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert list(metrics["strategies"]) == ["multi_timeframe_long"] and metrics["settings"]["slippage_bps"] == 5
    bad = tmp_path / "bad.yaml"
    bad.write_text("strategies:\n  multi_timeframe_long:\n    rsi_min: 500\n")
    assert run(parser.parse_args(["--data", data, "--symbol", "X", "--out", str(tmp_path / "b"), "--config", str(bad)])) == 2
    assert "rsi_min" in capsys.readouterr().err
    assert run(parser.parse_args(["--data", str(tmp_path / "missing.csv.gz"), "--symbol", "X", "--out", str(tmp_path / "c")])) == 2
    assert run(parser.parse_args(["--data", data, "--symbol", "X", "--out", str(tmp_path / "d"), "--from", "2030-01-01"])) == 2
    assert not (tmp_path / "b").exists() and not (tmp_path / "d").exists()
    with pytest.raises(SystemExit):
        parser.parse_args(["--data", data, "--symbol", "X", "--out", "o", "--from", "yesterday"])


@pytest.mark.parametrize("pair", ["XZC_BTC", "BTC_PERP", "XRP_ETH"])
def test_backtest_runs_to_completion_on_real_pairs(pair: str, tmp_path: Path) -> None:
    candles = read_candles_csv(MARKET / f"{pair}-1m.csv.gz")
    result = run_backtest(candles, pair)
    metrics = write_outputs(result, tmp_path)
    assert metrics["candles"] == len(candles) and metrics["data_quality"]["rejected"] == 0
    assert format_summary(metrics).count("\n") == len(result.strategies) + 2


# -- parity: the streaming live path equals the backtester --------------------------------------------


class FileSource:
    """CandleSource over a candle list (stands in for the REST client)."""

    def __init__(self, candles: list[Candle]) -> None:
        self.candles = candles
        self.times = [c.open_time_ms for c in candles]

    async def fetch_candles(self, symbol: str, start_ms: int, end_ms: int) -> list[Candle]:
        lo = bisect.bisect_left(self.times, start_ms)
        hi = bisect.bisect_left(self.times, end_ms)
        return list(reversed(self.candles[lo:hi]))  # newest first, like BingX


@pytest.mark.parametrize("pair", ["NANO_USDT", "XZC_BTC"])
async def test_streaming_engine_equals_backtest(pair: str) -> None:
    """Warm-up from REST, then kline pushes (several per minute, the bar final when the next minute
    starts), with some minutes lost on the stream and backfilled from REST: the same signals and
    trades as the backtester over the file."""
    candles = read_candles_csv(MARKET / f"{pair}-1m.csv.gz")
    expected = run_backtest(candles, pair)

    contract = contract_from_candles(candles)
    session = BacktestSession(pair, StrategiesConfig(), contract)
    source = FileSource(candles)
    warmup = 150  # no rule can be ready this early, so no signal is lost to warm-up
    # the warm-up window is in minutes; on gappy data it must span the first `warmup` candles
    minutes = (candles[warmup].open_time_ms - candles[0].open_time_ms) // M
    feed = MarketFeed(pair, session, source=source, warmup_candles=minutes)
    assert await feed.warm_up(candles[warmup].open_time_ms + 30_000) == warmup
    assert len(session.engine.signals.bank.m1.sma(50)._mean) == 50
    for i, candle in enumerate(candles[warmup:], start=warmup):
        if i % 487 == 0:
            continue  # lost on the stream: the feed must backfill it from REST before the next bar
        o = candle.open
        await feed.on_kline(KlineUpdate(pair, candle.open_time_ms, o, o, o, o, 0.0))
        await feed.on_kline(KlineUpdate(pair, candle.open_time_ms, o, candle.high, o, (o + candle.close) / 2, candle.volume / 2))
        await feed.on_kline(KlineUpdate(pair, candle.open_time_ms, o, candle.high, candle.low, candle.close, candle.volume))
    await feed.on_clock(candles[-1].open_time_ms + M + 10_000)
    streamed = session.finish()

    assert feed.backfilled >= (len(candles) - warmup) // 487 - 1
    assert streamed.candles == expected.candles - warmup
    assert signal_rows(streamed) == signal_rows(expected)
    assert trade_rows(streamed.positions) == trade_rows(expected.positions)
    assert len(expected.signals) > 0
