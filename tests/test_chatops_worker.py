"""Chat-ops wired into the real worker: ``trading-bot run`` (subprocess, live mode) against the BingX
simulator, with Telegram enabled and ``telegram.api_url`` pointing at the fake Bot API server.

Real sockets end to end: the bot polls the fake Telegram server, answers commands with its real
state, sends trade alerts to the alert chat, and its emergency stop flattens the simulator account.
XRP/USDT minutes 2620-2840 (real data): the bot's first long comes ~10 s after the replay starts at 120x.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.chatops_fixtures import ADMIN, CHAT, STRANGER, TOKEN, USER
from tests.execution_sim import SYMBOL, simulator, window
from tests.fake_telegram import FakeTelegram
from tests.worker_harness import (
    BotProcess,
    open_position,
    wait_until,
    working_stops,
    write_config,
)

pytestmark = pytest.mark.timeout(90)
slow = pytest.mark.slow  # each runs the bot as a subprocess: ~15-30 s

SPEED = 120.0
TAG = re.compile(r"<[^>]+>")


@dataclass
class Stack:
    """The simulator, the fake Telegram server and the bot process."""

    sim: Any
    tg: FakeTelegram
    bot: BotProcess


@pytest.fixture
async def make_stack(tmp_path: Path) -> AsyncIterator[Any]:
    stacks: list[Stack] = []

    async def make(**config: Any) -> Stack:
        data, start_ms = window(2620, 2840)
        sim = simulator(data, start_ms)
        await sim.start()
        tg = FakeTelegram(TOKEN)
        await tg.__aenter__()
        telegram = {"enabled": True, "token": TOKEN, "api_url": tg.api_url, "chat_id": CHAT,
                    "authorized_users": [USER], "admin_users": [ADMIN]}
        bot = BotProcess(write_config(tmp_path, sim, telegram=telegram, **config), tmp_path)
        stack = Stack(sim, tg, bot)
        stacks.append(stack)
        bot.start()
        await bot.wait_started()
        await bot.wait_for_output("Telegram bot started", 15)
        return stack

    try:
        yield make
    finally:
        for stack in stacks:
            stack.bot.ensure_dead()
            await stack.tg.__aexit__(None, None, None)
            await stack.sim.stop()


def plain(text: str) -> str:
    """A Telegram HTML message as the user reads it."""
    return TAG.sub("", text).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


async def command(tg: FakeTelegram, text: str, user: int = ADMIN, timeout: float = 10.0) -> dict[str, Any]:
    """Send ``text`` as ``user`` in the alert chat; returns the bot's reply message."""
    before = {m["message_id"] for (c, _), m in tg.messages.items() if c == CHAT}
    await tg.push_command(user, CHAT, text)
    head = text.split()[0].lstrip("/")

    def reply() -> dict[str, Any] | None:
        for (chat, mid), message in sorted(tg.messages.items(), key=lambda kv: kv[0][1]):
            if chat == CHAT and mid not in before and _is_reply_to(head, plain(message.get("text", ""))):
                return message
        return None

    return await tg.wait_for(reply, timeout)


def _is_reply_to(head: str, text: str) -> bool:
    titles = {"status": "Status:", "pause": "Paused", "resume": "Resumed", "stop": "EMERGENCY STOP?"}
    title = titles.get(head)
    return text.startswith(title) if title else text.startswith(f"/{head}")


async def sim_state(sim: Any) -> dict[str, Any]:
    """``GET /_sim/state`` over HTTP, as an operator would read the account."""
    async with aiohttp.ClientSession() as session, session.get(f"{sim.rest_url}/_sim/state") as resp:
        assert resp.status == 200
        return await resp.json()


def _trading(sim: Any) -> dict | None:
    state = sim.state()
    return state if open_position(state) and any(o["clientOrderId"] for o in working_stops(state, "LONG")) else None


def _entries(state: dict[str, Any]) -> list[dict[str, Any]]:
    return [o for o in state["orders"] if o["type"] == "MARKET" and o["side"] == "BUY" and o["positionSide"] == "LONG"]


