"""Review fixes of the worker and the Discord adapter.

E5: no entries between a stream disconnect and the reconciliation after it.
C8: a Discord button press is acknowledged at once, however long its action takes.

The worker's real trading start (``Worker._start_trading``: risk manager, start-up reconciliation,
runtime, entry gate, jobs) runs in-process against the local BingX simulator over real sockets; the
simulator's WebSocket drop fault cuts the streams. The only test seam is the runtime's clock (the
simulator's replay time, so the test can step candles) and a hold on the reconciler's ``run`` that
keeps a post-reconnect reconciliation in progress for as long as the test needs (the real run
against the simulator follows when the hold is released).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import discord
import pytest

from bot.discord_adapter import DiscordAdapter
from bot.reconnect_gate import RECONCILING_REASON, stream_connections
from bot.worker import Worker
from db.models import Signal, SignalFate, Trade, TradeState
from commands import build_dispatcher
from commands.approvals import ApprovalService
from tests.chatops_fixtures import D_ADMIN, D_CHANNEL, make_config
from tests.execution_sim import app_config, options, simulator, step_minutes, subscribed, wait_for, window

pytestmark = [pytest.mark.timeout(150)]


class HeldReconciler:
    """Holds every ``Reconciler.run`` (other than the start-up one) until released; counts the runs."""

    def __init__(self, reconciler: Any) -> None:
        self.real_run = reconciler.run
        self.release = asyncio.Event()
        self.started: list[str] = []
        self.finished: list[str] = []
        reconciler.run = self.run

    async def run(self, reason: str) -> Any:
        self.started.append(reason)
        await self.release.wait()
        report = await self.real_run(reason)
        self.finished.append(reason)
        return report


async def _started_worker(mode: str, db_url: str, tmp_path: Path,
                          monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Any, Worker, int]]:
    """A worker trading XRP-USDT on a paused simulator (replay minutes 2620-2800), trading started."""
    import engine.execution.runtime as runtime_module

    monkeypatch.chdir(tmp_path)  # the STOP file watcher looks here
    data, start_ms = window(2620, 2800)
    sim = simulator(data, start_ms)
    await sim.start()
    # the runtime's clock is the simulator's replay time, so stepping candles closes them
    monkeypatch.setattr(runtime_module, "TradingRuntime",
                        functools.partial(runtime_module.TradingRuntime, clock_ms=sim.server_time_ms))
    worker = Worker(app_config(mode, sim, db_url), runtime_options=options())
    try:
        await worker._start_trading()
        yield sim, worker, start_ms
    finally:
        await worker.stop()
        await sim.stop()


@pytest.fixture
async def live_worker(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Any, Worker, int]]:
    """A live worker, trading started."""
    async for started in _started_worker("live", db_url, tmp_path, monkeypatch):
        yield started


@pytest.fixture
async def paper_worker(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Any, Worker, int]]:
    """A paper worker (market stream only, nothing on the exchange to reconcile), trading started."""
    async for started in _started_worker("paper", db_url, tmp_path, monkeypatch):
        yield started


async def _drop_streams_and_see_them_down(sim: Any, worker: Worker, streams: int = 2) -> None:
    """Drop every WebSocket; the entry gate refuses from the moment a stream is seen down."""
    reconnects = sum(c.connect_count for c in _connections(worker))
    assert sim.drop_websockets() >= streams
    # the clients reconnect after a backoff of at least 0.25 s: poll the gate's flag meanwhile
    await wait_for(lambda: (worker.entry_block() or "").endswith("stream is down"), 5, "the gate to see a stream down")
    await wait_for(lambda: all(c.connected.is_set() for c in _connections(worker))
                   and sum(c.connect_count for c in _connections(worker)) >= reconnects + streams, 10, "the streams back")
    await subscribed(sim)  # the client has sent its subscriptions: wait until the exchange has them too


def _connections(worker: Worker) -> list[Any]:
    return stream_connections(worker.runtime)


async def test_entry_between_a_drop_and_the_end_of_the_reconciliation_is_refused_then_entries_resume(
        live_worker: tuple[Any, Worker, int], caplog: pytest.LogCaptureFixture) -> None:
    sim, worker, start_ms = live_worker
    caplog.set_level(logging.INFO)
    held = HeldReconciler(worker.reconciler)
    assert worker.entry_block() is None  # trading normally

    await _drop_streams_and_see_them_down(sim, worker)
    await wait_for(lambda: "stream reconnect" in held.started, 10, "the reconciliation after the reconnect to start")
    # the streams are back, the reconciliation still runs: entries are still refused
    assert worker.entry_block() == f"{RECONCILING_REASON}: waiting for the reconciliation after the reconnect"

    # the replay reaches the strategy's first entry signal (replay minute ~20) while the reconciliation is held
    minutes = 0
    while not await Signal.filter(mode="live").exists():
        assert minutes < 40, "no entry signal"
        await step_minutes(sim, worker.runtime, start_ms + minutes * 60_000, 1)
        minutes += 1
    await worker.runtime.wait_idle()
    signal = await Signal.get(mode="live")
    assert signal.fate is SignalFate.REJECTED, (signal.fate, signal.reason)
    assert RECONCILING_REASON in signal.reason
    assert not await Trade.filter(mode="live").exists()
    assert not [o for o in sim.state()["orders"] if o["type"] == "MARKET"], "no entry order reached the exchange"
    assert any(RECONCILING_REASON in r.getMessage() and "not opened" in r.getMessage() for r in caplog.records)

    # the reconciliation completes: entries work again, and the next signal opens a position
    held.release.set()
    await wait_for(lambda: "stream reconnect" in held.finished, 20, "the reconciliation to finish")
    await wait_for(lambda: worker._reconcile_task is not None and worker._reconcile_task.done(), 5, "the reconcile task")
    assert worker.entry_block() is None
    while not await Trade.filter(mode="live", state=TradeState.OPEN).exists():
        assert minutes < 175, "no entry after the reconciliation"
        await step_minutes(sim, worker.runtime, start_ms + minutes * 60_000, 1)
        minutes += 1
    await worker.runtime.wait_idle()
    entries = [o for o in sim.state()["orders"] if o["type"] == "MARKET"]
    assert len(entries) == 1 and entries[0]["status"] == "FILLED"


async def test_a_reconnect_during_the_reconciliation_runs_another_one_before_entries_resume(
        live_worker: tuple[Any, Worker, int]) -> None:
    sim, worker, start_ms = live_worker
    held = HeldReconciler(worker.reconciler)

    await _drop_streams_and_see_them_down(sim, worker)
    await wait_for(lambda: held.started == ["stream reconnect"], 10, "the first reconciliation to start")
    # a second outage while the first run is still in progress
    await _drop_streams_and_see_them_down(sim, worker)
    held.release.set()
    await wait_for(lambda: len(held.finished) >= 1, 20, "the first reconciliation to finish")
    # the first run started before the second reconnect: it does not cover it; a second run follows
    await wait_for(lambda: len(held.finished) >= 2, 20, "a second reconciliation after the second reconnect")
    await wait_for(lambda: worker._reconcile_task is not None and worker._reconcile_task.done(), 5, "the reconcile task")
    assert held.started == ["stream reconnect", "stream reconnect"]
    assert worker.entry_block() is None


async def test_a_failed_reconciliation_keeps_entries_refused(live_worker: tuple[Any, Worker, int]) -> None:
    sim, worker, start_ms = live_worker
    held = HeldReconciler(worker.reconciler)
    await _drop_streams_and_see_them_down(sim, worker)
    await wait_for(lambda: held.started == ["stream reconnect"], 10, "the reconciliation to start")
    # the exchange answers every REST call with a 5xx: the reconciliation cannot read it
    sim.faults.update({"rest_5xx_fraction": 1.0})
    held.release.set()
    await wait_for(lambda: len(held.finished) >= 1, 20, "the failed reconciliation to end")
    assert worker.entry_block() == f"{RECONCILING_REASON}: waiting for the reconciliation after the reconnect"
    # once the exchange answers again, a successful run (here the periodic one) lets entries resume
    sim.faults.clear()
    assert await worker.reconcile("periodic")
    assert worker.entry_block() is None


async def test_a_failed_reconciliation_whose_bookkeeping_fails_too_is_retried_until_entries_resume(
        live_worker: tuple[Any, Worker, int]) -> None:
    """The run fails (the exchange answers 5xx) and so does the circuit breaker's DB write: the retry loop goes on."""
    sim, worker, _start_ms = live_worker
    held = HeldReconciler(worker.reconciler)

    async def breaker_write_fails(what: str) -> None:
        raise ConnectionError("database unavailable")

    worker.risk.record_api_error = breaker_write_fails  # the database under the breaker is down
    await _drop_streams_and_see_them_down(sim, worker)
    await wait_for(lambda: held.started == ["stream reconnect"], 10, "the reconciliation to start")
    sim.faults.update({"rest_5xx_fraction": 1.0})
    held.release.set()
    await wait_for(lambda: len(held.finished) >= 1, 20, "the failed reconciliation to end")
    assert worker.entry_block() is not None
    sim.faults.clear()
    # no periodic run here: the loop's own retry (after 5 s) must succeed and let entries resume
    await wait_for(lambda: worker.entry_block() is None, 20, "the retried reconciliation to let entries resume")
    assert held.started.count("stream reconnect") >= 2


