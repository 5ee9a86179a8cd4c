"""Tick-to-order latency: simulator frame that closes a signal candle -> entry order at the simulator.

The real live path runs: ``TradingRuntime`` in ``live`` mode (MarketStream -> MarketFeed ->
SymbolEngine -> ExecutionBroker -> order row written to SQLite -> signed REST placement)
against the BingX simulator on 127.0.0.1, in the same process (one asyncio loop, one core).

How a sample is taken: the simulator is paused. The signal candles of the file are known from a
backtest of the same data (same engine). The replay jumps to the end of each signal candle, the
bot drains, then the replay advances ONE trade at a time. Each trade frame is timestamped when the
simulator publishes it (``perf_counter_ns``); the entry order is timestamped when the simulator's
matching engine receives it. The frame published last before the entry arrives is the one that
closed the candle (the kline builder closes a minute on the first trade >= 3 s into the next one).
Signals where the bot sends no entry (a position already open on that side, a risk veto) are
counted but not sampled.

    .venv/bin/python bench/bench_latency.py [--signals 40] [--runs 3]

Merged into ``bench/results.json`` under ``"latency"``. Target: p50 <= 2 ms, p99 <= 10 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_backtest import merge_results  # noqa: E402  (this script's folder is on sys.path)
from bot.config import AppConfig  # noqa: E402
from db.database import close_db, init_db  # noqa: E402
from engine.backtest.runner import run_backtest  # noqa: E402
from engine.execution.runtime import RuntimeOptions, TradingRuntime  # noqa: E402
from engine.market.candle import ONE_MINUTE_MS, Candle, read_candles_csv  # noqa: E402
from engine.simulator import MarketSpec, SimulatorServer  # noqa: E402
from strategies.params import StrategiesConfig  # noqa: E402

MARKET = ROOT.parent / "shared" / "data" / "market"
SYMBOL = "XRP-USDT"
API_KEY, API_SECRET = "bench-key", "bench-secret"
WARMUP = 1000
TARGET_P50_MS, TARGET_P99_MS = 2.0, 10.0


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, int(round(q * len(sorted_values) + 0.5)) - 1))
    return sorted_values[index]


class Probe:
    """Timestamps of the simulator's published frames and of the entry orders it receives."""

    def __init__(self, sim: SimulatorServer) -> None:
        self.last_publish_ns = 0
        self.entry_received_ns: list[int] = []
        publish = sim.hub.publish
        place = sim.engine.place

        def timed_publish(topic: str, payload: dict[str, Any]) -> None:
            self.last_publish_ns = time.perf_counter_ns()
            publish(topic, payload)

        def timed_place(params: dict[str, str], *args: Any, **kwargs: Any) -> Any:
            cid = params.get("clientOrderID") or params.get("clientOrderId") or ""
            if str(cid).lower().startswith("en") and not kwargs.get("test"):
                self.entry_received_ns.append(time.perf_counter_ns())
            return place(params, *args, **kwargs)

        # instance attributes shadow the bound methods: the hub and the REST layer look them up per call
        sim.hub.publish = timed_publish  # type: ignore[method-assign]
        sim.engine.place = timed_place  # type: ignore[method-assign]


async def _drain(sim: SimulatorServer, runtime: TradingRuntime) -> None:
    market = sim.markets[SYMBOL]
    sym = runtime.symbols[SYMBOL]
    deadline = time.monotonic() + 30
    while sym.last_trade_ms < market.last_trade_ms:
        if time.monotonic() > deadline:
            raise RuntimeError("bot did not receive the replayed trades")
        await asyncio.sleep(0.001)
    await runtime.wait_idle(timeout_s=30)


async def one_run(candles: list[Candle], signal_times: list[int], start_ms: int, tmp: Path) -> dict[str, Any]:
    """One replay over the signal candles; latencies in ms of every entry that was sent."""
    sim = SimulatorServer([MarketSpec(SYMBOL, candles)], api_key=API_KEY, api_secret=API_SECRET, paused=True, start_ms=start_ms,
                          warmup_minutes=WARMUP, rate_limit_scale=0)
    await sim.start()
    probe = Probe(sim)
    db = tmp / f"latency-{time.monotonic_ns()}.db"
    await init_db(f"sqlite://{db}")
    config = AppConfig.model_validate({
        "mode": "live", "symbols": [SYMBOL],
        "exchange": {"rest_url": sim.rest_url, "ws_url": sim.ws_url, "api_key": API_KEY, "api_secret": API_SECRET, "request_timeout_s": 5.0},
        "database": {"url": f"sqlite://{db}"},
    })
    options = RuntimeOptions(clock_interval_s=3600.0, warmup_candles=WARMUP, fast_poll_s=1.0, slow_poll_s=5.0, fill_grace_s=1.0,
                             exit_grace_s=1.0, settle_timeout_s=10.0)
    runtime = TradingRuntime(config, clock_ms=sim.server_time_ms, options=options)
    samples: list[float] = []
    skipped = 0
    try:
        await runtime.start()
        for signal_ms in signal_times:
            if signal_ms + ONE_MINUTE_MS <= sim.server_time_ms():
                skipped += 1
                continue
            await sim.advance(to_ms=signal_ms + ONE_MINUTE_MS - 1)  # the whole signal candle, final kline included
            await _drain(sim, runtime)
            before = len(probe.entry_received_ns)
            for _ in range(30):  # trades of the next minute, one frame at a time
                if await sim.advance(steps=1) == 0:
                    break
                sent_ns = probe.last_publish_ns
                await _drain(sim, runtime)
                if len(probe.entry_received_ns) > before:
                    samples.append((probe.entry_received_ns[before] - sent_ns) / 1e6)
                    break
                if sim.server_time_ms() >= signal_ms + 2 * ONE_MINUTE_MS:
                    break
            else:
                skipped += 1
                continue
            if len(probe.entry_received_ns) == before:
                skipped += 1
    finally:
        await runtime.stop()
        await sim.stop()
        await close_db()
    return {"samples_ms": samples, "signals": len(signal_times), "no_entry": skipped}