@slow
async def test_status_alerts_pause_resume_and_emergency_stop_from_telegram(make_stack: Any) -> None:
    stack = await make_stack()
    sim, tg, bot = stack.sim, stack.tg, stack.bot

    # /status answered with the real worker's state
    status = plain((await command(tg, "/status", user=USER))["text"])
    assert status.startswith("Status: LIVE · RUNNING"), status
    assert "Open positions: 0" in status and "Approval mode: off" in status, status
    # a stranger gets nothing at all
    await tg.push_command(STRANGER, CHAT, "/status")

    # a real trade: its alerts reach the alert chat through the outbox
    sim.set_speed(SPEED)
    sim.resume()
    await wait_until(lambda: _trading(sim), 40, "the bot's first position with its stop")
    sim.set_speed(1.0)  # the market (almost) stands still from here
    opened = await tg.wait_for(lambda: [t for t in map(plain, tg.texts(CHAT)) if "XRP-USDT" in t and "opened" in t.lower()], 15)
    assert "LIVE" in opened[0]

    status = plain((await command(tg, "/status"))["text"])
    assert "Open positions: 1" in status and SYMBOL in status, status

    # /pause then /resume change the risk state the bot reports
    await command(tg, "/pause maintenance")
    status = plain((await command(tg, "/status"))["text"])
    assert status.startswith("Status: LIVE · PAUSED"), status
    assert "maintenance" in status
    await command(tg, "/resume")
    status = plain((await command(tg, "/status"))["text"])
    assert status.startswith("Status: LIVE · RUNNING"), status

    # /stop asks for confirmation; the Confirm button flattens the account
    ask = await command(tg, "/stop")
    confirm = [d for d in tg.button_data(CHAT, ask["message_id"]) if d.startswith("k:")]
    assert confirm, tg.button_data(CHAT, ask["message_id"])
    assert open_position(sim.state()), "nothing happens before the confirmation"
    await tg.push_callback(ADMIN, CHAT, ask["message_id"], confirm[0])
    done = await tg.wait_for(lambda: (t := plain(tg.messages[(CHAT, ask["message_id"])]["text"])).startswith("Emergency stop")
                             and t, 25)
    assert done.startswith("Emergency stop done: flat"), done
    assert "Account flat: yes" in done
    state = await sim_state(sim)
    assert not open_position(state), state["positions"]
    assert [o for o in state["orders"] if o["status"] in ("NEW", "PENDING", "PARTIALLY_FILLED")] == []

    status = plain((await command(tg, "/status"))["text"])
    assert status.startswith("Status: LIVE · HALTED"), status

    code, elapsed = await bot.terminate()
    assert code == 0, bot.output()[-3000:]
    assert elapsed < 10
    assert "Traceback" not in bot.output()
    assert tg.sent("sendMessage", STRANGER) == [] and all("unauthorized" not in t for t in tg.texts(CHAT))
    assert tg.bad_paths == []


async def _approval_request(tg: FakeTelegram, seen: set[int], timeout: float) -> tuple[int, str, str]:
    """The next approval request posted in the alert chat: (message id, approve data, deny data)."""

    def find() -> tuple[int, str, str] | None:
        for (chat, mid), _ in sorted(tg.messages.items(), key=lambda kv: kv[0][1]):
            data = tg.button_data(chat, mid)
            if chat == CHAT and mid not in seen and any(d.startswith("a:") for d in data):
                return mid, next(d for d in data if d.endswith(":y")), next(d for d in data if d.endswith(":n"))
        return None

    found = await tg.wait_for(find, timeout)
    seen.add(found[0])
    return found