async def test_paper_refuses_entries_while_its_market_stream_is_down(paper_worker: tuple[Any, Worker, int]) -> None:
    sim, worker, _start_ms = paper_worker
    assert worker.reconciler is None and worker.entry_block() is None
    await _drop_streams_and_see_them_down(sim, worker, streams=1)
    # nothing to reconcile on the exchange: entries resume once the reconnect has been handled
    await wait_for(lambda: worker.entry_block() is None, 5, "entries to resume after the reconnect")


# -- C8: Discord buttons defer at once ----------------------------------------------------------------


class SlowEmergencyStop:
    """FakeTrading whose emergency stop takes as long as the test wants (the exchange calls of a real one)."""

    def __init__(self) -> None:
        from tests.fakes_trading import FakeTrading

        self.trading = FakeTrading()
        self.stopping = asyncio.Event()
        self.finish = asyncio.Event()
        real_stop = self.trading.emergency_stop

        async def emergency_stop(actor: str) -> Any:
            self.stopping.set()
            await self.finish.wait()
            return await real_stop(actor)

        self.trading.emergency_stop = emergency_stop  # type: ignore[method-assign]


async def test_a_slow_confirmed_emergency_stop_press_is_deferred_at_once_and_answered_by_an_edit(
        db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.fake_discord import APP_ID, FakeDiscord, interaction_payload

    async with FakeDiscord() as fake:
        monkeypatch.setattr(discord.http.Route, "BASE", fake.api_base)
        config = make_config()
        slow = SlowEmergencyStop()
        approvals = ApprovalService(config.approval, slow.trading)
        adapter = DiscordAdapter(config.discord, build_dispatcher(config, slow.trading, slow.trading, approvals))
        await adapter.client.login(config.discord.token.get_secret_value())
        try:
            def feed(payload: dict[str, Any]) -> str:
                adapter.client._connection.parse_interaction_create(payload)  # as the gateway would
                return payload["id"]

            ask = feed(interaction_payload(user_id=D_ADMIN, channel_id=D_CHANNEL, command="stop"))
            [question] = await fake.wait_for(lambda: fake.matching("POST", f"/interactions/{ask}/"))
            confirm = question.body["data"]["components"][0]["components"][0]["custom_id"]

            loop = asyncio.get_running_loop()
            pressed_at = loop.time()
            press = feed(interaction_payload(user_id=D_ADMIN, channel_id=D_CHANNEL, custom_id=confirm,
                                             message={"id": "1", "channel_id": str(D_CHANNEL)}))
            # acknowledged while the stop is still running (it does not end until the test says so)
            [deferral] = await fake.wait_for(lambda: fake.matching("POST", f"/interactions/{press}/"), 2.5)
            assert loop.time() - pressed_at < 3.0, "Discord's 3 s limit for the first response"
            assert deferral.body["type"] == 6  # DEFERRED_UPDATE_MESSAGE
            assert slow.stopping.is_set() and not slow.finish.is_set()

            slow.finish.set()  # the exchange calls end, seconds later in real life
            edits = await fake.wait_for(
                lambda: fake.matching("PATCH", f"/webhooks/{APP_ID}/itoken{press}/messages/@original"), 5)
            assert edits[0].body["embeds"][0]["title"] == "Emergency stop done: flat"
            assert edits[0].body["components"] == []  # the confirm/cancel buttons are gone
            assert slow.trading.calls == [("emergency_stop", f"discord:{D_ADMIN}")]
        finally:
            await approvals.close()
            await adapter.client.close()


# -- job and component error alerts carry a stable de-duplication key ----------------------------------


async def test_a_repeating_job_or_component_failure_is_one_chat_alert_per_window(db_url: str) -> None:
    from alerts import AlertPublisher, Route
    from bot.chatops import hub_event
    from db.models import AlertOutbox

    config = make_config()
    worker = Worker(config)
    publisher = AlertPublisher(config.alerts, [Route("telegram", "telegram")])
    worker.alerts.forward = lambda kind, text, payload: publisher.publish(hub_event(kind, text, payload))
    await publisher.start()
    try:
        # the same job failing every minute, the message worded differently each time (as aiohttp's are)
        for message in ("Connection reset by peer", "Temporary failure in name resolution", "Server disconnected"):
            worker._on_job_error("equity", ConnectionError(message))
        worker._on_job_error("contracts", ConnectionError("exchange unreachable"))  # another job: its own alert
        worker._on_job_error("equity", ValueError("bad answer"))  # another failure of the job: its own alert
        for message in ("Input/output error", "Stale file handle", "No space left on device"):  # a restart loop
            await worker._on_component_failure("stop-file", OSError(message), gave_up=False)
        await worker._on_component_failure("stop-file", OSError("disk error"), gave_up=True)  # giving up: never hidden
        await wait_for(lambda: len(worker.alerts.recent) == 9, 5, "the scheduled alert tasks to publish")
        await publisher.flush()
    finally:
        await publisher.stop()
    rows = [row.text.split("\n")[0] for row in await AlertOutbox.all().order_by("id")]
    assert len(rows) == 5, rows
    assert sum("scheduled job equity failed: ConnectionError" in r for r in rows) == 1
    assert sum("scheduled job contracts failed" in r for r in rows) == 1
    assert sum("scheduled job equity failed: ValueError" in r for r in rows) == 1
    assert sum("component stop-file failed" in r and "restarting" in r for r in rows) == 1
    assert sum("component stop-file failed" in r and "given up" in r for r in rows) == 1

