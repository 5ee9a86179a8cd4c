"""The STOP file pauses entries within a second of appearing; removing it does not resume."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from bot.config import load_config
from engine.risk.manager import RiskManager
from engine.risk.state import TradingState
from engine.risk.stop_file import StopFileWatcher


async def test_stop_file_pauses_within_a_second(db_url: str, tmp_path: Path) -> None:
    risk = RiskManager(load_config(None, env={}))
    path = tmp_path / "STOP"
    watcher = StopFileWatcher(path, lambda reason: risk.pause("stop_file", reason))
    stop = asyncio.Event()
    task = asyncio.create_task(watcher.run(stop))
    try:
        await asyncio.sleep(0.3)
        assert (await risk.state.current()).state is TradingState.RUNNING
        path.write_text("")
        created = time.monotonic()
        while (await risk.state.current()).state is not TradingState.PAUSED:
            assert time.monotonic() - created < 1.0, "not paused within a second"
            await asyncio.sleep(0.02)
        info = await risk.state.current()
        assert info.actor == "stop_file" and "STOP" in info.reason
        path.unlink()
        await asyncio.sleep(0.4)
        assert (await risk.state.current()).state is TradingState.PAUSED  # still paused: an admin resumes
        await risk.resume("admin")
        path.write_text("")
        await asyncio.sleep(0.6)
        assert (await risk.state.current()).state is TradingState.PAUSED and watcher.triggered == 2
    finally:
        stop.set()
        await task
