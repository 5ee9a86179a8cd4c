"""Supervision of the worker's long-running components.

A supervised component is a coroutine factory. When its coroutine raises, the failure is
logged and alerted and the component is started again after an exponential backoff. A component
that keeps failing (``max_failures`` within ``window_s``) is given up: ``on_give_up`` runs, which
the worker uses to halt entries - a broken piece must never crash the process while positions are
open (their stops are on the exchange; the rest keeps managing them).

Tasks started elsewhere (the trading runtime's own loops) can be *watched*: if one ends with an
exception, ``on_give_up`` runs for it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

log = logging.getLogger(__name__)

Factory = Callable[[], Awaitable[None]]
FailureHook = Callable[[str, BaseException, bool], Awaitable[None]]  # (component, error, gave_up)


@dataclass
class ComponentStatus:
    """What the supervisor knows about one component."""

    name: str
    restarts: int = 0
    failures: list[float] = field(default_factory=list)
    last_error: str = ""
    gave_up: bool = False
    running: bool = False


class Supervisor:
    """Runs components, restarts them with backoff, and reports failures."""

    def __init__(self, on_failure: FailureHook | None = None, *, backoff_base_s: float = 1.0, backoff_max_s: float = 60.0,
                 max_failures: int = 5, window_s: float = 300.0) -> None:
        self.on_failure = on_failure
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.max_failures = max_failures
        self.window_s = window_s
        self.components: dict[str, ComponentStatus] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stopping = False

    def spawn(self, name: str, factory: Factory) -> None:
        """Start ``factory()`` under supervision (restarted when it fails; a clean return ends it)."""
        self.components[name] = ComponentStatus(name)
        self._tasks[name] = asyncio.create_task(self._run(name, factory), name=f"supervised-{name}")

    def watch(self, name: str, task: asyncio.Task[object]) -> None:
        """Report (and give up on) a task owned elsewhere if it dies with an exception."""
        status = self.components.setdefault(name, ComponentStatus(name, running=True))

        def done(t: asyncio.Task[object]) -> None:
            status.running = False
            if self._stopping or t.cancelled() or t.exception() is None:
                return
            exc = t.exception()
            assert exc is not None
            status.last_error = f"{type(exc).__name__}: {exc}"
            status.gave_up = True
            log.error("component %s died: %s", name, status.last_error, exc_info=exc)
            if self.on_failure is not None:
                asyncio.get_running_loop().create_task(self._report(name, exc, True))

        task.add_done_callback(done)

    async def _report(self, name: str, exc: BaseException, gave_up: bool) -> None:
        if self.on_failure is None:
            return
        try:
            await self.on_failure(name, exc, gave_up)
        except Exception:  # reporting must not take the supervisor down
            log.exception("failure hook for %s failed", name)

    async def _run(self, name: str, factory: Factory) -> None:
        status = self.components[name]
        attempt = 0
        while not self._stopping:
            status.running = True
            try:
                await factory()
                status.running = False
                return  # a clean return: the component finished its job
            except asyncio.CancelledError:
                status.running = False
                raise
            except Exception as exc:
                status.running = False
                now = time.monotonic()
                status.failures = [t for t in status.failures if now - t < self.window_s] + [now]
                status.last_error = f"{type(exc).__name__}: {exc}"[:300]
                gave_up = len(status.failures) >= self.max_failures
                log.error("component %s failed (%d in %.0f s)%s: %s", name, len(status.failures), self.window_s,
                          ", giving up" if gave_up else ", restarting", status.last_error, exc_info=exc)
                await self._report(name, exc, gave_up)
                if gave_up:
                    status.gave_up = True
                    return
                delay = min(self.backoff_max_s, self.backoff_base_s * (2 ** attempt))
                attempt += 1
                status.restarts += 1
                await asyncio.sleep(delay)

    async def stop(self) -> None:
        """Cancel every supervised component and wait for them."""
        self._stopping = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
