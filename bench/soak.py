"""Accelerated 24-hour soak of the full worker: three symbols, one market day replayed fast, faults, kill -9 restarts.

The simulator and a fake Telegram Bot API server run in this process on 127.0.0.1 (the
simulator's record is the referee); the bot is the real ``trading-bot run`` worker
(``python -m bot.cli run --config ...``: database, instance lock, pre-flight, start
reconciliation, risk gate, scheduler jobs, alert outbox, Telegram) as a subprocess, live mode
against the simulator, SQLite in the work directory. It is killed with SIGKILL at random moments
and started again on the same database (the instance lock is an ``fcntl`` lock, so a kill must not
leave it held: every restart must get as far as "trading started"). Faults: WebSocket drops every
``--ws-drop-s`` wall seconds, 2 % of REST answers 5xx, order placements executed but never
answered (``hang_next_orders``, armed at several moments), one forced rate-limit episode (100410
to every call for 3 s), clock skew for a stretch of the day.

The replay runs ``speed`` times faster than the wall clock, so the config the soak writes scales
the worker's wall-clock risk windows to the same market durations (loss cooldowns, the API-error
window, the order-rate cap, alert de-duplication; reconciliation at least every 2 s). Telegram
goes to a private chat (Telegram's 1 message/s per chat): after the day the soak waits until the
outbox holds nothing pending before it stops the bot with SIGTERM.

At the end the invariants are checked against the simulator's own record and printed:

* no duplicate entry order for one signal (DB: one exchange entry per signal; simulator: one entry
  per symbol, side and minute);
* no position without an exchange stop for more than 2 s after its fill (2 s of wall time = 2 x
  speed of market time);
* DB orders, fills, open positions and wallet equal the exchange's (``tests.execution_sim``), and
  the funding booked equals the exchange's;
* no lost alert: every trade opened has its "opened" alert, every trade closed its "closed by"
  alert, delivered to the fake Telegram server (matched on symbol, strategy, side and the entry
  price / realised PnL the message names); alerts wait in the DB outbox over a kill -9, so a
  delivery after the restart counts;
* every restart after a kill -9 got the instance lock and started trading;
* no unhandled exception (no traceback) in the worker's console output or its JSON log files.

    .venv/bin/python bench/soak.py --short      # CI: ~2 minutes
    .venv/bin/python bench/soak.py --long       # release check: the day at a slower pace

Exit code 0 when every invariant holds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from db.database import close_db, init_db  # noqa: E402
from db.models import Fill, Order, OrderIntent, Trade, TradeState  # noqa: E402
from engine.backtest.runner import run_backtest  # noqa: E402
from engine.market.candle import ONE_MINUTE_MS, Candle, read_candles_csv  # noqa: E402
from engine.simulator import MarketSpec, SimulatorServer  # noqa: E402
from engine.simulator.audit import stop_gaps  # noqa: E402
from strategies.params import StrategiesConfig  # noqa: E402
from tests.execution_sim import _STATUS, dec  # noqa: E402
from tests.fake_telegram import FakeTelegram  # noqa: E402
from tests.worker_harness import HEALTH_RE, bot_env  # noqa: E402

MARKET = ROOT.parent / "shared" / "data" / "market"
FILES = {"XRP-USDT": "XRP_USDT-1m.csv.gz", "DOGE-USDT": "DOGE_USDT-1m.csv.gz", "EOS-USDT": "EOS_USDT-1m.csv.gz"}
DAY = 1440
API_KEY, API_SECRET = "soak-key", "soak-secret"
BALANCE = 10_000
TG_TOKEN = "424242424:SoakFakeTelegramToken_abcdefghijklmnop"
ADMIN = 111
CHAT = ADMIN  # a private chat with the admin: Telegram allows 1 message/s there (20/min in a group)
FUNDING = "funding payments booked == exchange's"
ADVISORY: set[str] = set()  # every invariant is a hard check
TRACEBACK_MARKERS = ("Traceback (most recent call last)", "Task exception was never retrieved", "Unhandled exception")
READY = "trading started"
LOCK_REFUSED = "another instance is running"
TAG = re.compile(r"<[^>]+>")
OPENED_RE = re.compile(r"^\[LIVE\] (?P<symbol>\S+) (?P<strategy>\S+) (?P<side>LONG|SHORT) opened: \S+ @ (?P<price>[-\d.Ee+]+)")
CLOSED_RE = re.compile(r"^\[LIVE\] (?P<symbol>\S+) (?P<strategy>\S+) (?P<side>LONG|SHORT) closed by .*?: pnl (?P<pnl>-?[\d.]+) ")


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


def write_config(work: Path, sim: SimulatorServer, tg: FakeTelegram, speed: float) -> Path:
    """The worker's config: live against the simulator, SQLite and logs in ``work``, Telegram on the fake server.

    Wall-clock windows of the risk manager and the alert outbox are scaled by ``speed`` so that they
    span the same market time as in real trading (a 15 min loss cooldown is 15 market minutes).
    """
    config: dict[str, Any] = {
        "mode": "live",
        "symbols": list(FILES),
        "exchange": {"rest_url": sim.rest_url, "ws_url": sim.ws_url, "api_key": API_KEY, "api_secret": API_SECRET,
                     "request_timeout_s": 2},
        "database": {"url": f"sqlite://{work / 'bot.db'}"},
        "logging": {"file": str(work / "logs" / "bot.jsonl"), "level": "INFO"},
        "emergency": {"stop_file": str(work / "STOP")},
        "health": {"port": 0},
        "telegram": {"enabled": True, "token": TG_TOKEN, "api_url": tg.api_url, "chat_id": CHAT, "authorized_users": [],
                     "admin_users": [ADMIN]},
        "risk": {"cooldown_after_loss_min": 15.0 / speed, "consecutive_loss_pause_min": 240.0 / speed,
                 "api_error_window_min": 5.0 / speed, "max_orders_per_minute": 600},
        "reconciliation": {"interval_min": max(5.0 / speed, 2.0 / 60)},
        "alerts": {"dedup_window_s": 300.0 / speed},
    }
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class WorkerProc:
    """``python -m bot.cli run --config ...`` (the ``trading-bot run`` worker); console output kept per start."""

    def __init__(self, work: Path, config: Path) -> None:
        self.work = work
        self.cmd = [sys.executable, "-m", "bot.cli", "run", "--config", str(config)]
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.start_seconds: list[float] = []
        self.health_codes: list[int] = []
        self.lock_refusals = 0
        self._files: list[Any] = []

    def _path(self, i: int, stream: str) -> Path:
        return self.work / f"bot{i}.{stream}"

    async def start(self, timeout_s: float = 60.0) -> None:
        """Launch and wait for "trading started" (then one GET /health on the port it logged)."""
        self.starts += 1
        out, err = self._path(self.starts, "stdout").open("wb"), self._path(self.starts, "stderr").open("wb")
        self._files += [out, err]
        began = time.monotonic()
        self.proc = subprocess.Popen(self.cmd, cwd=self.work, env=bot_env(), stdout=out, stderr=err)
        log = self._path(self.starts, "stderr")
        while READY not in (text := log.read_text(errors="replace")):
            if LOCK_REFUSED in text:
                self.lock_refusals += 1
            if self.proc.poll() is not None or time.monotonic() - began > timeout_s:
                raise RuntimeError(f"worker start #{self.starts} failed (exit {self.proc.poll()}): {text[-3000:]}")
            await asyncio.sleep(0.05)
        self.start_seconds.append(round(time.monotonic() - began, 1))
        match = HEALTH_RE.search(text)
        if match:
            try:
                async with aiohttp.ClientSession() as session:
                    async with session.get(f"http://127.0.0.1:{match.group(1)}/health",
                                           timeout=aiohttp.ClientTimeout(total=5)) as resp:
                        self.health_codes.append(resp.status)
            except (aiohttp.ClientError, TimeoutError):
                self.health_codes.append(0)

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

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for f in self._files:
            f.close()

    def console(self) -> str:
        """Everything every start wrote to stderr (the console log)."""
        return "".join(self._path(i, "stderr").read_text(errors="replace") for i in range(1, self.starts + 1))

    def logs(self) -> str:
        """The console output and the JSON-lines log files (rotated copies included)."""
        files = sorted((self.work / "logs").glob("bot.jsonl*"))
        return self.console() + "".join(f.read_text(errors="replace") for f in files)


def pending_alerts(db: Path) -> int:
    """Outbox rows not delivered yet (read-only look at the bot's SQLite database)."""
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2)
        try:
            return int(conn.execute("select count(*) from alert_outbox where status = 'pending'").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return -1


def plain(text: str) -> str:
    """A Telegram HTML message as the user reads it."""
    return TAG.sub("", text).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def delivered_texts(tg: FakeTelegram) -> list[str]:
    """The messages the fake Telegram server accepted for the alert chat (sendMessage answered 200)."""
    return [plain(str(c.params.get("text", ""))) for c in tg.sent("sendMessage", CHAT)]


def match_alerts(trades: list[Trade], texts: list[str]) -> tuple[list[str], list[str], dict[str, int]]:
    """Trades without a delivered "opened" / "closed by" message: (missing entries, missing exits, counts).

    A message matches a trade by symbol, strategy and side plus the entry price (opened) or the
    realised PnL to 4 places (closed) it names; what is left is then paired on symbol, strategy and
    side alone (counted as ``loose``) before a trade is called missing.
    """
    opened_msgs: list[tuple[tuple[str, str, str], Decimal]] = []
    closed_msgs: list[tuple[tuple[str, str, str], Decimal]] = []
    for text in texts:
        first = text.split("\n", 1)[0]
        if m := OPENED_RE.match(first):
            opened_msgs.append(((m["symbol"], m["strategy"], m["side"]), Decimal(m["price"])))
        elif m := CLOSED_RE.match(first):
            closed_msgs.append(((m["symbol"], m["strategy"], m["side"]), Decimal(m["pnl"])))

    def pair(items: list[tuple[Trade, tuple[str, str, str], Decimal]], msgs: list[tuple[tuple[str, str, str], Decimal]]
             ) -> tuple[list[str], int, int]:
        exact = Counter(msgs)
        loose_left: list[tuple[Trade, tuple[str, str, str]]] = []
        strict = 0
        for trade, key, value in items:
            if exact[(key, value)] > 0:
                exact[(key, value)] -= 1
                strict += 1
            else:
                loose_left.append((trade, key))
        by_key = Counter()
        for (key, _), n in exact.items():
            by_key[key] += n
        missing, loose = [], 0
        for trade, key in loose_left:
            if by_key[key] > 0:
                by_key[key] -= 1
                loose += 1
            else:
                missing.append(f"db#{trade.id} {' '.join(key)}")
        return missing, strict, loose

    def key(t: Trade) -> tuple[str, str, str]:
        return (t.symbol, t.strategy, t.side.upper())

    opened = [(t, key(t), Decimal(t.entry_price).normalize()) for t in trades if t.opened_at is not None and t.entry_price]
    closed = [(t, key(t), Decimal(t.realized_pnl).quantize(Decimal("0.0001"))) for t in trades
              if t.state is TradeState.CLOSED and t.opened_at is not None]
    opened_msgs = [(k, v.normalize()) for k, v in opened_msgs]
    missing_entry, s1, l1 = pair(opened, opened_msgs)
    missing_exit, s2, l2 = pair(closed, closed_msgs)
    return missing_entry, missing_exit, {"opened": len(opened), "closed": len(closed), "opened_msgs": len(opened_msgs),
                                         "closed_msgs": len(closed_msgs), "exact": s1 + s2, "loose": l1 + l2}


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


async def check_invariants(state: dict[str, Any], db_url: str, texts: list[str], logs: str, speed: float,
                           bot: WorkerProc | None = None, kills: int = 0) -> SoakResult:
    """Every invariant against the simulator's record, the bot's database and what Telegram received."""
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
        inv[FUNDING] = (funding_db == funding_ex, f"DB {funding_db.normalize()} vs exchange {funding_ex.normalize()}")

        trades = await Trade.filter(mode="live")
        lost_entry, lost_exit, alert_counts = match_alerts(trades, texts)
        kinds = Counter("opened" if OPENED_RE.match(t) else "closed" if CLOSED_RE.match(t) else "other" for t in texts)
        inv["no lost alert"] = (not lost_entry and not lost_exit,
                                f"trades opened {alert_counts['opened']}, closed {alert_counts['closed']}; Telegram messages "
                                f"{dict(kinds)} ({alert_counts['exact']} matched exactly, {alert_counts['loose']} on symbol/"
                                f"strategy/side only); missing 'opened' for {lost_entry}, 'closed by' for {lost_exit}")
        result.figures.update({"trades": len(trades), "opened": alert_counts["opened"], "closed": alert_counts["closed"],
                               "telegram_messages": len(texts), "alerts": dict(kinds)})
    finally:
        await close_db()
    if bot is not None:
        restarts = bot.starts - 1
        inv["restart after kill -9 gets the instance lock"] = (
            restarts == kills and bot.lock_refusals == 0,
            f"{restarts} restarts after {kills} kills, {bot.lock_refusals} refused by the lock, start times {bot.start_seconds} s")
    bad = [m for m in TRACEBACK_MARKERS if m in logs]
    first = logs[max(0, logs.find(bad[0]) - 300): logs.find(bad[0]) + 1500] if bad else ""
    inv["no unhandled exception in the logs"] = (not bad, f"markers: {bad} {first}")
    return result


async def run_soak(*, seconds: float, kills: int, seed: int = 7, ws_drop_s: float = 10.0, rest_5xx: float = 0.02,
                   hangs: int = 2, faults: bool = True, tmp: Path | None = None, verbose: bool = True,
                   drain_timeout_s: float = 120.0) -> SoakResult:
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
    tg = FakeTelegram(TG_TOKEN)
    await tg.__aenter__()
    owned_tmp = tempfile.TemporaryDirectory() if tmp is None else None
    work = Path(owned_tmp.name) if owned_tmp else tmp
    assert work is not None
    bot = WorkerProc(work, write_config(work, sim, tg, speed))
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
            f"(~{seconds:.0f} s), kills at {[round(k, 2) for k in kill_at]}, faults {'on' if faults else 'off'}; worker started "
            f"in {bot.start_seconds[0]} s")
        started = time.monotonic()
        sim.resume()
        while sim.server_time_ms() < end:
            progress = (sim.server_time_ms() - day) / (end - day)
            while events and events[0][0] <= progress:
                _, what = events.pop(0)
                if what == "kill":
                    bot.kill9()
                    say(f"  {progress:5.1%} kill -9 (start #{bot.starts}); restarting on the same database")
                    await bot.start()
                    await asyncio.sleep(1.0)
                    rss_warm = rss_kb(bot.proc.pid)  # memory figures are of the process that ran last
                elif what == "hang":
                    sim.faults.hang_next_orders += 1
                elif what == "rate_limit":
                    sim.faults.force_rate_limit(3.0)
                elif what == "skew_on":
                    sim.faults.clock_skew_ms = 1_500
                elif what == "skew_off":
                    sim.faults.clock_skew_ms = 0
            await asyncio.sleep(0.1)
        sim.faults.ws_drop_every_s = 0.0
        sim.faults.rest_5xx_fraction = 0.0
        sim.faults.hang_next_orders = 0
        sim.pause()
        wall = time.monotonic() - started
        await asyncio.sleep(5.0)  # the worker settles: tracker polls resolve hung placements, last fills booked
        rss_end = rss_kb(bot.proc.pid)
        # Telegram takes 1 message/s per chat: the outbox may still hold a backlog from the accelerated day
        drain_began = time.monotonic()
        backlog = pending_alerts(work / "bot.db")
        while pending_alerts(work / "bot.db") != 0 and time.monotonic() - drain_began < drain_timeout_s:
            await asyncio.sleep(0.5)
        drained = round(time.monotonic() - drain_began, 1)
        left = pending_alerts(work / "bot.db")
        code = await bot.terminate()
        state = sim.state()
        if tmp is not None:  # kept for a post-mortem
            (work / "exchange_state.json").write_text(json.dumps(state, default=str))
            (work / "telegram.json").write_text(json.dumps([[c.method, c.params] for c in tg.calls], default=str))
        result = await check_invariants(state, f"sqlite://{work / 'bot.db'}", delivered_texts(tg), bot.logs(), speed,
                                        bot=bot, kills=kills)
        logs = bot.console()
        result.figures.update({
            "market_minutes_per_symbol": DAY, "symbols": list(FILES), "speed": round(speed), "wall_seconds": round(wall, 1),
            "kills": kills, "bot_starts": bot.starts, "start_seconds": bot.start_seconds, "health_at_start": bot.health_codes,
            "exit_code": code, "exchange_orders": len(state["orders"]), "exchange_fills": len(state["fills"]),
            "rss_after_warmup_mb": round(rss_warm / 1024, 1), "rss_after_soak_mb": round(rss_end / 1024, 1),
            "rss_growth_mb": round((rss_end - rss_warm) / 1024, 1),
            "alerts_pending_after_day": backlog, "alert_drain_seconds": drained, "alerts_pending_at_stop": left,
            "ws_drops": state.get("ws", {}).get("drops"), "hangs_armed": len(hang_at), "rate_limit_episodes": 1 if faults else 0,
            "placements_with_unknown_outcome": logs.count("has an unknown outcome"),
            "halted": [line.split("->", 1)[1].strip()[:160] for line in logs.splitlines() if "trading state" in line
                       and "-> HALTED" in line],
        })
    finally:
        bot.close()
        await tg.__aexit__(None, None, None)
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
    parser.add_argument("--keep", type=Path, default=None, help="keep the bot's DB, logs and Telegram calls in this directory")
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
