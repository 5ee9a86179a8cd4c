"""Single instance: a second holder is refused on SQLite (and PostgreSQL when TEST_DATABASE_URL is
set), and the lock is released when the holding process is killed with SIGKILL."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.risk.instance_lock import InstanceLock, InstanceLockError

PROJECT = Path(__file__).resolve().parents[1]

HOLDER = """
import asyncio, sys
from engine.risk.instance_lock import InstanceLock
async def main():
    lock = InstanceLock(sys.argv[1], sys.argv[2])
    await lock.acquire()
    print("held", flush=True)
    await asyncio.sleep(120)
asyncio.run(main())
"""


def _urls() -> list[str]:
    urls = ["sqlite"]
    if os.environ.get("TEST_DATABASE_URL"):
        urls.append("postgres")
    return urls


@pytest.fixture(params=_urls())
def lock_url(request, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'bot.db'}"
    return os.environ["TEST_DATABASE_URL"]


async def test_second_holder_is_refused_then_allowed_after_release(lock_url: str) -> None:
    first = InstanceLock(lock_url, "live:account-a")
    await first.acquire()
    try:
        with pytest.raises(InstanceLockError, match="another trading-bot"):
            await InstanceLock(lock_url, "live:account-a").acquire()
    finally:
        await first.release()
    async with InstanceLock(lock_url, "live:account-a") as again:
        assert again.held


async def test_lock_is_released_when_the_holder_is_killed(lock_url: str) -> None:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, lock_url, "live:account-b"], cwd=PROJECT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = await asyncio.to_thread(proc.stdout.readline)
        assert line.strip() == "held", proc.stderr.read() if proc.poll() is not None else line
        with pytest.raises(InstanceLockError):
            await InstanceLock(lock_url, "live:account-b").acquire()
        os.kill(proc.pid, signal.SIGKILL)
        await asyncio.to_thread(proc.wait, 10)
        deadline = time.monotonic() + 10  # PostgreSQL notices the dropped connection quickly, not instantly
        while True:
            try:
                lock = InstanceLock(lock_url, "live:account-b")
                await lock.acquire()
                break
            except InstanceLockError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
        await lock.release()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_repr_and_key_do_not_leak_the_account_key() -> None:
    lock = InstanceLock("sqlite:///tmp/x.db", "live:SECRETKEY123")
    assert "SECRETKEY123" not in repr(lock)
