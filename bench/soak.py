"""Accelerated 24-hour soak: three symbols, one market day replayed fast, faults throughout, kill -9 restarts.

The simulator runs in this process (its record is the referee); the bot is a subprocess
(``bench/soak_bot.py``: the live ``TradingRuntime`` on SQLite) that is killed with SIGKILL at
random moments and restarted on the same database. Faults: WebSocket drops every ``--ws-drop-s``
wall seconds, ``--5xx`` of REST answers 5xx, order placements executed but never answered
(``hang_next_orders``, armed at several moments), one forced rate-limit episode (100410), clock
skew for a stretch of the day.

At the end the invariants are checked against the simulator's own record and printed:

* no duplicate entry order for one signal (DB: one exchange entry per signal; simulator: one entry
  per symbol, side and minute);
* no position without an exchange stop for more than 2 s after its fill (2 s of wall time = 2 x
  speed of market time);
* DB orders, fills, open positions and wallet equal the exchange's (``tests.execution_sim``);
* no lost alert (an ``entry`` alert naming each opened trade, an ``exit`` alert naming each closed one);
* no unhandled exception (no traceback) in the bot's logs.

    .venv/bin/python bench/soak.py --short      # CI: ~2 minutes
    .venv/bin/python bench/soak.py --long       # release check: the day at a slower pace, more restarts

Exit code 0 when every invariant holds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from db.database import close_db, init_db  # noqa: E402
from db.models import Fill, Order, OrderIntent, Trade, TradeState  # noqa: E402
from engine.backtest.runner import run_backtest  # noqa: E402
from engine.market.candle import ONE_MINUTE_MS, Candle, read_candles_csv  # noqa: E402
from engine.simulator import MarketSpec, SimulatorServer  # noqa: E402
from strategies.params import StrategiesConfig  # noqa: E402
from engine.simulator.audit import stop_gaps  # noqa: E402
from tests.execution_sim import _STATUS, dec  # noqa: E402

MARKET = ROOT.parent / "shared" / "data" / "market"
FILES = {"XRP-USDT": "XRP_USDT-1m.csv.gz", "DOGE-USDT": "DOGE_USDT-1m.csv.gz", "EOS-USDT": "EOS_USDT-1m.csv.gz"}
DAY = 1440
API_KEY, API_SECRET = "soak-key", "soak-secret"
BALANCE = 10_000
FUNDING = "funding payments booked == exchange's"
ADVISORY: set[str] = set()  # every invariant is a hard check (funding while down is booked at recovery)
TRACEBACK_MARKERS = ("Traceback (most recent call last)", "Task exception was never retrieved", "Unhandled exception")


@dataclass
class SoakResult:
    """Figures and invariant outcomes of one soak."""

    invariants: dict[str, tuple[bool, str]] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(ok for name, (ok, _) in self.invariants.items() if name not in ADVISORY)


def pick_day(candles: dict[str, list[Candle]]) -> int:
    """Open time of the market day (after a day of history) with the most signals over the three symbols."""
    counts: dict[int, int] = {}
    first = max(c[0].open_time_ms for c in candles.values())
    last = min(c[-1].open_time_ms for c in candles.values())
    for symbol, series in candles.items():
        result = run_backtest(series, symbol, StrategiesConfig(), record_equity=False)
        for record in result.signals:
            t = record.signal.time_ms
            day = first + ((t - first) // (DAY * ONE_MINUTE_MS)) * DAY * ONE_MINUTE_MS
            if day >= first + DAY * ONE_MINUTE_MS and day + (DAY + 5) * ONE_MINUTE_MS <= last:
                counts[day] = counts.get(day, 0) + 1
    return max(counts, key=lambda d: (counts[d], -d))


def rss_kb(pid: int) -> int:
    """Resident set size of a process, in KiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class BotProc:
    """The soak bot subprocess (stderr kept per start)."""

    def __init__(self, tmp: Path, sim: SimulatorServer, symbols: list[str]) -> None:
        self.tmp = tmp
        self.cmd = [sys.executable, str(ROOT / "bench" / "soak_bot.py"), "--rest", sim.rest_url, "--ws", sim.ws_url,
                    "--db", f"sqlite://{tmp / 'bot.db'}", "--symbols", ",".join(symbols), "--alerts", str(tmp / "alerts.jsonl"),
                    "--api-key", API_KEY, "--api-secret", API_SECRET]
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    async def start(self, timeout_s: float = 60.0) -> None:
        self.starts += 1
        self.stdout = (self.tmp / f"bot{self.starts}.stdout").open("wb")
        self.stderr = (self.tmp / f"bot{self.starts}.stderr").open("wb")
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, stdout=self.stdout, stderr=self.stderr)
        deadline = time.monotonic() + timeout_s
        out = self.tmp / f"bot{self.starts}.stdout"
        while b"SOAK BOT READY" not in out.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"bot did not start: {(self.tmp / f'bot{self.starts}.stderr').read_text()[-2000:]}")
            await asyncio.sleep(0.05)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    async def terminate(self, timeout_s: float = 30.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait()
                return -9
            await asyncio.sleep(0.05)
        return self.proc.returncode

    def logs(self) -> str:
        return "".join((self.tmp / f"bot{i}.stderr").read_text(errors="replace") for i in range(1, self.starts + 1))


async def db_vs_exchange(state: dict[str, Any]) -> tuple[list[str], dict[str, int]]:
    """Differences between the bot's database and the simulator's record (orders, fills, positions, wallet)."""
    diffs: list[str] = []
    db_orders = {o.exchange_order_id: o for o in await Order.filter(mode="live") if o.exchange_order_id}
    sim_orders = {str(o["orderId"]): o for o in state["orders"]}
    for oid in sorted(set(sim_orders) - set(db_orders)):
        so = sim_orders[oid]
        diffs.append(f"exchange order {oid} ({so['type']} {so['side']} {so['positionSide']} {so['status']} "
                     f"cid={so.get('clientOrderId')}) not in the DB")
    for oid in sorted(set(db_orders) - set(sim_orders)):
        diffs.append(f"DB order {oid} ({db_orders[oid].client_order_id}) unknown to the exchange")
    for oid in sorted(set(db_orders) & set(sim_orders)):
        do, so = db_orders[oid], sim_orders[oid]
        if do.status.value != _STATUS[so["status"]] or do.filled_qty != dec(so["executedQty"]):
            diffs.append(f"order {oid} ({do.intent.value}): DB {do.status.value} {do.filled_qty}, exchange {so['status']} {so['executedQty']}")
    for o in await Order.filter(mode="live", exchange_order_id=None):
        if o.status.value != "rejected":
            diffs.append(f"DB order {o.client_order_id} ({o.intent.value}) never acknowledged but {o.status.value}")
    db_fills = sorted((f.order.exchange_order_id, f.price, f.qty, f.fee, f.realized_pnl) for f in await Fill.all().prefetch_related("order"))
    sim_fills = sorted((str(f["orderId"]), dec(f["price"]), dec(f["qty"]), -dec(f["commission"]), dec(f["realizedPnl"])) for f in state["fills"])
    if db_fills != sim_fills:
        missing = [f for f in sim_fills if f not in db_fills]
        extra = [f for f in db_fills if f not in sim_fills]
        diffs.append(f"fills: {len(missing)} on the exchange not in the DB {missing[:3]}, {len(extra)} in the DB only {extra[:3]}")
    db_positions: dict[tuple[str, str], Decimal] = {}
    for trade in await Trade.filter(mode="live", state__not=TradeState.CLOSED):
        db_positions[(trade.symbol, trade.side)] = db_positions.get((trade.symbol, trade.side), Decimal(0)) + trade.qty
    sim_positions = {(p["symbol"], p["positionSide"]): dec(p["positionAmt"]) for p in state["positions"] if dec(p["positionAmt"]) != 0}
    if {k: v for k, v in db_positions.items() if v} != sim_positions:
        diffs.append(f"positions: DB {db_positions}, exchange {sim_positions}")
    trades = await Trade.filter(mode="live")
    realized = sum((f[4] for f in db_fills), Decimal(0))
    fees = sum((f[3] for f in db_fills), Decimal(0))
    exchange_funding = sum((dec(i["income"]) for i in state["income"] if i["incomeType"] == "FUNDING_FEE"), Decimal(0))
    # trading cash flows (fills, fees) must explain the wallet exactly once the exchange's funding is set aside
    if Decimal(BALANCE) + realized - fees + exchange_funding != dec(state["account"]["wallet"]):
        diffs.append(f"wallet: DB fills {Decimal(BALANCE) + realized - fees} + exchange funding {exchange_funding} "
                     f"!= exchange {state['account']['wallet']}")
    return diffs, {"orders": len(sim_orders), "fills": len(sim_fills), "trades": len(trades)}


async def check_invariants(state: dict[str, Any], db_url: str, alerts_path: Path, logs: str, speed: float) -> SoakResult:
    """Every invariant against the simulator's record and the bot's database."""
    result = SoakResult()
    inv = result.invariants
    await init_db(db_url)
    try:
        entries = await Order.filter(mode="live", intent=OrderIntent.ENTRY).prefetch_related("trade")
        per_signal: dict[Any, int] = {}
        for order in entries:
            if order.exchange_order_id and order.trade is not None:
                key = order.trade.signal_id or ("trade", order.trade.id)
                per_signal[key] = per_signal.get(key, 0) + 1
        db_dupes = {k: n for k, n in per_signal.items() if n > 1}
        per_minute: dict[tuple[str, str, int], int] = {}
        for o in state["orders"]:
            if str(o.get("clientOrderId") or "").startswith("en"):
                key = (o["symbol"], o["positionSide"], o["time"] // ONE_MINUTE_MS)
                per_minute[key] = per_minute.get(key, 0) + 1
        sim_dupes = {k: n for k, n in per_minute.items() if n > 1}
        inv["no duplicate order for one signal"] = (
            not db_dupes and not sim_dupes, f"{len(per_signal)} signals with an entry; duplicates db={db_dupes} sim={sim_dupes}")

        tolerance = int(2_000 * speed)
        spans, gaps = stop_gaps(state, tolerance)
        inv["exchange stop within 2 s of every fill"] = (not gaps, f"{spans} position spans; gaps: {gaps[:5]}")

        diffs, counts = await db_vs_exchange(state)
        inv["DB orders/fills/positions/wallet == exchange"] = (not diffs, f"{counts}" + (f"; differences: {diffs[:6]}" if diffs else ""))
        funding_db = sum((t.funding for t in await Trade.filter(mode="live")), Decimal(0))
        funding_ex = sum((dec(i["income"]) for i in state["income"] if i["incomeType"] == "FUNDING_FEE"), Decimal(0))
        inv[FUNDING] = (funding_db == funding_ex, f"DB {funding_db.normalize()} vs exchange {funding_ex.normalize()}" + (
            "" if funding_db == funding_ex else " (payments that fall while the bot is down are not booked: known gap)"))

        alerts = [json.loads(line) for line in alerts_path.read_text().splitlines()] if alerts_path.exists() else []
        kinds: dict[str, int] = {}
        alerted: dict[str, set[str]] = {"entry": set(), "exit": set()}
        for a in alerts:
            kinds[a["type"]] = kinds.get(a["type"], 0) + 1
            if a["type"] in alerted and a["payload"].get("trade_id") is not None:
                alerted[a["type"]].add(str(a["payload"]["trade_id"]))
        trades = await Trade.filter(mode="live").prefetch_related("signal")

        def key(t: Trade) -> str:  # the broker names a trade <symbol>:<strategy>:<signal candle open time>
            return f"{t.symbol}:{t.strategy}:{t.signal.candle_time_ms}" if t.signal is not None else f"db#{t.id}"

        opened_ids = {key(t) for t in trades if t.opened_at is not None}
        closed_ids = {key(t) for t in trades if t.state.value == "closed" and t.opened_at is not None}
        opened, closed = len(opened_ids), len(closed_ids)
        lost_entry, lost_exit = sorted(opened_ids - alerted["entry"]), sorted(closed_ids - alerted["exit"])
        inv["no lost alert"] = (not lost_entry and not lost_exit,
                                f"trades opened {opened}, closed {closed}; alerts {kinds}; missing entry alert for trades "
                                f"{lost_entry}, exit alert for trades {lost_exit}")
        result.figures.update({"trades": len(trades), "opened": opened, "closed": closed, "alerts": kinds})
    finally:
        await close_db()
    bad = [m for m in TRACEBACK_MARKERS if m in logs]
    first = logs[logs.find(bad[0]) - 300: logs.find(bad[0]) + 1200] if bad else ""
    inv["no unhandled exception in the logs"] = (not bad, f"markers: {bad} {first}")
    return result


async def run_soak(*, seconds: float, kills: int, seed: int = 7, ws_drop_s: float = 10.0, rest_5xx: float = 0.02,
                   hangs: int = 2, faults: bool = True, tmp: Path | None = None, verbose: bool = True) -> SoakResult:
    """Replay one market day of three symbols in about ``seconds`` wall seconds with faults and ``kills`` kill -9 restarts."""
    rng = random.Random(seed)
    say = print if verbose else (lambda *a, **k: None)
    candles = {s: read_candles_csv(MARKET / f) for s, f in FILES.items()}
    day = pick_day(candles)
    end = day + DAY * ONE_MINUTE_MS
    specs = [MarketSpec(s, [c for c in series if day - DAY * ONE_MINUTE_MS <= c.open_time_ms < end + 3 * ONE_MINUTE_MS])
             for s, series in candles.items()]
    speed = DAY * 60.0 / seconds
    sim = SimulatorServer(specs, api_key=API_KEY, api_secret=API_SECRET, balance=BALANCE, speed=speed, paused=True, start_ms=day,
                          rate_limit_scale=0)
    await sim.start()
    owned_tmp = tempfile.TemporaryDirectory() if tmp is None else None
    work = Path(owned_tmp.name) if owned_tmp else tmp
    assert work is not None
    bot = BotProc(work, sim, list(FILES))
    result = SoakResult()
    try:
        await bot.start()
        assert bot.proc is not None
        await asyncio.sleep(1.0)
        rss_warm = rss_kb(bot.proc.pid)
        kill_at = sorted(rng.uniform(0.1, 0.9) for _ in range(kills))
        hang_at = sorted(rng.uniform(0.05, 0.95) for _ in range(hangs if faults else 0))
        events = [(f, "kill") for f in kill_at] + [(f, "hang") for f in hang_at]
        if faults:
            events += [(0.5, "rate_limit"), (0.4, "skew_on"), (0.6, "skew_off")]
            sim.faults.ws_drop_every_s = ws_drop_s
            sim.faults.rest_5xx_fraction = rest_5xx
        events.sort()
        say(f"soak: day starting {time.strftime('%Y-%m-%d', time.gmtime(day / 1000))}, 3 symbols x {DAY} candles at {speed:.0f}x "
            f"(~{seconds:.0f} s), kills at {[round(k, 2) for k in kill_at]}, faults {'on' if faults else 'off'}")
        started = time.monotonic()
        sim.resume()
        while sim.server_time_ms() < end:
            progress = (sim.server_time_ms() - day) / (end - day)
            while events and events[0][0] <= progress:
                _, what = events.pop(0)
                if what == "kill":
                    bot.kill9()
                    say(f"  {progress:5.1%} kill -9 (start #{bot.starts}); restarting")
                    await bot.start()
                    await asyncio.sleep(1.0)
                    rss_warm = rss_kb(bot.proc.pid)  # memory figures are of the process that ran last
                elif what == "hang":
                    sim.faults.hang_next_orders += 1
                elif what == "rate_limit":
                    sim.faults.force_rate_limit_s = 3.0
                elif what == "skew_on":
                    sim.faults.clock_skew_ms = 1_500
                elif what == "skew_off":
                    sim.faults.clock_skew_ms = 0
            await asyncio.sleep(0.1)
        sim.faults.ws_drop_every_s = 0.0
        sim.faults.rest_5xx_fraction = 0.0
        sim.faults.hang_next_orders = 0
        sim.pause()
        await asyncio.sleep(5.0)  # the bot settles: tracker polls resolve hung placements, last fills booked
        rss_end = rss_kb(bot.proc.pid)
        wall = time.monotonic() - started
        code = await bot.terminate()
        state = sim.state()
        if tmp is not None:  # kept for a post-mortem
            (work / "exchange_state.json").write_text(json.dumps(state, default=str))
        result = await check_invariants(state, f"sqlite://{work / 'bot.db'}", work / "alerts.jsonl", bot.logs(), speed)
        result.figures.update({
            "market_minutes_per_symbol": DAY, "symbols": list(FILES), "speed": round(speed), "wall_seconds": round(wall, 1),
            "kills": kills, "bot_starts": bot.starts, "exit_code": code, "exchange_orders": len(state["orders"]),
            "exchange_fills": len(state["fills"]), "rss_after_warmup_mb": round(rss_warm / 1024, 1),
            "rss_after_soak_mb": round(rss_end / 1024, 1), "rss_growth_mb": round((rss_end - rss_warm) / 1024, 1),
            "ws_drops": state.get("ws", {}).get("drops"), "hangs_armed": len(hang_at), "rate_limit_episodes": 1 if faults else 0,
            "placements_with_unknown_outcome": bot.logs().count("has an unknown outcome"),
        })
    finally:
        if bot.proc is not None and bot.proc.poll() is None:
            bot.proc.kill()
            bot.proc.wait()
        await sim.stop()
        if owned_tmp is not None:
            owned_tmp.cleanup()
    return result


def print_result(result: SoakResult) -> None:
    """The invariants, one line each, and the figures."""
    for name, (ok, detail) in result.invariants.items():
        verdict = "PASS" if ok else ("WARN" if name in ADVISORY else "FAIL")
        print(f"  [{verdict}] {name}: {detail}")
    figures = {k: v for k, v in result.figures.items() if k != "faults"}
    print(f"  figures: {json.dumps(figures, default=str)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--short", action="store_true", help="CI: the day in ~100 s, 3 restarts (default)")
    mode.add_argument("--long", action="store_true", help="release check: the day in ~20 min, 3 restarts")
    parser.add_argument("--seconds", type=float, default=None, help="wall seconds for the market day")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", type=Path, default=None, help="keep the bot's DB, logs and alerts in this directory")
    args = parser.parse_args()
    seconds = args.seconds or (1200.0 if args.long else 100.0)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    result = asyncio.run(run_soak(seconds=seconds, kills=3, seed=args.seed, tmp=args.keep))
    print_result(result)
    print("SOAK PASSED" if result.ok else "SOAK FAILED")
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