async def _approval_stack(make_stack: Any) -> tuple[Stack, tuple[int, str, str]]:
    """A bot in approval mode with the market running until its first approval request."""
    stack = await make_stack(approval={"enabled": True, "timeout_s": 60, "max_slippage_pct": 5})
    status = plain((await command(stack.tg, "/status"))["text"])
    assert "Approval mode: on" in status, status
    stack.sim.set_speed(SPEED)
    stack.sim.resume()
    request = await _approval_request(stack.tg, set(), 40)
    stack.sim.set_speed(1.0)  # the price stays inside the approval's slippage limit while we decide
    assert "Approve LONG XRP-USDT?" in plain(stack.tg.messages[(CHAT, request[0])]["text"])
    assert _entries(stack.sim.state()) == [], "nothing is placed while the request waits"
    return stack, request


@slow
async def test_approval_mode_denied_entry_never_reaches_the_exchange(make_stack: Any) -> None:
    stack, (mid, _, deny) = await _approval_stack(make_stack)
    tg, bot = stack.tg, stack.bot
    await tg.push_callback(ADMIN, CHAT, mid, deny)
    await tg.wait_for(lambda: "DENIED" in tg.messages[(CHAT, mid)]["text"], 10)
    await bot.wait_for_output("not opened: approval: denied", 10)
    assert _entries(await sim_state(stack.sim)) == [], "a denied entry never reaches the exchange"
    code, _ = await bot.terminate()
    assert code == 0, bot.output()[-3000:]


@slow
async def test_approval_mode_approved_entry_is_placed(make_stack: Any) -> None:
    stack, (mid, approve, _) = await _approval_stack(make_stack)
    tg, bot = stack.tg, stack.bot
    await tg.push_callback(ADMIN, CHAT, mid, approve)
    await tg.wait_for(lambda: "APPROVED" in tg.messages[(CHAT, mid)]["text"], 10)
    state = await wait_until(lambda: _entries(stack.sim.state()) and stack.sim.state(), 15, "the approved entry on the simulator")
    assert len(_entries(state)) == 1
    await wait_until(lambda: _trading(stack.sim), 15, "the approved position with the bot's stop")
    code, _ = await bot.terminate()
    assert code == 0, bot.output()[-3000:]
    assert "Traceback" not in bot.output()


async def test_a_waiting_approval_does_not_block_the_execution_queue(db_url: str) -> None:
    """Paper runtime, in process: while an entry waits for its approval, the broker's job queue keeps
    draining (stops, exits and order updates share it); a denial then drops the entry without an order."""
    import asyncio

    from db.models import Order, OrderIntent
    from engine.execution.broker import GateDecision
    from engine.execution.runtime import TradingRuntime
    from tests.execution_sim import app_config, options, step_minutes

    data, start_ms = window(2620, 2680)
    sim = simulator(data, start_ms)
    await sim.start()
    asked: list[Any] = []
    release: asyncio.Future[GateDecision] = asyncio.get_running_loop().create_future()

    class Hook:
        active = True

        async def __call__(self, request: Any, signal_row: Any) -> GateDecision:
            asked.append((request, signal_row))
            return await release

    runtime = TradingRuntime(app_config("paper", sim, db_url, api_key="", api_secret=""), clock_ms=sim.server_time_ms,
                             options=options())
    runtime.entry_approval = Hook()
    try:
        await runtime.start()
        minutes = 0
        while not asked and minutes < 40:  # step_minutes waits for the broker to settle after every minute
            await step_minutes(sim, runtime, start_ms + minutes * 60_000, 1)
            minutes += 1
        assert asked, "the strategy's entry never asked for approval"
        request, signal_row = asked[0]
        assert request.symbol == SYMBOL and signal_row.id is not None
        # five more minutes of market: every step settles the broker, which a blocked queue never would
        await step_minutes(sim, runtime, start_ms + minutes * 60_000, 5)
        assert not release.done()
        assert await Order.filter(mode="paper", intent=OrderIntent.ENTRY).count() == 0
        release.set_result(GateDecision(False, "denied: by test"))
        await runtime.wait_idle()
        assert await Order.filter(mode="paper", intent=OrderIntent.ENTRY).count() == 0
        assert runtime.broker is not None and runtime.broker.active_trades == []
    finally:
        await runtime.stop()
        await sim.stop()
