"""The STOP file: creating it pauses entries within a second.

:class:`StopFileWatcher` checks the path every ``poll_s`` seconds (0.25 s by default, so
the pause lands well within the one-second promise). Removing the file does not resume:
resuming is an admin's decision (``/resume``). Re-creating it after removal pauses again.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

log = logging.getLogger(__name__)

OnStop = Callable[[str], Awaitable[object]]


class StopFileWatcher:
    """Calls ``on_stop(reason)`` once each time ``path`` appears."""

    def __init__(self, path: str | Path, on_stop: OnStop, *, poll_s: float = 0.25) -> None:
        self.path = Path(path)
        self.on_stop = on_stop
        self.poll_s = poll_s
        self._present = False
        self.triggered = 0

    async def check_once(self) -> bool:
        """Look once; returns True when the file just appeared (and ``on_stop`` was called)."""
        present = await asyncio.to_thread(os.path.exists, self.path)
        appeared = present and not self._present
        self._present = present
        if appeared:
            self.triggered += 1
            log.warning("STOP file %s found: pausing entries", self.path)
            try:
                await self.on_stop(f"STOP file {self.path} present")
            except Exception:
                log.exception("STOP file handler failed")
        return appeared

    async def run(self, stop: asyncio.Event) -> None:
        """Watch until ``stop`` is set."""
        while not stop.is_set():
            await self.check_once()
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.poll_s)
            except TimeoutError:
                pass