def signal_candles(candles: list[Candle], first_index: int, count: int) -> list[int]:
    """Open times of the first ``count`` signal candles at or after ``first_index`` (backtest of the same data)."""
    result = run_backtest(candles, SYMBOL, StrategiesConfig(), record_equity=False)
    start = candles[first_index].open_time_ms
    times = sorted({r.signal.time_ms for r in result.signals if r.signal.time_ms >= start + ONE_MINUTE_MS})
    return times[:count]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--signals", type=int, default=40, help="signal candles per run")
    parser.add_argument("--runs", type=int, default=3, help="runs (median of the per-run figures reported)")
    parser.add_argument("--file", default="XRP_USDT-1m.csv.gz")
    parser.add_argument("--db-dir", type=Path, default=None, help="where the SQLite file lives (default: a temp dir on disk)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    candles = read_candles_csv(MARKET / args.file)
    times = signal_candles(candles, WARMUP, args.signals)
    index = {c.open_time_ms: i for i, c in enumerate(candles)}
    last = index[times[-1]] + 3
    data = candles[: last + 1]
    start_ms = candles[WARMUP].open_time_ms
    print(f"{args.file}: {len(times)} signal candles over {last - WARMUP} replayed minutes; {args.runs} run(s)")
    per_run = []
    all_samples: list[float] = []
    with tempfile.TemporaryDirectory(dir=args.db_dir) as tmp:
        for run in range(args.runs):
            out = asyncio.run(one_run(data, times, start_ms, Path(tmp)))
            s = sorted(out["samples_ms"])
            all_samples += s
            fig = {"samples_ms": [round(x, 3) for x in out["samples_ms"]], "entries": len(s), "no_entry": out["no_entry"], "p50_ms": percentile(s, 0.50), "p99_ms": percentile(s, 0.99),
                   "max_ms": s[-1] if s else float("nan")}
            per_run.append(fig)
            print(f"run {run + 1}: {fig['entries']} entries ({fig['no_entry']} signals without an entry): "
                  f"p50 {fig['p50_ms']:.3f} ms  p99 {fig['p99_ms']:.3f} ms  max {fig['max_ms']:.3f} ms")
    all_samples.sort()

    def agg(key: str) -> dict[str, float]:
        values = [r[key] for r in per_run]
        return {"median": round(statistics.median(values), 3), "min": round(min(values), 3), "max": round(max(values), 3)}

    figures = {
        "file": args.file, "db_dir": str(args.db_dir or tempfile.gettempdir()), "runs": args.runs, "signals_per_run": len(times), "samples": len(all_samples),
        "p50_ms": agg("p50_ms"), "p99_ms": agg("p99_ms"), "max_ms": agg("max_ms"),
        "samples_ms_per_run": [r["samples_ms"] for r in per_run],
        "pooled": {"p50_ms": round(percentile(all_samples, 0.5), 3), "p99_ms": round(percentile(all_samples, 0.99), 3),
                   "max_ms": round(all_samples[-1], 3) if all_samples else None},
        "target": {"p50_ms": TARGET_P50_MS, "p99_ms": TARGET_P99_MS},
        "path": "simulator publish of the closing trade frame -> gzip WS -> MarketStream -> MarketFeed -> SymbolEngine -> "
                "ExecutionBroker (order row written to SQLite) -> signed REST POST -> simulator matching engine",
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    merge_results("latency", figures)
    ok = figures["p50_ms"]["median"] <= TARGET_P50_MS and figures["p99_ms"]["median"] <= TARGET_P99_MS
    print(f"tick-to-order: p50 {figures['p50_ms']['median']} ms, p99 {figures['p99_ms']['median']} ms, max {figures['max_ms']['median']} ms "
          f"(median of {args.runs} runs) {'OK' if ok else 'BELOW TARGET'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
